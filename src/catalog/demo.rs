//! The demo model: a random-weight model the tool makes and bakes itself
//! (in `$XDG_DATA_HOME/hybrid-tui/models/`), so everything runs without a
//! download. Its answers are noise, and every front end says so.

use std::path::PathBuf;
use std::time::Instant;

use super::{CatalogError, CatalogEvent};
use crate::bake::store::MANIFEST;
use crate::bake::{BakeOptions, bake};
use crate::model::Arch;
use crate::model::test_model::{self, Preset, TestModelOptions, demo_dir, make_test_model};

/// The demo model: a random-weight Qwen2-style model of the tiny preset.
pub const DEMO_ARCH: Arch = Arch::Qwen2;
pub const DEMO_PRESET: Preset = Preset::Tiny;
pub const DEMO_SEED: u64 = 42;

/// The baked demo model's directory (it may not exist yet).
pub fn baked_dir() -> Option<PathBuf> {
    demo_dir(DEMO_ARCH, DEMO_PRESET).map(|hf| hf.with_extension("baked"))
}

/// Is `dir` the demo model?
pub fn is_demo(dir: &std::path::Path) -> bool {
    baked_dir().is_some_and(|d| d == dir)
}

/// The demo model, made and baked on first use.
pub fn model(sink: &mut dyn FnMut(CatalogEvent)) -> Result<PathBuf, CatalogError> {
    let hf = demo_dir(DEMO_ARCH, DEMO_PRESET).ok_or(CatalogError::NoDataDir)?;
    let baked = hf.with_extension("baked");
    if baked.join(MANIFEST).exists() {
        sink(CatalogEvent::Step(format!(
            "demo model: {} (baked earlier)",
            baked.display()
        )));
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
        sink(CatalogEvent::Step(format!(
            "made the demo model ({} {}, random weights: its answers are noise) in {} ({:.1}s)",
            DEMO_ARCH.name(),
            DEMO_PRESET.name(),
            hf.display(),
            t0.elapsed().as_secs_f64()
        )));
    }
    let report = bake(&hf, &baked, &BakeOptions::default(), &mut |_| {})?;
    sink(CatalogEvent::Step(format!(
        "baked it (int4_sym, group 128): {} → {} bytes in {:.2}s, into {}",
        report.bytes_before,
        report.bytes_after,
        report.seconds,
        baked.display()
    )));
    Ok(baked)
}
