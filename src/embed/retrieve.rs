//! Retrieval for a conversation: the chunks an index holds for a question,
//! and the prompt that hands them to the chat model.
//!
//! The template ([`augment`]) puts the sources before the question,
//! numbered, each headed by its file and lines:
//!
//! ```text
//! Answer using the sources below from the user's files when they help, and
//! cite them by number, e.g. [1].
//!
//! [1] src/lib.rs:10-24
//! <chunk text>
//!
//! [2] ...
//!
//! Question: <the user's message>
//! ```
//!
//! Only the current message is augmented; the conversation's history keeps
//! the messages as the user wrote them.

use super::index::{Hit, Index, IndexError};
use super::{Embedder, TextKind};

/// The instruction line of the template.
pub const INSTRUCTION: &str = "Answer using the sources below from the user's files when they help, and cite them by number, e.g. [1].";

/// The `k` chunks of `index` nearest `question`.
pub fn retrieve(
    embedder: &mut Embedder,
    index: &Index,
    question: &str,
    k: usize,
) -> Result<Vec<Hit>, IndexError> {
    index.check_model(&embedder.model_name(), embedder.dim())?;
    let q = embedder
        .embed(&[question], TextKind::Query)?
        .pop()
        .unwrap_or_default();
    index.search(&q, k)
}

/// A source as the answer's footer shows it: `path:start-end`.
pub fn source_label(h: &Hit) -> String {
    format!("{}:{}-{}", h.path, h.start_line, h.end_line)
}

/// The user's message with the retrieved sources before it; the message
/// alone when there are none.
pub fn augment(question: &str, hits: &[Hit]) -> String {
    if hits.is_empty() {
        return question.to_string();
    }
    let mut s = format!("{INSTRUCTION}\n\n");
    for (i, h) in hits.iter().enumerate() {
        s.push_str(&format!(
            "[{}] {}\n{}\n\n",
            i + 1,
            source_label(h),
            h.text.trim_end()
        ));
    }
    s.push_str("Question: ");
    s.push_str(question);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_numbers_sources_and_keeps_the_question_last() {
        let hits = vec![
            Hit {
                path: "a.rs".into(),
                start_line: 1,
                end_line: 3,
                score: 0.9,
                text: "fn a() {}\n".into(),
            },
            Hit {
                path: "b.md".into(),
                start_line: 7,
                end_line: 7,
                score: 0.5,
                text: "notes".into(),
            },
        ];
        let p = augment("what does a do?", &hits);
        assert!(p.starts_with(INSTRUCTION));
        assert!(p.contains("[1] a.rs:1-3\nfn a() {}\n\n[2] b.md:7-7\nnotes\n\n"));
        assert!(p.ends_with("Question: what does a do?"));
        assert_eq!(augment("q", &[]), "q");
    }
}
