//! `hybrid-tui make-test-model`: complete Hugging Face model directories with
//! random weights, true to each architecture, for tests and the demo.
//!
//! Same arguments and seed → the same bytes: every tensor draws from its own
//! ChaCha8 stream (seed, tensor index, chunk), independent of thread count,
//! and the tokenizer is trained deterministically on a bundled text.
//!
//! config.json is true to each architecture: GQA and `rope_scaling` llama3
//! for llama, qkv bias and tied embeddings for qwen2, a 16-token
//! `sliding_window` for mistral so tests cross it. Weights are bf16 (indexed
//! shards above `--max-shard-mb`), N(0, 1/fan_in) with norms 1 ± 0.1, so
//! attention is far from uniform and greedy decoding is not a sea of ties.
//! The tokenizer is a byte-level BPE trained on `assets/corpus.txt` with each
//! architecture's special tokens; tokenizer_config.json holds its chat
//! template and generation_config.json every stop id.

use std::path::{Path, PathBuf};

use half::{bf16, f16};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::json;
use tokenizers::models::bpe::{BPE, BpeTrainerBuilder};
use tokenizers::normalizers::NormalizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, TokenizerBuilder};

use super::{Arch, Llama3Scaling, ModelError, ModelSpec};

/// Text the test tokenizer is trained on.
pub const CORPUS: &str = include_str!("../../assets/corpus.txt");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Tiny,
    Small,
    Llama32_1b,
    Qwen25_05b,
}

impl Preset {
    pub const ALL: [Preset; 4] = [
        Preset::Tiny,
        Preset::Small,
        Preset::Llama32_1b,
        Preset::Qwen25_05b,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Preset::Tiny => "tiny",
            Preset::Small => "small",
            Preset::Llama32_1b => "llama-3.2-1b",
            Preset::Qwen25_05b => "qwen2.5-0.5b",
        }
    }
    pub fn parse(s: &str) -> Option<Preset> {
        Preset::ALL.into_iter().find(|p| p.name() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    Bf16,
    F16,
    F32,
}

impl WeightDtype {
    pub fn parse(s: &str) -> Option<WeightDtype> {
        match s {
            "bf16" | "bfloat16" => Some(WeightDtype::Bf16),
            "f16" | "float16" => Some(WeightDtype::F16),
            "f32" | "float32" => Some(WeightDtype::F32),
            _ => None,
        }
    }
    pub(super) fn torch_name(self) -> &'static str {
        match self {
            WeightDtype::Bf16 => "bfloat16",
            WeightDtype::F16 => "float16",
            WeightDtype::F32 => "float32",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TestModelOptions {
    pub arch: Arch,
    pub preset: Preset,
    pub seed: u64,
    pub dtype: WeightDtype,
    /// Split the weights into shards (with an index) above this many bytes.
    pub max_shard_bytes: u64,
}

/// Special tokens of each architecture's chat format.
struct ChatFormat {
    specials: &'static [&'static str],
    bos: Option<&'static str>,
    eos: &'static str,
    /// Tokens generation stops on (generation_config.json eos_token_id).
    stop: &'static [&'static str],
    template: &'static str,
}

fn chat_format(arch: Arch) -> ChatFormat {
    match arch {
        Arch::Llama => ChatFormat {
            specials: &[
                "<|begin_of_text|>",
                "<|end_of_text|>",
                "<|start_header_id|>",
                "<|end_header_id|>",
                "<|eot_id|>",
            ],
            bos: Some("<|begin_of_text|>"),
            eos: "<|eot_id|>",
            stop: &["<|end_of_text|>", "<|eot_id|>"],
            template: "{{- bos_token }}\n{%- for message in messages %}\n{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n{%- endif %}\n",
        },
        Arch::Qwen2 => ChatFormat {
            specials: &["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
            bos: None,
            eos: "<|im_end|>",
            stop: &["<|im_end|>", "<|endoftext|>"],
            template: "{%- if messages[0]['role'] != 'system' %}\n{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}\n{%- endif %}\n{%- for message in messages %}\n{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n{{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n",
        },
        Arch::Mistral => ChatFormat {
            specials: &["<unk>", "<s>", "</s>", "[INST]", "[/INST]"],
            bos: Some("<s>"),
            eos: "</s>",
            stop: &["</s>"],
            template: "{{- bos_token }}\n{%- for message in messages %}\n{%- if message['role'] == 'user' or message['role'] == 'system' %}\n{{- '[INST] ' + message['content'] + ' [/INST]' }}\n{%- else %}\n{{- ' ' + message['content'] + eos_token }}\n{%- endif %}\n{%- endfor %}\n",
        },
    }
}

/// The model spec of a preset for an architecture. `vocab` is the trained
/// tokenizer's size; small presets use it (rounded up), real-size presets
/// keep the real vocabulary size.
pub fn preset_spec(arch: Arch, preset: Preset, vocab: usize) -> ModelSpec {
    let round = |v: usize| v.div_ceil(64) * 64;
    let (h, i, l, nh, nkv, hd, v, max_pos, tie) = match preset {
        Preset::Tiny => (
            128,
            384,
            4,
            4,
            2,
            32,
            round(vocab.max(512)),
            2048,
            arch == Arch::Qwen2,
        ),
        // Heads of 64 dimensions, as the real presets have (the decode
        // plan's tests run its attention at both widths).
        Preset::Small => (
            256,
            768,
            8,
            4,
            2,
            64,
            round(vocab.max(1024)),
            4096,
            arch == Arch::Qwen2,
        ),
        Preset::Llama32_1b => (2048, 8192, 16, 32, 8, 64, 128_256, 131_072, true),
        Preset::Qwen25_05b => (896, 4864, 24, 14, 2, 64, 151_936, 32_768, true),
    };
    let theta = match (arch, preset) {
        (_, Preset::Llama32_1b) | (Arch::Llama, _) => 500_000.0,
        _ => 1_000_000.0,
    };
    ModelSpec {
        arch,
        hidden_size: h,
        intermediate_size: i,
        num_layers: l,
        num_heads: nh,
        num_kv_heads: nkv,
        head_dim: hd,
        vocab_size: v,
        rms_norm_eps: if arch == Arch::Qwen2 { 1e-6 } else { 1e-5 },
        rope_theta: theta,
        rope_scaling: (arch == Arch::Llama).then_some(Llama3Scaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }),
        max_position_embeddings: max_pos,
        tie_word_embeddings: tie,
        qkv_bias: arch == Arch::Qwen2,
        // A window short enough that tests cross it.
        sliding_window: (arch == Arch::Mistral).then_some(match preset {
            Preset::Tiny => 16,
            Preset::Small => 64,
            _ => 4096,
        }),
    }
}

fn tokenizer_vocab_target(preset: Preset) -> usize {
    match preset {
        Preset::Tiny => 512,
        Preset::Small => 1024,
        _ => 2048,
    }
}

/// Train the byte-level BPE tokenizer; returns its JSON and the id of each special token.
fn train_tokenizer(arch: Arch, preset: Preset) -> Result<(String, Vec<(String, u32)>), ModelError> {
    let fmt = chat_format(arch);
    let specials: Vec<AddedToken> = fmt
        .specials
        .iter()
        .map(|s| AddedToken::from(s.to_string(), true))
        .collect();
    let mut trainer = BpeTrainerBuilder::new()
        .vocab_size(tokenizer_vocab_target(preset))
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(specials)
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build();
    let mut tok =
        TokenizerBuilder::<BPE, NormalizerWrapper, ByteLevel, ByteLevel, ByteLevel>::new()
            .with_model(BPE::default())
            .with_normalizer(None)
            .with_pre_tokenizer(Some(ByteLevel::new(false, true, true)))
            .with_post_processor(Some(ByteLevel::new(false, true, true)))
            .with_decoder(Some(ByteLevel::new(false, true, true)))
            .build()
            .map_err(|e| ModelError::Other(format!("building the tokenizer: {e}")))?;
    tok.train(&mut trainer, CORPUS.lines())
        .map_err(|e| ModelError::Other(format!("training the tokenizer: {e}")))?;
    let ids = fmt
        .specials
        .iter()
        .map(|s| {
            tok.token_to_id(s)
                .map(|id| (s.to_string(), id))
                .ok_or_else(|| ModelError::Other(format!("special token {s} has no id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let json = tok
        .to_string(true)
        .map_err(|e| ModelError::Other(format!("serializing the tokenizer: {e}")))?;
    Ok((json, ids))
}

/// Initial values: (std, mean) of the normal each tensor is drawn from.
fn init(name: &str, shape: &[usize], tied: bool) -> (f32, f32) {
    if name.ends_with("layernorm.weight") || name == "model.norm.weight" {
        (0.1, 1.0)
    } else if name.ends_with(".bias") {
        (0.1, 0.0)
    } else if name == "model.embed_tokens.weight" {
        // Tied to lm_head, a strong embedding makes every token predict
        // itself (the residual carries it to the logits): keep it faint.
        (if tied { EMBED_STD_TIED } else { 0.5 }, 0.0)
    } else {
        // Variance 1/fan_in keeps activations O(1) and attention non-uniform.
        (1.0 / (shape[1] as f32).sqrt(), 0.0)
    }
}

const CHUNK: usize = 1 << 20;
const EMBED_STD_TIED: f32 = 0.02;

pub(super) fn random_tensor(seed: u64, index: u64, n: usize, std: f32, mean: f32) -> Vec<f32> {
    let mut out = vec![0.0f32; n];
    out.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(c, chunk)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(index);
            rng.set_word_pos((c as u128) * (CHUNK as u128) * 4);
            for x in chunk.iter_mut() {
                // What Normal::new(mean, std) draws, without its error case.
                let z: f32 = StandardNormal.sample(&mut rng);
                *x = mean + std * z;
            }
        });
    out
}

pub(super) fn encode(values: &[f32], dtype: WeightDtype) -> (Dtype, Vec<u8>) {
    match dtype {
        WeightDtype::Bf16 => (
            Dtype::BF16,
            values
                .iter()
                .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
                .collect(),
        ),
        WeightDtype::F16 => (
            Dtype::F16,
            values
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect(),
        ),
        WeightDtype::F32 => (
            Dtype::F32,
            values.iter().flat_map(|&x| x.to_le_bytes()).collect(),
        ),
    }
}

pub(super) fn write(path: &Path, bytes: &[u8]) -> Result<(), ModelError> {
    std::fs::write(path, bytes).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

pub(super) fn write_shard(
    path: &Path,
    tensors: &[(String, Vec<usize>, Dtype, Vec<u8>)],
) -> Result<(), ModelError> {
    let views = tensors
        .iter()
        .map(|(n, s, d, b)| {
            TensorView::new(*d, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| ModelError::Other(format!("{n}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let meta = std::collections::HashMap::from([("format".to_string(), "pt".to_string())]);
    let bytes = safetensors::serialize(views, Some(meta))
        .map_err(|e| ModelError::Other(format!("{}: {e}", path.display())))?;
    write(path, &bytes)
}

/// Write a complete Hugging Face directory into `out` (created if needed).
pub fn make_test_model(out: &Path, opts: &TestModelOptions) -> Result<ModelSpec, ModelError> {
    std::fs::create_dir_all(out).map_err(|e| ModelError::Io {
        path: out.to_path_buf(),
        source: e,
    })?;
    let fmt = chat_format(opts.arch);
    let (tokenizer_json, special_ids) = train_tokenizer(opts.arch, opts.preset)?;
    let tok_len = serde_json::from_str::<serde_json::Value>(&tokenizer_json)
        .ok()
        .and_then(|v| v["model"]["vocab"].as_object().map(|m| m.len()))
        .unwrap_or(0);
    let spec = preset_spec(opts.arch, opts.preset, tok_len);
    let id_of = |s: &str| special_ids.iter().find(|(t, _)| t == s).map(|(_, i)| *i);
    let eos_id = id_of(fmt.eos).unwrap_or(0);
    let bos_id = fmt.bos.and_then(id_of);

    write(&out.join("tokenizer.json"), tokenizer_json.as_bytes())?;
    let mut config = spec.to_hf_json(opts.dtype.torch_name(), bos_id.unwrap_or(eos_id), eos_id);
    if bos_id.is_none() {
        config["bos_token_id"] = serde_json::Value::Null;
    }
    write(
        &out.join("config.json"),
        serde_json::to_string_pretty(&config)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let added: serde_json::Map<String, serde_json::Value> = special_ids
        .iter()
        .map(|(t, id)| {
            (
                id.to_string(),
                json!({"content": t, "lstrip": false, "normalized": false, "rstrip": false, "single_word": false, "special": true}),
            )
        })
        .collect();
    let tok_cfg = json!({
        "added_tokens_decoder": added,
        "bos_token": fmt.bos,
        "eos_token": fmt.eos,
        "pad_token": fmt.specials[0],
        "chat_template": fmt.template,
        "clean_up_tokenization_spaces": false,
        "model_max_length": spec.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    write(
        &out.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&tok_cfg)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    let stop: Vec<u32> = fmt.stop.iter().filter_map(|s| id_of(s)).collect();
    let gen_cfg = json!({
        "bos_token_id": bos_id,
        "eos_token_id": stop,
        "do_sample": true,
        "temperature": 0.7,
        "top_p": 0.9,
        "transformers_version": "4.46.0",
    });
    write(
        &out.join("generation_config.json"),
        serde_json::to_string_pretty(&gen_cfg)
            .unwrap_or_default()
            .as_bytes(),
    )?;

    // Weights, in shards of at most max_shard_bytes.
    let elem = match opts.dtype {
        WeightDtype::F32 => 4u64,
        _ => 2,
    };
    let tensors = spec.expected_tensors();
    let total: u64 = tensors
        .iter()
        .map(|(_, s)| s.iter().product::<usize>() as u64 * elem)
        .sum();
    let mut groups: Vec<Vec<usize>> = vec![Vec::new()];
    let mut size = 0u64;
    for (i, (_, s)) in tensors.iter().enumerate() {
        let b = s.iter().product::<usize>() as u64 * elem;
        if size > 0 && size + b > opts.max_shard_bytes {
            groups.push(Vec::new());
            size = 0;
        }
        if let Some(g) = groups.last_mut() {
            g.push(i);
        }
        size += b;
    }
    let n_shards = groups.len();
    let mut weight_map = serde_json::Map::new();
    for (k, group) in groups.iter().enumerate() {
        let file = if n_shards == 1 {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{:05}.safetensors", k + 1, n_shards)
        };
        let mut data = Vec::new();
        for &i in group {
            let (name, shape) = &tensors[i];
            let (std, mean) = init(name, shape, spec.tie_word_embeddings);
            let n = shape.iter().product();
            let values = random_tensor(opts.seed, i as u64, n, std, mean);
            let (dt, bytes) = encode(&values, opts.dtype);
            data.push((name.clone(), shape.clone(), dt, bytes));
            weight_map.insert(name.clone(), json!(file));
        }
        write_shard(&out.join(&file), &data)?;
    }
    let index = out.join("model.safetensors.index.json");
    if n_shards > 1 {
        let idx = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        write(
            &index,
            serde_json::to_string_pretty(&idx)
                .unwrap_or_default()
                .as_bytes(),
        )?;
    } else if index.exists() {
        let _ = std::fs::remove_file(&index);
    }
    Ok(spec)
}

/// Where `demo` models live: `$XDG_DATA_HOME/hybrid-tui/models/demo-<arch>-<preset>`.
pub fn demo_dir(arch: Arch, preset: Preset) -> Option<PathBuf> {
    crate::paths::data_dir().map(|d| {
        d.join("models")
            .join(format!("demo-{}-{}", arch.name(), preset.name()))
    })
}
