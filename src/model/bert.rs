//! BERT-family embedding models as Hugging Face ships them: `BertModel`'s
//! config.json and tensor names, and the sentence-transformers files that
//! say how a sentence vector is pooled (`modules.json`,
//! `1_Pooling/config.json`) and which prompt a query takes
//! (`config_sentence_transformers.json`).
//!
//! This covers bge-small/base, all-MiniLM and e5: absolute positions, post
//! layer norm, exact (erf) GELU. Tensor names may carry a `bert.` prefix
//! (checkpoints saved from a task head); the pooler is not used (sentence
//! embeddings pool the last hidden states).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// How a sentence vector is made from the last hidden states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The first token's (`[CLS]`) state: bge.
    Cls,
    /// The mean over the real (unpadded) tokens: all-MiniLM, e5, and the
    /// default when the model has no sentence-transformers files.
    Mean,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Cls => "cls",
            Pooling::Mean => "mean",
        }
    }

    pub fn parse(s: &str) -> Option<Pooling> {
        match s {
            "cls" => Some(Pooling::Cls),
            "mean" => Some(Pooling::Mean),
            _ => None,
        }
    }
}

/// Everything the encoder needs to know about a BERT model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertSpec {
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    /// `bert.` when the checkpoint's names carry it, else empty.
    #[serde(default)]
    pub prefix: String,
    pub pooling: Pooling,
    /// The prompt a search query is prefixed with, from the model's own
    /// files (`config_sentence_transformers.json` `prompts.query`); the
    /// setting `embed.query_instruction` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_instruction: Option<String>,
    /// Longest input the model was trained on (`sentence_bert_config.json`
    /// `max_seq_length`, else the position table's length).
    pub max_seq_length: usize,
}

#[derive(Debug, Deserialize)]
struct HfBertConfig {
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    vocab_size: Option<usize>,
    max_position_embeddings: Option<usize>,
    type_vocab_size: Option<usize>,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
    position_embedding_type: Option<String>,
}

/// True when `DIR/config.json` names a BERT model (`model_type = "bert"`).
pub fn is_bert_dir(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("config.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["model_type"].as_str().map(|s| s == "bert"))
        .unwrap_or(false)
}

fn read_json(path: &Path) -> Result<Option<serde_json::Value>, ModelError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ModelError::BadConfig {
                path: path.to_path_buf(),
                message: format!("not valid JSON: {e}"),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ModelError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// The pooling the sentence-transformers files ask for: the `Pooling`
/// module of `modules.json` and its `config.json`. Mean without them.
fn read_pooling(dir: &Path) -> Result<Pooling, ModelError> {
    let Some(modules) = read_json(&dir.join("modules.json"))? else {
        return Ok(Pooling::Mean);
    };
    let pooling_dir = modules
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            m["type"]
                .as_str()
                .is_some_and(|t| t.ends_with("models.Pooling"))
        })
        .and_then(|m| m["path"].as_str().map(str::to_string));
    let Some(sub) = pooling_dir else {
        return Ok(Pooling::Mean);
    };
    let path = dir.join(&sub).join("config.json");
    let Some(cfg) = read_json(&path)? else {
        return Err(ModelError::BadConfig {
            path,
            message: "modules.json names this pooling module, but its config.json is missing"
                .into(),
        });
    };
    let on = |key: &str| cfg[key].as_bool().unwrap_or(false);
    if on("pooling_mode_cls_token") {
        Ok(Pooling::Cls)
    } else if on("pooling_mode_mean_tokens") {
        Ok(Pooling::Mean)
    } else {
        let modes: Vec<&str> = cfg
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| k.starts_with("pooling_mode_") && v.as_bool() == Some(true))
            .map(|(k, _)| k.as_str())
            .collect();
        Err(ModelError::BadConfig {
            path,
            message: format!(
                "pooling {modes:?} is not supported (supported: pooling_mode_cls_token, pooling_mode_mean_tokens)"
            ),
        })
    }
}

impl BertSpec {
    /// Read and check `DIR/config.json` and the sentence-transformers files beside it.
    pub fn from_hf_dir(dir: &Path) -> Result<BertSpec, ModelError> {
        let path = dir.join("config.json");
        let Some(value) = read_json(&path)? else {
            return Err(ModelError::BadConfig {
                path,
                message: "missing: this is not a Hugging Face model directory".into(),
            });
        };
        let mut spec = BertSpec::from_hf_value(value)
            .map_err(|message| ModelError::BadConfig { path, message })?;
        spec.pooling = read_pooling(dir)?;
        let st = read_json(&dir.join("config_sentence_transformers.json"))?;
        spec.query_instruction = st
            .as_ref()
            .and_then(|v| v["prompts"]["query"].as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        let sbert = read_json(&dir.join("sentence_bert_config.json"))?;
        if let Some(n) = sbert.as_ref().and_then(|v| v["max_seq_length"].as_u64()) {
            spec.max_seq_length = (n as usize).clamp(2, spec.max_position_embeddings);
        }
        Ok(spec)
    }

    fn from_hf_value(value: serde_json::Value) -> Result<BertSpec, String> {
        let c: HfBertConfig =
            serde_json::from_value(value).map_err(|e| format!("not a BERT config: {e}"))?;
        match c.model_type.as_deref() {
            Some("bert") => {}
            other => {
                return Err(format!(
                    "model_type={other:?} is not an embedding model this tool runs (supported: bert)"
                ));
            }
        }
        if let Some(act) = c.hidden_act.as_deref()
            && act != "gelu"
        {
            return Err(format!(
                "hidden_act='{act}' is not supported (supported: gelu)"
            ));
        }
        if let Some(p) = c.position_embedding_type.as_deref()
            && p != "absolute"
        {
            return Err(format!(
                "position_embedding_type='{p}' is not supported (supported: absolute)"
            ));
        }
        let need = |v: Option<usize>, key: &str| match v {
            Some(0) => Err(format!("'{key}' must be at least 1")),
            Some(n) => Ok(n),
            None => Err(format!("missing key '{key}'")),
        };
        let hidden_size = need(c.hidden_size, "hidden_size")?;
        let num_heads = need(c.num_attention_heads, "num_attention_heads")?;
        if hidden_size % num_heads != 0 {
            return Err(format!(
                "hidden_size={hidden_size} is not a multiple of num_attention_heads={num_heads}"
            ));
        }
        let max_position_embeddings = need(c.max_position_embeddings, "max_position_embeddings")?;
        Ok(BertSpec {
            hidden_size,
            intermediate_size: need(c.intermediate_size, "intermediate_size")?,
            num_layers: need(c.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            vocab_size: need(c.vocab_size, "vocab_size")?,
            max_position_embeddings,
            type_vocab_size: c.type_vocab_size.unwrap_or(2).max(1),
            layer_norm_eps: c.layer_norm_eps.unwrap_or(1e-12),
            prefix: String::new(),
            pooling: Pooling::Mean,
            query_instruction: None,
            max_seq_length: max_position_embeddings,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// A tensor's name in the checkpoint (with the prefix, if any).
    pub fn name(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    /// Pick the `bert.` prefix when the checkpoint's names carry it.
    pub fn detect_prefix(&mut self, has: impl Fn(&str) -> bool) {
        let probe = "embeddings.word_embeddings.weight";
        self.prefix = if !has(probe) && has(&format!("bert.{probe}")) {
            "bert.".into()
        } else {
            String::new()
        };
    }

    /// Every tensor the encoder reads, with its shape (names with the prefix).
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let mut out = vec![
            (
                self.name("embeddings.word_embeddings.weight"),
                vec![self.vocab_size, h],
            ),
            (
                self.name("embeddings.position_embeddings.weight"),
                vec![self.max_position_embeddings, h],
            ),
            (
                self.name("embeddings.token_type_embeddings.weight"),
                vec![self.type_vocab_size, h],
            ),
            (self.name("embeddings.LayerNorm.weight"), vec![h]),
            (self.name("embeddings.LayerNorm.bias"), vec![h]),
        ];
        for l in 0..self.num_layers {
            let p = self.name(&format!("encoder.layer.{l}"));
            for (w, rows, cols) in [
                ("attention.self.query", h, h),
                ("attention.self.key", h, h),
                ("attention.self.value", h, h),
                ("attention.output.dense", h, h),
                ("intermediate.dense", i, h),
                ("output.dense", h, i),
            ] {
                out.push((format!("{p}.{w}.weight"), vec![rows, cols]));
                out.push((format!("{p}.{w}.bias"), vec![rows]));
            }
            for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
                out.push((format!("{p}.{n}.weight"), vec![h]));
                out.push((format!("{p}.{n}.bias"), vec![h]));
            }
        }
        out
    }

    /// Parameters of the encoder (the tensors it reads).
    pub fn num_params(&self) -> usize {
        super::count_params(&self.expected_tensors())
    }

    /// config.json of a `BertModel` of this shape.
    pub fn to_hf_json(&self, dtype: &str) -> serde_json::Value {
        serde_json::json!({
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "vocab_size": self.vocab_size,
            "max_position_embeddings": self.max_position_embeddings,
            "type_vocab_size": self.type_vocab_size,
            "layer_norm_eps": self.layer_norm_eps,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "initializer_range": 0.02,
            "position_embedding_type": "absolute",
            "pad_token_id": 0,
            "torch_dtype": dtype,
            "use_cache": true,
            "transformers_version": "4.46.0",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> serde_json::Value {
        serde_json::json!({
            "model_type": "bert", "hidden_size": 384, "intermediate_size": 1536,
            "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 30522,
            "max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
            "hidden_act": "gelu"
        })
    }

    #[test]
    fn a_bge_small_config_parses_and_bad_keys_are_named() {
        let s = BertSpec::from_hf_value(cfg()).expect("bge-small's config");
        assert_eq!((s.hidden_size, s.num_heads, s.head_dim()), (384, 12, 32));
        assert_eq!(s.expected_tensors().len(), 5 + 12 * 16);
        let mut c = cfg();
        c["hidden_act"] = "relu".into();
        let e = BertSpec::from_hf_value(c).expect_err("relu");
        assert!(e.contains("hidden_act='relu'"), "{e}");
        let mut c = cfg();
        c["num_attention_heads"] = 5.into();
        let e = BertSpec::from_hf_value(c).expect_err("heads");
        assert!(e.contains("num_attention_heads=5"), "{e}");
        let mut c = cfg();
        c["model_type"] = "llama".into();
        assert!(BertSpec::from_hf_value(c).is_err());
    }

    #[test]
    fn pooling_comes_from_the_sentence_transformers_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_pooling(dir.path()).ok(), Some(Pooling::Mean));
        std::fs::write(
            dir.path().join("modules.json"),
            r#"[{"idx":0,"name":"0","path":"","type":"sentence_transformers.models.Transformer"},
                {"idx":1,"name":"1","path":"1_Pooling","type":"sentence_transformers.models.Pooling"}]"#,
        )
        .expect("write");
        let e = read_pooling(dir.path()).expect_err("no pooling config");
        assert!(e.to_string().contains("1_Pooling"), "{e}");
        std::fs::create_dir(dir.path().join("1_Pooling")).expect("mkdir");
        let write = |json: &str| {
            std::fs::write(dir.path().join("1_Pooling/config.json"), json).expect("write")
        };
        write(r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#);
        assert_eq!(read_pooling(dir.path()).ok(), Some(Pooling::Cls));
        write(r#"{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}"#);
        assert_eq!(read_pooling(dir.path()).ok(), Some(Pooling::Mean));
        write(r#"{"pooling_mode_max_tokens": true}"#);
        let e = read_pooling(dir.path()).expect_err("max pooling");
        assert!(e.to_string().contains("pooling_mode_max_tokens"), "{e}");
    }
}
