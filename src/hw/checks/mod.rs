//! The hardware check: facts from the readers, judged against the settings
//! in use, each check pass / warn / fail with a one-line fix, and the
//! profile that fits this machine.
//!
//! The fix lines are constants: the README's troubleshooting section
//! quotes each one verbatim (a test holds them to it).
//!
//! The table `CHECKS` (npu-device, npu-driver, kernel, level-zero,
//! npu-openvino, gpu-driver, vulkan, openvino, shm, memory, disk) judges
//! against the settings in use: NPU gaps fail when `shard_a.device` is NPU
//! and warn otherwise, Vulkan gaps fail when `shard_b.backend` is vulkan.
//! The recommended profile (the design's three configurations where they
//! fit): NPU and GPU in OpenVINO + a discrete and an integrated Vulkan GPU →
//! max-performance; NPU + a discrete GPU otherwise → core-ultra-dgpu; NPU +
//! an integrated GPU → cost-optimized; NPU only → cpu with `--device NPU`; a hardware Vulkan GPU only → vulkan; else cpu. The memory
//! check estimates shard A's packed layer files + shard B's values ×
//! `shard_b.weights_dtype` + both KV caches at `kv_capacity` + 300 MiB.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::cpu::{self, CpuInfo};
use super::intel_gpu::{self, IntelGpu};
use super::memory::{self, Memory};
use super::npu::{self, Npu};
use super::nvidia::{NvidiaGpu, NvidiaReader};
use super::openvino::{self, ProbeReport};
use super::vulkan::{self, VulkanAdapter};
use super::{Reading, Root, read_str};
use crate::bake::store::{MANIFEST, Manifest, file_for};
use crate::config::Settings;
use crate::ring::segment::{SHM_DIR, SegmentSpec, free_bytes, segment_bytes};

mod table;
mod text;

pub use table::evaluate;
pub use text::{machine_lines, render_text};

pub const FIX_NPU_NOT_FOUND: &str = "No NPU: on a Core Ultra machine load the driver (sudo modprobe intel_vpu) and use a 6.8+ kernel; without one use --profile cpu or --profile vulkan";
pub const FIX_NPU_DRIVER: &str =
    "Load the NPU driver: sudo modprobe intel_vpu (in the kernel since 6.3; 6.8+ recommended)";
pub const FIX_NPU_NODE: &str = "The NPU has no device node: reload the driver (sudo modprobe -r intel_vpu && sudo modprobe intel_vpu) and look for intel_vpu errors in sudo dmesg";
pub const FIX_NPU_ACCESS: &str = "Add yourself to the group that owns /dev/accel/accel0 (usually render): sudo usermod -aG render $USER, then log out and in";
pub const FIX_KERNEL: &str = "Kernel older than 6.8: install a 6.8+ kernel (Ubuntu 24.04's, or your distribution's backports) for a stable NPU driver";
pub const FIX_LEVEL_ZERO: &str = "Install the Level Zero loader (libze1, or level-zero from github.com/oneapi-src/level-zero releases) and the NPU user-mode driver (intel-driver-compiler-npu and intel-level-zero-npu from github.com/intel/linux-npu-driver releases)";
pub const FIX_NPU_FIRMWARE: &str = "OpenVINO does not see the NPU: install the NPU firmware and user-mode driver from github.com/intel/linux-npu-driver releases (firmware in /lib/firmware/intel/vpu), then reboot";
pub const FIX_GPU_DRIVER: &str = "No Intel GPU driver: on a Core Ultra machine use a kernel whose i915 or xe driver binds the GPU (lspci -k shows the driver in use); elsewhere shard B runs on another Vulkan GPU or the CPU";
pub const FIX_VULKAN: &str = "Install your GPU's Vulkan driver and loader: mesa-vulkan-drivers and libvulkan1 (Intel, AMD) or the NVIDIA driver; vulkaninfo --summary should list the GPU";
pub const FIX_OPENVINO: &str = "Run scripts/setup (it installs the OpenVINO wheel into .openvino), or point openvino.runtime_dir (or OPENVINO_LIB_DIR) at the folder holding libopenvino_c.so";
pub const FIX_SHM: &str = "Free or enlarge /dev/shm (sudo mount -o remount,size=2G /dev/shm; in Docker --shm-size=2g), or lower ring.slots or shard_a.prefill_chunk";
pub const FIX_MEMORY: &str = "Not enough memory for this model: close other programs, pick a smaller model, or keep shard B's weights packed (4-bit/8-bit as baked, ~4× less than f16) with --set shard_b.weights_dtype=packed";
pub const FIX_DISK: &str = "Free space where models are cached ($XDG_CACHE_HOME/hybrid-tui, by default ~/.cache/hybrid-tui), or point XDG_CACHE_HOME at a larger disk";

/// Every fix line, for the README test.
pub const ALL_FIXES: &[&str] = &[
    FIX_NPU_NOT_FOUND,
    FIX_NPU_DRIVER,
    FIX_NPU_NODE,
    FIX_NPU_ACCESS,
    FIX_KERNEL,
    FIX_LEVEL_ZERO,
    FIX_NPU_FIRMWARE,
    FIX_GPU_DRIVER,
    FIX_VULKAN,
    FIX_OPENVINO,
    FIX_SHM,
    FIX_MEMORY,
    FIX_DISK,
];

/// Where the Level Zero loader is looked for.
const LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/lib",
    "/lib/x86_64-linux-gnu",
    "/lib64",
    "/lib",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub id: &'static str,
    pub title: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do; none when the check passed.
    pub fix: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Space {
    pub path: String,
    pub free: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shm {
    pub mounted: bool,
    pub free: Option<u64>,
    /// Bytes the configured rings take.
    pub need: u64,
    pub how: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelNeed {
    pub source: String,
    /// Estimated resident bytes when running.
    pub bytes: u64,
    pub how: String,
}

/// Everything the checks look at.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Facts {
    pub kernel: Option<String>,
    pub cpu: Reading<CpuInfo>,
    pub memory: Reading<Memory>,
    /// Intel NPU PCI devices, driver bound or not ("8086:7d1d").
    pub npu_pci: Vec<String>,
    pub npu_driver_loaded: bool,
    pub npus: Reading<Vec<Npu>>,
    pub intel_gpus: Reading<Vec<IntelGpu>>,
    pub level_zero: Option<String>,
    pub vulkan_icds: Vec<String>,
    pub vulkan_adapters: Reading<Vec<VulkanAdapter>>,
    pub nvidia: Reading<Vec<NvidiaGpu>>,
    pub openvino: Reading<ProbeReport>,
    pub shm: Shm,
    pub model: Reading<ModelNeed>,
    pub cache: Reading<Space>,
    /// shard_a.device asks for the NPU.
    pub wants_npu: bool,
    /// shard_b.backend is vulkan.
    pub wants_vulkan: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    pub profile: &'static str,
    /// Extra flags on top of the profile, if any.
    pub flags: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub tool_version: &'static str,
    pub profile: String,
    /// The recorded tree the readers read, when not this machine.
    pub sysroot: Option<String>,
    pub facts: Facts,
    pub checks: Vec<Check>,
    pub recommended: Recommendation,
    pub counts: Counts,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

/// Gather the facts (runs the OpenVINO probe and asks Vulkan on a live root).
pub fn gather(root: &Root, settings: &Settings) -> Facts {
    let openvino = if root.is_live() {
        openvino::probe(
            settings,
            Duration::from_secs_f64(settings.executive.handshake_timeout_s.max(10.0)),
        )
    } else {
        Reading::Unavailable("OpenVINO is probed on the running system only".into())
    };
    let nvidia = NvidiaReader::new(root).sample();
    Facts {
        kernel: read_str(&root.path("/proc/sys/kernel/osrelease")),
        cpu: cpu::info(root),
        memory: memory::read(root),
        npu_pci: npu_pci_devices(root),
        npu_driver_loaded: npu::driver_loaded(root),
        npus: npu::discover(root),
        intel_gpus: intel_gpu::discover(root),
        level_zero: LIB_DIRS.iter().find_map(|d| {
            ["libze_loader.so.1", "libze_loader.so"]
                .iter()
                .map(|f| format!("{d}/{f}"))
                .find(|p| root.path(p).exists())
        }),
        vulkan_icds: vulkan::icd_files(root),
        vulkan_adapters: vulkan::adapters(root),
        nvidia,
        openvino,
        shm: shm(root, settings),
        model: model_need(settings),
        cache: cache_space(root),
        wants_npu: settings.shard_a.device.to_uppercase().contains("NPU"),
        wants_vulkan: settings.shard_b.backend == "vulkan",
    }
}

/// Intel NPU PCI functions, whether or not a driver is bound.
fn npu_pci_devices(root: &Root) -> Vec<String> {
    let dir = root.path("/sys/bus/pci/devices");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        let vendor = read_str(&p.join("vendor")).unwrap_or_default();
        let device = read_str(&p.join("device")).unwrap_or_default();
        let id = u32::from_str_radix(device.trim_start_matches("0x"), 16).unwrap_or(0);
        if vendor == "0x8086" && npu::generation(id).is_some() {
            out.push(format!("8086:{id:04x}"));
        }
    }
    out.sort();
    out
}

fn shm(root: &Root, settings: &Settings) -> Shm {
    let mounts = read_str(&root.path("/proc/mounts")).unwrap_or_default();
    let mounted = mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(SHM_DIR));
    let (hidden, how) = match model_spec(settings) {
        Some(m) => (
            m.model.hidden_size,
            format!("hidden size {}", m.model.hidden_size),
        ),
        None => (
            4096,
            "hidden size 4096 assumed (model not baked yet)".into(),
        ),
    };
    let chunk = settings.shard_a.prefill_chunk;
    let need = segment_bytes(&SegmentSpec::for_model(settings.ring.slots, chunk, hidden));
    Shm {
        mounted,
        free: free_bytes(&root.path(SHM_DIR)),
        need,
        how: format!("{} slots × {chunk} tokens, {how}", settings.ring.slots),
    }
}

/// The baked directory the settings' model has (or will have).
fn model_dir(settings: &Settings) -> Option<PathBuf> {
    crate::catalog::locate(&settings.model.source)
}

fn model_spec(settings: &Settings) -> Option<Manifest> {
    Manifest::read(&model_dir(settings)?).ok()
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// What running the chosen model takes: shard A's weights as OpenVINO keeps
/// them (packed, as stored), shard B's dequantized to shard_b.weights_dtype,
/// both KV caches for one stream at shard_a.kv_capacity, and 300 MiB for
/// the runtimes.
pub fn model_need(settings: &Settings) -> Reading<ModelNeed> {
    let source = settings.model.source.clone();
    if let Err(e) = crate::catalog::Source::parse(&source) {
        return Reading::Unavailable(format!("model.source: {e}"));
    }
    let Some(dir) = model_dir(settings) else {
        if let Ok(crate::catalog::Source::Hub { repo, .. }) = crate::catalog::Source::parse(&source)
        {
            return Reading::Unavailable(format!(
                "{repo} is not fetched yet: run hybrid-tui once where the Hub is reachable (or hybrid-tui bake --model {repo} --out DIR), then check again"
            ));
        }
        return Reading::Unavailable("no data directory (set HOME or XDG_DATA_HOME)".into());
    };
    let Some(m) = model_spec(settings) else {
        if let Ok(crate::catalog::Source::Hub { repo, .. }) =
            crate::catalog::Source::parse(&settings.model.source)
        {
            return Reading::Unavailable(format!(
                "{repo} is not fetched yet: run hybrid-tui once where the Hub is reachable (or hybrid-tui bake --model {repo} --out DIR), then check again"
            ));
        }
        if settings.model.source == "demo" {
            return Reading::Ok(ModelNeed {
                source,
                bytes: 400 << 20,
                how: "the demo model is made on first run: about 100 MiB of weights + 300 MiB runtimes".into(),
            });
        }
        return Reading::Unavailable(format!(
            "{} is not a baked model (no {MANIFEST}); bake it first",
            dir.display()
        ));
    };
    let spec = &m.model;
    let layers = spec.num_layers;
    let split = if settings.split.layers < 0 {
        layers / 2
    } else {
        (settings.split.layers as usize).min(layers)
    };
    let b_elem: u64 = match settings.shard_b.weights_dtype.as_str() {
        "f16" | "bf16" => 2,
        _ => 4,
    };
    let mut a_bytes = 0u64;
    let mut b_elems = 0u64;
    let mut b_packed = 0u64;
    let mut files_seen = std::collections::BTreeSet::new();
    for (name, t) in &m.tensors {
        let layer = name
            .strip_prefix("model.layers.")
            .and_then(|r| r.split('.').next())
            .and_then(|i| i.parse::<usize>().ok());
        let numel: u64 = t.shape.iter().product::<usize>() as u64;
        let in_a = match layer {
            Some(i) => i < split,
            None => name.starts_with("model.embed_tokens"),
        };
        let in_b = match layer {
            Some(i) => i >= split,
            None => {
                !name.starts_with("model.embed_tokens")
                    || (spec.tie_word_embeddings && name == "model.embed_tokens.weight")
            }
        };
        if in_a && files_seen.insert(file_for(name)) {
            // Whole stored files: packed weights + scales as on disk.
            a_bytes += file_len(&dir.join(file_for(name)));
        }
        if in_b {
            if settings.shard_b.weights_dtype.starts_with("packed") && t.scheme.is_int() {
                // Packed as stored, plus f32 scales and zero points per group.
                let group = t
                    .group
                    .unwrap_or(t.shape.last().copied().unwrap_or(1))
                    .max(1) as u64;
                b_packed += numel * t.scheme.bits() as u64 / 8 + numel / group * 8;
            } else {
                b_elems += numel;
            }
        }
    }
    let kv_per_layer = 2
        * spec.num_kv_heads as u64
        * spec.head_dim as u64
        * settings.shard_a.kv_capacity as u64
        * 4;
    let kv = kv_per_layer * layers as u64;
    let b_bytes = b_elems * b_elem + b_packed;
    let runtime = 300u64 << 20;
    let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
    Reading::Ok(ModelNeed {
        source,
        bytes: a_bytes + b_bytes + kv + runtime,
        how: format!(
            "shard A {:.2} GiB (layers 0..{split}, packed) + shard B {:.2} GiB ({} values as {}) + KV {:.2} GiB + runtimes 0.29 GiB",
            gib(a_bytes),
            gib(b_bytes),
            b_elems,
            settings.shard_b.weights_dtype,
            gib(kv)
        ),
    })
}

fn cache_space(root: &Root) -> Reading<Space> {
    let Some(dir) = crate::paths::cache_dir() else {
        return Reading::Unavailable("no cache directory (set HOME or XDG_CACHE_HOME)".into());
    };
    // The nearest existing ancestor tells the filesystem.
    let mut p = dir.as_path();
    while !root.path(p).exists() {
        match p.parent() {
            Some(q) => p = q,
            None => break,
        }
    }
    match free_bytes(&root.path(p)) {
        Some(free) => Reading::Ok(Space {
            path: dir.display().to_string(),
            free,
        }),
        None => Reading::Unavailable(format!("statvfs {} failed", p.display())),
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

fn mib(b: u64) -> String {
    format!("{} MiB", b.div_ceil(1 << 20))
}

/// "6.8.0-45-generic" → (6, 8).
fn kernel_version(s: &str) -> Option<(u32, u32)> {
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

/// The NPU checks are failures when the settings put shard A on the NPU,
/// warnings otherwise (the other profiles run without one).
fn npu_severity(f: &Facts) -> Status {
    if f.wants_npu {
        Status::Fail
    } else {
        Status::Warn
    }
}

/// The profile that fits the facts.
pub fn recommend(f: &Facts) -> Recommendation {
    let npu = f.openvino.ok().and_then(|r| {
        r.devices
            .iter()
            .find(|d| d.name.starts_with("NPU"))
            .cloned()
    });
    let adapters = f.vulkan_adapters.ok().cloned().unwrap_or_default();
    let discrete = adapters.iter().find(|a| a.kind == "DiscreteGpu");
    let integrated = adapters.iter().find(|a| a.kind == "IntegratedGpu");
    let any_gpu = adapters.iter().find(|a| a.is_hardware());
    let r = |profile, flags: &str, why: String| Recommendation {
        profile,
        flags: flags.into(),
        why,
    };
    // OpenVINO's GPU plugin (shard A on the integrated GPU, GPU.0).
    let ov_gpu = f
        .openvino
        .ok()
        .is_some_and(|r| r.devices.iter().any(|d| d.name.starts_with("GPU")));
    match (npu, discrete, integrated, any_gpu) {
        (Some(_), Some(d), Some(_), _) if ov_gpu => r(
            "max-performance",
            "",
            format!("OpenVINO sees the NPU and the integrated GPU, Vulkan a discrete GPU ({}): the LLM over both GPUs, embeddings on the NPU", d.name),
        ),
        (Some(_), Some(d), _, _) => r(
            "core-ultra-dgpu",
            "",
            format!("OpenVINO sees the NPU and Vulkan a discrete GPU ({}): shard A on the NPU, shard B on the discrete GPU", d.name),
        ),
        (Some(_), None, Some(i), _) => r(
            "cost-optimized",
            "",
            format!("OpenVINO sees the NPU and Vulkan the integrated GPU ({}): the LLM on the CPU and the GPU, embeddings on the NPU", i.name),
        ),
        (Some(_), None, None, _) => r(
            "cpu",
            "--device NPU",
            "OpenVINO sees the NPU but Vulkan no GPU: shard A on the NPU, shard B on the CPU".into(),
        ),
        (None, _, _, Some(g)) => r(
            "vulkan",
            "",
            format!("no usable NPU, but a Vulkan GPU ({}): shard A on OpenVINO's CPU device, shard B on the GPU", g.name),
        ),
        (None, _, _, None) => r(
            "cpu",
            "",
            "no usable NPU and no hardware Vulkan GPU: both shards on the CPU (OpenVINO CPU + burn CPU)".into(),
        ),
    }
}

pub fn report(root: &Root, settings: &Settings, profile: &str) -> Report {
    let facts = gather(root, settings);
    build_report(root, profile, facts)
}

pub fn build_report(root: &Root, profile: &str, facts: Facts) -> Report {
    let checks = evaluate(&facts);
    let mut counts = Counts::default();
    for c in &checks {
        match c.status {
            Status::Pass => counts.pass += 1,
            Status::Warn => counts.warn += 1,
            Status::Fail => counts.fail += 1,
        }
    }
    Report {
        tool_version: env!("CARGO_PKG_VERSION"),
        profile: profile.to_string(),
        sysroot: (!root.is_live()).then(|| root.base().display().to_string()),
        recommended: recommend(&facts),
        facts,
        checks,
        counts,
    }
}

fn device_names(r: &ProbeReport) -> String {
    r.devices
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions() {
        assert_eq!(kernel_version("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(kernel_version("6.12.48+deb12-amd64"), Some((6, 12)));
        assert!(kernel_version("5.15.0").unwrap() < (6, 8));
        assert_eq!(kernel_version("x"), None);
    }
}
