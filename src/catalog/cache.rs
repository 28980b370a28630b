//! The bake cache: where a Hugging Face directory is baked on first use
//! (`$XDG_CACHE_HOME/hybrid-tui/baked/<name>-<hash>`), keyed by the
//! directory's path and its files' sizes and times, so a changed source is
//! baked again and an unchanged one is reused.

use std::path::{Path, PathBuf};

use super::{CatalogError, CatalogEvent};
use crate::bake::quant::Scheme;
use crate::bake::store::MANIFEST;
use crate::bake::{BakeOptions, bake};
use crate::model::bert::is_bert_dir;

/// A Hugging Face snapshot path back to its id: `.../models--org--name/snapshots/<commit>`.
pub fn hub_id_of(path: &str) -> Option<String> {
    let p = Path::new(path);
    let commit = p.file_name()?.to_str()?;
    let repo_dir = p.parent()?.parent()?.file_name()?.to_str()?;
    let id = repo_dir.strip_prefix("models--")?.replacen("--", "/", 1);
    let short: String = commit.chars().take(12).collect();
    Some(format!("{id}@{short}"))
}

/// Where a Hugging Face directory is baked on first use.
pub fn bake_cache_dir(source: &Path) -> Option<PathBuf> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let canon = source.canonicalize().ok()?;
    h.update(canon.as_os_str().as_encoded_bytes());
    let mut files: Vec<_> = std::fs::read_dir(&canon)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for f in files {
        if let Ok(m) = f.metadata() {
            h.update(f.as_os_str().as_encoded_bytes());
            h.update(m.len().to_le_bytes());
            if let Ok(t) = m.modified()
                && let Ok(d) = t.duration_since(std::time::UNIX_EPOCH)
            {
                h.update(d.as_nanos().to_le_bytes());
            }
        }
    }
    let d = h.finalize();
    let tag: String = d.iter().take(8).map(|b| format!("{b:02x}")).collect();
    // A Hugging Face snapshot (models--org--name/snapshots/<commit>) is
    // named after its repository and commit.
    let name = match hub_id_of(&canon.to_string_lossy()) {
        Some(id) => id.replace(['/', '@'], "--"),
        None => canon
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into()),
    };
    Some(
        crate::paths::cache_dir()?
            .join("baked")
            .join(format!("{name}-{tag}")),
    )
}

/// A baked directory for `dir`: itself when baked; a Hugging Face directory
/// is baked into the cache on first use and reused after: a chat model
/// int4_sym g128, an embedding model (BERT) int8_asym per channel.
pub fn baked_dir_for(
    dir: &Path,
    sink: &mut dyn FnMut(CatalogEvent),
) -> Result<PathBuf, CatalogError> {
    if dir.join(MANIFEST).is_file() {
        return Ok(dir.to_path_buf());
    }
    if !dir.exists() {
        return Err(CatalogError::Missing(dir.to_path_buf()));
    }
    if !dir.join("config.json").is_file() {
        return Err(CatalogError::NotAModel(dir.to_path_buf()));
    }
    let cache = bake_cache_dir(dir).ok_or_else(|| CatalogError::NoCacheDir(dir.to_path_buf()))?;
    if cache.join(MANIFEST).is_file() {
        sink(CatalogEvent::Step(format!(
            "using the bake of {} in {}",
            dir.display(),
            cache.display()
        )));
        return Ok(cache);
    }
    let opts = if is_bert_dir(dir) {
        BakeOptions {
            weights: Scheme::Int8Asym,
            ..Default::default()
        }
    } else {
        BakeOptions::default()
    };
    let how = match opts.weights {
        Scheme::Int8Asym => "int8_asym, per channel",
        _ => "int4_sym, group 128",
    };
    sink(CatalogEvent::Step(format!(
        "baking {} ({how}) into {} on first use",
        dir.display(),
        cache.display()
    )));
    if let Some(p) = cache.parent() {
        std::fs::create_dir_all(p).map_err(|source| CatalogError::Io {
            path: p.to_path_buf(),
            source,
        })?;
    }
    let r = bake(dir, &cache, &opts, &mut |_| {})?;
    sink(CatalogEvent::Step(format!(
        "baked: {:.1} MB → {:.1} MB in {:.1}s",
        r.bytes_before as f64 / 1e6,
        r.bytes_after as f64 / 1e6,
        r.seconds
    )));
    Ok(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_from_snapshot_paths() {
        assert_eq!(
            hub_id_of(
                "/h/hub/models--Qwen--Qwen2.5-0.5B-Instruct/snapshots/7ae557604adf67be50417f59c2c2f167def9a775"
            ),
            Some("Qwen/Qwen2.5-0.5B-Instruct@7ae557604adf".into())
        );
        assert_eq!(hub_id_of("/models/llama"), None);
    }
}
