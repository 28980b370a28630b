//! Shard B's CPU kernel for NNCF-layout integer weights, kept packed:
//! `y = x · Wᵀ` with `W[r, c] = (q[r, c] - zp[r, g]) · scale[r, g]`,
//! `g = c / group`, for 4-bit (two values per byte, element 2k in the low
//! nibble, as the baked store and OpenVINO keep them) and 8-bit weights,
//! symmetric (signed) or asymmetric (unsigned with zero points).
//!
//! At load the values are made unsigned (a signed i4 nibble XOR 8, a
//! signed i8 byte XOR 0x80, with the zero point 8 or 128), so one kernel
//! computes every scheme as `scale · (Σ u·x − zp · Σ x)` per group. The
//! activation row is split once into its even and odd elements (the low and
//! the high nibbles of a byte), and group sums of x are computed once per
//! token. Rows are split over the CPU pool (rayon); inside a row an AVX2+FMA
//! loop (runtime detection) widens 8 bytes at a time to f32 and multiplies
//! them into eight-lane accumulators; a scalar loop is the fallback. With
//! AVX-512 and 4-bit groups of 128 (or a multiple), a faster loop looks the
//! weights up instead: per group a 16-entry table of the dequantized values
//! `(u − zp) · scale` sits in one register and `vpermps` picks each lane's
//! weight by its nibble, so the products are those of the dequantized
//! weight itself (no zero-point term, no conversion, no per-group scale).

use rayon::prelude::*;

use crate::bake::quant::unpack_u4;
use crate::bake::store::StoredTensor;

mod amx;
mod huge;
mod load;
mod rows;
mod tiled;
pub use amx::{AMX_ENV, AMX_MIN_TOKENS, amx_supported};
pub use load::{PackedLayer, load_stacked};
#[cfg(target_arch = "x86_64")]
pub(crate) use rows::has_avx512;
use rows::*;
pub use tiled::{Epilogue, TILE_ROWS, TileWork, Tiled, sized, tiled_supported};

/// An integer weight as the kernel reads it.
#[derive(Debug, Clone)]
pub struct Packed {
    pub rows: usize,
    pub cols: usize,
    /// Elements per scale along a row (cols when per channel).
    pub group: usize,
    /// 4 or 8.
    pub bits: u32,
    /// Unsigned values: rows × cols/2 bytes (4-bit) or rows × cols (8-bit).
    q: Vec<u8>,
    /// rows × groups.
    scales: Vec<f32>,
    /// rows × groups zero points (unsigned domain).
    zps: Vec<f32>,
}

/// A packed weight laid out for the GPU kernels ([`Packed::device_layout`]).
pub struct DeviceLayout {
    /// rows × cols_padded·bits/32 words.
    pub words: Vec<u32>,
    /// rows × groups.
    pub scales: Vec<f32>,
    /// rows × groups: `-scale · zero point`.
    pub shifts: Vec<f32>,
    pub cols_padded: usize,
    /// Columns per group after padding (cols_padded when per channel).
    pub group_cols: usize,
}

impl Packed {
    /// Take a stored integer weight (None for f16/f32 weights).
    pub fn from_stored(t: &StoredTensor) -> Option<Packed> {
        let s = t.scheme;
        if !s.is_int() {
            return None;
        }
        let (rows, cols, group) = (t.rows(), t.cols(), t.group);
        let groups = rows * (cols / group);
        let bits = s.bits() as u32;
        if bits == 4 && (cols % 2 != 0 || group % 2 != 0) {
            return None;
        }
        let scales: Vec<f32> = t
            .scales?
            .chunks_exact(2)
            .take(groups)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect();
        let signed = !s.is_asym();
        let mut q = huge::copied(t.data);
        match (bits, signed) {
            (4, true) => q.iter_mut().for_each(|b| *b ^= 0x88),
            (8, true) => q.iter_mut().for_each(|b| *b ^= 0x80),
            _ => {}
        }
        let zps: Vec<f32> = if signed {
            vec![if bits == 4 { 8.0 } else { 128.0 }; groups]
        } else {
            let z = t.zero_points?;
            let z = if bits == 4 {
                unpack_u4(z, groups, false)
            } else {
                z.iter().take(groups).copied().collect()
            };
            z.into_iter().map(f32::from).collect()
        };
        if scales.len() != groups || zps.len() != groups {
            return None;
        }
        Some(Packed {
            rows,
            cols,
            group,
            bits,
            q,
            scales,
            zps,
        })
    }

    /// Bytes kept: the values, the scales and zero points (f32 each).
    pub fn resident_bytes(&self) -> usize {
        self.q.len() + 4 * self.scales.len() + 4 * self.zps.len()
    }

    /// The weight as the GPU kernels hold it (see `super::cube`): rows
    /// padded with zeros to a multiple of `align` columns, read as
    /// little-endian `u32` words; per group a scale and a shift
    /// (`-scale · zero point`). None when a group smaller than the row is
    /// not a multiple of `align` columns.
    pub fn device_layout(&self, align: usize) -> Option<DeviceLayout> {
        let per_channel = self.group == self.cols;
        if !per_channel && !self.group.is_multiple_of(align) {
            return None;
        }
        let cols_padded = self.cols.div_ceil(align) * align;
        let padded_bytes = cols_padded * self.bits as usize / 8;
        let mut words = Vec::with_capacity(self.rows * padded_bytes / 4);
        let mut row = vec![0u8; padded_bytes];
        for r in 0..self.rows {
            let src = &self.q[r * self.row_bytes()..(r + 1) * self.row_bytes()];
            row[..src.len()].copy_from_slice(src);
            words.extend(
                row.chunks_exact(4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            );
        }
        let shifts = self
            .scales
            .iter()
            .zip(&self.zps)
            .map(|(s, z)| -s * z)
            .collect();
        Some(DeviceLayout {
            words,
            scales: self.scales.clone(),
            shifts,
            cols_padded,
            group_cols: if per_channel { cols_padded } else { self.group },
        })
    }

    /// Weights of one width, bits and group as one, their rows stacked in
    /// order (None when they differ or there are none).
    pub fn stack(parts: &[Packed]) -> Option<Packed> {
        let first = parts.first()?;
        if parts
            .iter()
            .any(|p| (p.cols, p.group, p.bits) != (first.cols, first.group, first.bits))
        {
            return None;
        }
        Some(Packed {
            rows: parts.iter().map(|p| p.rows).sum(),
            cols: first.cols,
            group: first.group,
            bits: first.bits,
            q: {
                let mut q = huge::zeroed(parts.iter().map(|p| p.q.len()).sum());
                let mut at = 0;
                for p in parts {
                    q[at..at + p.q.len()].copy_from_slice(&p.q);
                    at += p.q.len();
                }
                q
            },
            scales: parts
                .iter()
                .flat_map(|p| p.scales.iter().copied())
                .collect(),
            zps: parts.iter().flat_map(|p| p.zps.iter().copied()).collect(),
        })
    }

    fn row_bytes(&self) -> usize {
        self.cols * self.bits as usize / 8
    }

    /// Row `r`'s values, scales and zero points.
    fn row_parts(&self, r: usize) -> RowParts<'_> {
        let groups = self.cols / self.group;
        let rb = self.row_bytes();
        (
            &self.q[r * rb..(r + 1) * rb],
            &self.scales[r * groups..(r + 1) * groups],
            &self.zps[r * groups..(r + 1) * groups],
        )
    }

    /// Row `r` as f32 (embedding lookups, tests).
    pub fn row(&self, r: usize) -> Vec<f32> {
        let groups = self.cols / self.group;
        let qr = &self.q[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        (0..self.cols)
            .map(|c| {
                let u = if self.bits == 4 {
                    let b = qr[c / 2];
                    if c % 2 == 0 { b & 15 } else { b >> 4 }
                } else {
                    qr[c]
                } as f32;
                let g = r * groups + c / self.group;
                (u - self.zps[g]) * self.scales[g]
            })
            .collect()
    }

    /// `x`: `[tokens, cols]` row-major → `[tokens, rows]`, with the best
    /// kernel this CPU has.
    pub fn matmul(&self, x: &[f32], tokens: usize) -> Vec<f32> {
        self.matmul_with(x, tokens, Kernel::Best)
    }

    /// [`Packed::matmul`] with a chosen inner loop (tests compare both).
    pub fn matmul_with(&self, x: &[f32], tokens: usize, kernel: Kernel) -> Vec<f32> {
        assert_eq!(x.len(), tokens * self.cols, "activation size");
        // Per token: the activation's even and odd elements (4-bit), and
        // its sum over each group.
        // Int8 activations only where groups hold whole SIMD steps (4-bit:
        // 32 bytes, 8-bit: 16 bytes); anything else takes the f32 loop.
        let kernel = match kernel {
            k if k.is_q8() && !q8_fits(self.bits, self.group) => Kernel::Best,
            k => k,
        };
        // Kernel::Best takes the lookup loop where it fits.
        let table = kernel == Kernel::Best && table_fits(self.bits, self.group);
        let prep: Vec<Prepared> = x
            .chunks_exact(self.cols)
            .map(|xt| Prepared::new(xt, self.bits, self.group, kernel.is_q8(), table))
            .collect();
        // Output is [tokens, rows]; work goes by blocks of rows.
        const BLOCK: usize = 16;
        let mut by_row = vec![0f32; self.rows * tokens];
        by_row
            .par_chunks_mut(BLOCK * tokens)
            .enumerate()
            .for_each(|(b, chunk)| {
                let r0 = b * BLOCK;
                let n = chunk.len() / tokens;
                // Wide rows: the lookup loop takes four rows per pass
                // (each activation load serves four rows).
                let quads = if table && self.cols > TABLE_WIDE_COLS {
                    n / 4
                } else {
                    0
                };
                for quad in 0..quads {
                    let rows: [usize; 4] = std::array::from_fn(|k| r0 + 4 * quad + k);
                    let parts = rows.map(|r| self.row_parts(r));
                    for (t, p) in prep.iter().enumerate() {
                        let y = rows_dot_table(parts, p, self.group);
                        for (k, v) in y.into_iter().enumerate() {
                            chunk[(4 * quad + k) * tokens + t] = v;
                        }
                    }
                }
                for (i, o) in chunk.chunks_mut(tokens).enumerate().skip(4 * quads) {
                    let (qr, sc, zp) = self.row_parts(r0 + i);
                    for (t, p) in prep.iter().enumerate() {
                        o[t] = match kernel {
                            Kernel::Best if table => {
                                rows_dot_table([(qr, sc, zp)], p, self.group)[0]
                            }
                            Kernel::Best | Kernel::Avx2 => {
                                row_dot(qr, sc, zp, p, self.bits, self.group)
                            }
                            Kernel::Q8 => row_dot_q8(qr, sc, zp, p, self.bits, self.group, true),
                            Kernel::Q8Avx2 => {
                                row_dot_q8(qr, sc, zp, p, self.bits, self.group, false)
                            }
                            Kernel::Q8Scalar => {
                                row_dot_q8_scalar(qr, sc, zp, p, self.bits, self.group)
                            }
                            Kernel::Scalar => row_dot_scalar(qr, sc, zp, p, self.bits, self.group),
                        };
                    }
                }
            });
        if tokens == 1 {
            // [rows, 1] is already [1, rows] (every decode step).
            return by_row;
        }
        let mut out = vec![0f32; tokens * self.rows];
        for r in 0..self.rows {
            for t in 0..tokens {
                out[t * self.rows + r] = by_row[r * tokens + t];
            }
        }
        out
    }
}

/// Which inner loop [`Packed::matmul_with`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// f32 activations, exact: the AVX-512 lookup loop for 4-bit weights in
    /// groups of 128 (or a multiple) where the CPU has AVX-512F, else AVX2 +
    /// FMA where it has them, else scalar.
    Best,
    /// Kernel::Best without the lookup loop (tests compare the loops).
    Avx2,
    Scalar,
    /// Integer weights times activations quantized per group to int8
    /// (scale = max|x| / 127, round to nearest): integer dot products
    /// (AVX2 `vpmaddubsw` + `vpmaddwd` for 4-bit, `vpmaddwd` for 8-bit, or
    /// scalar), 2-6× fewer instructions per weight than the f32 loop; the result differs from the exact
    /// product by at most Σ_g Σ|w| · max_g|x| / 254 (the activation's
    /// rounding), as OpenVINO's CPU plugin does with dynamic quantization.
    /// AVX-512 VNNI (`vpdpbusd`) where the CPU has it, else AVX2, else
    /// scalar: the same integer sums either way.
    Q8,
    /// Kernel::Q8 without VNNI (tests compare the loops).
    Q8Avx2,
    /// Kernel::Q8 in plain Rust.
    Q8Scalar,
}

impl Kernel {
    pub fn is_q8(self) -> bool {
        matches!(self, Kernel::Q8 | Kernel::Q8Avx2 | Kernel::Q8Scalar)
    }
}

/// The inner loops [`Kernel::Best`] and [`Kernel::Q8`] pick on this CPU.
pub fn best_kernel_name() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if amx_supported() {
            return "avx512 lookup / avx2+fma (f32 activations), avx512-vnni (int8 activations), amx-int8 (int8 prompt chunks)";
        }
        if has_vnni() && has_avx512() {
            return "avx512 lookup / avx2+fma (f32 activations), avx512-vnni (int8 activations)";
        }
        if has_avx512() {
            return "avx512 lookup / avx2+fma";
        }
        if has_vnni() {
            return "avx2+fma (f32 activations), avx512-vnni (int8 activations)";
        }
        if has_avx2() {
            return "avx2+fma";
        }
    }
    "scalar"
}

/// One group of activations rounded to int8 (int8 activations, every
/// kernel): `sx = max|x| / 127` (1 for an all-zero group), `q = x / sx`
/// rounded to nearest (ties to even) and clamped to ±127, so
/// `|x − sx·q| ≤ sx / 2`. Returns `sx` and `Σ q`. Built for AVX-512 where
/// the CPU has it (the baseline build has no vector rounding: a call per
/// value).
pub(super) fn round_group(g: &[f32], q: &mut [i8]) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: AVX-512F (and AVX2) were detected at run time.
            return unsafe { round_group_avx512(g, q) };
        }
    }
    round_group_body(g, q)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn round_group_avx512(g: &[f32], q: &mut [i8]) -> (f32, i32) {
    round_group_body(g, q)
}

#[inline(always)]
fn round_group_body(g: &[f32], q: &mut [i8]) -> (f32, i32) {
    let m = g.iter().fold(0f32, |m, v| m.max(v.abs()));
    let sx = if m > 0.0 { m / 127.0 } else { 1.0 };
    let mut sum = 0i32;
    for (v, q) in g.iter().zip(q) {
        let r = (v / sx).round_ties_even().clamp(-127.0, 127.0);
        *q = r as i8;
        sum += r as i32;
    }
    (sx, sum)
}

/// One token's activation, laid out for the kernel.
struct Prepared {
    /// 4-bit: even elements then odd elements, each group contiguous
    /// (group/2 evens, group/2 odds); for the lookup loop, per block of 128
    /// elements, x[8i + j] at 16j + i (the order the loop's lanes take the
    /// nibbles of 64 bytes in); 8-bit: x as is.
    x: Vec<f32>,
    /// Σ x per group.
    sums: Vec<f32>,
    /// Kernel::Q8: x / sx rounded to i8 (same layout as `x`), sx per group,
    /// and Σ of the rounded values per group.
    xq: Vec<i8>,
    sx: Vec<f32>,
    sq: Vec<i32>,
}

impl Prepared {
    fn new(x: &[f32], bits: u32, group: usize, q8: bool, table: bool) -> Prepared {
        let mut p = Prepared::exact(x, bits, group, table && !q8);
        if q8 {
            p.xq = vec![0; p.x.len()];
            for (g, q) in p.x.chunks_exact(group).zip(p.xq.chunks_exact_mut(group)) {
                let (sx, sum) = round_group(g, q);
                p.sx.push(sx);
                p.sq.push(sum);
            }
        }
        p
    }

    fn exact(x: &[f32], bits: u32, group: usize, table: bool) -> Prepared {
        let sums = x.chunks_exact(group).map(|g| g.iter().sum()).collect();
        let x = if table {
            let mut v = Vec::with_capacity(x.len());
            for b in x.chunks_exact(TABLE_BLOCK) {
                for j in 0..8 {
                    v.extend(b.iter().skip(j).step_by(8));
                }
            }
            v
        } else if bits == 4 {
            let mut v = Vec::with_capacity(x.len());
            for g in x.chunks_exact(group) {
                v.extend(g.iter().step_by(2));
                v.extend(g.iter().skip(1).step_by(2));
            }
            v
        } else {
            x.to_vec()
        };
        Prepared {
            x,
            sums,
            xq: Vec::new(),
            sx: Vec::new(),
            sq: Vec::new(),
        }
    }
}
