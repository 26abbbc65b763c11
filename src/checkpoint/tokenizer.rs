//! Tokenizer resolution (SPEC §2.2), first found wins:
//! `tokenizer.json` in the checkpoint, `tokenizer.json` in the run directory,
//! `vocab.txt` + `tokenizer_config.json` (checkpoint, then run directory) built into
//! the BERT WordPiece pipeline, and last a path the user gives.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{Model, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::japanese::{is_japanese_config, DictionarySearch, JapaneseTokenizer};
use super::{read_json, CheckpointError};

/// Where the tokenizer came from, so the report can say which one was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    TokenizerJson(PathBuf),
    WordPieceVocab(PathBuf),
    /// `vocab.txt` whose `tokenizer_config.json` is a `BertJapaneseTokenizer`'s (MeCab).
    JapaneseVocab(PathBuf),
}

impl TokenizerSource {
    pub fn path(&self) -> &Path {
        match self {
            TokenizerSource::TokenizerJson(path)
            | TokenizerSource::WordPieceVocab(path)
            | TokenizerSource::JapaneseVocab(path) => path,
        }
    }

    /// The files whose bytes decide the ids: the tokenizer file itself, and for a
    /// WordPiece vocabulary the `tokenizer_config.json` beside it (casing, special tokens).
    pub fn files(&self) -> Vec<PathBuf> {
        match self {
            TokenizerSource::TokenizerJson(path) => vec![path.clone()],
            TokenizerSource::WordPieceVocab(vocab) => {
                let config = vocab.with_file_name("tokenizer_config.json");
                std::iter::once(vocab.clone())
                    .chain(config.is_file().then_some(config))
                    .collect()
            }
            // config.json too: its transformers_version picks the default dictionary.
            TokenizerSource::JapaneseVocab(vocab) => {
                ["vocab.txt", "tokenizer_config.json", "config.json"]
                    .into_iter()
                    .map(|name| vocab.with_file_name(name))
                    .filter(|path| path.is_file())
                    .collect()
            }
        }
    }
}

/// The slow BERT tokenizer's settings that change the ids.
#[derive(Debug, Deserialize)]
struct BertTokenizerConfig {
    #[serde(default = "yes")]
    do_lower_case: bool,
    #[serde(default)]
    strip_accents: Option<bool>,
    #[serde(default = "yes")]
    tokenize_chinese_chars: bool,
    #[serde(default = "default_unk")]
    unk_token: String,
    #[serde(default = "default_cls")]
    cls_token: String,
    #[serde(default = "default_sep")]
    sep_token: String,
}

fn yes() -> bool {
    true
}
fn default_unk() -> String {
    "[UNK]".into()
}
fn default_cls() -> String {
    "[CLS]".into()
}
fn default_sep() -> String {
    "[SEP]".into()
}

/// A probe text's ids, and its tokens as strings, `[CLS]`/`[SEP]` (or the family's
/// specials) included, truncated to the `max_len` the tokenizer was built for.
pub struct Encoded {
    pub ids: Vec<u32>,
    pub tokens: Vec<String>,
}

/// A tokenizer `dwell` runs: the `tokenizers` library's, or transformers'
/// `BertJapaneseTokenizer` with MeCab, which has no `tokenizer.json`.
pub enum TextTokenizer {
    Transformers(Box<Tokenizer>),
    Japanese(Box<JapaneseTokenizer>),
}

impl TextTokenizer {
    pub fn encode(&self, text: &str) -> Result<Encoded, String> {
        match self {
            TextTokenizer::Transformers(tokenizer) => {
                let encoding = tokenizer.encode(text, true).map_err(|e| e.to_string())?;
                Ok(Encoded {
                    ids: encoding.get_ids().to_vec(),
                    tokens: encoding.get_tokens().to_vec(),
                })
            }
            TextTokenizer::Japanese(tokenizer) => {
                let (ids, tokens) = tokenizer.encode(text)?;
                Ok(Encoded { ids, tokens })
            }
        }
    }
}

/// Finds and builds the tokenizer for `model_dir`, truncating to `max_len` tokens
/// (special tokens included) and never padding: batches are padded by the embedder.
pub fn load_tokenizer(
    model_dir: &Path,
    run_dir: Option<&Path>,
    user_path: Option<&Path>,
    max_len: usize,
    dictionaries: &DictionarySearch,
) -> Result<(TextTokenizer, TokenizerSource), CheckpointError> {
    let folders: Vec<&Path> = run_dir.into_iter().collect();
    let source = resolve_tokenizer(model_dir, &folders, user_path)?;
    Ok((build_tokenizer(&source, max_len, dictionaries)?, source))
}

/// Builds the tokenizer `source` names; see [`load_tokenizer`]. `dictionaries` says
/// where MeCab's dictionaries are looked for (Japanese BERTs only).
pub fn build_tokenizer(
    source: &TokenizerSource,
    max_len: usize,
    dictionaries: &DictionarySearch,
) -> Result<TextTokenizer, CheckpointError> {
    let mut tokenizer = match source {
        TokenizerSource::TokenizerJson(path) => {
            Tokenizer::from_file(path).map_err(|e| CheckpointError::Tokenizer {
                path: path.clone(),
                message: e.to_string(),
            })?
        }
        TokenizerSource::WordPieceVocab(vocab) => build_wordpiece(vocab)?,
        TokenizerSource::JapaneseVocab(vocab) => {
            return Ok(TextTokenizer::Japanese(Box::new(JapaneseTokenizer::load(
                vocab,
                max_len,
                dictionaries,
            )?)))
        }
    };
    tokenizer
        .with_truncation(Some(TruncationParams {
            max_length: max_len,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| CheckpointError::Tokenizer {
            path: source.path().to_path_buf(),
            message: e.to_string(),
        })?;
    tokenizer.with_padding(None);
    Ok(TextTokenizer::Transformers(Box::new(tokenizer)))
}

/// Which tokenizer file [`load_tokenizer`] would use for `model_dir`, without building
/// it: `model_dir` first, then each of `fallbacks` (the run directory, a base model's
/// folder), then `user_path`.
pub fn resolve_tokenizer(
    model_dir: &Path,
    fallbacks: &[&Path],
    user_path: Option<&Path>,
) -> Result<TokenizerSource, CheckpointError> {
    let folders: Vec<&Path> = std::iter::once(model_dir)
        .chain(fallbacks.iter().copied())
        .collect();
    for folder in &folders {
        let json = folder.join("tokenizer.json");
        if json.is_file() {
            return Ok(TokenizerSource::TokenizerJson(json));
        }
    }
    for folder in &folders {
        let vocab = folder.join("vocab.txt");
        let config = folder.join("tokenizer_config.json");
        if vocab.is_file() && config.is_file() {
            let japanese = is_japanese_config(&read_json(&config)?);
            return Ok(if japanese {
                TokenizerSource::JapaneseVocab(vocab)
            } else {
                TokenizerSource::WordPieceVocab(vocab)
            });
        }
    }
    if let Some(path) = user_path {
        return if path.is_dir() {
            resolve_tokenizer(path, &[], None)
        } else if path.file_name().is_some_and(|n| n == "vocab.txt") {
            Ok(TokenizerSource::WordPieceVocab(path.to_path_buf()))
        } else {
            Ok(TokenizerSource::TokenizerJson(path.to_path_buf()))
        };
    }
    let hint = if model_dir.join("vocab.txt").is_file() {
        " (vocab.txt is there but tokenizer_config.json is missing)".to_string()
    } else {
        String::new()
    };
    Err(CheckpointError::NoTokenizer {
        dir: model_dir.to_path_buf(),
        hint,
    })
}

fn build_wordpiece(vocab: &Path) -> Result<Tokenizer, CheckpointError> {
    let config_path = vocab.with_file_name("tokenizer_config.json");
    let config: BertTokenizerConfig = if config_path.is_file() {
        read_json(&config_path)?
    } else {
        serde_json::from_str("{}").expect("all fields have defaults")
    };
    let vocab_name = vocab.to_string_lossy();
    let wordpiece = WordPiece::from_file(&vocab_name)
        .unk_token(config.unk_token.clone())
        .continuing_subword_prefix("##".into())
        .max_input_chars_per_word(100)
        .build()
        .map_err(|e| CheckpointError::Tokenizer {
            path: vocab.to_path_buf(),
            message: e.to_string(),
        })?;
    let special_id = |token: &str| {
        wordpiece
            .get_vocab()
            .get(token)
            .copied()
            .ok_or_else(|| CheckpointError::Tokenizer {
                path: vocab.to_path_buf(),
                message: format!("special token {token} is not in the vocabulary"),
            })
    };
    let cls = (config.cls_token.clone(), special_id(&config.cls_token)?);
    let sep = (config.sep_token.clone(), special_id(&config.sep_token)?);
    let mut tokenizer = Tokenizer::new(wordpiece);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(
            true,
            config.tokenize_chinese_chars,
            config.strip_accents,
            config.do_lower_case,
        )))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_post_processor(Some(BertProcessing::new(sep, cls)));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn ids(tokenizer: &TextTokenizer, text: &str) -> Vec<u32> {
        tokenizer.encode(text).unwrap().ids
    }

    fn load(
        dir: &Path,
        run_dir: Option<&Path>,
        user_path: Option<&Path>,
        max_len: usize,
    ) -> Result<(TextTokenizer, TokenizerSource), CheckpointError> {
        load_tokenizer(
            dir,
            run_dir,
            user_path,
            max_len,
            &DictionarySearch::default(),
        )
    }

    #[test]
    fn vocab_txt_pipeline_matches_the_fast_tokenizer_on_the_probe_set() {
        let (fast, fast_source) = load(
            &fixtures().join("hf-tiny-run/checkpoint-480"),
            None,
            None,
            64,
        )
        .unwrap();
        assert!(matches!(fast_source, TokenizerSource::TokenizerJson(_)));
        let (slow, slow_source) = load(&fixtures().join("legacy-model"), None, None, 64).unwrap();
        assert!(matches!(slow_source, TokenizerSource::WordPieceVocab(_)));
        let probe = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("data/debian-sections/test.jsonl"),
        )
        .unwrap();
        let mut compared = 0;
        for line in probe.lines() {
            let text = serde_json::from_str::<serde_json::Value>(line).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(ids(&fast, &text), ids(&slow, &text), "{text}");
            compared += 1;
        }
        assert_eq!(compared, 405);
    }

    #[test]
    fn truncates_to_max_len_with_special_tokens() {
        let (tokenizer, _) = load(&fixtures().join("legacy-model"), None, None, 5).unwrap();
        let ids = ids(&tokenizer, "a long text about games and mail and the net");
        assert_eq!(ids.len(), 5);
        assert_eq!((ids[0], ids[4]), (2, 3), "[CLS] ... [SEP]");
    }

    #[test]
    fn falls_back_to_the_run_directory_then_the_user_path() {
        let empty = tempfile::tempdir().unwrap();
        let run = fixtures().join("sharded-model");
        let (_, source) = load(empty.path(), Some(&run), None, 8).unwrap();
        assert_eq!(source.path(), run.join("tokenizer.json"));
        let user = fixtures().join("legacy-model");
        let (_, source) = load(empty.path(), None, Some(&user), 8).unwrap();
        assert_eq!(source.path(), user.join("vocab.txt"));
        let message = load(empty.path(), None, None, 8).err().unwrap().to_string();
        assert!(message.contains("no tokenizer"), "{message}");
    }

    #[test]
    fn a_wordpiece_vocabulary_is_identified_with_its_casing_config() {
        let legacy = fixtures().join("legacy-model");
        let source = resolve_tokenizer(&legacy, &[], None).unwrap();
        assert_eq!(
            source.files(),
            [
                legacy.join("vocab.txt"),
                legacy.join("tokenizer_config.json")
            ]
        );
        let json = fixtures().join("sharded-model");
        let source = resolve_tokenizer(&json, &[], None).unwrap();
        assert_eq!(source.files(), [json.join("tokenizer.json")]);
    }
}
