//! Shard B's packed-weight CPU kernel: time per matvec (one token) and its
//! effective bandwidth over the packed bytes, for the `llama-3.2-1b`
//! preset's shard B shapes and an 8B-class MLP, next to this machine's
//! measured memory bandwidth (a large multi-threaded read, and a memcpy).
//!
//! `cargo test --bench int4 --no-run`, then run the binary it names
//! (dependencies optimized in the test profile). HYBRID_BENCH_ITERS sets
//! the repetitions per shape (default 30, after 3 warm-up calls).

use std::time::Instant;

use hybrid_tui::bake::quant::{Scheme, pack_u4, quantize};
use hybrid_tui::bake::store::StoredTensor;
use hybrid_tui::shard_b::packed::{Kernel, Packed, best_kernel_name};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// GB/s of a multi-threaded read of `bytes` (sum of u64 words) and of a
/// memcpy of half as many bytes (read + write counted).
fn memory_bandwidth(bytes: usize) -> (f64, f64) {
    let words: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    let mut reads = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let s: u64 = words
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
            .reduce(|| 0, |a, b| a.wrapping_add(b));
        reads.push(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
        std::hint::black_box(s);
    }
    let half = bytes / 2;
    let src = vec![1u8; half];
    let mut dst = vec![0u8; half];
    let mut copies = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        dst.par_chunks_mut(1 << 20)
            .zip(src.par_chunks(1 << 20))
            .for_each(|(d, s)| d.copy_from_slice(s));
        copies.push(2.0 * half as f64 / t.elapsed().as_secs_f64() / 1e9);
        std::hint::black_box(&dst);
    }
    (median(reads), median(copies))
}

fn packed(rows: usize, cols: usize, scheme: Scheme, group: usize, seed: u64) -> (Packed, usize) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Quantizing 128256×2048 row by row would take a while: quantize a
    // block of rows and repeat it (the kernel's work does not depend on
    // the values).
    let block = rows.min(256);
    let w: Vec<f32> = (0..block * cols)
        .map(|_| rng.random_range(-0.05..0.05))
        .collect();
    let m = quantize(&w, block, cols, scheme, group);
    let reps = rows.div_ceil(block);
    let mut q = Vec::new();
    let mut scales = Vec::new();
    let mut zps = Vec::new();
    for _ in 0..reps {
        q.extend_from_slice(&m.q);
        scales.extend(m.scales_f16());
        if let Some(z) = &m.zero_points {
            zps.extend_from_slice(z);
        }
    }
    q.truncate(rows * cols);
    scales.truncate(rows * cols / group);
    zps.truncate(rows * cols / group);
    let data = if scheme.bits() == 4 { pack_u4(&q) } else { q };
    let scale_bytes: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    let zp_bytes = if zps.is_empty() {
        None
    } else if scheme.bits() == 4 {
        Some(pack_u4(&zps))
    } else {
        Some(zps)
    };
    let shape = [rows, cols];
    let t = StoredTensor {
        scheme,
        shape: &shape,
        group,
        data: &data,
        scales: Some(&scale_bytes),
        zero_points: zp_bytes.as_deref(),
    };
    let stored = data.len() + scale_bytes.len() + zp_bytes.as_ref().map_or(0, |z| z.len());
    (Packed::from_stored(&t).expect("pack"), stored)
}

fn main() {
    let iters: usize = std::env::var("HYBRID_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let threads = rayon::current_num_threads();
    let (read, copy) = memory_bandwidth(1 << 30);
    println!(
        "int4 kernel: {} · {threads} threads · memory: read {read:.1} GB/s, copy {copy:.1} GB/s (1 GiB, median of 5)",
        best_kernel_name()
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "weight [out × in]", "scheme", "packed MB", "kernel", "µs/matvec", "GB/s (% of read)"
    );
    let shapes: &[(&str, usize, usize, Scheme, usize)] = &[
        ("gate/up 8192×2048", 8192, 2048, Scheme::Int4Sym, 128),
        ("down 2048×8192", 2048, 8192, Scheme::Int4Sym, 128),
        ("q/o 2048×2048", 2048, 2048, Scheme::Int4Sym, 128),
        ("k/v 512×2048", 512, 2048, Scheme::Int4Sym, 128),
        ("lm_head 128256×2048", 128256, 2048, Scheme::Int8Asym, 2048),
        ("lm_head 128256×2048", 128256, 2048, Scheme::Int4Sym, 128),
        ("8B gate/up 14336×4096", 14336, 4096, Scheme::Int4Sym, 128),
        ("8B down 4096×14336", 4096, 14336, Scheme::Int4Sym, 128),
    ];
    let mut rng = rand::rng();
    for (i, &(name, rows, cols, scheme, group)) in shapes.iter().enumerate() {
        let (p, stored) = packed(rows, cols, scheme, group, i as u64);
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let kernels = [(Kernel::Best, "f32 act"), (Kernel::Q8, "int8 act")];
        for (kernel, kname) in kernels {
            for _ in 0..3 {
                std::hint::black_box(p.matmul_with(&x, 1, kernel));
            }
            let mut times = Vec::new();
            for _ in 0..iters {
                let t = Instant::now();
                std::hint::black_box(p.matmul_with(&x, 1, kernel));
                times.push(t.elapsed().as_secs_f64());
            }
            let t = median(times);
            let gbs = stored as f64 / t / 1e9;
            println!(
                "{:<28} {:>10} {:>10.1} {:>10} {:>10.1} {:>7.2} ({:.0}%)",
                name,
                scheme.name(),
                stored as f64 / 1e6,
                kname,
                t * 1e6,
                gbs,
                gbs / read * 100.0
            );
        }
    }
}
