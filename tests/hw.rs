//! The hardware readers and checks, on recorded trees (tests/fixtures/hw:
//! Meteor Lake with i915, Lunar Lake with xe, Arrow Lake on an old kernel,
//! Panther Lake with a discrete Arc card, an NPU without its driver, and a
//! server with none of it) and on this machine, which has no Intel GPU,
//! NPU or NVIDIA GPU and must say so.

mod common;

use common::app as cmd;

use std::path::Path;

use common::{HW_EXEC_PID, HW_PID, hw_fixture};
use hybrid_tui::config::Settings;
use hybrid_tui::executive::probe::{DeviceInfo, ProbeReport};
use hybrid_tui::hw::checks::{self, Facts, Status};
use hybrid_tui::hw::sampler::{Pids, Sampler};
use hybrid_tui::hw::vulkan::VulkanAdapter;
use hybrid_tui::hw::{Reading, Root, cpu, fdinfo, intel_gpu, memory, npu};

/// Copy a tree (symlinks as symlinks) so a test can move its counters.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        let ft = e.file_type().unwrap();
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(e.path()).unwrap(), &dest).unwrap();
        } else if ft.is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn status_of(checks: &[checks::Check], id: &str) -> Status {
    checks
        .iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no check {id}"))
        .status
}

fn settings(profile_npu: bool) -> Settings {
    let mut s = Settings::default();
    if profile_npu {
        s.shard_a.device = "NPU".into();
        s.shard_b.backend = "vulkan".into();
    }
    s
}

fn facts(name: &str, npu: bool) -> Facts {
    checks::gather(&Root::at(hw_fixture(name)), &settings(npu))
}

#[test]
fn cpu_reader_reads_models_and_the_p_e_split() {
    let c = cpu::info(&Root::at(hw_fixture("mtl-i915")));
    let c = c.ok().expect("cpu");
    assert_eq!(c.model, "Intel(R) Core(TM) Ultra 7 155H");
    assert_eq!(c.logical, 22);
    assert_eq!(c.p_cpus.as_ref().map(Vec::len), Some(12));
    assert_eq!(c.e_cpus.as_ref().map(Vec::len), Some(10));
    assert_eq!(
        c.physical,
        Some(16),
        "6 P-cores with 2 threads + 10 E-cores"
    );
    assert_eq!(c.max_mhz, Some(4800));
    let none = cpu::info(&Root::at(hw_fixture("none")))
        .ok()
        .cloned()
        .unwrap();
    assert_eq!((none.logical, none.p_cpus, none.e_cpus), (4, None, None));
    assert!(matches!(
        cpu::info(&Root::at("/nonexistent")),
        Reading::Unavailable(r) if r.contains("/proc/cpuinfo")
    ));
}

#[test]
fn memory_reader_reads_meminfo() {
    let m = memory::read(&Root::at(hw_fixture("mtl-i915")));
    let m = m.ok().unwrap();
    assert_eq!(m.total, 32_000_000 * 1024);
    assert_eq!(m.available, 24_000_000 * 1024);
    assert_eq!(m.swap_used(), (8_388_604 - 8_000_000) * 1024);
}

#[test]
fn intel_gpu_reader_knows_i915_and_xe() {
    let mtl = intel_gpu::discover(&Root::at(hw_fixture("mtl-i915")));
    let mtl = mtl.ok().unwrap();
    assert_eq!(
        mtl.len(),
        1,
        "connectors (card1-eDP-1) are not cards: {mtl:?}"
    );
    let g = &mtl[0];
    assert_eq!((g.card.as_str(), g.driver.as_str()), ("card1", "i915"));
    assert_eq!(g.pci_id, "8086:7d55");
    assert!(g.integrated);
    assert!(g.name.contains("Meteor Lake"), "{}", g.name);
    assert_eq!(g.max_mhz, Some(2250));
    let pmu = g.pmu.as_ref().expect("i915 PMU");
    assert_eq!(
        (pmu.name.as_str(), pmu.pmu_type, pmu.config),
        ("i915", 18, 0)
    );

    let ptl = intel_gpu::discover(&Root::at(hw_fixture("ptl-xe-dgpu")))
        .ok()
        .cloned()
        .unwrap();
    assert_eq!(ptl.len(), 2);
    assert!(ptl.iter().all(|g| g.driver == "xe" && g.pmu.is_none()));
    let b580 = &ptl[1];
    assert!(!b580.integrated && b580.name == "Intel Arc B580");
    assert_eq!(b580.vram_bytes, Some(12 << 30));
    assert_eq!(b580.max_mhz, Some(2850));
    assert_eq!(
        intel_gpu::discover(&Root::at(hw_fixture("none"))),
        Reading::Ok(vec![])
    );
}

#[test]
fn fdinfo_counts_each_client_once_and_only_gpu_files() {
    let root = Root::at(hw_fixture("mtl-i915"));
    let ours = fdinfo::clients(&root, &[HW_PID]);
    assert_eq!(ours.len(), 1, "fd 5 and 6 are one client; fd 3 is not DRM");
    let both = fdinfo::clients(&root, &[HW_PID, HW_EXEC_PID]);
    assert_eq!(both.len(), 2);
    assert_eq!(both[1].engine_ns["render"], 2_000_000_000);
}

#[test]
fn npu_reader_knows_each_generation() {
    for (tree, generation, firmware) in [
        ("mtl-i915", "Meteor Lake", 1),
        ("arl-old-kernel", "Arrow Lake", 0),
        ("lnl-xe", "Lunar Lake", 1),
        ("ptl-xe-dgpu", "Panther Lake", 1),
    ] {
        let root = Root::at(hw_fixture(tree));
        let list = npu::discover(&root).ok().cloned().unwrap();
        assert_eq!(list.len(), 1, "{tree}");
        let n = &list[0];
        assert!(
            n.generation.starts_with(generation),
            "{tree}: {}",
            n.generation
        );
        assert_eq!(n.firmware.len(), firmware, "{tree}: {:?}", n.firmware);
        assert!(n.node_present, "{tree}");
        assert!(n.node_group.is_some(), "{tree}: the node's group");
        assert!(npu::driver_loaded(&root));
    }
    let none = Root::at(hw_fixture("mtl-no-driver"));
    assert_eq!(npu::discover(&none), Reading::Ok(vec![]));
    assert!(!npu::driver_loaded(&none));
}

/// Busy % comes from counter deltas over time: step the counters in a copy
/// of the tree and the clock by hand.
#[test]
fn sampler_turns_counter_deltas_into_percentages() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&hw_fixture("mtl-i915"), tmp.path());
    let root = Root::at(tmp.path());
    let pids = Pids::of(HW_PID);
    pids.set_executive(Some(HW_EXEC_PID));
    let mut s = Sampler::new(root.clone(), pids);
    let first = s.sample_at(1_000_000_000);
    let gpu = &first.intel_gpus.ok().unwrap()[0];
    assert_eq!(gpu.ours_busy_pct, None, "no rate from one sample");
    assert_eq!(
        gpu.ours_resident_bytes,
        2 * 4096 * 1024,
        "two clients × 4 MiB"
    );
    assert_eq!(gpu.cur_mhz, Some(1950));
    assert!(matches!(&gpu.all_busy_pct, Reading::Unavailable(r) if r.contains("running system")));
    assert!(
        matches!(first.cpu, Reading::Unavailable(_)),
        "no live CPU on a tree"
    );
    assert!(matches!(&first.nvidia, Reading::Unavailable(r) if r.contains("running system")));

    // 0.5 s of render time for client 7 and 0.1 s for the executive's in 1 s.
    let fd = |pid: u32, n: u32| tmp.path().join(format!("proc/{pid}/fdinfo/{n}"));
    for (path, from, to) in [
        (fd(HW_PID, 5), "10000000000 ns", "10500000000 ns"),
        (fd(HW_PID, 6), "10000000000 ns", "10500000000 ns"),
        (fd(HW_EXEC_PID, 9), "2000000000 ns", "2100000000 ns"),
    ] {
        let t = std::fs::read_to_string(&path).unwrap().replace(from, to);
        std::fs::write(&path, t).unwrap();
    }
    let npu_dir = tmp.path().join("sys/class/accel/accel0/device");
    std::fs::write(npu_dir.join("npu_busy_time_us"), "1250000\n").unwrap();
    let second = s.sample_at(2_000_000_000);
    let gpu = &second.intel_gpus.ok().unwrap()[0];
    let busy = gpu.ours_busy_pct.unwrap();
    assert!((busy - 60.0).abs() < 1e-3, "render 0.6 s in 1 s: {busy}");
    let n = &second.npus.ok().unwrap()[0];
    let nb = n.busy_pct.unwrap();
    assert!((nb - 25.0).abs() < 1e-3, "NPU 250 ms busy in 1 s: {nb}");
    assert_eq!(n.memory_bytes, Some(64 << 20));
    assert_eq!((n.cur_mhz, n.max_mhz), (Some(1400), Some(1400)));

    // xe counts GPU cycles against the GPU's total cycles.
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&hw_fixture("lnl-xe"), tmp.path());
    let mut s = Sampler::new(Root::at(tmp.path()), Pids::of(HW_PID));
    s.sample_at(0);
    let path = tmp.path().join(format!("proc/{HW_PID}/fdinfo/5"));
    let t = std::fs::read_to_string(&path)
        .unwrap()
        .replace("drm-cycles-rcs:\t1000", "drm-cycles-rcs:\t31000")
        .replace(
            "drm-total-cycles-rcs:\t100000",
            "drm-total-cycles-rcs:\t200000",
        );
    std::fs::write(&path, t).unwrap();
    let snap = s.sample_at(1_000_000_000);
    let g = &snap.intel_gpus.ok().unwrap()[0];
    assert!((g.ours_busy_pct.unwrap() - 30.0).abs() < 1e-3, "{g:?}");
    assert!(matches!(&g.all_busy_pct, Reading::Unavailable(r) if r.contains("xe")));
}

#[test]
fn this_machine_has_no_gpu_or_npu_and_says_so() {
    let mut s = Sampler::new(Root::live(), Pids::new());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let snap = s.sample();
    let cpu = snap.cpu.ok().expect("sysinfo reads the CPU");
    let logical = cpu::info(&Root::live()).ok().unwrap().logical;
    assert_eq!(cpu.per_core.len(), logical);
    assert!(snap.memory.ok().unwrap().total > 0);
    assert!(
        matches!(&snap.intel_gpus, Reading::Unavailable(r) if r.starts_with("no Intel GPU")),
        "{:?}",
        snap.intel_gpus
    );
    assert!(
        matches!(&snap.npus, Reading::Unavailable(r) if r.starts_with("no Intel NPU")),
        "{:?}",
        snap.npus
    );
    assert!(
        matches!(&snap.nvidia, Reading::Unavailable(r) if r.contains("libnvidia-ml")),
        "{:?}",
        snap.nvidia
    );
}

fn probe_with(devices: &[&str]) -> Reading<ProbeReport> {
    Reading::Ok(ProbeReport {
        library: "/x/libopenvino_c.so".into(),
        version: "2026.4".into(),
        build: "2026.4.0".into(),
        devices: devices
            .iter()
            .map(|d| DeviceInfo {
                name: d.to_string(),
                full_name: None,
                plugin_version: None,
                properties: Default::default(),
            })
            .collect(),
    })
}

fn adapters(list: &[(&str, &str)]) -> Reading<Vec<VulkanAdapter>> {
    Reading::Ok(
        list.iter()
            .enumerate()
            .map(|(index, (name, kind))| VulkanAdapter {
                index,
                name: name.to_string(),
                kind: kind.to_string(),
            })
            .collect(),
    )
}

#[test]
fn checks_judge_each_tree() {
    // Meteor Lake, everything in place; OpenVINO and Vulkan as they would answer there.
    let mut f = facts("mtl-i915", true);
    f.openvino = probe_with(&["CPU", "GPU", "NPU"]);
    f.vulkan_adapters = adapters(&[("Intel(R) Arc(tm) Graphics (MTL)", "IntegratedGpu")]);
    let c = checks::evaluate(&f);
    for id in [
        "npu-device",
        "npu-driver",
        "kernel",
        "level-zero",
        "npu-openvino",
        "gpu-driver",
        "vulkan",
        "openvino",
        "shm",
    ] {
        assert_eq!(status_of(&c, id), Status::Pass, "{id}: {c:#?}");
    }
    assert!(
        c.iter()
            .filter(|c| c.status == Status::Pass)
            .all(|c| c.fix.is_none())
    );
    // NPU + integrated GPU: the design's cost-optimized configuration.
    assert_eq!(checks::recommend(&f).profile, "cost-optimized");

    // The same with a discrete GPU → the LLM over both GPUs when OpenVINO
    // has its GPU plugin (max-performance), else shard A on the NPU.
    f.vulkan_adapters = adapters(&[
        ("Intel Arc (MTL)", "IntegratedGpu"),
        ("Intel Arc B580", "DiscreteGpu"),
    ]);
    let has_ov_gpu = f
        .openvino
        .ok()
        .is_some_and(|r| r.devices.iter().any(|d| d.name.starts_with("GPU")));
    assert_eq!(
        checks::recommend(&f).profile,
        if has_ov_gpu {
            "max-performance"
        } else {
            "core-ultra-dgpu"
        }
    );
    f.openvino = probe_with(&["CPU", "NPU"]);
    assert_eq!(checks::recommend(&f).profile, "core-ultra-dgpu");
    f.openvino = probe_with(&["CPU", "GPU", "NPU"]);
    assert_eq!(checks::recommend(&f).profile, "max-performance");

    // Arrow Lake on 6.6 without Level Zero or firmware: OpenVINO misses the NPU.
    let mut f = facts("arl-old-kernel", true);
    f.openvino = probe_with(&["CPU", "GPU"]);
    let c = checks::evaluate(&f);
    assert_eq!(status_of(&c, "kernel"), Status::Warn);
    assert_eq!(
        status_of(&c, "level-zero"),
        Status::Fail,
        "the profile wants the NPU"
    );
    assert_eq!(status_of(&c, "npu-openvino"), Status::Fail);
    let fw = c.iter().find(|c| c.id == "npu-openvino").unwrap();
    assert!(fw.detail.contains("no firmware"), "{}", fw.detail);
    assert_eq!(fw.fix, Some(checks::FIX_NPU_FIRMWARE));
    assert_eq!(checks::recommend(&f).profile, "cpu");
    // With the CPU profile the same gaps are warnings.
    let mut f = facts("arl-old-kernel", false);
    f.openvino = probe_with(&["CPU", "GPU"]);
    assert_eq!(status_of(&checks::evaluate(&f), "level-zero"), Status::Warn);

    // An NPU on the PCI bus with no driver.
    let f = facts("mtl-no-driver", true);
    let c = checks::evaluate(&f);
    let dev = c.iter().find(|c| c.id == "npu-device").unwrap();
    assert_eq!(dev.status, Status::Fail);
    assert!(dev.detail.contains("8086:7d1d"), "{}", dev.detail);
    assert_eq!(dev.fix, Some(checks::FIX_NPU_DRIVER));
    assert_eq!(status_of(&c, "npu-driver"), Status::Fail);

    // A server with nothing: NPU and GPU checks warn, Vulkan fails only if wanted.
    let mut f = facts("none", false);
    f.openvino = probe_with(&["CPU"]);
    f.vulkan_adapters = adapters(&[("llvmpipe (LLVM 19.1.7, 256 bits)", "Cpu")]);
    let c = checks::evaluate(&f);
    for id in [
        "npu-device",
        "npu-driver",
        "kernel",
        "level-zero",
        "npu-openvino",
        "gpu-driver",
        "vulkan",
    ] {
        assert_eq!(status_of(&c, id), Status::Warn, "{id}: {c:#?}");
    }
    assert_eq!(status_of(&c, "openvino"), Status::Pass);
    let r = checks::recommend(&f);
    assert_eq!(r.profile, "cpu", "{r:?}");
    assert!(r.flags.is_empty());
    // A hardware Vulkan GPU without an NPU → the vulkan profile.
    f.vulkan_adapters = adapters(&[("NVIDIA H100 80GB HBM3", "DiscreteGpu")]);
    assert_eq!(checks::recommend(&f).profile, "vulkan");
}

#[test]
fn shm_and_memory_checks_fail_when_short() {
    let mut f = facts("mtl-i915", false);
    f.shm.need = u64::MAX / 2;
    f.shm.free = Some(64 << 20);
    f.model = Reading::Ok(checks::ModelNeed {
        source: "big".into(),
        bytes: 40_000_000 * 1024,
        how: "test".into(),
    });
    let c = checks::evaluate(&f);
    assert_eq!(status_of(&c, "shm"), Status::Fail);
    assert_eq!(
        status_of(&c, "memory"),
        Status::Fail,
        "more than the 32 GB total"
    );
    f.model = Reading::Ok(checks::ModelNeed {
        source: "mid".into(),
        bytes: 28_000_000 * 1024,
        how: "test".into(),
    });
    assert_eq!(
        status_of(&checks::evaluate(&f), "memory"),
        Status::Warn,
        "over available, under total"
    );
    f.shm.mounted = false;
    let shm = checks::evaluate(&f)
        .into_iter()
        .find(|c| c.id == "shm")
        .unwrap();
    assert!(shm.detail.contains("not mounted") && shm.fix == Some(checks::FIX_SHM));
}

/// The README's troubleshooting section says what the checks say, word for word.
#[test]
fn readme_troubleshooting_quotes_every_fix() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split("## Troubleshooting")
        .nth(1)
        .expect("README has a Troubleshooting section");
    for fix in checks::ALL_FIXES {
        assert!(section.contains(fix), "README troubleshooting lacks: {fix}");
    }
}

#[test]
fn check_json_on_this_machine() {
    let h = tempfile::tempdir().unwrap();
    let out = cmd(h.path()).args(["check", "--json"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // SAFETY: sysconf has no preconditions.
    let ncpu = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) } as u64;
    assert_eq!(
        v["facts"]["cpu"]["value"]["logical"].as_u64(),
        Some(ncpu),
        "{v}"
    );
    assert_eq!(v["facts"]["cpu"]["available"], true);
    let devices: Vec<&str> = v["facts"]["openvino"]["value"]["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(devices.contains(&"CPU"), "{devices:?}");
    let checks = v["checks"].as_array().unwrap();
    let ids: Vec<&str> = checks.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "npu-device",
            "npu-driver",
            "kernel",
            "level-zero",
            "npu-openvino",
            "gpu-driver",
            "vulkan",
            "openvino",
            "shm",
            "memory",
            "disk"
        ]
    );
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(["pass", "warn", "fail"].contains(&status), "{c}");
        assert_eq!(c["fix"].is_null(), status == "pass", "{c}");
        assert!(!c["detail"].as_str().unwrap().is_empty());
    }
    let status = |id: &str| {
        checks.iter().find(|c| c["id"] == id).unwrap()["status"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(status("shm"), "pass");
    assert_eq!(status("openvino"), "pass");
    assert_eq!(
        status("npu-device"),
        "warn",
        "no NPU here, and the cpu profile does not need one"
    );
    assert_eq!(v["facts"]["npus"]["value"], serde_json::json!([]));
    assert_eq!(v["facts"]["nvidia"]["available"], false);
    assert_eq!(v["recommended"]["profile"], "cpu");
    let counts = &v["counts"];
    let total = counts["pass"].as_u64().unwrap()
        + counts["warn"].as_u64().unwrap()
        + counts["fail"].as_u64().unwrap();
    assert_eq!(total as usize, checks.len());
}

#[test]
fn check_fails_with_exit_1_when_the_profile_needs_a_missing_npu() {
    let h = tempfile::tempdir().unwrap();
    let out = cmd(h.path())
        .args(["--profile", "core-ultra", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[fail] npu-device"), "{text}");
    assert!(text.contains(checks::FIX_NPU_NOT_FOUND), "{text}");
    assert!(text.contains("recommended profile: cpu"), "{text}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("failed: npu-device"), "{err}");
}

#[test]
fn check_reads_a_recorded_tree_with_sysroot() {
    let h = tempfile::tempdir().unwrap();
    let out = cmd(h.path())
        .args(["check", "--json", "--sysroot"])
        .arg(hw_fixture("lnl-xe"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["facts"]["npus"]["value"][0]["generation"],
        "Lunar Lake (NPU 4000)"
    );
    assert_eq!(v["facts"]["intel_gpus"]["value"][0]["driver"], "xe");
    assert_eq!(v["facts"]["kernel"], "6.11.0-9-generic");
    assert!(v["sysroot"].as_str().unwrap().ends_with("lnl-xe"));
    // OpenVINO is not probed for a tree, so its check cannot pass.
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_missing_openvino_runtime_fails_its_check_and_says_what_to_do() {
    let h = tempfile::tempdir().unwrap();
    let missing = h.path().join("no-openvino-here");
    std::fs::create_dir_all(&missing).unwrap();
    let out = cmd(h.path())
        .args(["check", "--json", "--set"])
        .arg(format!("openvino.runtime_dir={}", missing.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ov = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "openvino")
        .unwrap();
    assert_eq!(ov["status"], "fail", "{ov}");
    let detail = ov["detail"].as_str().unwrap();
    assert!(
        detail.contains("no-openvino-here"),
        "names the folder: {detail}"
    );
    assert_eq!(ov["fix"], checks::FIX_OPENVINO);
    // The NPU check cannot tell without OpenVINO, and says why.
    let npu = v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "npu-openvino")
        .unwrap();
    assert!(
        npu["detail"].as_str().unwrap().starts_with("cannot tell"),
        "{npu}"
    );
}

#[test]
fn a_bad_sysroot_is_a_clear_error() {
    let h = tempfile::tempdir().unwrap();
    cmd(h.path())
        .args(["check", "--sysroot", "/nonexistent/tree"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "--sysroot /nonexistent/tree: not a directory",
        ));
}
