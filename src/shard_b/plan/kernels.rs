//! The decode plan's own kernels (the packed projections are
//! `shard_b::cube`'s). Every value that changes from step to step — a row's
//! position, the sampled rows — is read from a device buffer, never passed
//! as a scalar, so a captured step replays correctly: a scalar is baked
//! into the recording.
//!
//! Limits as `shard_b::cube`'s: 32-bit scalar loads and stores, f32
//! arithmetic, ≤ 256 units and ≤ [`MAX_SHARED_BYTES`] of shared memory per
//! cube (the plan refuses a model whose attention would need more).

use cubecl::prelude::*;

use super::super::cube::kernels::{quantize_block, spread};

/// Units per cube of the row-wise kernels (norms, RoPE, argmax).
pub const ROW_UNITS: u32 = 256;
/// Units per cube of the attention kernel (one cube per KV head, row and
/// key chunk), and keys per block of its walk.
pub const ATTN_UNITS: u32 = 32;
/// Chunks whose partial results the attention combine loads at once.
const COMBINE_AHEAD: u32 = 4;
/// Shared memory of one attention cube for `rep` query heads per KV head
/// of `hd` dimensions: the queries, a block's scores and probabilities.
pub const fn attention_shared_bytes(rep: usize, hd: usize) -> usize {
    (rep * hd + 2 * rep * ATTN_UNITS as usize) * 4
}
/// Most shared memory a plan kernel takes (WebGPU's baseline is 16 KiB).
pub const MAX_SHARED_BYTES: usize = 8 << 10;
/// A score no real one reaches (a finite stand-in for −∞: `exp` of a
/// difference of two of them is 1, not NaN).
const NO_SCORE: f32 = -1.0e30;

/// Sum of `v` over the cube's `ROW_UNITS` units (every unit gets it).
#[cube]
fn cube_sum(v: f32, shared: &mut Shared<[f32]>) -> f32 {
    let u = UNIT_POS as usize;
    shared[u] = v;
    sync_cube();
    #[unroll]
    for step in 0..comptime!(ROW_UNITS.trailing_zeros()) {
        let half = comptime!((ROW_UNITS >> (step + 1)) as usize);
        if u < half {
            shared[u] += shared[u + half];
        }
        sync_cube();
    }
    let total = shared[0];
    sync_cube();
    total
}

/// `1 / rms` of row `src` of `x` `[·, h]` (every unit of the cube gets it).
#[cube]
fn inv_rms(x: &[f32], src: usize, h: usize, eps: f32) -> f32 {
    let mut shared = Shared::<[f32]>::new_slice(comptime!(ROW_UNITS as usize));
    let mut ss = 0.0f32;
    let mut i = UNIT_POS as usize;
    while i < h {
        let v = x[src * h + i];
        ss += v * v;
        i += comptime!(ROW_UNITS as usize);
    }
    let total = cube_sum(ss, &mut shared);
    1.0f32 / f32::sqrt(total / f32::cast_from(h as u32) + eps)
}

/// RMS norm of row `sel[r]` (or `r` without `gather`) of `x` `[·, h]`,
/// times `w`, into row `r` of `out` (in the spread order for weights of
/// `per` columns a word, 0 for none). One cube per output row.
#[cube(launch_unchecked)]
pub fn rms_norm(
    x: &[f32],
    w: &[f32],
    sel: &[u32],
    out: &mut [f32],
    h: u32,
    eps: f32,
    #[comptime] gather: bool,
    #[comptime] per: u32,
) {
    let r = CUBE_POS_X as usize;
    let h = h as usize;
    let src = if comptime!(gather) {
        sel[r] as usize
    } else {
        r
    };
    let inv = inv_rms(x, src, h, eps);
    let mut i = UNIT_POS as usize;
    while i < h {
        out[r * h + spread(i, h, per)] = x[src * h + i] * inv * w[i];
        i += comptime!(ROW_UNITS as usize);
    }
}

/// [`rms_norm`] into int8 blocks for `cube::kernels::packed_matvec_q8`: row `r`'s
/// `h / 32` blocks into `xq`, `xd` (a unit per block).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn rms_norm_q8(
    x: &[f32],
    w: &[f32],
    sel: &[u32],
    xq: &mut [u32],
    xd: &mut [f32],
    h: u32,
    eps: f32,
    #[comptime] gather: bool,
) {
    let r = CUBE_POS_X as usize;
    let h = h as usize;
    let src = if comptime!(gather) {
        sel[r] as usize
    } else {
        r
    };
    let inv = inv_rms(x, src, h, eps);
    let blocks = h / 32;
    let mut v = Array::<f32>::new(32usize);
    let mut b = UNIT_POS as usize;
    while b < blocks {
        #[unroll]
        for c in 0..32usize {
            let i = b * 32 + c;
            v[c] = x[src * h + i] * inv * w[i];
        }
        quantize_block(&v, xq, xd, r * blocks + b);
        b += comptime!(ROW_UNITS as usize);
    }
}

/// Row `r = order[list0 + cube]` of the q/k/v projection `qkv`
/// `[T, (nh + 2·nkv)·hd]` (plus `bias`): q rotated into `q` `[T, nh·hd]`,
/// k rotated and v written into the row's cache slot `slots[r]` of the
/// bank `[slots, nkv, cap, hd]` at its position `pos[r]`. Rotation is
/// Hugging Face's rotate_half with `cos`, `sin` `[positions, hd/2]`. One
/// cube per row of the bank.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn rope_cache(
    qkv: &[f32],
    bias: &[f32],
    pos: &[u32],
    order: &[u32],
    slots: &[u32],
    cos: &[f32],
    sin: &[f32],
    q: &mut [f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    list0: u32,
    nh: u32,
    nkv: u32,
    cap: u32,
    #[comptime] hd: usize,
) {
    let r = order[(list0 + CUBE_POS_X) as usize] as usize;
    let half = comptime!(hd / 2);
    let (nh, nkv, cap) = (nh as usize, nkv as usize, cap as usize);
    let sbase = slots[r] as usize * nkv * cap * hd;
    let qd = nh * hd;
    let kvd = nkv * hd;
    let width = qd + 2 * kvd;
    let p = pos[r] as usize;
    let base = r * width;
    let mut i = UNIT_POS as usize;
    // Pairs (i, i + half) of every q head, then of every k head.
    while i < (nh + nkv) * half {
        let head = i / half;
        let j = i % half;
        let c = cos[p * half + j];
        let s = sin[p * half + j];
        let at = head * hd + j;
        let a = qkv[base + at] + bias[at];
        let b = qkv[base + at + half] + bias[at + half];
        let ra = a * c - b * s;
        let rb = b * c + a * s;
        if head < nh {
            q[r * qd + at] = ra;
            q[r * qd + at + half] = rb;
        } else {
            let kh = head - nh;
            let at = sbase + (kh * cap + p) * hd + j;
            k_cache[at] = ra;
            k_cache[at + half] = rb;
        }
        i += comptime!(ROW_UNITS as usize);
    }
    let mut i = UNIT_POS as usize;
    while i < kvd {
        let kh = i / hd;
        let d = i % hd;
        let at = qd + kvd + i;
        v_cache[sbase + (kh * cap + p) * hd + d] = qkv[base + at] + bias[at];
        i += comptime!(ROW_UNITS as usize);
    }
}

/// Attention of row `t`'s query heads `kh·rep … kh·rep + rep - 1` (the
/// heads that share KV head `kh`) over the keys `[lo, pos[t]]` (`lo` from
/// the sliding `window`, 0 for none) that fall in key chunk `s` (`chunk`
/// keys each; `cstride` chunks per row and head in `partial`), in the
/// row's cache slot `slots[t]` of the bank `[slots, nkv, cap, hd]`. Cube
/// `(kh, i, s)` takes row `t = order[list0 + i]` (a bank's rows in a
/// batch) and walks its keys `ATTN_UNITS` at a time with an online
/// softmax: unit `u` scores key `u` of the block against the group's
/// query heads (the cache row is read once for all of them), then every
/// unit takes dimensions `u, u + 32, …` of the values, so a warp reads a
/// value row side by side. With `direct` (one chunk) the normalized output
/// goes to `out` `[T, nh·hd]`; otherwise each head's maximum, sum and
/// unnormalized output go to `partial` `[T, nh, chunks, hd + 2]` for
/// [`attention_combine`].
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    pos: &[u32],
    order: &[u32],
    slots: &[u32],
    k_cache: &[f32],
    v_cache: &[f32],
    out: &mut [f32],
    partial: &mut [f32],
    list0: u32,
    nkv: u32,
    cap: u32,
    window: u32,
    chunk: u32,
    cstride: u32,
    scale: f32,
    #[comptime] hd: usize,
    #[comptime] rep: usize,
    #[comptime] direct: bool,
    #[comptime] per: u32,
) {
    let units = comptime!(ATTN_UNITS as usize);
    // Value dimensions per unit.
    let dims = comptime!(hd / ATTN_UNITS as usize);
    let kh = CUBE_POS_X as usize;
    let t = order[(list0 + CUBE_POS_Y) as usize] as usize;
    let s = CUBE_POS_Z as usize;
    let cstride = cstride as usize;
    let u = UNIT_POS as usize;
    let (nkv, cap, chunk) = (nkv as usize, cap as usize, chunk as usize);
    let nh = nkv * rep;
    let kbase = (slots[t] as usize * nkv + kh) * cap * hd;
    let p = pos[t] as usize;
    let mut lo = 0usize;
    if window > 0 && p + 1 > window as usize {
        lo = p + 1 - window as usize;
    }
    // Chunks past the row's position hold nothing (the combine reads
    // none of them): the whole cube leaves.
    if s * chunk > p {
        terminate!();
    }
    let k0 = max(s * chunk, lo);
    let k1 = min(s * chunk + chunk, p + 1);

    // The group's queries (scaled), a block's scores and probabilities.
    let mut qs = Shared::<[f32]>::new_slice(comptime!(rep * hd));
    let mut scores = Shared::<[f32]>::new_slice(comptime!(rep * ATTN_UNITS as usize));
    let mut probs = Shared::<[f32]>::new_slice(comptime!(rep * ATTN_UNITS as usize));
    let qbase = (t * nh + kh * rep) * hd;
    let mut i = u;
    while i < comptime!(rep * hd) {
        qs[i] = q[qbase + i] * scale;
        i += units;
    }
    let mut m = Array::<f32>::new(rep);
    let mut l = Array::<f32>::new(rep);
    let mut dot = Array::<f32>::new(rep);
    let mut pk = Array::<f32>::new(rep);
    let mut acc = Array::<f32>::new(comptime!(rep * dims));
    #[unroll]
    for r in 0..rep {
        m[r] = f32::new(NO_SCORE);
        l[r] = 0.0;
    }
    #[unroll]
    for e in 0..comptime!(rep * dims) {
        acc[e] = 0.0;
    }
    sync_cube();

    let mut b0 = k0;
    while b0 < k1 {
        // Unit u scores key b0 + u for every head of the group.
        let j = b0 + u;
        #[unroll]
        for r in 0..rep {
            dot[r] = f32::new(NO_SCORE);
        }
        if j < k1 {
            #[unroll]
            for r in 0..rep {
                dot[r] = 0.0;
            }
            let kb = kbase + j * hd;
            #[unroll]
            for d in 0..hd {
                let k = k_cache[kb + d];
                #[unroll]
                for r in 0..rep {
                    dot[r] += qs[r * hd + d] * k;
                }
            }
        }
        #[unroll]
        for r in 0..rep {
            scores[r * units + u] = dot[r];
        }
        sync_cube();
        // Every unit finds the block's maxima; each writes its key's
        // probabilities and rescales what it has summed so far.
        #[unroll]
        for r in 0..rep {
            let mut top = m[r];
            #[unroll]
            for i in 0..units {
                top = max(top, scores[r * units + i]);
            }
            probs[r * units + u] = f32::exp(scores[r * units + u] - top);
            let c = f32::exp(m[r] - top);
            l[r] *= c;
            #[unroll]
            for e in 0..dims {
                acc[r * dims + e] *= c;
            }
            m[r] = top;
        }
        sync_cube();
        // Unit u adds dimensions u, u + 32, … of the block's values. The
        // loop is unrolled so that its loads are in flight together: keys
        // past the block's end read its last key, with probability 0.
        #[unroll]
        for i in 0..units {
            let vb = kbase + min(b0 + i, k1 - 1) * hd;
            #[unroll]
            for r in 0..rep {
                pk[r] = probs[r * units + i];
                l[r] += pk[r];
            }
            #[unroll]
            for e in 0..dims {
                let v = v_cache[vb + e * units + u];
                #[unroll]
                for r in 0..rep {
                    acc[r * dims + e] += pk[r] * v;
                }
            }
        }
        b0 += units;
    }

    #[unroll]
    for r in 0..rep {
        let h = kh * rep + r;
        let pbase = ((t * nh + h) * cstride + s) * comptime!(hd + 2);
        #[unroll]
        for e in 0..dims {
            let d = e * units + u;
            let v = acc[r * dims + e];
            if comptime!(direct) {
                let mut o = 0.0f32;
                if l[r] > 0.0 {
                    o = v / l[r];
                }
                out[t * nh * hd + spread(h * hd + d, nh * hd, per)] = o;
            } else {
                partial[pbase + 2 + d] = v;
            }
        }
        if !comptime!(direct) && u == 0 {
            partial[pbase] = m[r];
            partial[pbase + 1] = l[r];
        }
    }
}

/// The chunks of [`attention`] combined: cube `(h, i)` for row `t =
/// order[list0 + i]`, one unit per output dimension; the chunks up to the
/// row's position `pos[t]`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn attention_combine(
    partial: &[f32],
    pos: &[u32],
    order: &[u32],
    out: &mut [f32],
    list0: u32,
    nh: u32,
    chunk: u32,
    cstride: u32,
    #[comptime] hd: usize,
    #[comptime] per: u32,
) {
    let h = CUBE_POS_X as usize;
    let t = order[(list0 + CUBE_POS_Y) as usize] as usize;
    let d = UNIT_POS as usize;
    let nh = nh as usize;
    let o = combine_chunks(partial, pos, t, h, nh, chunk, cstride, hd);
    out[t * nh * hd + spread(h * hd + d, nh * hd, per)] = o;
}

/// [`attention_combine`] into int8 blocks for
/// `cube::kernels::packed_matvec_q8` (the o projection's input): a head's
/// `hd / 32` blocks, each quantized by its first unit from shared memory.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn attention_combine_q8(
    partial: &[f32],
    pos: &[u32],
    order: &[u32],
    xq: &mut [u32],
    xd: &mut [f32],
    list0: u32,
    nh: u32,
    chunk: u32,
    cstride: u32,
    #[comptime] hd: usize,
) {
    let h = CUBE_POS_X as usize;
    let t = order[(list0 + CUBE_POS_Y) as usize] as usize;
    let d = UNIT_POS as usize;
    let nh = nh as usize;
    let o = combine_chunks(partial, pos, t, h, nh, chunk, cstride, hd);
    let mut head = Shared::<[f32]>::new_slice(hd);
    head[d] = o;
    sync_cube();
    let within = d % 32;
    if within == 0 {
        let mut v = Array::<f32>::new(32usize);
        #[unroll]
        for c in 0..32usize {
            v[c] = head[d + c];
        }
        quantize_block(&v, xq, xd, (t * nh * hd + h * hd + d) / 32);
    }
}

/// Output dimension `UNIT_POS` of head `h` of row `t`: its [`attention`]
/// chunks' partial results combined (an online softmax over the chunks,
/// `COMBINE_AHEAD` chunks' loads at a time).
#[cube]
#[allow(clippy::too_many_arguments)]
fn combine_chunks(
    partial: &[f32],
    pos: &[u32],
    t: usize,
    h: usize,
    nh: usize,
    chunk: u32,
    cstride: u32,
    #[comptime] hd: usize,
) -> f32 {
    let d = UNIT_POS as usize;
    let chunks = (pos[t] as usize) / (chunk as usize) + 1;
    let base = (t * nh + h) * cstride as usize * comptime!(hd + 2);
    // Chunks past the last read it again, as an empty chunk.
    let ahead = comptime!(COMBINE_AHEAD as usize);
    let mut top = f32::new(NO_SCORE);
    let mut sum = 0.0f32;
    let mut v = 0.0f32;
    let mut ms = Array::<f32>::new(ahead);
    let mut ls = Array::<f32>::new(ahead);
    let mut vs = Array::<f32>::new(ahead);
    let mut s0 = 0usize;
    while s0 < chunks {
        #[unroll]
        for k in 0..ahead {
            let at = base + min(s0 + k, chunks - 1) * comptime!(hd + 2);
            ms[k] = partial[at];
            ls[k] = partial[at + 1];
            vs[k] = partial[at + 2 + d];
            if s0 + k >= chunks {
                ms[k] = f32::new(NO_SCORE);
                ls[k] = 0.0;
                vs[k] = 0.0;
            }
        }
        #[unroll]
        for k in 0..ahead {
            let grown = max(top, ms[k]);
            let c = f32::exp(top - grown);
            let f = f32::exp(ms[k] - grown);
            sum = sum * c + ls[k] * f;
            v = v * c + vs[k] * f;
            top = grown;
        }
        s0 += ahead;
    }
    let mut o = 0.0f32;
    if sum > 0.0 {
        o = v / sum;
    }
    o
}

/// `silu(gate) · up` of `gu` `[T, 2·inter]` (gate then up) into `out`
/// `[T, inter]` (in the spread order for weights of `per` columns a word).
#[cube(launch_unchecked)]
pub fn silu_mul(gu: &[f32], out: &mut [f32], n: u32, inter: u32, #[comptime] per: u32) {
    let i = ((CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) * CUBE_DIM_X + UNIT_POS_X) as usize;
    if i < n as usize {
        let inter = inter as usize;
        let t = i / inter;
        let c = i % inter;
        let g = gu[t * 2 * inter + c];
        let up = gu[t * 2 * inter + inter + c];
        out[t * inter + spread(c, inter, per)] = g / (1.0f32 + f32::exp(-g)) * up;
    }
}

/// [`silu_mul`] into int8 blocks for `cube::kernels::packed_matvec_q8`:
/// a cube takes `ROW_UNITS / 32` of the `blocks` (`T · inter / 32`), a
/// unit per value (the loads side by side), and each block's first unit
/// quantizes it from shared memory.
#[cube(launch_unchecked)]
pub fn silu_mul_q8(gu: &[f32], xq: &mut [u32], xd: &mut [f32], blocks: u32, inter: u32) {
    let u = UNIT_POS as usize;
    let cube = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    let i = cube * comptime!((ROW_UNITS / 32) as usize) + u / 32;
    let within = u % 32;
    let mut vals = Shared::<[f32]>::new_slice(comptime!(ROW_UNITS as usize));
    let inter = inter as usize;
    if i < blocks as usize {
        let per_row = inter / 32;
        let t = i / per_row;
        let c = (i % per_row) * 32 + within;
        let g = gu[t * 2 * inter + c];
        let up = gu[t * 2 * inter + inter + c];
        vals[u] = g / (1.0f32 + f32::exp(-g)) * up;
    }
    sync_cube();
    if within == 0 && i < blocks as usize {
        let mut v = Array::<f32>::new(32usize);
        #[unroll]
        for c in 0..32usize {
            v[c] = vals[u + c];
        }
        quantize_block(&v, xq, xd, i);
    }
}

/// A cache slot copied into a slot with more positions: word `i` of
/// `src` from `src0` (heads of `from` words each) to `dst` from `dst0`
/// (heads of `to` words each, the same offset in its head).
#[cube(launch_unchecked)]
pub fn copy_cache(src: &[f32], dst: &mut [f32], src0: u32, dst0: u32, from: u32, to: u32, n: u32) {
    let i = ((CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) * CUBE_DIM_X + UNIT_POS_X) as usize;
    if i < n as usize {
        let (from, to) = (from as usize, to as usize);
        dst[dst0 as usize + (i / from) * to + i % from] = src[src0 as usize + i];
    }
}

/// Greedy choice on row `r` (from `row0`) of `logits` `[·, vocab]`: `out[2r]` the index
/// of the largest value (the lowest index among equals), `out[2r + 1]` 1
/// when the row holds a NaN or an infinity. One cube per row.
#[cube(launch_unchecked)]
pub fn argmax(logits: &[f32], out: &mut [u32], row0: u32, vocab: u32) {
    let r = (row0 + CUBE_POS_X) as usize;
    let u = UNIT_POS as usize;
    let vocab = vocab as usize;
    let mut best = f32::new(NO_SCORE);
    let mut at = 0u32;
    let mut bad = 0u32;
    let mut i = u;
    while i < vocab {
        let v = logits[r * vocab + i];
        if f32::is_nan(v) || f32::is_inf(v) {
            bad = 1;
        }
        if v > best {
            best = v;
            at = i as u32;
        }
        i += comptime!(ROW_UNITS as usize);
    }
    let mut vals = Shared::<[f32]>::new_slice(comptime!(ROW_UNITS as usize));
    let mut idx = Shared::<[u32]>::new_slice(comptime!(ROW_UNITS as usize));
    let mut flags = Shared::<[u32]>::new_slice(comptime!(ROW_UNITS as usize));
    vals[u] = best;
    idx[u] = at;
    flags[u] = bad;
    sync_cube();
    #[unroll]
    for step in 0..comptime!(ROW_UNITS.trailing_zeros()) {
        let half = comptime!((ROW_UNITS >> (step + 1)) as usize);
        if u < half {
            let (a, b) = (vals[u], vals[u + half]);
            if b > a || (b == a && idx[u + half] < idx[u]) {
                vals[u] = b;
                idx[u] = idx[u + half];
            }
            flags[u] = max(flags[u], flags[u + half]);
        }
        sync_cube();
    }
    if u == 0 {
        out[2 * r] = idx[0];
        out[2 * r + 1] = flags[0];
    }
}
