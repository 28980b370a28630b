//! Text into chunks for the index: at most `embed.chunk_tokens` of the
//! embedding model's tokens each, `embed.chunk_overlap` shared with the
//! previous one, cut at semantic boundaries (paragraphs, lines, sentences,
//! words) by `text-splitter`, each with its 1-based line range.

use text_splitter::{ChunkConfig, ChunkSizer, TextSplitter};

use super::index::IndexError;
use crate::config::EmbedSettings;
use crate::model::bert_tokens::BertTokenizer;

/// How files become chunks.
#[derive(Debug, Clone, Copy)]
pub struct ChunkOptions {
    pub tokens: usize,
    pub overlap: usize,
    pub max_file_bytes: u64,
}

impl ChunkOptions {
    /// From the `[embed]` settings.
    pub fn from_settings(e: &EmbedSettings) -> ChunkOptions {
        ChunkOptions {
            tokens: e.chunk_tokens,
            overlap: e.chunk_overlap,
            max_file_bytes: e.max_file_kib.saturating_mul(1024),
        }
    }
}

/// The embedding model's tokens as text-splitter's measure.
struct TokenSizer<'a>(&'a BertTokenizer);

impl ChunkSizer for TokenSizer<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.0.count(chunk)
    }
}

/// A chunk of a file: 1-based inclusive lines, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    pub start_line: usize,
    pub end_line: usize,
    pub text: String,
}

/// Cut `text` into chunks of at most `opts.tokens` tokens.
pub fn chunk_text(
    text: &str,
    tok: &BertTokenizer,
    opts: &ChunkOptions,
) -> Result<Vec<Chunk>, IndexError> {
    let config = ChunkConfig::new(opts.tokens)
        .with_overlap(opts.overlap)
        .map_err(|e| IndexError::Chunking(format!("embed.chunk_overlap: {e}")))?
        .with_sizer(TokenSizer(tok));
    let splitter = TextSplitter::new(config);
    // Chunks come in order of their starts (an overlap starts a chunk
    // inside the previous one, still after its start): count lines from a
    // cursor, not from the text's start each time (a 1 MiB file has
    // hundreds of chunks).
    let newlines = |s: &str| s.bytes().filter(|&b| b == b'\n').count();
    let (mut at, mut line) = (0usize, 1usize);
    Ok(splitter
        .chunk_indices(text)
        .map(|(offset, piece)| {
            if offset >= at {
                line += newlines(&text[at..offset]);
            } else {
                line -= newlines(&text[offset..at]);
            }
            at = offset;
            let lines = newlines(piece.trim_end_matches('\n'));
            Chunk {
                start_line: line,
                end_line: line + lines,
                text: piece.to_string(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_lines_match_their_offsets_with_overlap() {
        use crate::model::test_bert::{BertPreset, TestBertOptions, make_test_bert};
        let dir = tempfile::tempdir().expect("tempdir");
        make_test_bert(
            dir.path(),
            &TestBertOptions {
                preset: BertPreset::Tiny,
                pooling: crate::model::bert::Pooling::Mean,
                seed: 1,
                dtype: crate::model::test_model::WeightDtype::F32,
            },
        )
        .expect("bert");
        let tok = BertTokenizer::from_dir(dir.path(), 128).expect("tokenizer");
        let text: String = (0..200)
            .map(|i| format!("line {i} of the text with some words\n"))
            .collect();
        let opts = ChunkOptions {
            tokens: 20,
            overlap: 6,
            max_file_bytes: u64::MAX,
        };
        let chunks = chunk_text(&text, &tok, &opts).expect("chunks");
        assert!(chunks.len() > 10);
        let lines: Vec<&str> = text.lines().collect();
        for c in &chunks {
            // The chunk's text starts in its first line and ends in its last.
            let first = c.text.lines().next().unwrap_or_default().trim();
            let last = c.text.lines().last().unwrap_or_default().trim();
            assert!(lines[c.start_line - 1].contains(first), "{c:?}");
            assert!(lines[c.end_line - 1].contains(last), "{c:?}");
        }
    }
}
