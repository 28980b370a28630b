//! The kernels (CubeCL's `Tensor` is not burn's): matrix-vector for
//! decode, tiled for prefill, and the embedding-row lookup. The module docs of
//! `shard_b::cube` describe what they compute and within which limits.

use super::{LANES, ROWS_PER_CUBE, STEP, TILE};
use cubecl::prelude::*;

/// Four floats, or four words: the widest vector the kernels use.
pub type V4<T> = Vector<T, Const<4>>;

/// Where column `col` of a `width`-wide activation row goes in the spread
/// order that [`packed_matvec`] reads with `spread` for weights of `per`
/// columns a word (8 for 4 bits, 4 for 8): a lane takes the 4-word vector
/// `iu` (columns `32·iu …` for 4 bits) as `per` 4-column pieces `q`, so
/// piece `q` of every vector is stored together, `[q][iu]`; `per` 0 keeps
/// the order.
#[cube]
pub fn spread(col: usize, width: usize, #[comptime] per: u32) -> usize {
    if comptime!(per == 0) {
        col
    } else {
        let per = comptime!(per as usize);
        let v = col / 4;
        let vectors = width / (4 * per);
        ((v % per) * vectors + v / per) * 4 + col % 4
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn packed_matvec(
    x: &Tensor<V4<f32>>,
    words: &Tensor<V4<u32>>,
    scales: &Tensor<f32>,
    shifts: &Tensor<f32>,
    out: &mut Tensor<f32>,
    rows: u32,
    kw4: u32,
    kx4: u32,
    group_steps: u32,
    groups: u32,
    out_cols: u32,
    out_col0: u32,
    n_tokens: u32,
    #[comptime] tokens: usize,
    #[comptime] bits: u32,
    #[comptime] rpu: usize,
    #[comptime] steps: usize,
    #[comptime] split: usize,
    #[comptime] accumulate: bool,
    #[comptime] spread: bool,
) {
    let lanes = comptime!(LANES as usize);
    // Units `split` apart along y share rows and take every split-th
    // run of `lanes` vectors along them.
    let width = comptime!(split * lanes);
    let per = comptime!((32 / bits) as usize);
    // Elements in one step (a vector of 4 words), and the activation
    // vectors they take.
    let xv_per_step = comptime!(per);
    let mask = comptime!((1u32 << bits) - 1);
    let lane = UNIT_POS_X as usize;
    let cube = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    let part = UNIT_POS_Y as usize % split;
    let row0 = (cube * (CUBE_DIM_Y as usize / split) + UNIT_POS_Y as usize / split) * rpu;
    let rows = rows as usize;
    let kw4 = kw4 as usize;
    let kx4 = kx4 as usize;
    let group_steps = group_steps as usize;
    let groups = groups as usize;

    let mut acc = Array::<f32>::new(comptime!(tokens * rpu));
    #[unroll]
    for i in 0..comptime!(tokens * rpu) {
        acc[i] = 0.0;
    }
    let mut wv = Array::<V4<u32>>::new(comptime!(steps * rpu));
    let mut sc = Array::<f32>::new(rpu);
    let mut sh = Array::<f32>::new(rpu);
    // One activation vector of every token, their sums (the shift's
    // term), and the step's dot products per row and token.
    let mut xq = Array::<V4<f32>>::new(tokens);
    let mut xsum = Array::<V4<f32>>::new(tokens);
    let mut dots = Array::<f32>::new(comptime!(tokens * rpu));
    let mut i = part * lanes + lane;
    while i < kw4 {
        load_words(words, &mut wv, i, width, kw4, row0, rows, steps, rpu);
        #[unroll]
        for s in 0..steps {
            let iu = i + s * width;
            if iu < kw4 {
                let g = iu / group_steps;
                #[unroll]
                for r in 0..rpu {
                    let row = min(row0 + r, rows - 1);
                    sc[r] = scales[row * groups + g];
                    sh[r] = shifts[row * groups + g];
                }
                #[unroll]
                for k in 0..comptime!(tokens * rpu) {
                    dots[k] = 0.0;
                }
                #[unroll]
                for t in 0..tokens {
                    xsum[t] = V4::<f32>::broadcast(0.0);
                }
                // Each weight element is unpacked once and used for
                // every token.
                #[unroll]
                for q in 0..xv_per_step {
                    #[unroll]
                    for t in 0..tokens {
                        // In the spread order the lanes' vectors lie side
                        // by side: one load of a warp reads a few cache
                        // lines instead of one per lane.
                        // Tokens past `n_tokens` (the kernel is built
                        // for a bucket of them) repeat the last one.
                        let tt = min(t, n_tokens as usize - 1);
                        let at = if comptime!(spread) {
                            tt * kx4 + q * kw4 + iu
                        } else {
                            tt * kx4 + iu * xv_per_step + q
                        };
                        xq[t] = x[at];
                        xsum[t] += xq[t];
                    }
                    #[unroll]
                    for r in 0..rpu {
                        let w = wv[s * rpu + r];
                        #[unroll]
                        for c in 0..4usize {
                            let e = comptime!(q * 4 + c);
                            let word = w.extract(comptime!(e / per));
                            let u = (word >> comptime!(((e % per) as u32) * bits)) & mask;
                            let v = f32::cast_from(u);
                            #[unroll]
                            for t in 0..tokens {
                                dots[r * tokens + t] += v * xq[t].extract(c);
                            }
                        }
                    }
                }
                #[unroll]
                for t in 0..tokens {
                    let v = xsum[t];
                    let total = v.extract(0usize)
                        + v.extract(1usize)
                        + v.extract(2usize)
                        + v.extract(3usize);
                    #[unroll]
                    for r in 0..rpu {
                        acc[r * tokens + t] += sc[r] * dots[r * tokens + t] + sh[r] * total;
                    }
                }
            }
        }
        i += comptime!(steps * width);
    }

    write_sums(
        &acc, out, cube, rows, out_cols, out_col0, n_tokens, tokens, rpu, split, accumulate,
    );
}

/// The `rpu` rows' words (from `row0`) of `steps` steps `width` vectors
/// apart from vector `i` into `wv` (`[step][row]`), before any is used,
/// so a unit has that many loads from memory in flight at once. A step
/// past the row end reads the last step (the caller skips it); rows past
/// the end read the last row (their sums are dropped).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_words(
    words: &Tensor<V4<u32>>,
    wv: &mut Array<V4<u32>>,
    i: usize,
    width: usize,
    kw4: usize,
    row0: usize,
    rows: usize,
    #[comptime] steps: usize,
    #[comptime] rpu: usize,
) {
    #[unroll]
    for s in 0..steps {
        let iu = min(i + s * width, kw4 - 1);
        #[unroll]
        for r in 0..rpu {
            let row = min(row0 + r, rows - 1);
            wv[s * rpu + r] = words[row * kw4 + iu];
        }
    }
}

/// The lanes' partial sums `acc` (`[rpu][tokens]` per unit) of
/// [`packed_matvec`] or [`packed_matvec_q8`] added up in shared memory
/// and written (or added) to `out` at row `out_col0 + row` of each token.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_sums(
    acc: &Array<f32>,
    out: &mut Tensor<f32>,
    cube: usize,
    rows: usize,
    out_cols: u32,
    out_col0: u32,
    n_tokens: u32,
    #[comptime] tokens: usize,
    #[comptime] rpu: usize,
    #[comptime] split: usize,
    #[comptime] accumulate: bool,
) {
    let lanes = comptime!(LANES as usize);
    let lane = UNIT_POS_X as usize;
    // Sum the lanes' partial results in shared memory, for `chunk` tokens
    // at a time (chunk × split ≤ 8: at most 8 KiB).
    let chunk = comptime!((8 / split).clamp(1, tokens));
    let mut partial =
        Shared::<[f32]>::new_slice(comptime!((LANES * ROWS_PER_CUBE) as usize * split * chunk));
    let slots = comptime!(chunk * rpu);
    let base = UNIT_POS_Y as usize * slots * lanes;
    #[unroll]
    for c in 0..comptime!(tokens.div_ceil(chunk)) {
        #[unroll]
        for k in 0..slots {
            let t = comptime!(c * chunk + k % chunk);
            if comptime!(t < tokens) {
                partial[base + k * lanes + lane] = acc[comptime!((k / chunk) * tokens + t)];
            }
        }
        sync_cube();
        // One unit per output (a row and a token of the chunk) adds
        // its split × 32 partial sums, each unit starting at another
        // lane so that the units read different banks.
        let groups_y = comptime!(ROWS_PER_CUBE as usize / rpu);
        let outputs = comptime!(groups_y * slots);
        let units = comptime!(LANES as usize * groups_y * split);
        let unit = UNIT_POS_Y as usize * lanes + lane;
        #[unroll]
        for round in 0..comptime!(outputs.div_ceil(units)) {
            let o = unit + comptime!(round * units);
            if o < outputs {
                let ry = o / slots;
                let k = o % slots;
                let t = c * chunk + k % chunk;
                let row = (cube * groups_y + ry) * rpu + k / chunk;
                if row < rows && t < n_tokens as usize {
                    let mut v = 0.0f32;
                    #[unroll]
                    for g in 0..split {
                        let at = ((ry * split + g) * slots + k) * lanes;
                        #[unroll]
                        for i in 0..lanes {
                            v += partial[at + (i + o) % lanes];
                        }
                    }
                    let at = t * out_cols as usize + out_col0 as usize + row;
                    if comptime!(accumulate) {
                        out[at] += v;
                    } else {
                        out[at] = v;
                    }
                }
            }
        }
        // The next chunk writes over this one's sums.
        if comptime!(c + 1 < tokens.div_ceil(chunk)) {
            sync_cube();
        }
    }
}

/// [`packed_matvec`] for 4-bit weights and int8 activations: `xq`
/// `[tokens, kx/32, 2]` 4-word vectors, each 32-column block of a row as
/// eight words of four signed bytes in the order [`q8_slot`] gives, and
/// `xd` `[tokens, kx/32, 2]` the block's scale `d` and `d · Σq`. A step
/// of a lane is one block: a word's nibbles split into its even and odd
/// elements (`w & 0x0f0f0f0f`, `(w >> 4) & 0x0f0f0f0f`) and each meets
/// its four activation bytes in one `dp4a`, exact in integers; the scale
/// and shift apply once per block and token.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn packed_matvec_q8(
    xq: &Tensor<V4<u32>>,
    xd: &Tensor<f32>,
    words: &Tensor<V4<u32>>,
    scales: &Tensor<f32>,
    shifts: &Tensor<f32>,
    out: &mut Tensor<f32>,
    rows: u32,
    kw4: u32,
    group_steps: u32,
    groups: u32,
    out_cols: u32,
    out_col0: u32,
    n_tokens: u32,
    #[comptime] tokens: usize,
    #[comptime] rpu: usize,
    #[comptime] steps: usize,
    #[comptime] split: usize,
    #[comptime] accumulate: bool,
) {
    let lanes = comptime!(LANES as usize);
    let width = comptime!(split * lanes);
    let lane = UNIT_POS_X as usize;
    let cube = (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize;
    let part = UNIT_POS_Y as usize % split;
    let row0 = (cube * (CUBE_DIM_Y as usize / split) + UNIT_POS_Y as usize / split) * rpu;
    let rows = rows as usize;
    let kw4 = kw4 as usize;
    let group_steps = group_steps as usize;
    let groups = groups as usize;

    let mut acc = Array::<f32>::new(comptime!(tokens * rpu));
    #[unroll]
    for i in 0..comptime!(tokens * rpu) {
        acc[i] = 0.0;
    }
    let mut wv = Array::<V4<u32>>::new(comptime!(steps * rpu));
    // A block's eight activation words of every token, its scale and
    // scaled sum.
    let mut xa = Array::<V4<u32>>::new(tokens);
    let mut xb = Array::<V4<u32>>::new(tokens);
    let mut xs = Array::<f32>::new(tokens);
    let mut xm = Array::<f32>::new(tokens);
    let mut i = part * lanes + lane;
    while i < kw4 {
        load_words(words, &mut wv, i, width, kw4, row0, rows, steps, rpu);
        #[unroll]
        for s in 0..steps {
            let iu = i + s * width;
            if iu < kw4 {
                let g = iu / group_steps;
                #[unroll]
                for t in 0..tokens {
                    let tt = min(t, n_tokens as usize - 1);
                    let at = tt * kw4 + iu;
                    xa[t] = xq[2 * at];
                    xb[t] = xq[2 * at + 1];
                    xs[t] = xd[2 * at];
                    xm[t] = xd[2 * at + 1];
                }
                #[unroll]
                for r in 0..rpu {
                    let row = min(row0 + r, rows - 1);
                    let sc = scales[row * groups + g];
                    let sh = shifts[row * groups + g];
                    let w = wv[s * rpu + r];
                    let mut lo = Array::<i32>::new(4usize);
                    let mut hi = Array::<i32>::new(4usize);
                    #[unroll]
                    for k in 0..4usize {
                        let word = w.extract(k);
                        lo[k] = i32::reinterpret(word & 0x0f0f_0f0fu32);
                        hi[k] = i32::reinterpret((word >> 4u32) & 0x0f0f_0f0fu32);
                    }
                    #[unroll]
                    for t in 0..tokens {
                        let a = xa[t];
                        let b = xb[t];
                        let mut dot = dp4a(lo[0], i32::reinterpret(a.extract(0usize)), 0i32);
                        dot = dp4a(hi[0], i32::reinterpret(a.extract(1usize)), dot);
                        dot = dp4a(lo[1], i32::reinterpret(a.extract(2usize)), dot);
                        dot = dp4a(hi[1], i32::reinterpret(a.extract(3usize)), dot);
                        dot = dp4a(lo[2], i32::reinterpret(b.extract(0usize)), dot);
                        dot = dp4a(hi[2], i32::reinterpret(b.extract(1usize)), dot);
                        dot = dp4a(lo[3], i32::reinterpret(b.extract(2usize)), dot);
                        dot = dp4a(hi[3], i32::reinterpret(b.extract(3usize)), dot);
                        acc[r * tokens + t] += sc * (xs[t] * f32::cast_from(dot)) + sh * xm[t];
                    }
                }
            }
        }
        i += comptime!(steps * width);
    }
    write_sums(
        &acc, out, cube, rows, out_cols, out_col0, n_tokens, tokens, rpu, split, accumulate,
    );
}

/// Where element `c` (0-31) of a 32-column block goes in its eight
/// activation words for [`packed_matvec_q8`]: word `2·(c/8) + c%2`, byte
/// `(c%8)/2`, so that a weight word's even elements (its low nibbles)
/// meet one word and its odd elements the next. Returns word · 4 + byte.
pub const fn q8_slot(c: usize) -> usize {
    (2 * (c / 8) + c % 2) * 4 + (c % 8) / 2
}

/// Block `block` (32 values `v`) of an activation row as
/// [`packed_matvec_q8`] reads it: `q = round(v / d)` with `d = max|v| /
/// 127` (0 for a zero block) into words `8·block …` of `xq` in the
/// [`q8_slot`] order, `d` and `d · Σq` into `xd[2·block]`, `xd[2·block + 1]`.
#[cube]
pub fn quantize_block(v: &Array<f32>, xq: &mut [u32], xd: &mut [f32], block: usize) {
    let mut amax = 0.0f32;
    #[unroll]
    for c in 0..32usize {
        amax = max(amax, f32::abs(v[c]));
    }
    let d = amax / 127.0;
    let mut inv = 0.0f32;
    if amax > 0.0 {
        inv = 127.0 / amax;
    }
    let mut w = Array::<u32>::new(8usize);
    #[unroll]
    for j in 0..8usize {
        w[j] = 0;
    }
    let mut sum = 0i32;
    #[unroll]
    for c in 0..32usize {
        let q = i32::cast_from(f32::round(v[c] * inv));
        sum += q;
        let slot = comptime!(q8_slot(c));
        let byte = (u32::reinterpret(q) & 0xffu32) << comptime!(((slot % 4) * 8) as u32);
        w[comptime!(slot / 4)] |= byte;
    }
    #[unroll]
    for j in 0..8usize {
        xq[block * 8 + j] = w[j];
    }
    xd[2 * block] = d;
    xd[2 * block + 1] = d * f32::cast_from(sum);
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn packed_matmul_tiled(
    x: &Tensor<f32>,
    words: &Tensor<u32>,
    scales: &Tensor<f32>,
    shifts: &Tensor<f32>,
    out: &mut Tensor<f32>,
    tokens: u32,
    rows: u32,
    kw: u32,
    kx: u32,
    group_words: u32,
    groups: u32,
    out_cols: u32,
    out_col0: u32,
    #[comptime] bits: u32,
    #[comptime] accumulate: bool,
) {
    let tile = comptime!(TILE as usize);
    let step = comptime!(STEP as usize);
    // Rows of the staged tiles are padded by one to spread shared-memory banks.
    let pitch = comptime!(STEP as usize + 1);
    let per = comptime!((32 / bits) as usize);
    let mask = comptime!((1u32 << bits) - 1);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let n0 = CUBE_POS_X as usize * tile;
    let t0 = CUBE_POS_Y as usize * tile;
    let tokens = tokens as usize;
    let rows = rows as usize;
    let kw = kw as usize;
    let kx = kx as usize;
    let group_words = group_words as usize;
    let groups = groups as usize;

    let mut xs = Shared::<[f32]>::new_slice(comptime!((TILE as usize) * (STEP as usize + 1)));
    let mut ws = Shared::<[f32]>::new_slice(comptime!((TILE as usize) * (STEP as usize + 1)));
    let unit = ty * tile + tx;
    let mut acc = 0.0f32;
    let mut k0 = 0usize;
    while k0 < kx {
        // 256 units stage 2 × 512 values: 16 rows × 32 columns each.
        #[unroll]
        for half in 0..2usize {
            let e = unit + half * comptime!((TILE * TILE) as usize);
            let r = e / step;
            let c = e % step;
            let t = t0 + r;
            let mut xv = 0.0f32;
            if t < tokens {
                xv = x[t * kx + k0 + c];
            }
            xs[r * pitch + c] = xv;
            let n = n0 + r;
            let mut wv = 0.0f32;
            if n < rows {
                let k = k0 + c;
                let wi = k / per;
                let word = words[n * kw + wi];
                let u = (word >> (((k % per) as u32) * bits)) & mask;
                let g = n * groups + wi / group_words;
                wv = f32::cast_from(u) * scales[g] + shifts[g];
            }
            ws[r * pitch + c] = wv;
        }
        sync_cube();
        #[unroll]
        for c in 0..step {
            acc += xs[ty * pitch + c] * ws[tx * pitch + c];
        }
        sync_cube();
        k0 += step;
    }
    if t0 + ty < tokens && n0 + tx < rows {
        let at = (t0 + ty) * out_cols as usize + out_col0 as usize + n0 + tx;
        if comptime!(accumulate) {
            out[at] += acc;
        } else {
            out[at] = acc;
        }
    }
}

#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn packed_rows_kernel(
    ids: &Tensor<u32>,
    words: &Tensor<u32>,
    scales: &Tensor<f32>,
    shifts: &Tensor<f32>,
    out: &mut Tensor<f32>,
    n: u32,
    kw: u32,
    group_words: u32,
    groups: u32,
    start: u32,
    part_rows: u32,
    #[comptime] bits: u32,
) {
    let per = comptime!((32 / bits) as usize);
    let mask = comptime!((1u32 << bits) - 1);
    let pos = ((CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) * CUBE_DIM_X + UNIT_POS_X) as usize;
    let kw = kw as usize;
    if pos < n as usize * kw {
        let i = pos / kw;
        let w = pos % kw;
        let id = ids[i];
        // Ids of other parts are theirs to write.
        if id >= start && id - start < part_rows {
            let row = (id - start) as usize;
            let word = words[row * kw + w];
            let g = row * (groups as usize) + w / (group_words as usize);
            let s = scales[g];
            let z = shifts[g];
            #[unroll]
            for j in 0..per {
                let u = (word >> comptime!(j as u32 * bits)) & mask;
                out[pos * per + j] = f32::cast_from(u) * s + z;
            }
        }
    }
}
