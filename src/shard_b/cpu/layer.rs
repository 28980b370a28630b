//! One decoder layer of the CPU plan: the attention block (norm, the
//! stacked q/k/v projection, RoPE and the cache write, attention, o) and
//! the MLP block (norm, stacked gate/up, SiLU·up, down), each adding into
//! the residual rows, and what a step's layers share ([`StepContext`]).

use super::attention::{self, CacheView, Heads};
use super::math;
use super::{CpuSegment, Part, Proj, Scratch, Timer};
use crate::model::ModelSpec;
use crate::shard_b::packed::{Epilogue, Kernel, sized};

pub(super) struct Layer {
    pub(super) in_norm: Vec<f32>,
    /// q, k, v stacked.
    pub(super) qkv: Proj,
    /// q, k, v biases (models with them).
    pub(super) qkv_bias: Option<Vec<f32>>,
    pub(super) o: Proj,
    pub(super) post_norm: Vec<f32>,
    /// gate, up stacked.
    pub(super) gate_up: Proj,
    pub(super) down: Proj,
}

/// What every layer of a step shares: the shapes, each row's RoPE
/// rotation, the kernel.
pub(super) struct StepContext {
    rows: usize,
    hidden: usize,
    q_dim: usize,
    kv_dim: usize,
    pub(super) eps: f32,
    heads: Heads,
    /// cos and sin of each row's position, `[rows, head_dim / 2]`.
    cos: Vec<f32>,
    sin: Vec<f32>,
    kernel: Kernel,
}

impl StepContext {
    pub fn new(
        spec: &ModelSpec,
        inv_freq: &[f32],
        segments: &[CpuSegment<'_>],
        kernel: Kernel,
    ) -> StepContext {
        let rows: usize = segments.iter().map(|s| s.rows).sum();
        let half = inv_freq.len();
        let (mut cos, mut sin) = (
            Vec::with_capacity(rows * half),
            Vec::with_capacity(rows * half),
        );
        for s in segments {
            for p in s.pos..s.pos + s.rows {
                for f in inv_freq {
                    let a = p as f32 * f;
                    cos.push(a.cos());
                    sin.push(a.sin());
                }
            }
        }
        StepContext {
            rows,
            hidden: spec.hidden_size,
            q_dim: spec.q_dim(),
            kv_dim: spec.kv_dim(),
            eps: spec.rms_norm_eps as f32,
            heads: Heads {
                heads: spec.num_heads,
                kv_heads: spec.num_kv_heads,
                head_dim: spec.head_dim,
                sliding_window: spec.sliding_window,
            },
            cos,
            sin,
            kernel,
        }
    }
}

impl Layer {
    /// `x += o(attention(rope(qkv(norm(x)))))`, each stream's new keys
    /// and values written into its cache for layer `li` first.
    pub fn attention(
        &self,
        li: usize,
        ctx: &StepContext,
        x: &mut [f32],
        segments: &mut [CpuSegment<'_>],
        sc: &mut Scratch,
        timer: &mut Timer,
    ) {
        let _span = tracing::trace_span!("attention").entered();
        let (rows, q_dim, kv_dim) = (ctx.rows, ctx.q_dim, ctx.kv_dim);
        let hd = ctx.heads.head_dim;
        let half = hd / 2;
        let n = sized(&mut sc.norm, rows * ctx.hidden);
        rms_norm(x, &self.in_norm, ctx.eps, n);
        timer.lap(Part::Norm);
        let store = Epilogue::Store(&mut sc.qkv);
        self.qkv.matmul(n, rows, ctx.kernel, &mut sc.tiles, store);
        let qkv = &mut sc.qkv;
        if let Some(b) = &self.qkv_bias {
            for r in qkv.chunks_exact_mut(b.len()) {
                r.iter_mut().zip(b).for_each(|(y, b)| *y += b);
            }
        }
        timer.lap(Part::Qkv);
        // RoPE on q and k; k and v into each stream's cache.
        let width = q_dim + 2 * kv_dim;
        let mut row = 0;
        for s in segments.iter_mut() {
            let cap = s.kv.capacity;
            for i in 0..s.rows {
                let r = &mut qkv[(row + i) * width..(row + i + 1) * width];
                let (c, sn) = (
                    &ctx.cos[(row + i) * half..(row + i + 1) * half],
                    &ctx.sin[(row + i) * half..(row + i + 1) * half],
                );
                for head in r[..q_dim + kv_dim].chunks_exact_mut(hd) {
                    rope(head, c, sn);
                }
                let p = s.pos + i;
                for g in 0..ctx.heads.kv_heads {
                    let at = (g * cap + p) * hd;
                    s.kv.keys[li][at..at + hd]
                        .copy_from_slice(&r[q_dim + g * hd..q_dim + (g + 1) * hd]);
                    s.kv.values[li][at..at + hd].copy_from_slice(
                        &r[q_dim + kv_dim + g * hd..q_dim + kv_dim + (g + 1) * hd],
                    );
                }
            }
            row += s.rows;
        }
        timer.lap(Part::RopeCache);
        let attn = sized(&mut sc.attn, rows * q_dim);
        let mut row = 0;
        for s in segments.iter() {
            let q = &mut sc.q;
            q.clear();
            for r in qkv[row * width..(row + s.rows) * width].chunks_exact(width) {
                q.extend_from_slice(&r[..q_dim]);
            }
            let cache = CacheView {
                keys: &s.kv.keys[li],
                values: &s.kv.values[li],
                capacity: s.kv.capacity,
            };
            let out = &mut attn[row * q_dim..(row + s.rows) * q_dim];
            attention::attend(q, &cache, s.pos, ctx.heads, out);
            row += s.rows;
        }
        timer.lap(Part::Attention);
        let add = Epilogue::Add(x);
        self.o.matmul(attn, rows, ctx.kernel, &mut sc.tiles, add);
        timer.lap(Part::O);
    }

    /// `x += down(silu(gate(n)) · up(n))`, `n = norm(x)`.
    pub fn mlp(&self, ctx: &StepContext, x: &mut [f32], sc: &mut Scratch, timer: &mut Timer) {
        let _span = tracing::trace_span!("mlp").entered();
        let rows = ctx.rows;
        let n = sized(&mut sc.norm, rows * ctx.hidden);
        rms_norm(x, &self.post_norm, ctx.eps, n);
        timer.lap(Part::Norm);
        let gated = Epilogue::Gated {
            out: &mut sc.act,
            gate: math::silu_mul,
        };
        self.gate_up
            .matmul(n, rows, ctx.kernel, &mut sc.tiles, gated);
        timer.lap(Part::GateUp);
        let add = Epilogue::Add(x);
        self.down
            .matmul(&sc.act, rows, ctx.kernel, &mut sc.tiles, add);
        timer.lap(Part::Down);
    }
}

/// `out = x / rms(x) · w` per row of `x`.
pub(super) fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ms = math::dot(xr, xr) / h as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, v), w) in o.iter_mut().zip(xr).zip(w) {
            *o = v * inv * w;
        }
    }
}

/// Hugging Face's rotate_half RoPE on one head, in place.
fn rope(head: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = head.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x2 * cos[i] + x1 * sin[i];
    }
}
