//! Text to an encoder's inputs: the model's own WordPiece `tokenizer.json`
//! (through the `tokenizers` crate, with its `[CLS] … [SEP]` template),
//! truncated to `max_length` tokens with the specials kept, and rows padded
//! on the right into a `[rows, len]` batch with its attention mask.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationParams};

use super::ModelError;

/// A batch of token rows, padded on the right.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    /// Rows in the batch (padded rows included).
    pub rows: usize,
    /// Tokens per row (padded).
    pub len: usize,
    /// `[rows, len]` token ids.
    pub ids: Vec<i64>,
    /// `[rows, len]`: 1 on real tokens, 0 on padding.
    pub mask: Vec<i64>,
    /// Real tokens of each row that holds a text (`texts ≤ rows`).
    pub tokens: Vec<usize>,
}

impl TokenBatch {
    /// Rows that hold a text; the rest pad a static shape.
    pub fn texts(&self) -> usize {
        self.tokens.len()
    }
}

/// The encoder's tokenizer: a model's tokenizer.json with truncation.
pub struct BertTokenizer {
    tok: Tokenizer,
    /// The same without truncation: counts a text's tokens (chunking).
    counter: Tokenizer,
    max_length: usize,
    pad: u32,
    /// `[CLS] [SEP]`: the content of a padding row of a static batch.
    empty: Vec<u32>,
}

impl BertTokenizer {
    /// `dir/tokenizer.json`, truncating to `max_length` tokens (≥ 2: the specials).
    pub fn from_dir(dir: &Path, max_length: usize) -> Result<BertTokenizer, ModelError> {
        let path = dir.join("tokenizer.json");
        let bad = |message: String| ModelError::BadFile {
            path: path.clone(),
            message,
        };
        let mut tok = Tokenizer::from_file(&path).map_err(|e| {
            bad(format!(
                "not a tokenizer the tokenizers library can load ({e}); copy the model's own tokenizer.json here"
            ))
        })?;
        let mut counter = tok.clone();
        counter
            .with_truncation(None)
            .map_err(|e| bad(format!("turning truncation off: {e}")))?;
        counter.with_padding(None);
        let max_length = max_length.max(2);
        tok.with_truncation(Some(TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| bad(format!("setting truncation to {max_length}: {e}")))?;
        tok.with_padding(None);
        let pad = tok.token_to_id("[PAD]").unwrap_or(0);
        let empty = tok
            .encode("", true)
            .map_err(|e| bad(format!("encoding an empty text: {e}")))?
            .get_ids()
            .to_vec();
        Ok(BertTokenizer {
            tok,
            counter,
            max_length,
            pad,
            empty,
        })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokens of a text, without the specials and not cut (0 when the
    /// tokenizer cannot encode it).
    pub fn count(&self, text: &str) -> usize {
        self.counter
            .encode(text, false)
            .map(|e| e.len())
            .unwrap_or(0)
    }

    /// One text's ids, with the specials, at most `max_length` of them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tok
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| ModelError::Other(format!("tokenizing a text: {e}")))
    }

    /// Pad `seqs` into a batch: `[seqs, longest]` when `shape` is None, else
    /// exactly `[rows, len]` of a static shape (extra rows hold `[CLS]
    /// [SEP]`, so every row has a token to pool).
    pub fn batch(
        &self,
        seqs: &[Vec<u32>],
        shape: Option<(usize, usize)>,
    ) -> Result<TokenBatch, ModelError> {
        let longest = seqs.iter().map(Vec::len).max().unwrap_or(0);
        let (rows, len) = shape.unwrap_or((seqs.len(), longest.max(1)));
        if seqs.len() > rows || longest > len {
            return Err(ModelError::Other(format!(
                "{} texts of up to {longest} tokens do not fit a [{rows}, {len}] batch",
                seqs.len()
            )));
        }
        let mut ids = vec![self.pad as i64; rows * len];
        let mut mask = vec![0i64; rows * len];
        for r in 0..rows {
            let row = seqs.get(r).unwrap_or(&self.empty);
            for (j, &id) in row.iter().take(len).enumerate() {
                ids[r * len + j] = id as i64;
                mask[r * len + j] = 1;
            }
        }
        Ok(TokenBatch {
            rows,
            len,
            ids,
            mask,
            tokens: seqs.iter().map(Vec::len).collect(),
        })
    }
}
