//! 4-bit weights repacked in tiles of 16 rows for int8 activations on
//! AVX-512 VNNI: one 64-byte load holds 8 columns of 16 rows, one 32-bit
//! lane per row (its low nibbles columns `k..k+4`, its high nibbles
//! `k+4..k+8`), so `vpdpbusd` against four activation bytes broadcast to
//! every lane sums four products into each row's lane. A load serves every
//! token of the pass (up to [`TOKENS_PER_PASS`]); there is no horizontal
//! sum, and a tile's 16 outputs come out as one vector. Per group of the
//! weight, each token's integer sums are scaled once:
//! `y += (Σ u·xq − zp · Σ xq) · scale · sx`, with `xq = round(x / sx)`,
//! `sx = max|x| / 127` over the group (the same rounding as `Kernel::Q8`'s
//! row loop, so the same error bound).
//!
//! Decode steps (a token or a few) read each weight once from memory;
//! prompt chunks take the weights tile by tile and run every token over a
//! tile while it is in cache (the unpacking of a load is shared by the
//! pass's tokens). This is the layout llama.cpp's repacked Q4_0 kernels
//! use on x86, for the same reasons. Where the CPU has AMX-INT8, chunks of
//! [`AMX_MIN_TOKENS`] tokens or more go through the tile unit over the same
//! tiles ([`super::amx`]), with the same result to the bit.

use rayon::prelude::*;

use super::Packed;
use super::amx::{AMX_MIN_TOKENS, amx_group_fits, amx_step, amx_supported, block_rows};

/// Rows per tile (one 32-bit lane each of a 512-bit register).
pub const TILE_ROWS: usize = 16;

/// Columns per 64-byte load.
const COLS_PER_LOAD: usize = 8;

/// Tokens one pass over a tile's loads serves (each load is unpacked once
/// for them all).
pub const TOKENS_PER_PASS: usize = 8;

/// Tiles per task of the CPU pool.
const TILES_PER_TASK: usize = 4;

/// A 4-bit weight in tiles of [`TILE_ROWS`] rows (see the module docs).
pub struct Tiled {
    pub rows: usize,
    pub cols: usize,
    group: usize,
    tiles: usize,
    /// Per tile, per 8 columns: 64 bytes (rows past the weight hold zeros).
    q: Vec<u8>,
    /// Per tile, per group: 16 scales as f16 bits (the bake's own values,
    /// so exact; half the bytes of f32 for the decode step to read).
    scales: Vec<u16>,
    /// The zero points, laid out as the scales.
    zps: ZeroPoints,
    /// Prompt chunks (from [`AMX_MIN_TOKENS`] tokens) go through AMX
    /// ([`super::amx`]) rather than VNNI passes.
    amx: bool,
}

/// A weight's zero points: one for every row and group (a symmetric
/// weight's: no array for a step to read), or per row and group (exact in
/// f16: they are small integers).
enum ZeroPoints {
    Same(f32),
    PerGroup(Vec<u16>),
}

/// Whether this CPU runs [`Tiled`]'s kernel (AVX-512 with VNNI and BW).
pub fn tiled_supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *HAS.get_or_init(|| {
            is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vnni")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Tiled {
    /// `p` repacked; None unless it is 4-bit with groups of whole loads
    /// and this CPU has the kernel.
    pub fn from_packed(p: &Packed) -> Option<Tiled> {
        if p.bits != 4 || !p.group.is_multiple_of(COLS_PER_LOAD) || !tiled_supported() {
            return None;
        }
        let (rows, cols, group) = (p.rows, p.cols, p.group);
        let tiles = rows.div_ceil(TILE_ROWS);
        let groups = cols / group;
        let loads = cols / COLS_PER_LOAD;
        let mut q = super::huge::zeroed(tiles * loads * 64);
        let mut scales = vec![0u16; tiles * groups * TILE_ROWS];
        let same_zp = p.zps.first().filter(|z| p.zps.iter().all(|v| v == *z));
        let mut zps = vec![0u16; if same_zp.is_some() { 0 } else { scales.len() }];
        let rb = cols / 2;
        let nibble = |r: usize, c: usize| {
            let b = p.q[r * rb + c / 2];
            if c.is_multiple_of(2) { b & 15 } else { b >> 4 }
        };
        for r in 0..rows {
            let (tile, lane) = (r / TILE_ROWS, r % TILE_ROWS);
            for l in 0..loads {
                let at = (tile * loads + l) * 64 + 4 * lane;
                let k = l * COLS_PER_LOAD;
                for i in 0..4 {
                    q[at + i] = nibble(r, k + i) | (nibble(r, k + 4 + i) << 4);
                }
            }
            for g in 0..groups {
                let at = (tile * groups + g) * TILE_ROWS + lane;
                scales[at] = half::f16::from_f32(p.scales[r * groups + g]).to_bits();
                if let Some(z) = zps.get_mut(at) {
                    *z = half::f16::from_f32(p.zps[r * groups + g]).to_bits();
                }
            }
        }
        let zps = match same_zp {
            Some(&z) => ZeroPoints::Same(z),
            None => ZeroPoints::PerGroup(zps),
        };
        Some(Tiled {
            rows,
            cols,
            group,
            tiles,
            q,
            scales,
            zps,
            amx: amx_supported() && amx_group_fits(group),
        })
    }

    /// Whether prompt chunks run on AMX here.
    pub fn uses_amx(&self) -> bool {
        self.amx
    }

    /// This weight with every product in VNNI passes (to compare with AMX).
    pub fn without_amx(mut self) -> Tiled {
        self.amx = false;
        self
    }

    /// Bytes kept: the values, the scales and zero points.
    pub fn resident_bytes(&self) -> usize {
        let zps = match &self.zps {
            ZeroPoints::Same(_) => 0,
            ZeroPoints::PerGroup(z) => z.len(),
        };
        self.q.len() + 2 * (self.scales.len() + zps)
    }

    /// `x`: `[tokens, cols]` row-major → `[tokens, rows]`, activations
    /// rounded to int8 per group.
    pub fn matmul(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        let mut out = Vec::new();
        self.matmul_into(
            x,
            tokens,
            &mut TileWork::default(),
            Epilogue::Store(&mut out),
        );
        out
    }

    /// [`Tiled::matmul`] with `work`'s buffers reused (a prompt chunk's
    /// are megabytes, and fresh pages each call cost page faults), the
    /// result going where `epilogue` says as the tiles' outputs are put in
    /// row order (one pass over them).
    pub fn matmul_into(
        &self,
        x: &[f32],
        tokens: usize,
        work: &mut TileWork,
        epilogue: Epilogue<'_>,
    ) {
        assert_eq!(x.len(), tokens * self.cols, "activation size");
        let acts = &mut work.acts;
        acts.fill(x, self.cols, self.group);
        let amx = self.amx && tokens >= AMX_MIN_TOKENS;
        if amx {
            let step = amx_step(self.group);
            block_rows(&acts.xq, tokens, self.cols, step, &mut acts.blocked);
        }
        let groups = self.cols / self.group;
        let loads = self.cols / COLS_PER_LOAD;
        let tile_bytes = loads * 64;
        let tile_sc = groups * TILE_ROWS;
        // [tiles, tokens, 16], then reordered to [tokens, rows].
        let by_tile = sized(&mut work.by_tile, self.tiles * tokens * TILE_ROWS);
        let acts = &*acts;
        by_tile
            .par_chunks_mut(tokens * TILE_ROWS * TILES_PER_TASK)
            .enumerate()
            .for_each(|(task, out)| {
                for (i, o) in out.chunks_mut(tokens * TILE_ROWS).enumerate() {
                    let tile = task * TILES_PER_TASK + i;
                    let q = &self.q[tile * tile_bytes..(tile + 1) * tile_bytes];
                    let at = tile * tile_sc..(tile + 1) * tile_sc;
                    let sz = TileScales {
                        scales: &self.scales[at.clone()],
                        zps: match &self.zps {
                            ZeroPoints::Same(z) => Err(*z),
                            ZeroPoints::PerGroup(v) => Ok(&v[at]),
                        },
                    };
                    if amx {
                        self.tile_amx(q, &sz, acts, tokens, o);
                        continue;
                    }
                    let mut t0 = 0;
                    while t0 < tokens {
                        let n = (tokens - t0).min(TOKENS_PER_PASS);
                        let o = &mut o[t0 * TILE_ROWS..(t0 + n) * TILE_ROWS];
                        self.pass(q, &sz, acts, t0, n, o);
                        t0 += n;
                    }
                }
            });
        let (rows, by_tile) = (self.rows, &*by_tile);
        // Token t's values of tile k: by_tile[(k · tokens + t) · 16..][..16].
        let row_of = |t: usize, o: &mut [f32], f: &dyn Fn(&mut [f32], &[f32])| {
            for (k, o) in o.chunks_mut(TILE_ROWS).enumerate() {
                let src = &by_tile[(k * tokens + t) * TILE_ROWS..];
                f(o, &src[..o.len()]);
            }
        };
        // A prompt chunk's outputs are megabytes: put in order on the pool.
        let each_row = |out: &mut [f32], width: usize, f: &(dyn Fn(usize, &mut [f32]) + Sync)| {
            if tokens == 1 {
                f(0, out);
            } else {
                out.par_chunks_mut(width)
                    .enumerate()
                    .for_each(|(t, o)| f(t, o));
            }
        };
        match epilogue {
            Epilogue::Store(out) => {
                let out = sized(out, tokens * rows);
                each_row(out, rows, &|t, o| {
                    row_of(t, o, &|o, y| o.copy_from_slice(y))
                });
            }
            Epilogue::Add(out) => {
                assert_eq!(out.len(), tokens * rows, "residual size");
                let add = |o: &mut [f32], y: &[f32]| o.iter_mut().zip(y).for_each(|(o, y)| *o += y);
                each_row(out, rows, &|t, o| row_of(t, o, &add));
            }
            Epilogue::Gated { out, gate } if (rows / 2).is_multiple_of(TILE_ROWS) => {
                // Gate tile k and up tile k + half/16 make outputs 16k..16k+16.
                let half = rows / 2;
                let up_tiles = half / TILE_ROWS;
                let out = sized(out, tokens * half);
                each_row(out, half, &|t, o| {
                    for (k, o) in o.chunks_mut(TILE_ROWS).enumerate() {
                        let g = &by_tile[(k * tokens + t) * TILE_ROWS..][..TILE_ROWS];
                        let u = &by_tile[((k + up_tiles) * tokens + t) * TILE_ROWS..][..TILE_ROWS];
                        gate(o, g, u);
                    }
                });
            }
            Epilogue::Gated { out, gate } => {
                let mut y = Vec::new();
                let all = sized(&mut y, tokens * rows);
                each_row(all, rows, &|t, o| {
                    row_of(t, o, &|o, y| o.copy_from_slice(y))
                });
                Epilogue::Gated { out, gate }.apply(&y, rows);
            }
        }
    }

    /// Every token over one tile into `out` (`[tokens, 16]`), on AMX.
    fn tile_amx(
        &self,
        q: &[u8],
        sz: &TileScales,
        acts: &QuantizedRows,
        tokens: usize,
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let args = super::amx::AmxArgs {
                q,
                scales: sz.scales,
                zps: sz.zps,
                xq: &acts.blocked,
                sx: &acts.sx,
                sq: &acts.sq,
                cols: self.cols,
                group: self.group,
                tokens,
            };
            // SAFETY: `amx` is set only where amx_supported() said yes and
            // the group fits; the slices are one tile's and the rounded
            // activations in whole blocks (block_rows), sizes checked in
            // tile_amx.
            unsafe { super::amx::tile_amx(&args, out) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (q, sz, acts, tokens, out);
            unreachable!("AMX is only used on x86-64");
        }
    }

    /// Tokens `t0..t0+n` over one tile into `out` (`[n, 16]`).
    fn pass(
        &self,
        q: &[u8],
        sz: &TileScales,
        acts: &QuantizedRows,
        t0: usize,
        n: usize,
        out: &mut [f32],
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            let args = PassArgs {
                q,
                sz,
                acts,
                t0,
                group: self.group,
            };
            // SAFETY: Tiled exists only where tiled_supported() found
            // AVX-512F/BW/VNNI; the slices are one tile's (checked sizes
            // below), and `out` holds n × 16 values.
            unsafe {
                match n {
                    1 => pass_vnni::<1>(&args, out),
                    2 => pass_vnni::<2>(&args, out),
                    3 => pass_vnni::<3>(&args, out),
                    4 => pass_vnni::<4>(&args, out),
                    5 => pass_vnni::<5>(&args, out),
                    6 => pass_vnni::<6>(&args, out),
                    7 => pass_vnni::<7>(&args, out),
                    _ => pass_vnni::<8>(&args, out),
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (q, sz, acts, t0, n, out);
            unreachable!("Tiled is only built where its kernel runs");
        }
    }
}

/// Activations from which rounding runs on the pool (a decode step's few
/// thousand values take less than the pool's round trip).
const PARALLEL_ROUNDING: usize = 1 << 15;

/// Activations rounded to int8 per group: per token the values, per token
/// and group the scale and the sum of the rounded values.
#[derive(Default)]
struct QuantizedRows {
    xq: Vec<i8>,
    /// `xq` as AMX's A tiles, for a chunk that goes through AMX.
    blocked: Vec<i8>,
    sx: Vec<f32>,
    sq: Vec<f32>,
    cols: usize,
    groups: usize,
}

impl QuantizedRows {
    /// `x` rounded, in this value's buffers. Groups are rounded in
    /// parallel for a prompt chunk (thousands).
    fn fill(&mut self, x: &[f32], cols: usize, group: usize) {
        let n = x.len() / group;
        self.cols = cols;
        self.groups = cols / group;
        self.xq.resize(x.len(), 0);
        self.sx.resize(n, 0.0);
        self.sq.resize(n, 0.0);
        let round = |((g, q), (sx, sq)): GroupOut<'_>| {
            let (s, sum) = super::round_group(g, q);
            (*sx, *sq) = (s, sum as f32);
        };
        let (xq, sx, sq) = (
            &mut self.xq[..x.len()],
            &mut self.sx[..n],
            &mut self.sq[..n],
        );
        if x.len() >= PARALLEL_ROUNDING {
            x.par_chunks_exact(group)
                .zip(xq.par_chunks_exact_mut(group))
                .zip(sx.par_iter_mut().zip(sq.par_iter_mut()))
                .for_each(round);
        } else {
            x.chunks_exact(group)
                .zip(xq.chunks_exact_mut(group))
                .zip(sx.iter_mut().zip(sq.iter_mut()))
                .for_each(round);
        }
    }
}

/// Where a product's `[tokens, rows]` result goes.
pub enum Epilogue<'a> {
    /// Into this buffer, resized to `[tokens, rows]`.
    Store(&'a mut Vec<f32>),
    /// Added to these `[tokens, rows]` values (a residual).
    Add(&'a mut [f32]),
    /// A stacked gate and up projection (rows `0..rows/2` and
    /// `rows/2..rows`): `gate(out_row, gate_row, up_row)` per token, into
    /// this buffer resized to `[tokens, rows / 2]`.
    Gated {
        out: &'a mut Vec<f32>,
        gate: fn(&mut [f32], &[f32], &[f32]),
    },
}

impl Epilogue<'_> {
    /// Applies to a result `y` already in row order (`[tokens, rows]`).
    pub fn apply(self, y: &[f32], rows: usize) {
        match self {
            Epilogue::Store(out) => {
                out.clear();
                out.extend_from_slice(y);
            }
            Epilogue::Add(out) => out.iter_mut().zip(y).for_each(|(o, y)| *o += y),
            Epilogue::Gated { out, gate } => {
                let half = rows / 2;
                let out = sized(out, y.len() / 2);
                for (o, y) in out.chunks_exact_mut(half).zip(y.chunks_exact(rows)) {
                    let (g, u) = y.split_at(half);
                    gate(o, g, u);
                }
            }
        }
    }
}

/// A tiled product's reusable buffers ([`Tiled::matmul_into`]).
#[derive(Default)]
pub struct TileWork {
    acts: QuantizedRows,
    by_tile: Vec<f32>,
}

/// `v` as `n` values: kept as it is when it already has `n` (the caller
/// overwrites every one), else zeroed to `n`.
pub fn sized(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() != n {
        v.clear();
        v.resize(n, 0.0);
    }
    v
}

/// One tile's scales and zero points (f16 bits, per group 16 rows), or
/// the one zero point of every row.
struct TileScales<'a> {
    scales: &'a [u16],
    zps: Result<&'a [u16], f32>,
}

/// One group's activations, and where its rounded values, scale and sum go.
type GroupOut<'a> = ((&'a [f32], &'a mut [i8]), (&'a mut f32, &'a mut f32));

#[cfg(target_arch = "x86_64")]
struct PassArgs<'a> {
    q: &'a [u8],
    sz: &'a TileScales<'a>,
    acts: &'a QuantizedRows,
    t0: usize,
    group: usize,
}

/// `N` tokens over one tile: per load, the low and the high nibbles
/// against each token's broadcast activation bytes, into integer
/// accumulators (one to four dependency chains per token); per group, the
/// sums scaled into one f32 accumulator per token.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn pass_vnni<const N: usize>(a: &PassArgs<'_>, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let acts = a.acts;
    let (cols, groups) = (acts.cols, acts.groups);
    let per_group = a.group / COLS_PER_LOAD;
    let per_tile = groups * TILE_ROWS;
    assert!(a.q.len() >= groups * per_group * 64 && a.sz.scales.len() >= per_tile);
    if let Ok(z) = a.sz.zps {
        assert!(z.len() >= per_tile);
    }
    assert!(out.len() >= N * TILE_ROWS && acts.xq.len() >= (a.t0 + N) * cols);
    unsafe {
        let mask = _mm512_set1_epi8(0x0F);
        let xrow: [*const i8; N] = std::array::from_fn(|t| acts.xq.as_ptr().add((a.t0 + t) * cols));
        let mut total = [_mm512_setzero_ps(); N];
        let mut qp = a.q.as_ptr();
        // Per token, chains of dependent vpdpbusd: one or two tokens keep
        // four each (low and high nibbles, of even and odd loads apart:
        // fewer would bound the pass by vpdpbusd's latency), three or four
        // tokens two each (low, high), more tokens one each (more chains
        // would not fit the 32 registers). Every choice is a constant of
        // `N`, so the accumulators stay in registers.
        let odd_apart = N <= 2;
        let hi_apart = N <= 4;
        for g in 0..groups {
            let mut lo0 = [_mm512_setzero_si512(); N];
            let mut hi0 = [_mm512_setzero_si512(); N];
            let mut lo1 = [_mm512_setzero_si512(); N];
            let mut hi1 = [_mm512_setzero_si512(); N];
            let k0 = g * a.group;
            // One load of 8 columns × 16 rows into (lo, hi) for every token.
            macro_rules! load {
                ($l:expr, $lo:ident, $hi:ident) => {
                    super::rows::prefetch(qp.wrapping_add(super::rows::PREFETCH_AHEAD));
                    let w = _mm512_loadu_si512(qp as *const __m512i);
                    let wl = _mm512_and_si512(w, mask);
                    let wh = _mm512_and_si512(_mm512_srli_epi16::<4>(w), mask);
                    let k = k0 + $l * COLS_PER_LOAD;
                    for t in 0..N {
                        let xl =
                            _mm512_broadcastd_epi32(_mm_loadu_si32(xrow[t].add(k) as *const u8));
                        let xh = _mm512_broadcastd_epi32(_mm_loadu_si32(
                            xrow[t].add(k + 4) as *const u8
                        ));
                        $lo[t] = _mm512_dpbusd_epi32($lo[t], wl, xl);
                        if hi_apart {
                            $hi[t] = _mm512_dpbusd_epi32($hi[t], wh, xh);
                        } else {
                            $lo[t] = _mm512_dpbusd_epi32($lo[t], wh, xh);
                        }
                    }
                    qp = qp.add(64);
                };
            }
            let mut l = 0;
            while l + 1 < per_group {
                load!(l, lo0, hi0);
                if odd_apart {
                    load!(l + 1, lo1, hi1);
                } else {
                    load!(l + 1, lo0, hi0);
                }
                l += 2;
            }
            if l < per_group {
                load!(l, lo0, hi0);
            }
            let f16s = |v: &[u16]| {
                _mm512_cvtph_ps(_mm256_loadu_si256(
                    v.as_ptr().add(g * TILE_ROWS) as *const __m256i
                ))
            };
            let sc = f16s(a.sz.scales);
            let zp = match a.sz.zps {
                Ok(z) => f16s(z),
                Err(z) => _mm512_set1_ps(z),
            };
            for t in 0..N {
                let at = (a.t0 + t) * groups + g;
                let sum = _mm512_add_epi32(
                    _mm512_add_epi32(lo0[t], hi0[t]),
                    _mm512_add_epi32(lo1[t], hi1[t]),
                );
                let sums = _mm512_cvtepi32_ps(sum);
                let centered = _mm512_fnmadd_ps(zp, _mm512_set1_ps(acts.sq[at]), sums);
                let s = _mm512_mul_ps(sc, _mm512_set1_ps(acts.sx[at]));
                total[t] = _mm512_fmadd_ps(centered, s, total[t]);
            }
        }
        for (t, v) in total.iter().enumerate() {
            _mm512_storeu_ps(out.as_mut_ptr().add(t * TILE_ROWS), *v);
        }
    }
}
