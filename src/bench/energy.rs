//! Energy counters for joules per token: the CPU package (RAPL through the
//! powercap sysfs) and NVIDIA GPUs (NVML's total energy counter). Where
//! neither can be read the bench says so instead of printing a number.
//!
//! RAPL: the top-level `intel-rapl:N` zones named `package-*`, unwrapped with
//! `max_energy_range_uj`; NVML: `total_energy_consumption` (mJ). Both are
//! read before and after each run.

use std::path::PathBuf;

use crate::hw::Root;
use crate::hw::nvidia::NvidiaReader;

/// One RAPL package zone: its cumulative counter and where it wraps.
#[derive(Debug, Clone)]
struct RaplZone {
    name: String,
    energy: PathBuf,
    max_uj: u64,
}

/// Cumulative energy of what this machine lets us read.
pub struct EnergyMeter {
    zones: Vec<RaplZone>,
    /// NVIDIA GPUs whose energy counters answered at start.
    nvidia: Option<NvidiaReader>,
    /// What is read ("RAPL package-0 + NVML (1 GPU)"), or why nothing is.
    pub source: String,
    pub available: bool,
}

/// A reading: microjoules per counter (RAPL zones, then GPUs), to be
/// subtracted from a later reading.
#[derive(Debug, Clone, PartialEq)]
pub struct EnergyReading(Vec<u64>);

fn read_u64(p: &std::path::Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

impl EnergyMeter {
    /// Look for RAPL package zones under `root` and, on the live system,
    /// NVIDIA GPUs with an energy counter.
    pub fn new(root: &Root) -> EnergyMeter {
        let mut why = Vec::new();
        let base = root.path("/sys/class/powercap");
        let mut zones = Vec::new();
        match std::fs::read_dir(&base) {
            Err(_) => why.push(format!("no RAPL powercap ({} missing)", base.display())),
            Ok(rd) => {
                let mut names: Vec<_> = rd
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    // Top-level zones only (intel-rapl:0, not intel-rapl:0:0),
                    // so a package is not counted with its sub-zones.
                    .filter(|n| n.starts_with("intel-rapl:") && n.matches(':').count() == 1)
                    .collect();
                names.sort();
                for n in names {
                    let dir = base.join(&n);
                    let name = std::fs::read_to_string(dir.join("name"))
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| n.clone());
                    if !name.starts_with("package") {
                        continue;
                    }
                    let energy = dir.join("energy_uj");
                    if read_u64(&energy).is_none() {
                        why.push(format!(
                            "{} is not readable (RAPL needs root or a udev rule since Linux 5.10)",
                            energy.display()
                        ));
                        continue;
                    }
                    let max_uj = read_u64(&dir.join("max_energy_range_uj")).unwrap_or(u64::MAX);
                    zones.push(RaplZone {
                        name,
                        energy,
                        max_uj,
                    });
                }
                if zones.is_empty() && why.is_empty() {
                    why.push(format!("no RAPL package zone in {}", base.display()));
                }
            }
        }
        let nvidia = NvidiaReader::new(root);
        let gpus = match nvidia.energy_mj() {
            Ok(v) => Some(v.len()),
            Err(e) => {
                why.push(e);
                None
            }
        };
        let mut parts: Vec<String> = zones.iter().map(|z| format!("RAPL {}", z.name)).collect();
        if let Some(n) = gpus {
            parts.push(format!("NVML ({n} GPU)"));
        }
        let available = !parts.is_empty();
        let source = if available {
            parts.join(" + ")
        } else {
            format!("not available: {}", why.join("; "))
        };
        EnergyMeter {
            zones,
            nvidia: gpus.map(|_| nvidia),
            source,
            available,
        }
    }

    /// The counters now (None when nothing can be read).
    pub fn read(&self) -> Option<EnergyReading> {
        if !self.available {
            return None;
        }
        let mut v = Vec::new();
        for z in &self.zones {
            v.push(read_u64(&z.energy)?);
        }
        if let Some(n) = &self.nvidia {
            // NVML counts millijoules.
            v.extend(n.energy_mj().ok()?.iter().map(|mj| mj.saturating_mul(1000)));
        }
        Some(EnergyReading(v))
    }

    /// Joules between two readings; a RAPL counter that wrapped in between
    /// is unwrapped with its zone's range.
    pub fn joules(&self, before: &EnergyReading, after: &EnergyReading) -> Option<f64> {
        if before.0.len() != after.0.len() {
            return None;
        }
        let mut uj = 0u64;
        for (i, (a, b)) in before.0.iter().zip(&after.0).enumerate() {
            uj += if b >= a {
                b - a
            } else {
                let range = self.zones.get(i)?.max_uj;
                range.checked_sub(*a)?.checked_add(*b)?
            };
        }
        Some(uj as f64 / 1e6)
    }
}
