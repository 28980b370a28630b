//! Shard B decode speed and resident weight bytes: the `llama-3.2-1b`
//! preset (random weights, INT4_SYM bake) split at L/2, so shard B holds
//! layers 8..16, the final norm and the (tied) lm_head.
//!
//! Each decode step is what the pipeline does per token: one hidden state in
//! as bytes, shard B's layers, norm, lm_head, greedy choice on the device,
//! one token id read back. Warm-up steps are excluded.
//!
//! Run: `cargo bench --bench shard_b`. Environment:
//! - HYBRID_BENCH_PRESET: tiny | small | llama-3.2-1b (default) | qwen2.5-0.5b
//! - HYBRID_BENCH_BACKENDS: comma list of backend[:dtype], backend cpu or
//!   vulkan, dtype f32 or f16 (default: cpu:f32, plus vulkan:f16 when a
//!   Vulkan adapter exists)
//! - HYBRID_BENCH_STEPS: decode steps measured (default 32)
//! - HYBRID_BENCH_SPLIT: the first layer of shard B (default L/2; 0 is
//!   the whole model)
//! - HYBRID_BENCH_PROFILE: on the decode plan (a GPU with `packed`), the
//!   step profiles to print as streams@fill pairs (default "1@256,4@256,1@2048"):
//!   host and device time launched and replayed, and each kernel class's
//!   device time.
//! - HYBRID_BENCH_ATTENTION_CHUNK: keys per attention chunk of the decode
//!   plan's steps (default the plan's, 32)
//!
//! On the decode plan the decode line also gives launches and host ms per
//! token (what the plan issued, not waiting for the device).

use std::time::Instant;

use hybrid_tui::bake::store::BakedModel;
use hybrid_tui::bake::{BakeOptions, bake};
use hybrid_tui::config::ShardBSettings;
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::{
    Preset, TestModelOptions, WeightDtype as SrcDtype, make_test_model,
};
use hybrid_tui::shard_b::sampling::{Sampler, SamplingParams};
use hybrid_tui::shard_b::{HiddenDtype, ShardB, WeightDtype, select_device};
use rand::{Rng, SeedableRng};

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    eprintln!("{what}: {e}");
    std::process::exit(1);
}

fn main() {
    let preset_name =
        std::env::var("HYBRID_BENCH_PRESET").unwrap_or_else(|_| "llama-3.2-1b".into());
    let preset = Preset::parse(&preset_name).unwrap_or_else(|| fail("preset", &preset_name));
    let steps: usize = std::env::var("HYBRID_BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let backends: Vec<String> = match std::env::var("HYBRID_BENCH_BACKENDS") {
        Ok(s) => s.split(',').map(str::to_string).collect(),
        Err(_) => {
            let mut v = vec!["cpu".to_string()];
            if !hybrid_tui::shard_b::device::vulkan_adapters().is_empty() {
                v.push("vulkan".into());
            }
            v
        }
    };
    let arch = if preset == Preset::Qwen25_05b {
        Arch::Qwen2
    } else {
        Arch::Llama
    };
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail("temp dir", e));
    let src = dir.path().join("hf");
    let baked = dir.path().join("baked");
    let t0 = Instant::now();
    make_test_model(
        &src,
        &TestModelOptions {
            arch,
            preset,
            seed: 1,
            dtype: SrcDtype::Bf16,
            max_shard_bytes: 2_000_000_000,
        },
    )
    .unwrap_or_else(|e| fail("make-test-model", e));
    let report = bake(&src, &baked, &BakeOptions::default(), &mut |_| {})
        .unwrap_or_else(|e| fail("bake", e));
    println!(
        "model: {} ({:.3}B parameters), int4_sym g128 bake {} MB; made and baked in {:.1}s",
        preset.name(),
        report.params as f64 / 1e9,
        report.bytes_after / 1_000_000,
        t0.elapsed().as_secs_f64()
    );
    let model = BakedModel::open(&baked).unwrap_or_else(|e| fail("open", e));
    let spec = model.spec().clone();
    let k = std::env::var("HYBRID_BENCH_SPLIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(spec.num_layers / 2);
    let profiles: Vec<(usize, usize)> = std::env::var("HYBRID_BENCH_PROFILE")
        .unwrap_or_else(|_| "1@256,4@256,1@2048".into())
        .split(',')
        .filter_map(|p| {
            let (a, b) = p.split_once('@')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .collect();
    for entry in backends {
        let (backend, dtype_name) = match entry.split_once(':') {
            Some((b, d)) => (b.to_string(), d.to_string()),
            None if entry == "cpu" => (entry.clone(), "f32".to_string()),
            None => (entry.clone(), "f16".to_string()),
        };
        let dtype = WeightDtype::parse(&dtype_name).unwrap_or_else(|| fail("dtype", &dtype_name));
        let settings = ShardBSettings {
            backend: backend.clone(),
            adapter: "auto".into(),
            weights_dtype: dtype_name.clone(),
            threads: 0,
            cpu_cores: String::new(),
            decode: "replay".into(),
        };
        let (device, info) = select_device(&settings).unwrap_or_else(|e| fail("device", e));
        let t0 = Instant::now();
        let shard = ShardB::load(&model, k, device, info.clone(), dtype)
            .unwrap_or_else(|e| fail("load", e));
        let load_s = t0.elapsed().as_secs_f64();
        if let Some(keys) = std::env::var("HYBRID_BENCH_ATTENTION_CHUNK")
            .ok()
            .and_then(|s| s.parse().ok())
        {
            shard.set_attention_chunk(keys);
        }
        let mut stream = shard.new_stream(512);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut hidden = |n: usize| -> Vec<u8> {
            (0..n * spec.hidden_size)
                .flat_map(|_| rng.random_range(-1.0f32..1.0).to_le_bytes())
                .collect()
        };
        let mut sampler = Sampler::new(SamplingParams::greedy());
        let prompt = hidden(16);
        let t0 = Instant::now();
        let logits = shard
            .forward_bytes(&prompt, HiddenDtype::F32, 16, &mut stream)
            .unwrap_or_else(|e| fail("prefill", e));
        sampler.sample(logits).unwrap_or_else(|e| fail("sample", e));
        let prefill_s = t0.elapsed().as_secs_f64();
        let mut times = Vec::new();
        let mut work_before = None;
        for i in 0..steps + 3 {
            if i == 3 {
                work_before = shard.plan_stats();
            }
            let h = hidden(1);
            let t0 = Instant::now();
            let logits = shard
                .forward_bytes(&h, HiddenDtype::F32, 1, &mut stream)
                .unwrap_or_else(|e| fail("decode", e));
            sampler.sample(logits).unwrap_or_else(|e| fail("sample", e));
            if i >= 3 {
                times.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        let n = times.len() as f64;
        let mean = times.iter().sum::<f64>() / n;
        let sd =
            (times.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0)).sqrt();
        let min = times.iter().cloned().fold(f64::INFINITY, f64::min);
        println!(
            "shard B layers [{k}, {}) + norm + lm_head on {} ({}), weights {}: decode {:.2} ± {:.2} ms/token (min {:.2}, {} steps after 3 warm-up), {:.1} tok/s; prefill 16 tokens {:.0} ms; load {:.1}s; resident weights {:.1} MB",
            spec.num_layers,
            backend,
            info.name,
            dtype_name,
            mean,
            sd,
            min,
            times.len(),
            1e3 / mean,
            prefill_s * 1e3,
            load_s,
            shard.resident_weight_bytes() as f64 / 1e6
        );
        if let (Some(after), Some(before)) = (shard.plan_stats(), work_before) {
            let w = after.since(&before);
            let n = w.steps.max(1) as f64;
            println!(
                "  decode plan ({}): {:.1} launches/token, host {:.3} ms/token issuing, {:.2} replays/token, {:.1} readbacks/token",
                shard.decode_mode().name(),
                w.launches as f64 / n,
                w.host_ns as f64 / 1e6 / n,
                w.replays as f64 / n,
                w.readbacks as f64 / n,
            );
        }
        for &(streams, fill) in &profiles {
            let Some(p) = shard.profile_decode(streams, fill, 20) else {
                break;
            };
            let p = p.unwrap_or_else(|e| fail("profile", e));
            println!(
                "  step of {} stream(s) at fill {}: {} launches; host {:.3} ms launched, {:.3} replayed; device {:.3} ms launched, {:.3} replayed",
                p.streams,
                p.fill,
                p.launches,
                p.host_launch_ms,
                p.host_replay_ms,
                p.device_launch_ms,
                p.device_replay_ms
            );
            let alone: f64 = p.classes.iter().map(|c| c.1).sum();
            for (name, ms, n) in &p.classes {
                println!("    {name:<11} {ms:8.3} ms device ({n} launches)");
            }
            println!(
                "    (kernels alone {alone:.3} ms; the rest of the replayed step, {:.3} ms, is gaps between launches)",
                p.device_replay_ms - alone
            );
        }
    }
}
