//! `hybrid-tui bake`: data-free weight compression and the baked store.
//!
//! Before anything is written the bake loads `tokenizer.json` with the
//! `tokenizers` crate and renders the chat template on a one-message
//! conversation, so a file that would only fail at chat time fails the bake
//! with its path. Each weight is scanned for NaN/±inf as it is converted; a
//! tensor holding any is refused ([`BakeError::NonFinite`], name and count)
//! unless `--allow-non-finite`.
//!
//! Bad input never leaves partial output: the bake writes
//! `.<out>.partial-<pid>/`, removed by a drop guard on any error, and renames
//! it into place at the end (with `--force` the old directory is removed only
//! after the new one is complete). The store's layout is in [`store`], the
//! quantization in [`quant`] and `plan.rs`, shard A's IR in [`ir`].

pub mod encoder;
pub mod ir;
mod plan;
pub mod quant;
pub mod store;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::model::{Checkpoint, ModelError, ModelSpec, template};
use plan::plan;
use quant::{QuantMatrix, Scheme, int8_asym_error, pack_u4, quantize};
use store::{
    FORMAT_VERSION, MANIFEST, Manifest, QuantSummary, SourceInfo, TensorEntry, TokenInfo, file_for,
};

/// Backup precision for layers the ratio leaves out, and for embeddings and lm_head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    Int8Asym,
    Int8Sym,
    None,
}

impl Backup {
    pub fn parse(s: &str) -> Option<Backup> {
        match s {
            "int8_asym" => Some(Backup::Int8Asym),
            "int8_sym" => Some(Backup::Int8Sym),
            "none" => Some(Backup::None),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Backup::Int8Asym => "int8_asym",
            Backup::Int8Sym => "int8_sym",
            Backup::None => "none",
        }
    }
    /// Scheme used for a weight kept at backup precision.
    fn scheme(self) -> Scheme {
        match self {
            Backup::Int8Asym => Scheme::Int8Asym,
            Backup::Int8Sym => Scheme::Int8Sym,
            Backup::None => Scheme::F16,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BakeOptions {
    /// Primary scheme: int4_sym, int4_asym, int8_asym, int8_sym or f16.
    pub weights: Scheme,
    /// Group size of 4-bit schemes; -1 means per channel.
    pub group_size: i64,
    /// Share of the ratio-defining weights in the primary precision.
    pub ratio: f64,
    pub backup: Backup,
    /// Embeddings and lm_head in the primary precision too.
    pub all_layers: bool,
    /// Replace an existing output directory.
    pub force: bool,
    /// Bake weights that hold NaN or infinite values (refused otherwise).
    pub allow_non_finite: bool,
}

impl Default for BakeOptions {
    fn default() -> Self {
        BakeOptions {
            weights: Scheme::Int4Sym,
            group_size: 128,
            ratio: 1.0,
            backup: Backup::Int8Asym,
            all_layers: false,
            force: false,
            allow_non_finite: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BakeError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Options(String),
    #[error("{path} already exists; pass --force to replace it, or choose another --out")]
    Exists { path: PathBuf },
    #[error(
        "{name}: its input size {cols} is not a multiple of --group-size {group}; use --group-size -1 (per channel) or a group size that divides it"
    )]
    GroupSize {
        name: String,
        cols: usize,
        group: usize,
    },
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error(
        "{name} in {source_dir} holds {count} NaN or infinite values of {total}: the checkpoint is broken, and a model baked from it would emit garbage. Get an intact copy, or pass --allow-non-finite to bake it anyway"
    )]
    NonFinite {
        source_dir: PathBuf,
        name: String,
        count: usize,
        total: usize,
    },
}

/// Progress of a bake, for a progress bar.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Number of weight tensors to process.
    Start { tensors: usize },
    /// One tensor done.
    Tensor { name: String },
}

/// Per-layer line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    pub block: String,
    /// Tensor short name → scheme name.
    pub precision: BTreeMap<String, String>,
    pub mean_abs_error: f64,
    pub max_abs_error: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct BakeReport {
    pub out: PathBuf,
    pub params: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub seconds: f64,
    pub layers: Vec<LayerSummary>,
    /// Weights in the primary precision / ratio-defining weights, by count of elements.
    pub primary_share: f64,
}

/// A tensor name with its shape.
type NamedShape = (String, Vec<usize>);

/// Bytes to write for one tensor: (safetensors name, dtype, shape, bytes).
type Part = (String, Dtype, Vec<usize>, Vec<u8>);

fn encode(name: &str, m: &QuantMatrix) -> Vec<Part> {
    let groups = m.rows * m.groups_per_row();
    let mut parts = Vec::new();
    if m.scheme.bits() == 4 {
        let packed = pack_u4(&m.q);
        let len = packed.len();
        parts.push((format!("{name}.q"), Dtype::U8, vec![len], packed));
    } else {
        let dtype = if m.scheme.is_asym() {
            Dtype::U8
        } else {
            Dtype::I8
        };
        parts.push((
            format!("{name}.q"),
            dtype,
            vec![m.rows, m.cols],
            m.q.clone(),
        ));
    }
    let scales: Vec<u8> = m
        .scales_f16()
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    parts.push((
        format!("{name}.scale"),
        Dtype::F16,
        vec![m.rows, m.groups_per_row()],
        scales,
    ));
    if let Some(z) = &m.zero_points {
        let bytes = if m.scheme.bits() == 4 {
            pack_u4(z)
        } else {
            z.clone()
        };
        let len = bytes.len();
        debug_assert!(len == groups || len == groups.div_ceil(2));
        parts.push((format!("{name}.zp"), Dtype::U8, vec![len], bytes));
    }
    parts
}

fn error_stats(stored: &[f32], source: &[f32]) -> (f64, f64) {
    let mut sum = 0.0f64;
    let mut max = 0.0f64;
    for (a, b) in stored.iter().zip(source) {
        let d = (*a as f64 - *b as f64).abs();
        sum += d;
        max = max.max(d);
    }
    (sum / source.len().max(1) as f64, max)
}

/// Removes a half-written output directory unless disarmed.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl TempDir {
    /// `.<out>.partial-<pid>/` beside `out`, empty.
    fn beside(out: &Path) -> Result<TempDir, BakeError> {
        let parent = out
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(io_err(parent))?;
        let leaf = out
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "baked".into());
        let tmp = TempDir {
            path: parent.join(format!(".{leaf}.partial-{}", std::process::id())),
            keep: false,
        };
        let _ = std::fs::remove_dir_all(&tmp.path);
        Ok(tmp)
    }

    /// Rename the finished directory to `out`: an existing output (with
    /// --force) is removed only once the new one is complete.
    fn swap_into(mut self, out: &Path) -> Result<(), BakeError> {
        if out.exists() {
            let old = self.path.with_file_name(format!(
                ".{}.old-{}",
                out.file_name().unwrap_or_default().to_string_lossy(),
                std::process::id()
            ));
            std::fs::rename(out, &old).map_err(io_err(out))?;
            std::fs::rename(&self.path, out).map_err(io_err(out))?;
            let _ = std::fs::remove_dir_all(&old);
        } else {
            std::fs::rename(&self.path, out).map_err(io_err(out))?;
        }
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> BakeError + '_ {
    move |source| BakeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Files copied from the source next to the weights.
const SIDE_FILES: &[&str] = &[
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
];

fn sha256_file(path: &Path) -> Result<String, BakeError> {
    let mut f = std::fs::File::open(path).map_err(io_err(path))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(io_err(path))?;
    Ok(format!("{:x}", h.finalize()))
}

/// Bake `src` (a Hugging Face model directory) into `out`.
pub fn bake(
    src: &Path,
    out: &Path,
    opts: &BakeOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<BakeReport, BakeError> {
    let t0 = Instant::now();
    if !(0.0..=1.0).contains(&opts.ratio) {
        return Err(BakeError::Options(format!(
            "--ratio {} must be between 0 and 1",
            opts.ratio
        )));
    }
    if opts.group_size == 0 || opts.group_size < -1 {
        return Err(BakeError::Options(format!(
            "--group-size {} must be a positive number or -1 (per channel)",
            opts.group_size
        )));
    }
    if crate::model::bert::is_bert_dir(src) {
        return encoder::bake_encoder(
            src,
            out,
            opts.weights,
            opts.force,
            opts.allow_non_finite,
            progress,
        );
    }
    if out.exists() && !opts.force {
        return Err(BakeError::Exists {
            path: out.to_path_buf(),
        });
    }
    let spec = ModelSpec::from_hf_dir(src)?;
    let ckpt = Checkpoint::open(src)?;
    let expected = spec.expected_tensors();
    ckpt.validate(&expected)?;
    let tpl = template::find_chat_template(src)?;
    let tokens = template::token_info(src, &spec)?;
    check_tokenizer(src)?;

    let plan = plan(&spec, &ckpt, opts)?;

    // Write aside, then rename.
    let tmp = TempDir::beside(out)?;
    std::fs::create_dir_all(tmp.path.join("weights")).map_err(io_err(&tmp.path))?;

    // Group tensors by output file, in model order.
    let mut files: Vec<(String, Vec<NamedShape>)> = Vec::new();
    for (name, shape) in &expected {
        let f = file_for(name);
        match files.iter_mut().find(|(n, _)| *n == f) {
            Some((_, v)) => v.push((name.clone(), shape.clone())),
            None => files.push((f, vec![(name.clone(), shape.clone())])),
        }
    }
    progress(Progress::Start {
        tensors: expected.len(),
    });

    let mut entries = BTreeMap::new();
    let mut layers = Vec::new();
    let mut bytes_before = 0u64;
    let mut primary_elems = 0usize;
    let mut defining_elems = 0usize;
    for (file, tensors) in &files {
        let mut parts: Vec<Part> = Vec::new();
        let mut summary = LayerSummary {
            block: file
                .trim_start_matches("weights/")
                .trim_end_matches(".safetensors")
                .to_string(),
            precision: BTreeMap::new(),
            mean_abs_error: 0.0,
            max_abs_error: 0.0,
        };
        let mut err_sum = 0.0;
        let mut err_n = 0usize;
        for (name, shape) in tensors {
            bytes_before += ckpt.raw(name)?.bytes.len() as u64;
            let w = ckpt.f32(name)?;
            let bad = w.iter().filter(|x| !x.is_finite()).count();
            if bad > 0 && !opts.allow_non_finite {
                return Err(BakeError::NonFinite {
                    source_dir: src.to_path_buf(),
                    name: name.clone(),
                    count: bad,
                    total: w.len(),
                });
            }
            let scheme = plan.get(name).copied().unwrap_or(Scheme::F32);
            let mut entry = TensorEntry {
                file: file.clone(),
                scheme,
                shape: shape.clone(),
                group: None,
                mean_abs_error: None,
                max_abs_error: None,
            };
            let stored: Option<Vec<f32>> = match scheme {
                Scheme::F32 => {
                    parts.push((
                        name.clone(),
                        Dtype::F32,
                        shape.clone(),
                        w.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ));
                    None
                }
                Scheme::F16 => {
                    let h: Vec<f16> = w.iter().map(|&x| f16::from_f32(x)).collect();
                    parts.push((
                        name.clone(),
                        Dtype::F16,
                        shape.clone(),
                        h.iter().flat_map(|x| x.to_le_bytes()).collect(),
                    ));
                    Some(h.iter().map(|x| x.to_f32()).collect())
                }
                s => {
                    let (rows, cols) = (shape[0], shape[1]);
                    let group = if s.bits() == 4 && opts.group_size > 0 {
                        opts.group_size as usize
                    } else {
                        cols
                    };
                    if cols % group != 0 {
                        return Err(BakeError::GroupSize {
                            name: name.clone(),
                            cols,
                            group,
                        });
                    }
                    let m = quantize(&w, rows, cols, s, group);
                    entry.group = Some(group);
                    let d = m.dequantize();
                    parts.extend(encode(name, &m));
                    Some(d)
                }
            };
            if shape.len() == 2 {
                let n = shape[0] * shape[1];
                if scheme == opts.weights {
                    primary_elems += n;
                }
                if name.starts_with("model.layers.") || opts.all_layers {
                    defining_elems += n;
                }
            }
            if let Some(d) = stored {
                let (mean, max) = error_stats(&d, &w);
                entry.mean_abs_error = Some(mean);
                entry.max_abs_error = Some(max);
                err_sum += mean * w.len() as f64;
                err_n += w.len();
                summary.max_abs_error = summary.max_abs_error.max(max);
            }
            let short = name
                .rsplit_once(".weight")
                .map(|(a, _)| a)
                .unwrap_or(name)
                .rsplit('.')
                .next()
                .unwrap_or(name)
                .to_string();
            if shape.len() == 2 {
                summary.precision.insert(short, scheme.name().to_string());
            }
            entries.insert(name.clone(), entry);
            progress(Progress::Tensor { name: name.clone() });
        }
        summary.mean_abs_error = if err_n > 0 {
            err_sum / err_n as f64
        } else {
            0.0
        };
        layers.push(summary);
        write_safetensors(&tmp.path.join(file), &parts)?;
    }

    // Side files: tokenizer, template, configs.
    let source = copy_side_files(src, &tmp.path, SIDE_FILES)?;
    let template_file = match &tpl {
        Some(t) => {
            let p = tmp.path.join("chat_template.jinja");
            std::fs::write(&p, t).map_err(io_err(&p))?;
            Some("chat_template.jinja".to_string())
        }
        None => None,
    };

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        default_split: spec.default_split(),
        model: spec.clone(),
        quantization: QuantSummary {
            weights: opts.weights,
            group_size: opts.group_size,
            ratio: opts.ratio,
            backup: opts.backup.name().to_string(),
            all_layers: opts.all_layers,
        },
        tokens: TokenInfo {
            bos_token_id: tokens.0,
            eos_token_ids: tokens.1,
            chat_template_file: template_file,
        },
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
        layers,
        primary_share: if defining_elems > 0 {
            primary_elems as f64 / defining_elems as f64
        } else {
            0.0
        },
    })
}

/// `src/tokenizer.json` loaded, so a broken tokenizer fails the bake with
/// its path, not a later chat or index.
fn check_tokenizer(src: &Path) -> Result<(), BakeError> {
    let tok_path = src.join("tokenizer.json");
    if !tok_path.exists() {
        return Err(ModelError::BadFile {
            path: tok_path,
            message: "missing: the tokenizer is required to bake a model".into(),
        }
        .into());
    }
    tokenizers::Tokenizer::from_file(&tok_path).map_err(|e| ModelError::BadFile {
        path: tok_path.clone(),
        message: format!(
            "not a tokenizer the tokenizers library can load ({e}); copy the model's own tokenizer.json here"
        ),
    })?;
    Ok(())
}

/// Copy the source's `files` that exist (paths relative to `src`) into
/// `dir`; the source's description with the sha256 of each and of every
/// checkpoint file.
fn copy_side_files(src: &Path, dir: &Path, files: &[&str]) -> Result<SourceInfo, BakeError> {
    let mut sha = BTreeMap::new();
    for f in files {
        let p = src.join(f);
        if p.exists() {
            let to = dir.join(f);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io_err(parent))?;
            }
            std::fs::copy(&p, &to).map_err(io_err(&p))?;
            sha.insert(f.to_string(), sha256_file(&p)?);
        }
    }
    for name in ckpt_files(src)? {
        sha.insert(name.clone(), sha256_file(&src.join(&name))?);
    }
    Ok(SourceInfo {
        path: src.display().to_string(),
        sha256: sha,
    })
}

/// `dir/manifest.toml`, synced.
fn write_manifest(dir: &Path, manifest: &impl Serialize) -> Result<(), BakeError> {
    let mpath = dir.join(MANIFEST);
    let text = toml::to_string_pretty(manifest).map_err(|e| BakeError::Write {
        path: mpath.clone(),
        message: e.to_string(),
    })?;
    let mut f = std::fs::File::create(&mpath).map_err(io_err(&mpath))?;
    f.write_all(text.as_bytes()).map_err(io_err(&mpath))?;
    f.sync_all().map_err(io_err(&mpath))?;
    Ok(())
}

fn ckpt_files(src: &Path) -> Result<Vec<String>, BakeError> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(src).map_err(io_err(src))? {
        let e = e.map_err(io_err(src))?;
        let n = e.file_name().to_string_lossy().into_owned();
        if n.ends_with(".safetensors") || n == "model.safetensors.index.json" {
            v.push(n);
        }
    }
    v.sort();
    Ok(v)
}

fn dir_size(dir: &Path) -> Result<u64, BakeError> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        total += e.metadata().map_err(io_err(&e.path()))?.len();
    }
    Ok(total)
}

fn write_safetensors(path: &Path, parts: &[Part]) -> Result<(), BakeError> {
    let views: Vec<(String, TensorView<'_>)> = parts
        .iter()
        .map(|(n, dt, shape, bytes)| {
            TensorView::new(*dt, shape.clone(), bytes)
                .map(|v| (n.clone(), v))
                .map_err(|e| BakeError::Write {
                    path: path.to_path_buf(),
                    message: format!("{n}: {e}"),
                })
        })
        .collect::<Result<_, _>>()?;
    let bytes = safetensors::serialize(views, None).map_err(|e| BakeError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut f = std::fs::File::create(path).map_err(io_err(path))?;
    f.write_all(&bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))?;
    Ok(())
}
