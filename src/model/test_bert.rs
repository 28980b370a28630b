//! `hybrid-tui make-test-model --arch bert`: a complete BERT embedding
//! model directory with random weights, as sentence-transformers ships one.
//!
//! The tokenizer is a WordPiece trained on `assets/corpus.txt` with BERT's
//! normalizer (lower case), pre-tokenizer and `[CLS] … [SEP]` template,
//! written both as tokenizer.json and as the vocab.txt a `BertTokenizer`
//! reads. Beside the weights: modules.json and `1_Pooling/config.json`
//! with the chosen pooling, config_sentence_transformers.json with bge's
//! query prompt, and sentence_bert_config.json. Weights are drawn like the
//! decoders' (N(0, 1/fan_in), layer norms 1 ± 0.1, biases N(0, 0.1²)), so
//! vectors of different texts differ clearly. Same options → same bytes.

use std::path::Path;

use serde_json::json;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{AddedToken, TokenizerBuilder};

use super::ModelError;
use super::bert::{BertSpec, Pooling};
use super::test_model::{CORPUS, WeightDtype, encode, random_tensor, write, write_shard};

/// BERT's special tokens, at ids 0-4 in this order.
pub const SPECIALS: [&str; 5] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"];
/// The query prompt bge-*-en-v1.5 documents, written into the test model's
/// config_sentence_transformers.json.
pub const BGE_QUERY_PROMPT: &str = "Represent this sentence for searching relevant passages: ";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BertPreset {
    /// 2 layers, hidden 64: the tests' model.
    Tiny,
    /// 4 layers, hidden 128.
    Small,
    /// BAAI/bge-small-en-v1.5's shape (12 layers, hidden 384, 30522 ids).
    BgeSmall,
}

impl BertPreset {
    pub const ALL: [BertPreset; 3] = [BertPreset::Tiny, BertPreset::Small, BertPreset::BgeSmall];

    pub fn name(self) -> &'static str {
        match self {
            BertPreset::Tiny => "tiny",
            BertPreset::Small => "small",
            BertPreset::BgeSmall => "bge-small",
        }
    }

    pub fn parse(s: &str) -> Option<BertPreset> {
        BertPreset::ALL.into_iter().find(|p| p.name() == s)
    }

    /// The shape; `vocab` is the trained tokenizer's size (bge-small keeps
    /// its real 30522 rows, of which the test tokenizer uses the first).
    pub fn spec(self, vocab: usize, pooling: Pooling) -> BertSpec {
        let (hidden_size, num_layers, num_heads, max_position_embeddings, vocab_size) = match self {
            BertPreset::Tiny => (64, 2, 4, 128, vocab),
            BertPreset::Small => (128, 4, 4, 256, vocab),
            BertPreset::BgeSmall => (384, 12, 12, 512, vocab.max(30_522)),
        };
        BertSpec {
            hidden_size,
            intermediate_size: 4 * hidden_size,
            num_layers,
            num_heads,
            vocab_size,
            max_position_embeddings,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
            prefix: String::new(),
            pooling,
            query_instruction: Some(BGE_QUERY_PROMPT.to_string()),
            max_seq_length: max_position_embeddings,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestBertOptions {
    pub preset: BertPreset,
    pub pooling: Pooling,
    pub seed: u64,
    pub dtype: WeightDtype,
}

/// Train the WordPiece tokenizer; its JSON and its vocabulary in id order.
fn train_wordpiece() -> Result<(String, Vec<String>), ModelError> {
    let other = |what: &str| {
        let what = what.to_string();
        move |e: tokenizers::Error| ModelError::Other(format!("{what}: {e}"))
    };
    let mut trainer = WordPieceTrainerBuilder::new()
        .vocab_size(2048)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            SPECIALS
                .iter()
                .map(|s| AddedToken::from(s.to_string(), true))
                .collect(),
        )
        .build();
    let mut tok = TokenizerBuilder::<
        WordPiece,
        BertNormalizer,
        BertPreTokenizer,
        BertProcessing,
        WordPieceDecoder,
    >::new()
    .with_model(WordPiece::default())
    .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
    .with_pre_tokenizer(Some(BertPreTokenizer))
    .with_decoder(Some(WordPieceDecoder::default()))
    .build()
    .map_err(other("building the tokenizer"))?;
    tok.train(&mut trainer, CORPUS.lines())
        .map_err(other("training the tokenizer"))?;
    let id = |s: &str| {
        tok.token_to_id(s)
            .ok_or_else(|| ModelError::Other(format!("special token {s} has no id")))
    };
    let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
    tok.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    let mut vocab: Vec<(String, u32)> = tok.get_vocab(true).into_iter().collect();
    vocab.sort_by_key(|(_, i)| *i);
    if vocab
        .iter()
        .enumerate()
        .any(|(i, (_, id))| *id as usize != i)
    {
        return Err(ModelError::Other(
            "the trained vocabulary's ids are not 0..n".into(),
        ));
    }
    let json = tok
        .to_string(true)
        .map_err(other("serializing the tokenizer"))?;
    Ok((json, vocab.into_iter().map(|(t, _)| t).collect()))
}

fn pretty(v: &serde_json::Value) -> Vec<u8> {
    serde_json::to_string_pretty(v)
        .unwrap_or_default()
        .into_bytes()
}

/// Write a complete BERT model directory into `out` (created if needed).
pub fn make_test_bert(out: &Path, opts: &TestBertOptions) -> Result<BertSpec, ModelError> {
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|e| ModelError::Io {
            path: p.to_path_buf(),
            source: e,
        })
    };
    mkdir(out)?;
    let (tokenizer_json, vocab) = train_wordpiece()?;
    let spec = opts.preset.spec(vocab.len(), opts.pooling);
    write(&out.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let mut vocab_txt = vocab.join("\n");
    vocab_txt.push('\n');
    write(&out.join("vocab.txt"), vocab_txt.as_bytes())?;
    write(
        &out.join("config.json"),
        &pretty(&spec.to_hf_json(opts.dtype.torch_name())),
    )?;
    write(
        &out.join("tokenizer_config.json"),
        &pretty(&json!({
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": true,
            "model_max_length": spec.max_seq_length,
            "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "unk_token": "[UNK]", "mask_token": "[MASK]",
            "clean_up_tokenization_spaces": true,
        })),
    )?;
    write(
        &out.join("special_tokens_map.json"),
        &pretty(&json!({
            "cls_token": "[CLS]", "sep_token": "[SEP]", "pad_token": "[PAD]",
            "unk_token": "[UNK]", "mask_token": "[MASK]",
        })),
    )?;
    write(
        &out.join("modules.json"),
        &pretty(&json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
        ])),
    )?;
    mkdir(&out.join("1_Pooling"))?;
    mkdir(&out.join("2_Normalize"))?;
    write(
        &out.join("1_Pooling").join("config.json"),
        &pretty(&json!({
            "word_embedding_dimension": spec.hidden_size,
            "pooling_mode_cls_token": spec.pooling == Pooling::Cls,
            "pooling_mode_mean_tokens": spec.pooling == Pooling::Mean,
            "pooling_mode_max_tokens": false,
            "pooling_mode_mean_sqrt_len_tokens": false,
        })),
    )?;
    write(
        &out.join("config_sentence_transformers.json"),
        &pretty(&json!({
            "prompts": {"query": BGE_QUERY_PROMPT, "document": ""},
            "default_prompt_name": null,
            "similarity_fn_name": "cosine",
        })),
    )?;
    write(
        &out.join("sentence_bert_config.json"),
        &pretty(&json!({"max_seq_length": spec.max_seq_length, "do_lower_case": false})),
    )?;

    let mut tensors = Vec::new();
    for (i, (name, shape)) in spec.expected_tensors().into_iter().enumerate() {
        let (std, mean) = if name.ends_with("LayerNorm.weight") {
            (0.1, 1.0)
        } else if name.ends_with(".bias") {
            (0.1, 0.0)
        } else if name.contains("embeddings.") {
            (0.5, 0.0)
        } else {
            (1.0 / (shape[1] as f32).sqrt(), 0.0)
        };
        let n = shape.iter().product();
        let values = random_tensor(opts.seed, i as u64, n, std, mean);
        let (dt, bytes) = encode(&values, opts.dtype);
        tensors.push((name, shape, dt, bytes));
    }
    write_shard(&out.join("model.safetensors"), &tensors)?;
    Ok(spec)
}
