//! Shard B's packed-weight kernels: time per matvec (one token) and its
//! effective bandwidth over the packed bytes, for the `llama-3.2-1b`
//! preset's shard B shapes and an 8B-class MLP, next to the measured memory
//! bandwidth of the same device.
//!
//! - CPU (the packed kernel: f32 activations with the best loop this CPU
//!   has and with the AVX2 loop, and int8 activations): against a large
//!   multi-threaded read, and a memcpy.
//! - GPU (the CubeCL kernels on the Vulkan adapter shard B would pick):
//!   against a device-to-device copy kernel (`x · 1.0001`, reads + writes
//!   counted, synchronized per call), next to the dequantized f16 path it
//!   replaces (burn's matmul over f16 weights: 4× the bytes of int4).
//!   "packed rNsMkG" is the matrix-vector kernel with N rows per unit, M
//!   steps loaded ahead and G lane groups per row ([`Matvec`]); * marks
//!   the one shard B uses. Three times per call: the host's (issue and
//!   wait), the device's in a profiling window, and the device's with the
//!   calls queued ahead of it (see `time_gpu`).
//!
//! Each call reads its weight from memory, not from a cache, as decode
//! does (a model's weights pass through once per token): the calls cycle
//! over copies of the weight that together pass [`COLD_BYTES`] (a CPU's
//! last-level cache is tens of MiB; the H100's L2 is 50 MiB). Timing one
//! copy over and over would measure the cache for every shape but the
//! lm_head.
//!
//! `cargo test --bench int4 --profile dev --no-run`, then run the binary it
//! names (built as the app is: optimized, without debug assertions, which
//! would check every SIMD load of the CPU kernel). HYBRID_BENCH_ITERS sets
//! the repetitions per shape (default 30, after 3 warm-up calls);
//! HYBRID_BENCH_DEVICE = cpu | gpu | all (default: all, the GPU part only
//! where a Vulkan adapter exists). HYBRID_BENCH_TOKENS (default 1) sets the
//! tokens per call, e.g. 4 for a decode step of four streams, 64 for a
//! prompt chunk (the GPU part takes at most 8; the µs are per call; the
//! GB/s count the weight once). The CPU part also runs the int8 tiles
//! (`Tiled`) where the CPU has AVX-512 VNNI; where it also has AMX-INT8,
//! "int8 tiled" is what the CPU plan runs (AMX for more than 8 tokens) and
//! "int8 vnni" the same tiles in VNNI passes. HYBRID_BENCH_SHAPES=N,M,...
//! keeps those shapes only (0-based, in the table's order).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use burn::tensor::{DType, Device, Distribution, Tensor, TensorData};
use hybrid_tui::bake::quant::{Scheme, pack_u4, quantize};
use hybrid_tui::bake::store::StoredTensor;
use hybrid_tui::shard_b::cube::{DevicePacked, Matvec};
use hybrid_tui::shard_b::device::block_on;
use hybrid_tui::shard_b::packed::{Kernel, Packed, Tiled, best_kernel_name};
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// The copies of a weight the calls cycle over pass this many bytes.
const COLD_BYTES: usize = 256 << 20;

/// How many copies of a `bytes`-sized weight pass [`COLD_BYTES`].
fn cold_copies(bytes: usize) -> usize {
    COLD_BYTES.div_ceil(bytes.max(1)).max(1)
}

/// The next of `n` copies, round robin.
fn next(counter: &AtomicUsize, n: usize) -> usize {
    counter.fetch_add(1, Ordering::Relaxed) % n
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// GB/s of a multi-threaded read of `bytes` (sum of u64 words, in 32 KiB
/// pieces over the pool as the kernel takes its 16-row blocks), the best
/// of 7 (the conservative reference: a VM's bandwidth varies by a third
/// from run to run), and of a memcpy of half as many bytes (read + write
/// counted), the median of 5.
fn memory_bandwidth(bytes: usize) -> (f64, f64) {
    let words: Vec<u64> = (0..bytes / 8).map(|i| i as u64).collect();
    let mut best_read = 0f64;
    for _ in 0..7 {
        let t = Instant::now();
        let s: u64 = words
            .par_chunks(1 << 12)
            .map(|c| c.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
            .reduce(|| 0, |a, b| a.wrapping_add(b));
        best_read = best_read.max(bytes as f64 / t.elapsed().as_secs_f64() / 1e9);
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
    (best_read, median(copies))
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

/// The shapes timed: the llama-3.2-1b preset's shard B (each projection,
/// and the stacked ones shard B multiplies) and an 8B-class MLP.
const SHAPES: &[(&str, usize, usize, Scheme, usize)] = &[
    ("gate/up 8192×2048", 8192, 2048, Scheme::Int4Sym, 128),
    ("down 2048×8192", 2048, 8192, Scheme::Int4Sym, 128),
    ("q/o 2048×2048", 2048, 2048, Scheme::Int4Sym, 128),
    ("k/v 512×2048", 512, 2048, Scheme::Int4Sym, 128),
    // What shard B runs when packed: q/k/v and gate/up stacked (linear::Stacked).
    ("q+k+v stacked 3072×2048", 3072, 2048, Scheme::Int4Sym, 128),
    (
        "gate+up stacked 16384×2048",
        16384,
        2048,
        Scheme::Int4Sym,
        128,
    ),
    ("lm_head 128256×2048", 128256, 2048, Scheme::Int8Asym, 2048),
    ("lm_head 128256×2048", 128256, 2048, Scheme::Int4Sym, 128),
    ("8B gate/up 14336×4096", 14336, 4096, Scheme::Int4Sym, 128),
    ("8B down 4096×14336", 4096, 14336, Scheme::Int4Sym, 128),
];

fn main() {
    let iters: usize = std::env::var("HYBRID_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .max(1);
    let which = std::env::var("HYBRID_BENCH_DEVICE").unwrap_or_else(|_| "all".into());
    let tokens: usize = std::env::var("HYBRID_BENCH_TOKENS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    if which == "cpu" || which == "all" {
        cpu(iters, tokens);
    }
    if which == "gpu" || which == "all" {
        let tokens = tokens.min(hybrid_tui::shard_b::cube::MATVEC_MAX_TOKENS);
        gpu(iters, tokens, which == "gpu");
    }
}

fn cpu(iters: usize, tokens: usize) {
    let threads = rayon::current_num_threads();
    let (read, copy) = memory_bandwidth(1 << 30);
    println!(
        "int4 kernel: {} · {threads} threads · {tokens} token(s) a call · memory: read {read:.1} GB/s (1 GiB, best of 7), copy {copy:.1} GB/s (median of 5) · each shape cycles over copies of ≥ {} MiB in all",
        best_kernel_name(),
        COLD_BYTES >> 20
    );
    println!(
        "{:<28} {:>10} {:>10} {:>10} {:>10} {:>9}",
        "weight [out × in]", "scheme", "packed MB", "kernel", "µs/call", "GB/s (% of read)"
    );
    let mut rng = rand::rng();
    let only: Option<Vec<usize>> = std::env::var("HYBRID_BENCH_SHAPES")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    for (i, &(name, rows, cols, scheme, group)) in SHAPES.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let (p, stored) = packed(rows, cols, scheme, group, i as u64);
        let n = cold_copies(stored);
        // The int8 tiles where this CPU and the weight take them.
        let tiled: Vec<Tiled> = (0..n).map_while(|_| Tiled::from_packed(&p)).collect();
        // Where prompt chunks go through AMX, the same tiles in VNNI passes.
        let vnni: Vec<Tiled> = match tiled.first() {
            Some(t) if t.uses_amx() => (0..n)
                .map_while(|_| Tiled::from_packed(&p).map(Tiled::without_amx))
                .collect(),
            _ => Vec::new(),
        };
        let copies: Vec<Packed> = (0..n).map(|_| p.clone()).collect();
        drop(p);
        let turn = AtomicUsize::new(0);
        let x: Vec<f32> = (0..tokens * cols)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        // f32 activations: the best loop (the AVX-512 lookup where it fits)
        // and the AVX2 loop (what a CPU without AVX-512 runs); int8
        // activations row by row, and in tiles (the CPU plan's choice).
        let mut kernels = vec![
            (Some(Kernel::Best), "f32 act"),
            (Some(Kernel::Avx2), "f32 avx2"),
            (Some(Kernel::Q8), "int8 act"),
        ];
        if !tiled.is_empty() {
            kernels.push((None, "int8 tiled"));
        }
        if !vnni.is_empty() {
            kernels.push((None, "int8 vnni"));
        }
        let call = |kernel: Option<Kernel>, name: &str| match kernel {
            Some(k) => copies[next(&turn, copies.len())].matmul_with(&x, tokens, k),
            None if name == "int8 vnni" => vnni[next(&turn, vnni.len())].matmul(&x, tokens),
            None => tiled[next(&turn, tiled.len())].matmul(&x, tokens),
        };
        // The kernels take turns call by call, so a noisy neighbour (this
        // project's VM) slows them alike.
        for _ in 0..3 {
            for (kernel, name) in &kernels {
                std::hint::black_box(call(*kernel, name));
            }
        }
        let mut times = vec![Vec::new(); kernels.len()];
        for _ in 0..iters {
            for ((kernel, name), times) in kernels.iter().zip(&mut times) {
                let t = Instant::now();
                std::hint::black_box(call(*kernel, name));
                times.push(t.elapsed().as_secs_f64());
            }
        }
        for ((_, kname), times) in kernels.iter().zip(times) {
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

/// Per call of `f` over `iters` calls issued back to back, all outputs
/// kept alive (after 3 warm-up calls, which compile the kernels):
/// - host: issue, then one device synchronization (what waits for the
///   work: reading an element back does not, with lazy fusion);
/// - dev: the same calls inside a profiling window (device timestamps);
///   where issuing a call takes the host longer than the device takes to
///   run it, the window also holds the device waiting for the host;
/// - queued: the same window opened behind matrix products that keep the
///   device busy for 1.5× the time issuing the calls takes (Vulkan writes a
///   window's first timestamp once the work queued before it is done), so
///   the calls run back to back: the device's own time per call, launch
///   gaps included.
///
/// None where the device cannot timestamp.
fn time_gpu(
    device: &Device,
    iters: usize,
    f: &(dyn Fn() -> Tensor<2> + Sync),
    busy: &Busy,
) -> (f64, Option<f64>, Option<f64>) {
    let warm: Vec<Tensor<2>> = (0..3).map(|_| f()).collect();
    device.sync().expect("sync");
    drop(warm);
    let t = Instant::now();
    let outs: Vec<Tensor<2>> = (0..iters).map(|_| f()).collect();
    device.sync().expect("sync");
    let host = t.elapsed().as_secs_f64() / iters as f64;
    drop(outs);
    let window = |ahead: usize| {
        let held = busy.queue(ahead);
        device.flush().expect("flush");
        let window = device.profile(|| {
            let outs: Vec<Tensor<2>> = (0..iters).map(|_| f()).collect();
            device.flush().expect("flush");
            outs
        });
        let dev = window.ok().and_then(|(outs, d)| {
            device.sync().expect("sync");
            drop(outs);
            block_on(d.resolve()).map(|ticks| ticks.duration().as_secs_f64() / iters as f64)
        });
        drop(held);
        dev
    };
    let dev = window(0);
    let ahead = (1.5 * host * iters as f64 / busy.seconds).ceil() as usize;
    (host, dev, window(ahead))
}

/// Matrix products (`m · m`, 4096², f32: compute-bound, 64 MiB each) that
/// keep the device busy without filling its memory.
struct Busy {
    m: Tensor<2>,
    /// Seconds one product takes (median of 5, each waited for).
    seconds: f64,
}

impl Busy {
    fn new(device: &Device) -> Busy {
        let m = Tensor::<2>::random(
            [4096, 4096],
            Distribution::Uniform(-1.0, 1.0),
            (device, DType::F32),
        );
        let mut busy = Busy { m, seconds: 0.0 };
        drop(busy.queue(3));
        device.sync().expect("sync");
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let held = busy.queue(1);
            device.sync().expect("sync");
            v.push(t.elapsed().as_secs_f64());
            drop(held);
        }
        busy.seconds = median(v);
        busy
    }

    /// Queue `n` products (kept alive, so fusion cannot drop them).
    fn queue(&self, n: usize) -> Vec<Tensor<2>> {
        (0..n)
            .map(|_| self.m.clone().matmul(self.m.clone()))
            .collect()
    }
}

/// GB/s of a device-to-device copy kernel over `bytes` (read + write),
/// each call waited for; median of 7.
fn device_copy_bandwidth(device: &Device, bytes: usize) -> f64 {
    let a = Tensor::<1>::random(
        [bytes / 4],
        Distribution::Uniform(-1.0, 1.0),
        (device, DType::F32),
    );
    let mut v = Vec::new();
    device.sync().expect("sync");
    for i in 0..9 {
        let t = Instant::now();
        let b = a.clone().mul_scalar(1.0001);
        device.sync().expect("sync");
        let dt = t.elapsed().as_secs_f64();
        drop(b);
        if i >= 2 {
            v.push(2.0 * bytes as f64 / dt / 1e9);
        }
    }
    median(v)
}

fn gpu(iters: usize, tokens: usize, required: bool) {
    if hybrid_tui::shard_b::device::vulkan_adapters().is_empty() {
        assert!(!required, "HYBRID_BENCH_DEVICE=gpu but no Vulkan adapter");
        println!("GPU: no Vulkan adapter, skipped");
        return;
    }
    let settings = hybrid_tui::config::ShardBSettings {
        backend: "vulkan".into(),
        adapter: "auto".into(),
        weights_dtype: "packed".into(),
        threads: 0,
        cpu_cores: String::new(),
        decode: "replay".into(),
    };
    let (device, info) = hybrid_tui::shard_b::select_device(&settings).expect("vulkan device");
    let copy_mib: usize = std::env::var("HYBRID_BENCH_COPY_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let copy = device_copy_bandwidth(&device, copy_mib << 20);
    let busy = Busy::new(&device);
    println!(
        "GPU kernels on {} ({}) · {tokens} token(s) per call · device copy {copy:.1} GB/s ({copy_mib} MiB read + {copy_mib} MiB written, median of 7) · queued behind 4096² f32 products of {:.2} ms · each shape cycles over copies of ≥ {} MiB in all",
        info.name,
        info.backend,
        busy.seconds * 1e3,
        COLD_BYTES >> 20
    );
    println!(
        "{:<28} {:>10} {:>8} {:>12} {:>10} {:>7} {:>10} {:>15} {:>10} {:>15}",
        "weight [out × in]",
        "scheme",
        "MB read",
        "path",
        "µs (host)",
        "GB/s",
        "µs (dev)",
        "GB/s (% copy)",
        "µs (queued)",
        "GB/s (% copy)"
    );
    let device_time = |bytes: f64, t: Option<f64>| match t {
        Some(d) => format!(
            "{:>10.1} {:>7.1} ({:>3.0}%)",
            d * 1e6,
            bytes / d / 1e9,
            bytes / d / 1e9 / copy * 100.0
        ),
        None => format!("{:>10} {:>15}", "n/a", ""),
    };
    let row = |name: &str,
               scheme: &str,
               bytes: f64,
               path: &str,
               (host, dev, queued): (f64, Option<f64>, Option<f64>)| {
        println!(
            "{:<28} {:>10} {:>8.1} {:>12} {:>10.1} {:>7.1} {} {}",
            name,
            scheme,
            bytes / 1e6,
            path,
            host * 1e6,
            bytes / host / 1e9,
            device_time(bytes, dev),
            device_time(bytes, queued),
        );
    };
    let mut rng = rand::rng();
    for (i, &(name, rows, cols, scheme, group)) in SHAPES.iter().enumerate() {
        let (p, stored) = packed(rows, cols, scheme, group, i as u64);
        let copies: Vec<DevicePacked> = (0..cold_copies(stored))
            .map(|_| DevicePacked::upload(&p, &device).expect("the layout fits the GPU kernels"))
            .collect();
        drop(p);
        let turn = AtomicUsize::new(0);
        let x = Tensor::<2>::from_data(
            TensorData::new(
                (0..tokens * cols)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect::<Vec<_>>(),
                [tokens, cols],
            ),
            (&device, DType::F32),
        );
        device.sync().expect("sync");
        // Rows per unit 4 and 8 (1 and 2 were slower on every shape in
        // earlier runs), 1 or 2 steps loaded ahead (4 was slower), 1, 2 or
        // 4 lane groups per row.
        let shapes = [
            Matvec::new(2, 1, 1),
            Matvec::new(2, 1, 2),
            Matvec::new(4, 1, 1),
            Matvec::new(4, 2, 1),
            Matvec::new(4, 1, 2),
            Matvec::new(4, 2, 2),
            Matvec::new(4, 1, 4),
            Matvec::new(8, 1, 1),
            Matvec::new(8, 1, 2),
            Matvec::new(8, 1, 4),
            Matvec::new(8, 2, 1),
        ];
        for mv in shapes {
            let t = time_gpu(
                &device,
                iters,
                &|| copies[next(&turn, copies.len())].matmul_with(x.clone(), mv),
                &busy,
            );
            let path = format!(
                "packed r{}s{}k{}{}",
                mv.rows_per_unit,
                mv.steps,
                mv.split,
                if mv == copies[0].matvec() { "*" } else { "" }
            );
            row(name, scheme.name(), stored as f64, &path, t);
        }
        drop(copies);
        // The path it replaces: weights dequantized to f16 at load.
        let w16: Vec<Tensor<2>> = (0..cold_copies(rows * cols * 2))
            .map(|_| {
                Tensor::<2>::random(
                    [rows, cols],
                    Distribution::Uniform(-0.05, 0.05),
                    (&device, DType::F16),
                )
            })
            .collect();
        device.sync().expect("sync");
        let t16 = time_gpu(
            &device,
            iters,
            &|| {
                x.clone()
                    .cast(DType::F16)
                    .matmul(w16[next(&turn, w16.len())].clone().transpose())
                    .cast(DType::F32)
            },
            &busy,
        );
        row("", "f16", (rows * cols * 2) as f64, "dequantized", t16);
    }
}
