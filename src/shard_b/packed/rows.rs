//! The per-row dot products behind `Packed::matmul_with`: the exact loops
//! (AVX-512 lookup, AVX2/FMA, scalar) and the int8-activation loops (VNNI,
//! AVX2, scalar), chosen by run-time detection, and their prefetch.

use super::*;

pub(super) fn row_dot(
    q: &[u8],
    sc: &[f32],
    zp: &[f32],
    p: &Prepared,
    bits: u32,
    group: usize,
) -> f32 {
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
pub(super) fn q8_fits(bits: u32, group: usize) -> bool {
    (bits == 4 && group.is_multiple_of(64)) || (bits == 8 && group.is_multiple_of(16))
}

/// Kernel::Q8's best loop on this CPU; `vnni: false` skips VNNI (tests).
pub(super) fn row_dot_q8(
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
pub(super) fn row_dot_q8_scalar(
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
pub(super) unsafe fn row_dot_q8_avx2(
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
pub(super) fn has_vnni() -> bool {
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
pub(super) unsafe fn row_dot_q8_vnni(
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
pub(super) const PREFETCH_AHEAD: usize = 4096;

/// Ask for the cache line at `p`, which may lie past the weight: a
/// prefetch reads nothing and never faults.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    // SAFETY: prefetcht0 (SSE, baseline on x86-64) is a hint: it reads
    // nothing and cannot fault, whatever the address.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(p as *const i8) }
}

/// Elements of one step of the lookup loop (64 bytes of 4-bit weights).
pub(super) const TABLE_BLOCK: usize = 128;

/// Whether Kernel::Best takes the lookup loop for weights of `bits` in
/// groups of `group` on this CPU.
pub(super) fn table_fits(bits: u32, group: usize) -> bool {
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
pub(crate) fn has_avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| has_avx2() && is_x86_feature_detected!("avx512f"))
}

/// Wider rows than this take the lookup loop four at a time: their
/// activation (4 bytes an element) no longer fits half of a 32 KiB L1
/// cache, and reading it once for four rows beats reading it per row
/// (measured on this project's 2-core Zen 4 VM, one thread, weights in
/// cache: 2048×8192 and 4096×14336 1.2× and 1.9× faster by four rows;
/// 8192×2048 and 2048×2048 1.2× slower).
pub(super) const TABLE_WIDE_COLS: usize = 4096;

/// A row's values, scales and zero points.
pub(super) type RowParts<'a> = (&'a [u8], &'a [f32], &'a [f32]);

/// The lookup loop over `R` rows at once (callers check [`table_fits`];
/// elsewhere each row takes the AVX2 loop).
pub(super) fn rows_dot_table<const R: usize>(
    rows: [RowParts; R],
    p: &Prepared,
    group: usize,
) -> [f32; R] {
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
pub(super) unsafe fn rows_dot_avx512_table<const R: usize>(
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
pub(super) fn has_avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
}

/// The same sum in plain Rust (machines without AVX2, odd group sizes).
pub(super) fn row_dot_scalar(
    q: &[u8],
    sc: &[f32],
    zp: &[f32],
    p: &Prepared,
    bits: u32,
    group: usize,
) -> f32 {
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
pub(super) unsafe fn row_dot_avx2(
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
pub(super) unsafe fn hsum(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps(v, 1);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_hadd_ps(s, s);
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(s)
}
