//! From a conversation to prompt token ids: the model's chat template
//! (minijinja, with its bos/eos strings) and its tokenizer. One
//! implementation for every front end (`generate`, the workbench).

use std::path::Path;

use tokenizers::Tokenizer;

use crate::bake::store::{BakedModel, StoreError};
use crate::model::chat::{Message, TemplateError, render};

/// Why a conversation gave no prompt ids.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Tokenizer {
        path: std::path::PathBuf,
        message: String,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error("tokenizing the prompt: {0}")]
    Tokenize(String),
    #[error("the prompt is empty after tokenization")]
    Empty,
    #[error("--chat: the model has no chat template (the source had none); drop --chat")]
    NoTemplate,
}

pub struct Prompter {
    tokenizer: Tokenizer,
    template: Option<String>,
    bos: String,
    eos: String,
    /// Every end-of-sequence id of the model.
    pub eos_ids: Vec<u32>,
}

impl Prompter {
    /// For a baked model whose tokenizer is already loaded.
    pub fn new(
        dir: &Path,
        model: &BakedModel,
        tokenizer: Tokenizer,
    ) -> Result<Prompter, PromptError> {
        let template =
            match &model.manifest.tokens.chat_template_file {
                Some(f) => Some(std::fs::read_to_string(dir.join(f)).map_err(|source| {
                    PromptError::Io {
                        path: dir.join(f),
                        source,
                    }
                })?),
                None => None,
            };
        let name = |id: Option<u32>| {
            id.and_then(|i| tokenizer.id_to_token(i))
                .unwrap_or_default()
        };
        Ok(Prompter {
            bos: name(model.manifest.tokens.bos_token_id),
            eos: name(model.manifest.tokens.eos_token_ids.first().copied()),
            eos_ids: model.manifest.tokens.eos_token_ids.clone(),
            template,
            tokenizer,
        })
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    /// Ids for `messages` ready for the assistant's turn: through the chat
    /// template, or (a model without one) the contents joined by newlines.
    pub fn chat_ids(&self, messages: &[Message]) -> Result<Vec<u32>, PromptError> {
        match &self.template {
            Some(t) => self.encode(&render(t, messages, true, &self.bos, &self.eos)?, false),
            None => {
                let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                self.encode(&text.join("\n"), true)
            }
        }
    }

    /// Ids for plain text (the tokenizer adds its special tokens, e.g. bos).
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>, PromptError> {
        self.encode(text, true)
    }

    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, PromptError> {
        let ids = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| PromptError::Tokenize(e.to_string()))?
            .get_ids()
            .to_vec();
        if ids.is_empty() {
            return Err(PromptError::Empty);
        }
        Ok(ids)
    }
}
