//! Making sure a model is there: `model.source`, or the demo model, made
//! and baked on first use.

use std::path::PathBuf;
use std::time::Instant;

use crate::bake::store::MANIFEST;
use crate::bake::{BakeOptions, bake};
use crate::config::Settings;
use crate::model::Arch;
use crate::model::test_model::{self, Preset, TestModelOptions, demo_dir, make_test_model};

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
