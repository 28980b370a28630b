//! Shard B's packed-weight CPU kernel against the store's own dequantizer
//! (an independent f64 matmul over `StoredTensor::dequantize`), on fresh
//! random weights and activations, for 4-bit and 8-bit, symmetric and
//! asymmetric, group 128 and per channel, odd sizes and byte counts that
//! are not a multiple of the SIMD width; both inner loops.

use hybrid_tui::bake::quant::{Scheme, pack_u4, quantize};
use hybrid_tui::bake::store::StoredTensor;
use hybrid_tui::shard_b::packed::{Kernel, Packed};
use rand::{Rng, SeedableRng};

/// Tolerance: |y - ref| ≤ 2e-5 · Σ|w·x| (f32 accumulation over ≤ 8192
/// terms against an f64 reference, relative to the sum's magnitude).
const TOL: f64 = 2e-5;

struct Stored {
    scheme: Scheme,
    shape: [usize; 2],
    group: usize,
    data: Vec<u8>,
    scales: Vec<u8>,
    zps: Option<Vec<u8>>,
}

impl Stored {
    fn view(&self) -> StoredTensor<'_> {
        StoredTensor {
            scheme: self.scheme,
            shape: &self.shape,
            group: self.group,
            data: &self.data,
            scales: Some(&self.scales),
            zero_points: self.zps.as_deref(),
        }
    }
}

/// Quantize random N(0, 1/cols) weights the way the bake does and lay the
/// parts out as the store keeps them.
fn make(
    rng: &mut rand_chacha::ChaCha8Rng,
    rows: usize,
    cols: usize,
    group: usize,
    scheme: Scheme,
) -> Stored {
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| {
            let u: f32 = rng.random_range(-1.0..1.0);
            u * 1.7 / (cols as f32).sqrt()
        })
        .collect();
    let m = quantize(&w, rows, cols, scheme, group);
    let data = if scheme.bits() == 4 {
        pack_u4(&m.q)
    } else {
        m.q.clone()
    };
    let scales = m
        .scales_f16()
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    let zps = m.zero_points.as_ref().map(|z| {
        if scheme.bits() == 4 {
            pack_u4(z)
        } else {
            z.clone()
        }
    });
    Stored {
        scheme,
        shape: [rows, cols],
        group,
        data,
        scales,
        zps,
    }
}

/// `y` (`[tokens, rows]`) against the f64 product of the dequantized
/// weight `w` (`[rows, cols]`) and `x` (`[tokens, cols]`): within
/// TOL · Σ|w·x| per output.
fn assert_matches_reference(w: &[f32], x: &[f32], y: &[f32], dims: [usize; 3], what: &str) {
    let [tokens, rows, cols] = dims;
    assert_eq!(y.len(), tokens * rows, "{what}: output size");
    for ti in 0..tokens {
        for r in 0..rows {
            let (mut exact, mut mag) = (0f64, 0f64);
            for c in 0..cols {
                let v = w[r * cols + c] as f64 * x[ti * cols + c] as f64;
                exact += v;
                mag += v.abs();
            }
            let got = y[ti * rows + r] as f64;
            assert!(
                (got - exact).abs() <= TOL * mag + 1e-7,
                "{what}, {tokens} tokens: token {ti} row {r}: {got} vs {exact} (Σ|wx| {mag})"
            );
        }
    }
}

fn check(seed: u64, rows: usize, cols: usize, group: usize, scheme: Scheme, tokens: usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let s = make(&mut rng, rows, cols, group, scheme);
    let t = s.view();
    let w = t.dequantize();
    let p = Packed::from_stored(&t).expect("an integer weight packs");
    let x: Vec<f32> = (0..tokens * cols)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    // Best: the AVX-512 lookup loop where the CPU has it and 4-bit groups
    // are multiples of 128, else the AVX2 loop; Avx2: that loop always.
    for kernel in [Kernel::Best, Kernel::Avx2, Kernel::Scalar] {
        let y = p.matmul_with(&x, tokens, kernel);
        let what = format!("{scheme:?} {rows}×{cols} g{group} {kernel:?} (seed {seed})");
        assert_matches_reference(&w, &x, &y, [tokens, rows, cols], &what);
    }
    // Rows (embedding lookups) are the dequantized rows exactly.
    for r in [0, rows / 2, rows - 1] {
        assert_eq!(
            p.row(r),
            w[r * cols..(r + 1) * cols].to_vec(),
            "{scheme:?} row {r}"
        );
    }
}

#[test]
fn packed_kernel_matches_the_dequantized_reference() {
    let seed: u64 = rand::rng().random();
    let cases: &[(usize, usize, usize, Scheme)] = &[
        (1, 128, 128, Scheme::Int4Sym),
        (7, 256, 128, Scheme::Int4Asym),
        (33, 384, 128, Scheme::Int4Sym),
        (64, 2048, 128, Scheme::Int4Sym),
        (17, 2048, 128, Scheme::Int4Asym),
        // Per channel, and rows of 36, 65 and 100 bytes: not a multiple of 8.
        (16, 72, 72, Scheme::Int4Asym),
        (19, 130, 130, Scheme::Int4Sym),
        (5, 200, 200, Scheme::Int4Sym),
        // Per channel and groups of 256: the lookup loop's table spans
        // several of its 128-element steps.
        (11, 384, 384, Scheme::Int4Asym),
        (6, 512, 256, Scheme::Int4Sym),
        // Rows wider than 4096: the lookup loop takes four rows at a time
        // (23 rows: blocks of 16 and 7, so quads and single rows).
        (23, 4224, 128, Scheme::Int4Asym),
        (6, 4608, 4608, Scheme::Int4Sym),
        // 8-bit (embeddings, lm_head): per channel, odd sizes.
        (9, 100, 100, Scheme::Int8Asym),
        (13, 257, 257, Scheme::Int8Sym),
        (40, 2048, 2048, Scheme::Int8Asym),
        (3, 384, 128, Scheme::Int8Sym),
    ];
    for (i, &(rows, cols, group, scheme)) in cases.iter().enumerate() {
        for tokens in [1, 3] {
            check(
                seed.wrapping_add(i as u64 * 31 + tokens as u64),
                rows,
                cols,
                group,
                scheme,
                tokens,
            );
        }
    }
}

/// Projections stacked into one weight (q/k/v, gate/up) give each part's
/// product: the stacked rows against the reference over the parts'
/// dequantized rows in order, and bit for bit what each part gives alone
/// (rows are independent). Parts of another width, group or bit count do
/// not stack.
#[test]
fn stacked_weights_multiply_as_their_parts() {
    let seed: u64 = rand::rng().random();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for (scheme, group, rows) in [
        (Scheme::Int4Sym, 128, [40, 8, 24]),
        (Scheme::Int4Asym, 128, [24, 8, 8]),
        (Scheme::Int8Asym, 256, [9, 3, 5]),
    ] {
        let cols = 256;
        let stored: Vec<Stored> = rows
            .iter()
            .map(|&r| make(&mut rng, r, cols, group, scheme))
            .collect();
        let parts: Vec<Packed> = stored
            .iter()
            .map(|s| Packed::from_stored(&s.view()).expect("an integer weight packs"))
            .collect();
        let stacked = Packed::stack(&parts).expect("parts of one format stack");
        let total: usize = rows.iter().sum();
        assert_eq!(stacked.rows, total);
        let w: Vec<f32> = stored.iter().flat_map(|s| s.view().dequantize()).collect();
        for tokens in [1, 3] {
            let x: Vec<f32> = (0..tokens * cols)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            for kernel in [Kernel::Best, Kernel::Q8] {
                let y = stacked.matmul_with(&x, tokens, kernel);
                if kernel == Kernel::Best {
                    let what = format!("stacked {scheme:?} {rows:?} (seed {seed})");
                    assert_matches_reference(&w, &x, &y, [tokens, total, cols], &what);
                }
                let mut start = 0;
                for (part, &n) in parts.iter().zip(&rows) {
                    let alone = part.matmul_with(&x, tokens, kernel);
                    for t in 0..tokens {
                        assert_eq!(
                            &y[t * total + start..t * total + start + n],
                            &alone[t * n..(t + 1) * n],
                            "{scheme:?} {kernel:?}: rows {start}.. of the stack, token {t} (seed {seed})"
                        );
                    }
                    start += n;
                }
            }
        }
        assert_eq!(
            stacked.resident_bytes(),
            parts.iter().map(Packed::resident_bytes).sum::<usize>()
        );
    }
    let a = Packed::from_stored(&make(&mut rng, 8, 256, 128, Scheme::Int4Sym).view()).unwrap();
    let other_group =
        Packed::from_stored(&make(&mut rng, 8, 256, 256, Scheme::Int4Sym).view()).unwrap();
    let other_bits =
        Packed::from_stored(&make(&mut rng, 8, 256, 128, Scheme::Int8Sym).view()).unwrap();
    let other_width =
        Packed::from_stored(&make(&mut rng, 8, 384, 128, Scheme::Int4Sym).view()).unwrap();
    for b in [other_group, other_bits, other_width] {
        assert!(Packed::stack(&[a.clone(), b]).is_none());
    }
    assert!(Packed::stack(&[]).is_none());
}

#[test]
fn resident_bytes_stay_near_the_packed_size() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(rand::rng().random());
    for (rows, cols, group, scheme) in [
        (256, 2048, 128, Scheme::Int4Sym),
        (256, 2048, 128, Scheme::Int4Asym),
        (512, 2048, 2048, Scheme::Int8Asym),
    ] {
        let s = make(&mut rng, rows, cols, group, scheme);
        let stored = s.data.len() + s.scales.len() + s.zps.as_ref().map_or(0, |z| z.len());
        let p = Packed::from_stored(&s.view()).unwrap();
        let ratio = p.resident_bytes() as f64 / stored as f64;
        assert!(
            ratio <= 1.15,
            "{scheme:?} g{group}: {ratio:.3}× the stored bytes"
        );
    }
}

/// A weight row `wr` times an activation `xt`: the exact f64 product, Σ|w·x|,
/// and the bound an int8-activation kernel is held to: f32 accumulation
/// (TOL · Σ|w·x|), plus, where the activations are rounded (`quantized`),
/// per group Σ|w| · max|x| / 254.
fn int8_bound(wr: &[f32], xt: &[f32], group: usize, quantized: bool) -> (f64, f64, f64) {
    let exact: f64 = wr.iter().zip(xt).map(|(a, b)| *a as f64 * *b as f64).sum();
    let mag: f64 = wr
        .iter()
        .zip(xt)
        .map(|(a, b)| (*a as f64 * *b as f64).abs())
        .sum();
    let mut bound = TOL * mag + 1e-7;
    if quantized {
        for (wg, xg) in wr.chunks(group).zip(xt.chunks(group)) {
            let xmax = xg.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
            let wsum: f64 = wg.iter().map(|v| v.abs() as f64).sum();
            bound += wsum * xmax / 254.0;
        }
    }
    (exact, mag, bound)
}

/// Kernel::Q8 (int8 activations) against the exact product, within the
/// bound of the activation's rounding: per group, Σ|w| · max|x| / 254,
/// plus f32 accumulation (2e-5 · Σ|w·x|). Groups that do not hold whole
/// SIMD steps fall back to the exact loop (checked with the exact tolerance).
#[test]
fn int8_activation_kernel_stays_within_its_rounding_bound() {
    let seed: u64 = rand::rng().random();
    let cases: &[(usize, usize, usize, Scheme)] = &[
        (9, 128, 128, Scheme::Int4Sym),
        (33, 2048, 128, Scheme::Int4Sym),
        (17, 2048, 128, Scheme::Int4Asym),
        (12, 512, 512, Scheme::Int4Asym),
        // 8-bit, per channel (lm_head, embeddings).
        (7, 2048, 2048, Scheme::Int8Asym),
        (6, 256, 256, Scheme::Int8Sym),
        // Fallbacks to the exact loop: groups that do not hold whole steps.
        (5, 200, 200, Scheme::Int4Sym),
        (7, 257, 257, Scheme::Int8Asym),
    ];
    for (i, &(rows, cols, group, scheme)) in cases.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
        let s = make(&mut rng, rows, cols, group, scheme);
        let t = s.view();
        let w = t.dequantize();
        let p = Packed::from_stored(&t).unwrap();
        let tokens = 2;
        let x: Vec<f32> = (0..tokens * cols)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let quantized =
            (scheme.bits() == 4 && group % 64 == 0) || (scheme.bits() == 8 && group % 16 == 0);
        // Every int8 loop (VNNI where the CPU has it, AVX2, scalar) is
        // held to the same bound.
        for kernel in [Kernel::Q8, Kernel::Q8Avx2, Kernel::Q8Scalar] {
            let y = p.matmul_with(&x, tokens, kernel);
            let mut worst = 0f64;
            for ti in 0..tokens {
                let xt = &x[ti * cols..(ti + 1) * cols];
                for r in 0..rows {
                    let wr = &w[r * cols..(r + 1) * cols];
                    let (exact, _, bound) = int8_bound(wr, xt, group, quantized);
                    let err = (y[ti * rows + r] as f64 - exact).abs();
                    worst = worst.max(err / bound);
                    assert!(
                        err <= bound,
                        "{scheme:?} {rows}×{cols} g{group} {kernel:?} token {ti} row {r}: error {err:.3e} over the bound {bound:.3e} (seed {seed})"
                    );
                }
            }
            // The rounding is really there (the bound is not vacuous) where it applies.
            if quantized {
                assert!(
                    worst > 1e-3,
                    "{scheme:?} g{group}: suspiciously exact ({worst:.2e} of the bound)"
                );
            }
        }
    }
}

/// The Vulkan device (Mesa's lavapipe in CI), or None where there is no
/// adapter (a failure when HYBRID_TUI_REQUIRE_VULKAN=1).
fn vulkan() -> Option<burn::tensor::Device> {
    if hybrid_tui::shard_b::device::vulkan_adapters().is_empty() {
        assert!(
            std::env::var("HYBRID_TUI_REQUIRE_VULKAN").map_or(true, |v| v != "1"),
            "HYBRID_TUI_REQUIRE_VULKAN=1 but no Vulkan adapter was found"
        );
        eprintln!("no Vulkan adapter: GPU kernel tests skipped");
        return None;
    }
    let s = hybrid_tui::config::ShardBSettings {
        backend: "vulkan".into(),
        adapter: "auto".into(),
        weights_dtype: "packed".into(),
        threads: 0,
        cpu_cores: String::new(),
        decode: "replay".into(),
    };
    let (device, _) = hybrid_tui::shard_b::select_device(&s).expect("vulkan device");
    Some(device)
}

/// The GPU kernels (matrix-vector for ≤ 8 tokens, tiled beyond) against
/// the same f64 reference and tolerance as the CPU kernel, on the Vulkan
/// device: 4-bit sym/asym group 128 and per channel (rows of 72, 130, 200
/// columns: padded to 32 on the device), 8-bit per channel (100, 257,
/// 2048 columns) and group 128; 1, 3, 8, 9 and 37 tokens; whole and split
/// into parts by rows.
#[test]
fn gpu_kernels_match_the_dequantized_reference() {
    use burn::tensor::{DType, Int, Tensor, TensorData};
    use hybrid_tui::shard_b::cube::{DevicePacked, Matvec};
    let Some(device) = vulkan() else { return };
    let seed: u64 = rand::rng().random();
    let cases: &[(usize, usize, usize, Scheme, &[usize])] = &[
        (1, 128, 128, Scheme::Int4Sym, &[1, 9]),
        (7, 256, 128, Scheme::Int4Asym, &[3, 37]),
        (33, 384, 128, Scheme::Int4Sym, &[8, 9]),
        (70, 2048, 128, Scheme::Int4Sym, &[1, 37]),
        (17, 2048, 128, Scheme::Int4Asym, &[2]),
        (16, 72, 72, Scheme::Int4Asym, &[1, 37]),
        (19, 130, 130, Scheme::Int4Sym, &[3, 9]),
        (5, 200, 200, Scheme::Int4Sym, &[1]),
        (9, 100, 100, Scheme::Int8Asym, &[1, 37]),
        (13, 257, 257, Scheme::Int8Sym, &[3, 9]),
        (40, 2048, 2048, Scheme::Int8Asym, &[1, 20]),
        (3, 384, 128, Scheme::Int8Sym, &[8]),
        // Many rows (thousands of cubes), per channel.
        (33_000, 64, 64, Scheme::Int4Asym, &[1, 3]),
        // Rows of ≥ 8192 columns: by default 8 rows per unit shared by 4
        // lane groups (1-4 tokens), 4 rows and 4 groups (5-8); the groups'
        // sums meet 2 tokens at a time (3 and 5 end on half a chunk).
        (21, 8320, 128, Scheme::Int4Sym, &[1, 2, 3, 4, 5]),
        (12, 8192, 8192, Scheme::Int8Asym, &[1, 4]),
    ];
    for (i, &(rows, cols, group, scheme, token_counts)) in cases.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
        let s = make(&mut rng, rows, cols, group, scheme);
        let t = s.view();
        let w = t.dequantize();
        let p = Packed::from_stored(&t).expect("an integer weight packs");
        // Every other case split by rows into parts of ≤ 256 bytes of words, as
        // weights over 128 MiB are.
        let d = if i % 2 == 1 {
            DevicePacked::upload_split(&p, &device, 256)
        } else {
            DevicePacked::upload(&p, &device)
        }
        .expect("the layout fits the GPU kernels");
        for &tokens in token_counts {
            let x: Vec<f32> = (0..tokens * cols)
                .map(|_| rng.random_range(-2.0..2.0))
                .collect();
            let xt = Tensor::<2>::from_data(
                TensorData::new(x.clone(), [tokens, cols]),
                (&device, DType::F32),
            );
            // The default, and for one token the other shapes of the
            // matrix-vector kernel: rows per unit, steps loaded ahead (8
            // rows hold at most 2), lane groups per row; for four tokens
            // (on one long-row int4 case: each shape and token count is a
            // shader of its own, slow to build on lavapipe) those that
            // take 8 rows or several lane groups, as 3-4 tokens may.
            let shapes = [
                Matvec::new(1, 1, 1),
                Matvec::new(2, 1, 1),
                Matvec::new(4, 1, 1),
                Matvec::new(8, 1, 1),
                Matvec::new(4, 2, 1),
                Matvec::new(4, 4, 1),
                Matvec::new(8, 2, 1),
                Matvec::new(2, 1, 2),
                Matvec::new(4, 2, 2),
                Matvec::new(8, 1, 4),
            ];
            let wide = [
                Matvec::new(8, 1, 1),
                Matvec::new(8, 2, 1),
                Matvec::new(8, 1, 4),
                Matvec::new(4, 2, 2),
            ];
            let others: &[Matvec] = match tokens {
                1 => &shapes,
                4 if cols >= 8192 && scheme == Scheme::Int4Sym => &wide,
                _ => &[],
            };
            for &mv in std::iter::once(&d.matvec()).chain(others) {
                let y: Vec<f32> = d
                    .matmul_with(xt.clone(), mv)
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("f32 output");
                let what = format!("GPU {scheme:?} {rows}×{cols} g{group} {mv:?} (seed {seed})");
                assert_matches_reference(&w, &x, &y, [tokens, rows, cols], &what);
            }
        }
        // Rows (embedding lookups), dequantized on the device: scale·u +
        // shift against the store's (q − zp)·scale, within f32 rounding.
        let ids = [0, rows / 2, rows - 1, rows / 3];
        let got: Vec<f32> = d
            .rows_f32(Tensor::<1, Int>::from_data(
                TensorData::new(ids.iter().map(|&v| v as i64).collect(), [ids.len()]),
                &device,
            ))
            .into_data()
            .try_into_vec_as::<f32>()
            .expect("f32 rows");
        for (k, &r) in ids.iter().enumerate() {
            for c in 0..cols {
                let (a, b) = (got[k * cols + c], w[r * cols + c]);
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                    "GPU {scheme:?} row {r} col {c}: {a} vs {b} (seed {seed})"
                );
            }
        }
        // Resident: the words (rows padded to 32 columns), scale and shift.
        let stored = s.data.len() + s.scales.len() + s.zps.as_ref().map_or(0, |z| z.len());
        if cols % 32 == 0 && cols >= 2048 {
            let ratio = d.resident_bytes() as f64 / stored as f64;
            assert!(ratio <= 1.15, "GPU {scheme:?} g{group}: {ratio:.3}× stored");
        }
    }
}

/// The tiled int8-activation kernel (`Tiled`, AVX-512 VNNI) against the
/// exact product within the activation rounding's bound (as
/// Kernel::Q8), and against Kernel::Q8's row loop, which rounds the same
/// activations the same way (groups of 64 or more): those two differ only by f32 summation order
/// (2e-5 · Σ|w·x|). Rows that are not a multiple of a tile, 1 to 9 tokens
/// (passes of up to four tokens and their remainders), symmetric and
/// asymmetric, groups of 128 and 32 and per channel. Where the CPU lacks
/// the kernel, no weight is tiled.
#[test]
fn tiled_int8_kernel_matches_the_row_loop_and_stays_within_the_bound() {
    use hybrid_tui::shard_b::packed::{Tiled, tiled_supported};
    let seed: u64 = rand::rng().random();
    let cases: &[TiledShape] = &[
        (16, 128, 128, Scheme::Int4Sym, 1),
        (37, 2048, 128, Scheme::Int4Sym, 1),
        (50, 1024, 128, Scheme::Int4Asym, 3),
        (33, 512, 32, Scheme::Int4Sym, 4),
        (20, 256, 256, Scheme::Int4Asym, 9),
        (64, 2048, 128, Scheme::Int4Sym, 6),
    ];
    for (i, case) in cases.iter().enumerate() {
        let (rows, _, group, scheme, tokens) = *case;
        let c = tiled_case(seed, i, case);
        let Some(tiled) = Tiled::from_packed(&c.p) else {
            assert!(!tiled_supported(), "{scheme:?} g{group}: not tiled");
            eprintln!("no AVX-512 VNNI here: the tiled kernel is not used");
            return;
        };
        let y = tiled.matmul(&c.x, tokens);
        let rows_q8 = c.p.matmul_with(&c.x, tokens, Kernel::Q8);
        check_int8_outputs(&c, case, &y, |ti, r, got, mag| {
            // The row loop rounds activations where groups hold whole
            // 64-weight steps (elsewhere it is exact).
            let twin = rows_q8[ti * rows + r] as f64;
            assert!(
                group % 64 != 0 || (got as f64 - twin).abs() <= TOL * mag + 1e-6,
                "{}: token {ti} row {r}: tiled {got} vs the row loop {twin}",
                c.what
            );
        });
    }
}

/// A case of the tiled tests: `(rows, cols, group, scheme, tokens)`.
type TiledShape = (usize, usize, usize, Scheme, usize);

/// A fresh random weight of `shape` (dequantized and packed) and
/// activations of its tokens, for case `i` of a test's `seed`.
struct TiledCase {
    w: Vec<f32>,
    p: Packed,
    x: Vec<f32>,
    what: String,
}

fn tiled_case(seed: u64, i: usize, shape: &TiledShape) -> TiledCase {
    let &(rows, cols, group, scheme, tokens) = shape;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(i as u64));
    let s = make(&mut rng, rows, cols, group, scheme);
    let t = s.view();
    let x = (0..tokens * cols)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    TiledCase {
        w: t.dequantize(),
        p: Packed::from_stored(&t).unwrap(),
        x,
        what: format!("{scheme:?} {rows}×{cols} g{group}, {tokens} tokens (seed {seed})"),
    }
}

/// Every output of `y` (`[tokens, rows]`) within the activation
/// rounding's bound of the exact product, `each(token, row, got,
/// magnitude)` run on it too, and the worst not suspiciously exact.
fn check_int8_outputs(
    c: &TiledCase,
    shape: &TiledShape,
    y: &[f32],
    each: impl Fn(usize, usize, f32, f64),
) {
    let &(rows, cols, group, _, tokens) = shape;
    let what = &c.what;
    assert_eq!(y.len(), tokens * rows, "{what}: output size");
    let mut worst = 0f64;
    for ti in 0..tokens {
        let xt = &c.x[ti * cols..(ti + 1) * cols];
        for r in 0..rows {
            let wr = &c.w[r * cols..(r + 1) * cols];
            let (exact, mag, bound) = int8_bound(wr, xt, group, true);
            let got = y[ti * rows + r];
            let err = (got as f64 - exact).abs();
            worst = worst.max(err / bound);
            assert!(
                err <= bound,
                "{what}: token {ti} row {r}: error {err:.3e} over the bound {bound:.3e}"
            );
            each(ti, r, got, mag);
        }
    }
    assert!(
        worst > 1e-3,
        "{what}: suspiciously exact ({worst:.2e} of the bound)"
    );
}

/// The tiled product's epilogues against its plain result: stored, added
/// to a residual, and a stacked gate/up made `gate(g, u)` per token, both
/// where the halves fall on tile boundaries (done as the tiles are put in
/// order) and where they do not (done after), with a buffer reused across
/// calls of other sizes.
#[test]
fn tiled_epilogues_match_the_plain_product() {
    use hybrid_tui::shard_b::packed::{Epilogue, TileWork, Tiled};
    let seed: u64 = rand::rng().random();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut work = TileWork::default();
    let mut out = Vec::new();
    // Any function of the pair that tells gate from up.
    let gate: fn(&mut [f32], &[f32], &[f32]) = |o, g, u| {
        for ((o, g), u) in o.iter_mut().zip(g).zip(u) {
            *o = g * 0.5 - u;
        }
    };
    for (rows, tokens) in [(64, 1), (96, 5), (40, 3), (64, 12)] {
        let cols = 256;
        let s = make(&mut rng, rows, cols, 128, Scheme::Int4Sym);
        let p = Packed::from_stored(&s.view()).unwrap();
        let Some(tiled) = Tiled::from_packed(&p) else {
            eprintln!("no AVX-512 VNNI here: the tiled kernel is not used");
            return;
        };
        let what = format!("{rows} rows, {tokens} tokens (seed {seed})");
        let x: Vec<f32> = (0..tokens * cols)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect();
        let y = tiled.matmul(&x, tokens);
        tiled.matmul_into(&x, tokens, &mut work, Epilogue::Store(&mut out));
        assert_eq!(out, y, "{what}: stored");
        let base: Vec<f32> = (0..tokens * rows)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        let mut acc = base.clone();
        tiled.matmul_into(&x, tokens, &mut work, Epilogue::Add(&mut acc));
        for ((a, b), y) in acc.iter().zip(&base).zip(&y) {
            assert_eq!(*a, b + y, "{what}: added");
        }
        tiled.matmul_into(
            &x,
            tokens,
            &mut work,
            Epilogue::Gated {
                out: &mut out,
                gate,
            },
        );
        let half = rows / 2;
        assert_eq!(out.len(), tokens * half, "{what}: gated size");
        for t in 0..tokens {
            for i in 0..half {
                let want = y[t * rows + i] * 0.5 - y[t * rows + half + i];
                assert_eq!(out[t * half + i], want, "{what}: gated token {t} row {i}");
            }
        }
    }
}

/// Prompt chunks on Intel AMX (`tdpbsud`, where the CPU has AMX-INT8)
/// against the VNNI passes over the same tiles, bit for bit (the same
/// integer sums, scaled in the same order), and against the exact product
/// within the activation rounding's bound. Chunks of 48 to 128 tokens
/// (AMX takes chunks from `AMX_MIN_TOKENS`, 48):
/// whole and partial 16-token blocks, passes of four blocks and fewer;
/// rows that are not a multiple of a tile; symmetric and asymmetric;
/// groups of 32 (one short step), 64, 128, 256 and per channel. One
/// buffer set serves every call, larger chunks first, so a smaller
/// chunk's padding rows hold stale values. Where the CPU lacks AMX (or
/// `HYBRID_TUI_AMX=off`), it says so and checks nothing.
#[test]
fn amx_chunks_match_the_vnni_passes_bit_for_bit() {
    use hybrid_tui::shard_b::packed::{AMX_MIN_TOKENS, Epilogue, TileWork, Tiled, amx_supported};
    if !amx_supported() {
        eprintln!("no AMX-INT8 here: the AMX pass is not used (nothing to check)");
        return;
    }
    let seed: u64 = rand::rng().random();
    let cases: &[TiledShape] = &[
        (64, 2048, 128, Scheme::Int4Sym, 128),
        (48, 1024, 1024, Scheme::Int4Asym, 100),
        (24, 192, 64, Scheme::Int4Sym, 81),
        (20, 256, 256, Scheme::Int4Asym, 64),
        (33, 512, 32, Scheme::Int4Sym, 60),
        (50, 1024, 128, Scheme::Int4Asym, 49),
        (37, 2048, 128, Scheme::Int4Sym, 48),
        (16, 128, 128, Scheme::Int4Sym, AMX_MIN_TOKENS),
    ];
    let mut work = TileWork::default();
    let mut y = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let rows = case.0;
        let c = tiled_case(seed, i, case);
        let what = &c.what;
        let amx = Tiled::from_packed(&c.p).expect("AMX implies the VNNI tiles");
        assert!(amx.uses_amx(), "{what}: not on AMX");
        let vnni = Tiled::from_packed(&c.p).unwrap().without_amx();
        let tokens = case.4;
        amx.matmul_into(&c.x, tokens, &mut work, Epilogue::Store(&mut y));
        let v = vnni.matmul(&c.x, tokens);
        check_int8_outputs(&c, case, &y, |ti, r, got, _| {
            let twin = v[ti * rows + r];
            assert_eq!(
                got.to_bits(),
                twin.to_bits(),
                "{what}: token {ti} row {r}: AMX {got} vs VNNI {twin}"
            );
        });
    }
}
