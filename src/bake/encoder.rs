//! The bake of an embedding model (BERT family): every matrix (the three
//! embedding tables and each layer's six projections) in one scheme, per
//! channel, as NNCF's INT8 `compress_weights` does — INT8_ASYM by default,
//! the NPU's preferred form — or f16 with `--weights f16`; layer norms and
//! biases stay f32.
//!
//! The store is the decoders' layout (`manifest.toml`, safetensors, the
//! source's side files copied), with one weights file,
//! `weights/encoder.safetensors`, and an `[encoder]` table (the
//! [`BertSpec`]) where a decoder's manifest has `[model]`; a decoder's
//! reader refuses it with a message that says what it is.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use super::store::{
    FORMAT_VERSION, SourceInfo, StoreError, StoredTensor, TensorEntry, TensorStore, check_version,
    is_encoder_manifest, read_manifest_text,
};
use super::{
    BakeError, BakeReport, LayerSummary, Part, Progress, Scheme, TempDir, check_tokenizer,
    copy_side_files, dir_size, encode, error_stats, io_err, quantize, write_manifest,
    write_safetensors,
};
use crate::model::Checkpoint;
use crate::model::bert::BertSpec;

/// The one weights file of an encoder store.
const WEIGHTS_FILE: &str = "weights/encoder.safetensors";

/// Files copied from the source next to the weights.
const SIDE_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "modules.json",
    "config_sentence_transformers.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// `manifest.toml` of an embedding model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncoderManifest {
    pub format_version: u32,
    pub tool_version: String,
    pub encoder: BertSpec,
    /// The matrices' scheme (int8_asym, int8_sym or f16).
    pub weights: Scheme,
    pub source: SourceInfo,
    pub tensors: BTreeMap<String, TensorEntry>,
}

impl EncoderManifest {
    /// `dir/manifest.toml` of an embedding model, of the supported version.
    pub fn read(dir: &Path) -> Result<EncoderManifest, StoreError> {
        let (path, text) = read_manifest_text(dir)?;
        if !is_encoder_manifest(&text) {
            return Err(StoreError::Bad {
                path,
                message: "this is a chat model (a decoder), not an embedding model; name a BERT-family model (e.g. BAAI/bge-small-en-v1.5) in embed.model".into(),
            });
        }
        let m: EncoderManifest = toml::from_str(&text).map_err(|e| StoreError::Bad {
            path: path.clone(),
            message: format!("not a valid manifest: {e}"),
        })?;
        check_version(&path, m.format_version)?;
        Ok(m)
    }
}

/// A baked embedding model opened for reading.
pub struct BakedEncoder {
    pub dir: PathBuf,
    pub manifest: EncoderManifest,
    store: TensorStore,
}

impl BakedEncoder {
    pub fn open(dir: &Path) -> Result<BakedEncoder, StoreError> {
        let manifest = EncoderManifest::read(dir)?;
        let store = TensorStore::open(dir, &manifest.tensors)?;
        Ok(BakedEncoder {
            dir: dir.to_path_buf(),
            manifest,
            store,
        })
    }

    pub fn spec(&self) -> &BertSpec {
        &self.manifest.encoder
    }

    /// A tensor by its short name (without the checkpoint's prefix).
    pub fn tensor(&self, short: &str) -> Result<StoredTensor<'_>, StoreError> {
        self.store.tensor(&self.spec().name(short))
    }

    /// A tensor by its full name, dequantized as the IR computes it.
    pub fn f32(&self, name: &str) -> Result<Vec<f32>, StoreError> {
        self.store.f32(name)
    }
}

/// Bake the BERT model in `src` into `out` with every matrix in `weights`.
pub fn bake_encoder(
    src: &Path,
    out: &Path,
    weights: Scheme,
    force: bool,
    allow_non_finite: bool,
    progress: &mut dyn FnMut(Progress),
) -> Result<BakeReport, BakeError> {
    let t0 = Instant::now();
    if !matches!(weights, Scheme::Int8Asym | Scheme::Int8Sym | Scheme::F16) {
        return Err(BakeError::Options(format!(
            "--weights {}: an embedding model takes int8_asym (the default), int8_sym or f16",
            weights.name()
        )));
    }
    if out.exists() && !force {
        return Err(BakeError::Exists {
            path: out.to_path_buf(),
        });
    }
    let mut spec = BertSpec::from_hf_dir(src)?;
    let ckpt = Checkpoint::open(src)?;
    spec.detect_prefix(|n| ckpt.contains(n));
    let expected = spec.expected_tensors();
    ckpt.validate(&expected)?;
    check_tokenizer(src)?;

    let tmp = TempDir::beside(out)?;
    std::fs::create_dir_all(tmp.path.join("weights")).map_err(io_err(&tmp.path))?;
    progress(Progress::Start {
        tensors: expected.len(),
    });
    let mut parts: Vec<Part> = Vec::new();
    let mut entries = BTreeMap::new();
    let mut summary = LayerSummary {
        block: "encoder".into(),
        precision: BTreeMap::new(),
        mean_abs_error: 0.0,
        max_abs_error: 0.0,
    };
    let (mut bytes_before, mut err_sum, mut err_n) = (0u64, 0.0f64, 0usize);
    for (name, shape) in &expected {
        bytes_before += ckpt.raw(name)?.bytes.len() as u64;
        let w = ckpt.f32(name)?;
        let bad = w.iter().filter(|x| !x.is_finite()).count();
        if bad > 0 && !allow_non_finite {
            return Err(BakeError::NonFinite {
                source_dir: src.to_path_buf(),
                name: name.clone(),
                count: bad,
                total: w.len(),
            });
        }
        let scheme = if shape.len() == 2 {
            weights
        } else {
            Scheme::F32
        };
        let mut entry = TensorEntry {
            file: WEIGHTS_FILE.into(),
            scheme,
            shape: shape.clone(),
            group: None,
            mean_abs_error: None,
            max_abs_error: None,
        };
        let stored = match scheme {
            Scheme::F32 => {
                let bytes = w.iter().flat_map(|x| x.to_le_bytes()).collect();
                parts.push((name.clone(), Dtype::F32, shape.clone(), bytes));
                None
            }
            Scheme::F16 => {
                let h: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
                let bytes = h.iter().flat_map(|x| x.to_le_bytes()).collect();
                parts.push((name.clone(), Dtype::F16, shape.clone(), bytes));
                Some(h.iter().map(|x| x.to_f32()).collect::<Vec<f32>>())
            }
            s => {
                let m = quantize(&w, shape[0], shape[1], s, shape[1]);
                entry.group = Some(shape[1]);
                parts.extend(encode(name, &m));
                Some(m.dequantize())
            }
        };
        if let Some(d) = stored {
            let (mean, max) = error_stats(&d, &w);
            entry.mean_abs_error = Some(mean);
            entry.max_abs_error = Some(max);
            err_sum += mean * w.len() as f64;
            err_n += w.len();
            summary.max_abs_error = summary.max_abs_error.max(max);
            let short = name.trim_start_matches(&spec.prefix);
            let kind = short
                .trim_end_matches(".weight")
                .rsplit('.')
                .next()
                .unwrap_or(short);
            summary
                .precision
                .insert(kind.to_string(), scheme.name().to_string());
        }
        entries.insert(name.clone(), entry);
        progress(Progress::Tensor { name: name.clone() });
    }
    summary.mean_abs_error = err_sum / err_n.max(1) as f64;
    write_safetensors(&tmp.path.join(WEIGHTS_FILE), &parts)?;

    let source = copy_side_files(src, &tmp.path, SIDE_FILES)?;
    let manifest = EncoderManifest {
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        encoder: spec.clone(),
        weights,
        source,
        tensors: entries,
    };
    write_manifest(&tmp.path, &manifest)?;
    let bytes_after = dir_size(&tmp.path.join("weights"))?;
    tmp.swap_into(out)?;
    Ok(BakeReport {
        out: out.to_path_buf(),
        params: spec.num_params(),
        bytes_before,
        bytes_after,
        seconds: t0.elapsed().as_secs_f64(),
        layers: vec![summary],
        primary_share: 1.0,
    })
}
