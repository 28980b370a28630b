//! Intel NPUs under the intel_vpu driver (/sys/class/accel/accel*).
//!
//! The driver's sysfs attributes sit on the PCI device
//! (accel*/device/): npu_busy_time_us (cumulative time with jobs on the
//! firmware), npu_current_frequency_mhz, npu_max_frequency_mhz and
//! npu_memory_utilization (bytes). The device node is /dev/accel/accel*.

use std::ffi::CString;
use std::os::unix::fs::MetadataExt;

use serde::Serialize;

use super::{Reading, Root, numbered_entries, parse_uevent, read_str, read_u64};

/// intel_vpu's PCI device ids and the generation each belongs to, with the
/// firmware file prefix the driver loads for it.
pub fn generation(device: u32) -> Option<(&'static str, &'static str)> {
    Some(match device {
        0x7d1d => ("Meteor Lake (NPU 3720)", "vpu_37xx"),
        0xad1d => ("Arrow Lake (NPU 3720)", "vpu_37xx"),
        0x643e => ("Lunar Lake (NPU 4000)", "vpu_40xx"),
        0xb03e | 0xfd3e => ("Panther Lake (NPU 5000)", "vpu_50xx"),
        _ => return None,
    })
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Npu {
    /// "accel0".
    pub accel: String,
    pub driver: String,
    pub pci_slot: String,
    pub pci_id: String,
    /// "Meteor Lake (NPU 3720)", or "unknown generation".
    pub generation: String,
    /// /dev/accel/accelN (on the live machine's paths).
    pub node: String,
    pub node_present: bool,
    /// Open for reading and writing is allowed to this process.
    pub node_accessible: bool,
    /// Group owning the node ("render"), and whether we are in it.
    pub node_group: Option<String>,
    pub in_node_group: bool,
    pub max_mhz: Option<u64>,
    /// Firmware files present for this generation (lib/firmware/intel/vpu).
    pub firmware: Vec<String>,
}

/// The intel_vpu module is loaded (or built in).
pub fn driver_loaded(root: &Root) -> bool {
    root.path("/sys/module/intel_vpu").exists()
}

pub fn discover(root: &Root) -> Reading<Vec<Npu>> {
    let class = root.path("/sys/class/accel");
    let entries = match numbered_entries(&class, "accel") {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Reading::Ok(Vec::new());
        }
        Err(e) => return Reading::Unavailable(format!("{}: {e}", class.display())),
    };
    let mut out = Vec::new();
    for accel in entries {
        let dev = class.join(&accel).join("device");
        let Some(ue) = read_str(&dev.join("uevent")).map(|t| parse_uevent(&t)) else {
            continue;
        };
        let driver = ue.get("DRIVER").cloned().unwrap_or_default();
        if driver != "intel_vpu" {
            continue;
        }
        let pci_id = ue.get("PCI_ID").cloned().unwrap_or_default().to_lowercase();
        let device = pci_id
            .split_once(':')
            .and_then(|(_, d)| u32::from_str_radix(d, 16).ok())
            .unwrap_or(0);
        let (gen_name, fw_prefix) = generation(device).unwrap_or(("unknown generation", "vpu_"));
        let node = format!("/dev/accel/{accel}");
        let node_path = root.path(&node);
        let meta = std::fs::metadata(&node_path).ok();
        let node_group = meta.as_ref().map(|m| group_name(root, m.gid()));
        let in_node_group = meta.as_ref().is_some_and(|m| in_group(m.gid()));
        let firmware_dir = root.path("/lib/firmware/intel/vpu");
        let mut firmware: Vec<String> = std::fs::read_dir(&firmware_dir)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with(fw_prefix))
                    .collect()
            })
            .unwrap_or_default();
        firmware.sort();
        out.push(Npu {
            driver,
            pci_slot: ue.get("PCI_SLOT_NAME").cloned().unwrap_or_default(),
            pci_id,
            generation: gen_name.into(),
            node_present: meta.is_some(),
            node_accessible: meta.is_some() && accessible(&node_path),
            node,
            node_group,
            in_node_group,
            max_mhz: read_u64(&dev.join("npu_max_frequency_mhz")),
            firmware,
            accel,
        });
    }
    Reading::Ok(out)
}

/// One NPU's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NpuCounters {
    pub busy_us: Option<u64>,
    pub cur_mhz: Option<u64>,
    pub memory_bytes: Option<u64>,
}

pub fn counters(root: &Root, npu: &Npu) -> NpuCounters {
    let dev = root
        .path("/sys/class/accel")
        .join(&npu.accel)
        .join("device");
    NpuCounters {
        busy_us: read_u64(&dev.join("npu_busy_time_us")),
        cur_mhz: read_u64(&dev.join("npu_current_frequency_mhz")),
        memory_bytes: read_u64(&dev.join("npu_memory_utilization")),
    }
}

fn accessible(p: &std::path::Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: access() on a NUL-terminated path we own.
    unsafe { libc::access(c.as_ptr(), libc::R_OK | libc::W_OK) == 0 }
}

/// Name of a group id from the tree's /etc/group, or the number.
pub(crate) fn group_name(root: &Root, gid: u32) -> String {
    read_str(&root.path("/etc/group"))
        .and_then(|t| {
            t.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                let _pw = f.next();
                (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
            })
        })
        .unwrap_or_else(|| gid.to_string())
}

/// This process has `gid` as its effective or a supplementary group.
pub(crate) fn in_group(gid: u32) -> bool {
    // SAFETY: getegid has no preconditions.
    if unsafe { libc::getegid() } == gid {
        return true;
    }
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds 256 gids.
    let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
    n > 0 && groups[..n as usize].contains(&gid)
}
