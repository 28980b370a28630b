//! What models are on disk: baked models in our cache
//! (`$XDG_CACHE_HOME/hybrid-tui/baked`, keyed by source and bake options),
//! the demo model, and downloads in the Hugging Face cache. Listed by
//! `hybrid-tui models`, removed with `hybrid-tui models --remove NAME`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::CatalogError;
use crate::bake::store::{MANIFEST, Manifest};
use crate::hub::HubOptions;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CachedModel {
    /// What `--remove` takes.
    pub name: String,
    /// "baked", "demo" or "download".
    pub kind: &'static str,
    /// Where it came from: the bake's source, or the Hub id.
    pub source: String,
    pub bytes: u64,
    /// "int4_sym g128 (backup int8_asym)", or "as published" for downloads.
    pub precision: String,
    /// Last change, RFC 3339 (UTC).
    pub modified: String,
    pub path: PathBuf,
}

/// Bytes of the regular files under `dir` (symlinks not followed).
fn tree_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => tree_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

fn modified(p: &Path) -> String {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

fn baked(dir: &Path, kind: &'static str) -> Option<CachedModel> {
    let m = Manifest::read(dir).ok()?;
    let q = &m.quantization;
    let group = if q.group_size < 0 {
        "per channel".to_string()
    } else {
        format!("g{}", q.group_size)
    };
    Some(CachedModel {
        name: dir.file_name()?.to_string_lossy().into_owned(),
        kind,
        source: super::cache::hub_id_of(&m.source.path).unwrap_or_else(|| m.source.path.clone()),
        bytes: tree_bytes(dir),
        precision: format!("{} {group} (backup {})", q.weights.name(), q.backup),
        modified: modified(&dir.join(MANIFEST)),
        path: dir.to_path_buf(),
    })
}

/// Everything cached, baked first.
pub fn list(hub: &HubOptions) -> Vec<CachedModel> {
    let mut out = Vec::new();
    if let Some(dir) = crate::paths::cache_dir().map(|c| c.join("baked"))
        && let Ok(rd) = std::fs::read_dir(&dir)
    {
        let mut dirs: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        dirs.sort();
        out.extend(dirs.iter().filter_map(|d| baked(d, "baked")));
    }
    if let Some(d) = super::demo::baked_dir()
        && let Some(mut m) = baked(&d, "demo")
    {
        m.name = "demo".into();
        m.source = "demo (random weights)".into();
        out.push(m);
    }
    if let Ok(rd) = std::fs::read_dir(&hub.cache_dir) {
        let mut dirs: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("models--"))
            })
            .collect();
        dirs.sort();
        for d in dirs {
            let Some(folder) = d.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let id = folder.trim_start_matches("models--").replacen("--", "/", 1);
            out.push(CachedModel {
                name: id.clone(),
                kind: "download",
                source: id,
                bytes: tree_bytes(&d.join("blobs")),
                precision: "as published".into(),
                modified: modified(&d.join("refs")),
                path: d,
            });
        }
    }
    out
}

/// Remove one entry by name (as `list` gives it). Downloads are removed from
/// the Hugging Face cache, which other tools share: the caller says so.
pub fn remove(hub: &HubOptions, name: &str) -> Result<CachedModel, CatalogError> {
    let all = list(hub);
    let Some(m) = all.iter().find(|m| m.name == name) else {
        let names: Vec<&str> = all.iter().map(|m| m.name.as_str()).collect();
        return Err(CatalogError::Remove(if names.is_empty() {
            format!("no cached model is called '{name}': nothing is cached")
        } else {
            format!(
                "no cached model is called '{name}'; cached: {}",
                names.join(", ")
            )
        }));
    };
    std::fs::remove_dir_all(&m.path).map_err(|source| CatalogError::Io {
        path: m.path.clone(),
        source,
    })?;
    if m.kind == "demo"
        && let Some(hf) = m
            .path
            .parent()
            .map(|p| p.join(m.path.file_stem().unwrap_or_default()))
    {
        let _ = std::fs::remove_dir_all(hf);
    }
    Ok(m.clone())
}
