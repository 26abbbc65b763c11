//! The labelled probe set (SPEC §2.3): JSON Lines, CSV or TSV, validated in full
//! before any model is loaded so that one bad line never costs an embedding pass.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A label as written in the file: a name, or an integer class id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawLabel {
    Name(String),
    Id(i64),
}

impl fmt::Display for RawLabel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawLabel::Name(name) => write!(f, "{name:?}"),
            RawLabel::Id(id) => write!(f, "{id}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProbeExample {
    /// 1-based line number in the source file, for error messages.
    pub line: usize,
    pub id: Option<String>,
    pub text: String,
    pub label: RawLabel,
}

/// A labelled file, as read: the probe set, or a training set of which only labels matter.
#[derive(Debug, Clone)]
pub struct LabelledFile {
    pub path: PathBuf,
    pub examples: Vec<ProbeExample>,
    /// SHA-256 of the file's bytes: the state directory is tied to exactly this probe set.
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineProblem {
    pub line: usize,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: unknown format; use a .jsonl, .csv or .tsv file")]
    UnknownFormat { path: PathBuf },
    #[error("{path}: {}", describe_problems(.problems))]
    BadLines {
        path: PathBuf,
        problems: Vec<LineProblem>,
    },
    #[error("{path}: no examples (the file holds only blank lines)")]
    Empty { path: PathBuf },
    #[error("{path}: unknown label(s): {}; the model's labels are: {}", describe_unknown(.unknown), .known.join(", "))]
    UnknownLabels {
        path: PathBuf,
        unknown: Vec<LineProblem>,
        known: Vec<String>,
    },
}

fn describe_problems(problems: &[LineProblem]) -> String {
    let count = problems.len();
    let listed: Vec<String> = problems
        .iter()
        .take(20)
        .map(|p| format!("line {}: {}", p.line, p.reason))
        .collect();
    let more = if count > 20 {
        format!("; and {} more", count - 20)
    } else {
        String::new()
    };
    format!("{count} bad line(s): {}{more}", listed.join("; "))
}

fn describe_unknown(unknown: &[LineProblem]) -> String {
    let listed: Vec<String> = unknown
        .iter()
        .take(20)
        .map(|p| format!("line {}: {}", p.line, p.reason))
        .collect();
    listed.join("; ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    JsonLines,
    Delimited(u8),
}

fn format_of(path: &Path) -> Option<Format> {
    let extension = path.extension()?.to_str()?.to_ascii_lowercase();
    match extension.as_str() {
        "jsonl" | "ndjson" | "json" => Some(Format::JsonLines),
        "csv" => Some(Format::Delimited(b',')),
        "tsv" | "tab" => Some(Format::Delimited(b'\t')),
        _ => None,
    }
}

/// Reads and validates a probe file: every bad line is collected, not just the first.
pub fn load_probe(path: &Path) -> Result<LabelledFile, ProbeError> {
    load(path, true)
}

/// Reads a training file for its labels only (class counts); texts may be empty.
pub fn load_training_labels(path: &Path) -> Result<LabelledFile, ProbeError> {
    load(path, false)
}

fn load(path: &Path, text_required: bool) -> Result<LabelledFile, ProbeError> {
    let format = format_of(path).ok_or_else(|| ProbeError::UnknownFormat {
        path: path.to_path_buf(),
    })?;
    let bytes = std::fs::read(path).map_err(|error| ProbeError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let sha256 = hex_digest(&bytes);
    let (examples, problems) = match format {
        Format::JsonLines => parse_json_lines(&bytes, text_required),
        Format::Delimited(delimiter) => parse_delimited(&bytes, delimiter, text_required),
    };
    if !problems.is_empty() {
        return Err(ProbeError::BadLines {
            path: path.to_path_buf(),
            problems,
        });
    }
    if examples.is_empty() {
        return Err(ProbeError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(LabelledFile {
        path: path.to_path_buf(),
        examples,
        sha256,
    })
}

pub fn hex_digest(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn parse_json_lines(bytes: &[u8], text_required: bool) -> (Vec<ProbeExample>, Vec<LineProblem>) {
    let mut examples = Vec::new();
    let mut problems = Vec::new();
    for (index, raw_line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = index + 1;
        let Ok(text_line) = std::str::from_utf8(raw_line) else {
            problems.push(LineProblem {
                line,
                reason: "not valid UTF-8".into(),
            });
            continue;
        };
        let trimmed = text_line.trim();
        if trimmed.is_empty() {
            continue;
        }
        match parse_json_object(trimmed, text_required) {
            Ok((id, text, label)) => examples.push(ProbeExample {
                line,
                id,
                text,
                label,
            }),
            Err(reason) => problems.push(LineProblem { line, reason }),
        }
    }
    (examples, problems)
}

fn parse_json_object(
    line: &str,
    text_required: bool,
) -> Result<(Option<String>, String, RawLabel), String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("invalid JSON ({e})"))?;
    let object = value
        .as_object()
        .ok_or_else(|| "expected a JSON object with \"text\" and \"label\"".to_string())?;
    let text = match object.get("text") {
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(_) => return Err("\"text\" must be a string".into()),
        None if text_required => return Err("missing \"text\"".into()),
        None => String::new(),
    };
    if text_required && text.trim().is_empty() {
        return Err("\"text\" is empty".into());
    }
    let label = match object.get("label") {
        Some(serde_json::Value::String(name)) if !name.is_empty() => RawLabel::Name(name.clone()),
        Some(serde_json::Value::Number(number)) => match number.as_i64() {
            Some(id) => RawLabel::Id(id),
            None => return Err(format!("\"label\" {number} is not an integer id")),
        },
        Some(_) => return Err("\"label\" must be a label name or an integer id".into()),
        None => return Err("missing \"label\"".into()),
    };
    let id = match object.get("id") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(id)) => Some(id.clone()),
        Some(serde_json::Value::Number(id)) => Some(id.to_string()),
        Some(_) => return Err("\"id\" must be a string or a number".into()),
    };
    Ok((id, text, label))
}

fn parse_delimited(
    bytes: &[u8],
    delimiter: u8,
    text_required: bool,
) -> (Vec<ProbeExample>, Vec<LineProblem>) {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .from_reader(bytes);
    let mut problems = Vec::new();
    let headers = match reader.headers() {
        Ok(headers) => headers.clone(),
        Err(e) => {
            problems.push(LineProblem {
                line: 1,
                reason: format!("unreadable header ({e})"),
            });
            return (Vec::new(), problems);
        }
    };
    let column = |name: &str| headers.iter().position(|h| h.trim() == name);
    let (text_column, label_column, id_column) = (column("text"), column("label"), column("id"));
    let Some(label_column) = label_column else {
        problems.push(LineProblem {
            line: 1,
            reason: "the header names no \"label\" column".into(),
        });
        return (Vec::new(), problems);
    };
    if text_required && text_column.is_none() {
        problems.push(LineProblem {
            line: 1,
            reason: "the header names no \"text\" column".into(),
        });
        return (Vec::new(), problems);
    }
    let mut examples = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line() as usize);
                problems.push(LineProblem {
                    line,
                    reason: format!("unreadable record ({e})"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.iter().all(|field| field.trim().is_empty()) {
            continue;
        }
        if record.len() != headers.len() {
            problems.push(LineProblem {
                line,
                reason: format!(
                    "{} fields where the header has {}",
                    record.len(),
                    headers.len()
                ),
            });
            continue;
        }
        let text = text_column.map_or("", |c| &record[c]).to_string();
        if text_required && text.trim().is_empty() {
            problems.push(LineProblem {
                line,
                reason: "\"text\" is empty".into(),
            });
            continue;
        }
        let label_field = record[label_column].trim();
        if label_field.is_empty() {
            problems.push(LineProblem {
                line,
                reason: "\"label\" is empty".into(),
            });
            continue;
        }
        let id = id_column
            .map(|c| record[c].to_string())
            .filter(|id| !id.is_empty());
        examples.push(ProbeExample {
            line,
            id,
            text,
            label: RawLabel::Name(label_field.to_string()),
        });
    }
    (examples, problems)
}

/// The model's classes, from `config.json`'s `id2label`, in id order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSet {
    pub names: Vec<String>,
}

impl LabelSet {
    fn index_by_name(&self) -> BTreeMap<&str, usize> {
        self.names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), i))
            .collect()
    }

    /// Maps every example's label to a class index; unknown labels are all named in one error.
    pub fn resolve(&self, file: &LabelledFile) -> Result<Vec<usize>, ProbeError> {
        let by_name = self.index_by_name();
        let mut indices = Vec::with_capacity(file.examples.len());
        let mut unknown = Vec::new();
        for example in &file.examples {
            match self.resolve_one(&by_name, &example.label) {
                Some(index) => indices.push(index),
                None => unknown.push(LineProblem {
                    line: example.line,
                    reason: example.label.to_string(),
                }),
            }
        }
        if unknown.is_empty() {
            Ok(indices)
        } else {
            Err(ProbeError::UnknownLabels {
                path: file.path.clone(),
                unknown,
                known: self.names.clone(),
            })
        }
    }

    fn resolve_one(&self, by_name: &BTreeMap<&str, usize>, label: &RawLabel) -> Option<usize> {
        let as_id = |id: i64| usize::try_from(id).ok().filter(|&i| i < self.names.len());
        match label {
            RawLabel::Name(name) => by_name
                .get(name.as_str())
                .copied()
                // CSV cannot tell a number from a name: a numeric field that names no class is an id.
                .or_else(|| name.parse::<i64>().ok().and_then(as_id)),
            RawLabel::Id(id) => as_id(*id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &tempfile::TempDir, name: &str, content: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(content.as_bytes())
            .unwrap();
        path
    }

    fn labels() -> LabelSet {
        LabelSet {
            names: vec!["games".into(), "mail".into(), "net".into()],
        }
    }

    #[test]
    fn json_lines_with_names_ids_and_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.jsonl",
            "{\"text\":\"a game\",\"label\":\"games\",\"id\":7}\n\n{\"text\":\"smtp\",\"label\":1}\n",
        );
        let file = load_probe(&path).unwrap();
        assert_eq!(file.examples.len(), 2);
        assert_eq!(file.examples[0].id.as_deref(), Some("7"));
        assert_eq!(file.examples[1].line, 3);
        assert_eq!(labels().resolve(&file).unwrap(), vec![0, 1]);
    }

    #[test]
    fn every_bad_line_is_reported_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.jsonl",
            "{\"text\":\"ok\",\"label\":\"games\"}\n{\"text\":\"\",\"label\":\"games\"}\nnot json\n{\"text\":\"x\"}\n[1]\n",
        );
        let ProbeError::BadLines { problems, .. } = load_probe(&path).unwrap_err() else {
            panic!("expected BadLines");
        };
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![2, 3, 4, 5]);
        assert!(problems[0].reason.contains("empty"));
        assert!(problems[1].reason.contains("invalid JSON"));
        assert!(problems[2].reason.contains("missing \"label\""));
    }

    #[test]
    fn unknown_labels_name_the_label_and_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.jsonl",
            "{\"text\":\"a\",\"label\":\"games\"}\n{\"text\":\"b\",\"label\":\"sport\"}\n{\"text\":\"c\",\"label\":9}\n",
        );
        let file = load_probe(&path).unwrap();
        let message = labels().resolve(&file).unwrap_err().to_string();
        assert!(message.contains("line 2: \"sport\""), "{message}");
        assert!(message.contains("line 3: 9"), "{message}");
        assert!(message.contains("games, mail, net"), "{message}");
    }

    #[test]
    fn csv_and_tsv_with_header_and_quoted_fields() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            &dir,
            "p.csv",
            "id,text,label\n1,\"hello, world\",net\n\n2,chess,0\n",
        );
        let file = load_probe(&csv).unwrap();
        assert_eq!(file.examples[0].text, "hello, world");
        assert_eq!(labels().resolve(&file).unwrap(), vec![2, 0]);
        let tsv = write(&dir, "p.tsv", "label\ttext\nmail\tan smtp server\n");
        let file = load_probe(&tsv).unwrap();
        assert_eq!(labels().resolve(&file).unwrap(), vec![1]);
    }

    #[test]
    fn csv_problems_name_their_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "p.csv",
            "text,label\nfine,net\n,net\nonly-one-field\n",
        );
        let ProbeError::BadLines { problems, .. } = load_probe(&path).unwrap_err() else {
            panic!("expected BadLines");
        };
        assert_eq!(
            problems.iter().map(|p| p.line).collect::<Vec<_>>(),
            vec![3, 4]
        );
        let missing = write(&dir, "q.csv", "text,class\na,b\n");
        assert!(load_probe(&missing)
            .unwrap_err()
            .to_string()
            .contains("no \"label\" column"));
    }

    #[test]
    fn training_files_need_labels_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "t.jsonl",
            "{\"label\":\"mail\"}\n{\"label\":\"net\"}\n",
        );
        let file = load_training_labels(&path).unwrap();
        assert_eq!(labels().resolve(&file).unwrap(), vec![1, 2]);
        assert!(load_probe(&path).is_err());
    }

    #[test]
    fn unknown_extension_and_empty_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let txt = write(&dir, "p.txt", "x");
        assert!(matches!(
            load_probe(&txt),
            Err(ProbeError::UnknownFormat { .. })
        ));
        let empty = write(&dir, "p.jsonl", "\n\n");
        assert!(matches!(load_probe(&empty), Err(ProbeError::Empty { .. })));
    }
}
