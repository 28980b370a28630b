//! Decode throughput of the two-process pipeline at 1, 2 and 4 streams.
//!
//! `cargo bench --bench pipeline` (or the built binary, carried to another
//! machine). Settings come from the usual layers, so the profile and the
//! environment pick devices and cores, e.g.
//! `HYBRID_TUI__SHARD_A__CPU_CORES=0 HYBRID_TUI__SHARD_B__CPU_CORES=1`.
//!
//! - HYBRID_BENCH_PRESET: tiny, small or llama-3.2-1b (default)
//! - HYBRID_BENCH_MODEL: a baked directory to use instead of making one
//! - HYBRID_BENCH_STREAMS: "1,2,4"
//! - HYBRID_BENCH_TOKENS: tokens per stream (default 32), greedy, eos ignored
//! - HYBRID_BENCH_PROMPT: prompt tokens (default 16)
//! - HYBRID_TUI_EXECUTIVE: the hybrid-executive program (default: the one
//!   cargo built next to this bench)

use std::path::PathBuf;
use std::time::Instant;

use hybrid_tui::bake::{BakeOptions, bake};
use hybrid_tui::config::{CliLayer, Settings, SettingsEnv};
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};
use hybrid_tui::pipeline::{Event, GenRequest, Pipeline};
use hybrid_tui::shard_b::sampling::{SamplingParams, StopCriteria};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn model_dir(preset: &str) -> PathBuf {
    if let Ok(d) = std::env::var("HYBRID_BENCH_MODEL") {
        return PathBuf::from(d);
    }
    let root = std::env::temp_dir().join("hybrid-tui-bench");
    let hf = root.join(format!("hf-llama-{preset}"));
    let baked = root.join(format!("baked-llama-{preset}"));
    if !baked.join("manifest.toml").exists() {
        if !hf.join("config.json").exists() {
            let t = Instant::now();
            make_test_model(
                &hf,
                &TestModelOptions {
                    arch: Arch::Llama,
                    preset: Preset::parse(preset).expect("preset"),
                    seed: 1,
                    dtype: WeightDtype::Bf16,
                    max_shard_bytes: 2 << 30,
                },
            )
            .expect("make model");
            eprintln!("made {} in {:.1}s", hf.display(), t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        bake(&hf, &baked, &BakeOptions::default(), &mut |_| {}).expect("bake");
        eprintln!(
            "baked {} in {:.1}s",
            baked.display(),
            t.elapsed().as_secs_f64()
        );
    }
    baked
}

fn main() {
    let preset: String = env("HYBRID_BENCH_PRESET", "llama-3.2-1b".to_string());
    let tokens: usize = env("HYBRID_BENCH_TOKENS", 32);
    let prompt_len: usize = env("HYBRID_BENCH_PROMPT", 16);
    let streams: Vec<usize> = env("HYBRID_BENCH_STREAMS", "1,2,4".to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let loaded = Settings::load(&CliLayer::default(), &SettingsEnv::from_process())
        .unwrap_or_else(|e| panic!("settings: {e}"));
    let mut settings = loaded.settings;
    if settings.executive.path.is_empty() {
        settings.executive.path = std::env::var("HYBRID_TUI_EXECUTIVE")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_hybrid-executive").to_string());
    }
    hybrid_tui::pipeline::configure_cpu_pool(&settings.shard_b).expect("shard_b threads/cores");
    let dir = model_dir(&preset);
    let mut pipeline = Pipeline::new(&settings, &dir, &mut |_| {}).expect("pipeline");
    let spec = pipeline.shard_b.spec.clone();
    println!(
        "pipeline: {preset} ({} layers, hidden {}), split {}/{} · shard A OpenVINO {} (cores '{}', threads {}) · shard B {} {} (cores '{}', threads {}) · {prompt_len}-token prompt, {tokens} tokens per stream",
        spec.num_layers,
        spec.hidden_size,
        pipeline.split,
        spec.num_layers,
        settings.shard_a.device,
        settings.shard_a.cpu_cores,
        settings.shard_a.threads,
        pipeline.shard_b.info.backend,
        pipeline.shard_b.info.name,
        settings.shard_b.cpu_cores,
        settings.shard_b.threads,
    );
    println!(
        "{:>7} {:>12} {:>14} {:>10} {:>10} {:>10} {:>10} {:>10}",
        "streams", "tok/s total", "decode tok/s¹", "ttft ms", "A ms", "A→B ms", "B ms", "B→A ms"
    );
    let mut single = None;
    // Warm-up: one short stream (kernel selection, caches).
    let warm = GenRequest {
        prompt: (0..prompt_len as u32).map(|i| 3 + i * 7 % 200).collect(),
        max_new_tokens: 4,
        sampling: SamplingParams::greedy(),
        stop: StopCriteria {
            ignore_eos: true,
            ..Default::default()
        },
        record_logits: false,
    };
    pipeline
        .run(vec![warm.clone()], &mut |_| {})
        .expect("warm-up");
    for &s in &streams {
        let reqs: Vec<GenRequest> = (0..s)
            .map(|i| GenRequest {
                prompt: (0..prompt_len as u32)
                    .map(|j| 3 + (j * 13 + i as u32 * 101) % 200)
                    .collect(),
                max_new_tokens: tokens,
                ..warm.clone()
            })
            .collect();
        let mut sums = [0f64; 4];
        let mut n = 0usize;
        let mut first_decode: Option<Instant> = None;
        let mut decoded = 0usize;
        let t0 = Instant::now();
        let reports = pipeline
            .run(reqs, &mut |e| {
                if let Event::Stage(st) = e
                    && !st.prefill
                {
                    sums[0] += st.a_ms;
                    sums[1] += st.a_to_b_wait_ms;
                    sums[2] += st.b_ms;
                    sums[3] += st.b_to_a_wait_ms;
                    n += 1;
                    if first_decode.is_none() {
                        first_decode = Some(Instant::now());
                    } else {
                        decoded += st.tokens;
                    }
                }
            })
            .expect("run");
        let wall = t0.elapsed().as_secs_f64();
        let total: usize = reports.iter().map(|r| r.tokens.len()).sum();
        let decode_rate = first_decode
            .map(|t| decoded as f64 / t.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let ttft = reports.iter().map(|r| r.metrics.ttft_ms).sum::<f64>() / s as f64;
        let d = n.max(1) as f64;
        println!(
            "{s:>7} {:>12.2} {:>14.2} {:>10.1} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            total as f64 / wall,
            decode_rate,
            ttft,
            sums[0] / d,
            sums[1] / d,
            sums[2] / d,
            sums[3] / d
        );
        if s == 1 {
            single = Some(decode_rate);
        } else if let Some(one) = single {
            println!(
                "        {s} streams vs 1: {:.2}× decode throughput",
                decode_rate / one.max(1e-9)
            );
        }
    }
    println!("¹ decode tokens of all streams per second, from the first decode step to the end");
    pipeline.shutdown();
}
