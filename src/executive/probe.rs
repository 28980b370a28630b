//! `hybrid-executive --probe`: the OpenVINO runtime and its devices, as JSON.

use std::collections::BTreeMap;

use openvino::{DeviceType, PropertyKey};
use serde::{Deserialize, Serialize};

use super::runtime::RuntimeError;
use super::session::new_core;

/// Properties worth showing, when a device supports them.
const MAIN_PROPERTIES: &[&str] = &[
    "FULL_DEVICE_NAME",
    "DEVICE_ARCHITECTURE",
    "DEVICE_TYPE",
    "OPTIMIZATION_CAPABILITIES",
    "INFERENCE_PRECISION_HINT",
    "PERFORMANCE_HINT",
    "RANGE_FOR_STREAMS",
    "RANGE_FOR_ASYNC_INFER_REQUESTS",
    "INFERENCE_NUM_THREADS",
    "GPU_DEVICE_TOTAL_MEM_SIZE",
    "NPU_DRIVER_VERSION",
    "NPU_COMPILER_VERSION",
    "NPU_DEVICE_TOTAL_MEM_SIZE",
    "DEVICE_GOPS",
    "DEVICE_ID",
];

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub full_name: Option<String>,
    pub plugin_version: Option<String>,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub library: String,
    pub version: String,
    pub build: String,
    pub devices: Vec<DeviceInfo>,
}

pub fn probe(runtime_dir: &str) -> Result<ProbeReport, RuntimeError> {
    let core = new_core(runtime_dir)?;
    let library = super::runtime::load_runtime(runtime_dir)?;
    let v = openvino::version();
    let names: Vec<String> = core
        .available_devices()
        .map_err(|e| RuntimeError::Call(format!("listing devices: {e}")))?
        .iter()
        .map(|d| d.as_ref().to_string())
        .collect();
    let mut devices = Vec::new();
    for name in names {
        let dt = DeviceType::from(name.as_str());
        let supported: Vec<String> = core
            .get_property(&dt, &PropertyKey::SupportedProperties)
            .map(|s| {
                s.split([' ', ','])
                    .map(|p| {
                        p.trim()
                            .trim_end_matches(":RO")
                            .trim_end_matches(":RW")
                            .to_string()
                    })
                    .filter(|p| !p.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let mut properties = BTreeMap::new();
        for key in MAIN_PROPERTIES {
            if !supported.iter().any(|s| s == key) {
                continue;
            }
            if let Ok(value) = core.get_property(&dt, &PropertyKey::Other((*key).into())) {
                properties.insert(key.to_string(), value);
            }
        }
        let plugin_version = core
            .versions(&name)
            .ok()
            .and_then(|v| v.into_iter().next())
            .map(|(_, v)| format!("{} {}", v.description, v.build_number));
        devices.push(DeviceInfo {
            full_name: properties.get("FULL_DEVICE_NAME").cloned(),
            name,
            plugin_version,
            properties,
        });
    }
    Ok(ProbeReport {
        library: library.display().to_string(),
        version: v.description,
        build: v.build_number,
        devices,
    })
}
