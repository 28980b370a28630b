//! Data-free weight quantization with NNCF's semantics, integer for integer.
//!
//! Mirrors `nncf/quantization/algorithms/weight_compression/weight_lowering.py`
//! (NNCF 3.4): statistics and division in f32, numpy rounding (half to even),
//! clipping to the level range; scales are then stored as f16, as NNCF's
//! OpenVINO backend writes them. The reduction axis is the input dimension of
//! a `[out, in]` weight, in groups of `group` columns (or the whole row).
//!
//! - INT4_SYM: `scale = (|min| >= max ? |min| : -max) / 8` (a signed scale:
//!   the extreme value maps to -8), `q = clip(round(w / scale), -8, 7)`;
//! - INT4_ASYM / INT8_ASYM: the range widened to include 0,
//!   `scale = (max - min) / (levels - 1)`, `zp = clip(-round(min / scale))`,
//!   `q = clip(round(w / scale + zp))`;
//! - scales below f32 eps become eps.
//!
//! `scripts/nncf-compare` holds this to NNCF: it runs NNCF on an OpenVINO
//! model built from the same weights (logits listed first so lm_head is
//! NNCF's "last layer", as in exported decoders) and compares integers, zero
//! points and scales exactly, over eight option sets across llama, qwen2 and
//! mistral.
//!
//! OpenVINO's CPU plugin computes a decompressed weight as
//! `(q - zp) * f32(scale_f16)` without rounding the product to f16 (rounding
//! it in the reference gave 3e-4 error, not rounding agrees well inside
//! 1e-4), so [`dequantize_parts`] does the same.

use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// How one tensor is stored in the baked store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Scheme {
    Int4Sym,
    Int4Asym,
    Int8Sym,
    Int8Asym,
    F16,
    F32,
}

impl Scheme {
    pub fn bits(self) -> usize {
        match self {
            Scheme::Int4Sym | Scheme::Int4Asym => 4,
            Scheme::Int8Sym | Scheme::Int8Asym => 8,
            Scheme::F16 => 16,
            Scheme::F32 => 32,
        }
    }

    pub fn is_int(self) -> bool {
        self.bits() <= 8
    }

    pub fn is_asym(self) -> bool {
        matches!(self, Scheme::Int4Asym | Scheme::Int8Asym)
    }

    /// Integer level range `[low, high]`.
    fn levels(self) -> (f32, f32) {
        match self {
            Scheme::Int4Sym => (-8.0, 7.0),
            Scheme::Int4Asym => (0.0, 15.0),
            Scheme::Int8Sym => (-128.0, 127.0),
            Scheme::Int8Asym => (0.0, 255.0),
            Scheme::F16 | Scheme::F32 => (0.0, 0.0),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Int4Sym => "int4_sym",
            Scheme::Int4Asym => "int4_asym",
            Scheme::Int8Sym => "int8_sym",
            Scheme::Int8Asym => "int8_asym",
            Scheme::F16 => "f16",
            Scheme::F32 => "f32",
        }
    }

    pub fn parse(s: &str) -> Option<Scheme> {
        [
            Scheme::Int4Sym,
            Scheme::Int4Asym,
            Scheme::Int8Sym,
            Scheme::Int8Asym,
            Scheme::F16,
            Scheme::F32,
        ]
        .into_iter()
        .find(|x| x.name() == s)
    }
}

/// An integer-quantized `[rows, cols]` matrix, unpacked (one value per byte).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantMatrix {
    pub scheme: Scheme,
    pub rows: usize,
    pub cols: usize,
    /// Columns per group; equals `cols` for per-channel quantization.
    pub group: usize,
    /// Row-major values: signed schemes hold two's-complement i8 bit patterns.
    pub q: Vec<u8>,
    /// `[rows, cols / group]` scales as computed in f32 (stored as f16).
    pub scales: Vec<f32>,
    /// `[rows, cols / group]` zero points (asymmetric schemes only).
    pub zero_points: Option<Vec<u8>>,
}

impl QuantMatrix {
    pub fn groups_per_row(&self) -> usize {
        self.cols / self.group
    }

    /// Scales rounded to f16, as stored.
    pub fn scales_f16(&self) -> Vec<f16> {
        self.scales.iter().map(|&s| f16::from_f32(s)).collect()
    }

    /// The value OpenVINO's decompression subgraph produces for each weight:
    /// `(q - zp) * scale` with the f16 scale widened to f32. The product of a
    /// small integer and an f16 is exact in f32; OpenVINO's CPU plugin (f32
    /// inference precision) does not round it back to f16, measured by the
    /// shard A tests (rounding it costs ~3e-4 relative error there).
    pub fn dequantize(&self) -> Vec<f32> {
        dequantize_parts(
            self.scheme,
            self.cols,
            self.group,
            &self.q,
            &self.scales_f16(),
            self.zero_points.as_deref(),
        )
    }
}

/// Dequantize stored parts (values unpacked, scales f16) exactly as the IR does.
pub fn dequantize_parts(
    scheme: Scheme,
    cols: usize,
    group: usize,
    q: &[u8],
    scales: &[f16],
    zero_points: Option<&[u8]>,
) -> Vec<f32> {
    let groups = cols / group;
    let signed = !scheme.is_asym();
    q.par_iter()
        .enumerate()
        .map(|(i, &v)| {
            let (r, c) = (i / cols, i % cols);
            let g = r * groups + c / group;
            let qv = if signed { v as i8 as f32 } else { v as f32 };
            let zp = zero_points.map(|z| z[g] as f32).unwrap_or(0.0);
            (qv - zp) * scales[g].to_f32()
        })
        .collect()
}

/// Quantize a row-major `[rows, cols]` f32 matrix the way NNCF does.
pub fn quantize(w: &[f32], rows: usize, cols: usize, scheme: Scheme, group: usize) -> QuantMatrix {
    assert!(scheme.is_int(), "quantize called with a float scheme");
    assert_eq!(w.len(), rows * cols);
    assert!(
        group > 0 && cols.is_multiple_of(group),
        "group must divide cols"
    );
    let (low, high) = scheme.levels();
    let eps = f32::EPSILON;
    let asym = scheme.is_asym();
    let n_groups = rows * cols / group;

    // Per group: (scale, zero point, values).
    let per_group: Vec<(f32, u8, Vec<u8>)> = w
        .par_chunks(group)
        .map(|g| {
            let mut mn = f32::INFINITY;
            let mut mx = f32::NEG_INFINITY;
            for &x in g {
                mn = mn.min(x);
                mx = mx.max(x);
            }
            if asym {
                let mn = mn.min(0.0);
                let mx = mx.max(0.0);
                let mut scale = (mx - mn) / (high - low);
                if scale.abs() < eps {
                    scale = eps;
                }
                let zp = (low - (mn / scale).round_ties_even()).clamp(low, high);
                let q = g
                    .iter()
                    .map(|&x| (x / scale + zp).round_ties_even().clamp(low, high) as u8)
                    .collect();
                (scale, zp as u8, q)
            } else {
                let factor = -low; // 2^(bits-1)
                let abs_min = mn.abs();
                let mut scale = if abs_min >= mx { abs_min } else { -mx };
                scale /= factor;
                if scale.abs() < eps {
                    scale = eps;
                }
                let q = g
                    .iter()
                    .map(|&x| (x / scale).round_ties_even().clamp(low, high) as i8 as u8)
                    .collect();
                (scale, 0, q)
            }
        })
        .collect();

    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(n_groups);
    let mut zps = Vec::with_capacity(n_groups);
    for (s, z, v) in per_group {
        scales.push(s);
        zps.push(z);
        q.extend_from_slice(&v);
    }
    QuantMatrix {
        scheme,
        rows,
        cols,
        group,
        q,
        scales,
        zero_points: asym.then_some(zps),
    }
}

/// NNCF's data-free sensitivity input: the INT8_ASYM per-channel error
/// `max over rows of mean over the row of (dequantized - w)^2`, with NNCF's
/// f32 dequantization (`(q - zp) * scale` with the f32 scale).
pub fn int8_asym_error(w: &[f32], rows: usize, cols: usize) -> f64 {
    let m = quantize(w, rows, cols, Scheme::Int8Asym, cols);
    let zps = m.zero_points.as_deref().unwrap_or(&[]);
    (0..rows)
        .into_par_iter()
        .map(|r| {
            let s = m.scales[r];
            let z = zps.get(r).copied().unwrap_or(0) as f32;
            let sum: f64 = (0..cols)
                .map(|c| {
                    let i = r * cols + c;
                    let d = (m.q[i] as f32 - z) * s - w[i];
                    (d as f64) * (d as f64)
                })
                .sum();
            sum / cols as f64
        })
        .reduce(|| 0.0, f64::max)
}

/// Pack 4-bit values two per byte: element 2k in the low nibble, 2k+1 in the high one.
pub fn pack_u4(values: &[u8]) -> Vec<u8> {
    values
        .chunks(2)
        .map(|p| (p[0] & 0x0f) | (p.get(1).copied().unwrap_or(0) & 0x0f) << 4)
        .collect()
}

/// Inverse of [`pack_u4`]; signed values come back sign-extended as i8 bit patterns.
pub fn unpack_u4(packed: &[u8], len: usize, signed: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    for &b in packed {
        for nib in [b & 0x0f, b >> 4] {
            if out.len() == len {
                break;
            }
            let v = if signed && nib & 0x8 != 0 {
                nib | 0xf0
            } else {
                nib
            };
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    #[test]
    fn pack_roundtrip_signed_and_unsigned() {
        let seed = rand::rng().random();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        for len in [1usize, 2, 7, 128, 301] {
            let u: Vec<u8> = (0..len).map(|_| rng.random_range(0..16)).collect();
            assert_eq!(unpack_u4(&pack_u4(&u), len, false), u, "seed {seed}");
            let s: Vec<u8> = (0..len).map(|_| rng.random_range(-8i8..8) as u8).collect();
            assert_eq!(unpack_u4(&pack_u4(&s), len, true), s, "seed {seed}");
        }
        // Low nibble first.
        assert_eq!(pack_u4(&[0x1, 0x2]), vec![0x21]);
    }

    /// Independent check of the formulas on one group, written out longhand.
    #[test]
    fn sym_uses_signed_extreme_and_full_range() {
        let seed = rand::rng().random();
        let mut w = random(128, seed);
        w[5] = 2.0; // the positive extreme dominates: scale = -2/8, q = -8 at index 5
        let m = quantize(&w, 1, 128, Scheme::Int4Sym, 128);
        assert_eq!(m.scales[0], -0.25);
        assert_eq!(m.q[5] as i8, -8);
        for (i, &x) in w.iter().enumerate() {
            let expect = (x / -0.25f32).round_ties_even().clamp(-8.0, 7.0);
            assert_eq!(m.q[i] as i8 as f32, expect, "seed {seed} index {i}");
        }
    }

    #[test]
    fn asym_zero_point_and_error_bound() {
        let seed = rand::rng().random();
        let w = random(64 * 256, seed);
        let m = quantize(&w, 64, 256, Scheme::Int4Asym, 128);
        let d = m.dequantize();
        let zps = m.zero_points.clone().unwrap();
        for r in 0..64 {
            for g in 0..2 {
                let chunk = &w[r * 256 + g * 128..r * 256 + (g + 1) * 128];
                let mn = chunk.iter().cloned().fold(0.0f32, f32::min);
                let mx = chunk.iter().cloned().fold(0.0f32, f32::max);
                let s = (mx - mn) / 15.0;
                assert_eq!(m.scales[r * 2 + g], s);
                assert_eq!(
                    zps[r * 2 + g] as f32,
                    (-(mn / s).round_ties_even()).clamp(0.0, 15.0)
                );
                for (c, &x) in chunk.iter().enumerate() {
                    // Half a step plus f16 rounding of the scale and product.
                    let err = (d[r * 256 + g * 128 + c] - x).abs();
                    assert!(
                        err <= s * 0.5 + s * 16.0 * 2e-3,
                        "seed {seed}: err {err} step {s}"
                    );
                }
            }
        }
    }

    #[test]
    fn zero_group_gets_eps_scale() {
        let m = quantize(&[0.0; 128], 1, 128, Scheme::Int4Sym, 128);
        assert_eq!(m.scales[0], f32::EPSILON);
        assert!(m.q.iter().all(|&v| v == 0));
    }

    #[test]
    fn int8_error_orders_by_spread() {
        let seed = rand::rng().random();
        let small = random(32 * 64, seed);
        let large: Vec<f32> = small.iter().map(|x| x * 10.0).collect();
        assert!(int8_asym_error(&large, 32, 64) > int8_asym_error(&small, 32, 64));
    }
}
