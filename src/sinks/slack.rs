//! The Slack Block Kit message: a header with run and step, a line on what changed, a
//! compact per-class table, the top recommendations with their key evidence, and where
//! the report is. Slack rejects a message whose header exceeds 150 characters or whose
//! section exceeds 3000, so every piece is bounded here rather than trusting label names.

use serde_json::{json, Value};

use super::{Change, ChangeLine, ClassLine, Notification, NotificationKind, RecommendationLine};

const MAX_RECOMMENDATIONS: usize = 5;
const HEADER_CHARS: usize = 150;
const SECTION_CHARS: usize = 3000;
const LABEL_CHARS: usize = 24;
const MESSAGE_CHARS: usize = 1200;
const EVIDENCE_CHARS: usize = 600;
const LIST_CHARS: usize = 500;

pub(super) fn payload(notification: &Notification) -> Value {
    let mut blocks = vec![
        json!({
            "type": "header",
            "text": {"type": "plain_text", "text": cut(&title(notification), HEADER_CHARS), "emoji": true},
        }),
        section(&headline(notification)),
    ];
    if !notification.classes.is_empty() {
        blocks.push(section(&class_table(&notification.classes)));
    }
    if let Some(run_advice) = &notification.run_advice {
        blocks.push(section(&format!("*Run:* {}", escape(run_advice))));
    }
    let top = top_recommendations(&notification.recommendations);
    if !top.is_empty() {
        blocks.push(json!({"type": "divider"}));
    }
    for (rank, recommendation) in top.iter().enumerate() {
        let change = notification
            .changes
            .iter()
            .find(|c| c.id == recommendation.id)
            .map(|c| c.change);
        blocks.push(section(&recommendation_text(
            rank + 1,
            recommendation,
            change,
        )));
    }
    let mut footer = format!("Report: `{}`", escape(&notification.report_path));
    let more = notification.recommendations.len() - top.len();
    if more > 0 {
        footer.push_str(&format!(
            " · {more} more recommendation{} there",
            plural(more)
        ));
    }
    blocks.push(json!({
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": cut(&footer, SECTION_CHARS)}],
    }));
    json!({"text": fallback(notification), "blocks": blocks})
}

fn section(mrkdwn: &str) -> Value {
    json!({"type": "section", "text": {"type": "mrkdwn", "text": cut(mrkdwn, SECTION_CHARS)}})
}

fn step_text(notification: &Notification) -> String {
    match notification.max_steps {
        Some(max) => format!("step {} / {max}", notification.step),
        None => format!("step {}", notification.step),
    }
}

fn title(notification: &Notification) -> String {
    format!("dwell · {} · {}", notification.run, step_text(notification))
}

/// Shown in notifications and by clients that cannot draw blocks.
fn fallback(notification: &Notification) -> String {
    let what = match notification.kind {
        NotificationKind::AdviceChanged => "advice changed",
        NotificationKind::RunFinished => "run finished",
    };
    let count = notification.recommendations.len();
    let mut text = escape(&format!(
        "dwell: {} at {}: {what}",
        notification.run,
        step_text(notification)
    ));
    let changes = change_summary(&notification.changes);
    if changes.is_empty() {
        text.push_str(&format!(", {count} recommendation{}", plural(count)));
    } else {
        text.push_str(&format!(" · {changes}"));
    }
    cut(&text, SECTION_CHARS)
}

/// What changed leads ("new: add data to `mail`; resolved: …"), the standing advice after.
fn headline(notification: &Notification) -> String {
    let count = notification.recommendations.len();
    let stand = format!("{count} recommendation{} stand.", plural(count));
    let changes = change_summary(&notification.changes);
    match (notification.kind, changes.is_empty()) {
        (NotificationKind::AdviceChanged, _) => {
            format!("*Advice changed* · {}\n{stand}", cut(&changes, LIST_CHARS))
        }
        (NotificationKind::RunFinished, true) => format!("*Run finished*: {stand}"),
        (NotificationKind::RunFinished, false) => {
            format!("*Run finished* · {}\n{stand}", cut(&changes, LIST_CHARS))
        }
    }
}

/// "new: a, b; changed: c; resolved: d", escaped for mrkdwn.
fn change_summary(changes: &[ChangeLine]) -> String {
    [
        (Change::New, "new"),
        (Change::Changed, "changed"),
        (Change::Resolved, "resolved"),
    ]
    .into_iter()
    .filter_map(|(kind, name)| {
        let items: Vec<String> = changes
            .iter()
            .filter(|c| c.change == kind)
            .map(|c| {
                if c.description.is_empty() {
                    format!("`{}`", code(&c.id))
                } else {
                    escape(&c.description)
                }
            })
            .collect();
        (!items.is_empty()).then(|| format!("{name}: {}", items.join(", ")))
    })
    .collect::<Vec<_>>()
    .join("; ")
}

/// A fixed-width table in a code block: aligned columns read better on a phone than
/// Block Kit fields, and one block keeps the message short.
fn class_table(classes: &[ClassLine]) -> String {
    let rows: Vec<[String; 5]> = classes
        .iter()
        .map(|class| {
            [
                cut(&class.label, LABEL_CHARS),
                cut(&class.quadrant, LABEL_CHARS),
                class.f1.map_or("–".to_string(), |f1| format!("{f1:.2}")),
                class
                    .onset
                    .map_or("–".to_string(), |onset| onset.to_string()),
                cut(&class.action, LABEL_CHARS),
            ]
        })
        .collect();
    let header = ["class", "quadrant", "F1", "onset", "action"].map(str::to_string);
    let mut widths = header.clone().map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String; 5]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| {
                format!("{}{}", code(cell), " ".repeat(width - cell.chars().count()))
            })
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    // Room for the fences and the "more" line, so the block stays under Slack's limit.
    let budget = SECTION_CHARS - 64;
    let mut table = line(&header);
    for (shown, row) in rows.iter().enumerate() {
        let next = line(row);
        if table.chars().count() + next.chars().count() + 1 > budget {
            table.push_str(&format!(
                "\n… {} more classes in the report",
                rows.len() - shown
            ));
            break;
        }
        table.push('\n');
        table.push_str(&next);
    }
    format!("```\n{table}\n```")
}

/// Most urgent first (priority 1 before 2; advice without a priority last), keeping the
/// given order among equals.
fn top_recommendations(recommendations: &[RecommendationLine]) -> Vec<&RecommendationLine> {
    let mut sorted: Vec<&RecommendationLine> = recommendations.iter().collect();
    sorted.sort_by_key(|r| r.priority.unwrap_or(u32::MAX));
    sorted.truncate(MAX_RECOMMENDATIONS);
    sorted
}

fn recommendation_text(
    rank: usize,
    recommendation: &RecommendationLine,
    change: Option<Change>,
) -> String {
    let mut title = format!(
        "*{rank}. {}* · `{}`",
        escape(&recommendation.action),
        code(&cut(&recommendation.class, LABEL_CHARS * 2))
    );
    if let Some(priority) = recommendation.priority {
        title.push_str(&format!(" · priority {priority}"));
    }
    match change {
        Some(Change::New) => title.push_str(" · _new_"),
        Some(Change::Changed) => title.push_str(" · _changed_"),
        Some(Change::Resolved) | None => {}
    }
    let mut text = format!(
        "{title}\n{}",
        escape(&cut(&recommendation.message, MESSAGE_CHARS))
    );
    let evidence = evidence_line(&recommendation.evidence);
    if !evidence.is_empty() {
        text.push_str(&format!("\n>{}", escape(&cut(&evidence, EVIDENCE_CHARS))));
    }
    text
}

/// `onset 300 · dwell fraction 0.25 · f1 0.41`: the evidence object's entries in its own
/// order, numbers rounded for reading (the report keeps them exact), `–` for null.
fn evidence_line(evidence: &Value) -> String {
    match evidence {
        Value::Object(entries) => entries
            .iter()
            .map(|(key, value)| format!("{} {}", key.replace('_', " "), evidence_value(value)))
            .collect::<Vec<_>>()
            .join(" · "),
        Value::Null => String::new(),
        other => evidence_value(other),
    }
}

fn evidence_value(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        // Absent evidence, such as the onset of a class that does not dwell yet.
        Value::Null => "–".to_string(),
        Value::Number(number) if number.is_f64() => {
            let rounded = format!("{:.3}", number.as_f64().unwrap_or_default());
            rounded
                .trim_end_matches('0')
                .trim_end_matches('.')
                .to_string()
        }
        other => other.to_string(),
    }
}

/// Slack reads `&`, `<` and `>` as markup in every text field, code included.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text inside backticks: a backtick in a label would end the code span early.
fn code(text: &str) -> String {
    escape(&text.replace('`', "'"))
}

fn cut(text: &str, max_chars: usize) -> String {
    if text.chars().count() <= max_chars {
        return text.to_string();
    }
    let mut kept: String = text.chars().take(max_chars - 1).collect();
    kept.push('…');
    kept
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::ChangeLine;

    fn notification(classes: usize, recommendations: usize) -> Notification {
        Notification {
            kind: NotificationKind::AdviceChanged,
            run: "run<&>".into(),
            step: 10,
            max_steps: None,
            run_advice: None,
            classes: (0..classes)
                .map(|i| ClassLine {
                    label: format!("class-{i}-{}", "long".repeat(20)),
                    quadrant: "data_shortage".into(),
                    action: "add_data".into(),
                    f1: Some(0.5),
                    onset: None,
                })
                .collect(),
            recommendations: (0..recommendations)
                .map(|i| RecommendationLine {
                    id: format!("r{i}"),
                    class: format!("c{i}"),
                    action: "add data".into(),
                    priority: Some(u32::try_from(recommendations - i).unwrap()),
                    message: "m".repeat(5000),
                    evidence: json!({"onset": null, "f1": 0.123456, "count": 3}),
                })
                .collect(),
            changes: vec![ChangeLine {
                id: "gone`<x>".into(),
                change: Change::Resolved,
                description: String::new(),
            }],
            report_path: "/state/report.json".into(),
        }
    }

    fn texts(payload: &Value) -> Vec<String> {
        let mut texts = Vec::new();
        for block in payload["blocks"].as_array().unwrap() {
            if let Some(text) = block["text"]["text"].as_str() {
                texts.push(text.to_string());
            }
            for element in block["elements"].as_array().into_iter().flatten() {
                texts.push(element["text"].as_str().unwrap().to_string());
            }
        }
        texts
    }

    #[test]
    fn every_text_fits_slacks_limits_however_large_the_run() {
        let payload = payload(&notification(500, 40));
        let blocks = payload["blocks"].as_array().unwrap();
        assert!(blocks.len() <= 50);
        assert!(blocks[0]["text"]["text"].as_str().unwrap().chars().count() <= HEADER_CHARS);
        for text in texts(&payload) {
            assert!(text.chars().count() <= SECTION_CHARS, "{}", text.len());
        }
        let table = blocks[2]["text"]["text"].as_str().unwrap();
        assert!(
            table.ends_with("more classes in the report\n```"),
            "{table}"
        );
        assert!(table.starts_with("```\nclass"));
    }

    #[test]
    fn the_most_urgent_five_are_shown_with_rounded_evidence() {
        let payload = payload(&notification(1, 7));
        let shown: Vec<String> = texts(&payload)
            .into_iter()
            .filter(|t| t.starts_with('*') && t.contains(" · `c"))
            .collect();
        assert_eq!(shown.len(), MAX_RECOMMENDATIONS);
        assert!(
            shown[0].starts_with("*1. add data* · `c6` · priority 1"),
            "{}",
            shown[0]
        );
        assert!(
            shown[0].ends_with("\n>count 3 · f1 0.123 · onset –"),
            "{}",
            shown[0]
        );
        let footer = texts(&payload).pop().unwrap();
        assert!(footer.ends_with("2 more recommendations there"), "{footer}");
    }

    #[test]
    fn markup_characters_are_escaped() {
        let payload = payload(&notification(0, 0));
        assert!(payload["text"]
            .as_str()
            .unwrap()
            .contains("run&lt;&amp;&gt;"));
        let all = texts(&payload).join("\n");
        assert!(all.contains("resolved: `gone'&lt;x&gt;`"), "{all}");
        assert!(!all.contains("<x>"));
    }
}
