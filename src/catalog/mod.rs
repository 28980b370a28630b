//! Model sources and where their baked directories are: the one answer to
//! "how does `--model X` (or `model.source = X`) become a baked directory?".
//!
//! A [`Source`] is a Hub id `org/name[@revision]`, a directory (a Hugging
//! Face model or a baked one) or `demo`. [`resolve`] turns it into a baked
//! directory, doing what that takes:
//!
//! - a baked directory is used as it is;
//! - a Hugging Face directory is baked (int4_sym, group 128) into the bake
//!   cache on first use and reused while its files are unchanged
//!   ([`cache`]);
//! - a Hub id is fetched into the Hugging Face cache, then baked likewise;
//!   with [`Fallback::Demo`] a failed fetch falls back to the demo model
//!   (the first run must not end in an error), otherwise it is the error;
//! - `demo` is the demo model, made and baked on first use ([`demo`]).
//!
//! What it does is told through [`CatalogEvent`]s (steps as text, download
//! progress), which each front end shows its own way. [`locate`] says where
//! the baked directory is or will be without doing anything (the hardware
//! check). [`list`] and [`remove`] are `hybrid-tui models`.
//!
//! A Hub snapshot is baked as `<org>--<name>--<commit>-<hash>`. The default
//! `model.source` is `Qwen/Qwen2.5-0.5B-Instruct`; with [`Fallback::Demo`]
//! (the first run, the workbench, `model.source`) a model that cannot be had
//! (no network, offline, gated) falls back to the demo model with the
//! reasons, which the workbench shows in the conversation; an explicit
//! `--model ID` ([`Fallback::None`]) fails with the Hub's error instead.

pub mod cache;
pub mod demo;
pub mod list;
pub mod source;

use std::path::PathBuf;

pub use list::{CachedModel, list, remove};
pub use source::Source;

use crate::bake::BakeError;
use crate::bake::store::MANIFEST;
use crate::hub::{FileProgress, HubError, HubOptions};
use crate::model::ModelError;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Bake(#[from] BakeError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(
        "no data directory (HOME and XDG_DATA_HOME are unset) for the demo model; set model.source to a baked model directory"
    )]
    NoDataDir,
    #[error(
        "{0}: no cache directory to bake it into (HOME and XDG_CACHE_HOME are unset); bake it first with hybrid-tui bake --model {0} --out <dir>"
    )]
    NoCacheDir(PathBuf),
    #[error(
        "{0}: no such directory. Give a baked model, a Hugging Face model directory, a Hub id (org/name), or \"demo\" for the built-in demo model"
    )]
    Missing(PathBuf),
    #[error("{0}: neither a baked model (manifest.toml) nor a Hugging Face model (config.json)")]
    NotAModel(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Remove(String),
}

/// What resolving a source does, as it happens.
#[derive(Debug, Clone)]
pub enum CatalogEvent {
    /// One line of what was done ("fetched ...", "baked ...").
    Step(String),
    /// A file of a Hub download advanced.
    Download(FileProgress),
    /// The demo model stands in for a model that could not be had; the
    /// lines say why and how to get the real one.
    Fallback(Vec<String>),
}

/// What to do when a Hub model cannot be fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The error is the answer (`--model X` asks for X).
    None,
    /// Use the demo model and say why (the first run, `model.source`).
    Demo,
}

/// Said when the demo model stands in for a model that could not be fetched.
pub const FALLBACK_NOTICE: &str =
    "Using the demo model instead: random weights, so its answers are noise.";

/// Resolve `source` (as `--model` or `model.source` gives it) to a baked
/// directory, fetching, making and baking what is missing.
pub fn resolve(
    source: &str,
    fallback: Fallback,
    sink: &mut dyn FnMut(CatalogEvent),
) -> Result<PathBuf, CatalogError> {
    match Source::parse(source)? {
        Source::Demo => demo::model(sink),
        Source::Dir(d) => {
            let dir = cache::baked_dir_for(&d, sink)?;
            sink(CatalogEvent::Step(format!("model: {}", dir.display())));
            Ok(dir)
        }
        Source::Hub { repo, revision } => {
            let got = fetch(&HubOptions::from_env(), &repo, &revision, sink)
                .map_err(CatalogError::from)
                .and_then(|snapshot| cache::baked_dir_for(&snapshot, sink));
            match (got, fallback) {
                (Ok(dir), _) => Ok(dir),
                (Err(e), Fallback::None) => Err(e),
                (Err(why), Fallback::Demo) => {
                    sink(CatalogEvent::Fallback(vec![
                        format!("could not get {repo}: {why}"),
                        format!(
                            "{FALLBACK_NOTICE} To use {repo}, run again where the Hub is reachable (it is fetched and baked once, then used offline)."
                        ),
                    ]));
                    demo::model(sink)
                }
            }
        }
    }
}

/// `repo@revision` from the Hugging Face cache, or fetched into it: the
/// snapshot folder (Hugging Face layout, not baked).
pub fn fetch(
    opts: &HubOptions,
    repo: &str,
    revision: &str,
    sink: &mut dyn FnMut(CatalogEvent),
) -> Result<PathBuf, HubError> {
    if let Some(snap) = crate::hub::cached_snapshot(opts, repo, revision) {
        sink(CatalogEvent::Step(format!(
            "{repo}@{revision}: in the Hugging Face cache ({})",
            snap.display()
        )));
        return Ok(snap);
    }
    sink(CatalogEvent::Step(format!(
        "fetching {repo}@{revision} from {} into {}",
        opts.endpoint,
        opts.cache_dir.display()
    )));
    let snap = crate::hub::fetch(opts, repo, revision, &mut |p| {
        sink(CatalogEvent::Download(p))
    })?;
    sink(CatalogEvent::Step(format!(
        "fetched {repo}@{revision} into {}",
        snap.display()
    )));
    Ok(snap)
}

/// Where `source`'s baked directory is, or will be once resolved, without
/// fetching, making or baking anything. None when that cannot be known
/// yet (a Hub model not fetched, no cache directory) or the source is not
/// valid.
pub fn locate(source: &str) -> Option<PathBuf> {
    match Source::parse(source).ok()? {
        Source::Demo => demo::baked_dir(),
        Source::Dir(d) if d.join(MANIFEST).is_file() => Some(d),
        Source::Dir(d) => cache::bake_cache_dir(&d),
        Source::Hub { repo, revision } => {
            let snap = crate::hub::cached_snapshot(&HubOptions::from_env(), &repo, &revision)?;
            cache::bake_cache_dir(&snap)
        }
    }
}
