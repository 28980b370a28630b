//! Hardware: what this machine has, how busy it is, and whether it can run
//! the split (`hybrid-tui check`).
//!
//! One reader a device family, each reading a filesystem tree rooted at a
//! [`Root`] (`/` on a live machine, a recorded fixture tree in tests) and
//! returning [`Reading::Unavailable`] with the reason instead of failing:
//!
//! - [`cpu`]: model, P-/E-core split, frequency (sysfs, /proc/cpuinfo); use per core (sysinfo)
//! - [`memory`]: RAM and swap (/proc/meminfo)
//! - [`intel_gpu`]: i915 and xe cards (sysfs), busy % of our own processes
//!   (DRM fdinfo) and of everyone (i915 perf PMU, where permitted)
//! - [`npu`]: intel_vpu devices (sysfs: busy time, frequency, memory), PCI id to generation
//! - [`nvidia`]: NVML through nvml-wrapper, loaded at run time
//! - [`vulkan`]: ICD manifests and the adapters wgpu enumerates
//! - [`openvino`]: `hybrid-executive --probe`
//!
//! [`sampler::Sampler`] turns the live readers into one [`sampler::Snapshot`]
//! per tick, off the UI thread; [`checks`] turns the static facts into
//! pass / warn / fail lines with fixes and a recommended profile.
//!
//! What each reader reads:
//!
//! | device | discovery | live values |
//! | --- | --- | --- |
//! | CPU | /proc/cpuinfo (model, threads, cores), /sys/devices/cpu_core + cpu_atom (P/E), cpufreq max | sysinfo: use per core, frequency |
//! | memory | /proc/meminfo | the same, each tick |
//! | Intel GPU | /sys/class/drm/cardN/device/uevent (DRIVER i915/xe, PCI_ID, slot); i915 gt_RP0_freq_mhz, xe tile0/gt0/freq0/rp0_freq; xe physical_vram_size_bytes; the i915 PMU (event_source/devices/i915[_slot], rcs0-busy) | our processes' DRM fdinfo (i915 `drm-engine-*` ns, xe `drm-cycles-*` over `drm-total-cycles-*`; clients deduplicated by pdev + client id; only fds linking to /dev/dri are read); the whole GPU from the PMU counter when perf permits; the actual frequency |
//! | NPU | /sys/class/accel/accelN/device/uevent (DRIVER intel_vpu, PCI_ID → Meteor/Arrow/Lunar/Panther Lake), /dev/accel/accelN access and group, firmware files | npu_busy_time_us over wall time, npu_current_frequency_mhz, npu_memory_utilization |
//! | NVIDIA | NVML init (libnvidia-ml.so.1 loaded at run time) | utilization, memory, graphics clock, power |
//! | Vulkan | ICD manifests in the loader's directories; wgpu adapters | — |
//! | OpenVINO | `hybrid-executive --probe` as a child (a broken runtime cannot take the check down) | — |
//!
//! Readers that can only ask the running system (sysinfo's CPU use, NVML,
//! Vulkan, the perf PMU, the OpenVINO probe) say so under a recorded tree.

pub mod checks;
pub mod cpu;
pub mod fdinfo;
pub mod intel_gpu;
pub mod memory;
pub mod npu;
pub mod nvidia;
pub mod openvino;
pub mod sampler;
pub mod vulkan;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::ser::SerializeMap;

/// A value a reader could take, or why it could not.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading<T> {
    Ok(T),
    Unavailable(String),
}

impl<T> Reading<T> {
    pub fn ok(&self) -> Option<&T> {
        match self {
            Reading::Ok(v) => Some(v),
            Reading::Unavailable(_) => None,
        }
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Reading<U> {
        match self {
            Reading::Ok(v) => Reading::Ok(f(v)),
            Reading::Unavailable(r) => Reading::Unavailable(r),
        }
    }

    /// "not available: reason" for display, or None when there is a value.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Reading::Ok(_) => None,
            Reading::Unavailable(r) => Some(r),
        }
    }
}

impl<T: Serialize> Serialize for Reading<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match self {
            Reading::Ok(v) => {
                m.serialize_entry("available", &true)?;
                m.serialize_entry("value", v)?;
            }
            Reading::Unavailable(r) => {
                m.serialize_entry("available", &false)?;
                m.serialize_entry("reason", r)?;
            }
        }
        m.end()
    }
}

/// Where the readers look: `/` on a live machine, or a recorded tree with
/// the same layout (sys/, proc/, dev/, etc/, lib/, usr/).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    base: PathBuf,
    live: bool,
}

impl Root {
    pub fn live() -> Root {
        Root {
            base: PathBuf::from("/"),
            live: true,
        }
    }

    /// A recorded tree. Readers that can only ask the running system
    /// (sysinfo, NVML, Vulkan, perf) say so instead of reading it.
    pub fn at(base: impl Into<PathBuf>) -> Root {
        Root {
            base: base.into(),
            live: false,
        }
    }

    /// `abs` ("/sys/class/drm") under this root.
    pub fn path(&self, abs: impl AsRef<Path>) -> PathBuf {
        let abs = abs.as_ref();
        self.base.join(abs.strip_prefix("/").unwrap_or(abs))
    }

    pub fn is_live(&self) -> bool {
        self.live
    }

    pub fn base(&self) -> &Path {
        &self.base
    }
}

/// A sysfs/procfs file, trimmed; None when it is missing or unreadable.
pub(crate) fn read_str(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

pub(crate) fn read_u64(p: &Path) -> Option<u64> {
    read_str(p).and_then(|s| parse_u64(&s))
}

/// Decimal, or hexadecimal with 0x.
pub(crate) fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// KEY=VALUE lines (uevent files).
pub(crate) fn parse_uevent(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// "0-3,8,10-11" → [0, 1, 2, 3, 8, 10, 11]; None on anything else.
pub(crate) fn parse_cpu_list(s: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                if b < a {
                    return None;
                }
                out.extend(a..=b);
            }
            None => out.push(part.trim().parse().ok()?),
        }
    }
    Some(out)
}

/// Entries of a directory whose names start with `prefix` followed by digits,
/// sorted by that number ("card0", "card1", ... but not "card0-eDP-1").
pub(crate) fn numbered_entries(dir: &Path, prefix: &str) -> std::io::Result<Vec<String>> {
    let mut names: Vec<(u32, String)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(prefix)?.parse::<u32>().ok()?;
            Some((n, name))
        })
        .collect();
    names.sort();
    Ok(names.into_iter().map(|(_, n)| n).collect())
}

/// A monotonic clock in nanoseconds, for rates between two samples.
pub(crate) fn now_ns() -> u64 {
    crate::ring::wait::mono_ns()
}

/// Rate of a counter between two readings, as a percentage of `per_unit`
/// counter units per nanosecond of wall time, clamped to 0..=100.
pub(crate) fn percent(prev: (u64, u64), now: (u64, u64), units_per_ns: f64) -> Option<f32> {
    let (c0, t0) = prev;
    let (c1, t1) = now;
    if t1 <= t0 || c1 < c0 {
        return None;
    }
    let busy = (c1 - c0) as f64 / units_per_ns;
    Some(((busy / (t1 - t0) as f64) * 100.0).clamp(0.0, 100.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse() {
        assert_eq!(
            parse_cpu_list("0-3,8,10-11"),
            Some(vec![0, 1, 2, 3, 8, 10, 11])
        );
        assert_eq!(parse_cpu_list("5\n"), Some(vec![5]));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn percent_of_a_counter() {
        // 250 µs busy in 1 ms of wall time, counted in µs.
        let p = percent((1_000, 0), (1_250, 1_000_000), 1e-3).unwrap();
        assert!((p - 25.0).abs() < 1e-4, "{p}");
        assert_eq!(percent((5, 10), (4, 20), 1.0), None, "counter went back");
        assert_eq!(percent((5, 10), (6, 10), 1.0), None, "no time passed");
        assert_eq!(percent((0, 0), (10_000, 10), 1.0), Some(100.0));
    }

    #[test]
    fn root_joins_absolute_paths() {
        let r = Root::at("/tmp/fx");
        assert_eq!(
            r.path("/sys/class/drm"),
            PathBuf::from("/tmp/fx/sys/class/drm")
        );
        assert_eq!(
            Root::live().path("/proc/meminfo"),
            PathBuf::from("/proc/meminfo")
        );
    }
}
