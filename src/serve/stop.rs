//! Stop strings on streamed text: the answer ends before the first stop
//! string, and no part of one is ever sent. Text that could be the start
//! of a stop string is held back until the next piece decides it.
//!
//! Streaming and non-streaming answers both go through this, so they carry
//! the same text for the same tokens.

#[derive(Debug, Default)]
pub struct StopText {
    stops: Vec<String>,
    /// Received and not yet released.
    pending: String,
    /// A stop string was found: everything after it is dropped.
    stopped: bool,
}

impl StopText {
    pub fn new(stops: Vec<String>) -> StopText {
        StopText {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            ..StopText::default()
        }
    }

    /// Take the next piece of text; returns what may be sent now.
    pub fn push(&mut self, piece: &str) -> String {
        if self.stopped {
            return String::new();
        }
        self.pending.push_str(piece);
        let first_stop = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first_stop {
            self.stopped = true;
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return out;
        }
        // Hold back the longest tail that begins some stop string.
        let hold = self
            .stops
            .iter()
            .map(|s| longest_tail_prefix(&self.pending, s))
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        out
    }

    /// The stream ended: release what was held back (unless it stopped).
    pub fn finish(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        std::mem::take(&mut self.pending)
    }

    /// Whether a stop string ended the text.
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of
/// `stop`, at a character boundary.
fn longest_tail_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            let start = text.len() - n;
            text.is_char_boundary(start) && stop.starts_with(&text[start..])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let mut s = StopText::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out: Vec<String> = pieces.iter().map(|p| s.push(p)).collect();
        out.push(s.finish());
        (out, s.stopped())
    }

    #[test]
    fn text_before_a_stop_string_is_sent_and_the_rest_dropped() {
        let (out, stopped) = run(&["END"], &["hello E", "N", "D and more", "x"]);
        assert_eq!(out.concat(), "hello ");
        assert!(stopped);
        // Nothing of the stop string went out early.
        assert_eq!(out[0], "hello ");
        assert_eq!(out[1], "");
    }

    #[test]
    fn a_false_start_is_released_when_it_cannot_be_a_stop() {
        let (out, stopped) = run(&["END"], &["a E", "Nx", " b"]);
        assert_eq!(out.concat(), "a ENx b");
        assert_eq!(out[0], "a ");
        assert!(!stopped);
    }

    #[test]
    fn the_earliest_of_several_stops_wins_and_unicode_is_kept_whole() {
        let (out, _) = run(&["ß!", "\n\n"], &["grüß", "e\n", "\nß!"]);
        assert_eq!(out.concat(), "grüße");
        let (out, stopped) = run(&["ßx"], &["aß", "ß"]);
        assert_eq!(out.concat(), "aßß");
        assert!(!stopped);
    }

    #[test]
    fn without_stops_everything_passes_at_once() {
        let (out, _) = run(&[], &["a", "b"]);
        assert_eq!(out, vec!["a", "b", ""]);
    }
}
