//! DRM fdinfo (Documentation/gpu/drm-usage-stats.rst): per open GPU file,
//! the driver's engine time and memory of that client. Only our own
//! processes are read (this one and the executive), so what it shows is
//! what the split uses, not the whole GPU.

use std::collections::BTreeMap;
use std::path::Path;

use super::Root;

/// One DRM client (an open file of a /dev/dri node).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrmClient {
    pub driver: String,
    /// PCI address of the device ("0000:00:02.0").
    pub pdev: String,
    pub client_id: u64,
    /// i915 and others: busy nanoseconds per engine ("render", "copy", ...).
    pub engine_ns: BTreeMap<String, u64>,
    /// drm-engine-capacity-<engine>: engines of that class (default 1).
    pub capacity: BTreeMap<String, u64>,
    /// xe: busy GPU cycles per engine class, and the GPU's total cycles.
    pub cycles: BTreeMap<String, u64>,
    pub total_cycles: BTreeMap<String, u64>,
    /// Resident bytes over all memory regions.
    pub resident_bytes: u64,
}

/// "123 KiB" → bytes. Units as drm-usage-stats allows: none, KiB, MiB.
fn size(v: &str) -> Option<u64> {
    let mut it = v.split_whitespace();
    let n: u64 = it.next()?.parse().ok()?;
    Some(match it.next() {
        Some("KiB") => n << 10,
        Some("MiB") => n << 20,
        Some("GiB") => n << 30,
        _ => n,
    })
}

/// Parse one fdinfo file; None when it is not a DRM client.
pub fn parse(text: &str) -> Option<DrmClient> {
    let mut c = DrmClient::default();
    let mut resident = 0u64;
    let mut memory = 0u64;
    let mut is_drm = false;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        let num = || {
            v.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        };
        if k == "drm-driver" {
            is_drm = true;
            c.driver = v.to_string();
        } else if k == "drm-pdev" {
            c.pdev = v.to_string();
        } else if k == "drm-client-id" {
            c.client_id = num().unwrap_or(0);
        } else if let Some(e) = k.strip_prefix("drm-engine-capacity-") {
            c.capacity.insert(e.into(), num().unwrap_or(1));
        } else if let Some(e) = k.strip_prefix("drm-engine-") {
            c.engine_ns.insert(e.into(), num().unwrap_or(0));
        } else if let Some(e) = k.strip_prefix("drm-total-cycles-") {
            c.total_cycles.insert(e.into(), num().unwrap_or(0));
        } else if let Some(e) = k.strip_prefix("drm-cycles-") {
            c.cycles.insert(e.into(), num().unwrap_or(0));
        } else if k.starts_with("drm-resident-") {
            resident += size(v).unwrap_or(0);
        } else if k.starts_with("drm-memory-") {
            memory += size(v).unwrap_or(0);
        }
    }
    if !is_drm {
        return None;
    }
    // drm-memory-* is the older name of drm-resident-*.
    c.resident_bytes = if resident > 0 { resident } else { memory };
    Some(c)
}

/// The DRM clients of the given processes, one per (device, client id):
/// a client opened twice or shared by dup() counts once.
pub fn clients(root: &Root, pids: &[u32]) -> Vec<DrmClient> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for pid in pids {
        let proc_dir = root.path(format!("/proc/{pid}"));
        let Ok(fds) = std::fs::read_dir(proc_dir.join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            // Only files of /dev/dri: the other fdinfo files are skipped unread.
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if !target.starts_with(Path::new("/dev/dri")) {
                continue;
            }
            let info = proc_dir.join("fdinfo").join(fd.file_name());
            let Some(c) = std::fs::read_to_string(&info).ok().and_then(|t| parse(&t)) else {
                continue;
            };
            if seen.insert((c.pdev.clone(), c.client_id)) {
                out.push(c);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn i915_and_xe_fdinfo_parse() {
        let i915 = "pos:\t0\nflags:\t02100002\nmnt_id:\t26\nino:\t1104\ndrm-driver:\ti915\ndrm-client-id:\t7\ndrm-pdev:\t0000:00:02.0\ndrm-total-system0:\t4096 KiB\ndrm-resident-system0:\t2048 KiB\ndrm-engine-render:\t25662044495 ns\ndrm-engine-copy:\t0 ns\ndrm-engine-video:\t0 ns\ndrm-engine-capacity-video:\t2\n";
        let c = parse(i915).unwrap();
        assert_eq!((c.driver.as_str(), c.client_id), ("i915", 7));
        assert_eq!(c.engine_ns["render"], 25_662_044_495);
        assert_eq!(c.capacity["video"], 2);
        assert_eq!(c.resident_bytes, 2048 << 10);
        let xe = "drm-driver:\txe\ndrm-client-id:\t12\ndrm-pdev:\t0000:03:00.0\ndrm-total-vram0:\t8192 KiB\ndrm-resident-vram0:\t8 MiB\ndrm-cycles-rcs:\t1000\ndrm-total-cycles-rcs:\t50000\n";
        let c = parse(xe).unwrap();
        assert_eq!(c.cycles["rcs"], 1000);
        assert_eq!(c.total_cycles["rcs"], 50000);
        assert_eq!(c.resident_bytes, 8 << 20);
        assert!(parse("pos:\t0\nflags:\t0\n").is_none());
    }
}
