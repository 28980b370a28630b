//! Shard A as the executive runs it: compiled variants, one fixed-capacity
//! KV cache per stream, and hidden states written straight into the
//! caller's buffer (a shared-memory slot).
//!
//! Per call only the ids, positions and mask are copied in, and only the T
//! new KV entries per layer are copied out of `present` into the stream's
//! cache; the cache itself is handed to OpenVINO as it is:
//! - resident mode (CPU/GPU): position-major `[capacity, kv_heads, head_dim]`
//!   per layer, of which the filled prefix rounded up to [`ShardAOptions::span`]
//!   slots is wrapped as `[1, P, kv_heads, head_dim]`, so attention reads
//!   what is filled, not the capacity;
//! - static mode (NPU): OpenVINO tensors `[1, kv_heads, capacity, head_dim]`.

use std::time::{Duration, Instant};

use openvino::{Core, ElementType, Shape, Tensor};

use super::hostmem::f32_tensor_over;
use super::kv::static_mask;
use super::runtime::RuntimeError;
use super::session::{DeviceProps, ResidentCall, ShardASession};
use crate::bake::ir::{IrOptions, ShapeMode, build_shard_a};
use crate::bake::store::BakedModel;
use crate::model::ModelSpec;

#[derive(Debug, thiserror::Error)]
pub enum ShardAError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Ir(#[from] crate::bake::ir::IrError),
    #[error(
        "stream is full: {len} + {new} tokens exceed shard_a.kv_capacity = {capacity}; raise it or start a new conversation"
    )]
    CacheFull {
        len: usize,
        new: usize,
        capacity: usize,
    },
    #[error("{n} tokens in one call; at most {max} (shard_a.prefill_chunk)")]
    TooManyTokens { n: usize, max: usize },
    #[error("output buffer of {got} bytes; {need} needed")]
    Output { got: usize, need: usize },
    #[error("token id {id} is outside the vocabulary ({vocab})")]
    BadToken { id: u32, vocab: usize },
}

enum Variants {
    /// One compiled model with a dynamic token count.
    Resident(Box<ShardASession>),
    /// Static shapes: a prefill variant of `chunk` tokens and a one-token decode variant.
    Static {
        prefill: Box<ShardASession>,
        decode: Box<ShardASession>,
    },
}

/// How shard A is compiled.
#[derive(Debug, Clone)]
pub struct ShardAOptions {
    pub layers: usize,
    pub device: String,
    pub props: DeviceProps,
    pub static_shapes: bool,
    /// Most tokens per call (the static prefill variant's chunk).
    pub chunk: usize,
    /// KV capacity per stream, tokens.
    pub capacity: usize,
    /// Resident mode hands over the filled cache rounded up to this many
    /// slots (fewer distinct shapes, so fewer kernel re-selections).
    pub span: usize,
}

/// Default [`ShardAOptions::span`].
pub const RESIDENT_SPAN: usize = 128;

pub struct ShardA {
    pub spec: ModelSpec,
    pub opts: ShardAOptions,
    variants: Variants,
    pub compile_time: Duration,
}

enum Cache {
    /// Per layer (keys, values), position-major `[capacity, kv_heads, head_dim]`.
    Resident(Vec<(Vec<f32>, Vec<f32>)>),
    /// Per layer (keys, values) `[1, kv_heads, capacity, head_dim]`.
    Static(Vec<(Tensor, Tensor)>),
}

/// One stream's KV cache for shard A's layers.
pub struct StreamKv {
    cache: Cache,
    len: usize,
}

impl StreamKv {
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Start over; stale entries are masked, never read.
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

/// The bytes of an f32 buffer (every byte pattern is a valid u8).
fn f32_bytes(v: &mut [f32]) -> &mut [u8] {
    // SAFETY: same memory, same lifetime, u8 has no alignment or validity
    // requirements; the length is in bytes.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), v.len() * 4) }
}

fn ov(context: &'static str) -> impl FnOnce(openvino::InferenceError) -> RuntimeError {
    move |e| RuntimeError::Call(format!("{context}: {e}"))
}

impl ShardA {
    /// Build the IR for layers `[0, opts.layers)` and compile its variants.
    pub fn compile(
        core: &mut Core,
        model: &BakedModel,
        opts: &ShardAOptions,
    ) -> Result<ShardA, ShardAError> {
        let spec = model.spec().clone();
        let compile = |core: &mut Core, mode: ShapeMode| -> Result<ShardASession, ShardAError> {
            let ir = build_shard_a(
                model,
                &IrOptions {
                    layers: opts.layers,
                    mode,
                },
            )?;
            Ok(ShardASession::compile(
                core,
                &ir,
                &spec,
                &opts.device,
                &opts.props,
            )?)
        };
        let t0 = Instant::now();
        let variants = if opts.static_shapes {
            Variants::Static {
                prefill: Box::new(compile(
                    core,
                    ShapeMode::Static {
                        chunk: opts.chunk,
                        capacity: opts.capacity,
                    },
                )?),
                decode: Box::new(compile(
                    core,
                    ShapeMode::Static {
                        chunk: 1,
                        capacity: opts.capacity,
                    },
                )?),
            }
        } else {
            Variants::Resident(Box::new(compile(
                core,
                ShapeMode::Resident {
                    capacity: opts.capacity,
                },
            )?))
        };
        Ok(ShardA {
            spec,
            opts: opts.clone(),
            variants,
            compile_time: t0.elapsed(),
        })
    }

    /// A new, empty stream (its cache is allocated here, once).
    pub fn new_stream(&self) -> Result<StreamKv, ShardAError> {
        let s = &self.spec;
        let cache = match self.variants {
            Variants::Resident(_) => {
                let n = self.opts.capacity * s.num_kv_heads * s.head_dim;
                Cache::Resident(vec![(vec![0.0; n], vec![0.0; n]); self.opts.layers])
            }
            Variants::Static { .. } => {
                let dims = [
                    1,
                    s.num_kv_heads as i64,
                    self.opts.capacity as i64,
                    s.head_dim as i64,
                ];
                let shape = Shape::new(&dims).map_err(ov("cache shape"))?;
                let mut kv = Vec::with_capacity(self.opts.layers);
                for _ in 0..self.opts.layers {
                    kv.push((
                        Tensor::new(ElementType::F32, &shape).map_err(ov("cache tensor"))?,
                        Tensor::new(ElementType::F32, &shape).map_err(ov("cache tensor"))?,
                    ));
                }
                Cache::Static(kv)
            }
        };
        Ok(StreamKv { cache, len: 0 })
    }

    /// Bytes the output buffer needs for a call of `n` tokens (static
    /// variants write their padded rows too).
    pub fn out_bytes(&self, n: usize) -> usize {
        let rows = match self.variants {
            Variants::Resident(_) => n,
            Variants::Static { .. } if n <= 1 => 1,
            Variants::Static { .. } => self.opts.chunk,
        };
        rows * self.spec.hidden_size * 4
    }

    /// Most bytes any call writes.
    pub fn max_out_bytes(&self) -> usize {
        self.out_bytes(self.opts.chunk)
    }

    /// Run `ids` (the stream's next tokens) and write their hidden states
    /// `[ids.len(), hidden]` f32 to the start of `out`. Returns the time
    /// spent in OpenVINO. OpenVINO writes `out` in place (see
    /// [`f32_tensor_over`]); the borrow keeps everyone else off it meanwhile.
    pub fn run_into(
        &mut self,
        stream: &mut StreamKv,
        ids: &[u32],
        out: &mut [u8],
    ) -> Result<Duration, ShardAError> {
        let n = ids.len();
        let (cap, chunk, h) = (self.opts.capacity, self.opts.chunk, self.spec.hidden_size);
        if n == 0 || n > chunk {
            return Err(ShardAError::TooManyTokens { n, max: chunk });
        }
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= self.spec.vocab_size) {
            return Err(ShardAError::BadToken {
                id,
                vocab: self.spec.vocab_size,
            });
        }
        if stream.len + n > cap {
            return Err(ShardAError::CacheFull {
                len: stream.len,
                new: n,
                capacity: cap,
            });
        }
        let need = self.out_bytes(n);
        if out.len() < need {
            return Err(ShardAError::Output {
                got: out.len(),
                need,
            });
        }
        let (session, rows) = match &mut self.variants {
            Variants::Resident(s) => (&mut **s, n),
            Variants::Static { decode, .. } if n == 1 => (&mut **decode, 1),
            Variants::Static { prefill, .. } => (&mut **prefill, chunk),
        };
        let filled = stream.len;
        let mut ids64 = vec![0i64; rows];
        for (d, &s) in ids64.iter_mut().zip(ids) {
            *d = s as i64;
        }
        let pos: Vec<i64> = (filled..filled + rows).map(|i| i as i64).collect();
        let (nkv, hd) = (self.spec.num_kv_heads, self.spec.head_dim);
        let window = self.spec.sliding_window;
        // SAFETY (all tensors over our memory below): `out` is exclusively
        // ours for this call; the stream's buffers are neither moved nor
        // resized while they exist; every input and the output are replaced
        // on the request before it runs again.
        let hidden =
            unsafe { f32_tensor_over(&mut out[..rows * h * 4], &[1, rows as i64, h as i64])? };
        let elapsed = match &mut stream.cache {
            Cache::Static(kv) => {
                let mask = static_mask(cap, filled, rows, n, window);
                session.run_resident(
                    &ResidentCall {
                        input_ids: &ids64,
                        position_ids: &pos,
                        attention_mask: &mask,
                        past_len: cap,
                    },
                    kv,
                    &hidden,
                )?
            }
            Cache::Resident(bufs) => {
                let span = self.opts.span.max(1);
                let p = filled.max(1).div_ceil(span).saturating_mul(span).min(cap);
                let mask = static_mask(p, filled, rows, n, window);
                let dims = [1, p as i64, nkv as i64, hd as i64];
                let mut past = Vec::with_capacity(bufs.len());
                for (k, v) in bufs.iter_mut() {
                    let kt = unsafe { f32_tensor_over(f32_bytes(&mut k[..p * nkv * hd]), &dims)? };
                    let vt = unsafe { f32_tensor_over(f32_bytes(&mut v[..p * nkv * hd]), &dims)? };
                    past.push((kt, vt));
                }
                session.run_resident(
                    &ResidentCall {
                        input_ids: &ids64,
                        position_ids: &pos,
                        attention_mask: &mask,
                        past_len: p,
                    },
                    &past,
                    &hidden,
                )?
            }
        };
        // Append the n new entries of every layer to the stream's cache.
        for l in 0..self.opts.layers {
            let (nk, nv) = session.present(l)?;
            let nk = nk.get_data::<f32>().map_err(ov("present data"))?;
            let nv = nv.get_data::<f32>().map_err(ov("present data"))?;
            match &mut stream.cache {
                Cache::Static(kv) => {
                    let (k, v) = &mut kv[l];
                    for (dst, src) in [(k, nk), (v, nv)] {
                        let d = dst.get_data_mut::<f32>().map_err(ov("cache data"))?;
                        for head in 0..nkv {
                            let from = head * rows * hd;
                            let to = (head * cap + filled) * hd;
                            d[to..to + n * hd].copy_from_slice(&src[from..from + n * hd]);
                        }
                    }
                }
                Cache::Resident(bufs) => {
                    let (k, v) = &mut bufs[l];
                    for (dst, src) in [(k, nk), (v, nv)] {
                        for t in 0..n {
                            for head in 0..nkv {
                                let from = (head * rows + t) * hd;
                                let to = ((filled + t) * nkv + head) * hd;
                                dst[to..to + hd].copy_from_slice(&src[from..from + hd]);
                            }
                        }
                    }
                }
            }
        }
        stream.len += n;
        Ok(elapsed)
    }

    /// Where the last call's hidden states were written (for checking that
    /// OpenVINO wrote into the caller's memory rather than its own).
    pub fn last_output_ptr(&self, n: usize) -> Result<*const u8, ShardAError> {
        let s = match &self.variants {
            Variants::Resident(s) => &**s,
            Variants::Static { decode, .. } if n == 1 => &**decode,
            Variants::Static { prefill, .. } => &**prefill,
        };
        let t = s.hidden_tensor()?;
        Ok(t.get_raw_data().map_err(ov("hidden data"))?.as_ptr())
    }
}
