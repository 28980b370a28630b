//! Live utilization: every reader sampled on one timer, published as one
//! [`Snapshot`]. Discovery (which cards, which NPUs, opening NVML and the
//! PMU) happens once in [`Sampler::new`]; each [`Sampler::sample`] only
//! reads counters and turns their deltas into percentages.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::cpu::{self, CpuInfo};
use super::intel_gpu::{self, ClientTotals, IntelGpu, PmuCounter};
use super::memory::{self, Memory};
use super::npu::{self, Npu, NpuCounters};
use super::nvidia::{NvidiaGpu, NvidiaReader};
use super::{Reading, Root, fdinfo, now_ns, percent};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CpuUse {
    /// Percent, 0..=100.
    pub total: f32,
    pub per_core: Vec<f32>,
    /// Mean current frequency over the CPUs, MHz.
    pub mhz: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuUse {
    pub card: String,
    pub name: String,
    pub driver: String,
    pub integrated: bool,
    /// Busiest engine of our own processes (fdinfo); None on the first sample.
    pub ours_busy_pct: Option<f32>,
    pub ours_resident_bytes: u64,
    /// The whole GPU (i915 perf PMU), or why not.
    pub all_busy_pct: Reading<f32>,
    pub cur_mhz: Option<u64>,
    pub max_mhz: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NpuUse {
    pub accel: String,
    pub generation: String,
    /// From npu_busy_time_us; None on the first sample.
    pub busy_pct: Option<f32>,
    pub cur_mhz: Option<u64>,
    pub max_mhz: Option<u64>,
    pub memory_bytes: Option<u64>,
}

/// One reading of everything, taken at once.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Snapshot {
    pub cpu_info: Reading<CpuInfo>,
    pub cpu: Reading<CpuUse>,
    pub memory: Reading<Memory>,
    pub intel_gpus: Reading<Vec<GpuUse>>,
    pub npus: Reading<Vec<NpuUse>>,
    pub nvidia: Reading<Vec<NvidiaGpu>>,
}

/// Processes whose GPU use counts as ours: this one, plus the executive
/// when one runs (the engine sets it).
#[derive(Debug, Clone, Default)]
pub struct Pids(Arc<Mutex<Vec<u32>>>);

impl Pids {
    pub fn new() -> Pids {
        Pids::of(std::process::id())
    }
    /// A set that starts with `pid` instead of this process (recorded trees).
    pub fn of(pid: u32) -> Pids {
        Pids(Arc::new(Mutex::new(vec![pid])))
    }
    pub fn set_executive(&self, pid: Option<u32>) {
        if let Ok(mut v) = self.0.lock() {
            v.truncate(1);
            v.extend(pid);
        }
    }
    pub fn get(&self) -> Vec<u32> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

struct GpuState {
    gpu: IntelGpu,
    prev: Option<(ClientTotals, u64)>,
    pmu: Result<PmuCounter, String>,
    pmu_prev: Option<(u64, u64)>,
}

struct NpuState {
    npu: Npu,
    prev: Option<(u64, u64)>,
}

pub struct Sampler {
    root: Root,
    pids: Pids,
    sys: Result<sysinfo::System, String>,
    cpu_info: Reading<CpuInfo>,
    gpus: Result<Vec<GpuState>, String>,
    npus: Result<Vec<NpuState>, String>,
    nvidia: NvidiaReader,
}

impl Sampler {
    pub fn new(root: Root, pids: Pids) -> Sampler {
        let sys = if root.is_live() {
            sysinfo::System::new()
                .map_err(|e| e.to_string())
                .map(|mut s| {
                    s.refresh_cpu_usage();
                    s
                })
        } else {
            Err("CPU use is read on the running system only (not a recorded tree)".into())
        };
        let gpus = match intel_gpu::discover(&root) {
            Reading::Ok(list) => Ok(list
                .into_iter()
                .map(|gpu| {
                    let pmu = match (&gpu.pmu, root.is_live()) {
                        (Some(ev), true) => PmuCounter::open(ev),
                        (Some(_), false) => Err("the PMU is read on the running system only".into()),
                        (None, _) => Err(if gpu.driver == "xe" {
                            "whole-GPU busy % is read from i915's PMU; on xe only our own use (fdinfo) is shown".into()
                        } else {
                            "this kernel exposes no i915 perf PMU".into()
                        }),
                    };
                    GpuState {
                        gpu,
                        prev: None,
                        pmu,
                        pmu_prev: None,
                    }
                })
                .collect()),
            Reading::Unavailable(r) => Err(r),
        };
        let npus = match npu::discover(&root) {
            Reading::Ok(list) => Ok(list
                .into_iter()
                .map(|npu| NpuState { npu, prev: None })
                .collect()),
            Reading::Unavailable(r) => Err(r),
        };
        Sampler {
            cpu_info: cpu::info(&root),
            nvidia: NvidiaReader::new(&root),
            root,
            pids,
            sys,
            gpus,
            npus,
        }
    }

    pub fn sample(&mut self) -> Snapshot {
        self.sample_at(now_ns())
    }

    /// A sample as if taken at `t` (monotonic ns): rates are counter deltas
    /// over deltas of `t` (tests step it by hand).
    pub fn sample_at(&mut self, t: u64) -> Snapshot {
        let cpu = match &mut self.sys {
            Ok(sys) => {
                sys.refresh_cpu_specifics(
                    sysinfo::CpuRefreshKind::nothing()
                        .with_usage()
                        .with_frequency(),
                );
                let cpus = sys.cpus();
                let mhz = if cpus.is_empty() {
                    0
                } else {
                    cpus.iter().map(|c| c.frequency()).sum::<u64>() / cpus.len() as u64
                };
                Reading::Ok(CpuUse {
                    total: sys.global_cpu_usage(),
                    per_core: cpus.iter().map(|c| c.usage()).collect(),
                    mhz,
                })
            }
            Err(e) => Reading::Unavailable(e.clone()),
        };
        let intel_gpus = match &mut self.gpus {
            Err(e) => Reading::Unavailable(e.clone()),
            Ok(list) if list.is_empty() => Reading::Unavailable(
                "no Intel GPU (no card bound to i915 or xe under /sys/class/drm)".into(),
            ),
            Ok(list) => {
                let clients = fdinfo::clients(&self.root, &self.pids.get());
                Reading::Ok(
                    list.iter_mut()
                        .map(|g| sample_gpu(&self.root, g, &clients, t))
                        .collect(),
                )
            }
        };
        let npus = match &mut self.npus {
            Err(e) => Reading::Unavailable(e.clone()),
            Ok(list) if list.is_empty() => Reading::Unavailable(
                "no Intel NPU (no intel_vpu device under /sys/class/accel)".into(),
            ),
            Ok(list) => Reading::Ok(
                list.iter_mut()
                    .map(|n| {
                        let c = npu::counters(&self.root, &n.npu);
                        sample_npu(n, c, t)
                    })
                    .collect(),
            ),
        };
        Snapshot {
            cpu_info: self.cpu_info.clone(),
            cpu,
            memory: memory::read(&self.root),
            intel_gpus,
            npus,
            nvidia: self.nvidia.sample(),
        }
    }
}

fn sample_gpu(root: &Root, g: &mut GpuState, clients: &[fdinfo::DrmClient], t: u64) -> GpuUse {
    let totals = intel_gpu::totals(clients, &g.gpu.pci_slot);
    let ours = g
        .prev
        .as_ref()
        .map(|(p, t0)| intel_gpu::busy(p, &totals, t.saturating_sub(*t0)));
    let resident = totals.resident();
    g.prev = Some((totals, t));
    let all_busy_pct = match &g.pmu {
        Ok(counter) => match counter.read_ns() {
            Some(ns) => {
                let r = g.pmu_prev.and_then(|p| percent(p, (ns, t), 1.0));
                g.pmu_prev = Some((ns, t));
                r.map_or_else(|| Reading::Unavailable("first sample".into()), Reading::Ok)
            }
            None => Reading::Unavailable("reading the i915 PMU failed".into()),
        },
        Err(e) => Reading::Unavailable(e.clone()),
    };
    GpuUse {
        card: g.gpu.card.clone(),
        name: g.gpu.name.clone(),
        driver: g.gpu.driver.clone(),
        integrated: g.gpu.integrated,
        ours_busy_pct: ours.map(|b| b.busy_pct),
        ours_resident_bytes: resident,
        all_busy_pct,
        cur_mhz: intel_gpu::current_mhz(root, &g.gpu),
        max_mhz: g.gpu.max_mhz,
    }
}

fn sample_npu(n: &mut NpuState, c: NpuCounters, t: u64) -> NpuUse {
    let busy_pct = match (n.prev, c.busy_us) {
        // npu_busy_time_us counts µs: 1e-3 µs per ns.
        (Some(p), Some(b)) => percent(p, (b, t), 1e-3),
        _ => None,
    };
    n.prev = c.busy_us.map(|b| (b, t));
    NpuUse {
        accel: n.npu.accel.clone(),
        generation: n.npu.generation.clone(),
        busy_pct,
        cur_mhz: c.cur_mhz,
        max_mhz: n.npu.max_mhz,
        memory_bytes: c.memory_bytes,
    }
}

/// How often the workbench samples: 4 Hz (benches/telemetry.rs measures the cost).
pub const PERIOD: Duration = Duration::from_millis(250);

/// Sample every `period` on a thread until `send` returns false.
pub fn spawn(
    root: Root,
    pids: Pids,
    period: Duration,
    mut send: impl FnMut(Snapshot) -> bool + Send + 'static,
) {
    let _ = std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || {
            let mut s = Sampler::new(root, pids);
            loop {
                std::thread::sleep(period);
                if !send(s.sample()) {
                    return;
                }
            }
        });
}
