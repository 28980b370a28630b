//! RAM and swap from /proc/meminfo.

use serde::Serialize;

use super::{Reading, Root, read_str};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub total: u64,
    /// What can be allocated without swapping (MemAvailable).
    pub available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

impl Memory {
    pub fn used(&self) -> u64 {
        self.total.saturating_sub(self.available)
    }
    pub fn swap_used(&self) -> u64 {
        self.swap_total.saturating_sub(self.swap_free)
    }
}

pub fn read(root: &Root) -> Reading<Memory> {
    let path = root.path("/proc/meminfo");
    match read_str(&path) {
        Some(text) => parse(&text).map_or_else(
            || Reading::Unavailable(format!("{}: no MemTotal line", path.display())),
            Reading::Ok,
        ),
        None => Reading::Unavailable(format!("{} is not readable", path.display())),
    }
}

/// Values are in kB in the file.
pub fn parse(text: &str) -> Option<Memory> {
    let mut m = Memory::default();
    let mut free = None;
    let mut available = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let kib: u64 = match v.split_whitespace().next().and_then(|n| n.parse().ok()) {
            Some(n) => n,
            None => continue,
        };
        let bytes = kib * 1024;
        match k {
            "MemTotal" => m.total = bytes,
            "MemFree" => free = Some(bytes),
            "MemAvailable" => available = Some(bytes),
            "SwapTotal" => m.swap_total = bytes,
            "SwapFree" => m.swap_free = bytes,
            _ => {}
        }
    }
    if m.total == 0 {
        return None;
    }
    // Kernels before 3.14 have no MemAvailable.
    m.available = available.or(free).unwrap_or(0);
    Some(m)
}
