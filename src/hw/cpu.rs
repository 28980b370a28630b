//! The CPU: model, core counts and the P-/E-core split (Intel hybrid CPUs
//! expose cpu_core and cpu_atom PMUs listing their CPUs), frequency from
//! cpufreq. Live use per core comes from sysinfo (see the sampler).

use serde::Serialize;

use super::{Reading, Root, numbered_entries, parse_cpu_list, read_str, read_u64};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CpuInfo {
    pub model: String,
    /// Logical CPUs (hardware threads).
    pub logical: usize,
    /// Physical cores, where /proc/cpuinfo gives core ids.
    pub physical: Option<usize>,
    /// Logical CPUs of performance cores, on hybrid CPUs.
    pub p_cpus: Option<Vec<usize>>,
    /// Logical CPUs of efficient cores (E and LP E), on hybrid CPUs.
    pub e_cpus: Option<Vec<usize>>,
    /// Highest maximum frequency over the CPUs (cpufreq), MHz.
    pub max_mhz: Option<u64>,
}

impl CpuInfo {
    /// "22 threads, 16 cores (6 P + 10 E)".
    pub fn summary(&self) -> String {
        let mut s = format!("{} threads", self.logical);
        if let Some(p) = self.physical {
            s.push_str(&format!(", {p} cores"));
        }
        if let (Some(p), Some(e)) = (&self.p_cpus, &self.e_cpus) {
            s.push_str(&format!(" ({} P threads + {} E threads)", p.len(), e.len()));
        }
        if let Some(m) = self.max_mhz {
            s.push_str(&format!(", up to {:.1} GHz", m as f64 / 1000.0));
        }
        s
    }
}

pub fn info(root: &Root) -> Reading<CpuInfo> {
    let path = root.path("/proc/cpuinfo");
    let Some(text) = read_str(&path) else {
        return Reading::Unavailable(format!("{} is not readable", path.display()));
    };
    let mut model = String::new();
    let mut logical = 0;
    let mut cores = std::collections::BTreeSet::new();
    let mut physical_id = String::new();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        match k.trim() {
            "processor" => logical += 1,
            "model name" if model.is_empty() => model = v.trim().to_string(),
            "physical id" => physical_id = v.trim().to_string(),
            "core id" => {
                cores.insert((physical_id.clone(), v.trim().to_string()));
            }
            _ => {}
        }
    }
    if logical == 0 {
        return Reading::Unavailable(format!("{} lists no processor", path.display()));
    }
    let list = |p: &str| read_str(&root.path(p)).and_then(|s| parse_cpu_list(&s));
    let p_cpus = list("/sys/devices/cpu_core/cpus");
    let e_cpus = list("/sys/devices/cpu_atom/cpus");
    let cpu_dir = root.path("/sys/devices/system/cpu");
    let max_mhz = numbered_entries(&cpu_dir, "cpu")
        .unwrap_or_default()
        .iter()
        .filter_map(|c| read_u64(&cpu_dir.join(c).join("cpufreq/cpuinfo_max_freq")))
        .max()
        .map(|khz| khz / 1000);
    Reading::Ok(CpuInfo {
        model,
        logical,
        physical: (!cores.is_empty()).then_some(cores.len()),
        p_cpus,
        e_cpus,
        max_mhz,
    })
}
