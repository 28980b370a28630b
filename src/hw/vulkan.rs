//! Vulkan: the ICD manifests installed (the loader's search path) and the
//! adapters wgpu enumerates through them (what shard B can pick).

use serde::Serialize;

use super::{Reading, Root};

/// Where the Vulkan loader looks for driver manifests (Linux).
pub const ICD_DIRS: &[&str] = &[
    "/usr/share/vulkan/icd.d",
    "/usr/local/share/vulkan/icd.d",
    "/etc/vulkan/icd.d",
];

/// Driver manifest files ("intel_icd.x86_64.json", "lvp_icd.x86_64.json").
pub fn icd_files(root: &Root) -> Vec<String> {
    let mut out = Vec::new();
    for d in ICD_DIRS {
        if let Ok(rd) = std::fs::read_dir(root.path(d)) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".json") {
                    out.push(format!("{d}/{name}"));
                }
            }
        }
    }
    out.sort();
    out
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VulkanAdapter {
    pub index: usize,
    pub name: String,
    /// DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu (software), Other.
    pub kind: String,
}

impl VulkanAdapter {
    /// A real GPU rather than a software rasterizer (llvmpipe).
    pub fn is_hardware(&self) -> bool {
        self.kind != "Cpu"
    }
}

/// The adapters, on the live machine only.
pub fn adapters(root: &Root) -> Reading<Vec<VulkanAdapter>> {
    if !root.is_live() {
        return Reading::Unavailable("Vulkan is asked on the running system only".into());
    }
    Reading::Ok(
        crate::shard_b::device::vulkan_adapters()
            .into_iter()
            .map(|a| VulkanAdapter {
                index: a.index,
                name: a.name,
                kind: a.kind,
            })
            .collect(),
    )
}
