//! What the device sampler costs: CPU time of the sampling thread per
//! second of wall time at 4 Hz (the workbench's rate), goal under 0.5% of
//! one core.
//!
//! Two runs of HYBRID_BENCH_SECONDS (default 20) each:
//! - this machine (`/`): sysinfo CPU use and frequency, /proc/meminfo, the
//!   DRM / accel / NVML readers (which find nothing here);
//! - the recorded Meteor Lake tree (tests/fixtures/hw/mtl-i915): the i915
//!   fdinfo scan of two processes, the NPU sysfs counters, meminfo (no
//!   sysinfo, no NVML: those need the running system).
//!
//! Run: cargo test --bench telemetry --no-run, then the binary it names.

use std::time::Instant;

use hybrid_tui::hw::Root;
use hybrid_tui::hw::sampler::{PERIOD, Pids, Sampler};

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn run(label: &str, root: Root, pids: Pids, seconds: f64) {
    let cpu0 = thread_cpu_ns();
    let mut sampler = Sampler::new(root, pids);
    let setup_ms = (thread_cpu_ns() - cpu0) as f64 / 1e6;
    let mut per_sample = Vec::new();
    let wall = Instant::now();
    let cpu_start = thread_cpu_ns();
    while wall.elapsed().as_secs_f64() < seconds {
        std::thread::sleep(PERIOD);
        let c = thread_cpu_ns();
        let snap = sampler.sample();
        per_sample.push((thread_cpu_ns() - c) as f64 / 1e3);
        std::hint::black_box(snap);
    }
    let cpu_ms = (thread_cpu_ns() - cpu_start) as f64 / 1e6;
    let wall_s = wall.elapsed().as_secs_f64();
    per_sample.sort_by(f64::total_cmp);
    let p = |q: f64| per_sample[((per_sample.len() - 1) as f64 * q) as usize];
    println!(
        "{label}: {} samples at {:.0} Hz over {wall_s:.1} s · CPU per sample p50 {:.0} µs, p99 {:.0} µs, max {:.0} µs · {:.2} ms CPU per s = {:.3}% of one core (goal < 0.5%) · setup {setup_ms:.1} ms",
        per_sample.len(),
        1.0 / PERIOD.as_secs_f64(),
        p(0.5),
        p(0.99),
        per_sample.last().copied().unwrap_or(0.0),
        cpu_ms / wall_s,
        cpu_ms / wall_s / 10.0,
    );
}

fn main() {
    let seconds: f64 = std::env::var("HYBRID_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20.0);
    run("this machine", Root::live(), Pids::new(), seconds);
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hw/mtl-i915");
    let pids = Pids::of(4242);
    pids.set_executive(Some(4243));
    run("recorded mtl-i915 tree", Root::at(fixture), pids, seconds);
}
