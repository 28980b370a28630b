//! From a conversation to prompt token ids: the model's chat template
//! (minijinja, with its bos/eos strings) and its tokenizer. One
//! implementation for every front end (`generate`, the workbench).

use std::path::Path;

use tokenizers::Tokenizer;

use crate::bake::store::BakedModel;
use crate::model::chat::{Message, render};

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
    pub fn new(dir: &Path, model: &BakedModel, tokenizer: Tokenizer) -> Result<Prompter, String> {
        let template = match &model.manifest.tokens.chat_template_file {
            Some(f) => Some(
                std::fs::read_to_string(dir.join(f))
                    .map_err(|e| format!("{}: {e}", dir.join(f).display()))?,
            ),
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

    /// Open the baked model's manifest and tokenizer.
    pub fn load(dir: &Path) -> Result<Prompter, String> {
        let model = BakedModel::open(dir).map_err(|e| e.to_string())?;
        let path = dir.join("tokenizer.json");
        let tokenizer =
            Tokenizer::from_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Prompter::new(dir, &model, tokenizer)
    }

    pub fn has_template(&self) -> bool {
        self.template.is_some()
    }

    /// Ids for `messages` ready for the assistant's turn: through the chat
    /// template, or (a model without one) the contents joined by newlines.
    pub fn chat_ids(&self, messages: &[Message]) -> Result<Vec<u32>, String> {
        match &self.template {
            Some(t) => self.encode(&render(t, messages, true, &self.bos, &self.eos)?, false),
            None => {
                let text: Vec<&str> = messages.iter().map(|m| m.content.as_str()).collect();
                self.encode(&text.join("\n"), true)
            }
        }
    }

    /// Ids for plain text (the tokenizer adds its special tokens, e.g. bos).
    pub fn text_ids(&self, text: &str) -> Result<Vec<u32>, String> {
        self.encode(text, true)
    }

    fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>, String> {
        let ids = self
            .tokenizer
            .encode(text, add_special)
            .map_err(|e| format!("tokenizing the prompt: {e}"))?
            .get_ids()
            .to_vec();
        if ids.is_empty() {
            return Err("the prompt is empty after tokenization".into());
        }
        Ok(ids)
    }
}
