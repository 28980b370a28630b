//! Hugging Face model directories: config, safetensors, tokenizer files,
//! chat templates, and the test-model maker.

pub mod bert;
pub mod bert_tokens;
pub mod chat;
pub mod spec;
pub mod template;
pub mod test_bert;
pub mod test_model;
pub mod weights;

use std::path::PathBuf;

pub use spec::{Arch, Llama3Scaling, ModelSpec};
pub use weights::Checkpoint;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    BadConfig { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error(
        "tensor '{0}' is missing from the checkpoint; the model directory is incomplete or not of the architecture config.json names"
    )]
    MissingTensor(String),
    #[error("{path}: tensor '{name}' has shape {found:?}, but config.json implies {expected:?}")]
    ShapeMismatch {
        path: PathBuf,
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{0}")]
    Other(String),
}

/// Parameters of a list of tensors (name, shape).
pub(crate) fn count_params(tensors: &[(String, Vec<usize>)]) -> usize {
    tensors
        .iter()
        .map(|(_, s)| s.iter().product::<usize>())
        .sum()
}
