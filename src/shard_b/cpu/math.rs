//! Elementwise functions of the CPU plan written in plain arithmetic, so
//! that their loops vectorize (the standard library's `exp` is a call per
//! value).

#[cfg(target_arch = "x86_64")]
pub(super) use crate::shard_b::packed::has_avx512;

/// `e^x` for `x ≤ 0` in plain arithmetic (so a loop of them vectorizes):
/// `2^n · e^(f·ln 2)` with `n = ⌊x·log2 e⌋`, the second factor by its
/// Taylor series to degree 8 (relative error below 2e-7 on `f ∈ [0, 1)`),
/// plus the range reduction's rounding (|x| · 2^-23, the conditioning of
/// exp at an f32 argument); 0 below -87 (where f32 underflows).
#[inline(always)]
pub(super) fn exp_nonpositive(x: f32) -> f32 {
    let t = x.max(-87.0) * std::f32::consts::LOG2_E;
    let n = t.floor();
    let y = (t - n) * std::f32::consts::LN_2;
    let mut p = 1.0 / 40320.0;
    for c in [5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * y + 1.0 / c;
    }
    let scale = f32::from_bits((((n as i32) + 127) << 23) as u32);
    if x < -87.0 { 0.0 } else { p * scale }
}

/// `out = silu(gate) · up`, built for AVX-512 where the CPU has it (16
/// lanes; the baseline build has no vector `floor`, so its loop stays
/// scalar).
pub(super) fn silu_mul(out: &mut [f32], gate: &[f32], up: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx512() {
            // SAFETY: AVX-512F was detected at run time.
            unsafe { silu_mul_avx512(out, gate, up) };
            return;
        }
    }
    silu_mul_body(out, gate, up)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn silu_mul_avx512(out: &mut [f32], gate: &[f32], up: &[f32]) {
    silu_mul_body(out, gate, up)
}

/// `silu(g) · u` per element: `g · σ(g) · u`, `σ` from `e^-|g|` (so the
/// exponential never overflows).
#[inline(always)]
fn silu_mul_body(out: &mut [f32], gate: &[f32], up: &[f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let e = exp_nonpositive(-g.abs());
        let sigma = if g >= 0.0 { 1.0 } else { e } / (1.0 + e);
        *o = g * sigma * u;
    }
}

/// `Σ a·b` in sixteen partial sums (a sequential sum cannot be widened:
/// f32 addition is not associative; one vector register on AVX-512).
#[inline(always)]
pub(super) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    for (x, y) in a.chunks_exact(16).zip(b.chunks_exact(16)) {
        for k in 0..16 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a
        .chunks_exact(16)
        .remainder()
        .iter()
        .zip(b.chunks_exact(16).remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// `silu(g)·u` against f64 on fresh random inputs, both signs, up to
    /// where σ saturates.
    #[test]
    fn silu_mul_matches_f64() {
        let seed: u64 = rand::rng().random();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = 100_000;
        let g: Vec<f32> = (0..n).map(|_| rng.random_range(-100.0..100.0)).collect();
        let u: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0..4.0)).collect();
        let mut out = vec![0f32; n];
        silu_mul(&mut out, &g, &u);
        for ((o, g), u) in out.iter().zip(&g).zip(&u) {
            let (g64, u64) = (*g as f64, *u as f64);
            let want = g64 / (1.0 + (-g64).exp()) * u64;
            // A few ulps of the f32 operations, plus exp's error (3e-7
            // and the range reduction's |g|·2^-23) passed through σ.
            let bound = (1e-6 + 1.2e-7 * g64.abs()) * want.abs() + 1e-30;
            assert!(
                (*o as f64 - want).abs() <= bound,
                "silu({g})·{u} = {o}, want {want} (seed {seed})"
            );
        }
    }

    /// Against f64's exp on fresh random inputs over the whole range the
    /// softmax feeds it (and past its underflow cut).
    #[test]
    fn exp_nonpositive_matches_f64_exp() {
        let seed: u64 = rand::rng().random();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut worst = 0f64;
        for i in 0..200_000 {
            let x: f32 = if i == 0 {
                0.0
            } else {
                rng.random_range(-95.0..0.0)
            };
            let want = (x as f64).exp();
            let got = exp_nonpositive(x) as f64;
            let err = (got - want).abs();
            // 3e-7 of the value, plus exp's own conditioning at an f32
            // argument (|x| · 2^-23 relative: the range reduction's rounding).
            let bound = (3e-7 + 1.2e-7 * x.abs() as f64) * want + 1e-37;
            assert!(err <= bound, "exp({x}) = {got}, want {want} (seed {seed})");
            if want > 1e-30 {
                worst = worst.max(err / want);
            }
        }
        assert!(worst > 0.0, "suspiciously exact");
    }
}
