//! The checks as a table: each one's id, title and the function that
//! judges the facts (pass / warn / fail, what was found, the fix).

use super::*;

/// What one check found.
struct Verdict {
    status: Status,
    detail: String,
    /// Shown unless the check passes.
    fix: &'static str,
}

fn verdict(status: Status, detail: String, fix: &'static str) -> Verdict {
    Verdict {
        status,
        detail,
        fix,
    }
}

/// One check: its id (stable: JSON, the README's troubleshooting), its
/// title, and what it finds in the facts.
struct CheckDef {
    id: &'static str,
    title: &'static str,
    run: fn(&Facts) -> Verdict,
}

/// Every check, in the order the report lists them.
const CHECKS: [CheckDef; 11] = [
    CheckDef {
        id: "npu-device",
        title: "NPU device node",
        run: npu_device,
    },
    CheckDef {
        id: "npu-driver",
        title: "intel_vpu driver",
        run: npu_driver,
    },
    CheckDef {
        id: "kernel",
        title: "Kernel 6.8+ (for the NPU)",
        run: kernel,
    },
    CheckDef {
        id: "level-zero",
        title: "Level Zero loader",
        run: level_zero,
    },
    CheckDef {
        id: "npu-openvino",
        title: "NPU visible to OpenVINO",
        run: npu_openvino,
    },
    CheckDef {
        id: "gpu-driver",
        title: "Intel GPU driver (i915/xe)",
        run: gpu_driver,
    },
    CheckDef {
        id: "vulkan",
        title: "Vulkan GPU adapter",
        run: vulkan_adapter,
    },
    CheckDef {
        id: "openvino",
        title: "OpenVINO runtime",
        run: openvino_runtime,
    },
    CheckDef {
        id: "shm",
        title: "Shared memory (/dev/shm)",
        run: shared_memory,
    },
    CheckDef {
        id: "memory",
        title: "Memory for the model",
        run: memory_for_model,
    },
    CheckDef {
        id: "disk",
        title: "Disk for the model cache",
        run: disk_for_cache,
    },
];

pub fn evaluate(f: &Facts) -> Vec<Check> {
    CHECKS
        .iter()
        .map(|c| {
            let v = (c.run)(f);
            Check {
                id: c.id,
                title: c.title,
                status: v.status,
                detail: v.detail,
                fix: (v.status != Status::Pass).then_some(v.fix),
            }
        })
        .collect()
}

/// NPU device node.
fn npu_device(f: &Facts) -> Verdict {
    let sev = npu_severity(f);
    let npus = f.npus.ok().cloned().unwrap_or_default();
    match npus.first() {
        None => verdict(
            sev,
            match (&f.npus, f.npu_pci.first()) {
                (Reading::Unavailable(r), _) => r.clone(),
                (_, Some(id)) => format!("an NPU ({id}) is on the PCI bus but no driver serves it"),
                _ => "no Intel NPU (no intel_vpu device under /sys/class/accel)".into(),
            },
            if f.npu_pci.is_empty() {
                FIX_NPU_NOT_FOUND
            } else {
                FIX_NPU_DRIVER
            },
        ),
        Some(n) if !n.node_present => verdict(
            sev,
            format!("{} ({}) has no {}", n.accel, n.generation, n.node),
            FIX_NPU_NODE,
        ),
        Some(n) if !n.node_accessible => verdict(
            sev,
            format!(
                "{} is not readable and writable by this user (group {}; member: {})",
                n.node,
                n.node_group.as_deref().unwrap_or("?"),
                if n.in_node_group { "yes" } else { "no" }
            ),
            FIX_NPU_ACCESS,
        ),
        Some(n) => verdict(
            Status::Pass,
            format!("{} · {} · {}", n.node, n.generation, n.pci_id),
            FIX_NPU_ACCESS,
        ),
    }
}

/// intel_vpu loaded.
fn npu_driver(f: &Facts) -> Verdict {
    let sev = npu_severity(f);
    let npus = f.npus.ok().cloned().unwrap_or_default();
    let has_npu_hw = !npus.is_empty() || !f.npu_pci.is_empty();
    if f.npu_driver_loaded {
        verdict(Status::Pass, "intel_vpu is loaded".into(), FIX_NPU_DRIVER)
    } else if has_npu_hw {
        verdict(
            sev,
            "intel_vpu is not loaded but an NPU is present".into(),
            FIX_NPU_DRIVER,
        )
    } else {
        verdict(
            sev,
            "intel_vpu is not loaded (and no NPU was found)".into(),
            FIX_NPU_NOT_FOUND,
        )
    }
}

/// Kernel version.
fn kernel(f: &Facts) -> Verdict {
    match f
        .kernel
        .as_deref()
        .and_then(|k| kernel_version(k).map(|v| (k, v)))
    {
        Some((k, v)) if v >= (6, 8) => verdict(Status::Pass, k.to_string(), FIX_KERNEL),
        Some((k, _)) => verdict(Status::Warn, format!("{k} is older than 6.8"), FIX_KERNEL),
        None => verdict(
            Status::Warn,
            "cannot read /proc/sys/kernel/osrelease".into(),
            FIX_KERNEL,
        ),
    }
}

/// Level Zero loader (the NPU plugin talks to the driver through it).
fn level_zero(f: &Facts) -> Verdict {
    let sev = npu_severity(f);
    match &f.level_zero {
        Some(p) => verdict(Status::Pass, p.clone(), FIX_LEVEL_ZERO),
        None => verdict(
            sev,
            format!("libze_loader.so.1 is in none of {}", LIB_DIRS.join(", ")),
            FIX_LEVEL_ZERO,
        ),
    }
}

/// NPU visible to OpenVINO (firmware and user-mode driver work).
fn npu_openvino(f: &Facts) -> Verdict {
    let sev = npu_severity(f);
    let npus = f.npus.ok().cloned().unwrap_or_default();
    let has_npu_hw = !npus.is_empty() || !f.npu_pci.is_empty();
    match &f.openvino {
        Reading::Ok(r) => match r.devices.iter().find(|d| d.name.starts_with("NPU")) {
            Some(d) => verdict(
                Status::Pass,
                format!(
                    "{}{}",
                    d.full_name.as_deref().unwrap_or("NPU"),
                    d.properties
                        .get("NPU_DRIVER_VERSION")
                        .map(|v| format!(" · driver {v}"))
                        .unwrap_or_default()
                ),
                FIX_NPU_FIRMWARE,
            ),
            None if has_npu_hw => verdict(
                sev,
                format!(
                    "OpenVINO lists {} but not the NPU{}",
                    device_names(r),
                    npus.first()
                        .filter(|n| n.firmware.is_empty())
                        .map(|_| "; no firmware for it in /lib/firmware/intel/vpu")
                        .unwrap_or_default()
                ),
                FIX_NPU_FIRMWARE,
            ),
            None => verdict(
                sev,
                format!("OpenVINO lists {}: there is no NPU", device_names(r)),
                FIX_NPU_NOT_FOUND,
            ),
        },
        Reading::Unavailable(why) => {
            verdict(Status::Warn, format!("cannot tell: {why}"), FIX_OPENVINO)
        }
    }
}

/// Intel GPU driver.
fn gpu_driver(f: &Facts) -> Verdict {
    let gpus = f.intel_gpus.ok().cloned().unwrap_or_default();
    if gpus.is_empty() {
        verdict(
            Status::Warn,
            f.intel_gpus
                .reason()
                .map(str::to_string)
                .unwrap_or_else(|| "no Intel GPU bound to i915 or xe".into()),
            FIX_GPU_DRIVER,
        )
    } else {
        verdict(
            Status::Pass,
            gpus.iter()
                .map(|g| format!("{} ({}, {})", g.name, g.driver, g.card))
                .collect::<Vec<_>>()
                .join("; "),
            FIX_GPU_DRIVER,
        )
    }
}

/// Vulkan: a driver manifest and a hardware adapter.
fn vulkan_adapter(f: &Facts) -> Verdict {
    let vk_sev = if f.wants_vulkan {
        Status::Fail
    } else {
        Status::Warn
    };
    match &f.vulkan_adapters {
        Reading::Ok(list) if list.iter().any(VulkanAdapter::is_hardware) => verdict(
            Status::Pass,
            list.iter()
                .map(|a| format!("{} ({})", a.name, a.kind))
                .collect::<Vec<_>>()
                .join("; "),
            FIX_VULKAN,
        ),
        Reading::Ok(list) if !list.is_empty() => verdict(
            Status::Warn,
            format!(
                "only software adapters ({}): shard B on Vulkan would run on the CPU",
                list.iter()
                    .map(|a| a.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            FIX_VULKAN,
        ),
        other => verdict(
            vk_sev,
            match (other.reason(), f.vulkan_icds.is_empty()) {
                (_, true) => format!(
                    "no Vulkan driver manifest in {}",
                    vulkan::ICD_DIRS.join(", ")
                ),
                (Some(r), false) => format!("{r}; manifests: {}", f.vulkan_icds.join(", ")),
                (None, false) => format!(
                    "no adapter although manifests are installed ({})",
                    f.vulkan_icds.join(", ")
                ),
            },
            FIX_VULKAN,
        ),
    }
}

/// OpenVINO runtime.
fn openvino_runtime(f: &Facts) -> Verdict {
    match &f.openvino {
        Reading::Ok(r) => verdict(
            Status::Pass,
            format!("{} ({}) · devices {}", r.build, r.library, device_names(r)),
            FIX_OPENVINO,
        ),
        Reading::Unavailable(why) => verdict(Status::Fail, why.clone(), FIX_OPENVINO),
    }
}

/// /dev/shm for the rings.
fn shared_memory(f: &Facts) -> Verdict {
    let s = &f.shm;
    match (s.mounted, s.free) {
        (false, _) => verdict(Status::Fail, "/dev/shm is not mounted".into(), FIX_SHM),
        (true, Some(free)) if free >= s.need => verdict(
            Status::Pass,
            format!(
                "{} free, the rings need {} ({})",
                mib(free),
                mib(s.need),
                s.how
            ),
            FIX_SHM,
        ),
        (true, free) => verdict(
            Status::Fail,
            format!(
                "{} free, the rings need {} ({})",
                free.map(mib).unwrap_or_else(|| "unknown".into()),
                mib(s.need),
                s.how
            ),
            FIX_SHM,
        ),
    }
}

/// Memory for the model.
fn memory_for_model(f: &Facts) -> Verdict {
    match (&f.model, &f.memory) {
        (Reading::Ok(m), Reading::Ok(mem)) => {
            let status = if m.bytes <= mem.available {
                Status::Pass
            } else if m.bytes <= mem.total {
                Status::Warn
            } else {
                Status::Fail
            };
            verdict(
                status,
                format!(
                    "{} needs about {} ({}); {} available of {}",
                    m.source,
                    gib(m.bytes),
                    m.how,
                    gib(mem.available),
                    gib(mem.total)
                ),
                FIX_MEMORY,
            )
        }
        (Reading::Unavailable(r), _) | (_, Reading::Unavailable(r)) => {
            verdict(Status::Warn, format!("cannot tell: {r}"), FIX_MEMORY)
        }
    }
}

/// Disk for the model cache.
fn disk_for_cache(f: &Facts) -> Verdict {
    const DISK_WARN: u64 = 10 << 30;
    const DISK_FAIL: u64 = 2 << 30;
    match &f.cache {
        Reading::Ok(c) => verdict(
            if c.free >= DISK_WARN {
                Status::Pass
            } else if c.free >= DISK_FAIL {
                Status::Warn
            } else {
                Status::Fail
            },
            format!(
                "{} free at {} (a 1B model takes about 3.5 GiB downloaded and baked, an 8B one about 21 GiB)",
                gib(c.free),
                c.path
            ),
            FIX_DISK,
        ),
        Reading::Unavailable(r) => verdict(Status::Warn, r.clone(), FIX_DISK),
    }
}
