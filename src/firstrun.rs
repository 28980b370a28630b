//! Making sure a model is there: `model.source`, or the demo model, made
//! and baked on first use.

use std::path::PathBuf;
use std::time::Instant;

use crate::bake::store::MANIFEST;
use crate::bake::{BakeOptions, bake};
use crate::config::Settings;
use crate::hub::{FileProgress, HubOptions, ModelSource};
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
    #[error("model.source: {0}")]
    Hub(#[from] crate::hub::HubError),
    #[error("{0}")]
    Other(String),
}

/// One line of what was done.
pub type Step = String;

/// Resolve `model.source` to a baked directory: a baked directory as it
/// is; a Hub id fetched and baked on first use, falling back to the demo
/// model (with a step saying why) when the Hub cannot be reached, so the
/// first run never ends in an error; "demo", the demo model.
pub fn resolve_model(settings: &Settings, steps: &mut Vec<Step>) -> Result<PathBuf, FirstRunError> {
    resolve_model_with(settings, steps, None)
}

/// [`resolve_model`], with downloads reported to `progress` (the
/// workbench's pane) instead of progress bars on stderr.
pub fn resolve_model_with(
    settings: &Settings,
    steps: &mut Vec<Step>,
    progress: Option<&mut dyn FnMut(FileProgress)>,
) -> Result<PathBuf, FirstRunError> {
    let source = settings.model.source.as_str();
    match ModelSource::parse(source)? {
        ModelSource::Demo => demo_model(steps),
        ModelSource::Hub { repo, revision } => {
            let opts = HubOptions::from_env();
            let mut notes = Vec::new();
            let got = {
                let mut note = |m: String| notes.push(m);
                let fetched = match progress {
                    Some(p) => {
                        note(format!(
                            "fetching {repo}@{revision} from {} into {}",
                            opts.endpoint,
                            opts.cache_dir.display()
                        ));
                        crate::hub::fetch(&opts, &repo, &revision, p)
                    }
                    None => crate::generate::fetch_with_bars(&opts, &repo, &revision, &mut note),
                };
                fetched.map_err(|e| e.to_string()).and_then(|snapshot| {
                    crate::generate::baked_dir_for(&snapshot, &mut note)
                        .map_err(|e| format!("{e:#}"))
                })
            };
            steps.append(&mut notes);
            match got {
                Ok(dir) => Ok(dir),
                Err(why) => {
                    steps.push(format!("could not get {repo}: {why}"));
                    steps.push(format!(
                        "{FALLBACK_NOTICE} To use {repo}, run again where the Hub is reachable (it is fetched and baked once, then used offline)."
                    ));
                    demo_model(steps)
                }
            }
        }
        ModelSource::Dir(p) => {
            if !p.exists() {
                return Err(FirstRunError::Missing(p));
            }
            if !p.join(MANIFEST).exists() {
                return Err(FirstRunError::NotBaked(p));
            }
            steps.push(format!("model: {}", p.display()));
            Ok(p)
        }
    }
}

/// Said when the demo model stands in for a model that could not be fetched.
pub const FALLBACK_NOTICE: &str =
    "Using the demo model instead: random weights, so its answers are noise.";

/// The baked demo model's directory (it may not exist yet).
pub fn demo_baked_dir() -> Option<PathBuf> {
    demo_dir(DEMO_ARCH, DEMO_PRESET).map(|hf| hf.with_extension("baked"))
}

/// Is `dir` the demo model?
pub fn is_demo(dir: &std::path::Path) -> bool {
    demo_baked_dir().is_some_and(|d| d == dir)
}

/// The demo model, made and baked on first use.
pub fn demo_model(steps: &mut Vec<Step>) -> Result<PathBuf, FirstRunError> {
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
