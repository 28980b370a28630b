//! NVIDIA GPUs through NVML (nvml-wrapper), whose library
//! (libnvidia-ml.so.1, part of the driver) is loaded at run time: without
//! the driver this reader says so and nothing else changes.

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::Clock;
use serde::Serialize;

use super::{Reading, Root};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NvidiaGpu {
    pub index: u32,
    pub name: String,
    pub busy_pct: Option<f32>,
    pub mem_used: Option<u64>,
    pub mem_total: Option<u64>,
    pub clock_mhz: Option<u32>,
    pub power_w: Option<f32>,
}

pub struct NvidiaReader {
    nvml: Result<Nvml, String>,
}

impl NvidiaReader {
    pub fn new(root: &Root) -> NvidiaReader {
        let nvml = if root.is_live() {
            Nvml::init().map_err(|e| match e {
                nvml_wrapper::error::NvmlError::LibloadingError(_) => {
                    "no NVIDIA driver (libnvidia-ml.so.1 not found)".to_string()
                }
                nvml_wrapper::error::NvmlError::DriverNotLoaded => {
                    "the NVIDIA kernel driver is not loaded".to_string()
                }
                e => format!("NVML: {e}"),
            })
        } else {
            Err("NVML reads the running system only (not a recorded tree)".into())
        };
        NvidiaReader { nvml }
    }

    /// Each GPU's energy counter (mJ since the driver loaded; Volta and
    /// newer), or why it cannot be read.
    pub(crate) fn energy_mj(&self) -> Result<Vec<u64>, String> {
        let nvml = self.nvml.as_ref().map_err(|e| e.clone())?;
        let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
        if count == 0 {
            return Err("NVML lists no GPU".into());
        }
        (0..count)
            .map(|i| {
                nvml.device_by_index(i)
                    .and_then(|d| d.total_energy_consumption())
                    .map_err(|e| format!("NVML has no energy counter for GPU {i}: {e}"))
            })
            .collect()
    }

    pub fn sample(&self) -> Reading<Vec<NvidiaGpu>> {
        let nvml = match &self.nvml {
            Ok(n) => n,
            Err(e) => return Reading::Unavailable(e.clone()),
        };
        let count = match nvml.device_count() {
            Ok(c) => c,
            Err(e) => return Reading::Unavailable(format!("NVML device count: {e}")),
        };
        let mut out = Vec::new();
        for index in 0..count {
            let Ok(d) = nvml.device_by_index(index) else {
                continue;
            };
            let mem = d.memory_info().ok();
            out.push(NvidiaGpu {
                index,
                name: d.name().unwrap_or_else(|_| format!("NVIDIA GPU {index}")),
                busy_pct: d.utilization_rates().ok().map(|u| u.gpu as f32),
                mem_used: mem.as_ref().map(|m| m.used),
                mem_total: mem.as_ref().map(|m| m.total),
                clock_mhz: d.clock_info(Clock::Graphics).ok(),
                power_w: d.power_usage().ok().map(|mw| mw as f32 / 1000.0),
            });
        }
        Reading::Ok(out)
    }
}
