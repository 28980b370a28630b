//! Memory-mapped safetensors checkpoints: one file or an indexed set of shards.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};

use super::ModelError;

struct Shard {
    path: PathBuf,
    map: Mmap,
    header_len: usize,
    meta: Metadata,
}

/// A tensor's bytes, borrowed from the mapped file.
pub struct RawTensor<'a> {
    pub dtype: Dtype,
    pub shape: &'a [usize],
    pub bytes: &'a [u8],
}

/// All safetensors files of a checkpoint, mapped read-only.
pub struct Checkpoint {
    shards: Vec<Shard>,
    /// tensor name → shard index
    index: BTreeMap<String, usize>,
}

impl Checkpoint {
    /// Open `model.safetensors`, or `model.safetensors.index.json` and its shards,
    /// or else every `*.safetensors` in the directory.
    pub fn open(dir: &Path) -> Result<Checkpoint, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(|e| ModelError::Io {
                path: index_path.clone(),
                source: e,
            })?;
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
                    path: index_path.clone(),
                    message: format!("not valid JSON: {e}"),
                })?;
            let map = v
                .get("weight_map")
                .and_then(|m| m.as_object())
                .ok_or_else(|| ModelError::BadFile {
                    path: index_path.clone(),
                    message: "no 'weight_map' object".into(),
                })?;
            let mut names: Vec<String> = map
                .values()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect();
            names.sort();
            names.dedup();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if dir.join("model.safetensors").exists() {
            vec![dir.join("model.safetensors")]
        } else {
            let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| ModelError::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            v.sort();
            v
        };
        if files.is_empty() {
            return Err(ModelError::BadFile {
                path: dir.to_path_buf(),
                message: "no model.safetensors, model.safetensors.index.json or *.safetensors file"
                    .into(),
            });
        }
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in files {
            let shard = map_file(&path)?;
            for name in shard.meta.tensors().keys() {
                index.insert(name.clone(), shards.len());
            }
            shards.push(shard);
        }
        Ok(Checkpoint { shards, index })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Path of the file holding `name`.
    pub fn file_of(&self, name: &str) -> Option<&Path> {
        self.index.get(name).map(|&i| self.shards[i].path.as_path())
    }

    pub fn raw(&self, name: &str) -> Result<RawTensor<'_>, ModelError> {
        let &i = self
            .index
            .get(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let shard = &self.shards[i];
        let info = shard
            .meta
            .info(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let start = 8 + shard.header_len + info.data_offsets.0;
        let end = 8 + shard.header_len + info.data_offsets.1;
        Ok(RawTensor {
            dtype: info.dtype,
            shape: &info.shape,
            bytes: &shard.map[start..end],
        })
    }

    /// A tensor converted to f32 (from bf16, f16 or f32).
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let raw = self.raw(name)?;
        to_f32(raw.dtype, raw.bytes).ok_or_else(|| ModelError::BadFile {
            path: self
                .file_of(name)
                .map(Path::to_path_buf)
                .unwrap_or_default(),
            message: format!(
                "tensor '{name}' has dtype {:?}; expected BF16, F16 or F32",
                raw.dtype
            ),
        })
    }

    /// Check every expected tensor is present with the right shape and a float dtype.
    pub fn validate(&self, expected: &[(String, Vec<usize>)]) -> Result<(), ModelError> {
        for (name, shape) in expected {
            let raw = self.raw(name)?;
            if raw.shape != shape.as_slice() {
                return Err(ModelError::ShapeMismatch {
                    path: self
                        .file_of(name)
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                    name: name.clone(),
                    found: raw.shape.to_vec(),
                    expected: shape.clone(),
                });
            }
            if !matches!(raw.dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32) {
                return Err(ModelError::BadFile {
                    path: self
                        .file_of(name)
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                    message: format!(
                        "tensor '{name}' has dtype {:?}; expected BF16, F16 or F32",
                        raw.dtype
                    ),
                });
            }
        }
        Ok(())
    }
}

fn map_file(path: &Path) -> Result<Shard, ModelError> {
    let file = File::open(path).map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    // SAFETY: the file is opened read-only; the mapping is only read, and a
    // checkpoint changing underneath a running bake is outside our contract.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| ModelError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let (header_len, meta) = safetensors::SafeTensors::read_metadata(&map).map_err(|e| {
        ModelError::BadFile {
            path: path.to_path_buf(),
            message: format!(
                "not a valid safetensors file ({e}); the file may be truncated or still downloading: fetch it again"
            ),
        }
    })?;
    Ok(Shard {
        path: path.to_path_buf(),
        map,
        header_len,
        meta,
    })
}

/// Convert little-endian float bytes to f32.
pub fn to_f32(dtype: Dtype, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}
