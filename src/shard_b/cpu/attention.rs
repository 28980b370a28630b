//! Attention of one stream's new rows over its cache, on the CPU: per
//! query row and head an online softmax over the keys in blocks
//! (flash-attention's loop: a running maximum, a running sum and the
//! weighted values rescaled as the maximum grows), so no score matrix is
//! ever held. Rows and heads are spread over the CPU pool.

use rayon::prelude::*;

/// Keys per block of the online softmax (their scores sit on the stack).
const KEY_BLOCK: usize = 64;

/// One stream's cache for one layer, `[kv_heads, capacity, head_dim]`.
pub(super) struct CacheView<'a> {
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub capacity: usize,
}

/// The shape of a step's attention.
#[derive(Clone, Copy)]
pub(super) struct Heads {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub sliding_window: Option<usize>,
}

/// `out[r, h·hd..]` = softmax(q·kᵀ/√hd) · v over positions `lo..=p` of
/// row `r` (at position `p = pos + r`, the keys of its KV head `h / rep`),
/// for `q` `[rows, heads·hd]` already rotated and the cache already holding
/// every row's key and value.
pub(super) fn attend(q: &[f32], cache: &CacheView<'_>, pos: usize, shape: Heads, out: &mut [f32]) {
    let Heads {
        heads,
        kv_heads,
        head_dim: hd,
        sliding_window,
    } = shape;
    let rep = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (r, h) = (i / heads, i % heads);
        let p = pos + r;
        let lo = sliding_window.map_or(0, |w| (p + 1).saturating_sub(w));
        let base = (h / rep) * cache.capacity * hd;
        let qv = &q[i * hd..(i + 1) * hd];
        let keys = &cache.keys[base..base + cache.capacity * hd];
        let values = &cache.values[base..base + cache.capacity * hd];
        o.fill(0.0);
        let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
        let mut scores = [0f32; KEY_BLOCK];
        let mut j0 = lo;
        while j0 <= p {
            let n = (p + 1 - j0).min(KEY_BLOCK);
            let mut bm = f32::NEG_INFINITY;
            for (s, k) in scores[..n]
                .iter_mut()
                .zip(keys[j0 * hd..(j0 + n) * hd].chunks_exact(hd))
            {
                *s = dot(qv, k) * scale;
                bm = bm.max(*s);
            }
            let m_new = m.max(bm);
            let shrink = (m - m_new).exp();
            l *= shrink;
            if shrink != 1.0 {
                o.iter_mut().for_each(|a| *a *= shrink);
            }
            for (s, v) in scores[..n]
                .iter()
                .zip(values[j0 * hd..(j0 + n) * hd].chunks_exact(hd))
            {
                let w = (s - m_new).exp();
                l += w;
                o.iter_mut().zip(v).for_each(|(a, x)| *a += w * x);
            }
            m = m_new;
            j0 += n;
        }
        let inv = 1.0 / l;
        o.iter_mut().for_each(|a| *a *= inv);
    });
}

/// Eight partial sums (the compiler keeps them in one vector register).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a
        .chunks_exact(8)
        .remainder()
        .iter()
        .zip(b.chunks_exact(8).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}
