//! The baked store: `manifest.toml` plus one safetensors file per block of
//! the model (`weights/embed.safetensors`, `weights/layer.NNN.safetensors`,
//! `weights/head.safetensors`). Every tensor is stored once, in the form
//! both shards read.
//!
//! Per weight `W` (`[rows, cols]`, HF name `name`):
//! - integer schemes: `name.q` (4-bit: U8, two values per byte, element 2k in
//!   the low nibble, i.e. the bytes of an OpenVINO u4/i4 constant; 8-bit: U8
//!   or I8 `[rows, cols]`), `name.scale` (F16 `[rows, cols/group]`),
//!   `name.zp` for asymmetric schemes (U8: packed nibbles for 4-bit, one per
//!   byte for 8-bit, `[rows * cols/group]` values);
//! - `f16`/`f32`: `name` itself. Norm weights and biases are always f32.
//!
//! `manifest.toml` holds format_version, tool_version, the ModelSpec, the
//! default split, the quantization options, token ids, the sources' sha256s
//! and `[tensors."<hf name>"]` (file, scheme, shape, group, errors); beside
//! it the source's config.json, tokenizer.json, tokenizer_config.json,
//! generation_config.json and chat_template.jinja. The split point is not
//! baked in: any k works with the same store. [`Manifest::read`] is the one
//! reader of manifests.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::f16;
use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata};
use serde::{Deserialize, Serialize};

use super::quant::{Scheme, dequantize_parts, unpack_u4};
use crate::model::ModelSpec;

pub const MANIFEST: &str = "manifest.toml";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: {message}. Bake the model again with `hybrid-tui bake --model <HF dir> --out <dir>`"
    )]
    Bad { path: PathBuf, message: String },
    #[error("tensor '{0}' is not in the baked store (manifest.toml has no entry for it)")]
    Missing(String),
}

/// `manifest.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tool_version: String,
    pub model: ModelSpec,
    /// Layers in shard A by default (half of them).
    pub default_split: usize,
    pub quantization: QuantSummary,
    pub tokens: TokenInfo,
    pub source: SourceInfo,
    /// Every stored tensor, by its Hugging Face name.
    pub tensors: BTreeMap<String, TensorEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantSummary {
    pub weights: Scheme,
    /// Group size of the primary scheme; -1 is per channel.
    pub group_size: i64,
    pub ratio: f64,
    pub backup: String,
    pub all_layers: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    pub chat_template_file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub path: String,
    /// File name → sha256 hex of every file read.
    pub sha256: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorEntry {
    pub file: String,
    pub scheme: Scheme,
    pub shape: Vec<usize>,
    /// Columns per group for integer schemes (== cols for per channel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
    /// Mean and max absolute error of the stored weight against the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_abs_error: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_error: Option<f64>,
}

/// The file of the store that holds a tensor of the given HF name.
pub fn file_for(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.layers.") {
        let idx: usize = rest
            .split('.')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        format!("weights/layer.{idx:03}.safetensors")
    } else if name.starts_with("model.embed_tokens") {
        "weights/embed.safetensors".into()
    } else {
        "weights/head.safetensors".into()
    }
}

/// A stored tensor, borrowed from the mapped files.
#[derive(Debug)]
pub struct StoredTensor<'a> {
    pub scheme: Scheme,
    pub shape: &'a [usize],
    pub group: usize,
    /// Raw bytes: packed nibbles (4-bit), bytes (8-bit), f16 or f32 values.
    pub data: &'a [u8],
    pub scales: Option<&'a [u8]>,
    pub zero_points: Option<&'a [u8]>,
}

impl StoredTensor<'_> {
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }
    pub fn cols(&self) -> usize {
        self.shape.iter().skip(1).product::<usize>().max(1)
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The weight as the IR computes it (see [`dequantize_parts`]).
    pub fn dequantize(&self) -> Vec<f32> {
        let n = self.numel();
        match self.scheme {
            Scheme::F32 => self
                .data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Scheme::F16 => self
                .data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            s => {
                let groups = n / self.group;
                let q = if s.bits() == 4 {
                    unpack_u4(self.data, n, !s.is_asym())
                } else {
                    self.data.to_vec()
                };
                let scales: Vec<f16> = self
                    .scales
                    .unwrap_or(&[])
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let zps = self.zero_points.map(|z| {
                    if s.bits() == 4 {
                        unpack_u4(z, groups, false)
                    } else {
                        z.to_vec()
                    }
                });
                dequantize_parts(s, self.cols(), self.group, &q, &scales, zps.as_deref())
            }
        }
    }
}

struct MappedFile {
    map: Mmap,
    header_len: usize,
    meta: Metadata,
}

/// The tensors of a baked directory, its files mapped: what a decoder's and
/// an encoder's store share.
pub struct TensorStore {
    dir: PathBuf,
    entries: BTreeMap<String, TensorEntry>,
    files: HashMap<String, MappedFile>,
}

/// A baked model directory opened for reading.
pub struct BakedModel {
    pub dir: PathBuf,
    pub manifest: Manifest,
    store: TensorStore,
}

/// The `[encoder]` table that tells an embedding model's manifest apart.
const ENCODER_KEY: &str = "encoder";

/// `dir/manifest.toml` as text, with its path.
pub(crate) fn read_manifest_text(dir: &Path) -> Result<(PathBuf, String), StoreError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|e| StoreError::Io {
        path: path.clone(),
        source: e,
    })?;
    Ok((path, text))
}

/// True when the manifest text is an embedding model's.
pub(crate) fn is_encoder_manifest(text: &str) -> bool {
    toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key(ENCODER_KEY))
}

/// The store's format version, checked.
pub(crate) fn check_version(path: &Path, version: u32) -> Result<(), StoreError> {
    if version != FORMAT_VERSION {
        return Err(StoreError::Bad {
            path: path.to_path_buf(),
            message: format!(
                "store format version {version} is not the supported version {FORMAT_VERSION}"
            ),
        });
    }
    Ok(())
}

impl Manifest {
    /// `dir/manifest.toml`, parsed and of the supported format version. The
    /// one reader of decoder manifests.
    pub fn read(dir: &Path) -> Result<Manifest, StoreError> {
        let (path, text) = read_manifest_text(dir)?;
        if is_encoder_manifest(&text) {
            return Err(StoreError::Bad {
                path,
                message: "this is an embedding model (an encoder), not a chat model; name it in the setting embed.model, and choose a decoder (llama, qwen2, mistral) as model.source".into(),
            });
        }
        let manifest: Manifest = toml::from_str(&text).map_err(|e| StoreError::Bad {
            path: path.clone(),
            message: format!("not a valid manifest: {e}"),
        })?;
        check_version(&path, manifest.format_version)?;
        Ok(manifest)
    }
}

impl TensorStore {
    /// Map the files that hold `entries` (each file once).
    pub fn open(
        dir: &Path,
        entries: &BTreeMap<String, TensorEntry>,
    ) -> Result<TensorStore, StoreError> {
        let mut files = HashMap::new();
        for entry in entries.values() {
            if files.contains_key(&entry.file) {
                continue;
            }
            let p = dir.join(&entry.file);
            let f = File::open(&p).map_err(|e| StoreError::Io {
                path: p.clone(),
                source: e,
            })?;
            // SAFETY: read-only mapping of a file this process does not write.
            let map = unsafe { Mmap::map(&f) }.map_err(|e| StoreError::Io {
                path: p.clone(),
                source: e,
            })?;
            let (header_len, meta) =
                safetensors::SafeTensors::read_metadata(&map).map_err(|e| StoreError::Bad {
                    path: p.clone(),
                    message: format!("not a valid safetensors file ({e}); it may be truncated"),
                })?;
            files.insert(
                entry.file.clone(),
                MappedFile {
                    map,
                    header_len,
                    meta,
                },
            );
        }
        Ok(TensorStore {
            dir: dir.to_path_buf(),
            entries: entries.clone(),
            files,
        })
    }

    fn bytes(&self, file: &str, name: &str) -> Result<(&[u8], Dtype, &[usize]), StoreError> {
        let f = self
            .files
            .get(file)
            .ok_or_else(|| StoreError::Missing(name.to_string()))?;
        let info = f.meta.info(name).ok_or_else(|| StoreError::Bad {
            path: self.dir.join(file),
            message: format!("tensor '{name}' listed in manifest.toml is not in the file"),
        })?;
        let start = 8 + f.header_len + info.data_offsets.0;
        let end = 8 + f.header_len + info.data_offsets.1;
        let path = || self.dir.join(file);
        let data = f.map.get(start..end).ok_or_else(|| StoreError::Bad {
            path: path(),
            message: format!("tensor '{name}' lies past the end of the file; it is truncated"),
        })?;
        Ok((data, info.dtype, &info.shape))
    }

    pub fn tensor(&self, name: &str) -> Result<StoredTensor<'_>, StoreError> {
        let entry = self
            .entries
            .get(name)
            .ok_or_else(|| StoreError::Missing(name.to_string()))?;
        let file = entry.file.as_str();
        if entry.scheme.is_int() {
            let (data, _, _) = self.bytes(file, &format!("{name}.q"))?;
            let (scales, _, _) = self.bytes(file, &format!("{name}.scale"))?;
            let zero_points = if entry.scheme.is_asym() {
                Some(self.bytes(file, &format!("{name}.zp"))?.0)
            } else {
                None
            };
            Ok(StoredTensor {
                scheme: entry.scheme,
                shape: &entry.shape,
                group: entry
                    .group
                    .unwrap_or_else(|| *entry.shape.last().unwrap_or(&1)),
                data,
                scales: Some(scales),
                zero_points,
            })
        } else {
            let (data, _, _) = self.bytes(file, name)?;
            Ok(StoredTensor {
                scheme: entry.scheme,
                shape: &entry.shape,
                group: 1,
                data,
                scales: None,
                zero_points: None,
            })
        }
    }

    /// A tensor dequantized to f32, exactly as the IR's decompression computes it.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, StoreError> {
        Ok(self.tensor(name)?.dequantize())
    }

    /// Bytes of every stored file (weights as they sit on disk).
    pub fn stored_bytes(&self) -> u64 {
        self.files.values().map(|f| f.map.len() as u64).sum()
    }
}

impl BakedModel {
    pub fn open(dir: &Path) -> Result<BakedModel, StoreError> {
        let manifest = Manifest::read(dir)?;
        let store = TensorStore::open(dir, &manifest.tensors)?;
        Ok(BakedModel {
            dir: dir.to_path_buf(),
            manifest,
            store,
        })
    }

    pub fn spec(&self) -> &ModelSpec {
        &self.manifest.model
    }

    pub fn tensor(&self, name: &str) -> Result<StoredTensor<'_>, StoreError> {
        self.store.tensor(name)
    }

    /// A tensor dequantized to f32, exactly as the IR's decompression computes it.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, StoreError> {
        self.store.f32(name)
    }

    /// Bytes of every stored file (weights as they sit on disk).
    pub fn stored_bytes(&self) -> u64 {
        self.store.stored_bytes()
    }

    /// Name of the output projection weight (lm_head, or the tied embedding).
    pub fn lm_head_name(&self) -> &'static str {
        if self.spec().tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        }
    }
}
