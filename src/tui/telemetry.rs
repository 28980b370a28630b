//! Device readings for the devices pane, sampled off the UI thread.
//!
//! CPU (aggregate and per core) and memory come from sysinfo. GPU and NPU
//! readers are the hardware-check issue's; until then the pane lists them
//! as not available, with the reason.

use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    pub cpu_brand: String,
    /// Percent, 0..=100.
    pub cpu_total: f32,
    pub cpu_per_core: Vec<f32>,
    pub mem_used: u64,
    pub mem_total: u64,
    pub swap_used: u64,
    pub swap_total: u64,
    /// Readings this build cannot take yet, each with why.
    pub unavailable: Vec<(String, String)>,
}

/// How often the sampler reads.
pub const PERIOD: Duration = Duration::from_millis(1000);

/// Sample every [`PERIOD`] on a thread until `send` returns false.
pub fn spawn(mut send: impl FnMut(Sample) -> bool + Send + 'static) {
    let _ = std::thread::Builder::new()
        .name("telemetry".into())
        .spawn(move || {
            let mut sys = match sysinfo::System::new() {
                Ok(s) => s,
                Err(e) => {
                    send(Sample {
                        unavailable: vec![("CPU and memory".into(), e.to_string())],
                        ..Default::default()
                    });
                    return;
                }
            };
            sys.refresh_cpu_usage();
            loop {
                std::thread::sleep(PERIOD);
                sys.refresh_cpu_usage();
                sys.refresh_memory();
                let s = Sample {
                    cpu_brand: sys
                        .cpus()
                        .first()
                        .map(|c| c.brand().trim().to_string())
                        .unwrap_or_default(),
                    cpu_total: sys.global_cpu_usage(),
                    cpu_per_core: sys.cpus().iter().map(|c| c.usage()).collect(),
                    mem_used: sys.used_memory(),
                    mem_total: sys.total_memory(),
                    swap_used: sys.used_swap(),
                    swap_total: sys.total_swap(),
                    unavailable: vec![
                        (
                            "Intel GPU".into(),
                            "no reader yet (DRM fdinfo / sysfs: hardware-check issue)".into(),
                        ),
                        (
                            "Intel NPU".into(),
                            "no reader yet (intel_vpu sysfs: hardware-check issue)".into(),
                        ),
                        (
                            "NVIDIA GPU".into(),
                            "no reader yet (NVML: hardware-check issue)".into(),
                        ),
                    ],
                };
                if !send(s) {
                    return;
                }
            }
        });
}
