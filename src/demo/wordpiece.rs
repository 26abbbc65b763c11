//! A BERT WordPiece tokenizer trained on the corpus, as `hf_finetune.py --tiny` makes
//! one with the Python `BertWordPieceTokenizer`.

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::DemoError;

/// At ids 0..4, in this order, as in every BERT vocabulary.
pub const SPECIAL_TOKENS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
pub const PAD_ID: u32 = 0;

/// Lower-casing BERT normaliser and pre-tokeniser, `[CLS] $A [SEP]`; no truncation or
/// padding is stored (the trainer truncates a copy; dwell sets its own `--max-len`).
/// Not bit-reproducible: the crate's trainer counts words in a `HashMap`, so merges of
/// equal frequency can come out in a different order (and a few rare pieces differ).
pub fn train_tokenizer(texts: &[String], vocab_size: usize) -> Result<Tokenizer, DemoError> {
    let error = |e: tokenizers::Error| DemoError::Tokenizer(e.to_string());
    let model = WordPiece::builder()
        .unk_token("[UNK]".into())
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(error)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
        .with_pre_tokenizer(Some(BertPreTokenizer))
        .with_decoder(Some(WordPieceDecoder::default()));
    // The Python BertWordPieceTokenizer's training defaults.
    let mut trainer: TrainerWrapper = WordPieceTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .limit_alphabet(1000)
        .special_tokens(
            SPECIAL_TOKENS
                .iter()
                .map(|token| AddedToken::from(*token, true))
                .collect(),
        )
        .continuing_subword_prefix("##".into())
        .show_progress(false)
        .build()
        .into();
    tokenizer.train(&mut trainer, texts.iter()).map_err(error)?;
    for (expected, token) in SPECIAL_TOKENS.iter().enumerate() {
        if tokenizer.token_to_id(token) != Some(expected as u32) {
            return Err(DemoError::Tokenizer(format!(
                "the trained vocabulary does not have {token} at id {expected}"
            )));
        }
    }
    let template = TemplateProcessing::builder()
        .try_single("[CLS] $A [SEP]")
        .and_then(|b| b.try_pair("[CLS] $A [SEP] $B:1 [SEP]:1"))
        .map_err(|e| DemoError::Tokenizer(e.to_string()))?
        .special_tokens(vec![("[CLS]", 2), ("[SEP]", 3)])
        .build()
        .map_err(|e| DemoError::Tokenizer(e.to_string()))?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

/// `tokenizer_config.json` as transformers writes it for a `BertTokenizer` (the fixture's),
/// with `model_max_length` the model's position limit.
pub fn tokenizer_config(model_max_length: usize) -> serde_json::Value {
    serde_json::json!({
        "backend": "tokenizers",
        "cls_token": "[CLS]",
        "do_lower_case": true,
        "mask_token": "[MASK]",
        "model_max_length": model_max_length,
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "strip_accents": null,
        "tokenize_chinese_chars": true,
        "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_first_then_wordpieces_and_cls_sep_around_the_text() {
        let texts: Vec<String> = (0..50)
            .map(|i| format!("Network tools for game number {i} and the mail editor"))
            .collect();
        let tokenizer = train_tokenizer(&texts, 120).unwrap();
        let vocab = tokenizer.get_vocab(true);
        assert!(vocab.len() <= 120);
        assert!(vocab.keys().any(|token| token.starts_with("##")));
        let encoding = tokenizer.encode("NETWORK tools", true).unwrap();
        let tokens = encoding.get_tokens();
        assert_eq!(tokens.first().map(String::as_str), Some("[CLS]"));
        assert_eq!(tokens.last().map(String::as_str), Some("[SEP]"));
        assert_eq!(tokens[1], "network");
    }
}
