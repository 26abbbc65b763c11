//! Message templates: `{name}` placeholders and `[...]` segments that are left
//! out when a value inside them is unknown. Small on purpose: the rules file is
//! user-editable, so every template is checked when the rules load and
//! rendering itself cannot fail.

use std::fmt;

/// A value a message can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placeholder {
    Label,
    Step,
    Onset,
    Dwell,
    DwellFraction,
    F1,
    Trend,
    Speed,
    ConfusedWith,
    TrainCount,
    /// Run-level messages: "7 of 9 classes".
    Classes,
    MaxSteps,
}

impl Placeholder {
    const ALL: [Placeholder; 12] = [
        Placeholder::Label,
        Placeholder::Step,
        Placeholder::Onset,
        Placeholder::Dwell,
        Placeholder::DwellFraction,
        Placeholder::F1,
        Placeholder::Trend,
        Placeholder::Speed,
        Placeholder::ConfusedWith,
        Placeholder::TrainCount,
        Placeholder::Classes,
        Placeholder::MaxSteps,
    ];

    fn name(self) -> &'static str {
        match self {
            Placeholder::Label => "label",
            Placeholder::Step => "step",
            Placeholder::Onset => "onset",
            Placeholder::Dwell => "dwell",
            Placeholder::DwellFraction => "dwell_fraction",
            Placeholder::F1 => "f1",
            Placeholder::Trend => "trend",
            Placeholder::Speed => "speed",
            Placeholder::ConfusedWith => "confused_with",
            Placeholder::TrainCount => "train_count",
            Placeholder::Classes => "classes",
            Placeholder::MaxSteps => "max_steps",
        }
    }

    fn from_name(name: &str) -> Option<Placeholder> {
        Placeholder::ALL.into_iter().find(|p| p.name() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum TemplateError {
    #[error("unknown placeholder `{{{name}}}` (known: {known})")]
    UnknownPlaceholder { name: String, known: String },
    #[error("`{{` without a closing `}}`")]
    UnclosedPlaceholder,
    #[error("`}}` without an opening `{{`")]
    StrayClosingBrace,
    #[error("`[` inside `[...]`: optional segments cannot be nested")]
    NestedSegment,
    #[error("`[` without a closing `]`")]
    UnclosedSegment,
    #[error("`]` without an opening `[`")]
    StrayClosingBracket,
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Value(Placeholder),
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    optional: bool,
    pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Template {
    segments: Vec<Segment>,
}

impl Template {
    pub(super) fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut current = Segment {
            optional: false,
            pieces: Vec::new(),
        };
        let mut literal = String::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(TemplateError::UnclosedPlaceholder),
                        }
                    }
                    let placeholder = Placeholder::from_name(name.trim()).ok_or_else(|| {
                        TemplateError::UnknownPlaceholder {
                            name: name.clone(),
                            known: Placeholder::ALL
                                .iter()
                                .map(|p| format!("{{{}}}", p.name()))
                                .collect::<Vec<_>>()
                                .join(" "),
                        }
                    })?;
                    flush_text(&mut literal, &mut current);
                    current.pieces.push(Piece::Value(placeholder));
                }
                '}' => return Err(TemplateError::StrayClosingBrace),
                '[' if current.optional => return Err(TemplateError::NestedSegment),
                ']' if !current.optional => return Err(TemplateError::StrayClosingBracket),
                '[' | ']' => {
                    flush_text(&mut literal, &mut current);
                    let next = Segment {
                        optional: c == '[',
                        pieces: Vec::new(),
                    };
                    segments.push(std::mem::replace(&mut current, next));
                }
                c => literal.push(c),
            }
        }
        if current.optional {
            return Err(TemplateError::UnclosedSegment);
        }
        flush_text(&mut literal, &mut current);
        segments.push(current);
        segments.retain(|segment| !segment.pieces.is_empty());
        Ok(Template { segments })
    }

    /// `value` gives each placeholder's text, or None when it is not known.
    pub(super) fn render(&self, value: impl Fn(Placeholder) -> Option<String>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            let mut rendered = String::new();
            let mut complete = true;
            for piece in &segment.pieces {
                match piece {
                    Piece::Text(text) => rendered.push_str(text),
                    Piece::Value(placeholder) => match value(*placeholder) {
                        Some(text) => rendered.push_str(&text),
                        None => {
                            complete = false;
                            rendered.push_str("n/a");
                        }
                    },
                }
            }
            if complete || !segment.optional {
                out.push_str(&rendered);
            }
        }
        out
    }
}

fn flush_text(literal: &mut String, segment: &mut Segment) {
    if !literal.is_empty() {
        segment.pieces.push(Piece::Text(std::mem::take(literal)));
    }
}

/// Three significant digits: speeds range over orders of magnitude between
/// models, so a fixed number of decimals would print 0.000 or 12345.678.
pub(super) struct Significant(pub f64);

impl fmt::Display for Significant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = self.0;
        if value == 0.0 || !value.is_finite() {
            return write!(f, "{value}");
        }
        let magnitude = value.abs().log10().floor() as i32;
        let decimals = (2 - magnitude).clamp(0, 12) as usize;
        write!(f, "{value:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(p: Placeholder) -> Option<String> {
        match p {
            Placeholder::Label => Some("mail".into()),
            Placeholder::F1 => Some("0.12".into()),
            _ => None,
        }
    }

    #[test]
    fn renders_known_values_and_marks_unknown_ones() {
        let template = Template::parse("class `{label}`: F1 {f1}, onset {onset}").unwrap();
        assert_eq!(template.render(values), "class `mail`: F1 0.12, onset n/a");
    }

    #[test]
    fn drops_optional_segments_with_unknown_values() {
        let template = Template::parse("`{label}`[; onset {onset}][; F1 {f1}]").unwrap();
        assert_eq!(template.render(values), "`mail`; F1 0.12");
    }

    #[test]
    fn refuses_malformed_templates() {
        let cases = [
            ("{nope}", "unknown placeholder `{nope}`"),
            ("{label", "without a closing"),
            ("label}", "without an opening"),
            ("[a [b]]", "cannot be nested"),
            ("[{label}", "without a closing `]`"),
            ("a]", "without an opening `[`"),
        ];
        for (text, expected) in cases {
            let error = Template::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn significant_digits_follow_the_magnitude() {
        assert_eq!(Significant(0.012345).to_string(), "0.0123");
        assert_eq!(Significant(12.345).to_string(), "12.3");
        assert_eq!(Significant(12345.6).to_string(), "12346");
        assert_eq!(Significant(0.0).to_string(), "0");
    }
}
