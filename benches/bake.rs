//! Bake throughput on the `llama-3.2-1b` preset (1.2B parameters, random
//! weights in bf16): prints the time to make the model, then the bake time
//! and parameters/s for the default INT4_SYM g128 bake and for a ratio 0.8
//! bake (which adds NNCF's sensitivity pass).
//!
//! Run: `cargo bench --bench bake` (HYBRID_BENCH_PRESET=tiny|small|qwen2.5-0.5b for others).

use std::time::Instant;

use hybrid_tui::bake::{BakeOptions, bake};
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};

fn main() {
    let preset_name =
        std::env::var("HYBRID_BENCH_PRESET").unwrap_or_else(|_| "llama-3.2-1b".into());
    let Some(preset) = Preset::parse(&preset_name) else {
        eprintln!("unknown preset {preset_name}");
        std::process::exit(2);
    };
    let arch = if preset == Preset::Qwen25_05b {
        Arch::Qwen2
    } else {
        Arch::Llama
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("temp dir: {e}");
            std::process::exit(1);
        }
    };
    let src = dir.path().join("hf");
    let t0 = Instant::now();
    let spec = match make_test_model(
        &src,
        &TestModelOptions {
            arch,
            preset,
            seed: 1,
            dtype: WeightDtype::Bf16,
            max_shard_bytes: 2_000_000_000,
        },
    ) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("make-test-model: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "make-test-model {} ({:.3}B parameters, bf16): {:.1}s",
        preset.name(),
        spec.num_params() as f64 / 1e9,
        t0.elapsed().as_secs_f64()
    );
    println!("threads: {}", rayon::current_num_threads());
    for (label, opts) in [
        ("int4_sym g128 (default)", BakeOptions::default()),
        (
            "int4_sym g128 ratio 0.8",
            BakeOptions {
                ratio: 0.8,
                ..Default::default()
            },
        ),
    ] {
        let out = dir.path().join(label.replace([' ', '(', ')'], "_"));
        match bake(&src, &out, &opts, &mut |_| {}) {
            Ok(r) => println!(
                "bake {label}: {:.2}s, {:.1}M parameters/s, {:.0} MB -> {:.0} MB",
                r.seconds,
                r.params as f64 / 1e6 / r.seconds,
                r.bytes_before as f64 / 1e6,
                r.bytes_after as f64 / 1e6
            ),
            Err(e) => {
                eprintln!("bake: {e}");
                std::process::exit(1);
            }
        }
        let _ = std::fs::remove_dir_all(&out);
    }
}
