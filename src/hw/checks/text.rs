//! The report as text: the machine's lines and the checks with their fixes.

use super::*;

/// A device list as one line: each item, or "not available: why".
fn list_line<T>(r: &Reading<Vec<T>>, none: &str, item: impl Fn(&T) -> String) -> String {
    match r {
        Reading::Ok(l) if !l.is_empty() => l.iter().map(item).collect::<Vec<_>>().join("; "),
        Reading::Ok(_) => format!("not available: {none}"),
        Reading::Unavailable(why) => format!("not available: {why}"),
    }
}

/// What the machine is, one line per part (the report's head, the check screen's top).
pub fn machine_lines(f: &Facts) -> Vec<(&'static str, String)> {
    let na = |why: &str| format!("not available: {why}");
    vec![
        (
            "CPU",
            match &f.cpu {
                Reading::Ok(c) => format!("{} · {}", c.model, c.summary()),
                Reading::Unavailable(r) => na(r),
            },
        ),
        (
            "memory",
            match &f.memory {
                Reading::Ok(m) => format!(
                    "{} total, {} available, swap {}",
                    gib(m.total),
                    gib(m.available),
                    gib(m.swap_total)
                ),
                Reading::Unavailable(r) => na(r),
            },
        ),
        (
            "kernel",
            f.kernel.clone().unwrap_or_else(|| "unknown".into()),
        ),
        (
            "NPU",
            list_line(&f.npus, "no intel_vpu device", |n| {
                format!("{} {} ({})", n.accel, n.generation, n.pci_id)
            }),
        ),
        (
            "Intel GPU",
            list_line(&f.intel_gpus, "no card bound to i915 or xe", |g| {
                format!("{} ({}, {})", g.name, g.driver, g.pci_slot)
            }),
        ),
        (
            "NVIDIA",
            list_line(&f.nvidia, "NVML lists no device", |g| {
                format!(
                    "{} ({} memory)",
                    g.name,
                    g.mem_total.map(gib).unwrap_or_else(|| "?".into())
                )
            }),
        ),
        (
            "Vulkan",
            list_line(&f.vulkan_adapters, "no adapter", |a| {
                format!("{} ({})", a.name, a.kind)
            }),
        ),
        (
            "OpenVINO",
            match &f.openvino {
                Reading::Ok(o) => format!("{} · {}", o.build, device_names(o)),
                Reading::Unavailable(r) => na(r),
            },
        ),
    ]
}

/// The plain-text report (stdout not a terminal, bug reports).
pub fn render_text(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "hybrid-tui {} hardware check (profile {})",
        r.tool_version, r.profile
    );
    if let Some(root) = &r.sysroot {
        let _ = writeln!(s, "read from the recorded tree {root}");
    }
    let _ = writeln!(s);
    for (k, v) in machine_lines(&r.facts) {
        let _ = writeln!(s, "  {k:<10} {v}");
    }
    let _ = writeln!(s);
    for c in &r.checks {
        let _ = writeln!(
            s,
            "[{}] {:<13} {}: {}",
            c.status.label(),
            c.id,
            c.title,
            c.detail
        );
        if let Some(fix) = c.fix {
            let _ = writeln!(s, "       fix: {fix}");
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{} passed, {} warnings, {} failed",
        r.counts.pass, r.counts.warn, r.counts.fail
    );
    let _ = writeln!(
        s,
        "recommended profile: {}{} — {}",
        r.recommended.profile,
        if r.recommended.flags.is_empty() {
            String::new()
        } else {
            format!(" {}", r.recommended.flags)
        },
        r.recommended.why
    );
    s
}
