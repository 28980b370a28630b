//! What `hybrid-tui` does until the chat screen exists: make sure a model
//! is there (the demo model is made and baked on first use), then run a
//! chat prompt through shard A on the configured OpenVINO device.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::bake::ir::{IrOptions, ShapeMode, build_shard_a};
use crate::bake::store::{BakedModel, MANIFEST};
use crate::bake::{BakeOptions, bake};
use crate::config::Settings;
use crate::executive::runner::ShardARunner;
use crate::executive::session::{DeviceProps, ShardASession, new_core};
use crate::model::Arch;
use crate::model::chat::{Message, render};
use crate::model::test_model::{self, Preset, TestModelOptions, demo_dir, make_test_model};
use crate::shard_b::sampling::{Sampler, SamplingParams, StopCriteria};
use crate::shard_b::{HiddenDtype, ShardB, WeightDtype, select_device};

/// The demo model: a random-weight Qwen2-style model of the tiny preset.
pub const DEMO_ARCH: Arch = Arch::Qwen2;
pub const DEMO_PRESET: Preset = Preset::Tiny;
pub const DEMO_SEED: u64 = 42;
/// Tokens the first run generates.
pub const FIRST_RUN_TOKENS: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum FirstRunError {
    #[error(
        "no data directory (HOME and XDG_DATA_HOME are unset); set model.source to a baked model directory"
    )]
    NoDataDir,
    #[error(
        "{0} is not a baked model (no manifest.toml). Bake it first: hybrid-tui bake --model {0} --out <dir>, then set model.source to <dir>"
    )]
    NotBaked(PathBuf),
    #[error(
        "model.source = '{0}' does not exist. Use \"demo\" for the built-in demo model, or bake one: hybrid-tui make-test-model --out <hf-dir> && hybrid-tui bake --model <hf-dir> --out <dir>"
    )]
    Missing(PathBuf),
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error(transparent)]
    Bake(#[from] crate::bake::BakeError),
    #[error(transparent)]
    Store(#[from] crate::bake::store::StoreError),
    #[error(transparent)]
    Ir(#[from] crate::bake::ir::IrError),
    #[error(transparent)]
    Runtime(#[from] crate::executive::RuntimeError),
    #[error(transparent)]
    ShardB(#[from] crate::shard_b::ShardBError),
    #[error("{0}")]
    Other(String),
}

/// One line of what was done.
pub type Step = String;

/// Resolve `model.source` to a baked directory, making and baking the demo
/// model when asked for and absent.
pub fn resolve_model(settings: &Settings, steps: &mut Vec<Step>) -> Result<PathBuf, FirstRunError> {
    let source = settings.model.source.as_str();
    if source != "demo" {
        let p = PathBuf::from(source);
        if !p.exists() {
            return Err(FirstRunError::Missing(p));
        }
        if !p.join(MANIFEST).exists() {
            return Err(FirstRunError::NotBaked(p));
        }
        steps.push(format!("model: {}", p.display()));
        return Ok(p);
    }
    let hf = demo_dir(DEMO_ARCH, DEMO_PRESET).ok_or(FirstRunError::NoDataDir)?;
    let baked = hf.with_extension("baked");
    if baked.join(MANIFEST).exists() {
        steps.push(format!("demo model: {} (baked earlier)", baked.display()));
        return Ok(baked);
    }
    if !hf.join("config.json").exists() {
        let t0 = Instant::now();
        make_test_model(
            &hf,
            &TestModelOptions {
                arch: DEMO_ARCH,
                preset: DEMO_PRESET,
                seed: DEMO_SEED,
                dtype: test_model::WeightDtype::Bf16,
                max_shard_bytes: 2 << 30,
            },
        )?;
        steps.push(format!(
            "made the demo model ({} {}, random weights: its answers are noise) in {} ({:.1}s)",
            DEMO_ARCH.name(),
            DEMO_PRESET.name(),
            hf.display(),
            t0.elapsed().as_secs_f64()
        ));
    }
    let report = bake(&hf, &baked, &BakeOptions::default(), &mut |_| {})?;
    steps.push(format!(
        "baked it (int4_sym, group 128): {} → {} bytes in {:.2}s, into {}",
        report.bytes_before,
        report.bytes_after,
        report.seconds,
        baked.display()
    ));
    Ok(baked)
}

/// What running the prompt through shard A produced.
#[derive(Debug)]
pub struct FirstToken {
    pub steps: Vec<Step>,
    pub prompt_tokens: usize,
    pub hidden_norm: f32,
}

/// Run a chat prompt through shard A (embeddings + layers [0, k)).
pub fn run_first_token(settings: &Settings, baked: &Path) -> Result<FirstToken, FirstRunError> {
    let mut steps = Vec::new();
    let model = BakedModel::open(baked)?;
    let spec = model.spec().clone();
    let k = if settings.split.layers == 0 {
        model.manifest.default_split
    } else {
        settings.split.layers
    };

    let template = model
        .manifest
        .tokens
        .chat_template_file
        .as_ref()
        .map(|f| std::fs::read_to_string(baked.join(f)))
        .transpose()
        .map_err(|e| FirstRunError::Other(format!("reading the chat template: {e}")))?;
    let tok_path = baked.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tok_path)
        .map_err(|e| FirstRunError::Other(format!("{}: {e}", tok_path.display())))?;
    let token_str = |id: Option<u32>| {
        id.and_then(|i| tokenizer.id_to_token(i))
            .unwrap_or_default()
    };
    let bos = token_str(model.manifest.tokens.bos_token_id);
    let eos = token_str(model.manifest.tokens.eos_token_ids.first().copied());
    let messages = [Message::new("user", "Hello! What can you do?")];
    let text = match &template {
        Some(t) => render(t, &messages, true, &bos, &eos).map_err(FirstRunError::Other)?,
        None => messages[0].content.clone(),
    };
    let enc = tokenizer
        .encode(text.as_str(), false)
        .map_err(|e| FirstRunError::Other(format!("tokenizing the prompt: {e}")))?;
    let ids: Vec<i64> = enc.get_ids().iter().map(|&i| i as i64).collect();
    steps.push(format!(
        "prompt: {} tokens through the chat template",
        ids.len()
    ));

    let mode = if settings.shard_a.static_shapes {
        ShapeMode::Static {
            chunk: settings.shard_a.prefill_chunk,
            capacity: settings.shard_a.kv_capacity,
        }
    } else {
        ShapeMode::Dynamic
    };
    let t0 = Instant::now();
    let ir = build_shard_a(&model, &IrOptions { layers: k, mode })?;
    steps.push(format!(
        "built shard A's IR: embeddings + layers [0, {k}) of {} ({} mode, {} bytes of weights) in {:.2}s",
        spec.num_layers,
        if matches!(mode, ShapeMode::Dynamic) {
            "dynamic"
        } else {
            "static"
        },
        ir.bin.len(),
        t0.elapsed().as_secs_f64()
    ));
    let mut core = new_core(&settings.openvino.runtime_dir)?;
    let device = settings.shard_a.device.as_str();
    let session = ShardASession::compile(
        &mut core,
        &ir,
        &spec,
        device,
        &DeviceProps::from_settings(&settings.shard_a),
    )?;
    steps.push(format!(
        "compiled it on OpenVINO {device} in {:.2}s",
        session.compile_time.as_secs_f64()
    ));

    let prompt: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    let mut runner = ShardARunner::new(session);
    let hidden = runner.run(&prompt)?;
    let h = spec.hidden_size;
    let last = &hidden[hidden.len() - h..];
    let norm = last.iter().map(|x| x * x).sum::<f32>().sqrt();
    steps.push(format!(
        "ran the prompt through shard A in {:.2} ms: last token's hidden state has {h} values, L2 norm {norm:.3}",
        runner.infer_time.as_secs_f64() * 1e3
    ));

    // Shard B, in this process for now (the executive process and the
    // shared-memory rings come next): layers [k, L), norm, lm_head, sampling.
    let t0 = Instant::now();
    let (device, info) =
        select_device(&settings.shard_b).map_err(|e| FirstRunError::Other(e.to_string()))?;
    let dtype = WeightDtype::parse(&settings.shard_b.weights_dtype).unwrap_or(WeightDtype::F32);
    let shard_b = ShardB::load(&model, k, device, info, dtype)?;
    steps.push(format!(
        "loaded shard B: layers [{k}, {}) + norm + lm_head on burn {} ({}), {:.1} MB of weights, in {:.2}s",
        spec.num_layers,
        shard_b.info.backend,
        shard_b.info.name,
        shard_b.resident_weight_bytes() as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    ));
    let capacity = settings.shard_a.kv_capacity;
    let mut stream = shard_b.new_stream(capacity);
    let mut sampler = Sampler::new(SamplingParams::greedy());
    sampler.observe(&prompt);
    let stop = StopCriteria {
        eos: model.manifest.tokens.eos_token_ids.clone(),
        ..Default::default()
    };
    let bytes: Vec<u8> = hidden.iter().flat_map(|x| x.to_le_bytes()).collect();
    let t0 = Instant::now();
    let logits = shard_b.forward_bytes(&bytes, HiddenDtype::F32, prompt.len(), &mut stream)?;
    let mut token = sampler.sample(logits)?;
    let ttft = t0.elapsed();
    let mut out = vec![token];
    let t1 = Instant::now();
    while out.len() < FIRST_RUN_TOKENS && prompt.len() + out.len() < capacity {
        let text = tokenizer.decode(&out, true).unwrap_or_default();
        if stop.check(token, &text).is_some() {
            break;
        }
        let hidden = runner.run(&[token])?;
        let bytes: Vec<u8> = hidden.iter().flat_map(|x| x.to_le_bytes()).collect();
        let logits = shard_b.forward_bytes(&bytes, HiddenDtype::F32, 1, &mut stream)?;
        token = sampler.sample(logits)?;
        out.push(token);
    }
    let decode = t1.elapsed().as_secs_f64();
    let text = tokenizer.decode(&out, true).unwrap_or_default();
    steps.push(format!(
        "first token after {:.1} ms in shard B; {} tokens generated greedily ({:.1} tok/s): {text:?}",
        ttft.as_secs_f64() * 1e3,
        out.len(),
        (out.len() - 1) as f64 / decode.max(1e-9)
    ));
    if settings.model.source == "demo" {
        steps.push("the demo model has random weights: its answers are noise; bake a real model for real answers".into());
    }
    Ok(FirstToken {
        steps,
        prompt_tokens: ids.len(),
        hidden_norm: norm,
    })
}
