//! Intel GPUs under the i915 and xe drivers.
//!
//! Found in /sys/class/drm/card*/device/uevent (DRIVER, PCI_ID,
//! PCI_SLOT_NAME). Frequency from the driver's sysfs (i915:
//! card*/gt_act_freq_mhz and gt_RP0_freq_mhz; xe:
//! device/tile0/gt0/freq0/act_freq and rp0_freq), dedicated memory from xe's
//! device/tile0/physical_vram_size_bytes. Busy %: our own processes' DRM
//! fdinfo on either driver, and the whole GPU from i915's perf PMU
//! (rcs0-busy) where perf_event_paranoid or CAP_PERFMON permits.

use std::collections::BTreeMap;

use serde::Serialize;

use super::fdinfo::DrmClient;
use super::{Reading, Root, numbered_entries, parse_u64, parse_uevent, read_str, read_u64};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntelGpu {
    /// "card0".
    pub card: String,
    pub driver: String,
    pub pci_slot: String,
    /// "8086:7d55".
    pub pci_id: String,
    pub name: String,
    /// On the CPU's die (PCI bus 00), sharing system memory.
    pub integrated: bool,
    pub max_mhz: Option<u64>,
    pub vram_bytes: Option<u64>,
    /// i915's perf PMU for this card, when the kernel exposes it.
    pub pmu: Option<PmuEvent>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PmuEvent {
    /// /sys/bus/event_source/devices/<name>.
    pub name: String,
    pub pmu_type: u32,
    pub config: u64,
    pub cpu: i32,
}

/// Marketing names of common Intel GPU PCI device ids (others show the id).
fn name_of(device: u32) -> Option<&'static str> {
    Some(match device {
        0x7d40 | 0x7d45 | 0x7d55 | 0x7dd5 => "Intel Arc Graphics (Meteor Lake)",
        0x7d41 | 0x7d51 | 0x7d67 | 0x7dd1 => "Intel Arc Graphics (Arrow Lake)",
        0x6420 | 0x64a0 | 0x64b0 => "Intel Arc Graphics 130V/140V (Lunar Lake)",
        0xb080..=0xb0b0 => "Intel Arc Graphics (Panther Lake)",
        0xa780 | 0xa781 | 0xa788 | 0xa7a0 | 0xa7a8 => "Intel UHD/Iris Xe Graphics (Raptor Lake)",
        0x46a6 | 0x46a8 | 0x4626 => "Intel Iris Xe Graphics (Alder Lake)",
        0x56a0 => "Intel Arc A770",
        0x56a1 => "Intel Arc A750",
        0x56a5 => "Intel Arc A380",
        0xe20b => "Intel Arc B580",
        0xe20c => "Intel Arc B570",
        _ => return None,
    })
}

/// The i915/xe cards under `root`, or why none could be listed.
pub fn discover(root: &Root) -> Reading<Vec<IntelGpu>> {
    let drm = root.path("/sys/class/drm");
    let cards = match numbered_entries(&drm, "card") {
        Ok(c) => c,
        // No DRM driver at all: no GPU, which is an answer, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Reading::Ok(Vec::new()),
        Err(e) => return Reading::Unavailable(format!("{}: {e}", drm.display())),
    };
    let mut out = Vec::new();
    for card in cards {
        let dir = drm.join(&card);
        let Some(uevent) = read_str(&dir.join("device/uevent")).map(|t| parse_uevent(&t)) else {
            continue;
        };
        let driver = uevent.get("DRIVER").cloned().unwrap_or_default();
        let pci_id = uevent
            .get("PCI_ID")
            .cloned()
            .unwrap_or_default()
            .to_lowercase();
        if !pci_id.starts_with("8086:") || !(driver == "i915" || driver == "xe") {
            continue;
        }
        let pci_slot = uevent.get("PCI_SLOT_NAME").cloned().unwrap_or_default();
        let device = pci_id
            .split_once(':')
            .and_then(|(_, d)| u32::from_str_radix(d, 16).ok())
            .unwrap_or(0);
        let name = name_of(device)
            .map(str::to_string)
            .unwrap_or_else(|| format!("Intel GPU {pci_id}"));
        // 0000:00:02.0 → bus 00.
        let integrated = pci_slot.split(':').nth(1) == Some("00");
        let (max_mhz, vram_bytes) = if driver == "xe" {
            (
                read_u64(&dir.join("device/tile0/gt0/freq0/rp0_freq"))
                    .or_else(|| read_u64(&dir.join("device/tile0/gt0/freq0/max_freq"))),
                read_u64(&dir.join("device/tile0/physical_vram_size_bytes")),
            )
        } else {
            (
                read_u64(&dir.join("gt_RP0_freq_mhz"))
                    .or_else(|| read_u64(&dir.join("gt_max_freq_mhz"))),
                None,
            )
        };
        let pmu = if driver == "i915" {
            pmu_event(root, &pci_slot, integrated)
        } else {
            None
        };
        out.push(IntelGpu {
            card,
            driver,
            pci_slot,
            pci_id,
            name,
            integrated,
            max_mhz,
            vram_bytes,
            pmu,
        });
    }
    Reading::Ok(out)
}

/// i915's PMU is "i915" for the integrated GPU and "i915_<slot>" (':' → '_')
/// for others; rcs0-busy counts render engine busy nanoseconds.
fn pmu_event(root: &Root, slot: &str, integrated: bool) -> Option<PmuEvent> {
    let names = if integrated {
        vec![
            "i915".to_string(),
            format!("i915_{}", slot.replace(':', "_")),
        ]
    } else {
        vec![format!("i915_{}", slot.replace(':', "_"))]
    };
    names.into_iter().find_map(|name| {
        let dir = root.path(format!("/sys/bus/event_source/devices/{name}"));
        let pmu_type = read_u64(&dir.join("type"))? as u32;
        let event = read_str(&dir.join("events/rcs0-busy"))?;
        let config = event
            .split(',')
            .find_map(|kv| kv.trim().strip_prefix("config="))
            .and_then(parse_u64)?;
        let cpu = read_str(&dir.join("cpumask"))
            .and_then(|s| super::parse_cpu_list(&s))
            .and_then(|l| l.first().copied())
            .unwrap_or(0) as i32;
        Some(PmuEvent {
            name,
            pmu_type,
            config,
            cpu,
        })
    })
}

/// Current (actual) frequency, MHz.
pub fn current_mhz(root: &Root, gpu: &IntelGpu) -> Option<u64> {
    let dir = root.path("/sys/class/drm").join(&gpu.card);
    if gpu.driver == "xe" {
        read_u64(&dir.join("device/tile0/gt0/freq0/act_freq"))
    } else {
        read_u64(&dir.join("gt_act_freq_mhz")).or_else(|| read_u64(&dir.join("gt_cur_freq_mhz")))
    }
}

/// Busy % of our own clients on one GPU, from two fdinfo readings.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClientBusy {
    /// Busiest engine (class), percent.
    pub busy_pct: f32,
    pub engines: BTreeMap<String, f32>,
    pub resident_bytes: u64,
}

/// Sum the clients of one device: engine name → counter, for i915-style
/// nanoseconds and xe-style cycles.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientTotals {
    engine_ns: BTreeMap<String, (u64, u64)>,
    cycles: BTreeMap<String, (u64, u64)>,
    resident: u64,
}

impl ClientTotals {
    /// Resident bytes of the clients, over all memory regions.
    pub fn resident(&self) -> u64 {
        self.resident
    }
}

pub fn totals(clients: &[DrmClient], pdev: &str) -> ClientTotals {
    let mut t = ClientTotals::default();
    for c in clients.iter().filter(|c| c.pdev == pdev) {
        for (e, ns) in &c.engine_ns {
            let cap = c.capacity.get(e).copied().unwrap_or(1).max(1);
            let v = t.engine_ns.entry(e.clone()).or_default();
            v.0 += ns;
            v.1 = cap;
        }
        for (e, cy) in &c.cycles {
            let v = t.cycles.entry(e.clone()).or_default();
            v.0 += cy;
            v.1 = v.1.max(c.total_cycles.get(e).copied().unwrap_or(0));
        }
        t.resident += c.resident_bytes;
    }
    t
}

/// Busy % between two totals taken `dt_ns` apart.
pub fn busy(prev: &ClientTotals, now: &ClientTotals, dt_ns: u64) -> ClientBusy {
    let mut engines = BTreeMap::new();
    for (e, (ns, cap)) in &now.engine_ns {
        if let Some((p, _)) = prev.engine_ns.get(e)
            && dt_ns > 0
            && ns >= p
        {
            let pct = (ns - p) as f64 / (dt_ns as f64 * *cap as f64) * 100.0;
            engines.insert(e.clone(), pct.clamp(0.0, 100.0) as f32);
        }
    }
    for (e, (cy, total)) in &now.cycles {
        if let Some((p, ptotal)) = prev.cycles.get(e)
            && total > ptotal
            && cy >= p
        {
            let pct = (cy - p) as f64 / (total - ptotal) as f64 * 100.0;
            engines.insert(e.clone(), pct.clamp(0.0, 100.0) as f32);
        }
    }
    ClientBusy {
        busy_pct: engines.values().copied().fold(0.0, f32::max),
        engines,
        resident_bytes: now.resident,
    }
}

/// An open i915 PMU counter (rcs0-busy), read as nanoseconds busy.
pub struct PmuCounter {
    fd: std::os::fd::OwnedFd,
}

impl PmuCounter {
    /// Open the counter; the error says why not (usually permissions).
    pub(crate) fn open(ev: &PmuEvent) -> Result<PmuCounter, String> {
        use std::os::fd::FromRawFd;
        let mut attr = perf_event_open_sys::bindings::perf_event_attr {
            type_: ev.pmu_type,
            size: std::mem::size_of::<perf_event_open_sys::bindings::perf_event_attr>() as u32,
            config: ev.config,
            ..Default::default()
        };
        // SAFETY: attr is a valid, fully initialised perf_event_attr; the
        // returned fd (if any) is ours to own.
        let fd = unsafe { perf_event_open_sys::perf_event_open(&mut attr, -1, ev.cpu, -1, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            let paranoid = read_str(std::path::Path::new("/proc/sys/kernel/perf_event_paranoid"))
                .unwrap_or_else(|| "?".into());
            return Err(match e.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => format!(
                    "the i915 perf PMU needs CAP_PERFMON or kernel.perf_event_paranoid ≤ 0 (it is {paranoid}); busy % is ours only (fdinfo)"
                ),
                _ => format!("opening the i915 perf PMU ({}): {e}", ev.name),
            });
        }
        // SAFETY: fd is a fresh descriptor returned by the kernel.
        Ok(PmuCounter {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn read_ns(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        let mut v = 0u64;
        // SAFETY: reading 8 bytes into a u64 we own from a perf fd.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut v as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        (n == 8).then_some(v)
    }
}
