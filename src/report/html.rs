//! `report.html`: one self-contained page (inline CSS and JS, the figures' data as a JSON
//! block) that opens from disk with no network.
//!
//! It is drawn from the report alone plus the stored embeddings, so `dwell report` can
//! redraw it from a state directory: the analysis settings are recovered from the
//! report's `analysis` section rather than stored a second time.

use std::path::PathBuf;

use super::figures::{FigureAnalyses, Figures};
use super::read_json;
use crate::store::{PositionCache, StateDir, StoreError, StoredAnalysisError};

pub const HTML_FILE: &str = "report.html";

const TEMPLATE: &str = include_str!("assets/report.html");
const STYLE: &str = include_str!("assets/report.css");
const SCRIPT: &str = include_str!("assets/report.js");

#[derive(Debug, thiserror::Error)]
pub enum HtmlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Analysis(#[from] StoredAnalysisError),
    #[error("{0}: no report yet; run `dwell analyze` with this state directory first")]
    NoReport(PathBuf),
    #[error("{path}: {message}")]
    BadReport { path: PathBuf, message: String },
}

/// Draws `report.html` from `figures` and replaces it atomically in the state directory.
pub fn write_html(state: &StateDir, figures: &Figures) -> Result<PathBuf, HtmlError> {
    Ok(state.write_file(HTML_FILE, render_html(figures).as_bytes())?)
}

/// Redraws `report.html` from the state directory's `report.json`, embedding nothing:
/// the analyses are recomputed from the stored embeddings with the report's settings.
pub fn rewrite_html(state: &StateDir) -> Result<PathBuf, HtmlError> {
    let report = read_json(state)?;
    let (_, manifest) = StateDir::open_existing(state.root())?;
    let analyses = FigureAnalyses::compute(
        state,
        &mut PositionCache::default(),
        &report,
        &manifest.example_classes,
        None,
    )?;
    write_html(state, &Figures::build(&report, analyses))
}

pub fn render_html(figures: &Figures) -> String {
    let data = script_safe(&figures.to_json().to_string());
    let title = escape_html(&figures.run);
    let generated_by = escape_html(&figures.generated_by);
    fill(
        TEMPLATE,
        &[
            ("TITLE", &title),
            ("GENERATED_BY", &generated_by),
            ("STYLE", STYLE),
            ("SCRIPT", SCRIPT),
            ("DATA", &data),
        ],
    )
}

/// One pass over the template, so that a value (a run path, a label) that happens to
/// contain `{{…}}` is never substituted again.
fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}").and_then(|end| {
            values
                .iter()
                .find(|(key, _)| *key == &after[..end])
                .map(|v| (end, v.1))
        }) {
            Some((end, value)) => {
                out.push_str(value);
                rest = &after[end + 2..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `text` safe inside HTML text and attribute values.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// JSON inside `<script>` must not contain `</script` or `<!--`: `<`, `>` and `&` only
/// occur inside JSON strings, where their `\u` escapes mean the same text.
fn script_safe(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_filled_once() {
        assert_eq!(
            fill("a {{X}} b {{Y}} {{Z}} {{", &[("X", "{{Y}}"), ("Y", "2")]),
            "a {{Y}} b 2 {{Z}} {{"
        );
    }

    #[test]
    fn markup_in_text_is_escaped() {
        assert_eq!(
            escape_html("<b>\"a\" & 'b'</b>"),
            "&lt;b&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/b&gt;"
        );
        let json = serde_json::json!({ "label": "</script><!-- & -->" }).to_string();
        let safe = script_safe(&json);
        assert!(
            !safe.contains("</script") && !safe.contains("<!--"),
            "{safe}"
        );
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["label"], "</script><!-- & -->");
    }
}
