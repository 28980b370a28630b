//! Turning token ids into text as they arrive, without ever emitting half
//! a UTF-8 character: a byte-level BPE token can end in the middle of one,
//! which decodes to U+FFFD until the next token completes it.

use tokenizers::Tokenizer;

pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
    text: String,
}

impl Default for TextStream {
    fn default() -> Self {
        Self::new()
    }
}

impl TextStream {
    pub fn new() -> TextStream {
        TextStream {
            ids: Vec::new(),
            emitted: 0,
            text: String::new(),
        }
    }

    /// Add a token; returns the text that became complete (maybe empty).
    /// Special tokens (eos, chat markers) decode to nothing.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> String {
        self.ids.push(id);
        let full = tok.decode(&self.ids, true).unwrap_or_default();
        // Hold back a trailing replacement character: the rest of its bytes
        // are probably in the next token.
        let stable = full.trim_end_matches('\u{FFFD}');
        if stable.len() > self.emitted && full.is_char_boundary(self.emitted) {
            let delta = stable[self.emitted..].to_string();
            self.emitted = stable.len();
            self.text = full;
            delta
        } else {
            self.text = full;
            String::new()
        }
    }

    /// Whatever is still held back (at the end of a stream).
    pub fn finish(&mut self) -> String {
        if self.text.len() > self.emitted && self.text.is_char_boundary(self.emitted) {
            let rest = self.text[self.emitted..].to_string();
            self.emitted = self.text.len();
            rest
        } else {
            String::new()
        }
    }

    /// Everything decoded so far.
    pub fn text(&self) -> &str {
        &self.text
    }
}
