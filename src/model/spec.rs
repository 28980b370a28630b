//! Hugging Face `config.json` and the internal model description.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::ModelError;

/// Supported decoder architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Llama,
    Qwen2,
    Mistral,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::Llama, Arch::Qwen2, Arch::Mistral];

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Mistral => "mistral",
        }
    }

    /// The `architectures` entry of config.json.
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
        }
    }

    pub fn parse(s: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// Llama 3 frequency-dependent RoPE scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3Scaling {
    pub factor: f64,
    pub low_freq_factor: f64,
    pub high_freq_factor: f64,
    pub original_max_position_embeddings: usize,
}

/// Everything the engine needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSpec {
    pub arch: Arch,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub vocab_size: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    pub rope_scaling: Option<Llama3Scaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub qkv_bias: bool,
    pub sliding_window: Option<usize>,
}

/// The subset of config.json we read. Unknown keys are ignored (HF configs
/// carry many), but every key we need is checked.
#[derive(Debug, Deserialize)]
struct HfConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    hidden_size: Option<usize>,
    intermediate_size: Option<usize>,
    num_hidden_layers: Option<usize>,
    num_attention_heads: Option<usize>,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    vocab_size: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    sliding_window: Option<serde_json::Value>,
    use_sliding_window: Option<bool>,
}

impl ModelSpec {
    /// Read and check `DIR/config.json`.
    pub fn from_hf_dir(dir: &Path) -> Result<ModelSpec, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => ModelError::BadConfig {
                path: path.clone(),
                message: "missing: this is not a Hugging Face model directory (config.json, *.safetensors, tokenizer.json)".into(),
            },
            _ => ModelError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        ModelSpec::from_hf_json(&text).map_err(|message| ModelError::BadConfig { path, message })
    }

    /// Parse config.json text; the error is a message naming the key.
    pub(crate) fn from_hf_json(text: &str) -> Result<ModelSpec, String> {
        let c: HfConfig = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let model_type = c.model_type.clone().ok_or("missing key 'model_type'")?;
        if model_type == "bert" {
            return Err(
                "model_type='bert' is an embedding model, not a chat model: name it in the setting embed.model, and give model.source a llama, qwen2 or mistral model".into(),
            );
        }
        let arch = Arch::parse(&model_type).ok_or_else(|| {
            format!(
                "unsupported architecture model_type='{model_type}' (architectures={:?}); supported: llama, qwen2, mistral",
                c.architectures.clone().unwrap_or_default()
            )
        })?;
        let need = |v: Option<usize>, key: &str| v.ok_or(format!("missing key '{key}'"));
        let hidden_size = need(c.hidden_size, "hidden_size")?;
        let num_heads = need(c.num_attention_heads, "num_attention_heads")?;
        let num_kv_heads = c.num_key_value_heads.unwrap_or(num_heads);
        if num_heads == 0 || num_kv_heads == 0 || num_heads % num_kv_heads != 0 {
            return Err(format!(
                "num_attention_heads={num_heads} must be a positive multiple of num_key_value_heads={num_kv_heads}"
            ));
        }
        let head_dim = match c.head_dim {
            Some(h) => h,
            None if hidden_size % num_heads == 0 => hidden_size / num_heads,
            None => {
                return Err(format!(
                    "hidden_size={hidden_size} is not a multiple of num_attention_heads={num_heads} and no 'head_dim' is given"
                ));
            }
        };
        if head_dim % 2 != 0 {
            return Err(format!("head_dim={head_dim} must be even for RoPE"));
        }
        let rope_scaling = match &c.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let kind = v
                    .get("rope_type")
                    .or_else(|| v.get("type"))
                    .and_then(|t| t.as_str())
                    .unwrap_or("");
                match kind {
                    "llama3" => Some(
                        serde_json::from_value::<Llama3Scaling>(v.clone())
                            .map_err(|e| format!("rope_scaling of type llama3: {e}"))?,
                    ),
                    "default" => None,
                    other => {
                        return Err(format!(
                            "rope_scaling type '{other}' is not supported (supported: llama3, default)"
                        ));
                    }
                }
            }
        };
        let sliding_window = match (&c.sliding_window, c.use_sliding_window) {
            (_, Some(false)) => None,
            (Some(serde_json::Value::Number(n)), _) => n.as_u64().map(|n| n as usize),
            (None | Some(serde_json::Value::Null), _) => None,
            (Some(other), _) => return Err(format!("sliding_window={other} is not a number")),
        };
        // Qwen2's default for use_sliding_window is false.
        let sliding_window = if arch == Arch::Qwen2 && c.use_sliding_window != Some(true) {
            None
        } else {
            sliding_window
        };
        let spec = ModelSpec {
            arch,
            hidden_size,
            intermediate_size: need(c.intermediate_size, "intermediate_size")?,
            num_layers: need(c.num_hidden_layers, "num_hidden_layers")?,
            num_heads,
            num_kv_heads,
            head_dim,
            vocab_size: need(c.vocab_size, "vocab_size")?,
            rms_norm_eps: c.rms_norm_eps.unwrap_or(1e-6),
            rope_theta: c.rope_theta.unwrap_or(10000.0),
            rope_scaling,
            max_position_embeddings: c.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: c.tie_word_embeddings.unwrap_or(false),
            qkv_bias: match arch {
                Arch::Qwen2 => true,
                _ => c.attention_bias.unwrap_or(false),
            },
            sliding_window,
        };
        if spec.num_layers == 0 {
            return Err("num_hidden_layers must be at least 1".into());
        }
        Ok(spec)
    }

    /// config.json for this spec, as a Hugging Face model of the architecture would carry it.
    pub fn to_hf_json(&self, dtype: &str, bos: u32, eos: u32) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.arch.hf_class()],
            "model_type": self.arch.name(),
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "vocab_size": self.vocab_size,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "initializer_range": 0.02,
            "torch_dtype": dtype,
            "bos_token_id": bos,
            "eos_token_id": eos,
            "use_cache": true,
            "transformers_version": "4.46.0",
        });
        let obj = v.as_object_mut();
        if let Some(obj) = obj {
            match self.arch {
                Arch::Llama => {
                    obj.insert("attention_bias".into(), false.into());
                    obj.insert("mlp_bias".into(), false.into());
                    obj.insert(
                        "rope_scaling".into(),
                        match &self.rope_scaling {
                            Some(s) => serde_json::json!({
                                "rope_type": "llama3",
                                "factor": s.factor,
                                "low_freq_factor": s.low_freq_factor,
                                "high_freq_factor": s.high_freq_factor,
                                "original_max_position_embeddings": s.original_max_position_embeddings,
                            }),
                            None => serde_json::Value::Null,
                        },
                    );
                }
                Arch::Qwen2 => {
                    obj.insert("use_sliding_window".into(), false.into());
                    obj.insert("sliding_window".into(), serde_json::Value::Null);
                    obj.insert("max_window_layers".into(), self.num_layers.into());
                }
                Arch::Mistral => {
                    obj.insert(
                        "sliding_window".into(),
                        self.sliding_window
                            .map(serde_json::Value::from)
                            .unwrap_or(serde_json::Value::Null),
                    );
                }
            }
        }
        v
    }

    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Every tensor a Hugging Face checkpoint of this spec holds, with its shape.
    pub fn expected_tensors(&self) -> Vec<(String, Vec<usize>)> {
        let (h, i, q, kv, v) = (
            self.hidden_size,
            self.intermediate_size,
            self.q_dim(),
            self.kv_dim(),
            self.vocab_size,
        );
        let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
        for l in 0..self.num_layers {
            let p = format!("model.layers.{l}");
            out.push((format!("{p}.input_layernorm.weight"), vec![h]));
            out.push((format!("{p}.self_attn.q_proj.weight"), vec![q, h]));
            out.push((format!("{p}.self_attn.k_proj.weight"), vec![kv, h]));
            out.push((format!("{p}.self_attn.v_proj.weight"), vec![kv, h]));
            if self.qkv_bias {
                out.push((format!("{p}.self_attn.q_proj.bias"), vec![q]));
                out.push((format!("{p}.self_attn.k_proj.bias"), vec![kv]));
                out.push((format!("{p}.self_attn.v_proj.bias"), vec![kv]));
            }
            out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
            out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
            out.push((format!("{p}.mlp.gate_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.up_proj.weight"), vec![i, h]));
            out.push((format!("{p}.mlp.down_proj.weight"), vec![h, i]));
        }
        out.push(("model.norm.weight".to_string(), vec![h]));
        if !self.tie_word_embeddings {
            out.push(("lm_head.weight".to_string(), vec![v, h]));
        }
        out
    }

    /// Number of parameters (tied embeddings counted once).
    pub fn num_params(&self) -> usize {
        super::count_params(&self.expected_tensors())
    }

    /// RoPE inverse frequencies `[head_dim / 2]` in f32, as Hugging Face
    /// computes them (`1 / theta^(2i/d)`), with Llama 3 scaling when
    /// configured. Shared by shard A's IR and shard B (the reference has its
    /// own, independent copy).
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let hd = self.head_dim;
        (0..hd / 2)
            .map(|i| {
                let freq = 1.0f32 / (self.rope_theta as f32).powf((2 * i) as f32 / hd as f32);
                let Some(sc) = self.rope_scaling else {
                    return freq;
                };
                let old = sc.original_max_position_embeddings as f32;
                let (lo, hi, factor) = (
                    sc.low_freq_factor as f32,
                    sc.high_freq_factor as f32,
                    sc.factor as f32,
                );
                let wavelen = 2.0 * std::f32::consts::PI / freq;
                if wavelen < old / hi {
                    freq
                } else if wavelen > old / lo {
                    freq / factor
                } else {
                    let smooth = (old / wavelen - lo) / (hi - lo);
                    (1.0 - smooth) * freq / factor + smooth * freq
                }
            })
            .collect()
    }

    /// Default split: half of the layers in shard A.
    pub fn default_split(&self) -> usize {
        self.num_layers / 2
    }
}
