//! transformers' `BertJapaneseTokenizer` with MeCab, token for token: special tokens
//! split out first; each other piece NFKC-normalised, cut into MeCab's surface forms
//! (MeCab's own C++, built by the `mecab-sys` crate, on the dictionary the checkpoint
//! names), lower-cased only with `do_lower_case`, then WordPiece as transformers'
//! `WordpieceTokenizer` does it, or one token per character; `[CLS] … [SEP]`, truncated
//! to `max_len` with both.

use std::collections::HashMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};

use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use super::{read_json, CheckpointError};

/// `tokenizer_config.json` says this is a `BertJapaneseTokenizer` (by class, or by the
/// keys only it has).
pub fn is_japanese_config(config: &Value) -> bool {
    config.get("tokenizer_class").and_then(Value::as_str) == Some("BertJapaneseTokenizer")
        || config.get("word_tokenizer_type").is_some()
}

/// The MeCab dictionaries transformers knows by name; each is the Python package of
/// that name, with the dictionary in its `dicdir`.
const DICTIONARIES: [&str; 3] = ["ipadic", "unidic_lite", "unidic"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subwords {
    WordPiece,
    Character,
}

/// A `BertJapaneseTokenizer` with MeCab, built from a checkpoint's files.
pub struct JapaneseTokenizer {
    model: mecab_sys::Model,
    vocab: HashMap<String, u32>,
    /// Special tokens, longest first: split out of the text before anything else.
    specials: Vec<String>,
    subwords: Subwords,
    do_lower_case: bool,
    /// `never_split` and the special tokens: surfaces never lower-cased.
    never_split: Vec<String>,
    unk: (String, u32),
    cls: (String, u32),
    sep: (String, u32),
    max_len: usize,
}

/// Where MeCab dictionaries are looked for: `--mecab-dicdir` first, then the given
/// Python's import path (the `python3` on PATH by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DictionarySearch {
    pub dicdir: Option<PathBuf>,
}

impl JapaneseTokenizer {
    /// `vocab` is `vocab.txt`; `tokenizer_config.json` and `config.json` are beside it.
    pub fn load(
        vocab: &Path,
        max_len: usize,
        search: &DictionarySearch,
    ) -> Result<Self, CheckpointError> {
        let config_path = vocab.with_file_name("tokenizer_config.json");
        let config: Value = read_json(&config_path)?;
        let invalid = |message: String| CheckpointError::Invalid {
            path: config_path.clone(),
            message,
        };
        let word = config
            .get("word_tokenizer_type")
            .and_then(Value::as_str)
            .unwrap_or("basic");
        if word != "mecab" {
            return Err(invalid(format!(
                "word_tokenizer_type {word:?} is not supported; supported: mecab"
            )));
        }
        if config.get("do_word_tokenize").and_then(Value::as_bool) == Some(false)
            || config.get("do_subword_tokenize").and_then(Value::as_bool) == Some(false)
        {
            return Err(invalid(
                "do_word_tokenize / do_subword_tokenize false is not supported".into(),
            ));
        }
        let subwords = match config
            .get("subword_tokenizer_type")
            .and_then(Value::as_str)
            .unwrap_or("wordpiece")
        {
            "wordpiece" => Subwords::WordPiece,
            "character" => Subwords::Character,
            other => {
                return Err(invalid(format!(
                    "subword_tokenizer_type {other:?} is not supported; supported: wordpiece, character"
                )))
            }
        };
        let kwargs = config.get("mecab_kwargs").filter(|v| !v.is_null());
        let option = kwargs
            .and_then(|k| k.get("mecab_option"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let named = kwargs
            .and_then(|k| k.get("mecab_dic"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let dictionary = match named {
            Some(name) => name,
            None => default_dictionary(&vocab.with_file_name("config.json")),
        };
        if !DICTIONARIES.contains(&dictionary.as_str()) {
            return Err(invalid(format!(
                "mecab_kwargs.mecab_dic {dictionary:?} is not supported; supported: {}",
                DICTIONARIES.join(", ")
            )));
        }
        let dicdir = locate_dictionary(&dictionary, search, &config_path)?;
        tracing::info!(dictionary, dicdir = %dicdir.display(), "MeCab dictionary");
        let mut arguments = vec![
            "-d".to_string(),
            dicdir.display().to_string(),
            "-r".to_string(),
            dicdir.join("mecabrc").display().to_string(),
        ];
        arguments.extend(option.split_whitespace().map(str::to_string));
        // MeCab splits its argument string on whitespace and knows no quoting.
        if let Some(spaced) = [&arguments[1], &arguments[3]]
            .into_iter()
            .find(|a| a.contains(char::is_whitespace))
        {
            return Err(invalid(format!(
                "the MeCab dictionary folder {spaced:?} has whitespace in its path, which MeCab \
                 cannot take; move it or pass --mecab-dicdir"
            )));
        }
        let argument = CString::new(arguments.join(" ")).map_err(|e| invalid(e.to_string()))?;
        let model = mecab_sys::Model::from_cli_arg(&argument).map_err(|e| {
            invalid(format!(
                "MeCab cannot open the {dictionary} dictionary in {}: {e}",
                dicdir.display()
            ))
        })?;
        let vocab_map = read_vocab(vocab)?;
        let token = |key: &str, default: &str| -> Result<(String, u32), CheckpointError> {
            let name = config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_string();
            let id = *vocab_map
                .get(&name)
                .ok_or_else(|| CheckpointError::Tokenizer {
                    path: vocab.to_path_buf(),
                    message: format!("special token {name} is not in the vocabulary"),
                })?;
            Ok((name, id))
        };
        let (unk, cls, sep) = (
            token("unk_token", "[UNK]")?,
            token("cls_token", "[CLS]")?,
            token("sep_token", "[SEP]")?,
        );
        let mut specials: Vec<String> = [
            "unk_token",
            "sep_token",
            "pad_token",
            "cls_token",
            "mask_token",
        ]
        .iter()
        .filter_map(|key| config.get(*key).and_then(Value::as_str).map(str::to_string))
        .chain(
            config
                .get("added_tokens_decoder")
                .and_then(Value::as_object)
                .into_iter()
                .flat_map(|tokens| tokens.values())
                .filter_map(|token| token.get("content").and_then(Value::as_str))
                .map(str::to_string),
        )
        .collect();
        specials.sort_by_key(|s| std::cmp::Reverse(s.chars().count()));
        specials.dedup();
        let never_split = config
            .get("never_split")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .chain(specials.iter().cloned())
            .collect();
        Ok(Self {
            model,
            vocab: vocab_map,
            specials,
            subwords,
            never_split,
            do_lower_case: config
                .get("do_lower_case")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            unk,
            cls,
            sep,
            max_len,
        })
    }

    /// The ids and tokens of `text`, `[CLS]` and `[SEP]` included, truncated.
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, Vec<String>), String> {
        let mut tokens = Vec::new();
        for (piece, special) in self.split_specials(text) {
            if special {
                tokens.push(piece.to_string());
                continue;
            }
            for surface in self.surfaces(piece)? {
                let word = if self.do_lower_case && !self.never_split.contains(&surface) {
                    surface.to_lowercase()
                } else {
                    surface
                };
                match self.subwords {
                    Subwords::WordPiece => self.wordpiece(&word, &mut tokens),
                    Subwords::Character => tokens.extend(word.nfkc().map(|c| {
                        let c = c.to_string();
                        if self.vocab.contains_key(&c) {
                            c
                        } else {
                            self.unk.0.clone()
                        }
                    })),
                }
            }
        }
        tokens.truncate(self.max_len.saturating_sub(2));
        let mut all = Vec::with_capacity(tokens.len() + 2);
        all.push(self.cls.0.clone());
        all.append(&mut tokens);
        all.push(self.sep.0.clone());
        let ids = all
            .iter()
            .map(|token| self.vocab.get(token).copied().unwrap_or(self.unk.1))
            .collect();
        Ok((ids, all))
    }

    /// The text cut at every special token (longest match first), in order; each piece
    /// says whether it is one.
    fn split_specials<'t>(&self, text: &'t str) -> Vec<(&'t str, bool)> {
        let mut pieces = Vec::new();
        let mut rest = text;
        let mut start = 0;
        while start < rest.len() {
            let found = self
                .specials
                .iter()
                .find(|special| rest[start..].starts_with(special.as_str()));
            match found {
                Some(special) => {
                    if start > 0 {
                        pieces.push((&rest[..start], false));
                    }
                    pieces.push((&rest[start..start + special.len()], true));
                    rest = &rest[start + special.len()..];
                    start = 0;
                }
                None => {
                    start += rest[start..].chars().next().map_or(1, char::len_utf8);
                }
            }
        }
        if !rest.is_empty() {
            pieces.push((rest, false));
        }
        pieces
    }

    /// MeCab's surface forms of the NFKC form of `piece`.
    fn surfaces(&self, piece: &str) -> Result<Vec<String>, String> {
        let normalised: String = piece.nfkc().collect();
        let tagger = self.model.new_tagger().map_err(|e| e.to_string())?;
        let mut lattice = self.model.new_lattice().map_err(|e| e.to_string())?;
        let mut sentence = lattice.set_sentence(&normalised);
        tagger.parse(&mut sentence).map_err(|e| e.to_string())?;
        Ok(sentence
            .bos_node()
            .filter(|node| !node.kind().is_bos() && !node.kind().is_eos())
            .map(|node| node.surface().to_string())
            .collect())
    }

    /// transformers' `WordpieceTokenizer`: each whitespace-separated word, greedy
    /// longest match with `##`, `[UNK]` for a word over 100 characters or one that
    /// cannot be matched.
    fn wordpiece(&self, text: &str, out: &mut Vec<String>) {
        for word in text.split_whitespace() {
            let chars: Vec<char> = word.chars().collect();
            if chars.len() > 100 {
                out.push(self.unk.0.clone());
                continue;
            }
            let mut pieces = Vec::new();
            let mut start = 0;
            while start < chars.len() {
                let found = (start + 1..=chars.len()).rev().find_map(|end| {
                    let body: String = chars[start..end].iter().collect();
                    let candidate = if start > 0 { format!("##{body}") } else { body };
                    self.vocab
                        .contains_key(&candidate)
                        .then_some((candidate, end))
                });
                match found {
                    Some((piece, end)) => {
                        pieces.push(piece);
                        start = end;
                    }
                    None => {
                        pieces = vec![self.unk.0.clone()];
                        break;
                    }
                }
            }
            out.extend(pieces);
        }
    }
}

fn read_vocab(path: &Path) -> Result<HashMap<String, u32>, CheckpointError> {
    let text = std::fs::read_to_string(path).map_err(|e| CheckpointError::io(path, e))?;
    Ok(text
        .lines()
        .enumerate()
        .map(|(id, token)| (token.trim_end_matches('\r').to_string(), id as u32))
        .collect())
}

/// transformers' default when `mecab_dic` is absent: `ipadic` before 4.46, `unidic_lite`
/// from it, by the `transformers_version` the checkpoint's `config.json` records.
fn default_dictionary(config_json: &Path) -> String {
    let version = read_json::<Value>(config_json).ok().and_then(|config| {
        config
            .get("transformers_version")
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    let before_4_46 = version.as_deref().is_some_and(|version| {
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) < (4, 46)
    });
    let chosen = if before_4_46 { "ipadic" } else { "unidic_lite" };
    tracing::info!(
        transformers_version = version.as_deref().unwrap_or("unknown"),
        dictionary = chosen,
        "no mecab_kwargs.mecab_dic: transformers' default"
    );
    chosen.to_string()
}

/// The folder of `dictionary`: `--mecab-dicdir` (`DWELL_MECAB_DICDIR`), else
/// `<package>/dicdir` in the import path of the `python3` on PATH.
fn locate_dictionary(
    dictionary: &str,
    search: &DictionarySearch,
    asked_by: &Path,
) -> Result<PathBuf, CheckpointError> {
    let mut tried = Vec::new();
    if let Some(dir) = &search.dicdir {
        if dir.join("sys.dic").is_file() {
            return Ok(dir.clone());
        }
        tried.push(format!("{} (--mecab-dicdir)", dir.display()));
    }
    match python_path() {
        Ok(entries) => {
            for entry in entries {
                let dir = entry.join(dictionary).join("dicdir");
                if dir.join("sys.dic").is_file() {
                    return Ok(dir);
                }
                tried.push(dir.display().to_string());
            }
        }
        Err(why) => tried.push(format!("python3 on PATH ({why})")),
    }
    let pip = dictionary.replace('_', "-");
    Err(CheckpointError::Invalid {
        path: asked_by.to_path_buf(),
        message: format!(
            "the MeCab dictionary {dictionary} is not installed: looked in {}; install it \
             with `pip install {pip}` for the python3 on PATH, or give --mecab-dicdir DIR \
             (the folder with sys.dic)",
            tried.join(", ")
        ),
    })
}

/// `sys.path` of the `python3` on PATH.
fn python_path() -> Result<Vec<PathBuf>, String> {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys; print('\\n'.join(p for p in sys.path if p))",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if !output.status.success() {
        return Err(format!("exited with {}", output.status));
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_dictionary_follows_the_transformers_version() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, r#"{"transformers_version": "4.45.2"}"#).unwrap();
        assert_eq!(default_dictionary(&config), "ipadic");
        std::fs::write(&config, r#"{"transformers_version": "4.46.0"}"#).unwrap();
        assert_eq!(default_dictionary(&config), "unidic_lite");
        std::fs::write(&config, r#"{"transformers_version": "5.24.0"}"#).unwrap();
        assert_eq!(default_dictionary(&config), "unidic_lite");
    }
}
