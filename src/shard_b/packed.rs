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
        let q: Vec<u8> = match (bits, signed) {
            (4, true) => t.data.iter().map(|b| b ^ 0x88).collect(),
            (8, true) => t.data.iter().map(|b| b ^ 0x80).collect(),
            _ => t.data.to_vec(),
        };
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
            q: parts.iter().flat_map(|p| p.q.iter().copied()).collect(),
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
            for g in p.x.chunks_exact(group) {
                let m = g.iter().fold(0f32, |m, v| m.max(v.abs()));
                let sx = if m > 0.0 { m / 127.0 } else { 1.0 };
                let mut sum = 0i32;
                for v in g {
                    let q = (v / sx).round().clamp(-127.0, 127.0) as i8;
                    sum += q as i32;
                    p.xq.push(q);
                }
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

fn row_dot(q: &[u8], sc: &[f32], zp: &[f32], p: &Prepared, bits: u32, group: usize) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected at run time.
            return unsafe { row_dot_avx2(q, sc, zp, p, bits, group) };
        }
    }
    row_dot_scalar(q, sc, zp, p, bits, group)
}

/// Whether Kernel::Q8 takes weights of `bits` in groups of `group`.
fn q8_fits(bits: u32, group: usize) -> bool {
    (bits == 4 && group.is_multiple_of(64)) || (bits == 8 && group.is_multiple_of(16))
}

/// Kernel::Q8's best loop on this CPU; `vnni: false` skips VNNI (tests).
fn row_dot_q8(
    q: &[u8],
    sc: &[f32],
    zp: &[f32],
    p: &Prepared,
    bits: u32,
    group: usize,
    vnni: bool,
) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if vnni && has_vnni() {
            // SAFETY: AVX-512 VNNI/VL (and AVX2, FMA) were detected at run
            // time; groups hold whole SIMD steps (q8_fits).
            return unsafe { row_dot_q8_vnni(q, sc, zp, p, bits, group) };
        }
        if has_avx2() {
            // SAFETY: AVX2 and FMA were detected at run time; groups hold
            // whole SIMD steps (q8_fits, checked by matmul_with).
            return unsafe { row_dot_q8_avx2(q, sc, zp, p, bits, group) };
        }
    }
    row_dot_q8_scalar(q, sc, zp, p, bits, group)
}

/// Kernel::Q8 in plain Rust: the same integer sums.
fn row_dot_q8_scalar(
    q: &[u8],
    sc: &[f32],
    zp: &[f32],
    p: &Prepared,
    bits: u32,
    group: usize,
) -> f32 {
    let gb = group * bits as usize / 8;
    let mut total = 0f32;
    for (g, qg) in q.chunks_exact(gb).enumerate() {
        let xq = &p.xq[g * group..(g + 1) * group];
        let mut acc = 0i32;
        if bits == 4 {
            let (even, odd) = xq.split_at(gb);
            for (k, b) in qg.iter().enumerate() {
                acc += (b & 15) as i32 * even[k] as i32 + (b >> 4) as i32 * odd[k] as i32;
            }
        } else {
            for (b, x) in qg.iter().zip(xq) {
                acc += *b as i32 * *x as i32;
            }
        }
        total += sc[g] * p.sx[g] * (acc as f32 - zp[g] * p.sq[g] as f32);
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_dot_q8_avx2(
    q: &[u8],
    sc: &[f32],
    zp: &[f32],
    p: &Prepared,
    bits: u32,
    group: usize,
) -> f32 {
    use std::arch::x86_64::*;
    let gb = group * bits as usize / 8;
    let mut corr = 0f32;
    unsafe {
        let m = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut tot = _mm256_setzero_ps();
        for (g, qg) in q.chunks_exact(gb).enumerate() {
            let qp = qg.as_ptr();
            let xe = p.xq.as_ptr().add(g * group);
            let xo = xe.add(gb);
            let mut acc = _mm256_setzero_si256();
            let mut k = 0;
            // 8-bit: 16 weights a step, u8 and i8 widened to i16, pairs
            // multiplied and summed to i32 (at most 2 · 255 · 127).
            while bits == 8 && k < gb {
                let w = _mm256_cvtepu8_epi16(_mm_loadu_si128(qp.add(k) as *const __m128i));
                let xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(xe.add(k) as *const __m128i));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(w, xv));
                k += 16;
            }
            // 32 bytes = 64 weights a step: low nibbles against the even
            // elements, high nibbles against the odd ones; u4 × i8 pairs
            // summed to i16 (at most 2 · 2 · 15 · 127, no saturation),
            // then to i32.
            while bits == 4 && k < gb {
                let v = _mm256_loadu_si256(qp.add(k) as *const __m256i);
                let lo = _mm256_and_si256(v, m);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
                let a = _mm256_maddubs_epi16(lo, _mm256_loadu_si256(xe.add(k) as *const __m256i));
                let b = _mm256_maddubs_epi16(hi, _mm256_loadu_si256(xo.add(k) as *const __m256i));
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_add_epi16(a, b), ones));
                k += 32;
            }
            let s = sc[g] * p.sx[g];
            tot = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(s), tot);
            corr -= s * zp[g] * p.sq[g] as f32;
        }
        hsum(tot) + corr
    }
}

#[cfg(target_arch = "x86_64")]
fn has_vnni() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        has_avx2() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl")
    })
}

/// Kernel::Q8 with `vpdpbusd` (u8 × i8, four products summed into each
/// i32 lane, no intermediate saturation): 4-bit, two per 32 bytes (low
/// nibbles × even elements, high × odd); 8-bit, one per 32 bytes, a
/// 16-byte remainder through `vpmaddwd`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512vnni,avx512vl")]
unsafe fn row_dot_q8_vnni(
    q: &[u8],
    sc: &[f32],
    zp: &[f32],
    p: &Prepared,
    bits: u32,
    group: usize,
) -> f32 {
    use std::arch::x86_64::*;
    let gb = group * bits as usize / 8;
    let mut corr = 0f32;
    unsafe {
        let m = _mm256_set1_epi8(0x0F);
        let mut tot = _mm256_setzero_ps();
        for (g, qg) in q.chunks_exact(gb).enumerate() {
            let qp = qg.as_ptr();
            let xe = p.xq.as_ptr().add(g * group);
            let mut acc0 = _mm256_setzero_si256();
            let mut acc1 = _mm256_setzero_si256();
            let mut k = 0;
            if bits == 4 {
                let xo = xe.add(gb);
                while k < gb {
                    prefetch(qp.wrapping_add(k + PREFETCH_AHEAD));
                    let v = _mm256_loadu_si256(qp.add(k) as *const __m256i);
                    let lo = _mm256_and_si256(v, m);
                    let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
                    acc0 = _mm256_dpbusd_epi32(
                        acc0,
                        lo,
                        _mm256_loadu_si256(xe.add(k) as *const __m256i),
                    );
                    acc1 = _mm256_dpbusd_epi32(
                        acc1,
                        hi,
                        _mm256_loadu_si256(xo.add(k) as *const __m256i),
                    );
                    k += 32;
                }
            } else {
                while k + 32 <= gb {
                    prefetch(qp.wrapping_add(k + PREFETCH_AHEAD));
                    let w = _mm256_loadu_si256(qp.add(k) as *const __m256i);
                    acc0 = _mm256_dpbusd_epi32(
                        acc0,
                        w,
                        _mm256_loadu_si256(xe.add(k) as *const __m256i),
                    );
                    k += 32;
                }
                while k < gb {
                    let w = _mm256_cvtepu8_epi16(_mm_loadu_si128(qp.add(k) as *const __m128i));
                    let xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(xe.add(k) as *const __m128i));
                    acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(w, xv));
                    k += 16;
                }
            }
            let s = sc[g] * p.sx[g];
            let acc = _mm256_add_epi32(acc0, acc1);
            tot = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc), _mm256_set1_ps(s), tot);
            corr -= s * zp[g] * p.sq[g] as f32;
        }
        hsum(tot) + corr
    }
}

/// Bytes ahead of its loads a loop asks the cache for (`prefetcht0`): a
/// decode step reads each weight once, from memory, and the hardware
/// prefetcher alone left the loops waiting (measured on this project's VM,
/// weights cycled through 256 MiB: 1.2-1.6× for the lookup loop, up to 1.25×
/// for the VNNI loop; 1 KiB ahead did about as well, 256 B less).
const PREFETCH_AHEAD: usize = 4096;

/// Ask for the cache line at `p`, which may lie past the weight: a
/// prefetch reads nothing and never faults.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch(p: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: prefetcht0 (SSE, baseline on x86-64) is a hint: it reads
    // nothing and cannot fault, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
}

/// Elements of one step of the lookup loop (64 bytes of 4-bit weights).
const TABLE_BLOCK: usize = 128;

/// Whether Kernel::Best takes the lookup loop for weights of `bits` in
/// groups of `group` on this CPU.
fn table_fits(bits: u32, group: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        bits == 4 && group.is_multiple_of(TABLE_BLOCK) && has_avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (bits, group);
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| has_avx2() && is_x86_feature_detected!("avx512f"))
}

/// Wider rows than this take the lookup loop four at a time: their
/// activation (4 bytes an element) no longer fits half of a 32 KiB L1
/// cache, and reading it once for four rows beats reading it per row
/// (measured on this project's 2-core Zen 4 VM, one thread, weights in
/// cache: 2048×8192 and 4096×14336 1.2× and 1.9× faster by four rows;
/// 8192×2048 and 2048×2048 1.2× slower).
const TABLE_WIDE_COLS: usize = 4096;

/// A row's values, scales and zero points.
type RowParts<'a> = (&'a [u8], &'a [f32], &'a [f32]);

/// The lookup loop over `R` rows at once (callers check [`table_fits`];
/// elsewhere each row takes the AVX2 loop).
fn rows_dot_table<const R: usize>(rows: [RowParts; R], p: &Prepared, group: usize) -> [f32; R] {
    #[cfg(target_arch = "x86_64")]
    {
        if table_fits(4, group) {
            // SAFETY: AVX-512F was detected at run time; groups hold whole
            // 64-byte steps and `p.x` is in the lookup layout (table_fits,
            // checked by matmul_with when it prepared `p`); the rows are of
            // one weight (equal lengths).
            return unsafe { rows_dot_avx512_table(rows, p, group) };
        }
    }
    rows.map(|(q, sc, zp)| row_dot(q, sc, zp, p, 4, group))
}

/// 4-bit weights, f32 activations, `R` rows: per row and group the 16
/// dequantized values `(u − zp) · scale` in one register; per 64 bytes of a
/// row (128 weights: 16 lanes × 8 nibbles) the nibbles j = 0..8 of each
/// 32-bit lane shifted down and looked up with `vpermps` (which reads an
/// index's low 4 bits only), multiplied by the activations the layout put
/// in the same order (loaded once for the `R` rows) into four 16-lane
/// accumulators per row. The products are those of the dequantized weight;
/// one horizontal sum per row.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn rows_dot_avx512_table<const R: usize>(
    rows: [RowParts; R],
    p: &Prepared,
    group: usize,
) -> [f32; R] {
    use std::arch::x86_64::*;
    let gb = group / 2;
    let groups = rows[0].0.len() / gb;
    unsafe {
        let iota = _mm512_setr_ps(
            0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0, 14.0, 15.0,
        );
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        let mut xp = p.x.as_ptr();
        for g in 0..groups {
            let tables = rows.map(|(_, sc, zp)| {
                _mm512_mul_ps(
                    _mm512_sub_ps(iota, _mm512_set1_ps(zp[g])),
                    _mm512_set1_ps(sc[g]),
                )
            });
            for k in (g * gb..(g + 1) * gb).step_by(TABLE_BLOCK / 2) {
                let w = rows.map(|(q, _, _)| {
                    prefetch(q.as_ptr().wrapping_add(k + PREFETCH_AHEAD));
                    _mm512_loadu_si512(q.as_ptr().add(k) as *const __m512i)
                });
                // Nibble j of every lane: its weight times its activation.
                macro_rules! nibble {
                    ($j:expr) => {
                        let x = _mm512_loadu_ps(xp.add(16 * $j));
                        for r in 0..R {
                            let u = _mm512_srli_epi32::<{ 4 * $j }>(w[r]);
                            acc[r][$j % 4] = _mm512_fmadd_ps(
                                _mm512_permutexvar_ps(u, tables[r]),
                                x,
                                acc[r][$j % 4],
                            );
                        }
                    };
                }
                nibble!(0);
                nibble!(1);
                nibble!(2);
                nibble!(3);
                nibble!(4);
                nibble!(5);
                nibble!(6);
                nibble!(7);
                xp = xp.add(TABLE_BLOCK);
            }
        }
        acc.map(|[a0, a1, a2, a3]| {
            _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)))
        })
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// The same sum in plain Rust (machines without AVX2, odd group sizes).
fn row_dot_scalar(q: &[u8], sc: &[f32], zp: &[f32], p: &Prepared, bits: u32, group: usize) -> f32 {
    let mut total = 0f32;
    let gb = group * bits as usize / 8;
    for (g, qg) in q.chunks_exact(gb).enumerate() {
        let xg = &p.x[g * group..(g + 1) * group];
        let mut acc = 0f32;
        if bits == 4 {
            let (even, odd) = xg.split_at(group / 2);
            for (k, b) in qg.iter().enumerate() {
                acc += (b & 15) as f32 * even[k] + (b >> 4) as f32 * odd[k];
            }
        } else {
            for (k, b) in qg.iter().enumerate() {
                acc += *b as f32 * xg[k];
            }
        }
        total += sc[g] * (acc - zp[g] * p.sums[g]);
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_dot_avx2(
    q: &[u8],
    sc: &[f32],
    zp: &[f32],
    p: &Prepared,
    bits: u32,
    group: usize,
) -> f32 {
    use std::arch::x86_64::*;
    let gb = group * bits as usize / 8;
    // Per group: four independent eight-lane accumulators over 16 bytes a
    // step (so FMA latency does not serialize the loop), then one FMA by
    // the group's scale into the row's vector total; the zero-point term
    // (zp · Σx) and any bytes past the last full step are scalar. One
    // horizontal sum per row.
    let mut corr = 0f32;
    unsafe {
        let mask = _mm256_set1_epi32(15);
        let mut tot = _mm256_setzero_ps();
        for (g, qg) in q.chunks_exact(gb).enumerate() {
            let qp = qg.as_ptr();
            let xg = p.x.as_ptr().add(g * group);
            let mut a0 = _mm256_setzero_ps();
            let mut a1 = _mm256_setzero_ps();
            let mut a2 = _mm256_setzero_ps();
            let mut a3 = _mm256_setzero_ps();
            let mut k = 0;
            let mut tail = 0f32;
            if bits == 4 {
                let odd = xg.add(group / 2);
                // 8 bytes (16 weights) at byte offset $o into the low- and
                // high-nibble accumulators.
                macro_rules! step8 {
                    ($o:expr, $lo:ident, $hi:ident) => {
                        let w = _mm256_cvtepu8_epi32(_mm_loadl_epi64(qp.add($o) as *const __m128i));
                        $lo = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(_mm256_and_si256(w, mask)),
                            _mm256_loadu_ps(xg.add($o)),
                            $lo,
                        );
                        $hi = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 4)),
                            _mm256_loadu_ps(odd.add($o)),
                            $hi,
                        );
                    };
                }
                while k + 16 <= gb {
                    step8!(k, a0, a1);
                    step8!(k + 8, a2, a3);
                    k += 16;
                }
                while k + 8 <= gb {
                    step8!(k, a0, a1);
                    k += 8;
                }
                for (j, b) in qg.iter().enumerate().skip(k) {
                    tail += (b & 15) as f32 * *xg.add(j) + (b >> 4) as f32 * *odd.add(j);
                }
            } else {
                while k + 32 <= gb {
                    let v0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        qp.add(k) as *const __m128i
                    )));
                    let v1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        qp.add(k + 8) as *const __m128i,
                    )));
                    let v2 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        qp.add(k + 16) as *const __m128i,
                    )));
                    let v3 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        qp.add(k + 24) as *const __m128i,
                    )));
                    a0 = _mm256_fmadd_ps(v0, _mm256_loadu_ps(xg.add(k)), a0);
                    a1 = _mm256_fmadd_ps(v1, _mm256_loadu_ps(xg.add(k + 8)), a1);
                    a2 = _mm256_fmadd_ps(v2, _mm256_loadu_ps(xg.add(k + 16)), a2);
                    a3 = _mm256_fmadd_ps(v3, _mm256_loadu_ps(xg.add(k + 24)), a3);
                    k += 32;
                }
                while k + 8 <= gb {
                    let v = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                        qp.add(k) as *const __m128i
                    )));
                    a0 = _mm256_fmadd_ps(v, _mm256_loadu_ps(xg.add(k)), a0);
                    k += 8;
                }
                for (j, b) in qg.iter().enumerate().skip(k) {
                    tail += *b as f32 * *xg.add(j);
                }
            }
            let acc = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
            tot = _mm256_fmadd_ps(acc, _mm256_set1_ps(sc[g]), tot);
            corr += sc[g] * (tail - zp[g] * p.sums[g]);
        }
        hsum(tot) + corr
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_hadd_ps(s, s);
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(s)
}
