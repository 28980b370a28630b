//! Attention of one stream's new rows over its cache, on the CPU: per
//! query row and head an online softmax over the keys in blocks
//! (flash-attention's loop: a running maximum, a running sum and the
//! weighted values rescaled as the maximum grows), so no score matrix is
//! ever held.
//!
//! A decode step (a row per stream) spreads its (row, head) pairs over the
//! CPU pool, each a dot product per key. A prompt chunk takes blocks of
//! rows instead: for each KV head, a key block is transposed once and
//! serves every query of the rows' heads that share it, so a block's
//! scores are vector products over the keys (no horizontal sum per key);
//! in AVX-512 up to four heads of a row go together, each loaded key and
//! value register serving all of them.

use rayon::prelude::*;

use super::math::{dot, exp_nonpositive, has_avx512};

/// Keys per block of the online softmax (their scores sit on the stack).
const KEY_BLOCK: usize = 64;

/// Rows from which a stream's attention runs in row blocks.
const BLOCKED_MIN_ROWS: usize = 2;

/// Rows per task of the blocked path, at most (a task transposes each key
/// block once per KV head for its rows' queries).
const MAX_ROWS_PER_TASK: usize = 8;

/// Lanes of the blocked path's value loop (head dims are multiples).
const LANES: usize = 16;

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

impl Heads {
    /// The first key a query at position `p` sees (its sliding window's
    /// start, or 0).
    fn first_key(&self, p: usize) -> usize {
        self.sliding_window.map_or(0, |w| (p + 1).saturating_sub(w))
    }
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
        ..
    } = shape;
    let rep = heads / kv_heads;
    let scale = 1.0 / (hd as f32).sqrt();
    let rows = out.len() / (heads * hd);
    if rows >= BLOCKED_MIN_ROWS && hd.is_multiple_of(LANES) {
        #[cfg(target_arch = "x86_64")]
        let avx512 = has_avx512();
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        return attend_blocked(q, cache, pos, shape, out, avx512);
    }
    out.par_chunks_mut(hd).enumerate().for_each(|(i, o)| {
        let (r, h) = (i / heads, i % heads);
        let p = pos + r;
        let lo = shape.first_key(p);
        let base = (h / rep) * cache.capacity * hd;
        let one = One {
            q: &q[i * hd..(i + 1) * hd],
            keys: &cache.keys[base..base + cache.capacity * hd],
            values: &cache.values[base..base + cache.capacity * hd],
            keys_from: lo,
            keys_to: p + 1,
            scale,
        };
        #[cfg(target_arch = "x86_64")]
        {
            if has_avx512() {
                // SAFETY: AVX-512F was detected at run time.
                unsafe { attend_one_avx512(&one, o) };
                return;
            }
        }
        attend_one(&one, o);
    });
}

/// One query row and head over its keys.
struct One<'a> {
    q: &'a [f32],
    /// The KV head's keys and values, `[capacity, hd]`.
    keys: &'a [f32],
    values: &'a [f32],
    keys_from: usize,
    keys_to: usize,
    scale: f32,
}

/// [`attend_one`] compiled for AVX-512 (the compiler widens its loops to
/// 16 lanes; with the vectorized exp, prompt chunks took 68 ms against 91
/// on this path before they moved to the row blocks).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn attend_one_avx512(one: &One<'_>, o: &mut [f32]) {
    attend_one(one, o)
}

#[inline(always)]
fn attend_one(one: &One<'_>, o: &mut [f32]) {
    let hd = one.q.len();
    o.fill(0.0);
    let (mut m, mut l) = (f32::NEG_INFINITY, 0f32);
    let mut scores = [0f32; KEY_BLOCK];
    let mut j0 = one.keys_from;
    while j0 < one.keys_to {
        let n = (one.keys_to - j0).min(KEY_BLOCK);
        let mut bm = f32::NEG_INFINITY;
        for (s, k) in scores[..n]
            .iter_mut()
            .zip(one.keys[j0 * hd..(j0 + n) * hd].chunks_exact(hd))
        {
            *s = dot(one.q, k) * one.scale;
            bm = bm.max(*s);
        }
        let m_new = m.max(bm);
        let shrink = (m - m_new).exp();
        l *= shrink;
        if shrink != 1.0 {
            o.iter_mut().for_each(|a| *a *= shrink);
        }
        // The block's weights in one loop the compiler widens (a libm
        // call per key was most of a long prompt's attention).
        for s in &mut scores[..n] {
            *s = exp_nonpositive(*s - m_new);
        }
        l += scores[..n].iter().sum::<f32>();
        for (w, v) in scores[..n]
            .iter()
            .zip(one.values[j0 * hd..(j0 + n) * hd].chunks_exact(hd))
        {
            o.iter_mut().zip(v).for_each(|(a, x)| *a += w * x);
        }
        m = m_new;
        j0 += n;
    }
    let inv = 1.0 / l;
    o.iter_mut().for_each(|a| *a *= inv);
}

/// [`attend`] for several rows: tasks of up to [`MAX_ROWS_PER_TASK`]
/// rows, each taking the KV heads in turn (see the module docs); `avx512`
/// where the CPU has AVX-512F.
fn attend_blocked(
    q: &[f32],
    cache: &CacheView<'_>,
    pos: usize,
    shape: Heads,
    out: &mut [f32],
    avx512: bool,
) {
    let width = shape.heads * shape.head_dim;
    let rows = out.len() / width;
    let per_task = rows
        .div_ceil(2 * rayon::current_num_threads())
        .clamp(1, MAX_ROWS_PER_TASK);
    out.par_chunks_mut(per_task * width)
        .enumerate()
        .for_each(|(t, out)| {
            let r0 = t * per_task;
            let task = RowBlock {
                q: &q[r0 * width..r0 * width + out.len()],
                cache,
                first_pos: pos + r0,
                shape,
            };
            #[cfg(target_arch = "x86_64")]
            if avx512 {
                // SAFETY: the caller found AVX-512F.
                unsafe { task.run_avx512(out) };
                return;
            }
            task.run::<false>(out);
        });
}

/// Consecutive rows of one stream, `first_pos` the first one's position.
struct RowBlock<'a> {
    q: &'a [f32],
    cache: &'a CacheView<'a>,
    first_pos: usize,
    shape: Heads,
}

impl RowBlock<'_> {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, out: &mut [f32]) {
        self.run::<true>(out)
    }

    /// Every KV head: its key blocks transposed one by one, and each query
    /// of the rows' heads on it updating its running softmax per block.
    /// `AVX512`: the caller has checked the CPU runs
    /// [`Query::block_avx512`].
    #[inline(always)]
    fn run<const AVX512: bool>(&self, out: &mut [f32]) {
        let Heads {
            heads,
            kv_heads,
            head_dim: hd,
            ..
        } = self.shape;
        let rep = heads / kv_heads;
        let rows = out.len() / (heads * hd);
        let scale = 1.0 / (hd as f32).sqrt();
        let last = self.first_pos + rows - 1;
        // Per query (row, head of this KV head): running max and sum; the
        // weighted values accumulate in `out` itself.
        let mut max = vec![f32::NEG_INFINITY; rows * rep];
        let mut sum = vec![0f32; rows * rep];
        let mut kt = vec![0f32; hd * KEY_BLOCK];
        out.fill(0.0);
        for g in 0..kv_heads {
            max.fill(f32::NEG_INFINITY);
            sum.fill(0.0);
            let base = g * self.cache.capacity * hd;
            let keys = &self.cache.keys[base..base + self.cache.capacity * hd];
            let values = &self.cache.values[base..base + self.cache.capacity * hd];
            let mut j0 = self.shape.first_key(self.first_pos) / KEY_BLOCK * KEY_BLOCK;
            while j0 <= last {
                let n = (last + 1 - j0).min(KEY_BLOCK);
                // kt[d][j] = key j0 + j, dimension d (zeros past n).
                kt.fill(0.0);
                for (j, k) in keys[j0 * hd..(j0 + n) * hd].chunks_exact(hd).enumerate() {
                    for (d, v) in k.iter().enumerate() {
                        kt[d * KEY_BLOCK + j] = *v;
                    }
                }
                for r in 0..rows {
                    let p = self.first_pos + r;
                    let lo = self.shape.first_key(p);
                    if j0 > p || j0 + n <= lo {
                        continue;
                    }
                    // Keys of this block row r sees: [from, to).
                    let (from, to) = (lo.saturating_sub(j0), (p + 1 - j0).min(n));
                    let values = &values[j0 * hd..(j0 + n) * hd];
                    let mut hh = 0;
                    while hh < rep {
                        // AVX-512 takes up to four heads at once, the
                        // portable loops one.
                        let group = if AVX512 { (rep - hh).min(4) } else { 1 };
                        let at = (r * heads + g * rep + hh) * hd;
                        let query = Query {
                            q: &self.q[at..at + group * hd],
                            kt: &kt,
                            values,
                            from,
                            to,
                            scale,
                        };
                        let i = r * rep + hh;
                        let (m, l) = (&mut max[i..i + group], &mut sum[i..i + group]);
                        let o = &mut out[at..at + group * hd];
                        hh += group;
                        #[cfg(target_arch = "x86_64")]
                        if AVX512 {
                            // SAFETY: AVX512 only where the caller found
                            // AVX-512F.
                            unsafe {
                                match group {
                                    4 => query.block_avx512::<4>(m, l, o),
                                    3 => query.block_avx512::<3>(m, l, o),
                                    2 => query.block_avx512::<2>(m, l, o),
                                    _ => query.block_avx512::<1>(m, l, o),
                                }
                            }
                            continue;
                        }
                        query.block(&mut m[0], &mut l[0], o);
                    }
                }
                j0 += KEY_BLOCK;
            }
            for r in 0..rows {
                for hh in 0..rep {
                    let at = (r * heads + g * rep + hh) * hd;
                    let inv = 1.0 / sum[r * rep + hh];
                    out[at..at + hd].iter_mut().for_each(|a| *a *= inv);
                }
            }
        }
    }
}

/// One query (or, in AVX-512, up to four side by side) over one
/// transposed key block.
struct Query<'a> {
    q: &'a [f32],
    /// `[hd, KEY_BLOCK]`.
    kt: &'a [f32],
    /// The block's values, `[n, hd]`.
    values: &'a [f32],
    from: usize,
    to: usize,
    scale: f32,
}

impl Query<'_> {
    /// The online softmax's update: scores of keys `from..to`, the running
    /// max and sum, `o` rescaled and the weighted values added.
    #[inline(always)]
    fn block(&self, max: &mut f32, sum: &mut f32, o: &mut [f32]) {
        let hd = self.q.len();
        let mut s = [f32::NEG_INFINITY; KEY_BLOCK];
        for (j, s) in s.iter_mut().enumerate().take(self.to).skip(self.from) {
            let dot: f32 = (0..hd)
                .map(|d| self.q[d] * self.kt[d * KEY_BLOCK + j])
                .sum();
            *s = dot * self.scale;
        }
        let block_max = s.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
        let m_new = max.max(block_max);
        let shrink = (*max - m_new).exp();
        for s in &mut s {
            *s = exp_nonpositive(*s - m_new);
        }
        *sum = *sum * shrink + s.iter().sum::<f32>();
        *max = m_new;
        o.iter_mut().for_each(|a| *a *= shrink);
        let weights = &s[self.from..self.to];
        let values = self.values[self.from * hd..self.to * hd].chunks_exact(hd);
        for (w, v) in weights.iter().zip(values) {
            o.iter_mut().zip(v).for_each(|(a, v)| *a += w * v);
        }
    }

    /// [`Query::block`] in AVX-512 for `Q` queries at once (heads of one
    /// row that share the KV head: the same keys, the same span): each
    /// loaded key and value register serves all `Q`. The block's 64
    /// scores of a query sit in four registers (a broadcast of a query
    /// value and four FMAs per dimension), mask and exponential in
    /// registers, the weighted values in up to `Q × 4` independent
    /// accumulators. `self.q`, `o`: the `Q` queries' rows side by side;
    /// `max`, `sum`: theirs.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn block_avx512<const Q: usize>(&self, max: &mut [f32], sum: &mut [f32], o: &mut [f32]) {
        use std::arch::x86_64::*;
        const CHUNKS: usize = KEY_BLOCK / LANES;
        let hd = self.q.len() / Q;
        assert!(self.kt.len() >= hd * KEY_BLOCK && o.len() >= Q * hd && self.to <= KEY_BLOCK);
        assert!(self.values.len() >= self.to * hd && hd.is_multiple_of(LANES));
        assert!(max.len() >= Q && sum.len() >= Q && self.q.len() == Q * hd);
        // SAFETY: every load and store below lies in the slices checked
        // above (kt: hd × 64; values: `to` rows of hd; q and o: Q × hd).
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); CHUNKS]; Q];
            let (kt, q) = (self.kt.as_ptr(), self.q.as_ptr());
            for d in 0..hd {
                let k: [__m512; CHUNKS] =
                    std::array::from_fn(|c| _mm512_loadu_ps(kt.add(d * KEY_BLOCK + c * LANES)));
                for (qi, acc) in acc.iter_mut().enumerate() {
                    let qd = _mm512_set1_ps(*q.add(qi * hd + d) * self.scale);
                    for (a, k) in acc.iter_mut().zip(&k) {
                        *a = _mm512_fmadd_ps(qd, *k, *a);
                    }
                }
            }
            // Keys from..to of the block's 64 as a bit mask.
            let upto = |n: usize| if n >= 64 { u64::MAX } else { (1u64 << n) - 1 };
            let keep = upto(self.to) & !upto(self.from);
            let neg = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut s = [[0f32; KEY_BLOCK]; Q];
            let mut shrink = [_mm512_setzero_ps(); Q];
            for qi in 0..Q {
                let mut m = neg;
                for (c, a) in acc[qi].iter_mut().enumerate() {
                    *a = _mm512_mask_blend_ps((keep >> (c * LANES)) as u16, neg, *a);
                    m = _mm512_max_ps(m, *a);
                }
                let m_new = max[qi].max(_mm512_reduce_max_ps(m));
                let sh = (max[qi] - m_new).exp();
                let mut total = _mm512_setzero_ps();
                for (c, a) in acc[qi].iter().enumerate() {
                    let e = exp_nonpositive_avx512(_mm512_sub_ps(*a, _mm512_set1_ps(m_new)));
                    total = _mm512_add_ps(total, e);
                    _mm512_storeu_ps(s[qi].as_mut_ptr().add(c * LANES), e);
                }
                sum[qi] = sum[qi] * sh + _mm512_reduce_add_ps(total);
                max[qi] = m_new;
                shrink[qi] = _mm512_set1_ps(sh);
            }
            let (from, n) = (self.from, self.to - self.from);
            // The outputs' registers C at a time: each key's value
            // registers loaded once and added into every query's
            // accumulators with its weight (Q × C independent FMA chains).
            macro_rules! weighted_values {
                ($d0:expr, $c:literal) => {{
                    let op = o.as_mut_ptr().add($d0);
                    let vp = self.values.as_ptr().add(from * hd + $d0);
                    let mut a = [[_mm512_setzero_ps(); $c]; Q];
                    for (qi, a) in a.iter_mut().enumerate() {
                        for (c, a) in a.iter_mut().enumerate() {
                            let at = op.add(qi * hd + c * LANES);
                            *a = _mm512_mul_ps(_mm512_loadu_ps(at), shrink[qi]);
                        }
                    }
                    for i in 0..n {
                        let v: [__m512; $c] =
                            std::array::from_fn(|c| _mm512_loadu_ps(vp.add(i * hd + c * LANES)));
                        for (qi, a) in a.iter_mut().enumerate() {
                            let w = _mm512_set1_ps(s[qi][from + i]);
                            for (a, v) in a.iter_mut().zip(&v) {
                                *a = _mm512_fmadd_ps(w, *v, *a);
                            }
                        }
                    }
                    for (qi, a) in a.iter().enumerate() {
                        for (c, a) in a.iter().enumerate() {
                            _mm512_storeu_ps(op.add(qi * hd + c * LANES), *a);
                        }
                    }
                }};
            }
            let mut d0 = 0;
            while d0 + 4 * LANES <= hd {
                weighted_values!(d0, 4);
                d0 += 4 * LANES;
            }
            if d0 + 2 * LANES <= hd {
                weighted_values!(d0, 2);
                d0 += 2 * LANES;
            }
            if d0 < hd {
                weighted_values!(d0, 1);
            }
        }
    }
}

/// [`exp_nonpositive`] on 16 lanes: the same steps, the polynomial's
/// multiply-adds fused.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn exp_nonpositive_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    let t = _mm512_mul_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
    let y = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(std::f32::consts::LN_2));
    let mut p = _mm512_set1_ps(1.0 / 40320.0);
    for c in [5040.0f32, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, y, _mm512_set1_ps(1.0 / c));
    }
    let bits = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    let r = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
    let under = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.0));
    _mm512_mask_blend_ps(under, r, _mm512_setzero_ps())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Causal softmax attention in f64, straight from the definition.
    fn reference(q: &[f32], cache: &CacheView<'_>, pos: usize, shape: Heads) -> Vec<f64> {
        let hd = shape.head_dim;
        let rep = shape.heads / shape.kv_heads;
        let mut out = vec![0f64; q.len()];
        for (i, o) in out.chunks_mut(hd).enumerate() {
            let (r, h) = (i / shape.heads, i % shape.heads);
            let p = pos + r;
            let lo = shape
                .sliding_window
                .map_or(0, |w| (p + 1).saturating_sub(w));
            let base = (h / rep) * cache.capacity * hd;
            let qi = &q[i * hd..(i + 1) * hd];
            let scores: Vec<f64> = (lo..=p)
                .map(|j| {
                    let k = &cache.keys[base + j * hd..base + (j + 1) * hd];
                    let dot: f64 = qi.iter().zip(k).map(|(a, b)| *a as f64 * *b as f64).sum();
                    dot / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let w: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
            let total: f64 = w.iter().sum();
            for (j, w) in (lo..=p).zip(&w) {
                let v = &cache.values[base + j * hd..base + (j + 1) * hd];
                for (o, v) in o.iter_mut().zip(v) {
                    *o += w / total * *v as f64;
                }
            }
        }
        out
    }

    /// Both paths (a row per step, and row blocks) against the f64
    /// definition on fresh random inputs: GQA, key blocks crossed, rows
    /// that end mid-block, a sliding window, head sizes that take the
    /// value loop's 4-, 2- and 1-register runs (64, 32, 48), heads per KV
    /// head that make groups of 4, 3 (7 = 4 + 3), 2 and 1, and a head size
    /// the blocked path leaves to the row path (24).
    #[test]
    fn attention_matches_the_f64_definition() {
        let seed: u64 = rand::rng().random();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for (hd, window, rows, pos, (heads, kv_heads)) in [
            (32, None, 1, 150, (8, 2)),
            (32, None, 37, 0, (8, 2)),
            (64, None, 70, 130, (8, 2)),
            (64, Some(50), 23, 100, (14, 2)),
            (32, Some(20), 9, 3, (8, 2)),
            (48, None, 7, 40, (3, 3)),
            (64, None, 5, 60, (4, 2)),
            (24, None, 11, 90, (8, 2)),
        ] {
            let shape = Heads {
                heads,
                kv_heads,
                head_dim: hd,
                sliding_window: window,
            };
            let capacity = 320;
            let mut random = |n: usize, r: f32| -> Vec<f32> {
                (0..n).map(|_| rng.random_range(-r..r)).collect()
            };
            // Scores of a few units: the softmax is neither flat nor one-hot.
            let keys = random(kv_heads * capacity * hd, 1.0);
            let values = random(kv_heads * capacity * hd, 1.0);
            let q = random(rows * heads * hd, 0.6);
            let cache = CacheView {
                keys: &keys,
                values: &values,
                capacity,
            };
            let want = reference(&q, &cache, pos, shape);
            let mut out = vec![0f32; q.len()];
            attend(&q, &cache, pos, shape, &mut out);
            let mut runs = vec![("attend", out)];
            if rows > 1 && hd % LANES == 0 {
                // The blocked path's portable loops, whatever this CPU has.
                let mut out = vec![0f32; q.len()];
                attend_blocked(&q, &cache, pos, shape, &mut out, false);
                runs.push(("portable", out));
            }
            for (what, out) in runs {
                let worst = out
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (*a as f64 - b).abs())
                    .fold(0f64, f64::max);
                // f32 sums of up to 320 terms of magnitude ≤ 1.
                assert!(
                    worst <= 2e-5,
                    "{what}: hd {hd}, window {window:?}, {rows} rows at {pos}: worst {worst:e} (seed {seed})"
                );
                assert!(worst > 0.0, "suspiciously exact");
            }
        }
    }
}
