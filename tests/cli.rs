//! The binaries as users run them: exit codes and messages.

mod common;

use assert_cmd::Command;
use common::hf_model;
use hybrid_tui::model::Arch;
use predicates::prelude::*;

/// A command with its own XDG directories, so nothing of the user's is read or written.
fn cmd(bin: &str, home: &std::path::Path) -> Command {
    let mut c = Command::cargo_bin(bin).unwrap();
    c.env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("HYBRID_TUI_PROFILE");
    c
}

#[test]
fn probe_prints_the_runtime_and_cpu_as_json() {
    let h = tempfile::tempdir().unwrap();
    let out = cmd("hybrid-executive", h.path())
        .arg("--probe")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["build"].as_str().unwrap().starts_with("2026.4"), "{v}");
    let cpu = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "CPU")
        .unwrap();
    assert!(!cpu["full_name"].as_str().unwrap().is_empty());
    assert!(cpu["properties"]["OPTIMIZATION_CAPABILITIES"].is_string());
}

#[test]
fn missing_runtime_says_what_was_tried_and_the_fix() {
    let h = tempfile::tempdir().unwrap();
    cmd("hybrid-executive", h.path())
        .args(["--probe", "--runtime-dir"])
        .arg(h.path().join("nowhere"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("nowhere").and(predicate::str::contains("scripts/setup")));
    cmd("hybrid-tui", h.path())
        .args(["--set", "openvino.runtime_dir=/nonexistent/ov"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("/nonexistent/ov")
                .and(predicate::str::contains("scripts/setup")),
        );
}

#[test]
fn config_prints_values_with_their_origin() {
    let h = tempfile::tempdir().unwrap();
    cmd("hybrid-tui", h.path())
        .args([
            "--profile",
            "core-ultra",
            "--device",
            "AUTO:NPU,CPU",
            "config",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("device = \"AUTO:NPU,CPU\"  # from command line").and(
                predicate::str::contains("backend = \"vulkan\"  # from profile core-ultra"),
            ),
        );
    let out = cmd("hybrid-tui", h.path())
        .args(["config", "--json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["settings"]["shard_a"]["device"], "CPU");
}

#[test]
fn bad_settings_fail_with_the_key_named() {
    let h = tempfile::tempdir().unwrap();
    cmd("hybrid-tui", h.path())
        .args(["--set", "shard_a.turbo=1", "config"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("shard_a.turbo")
                .and(predicate::str::contains("shard_a.device")),
        );
    std::fs::create_dir_all(h.path().join("config/hybrid-tui")).unwrap();
    std::fs::write(
        h.path().join("config/hybrid-tui/config.toml"),
        "[split]\nlayers = -2\n",
    )
    .unwrap();
    cmd("hybrid-tui", h.path())
        .arg("config")
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("config.toml").and(predicate::str::contains("split.layers")),
        );
    cmd("hybrid-tui", h.path())
        .args(["--profile", "nope", "config"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("unknown profile 'nope'"));
}

#[test]
fn make_and_bake_from_the_command_line() {
    let h = tempfile::tempdir().unwrap();
    let hf = h.path().join("hf");
    cmd("hybrid-tui", h.path())
        .args([
            "make-test-model",
            "--arch",
            "mistral",
            "--preset",
            "tiny",
            "--seed",
            "3",
            "--out",
        ])
        .arg(&hf)
        .assert()
        .success()
        .stdout(predicate::str::contains("mistral tiny"));
    let out = cmd("hybrid-tui", h.path())
        .args([
            "bake",
            "--weights",
            "int4_asym",
            "--group-size",
            "-1",
            "--json",
            "--model",
        ])
        .arg(&hf)
        .arg("--out")
        .arg(h.path().join("baked"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["bytes_after"].as_u64().unwrap() < r["bytes_before"].as_u64().unwrap());
    assert_eq!(r["layers"].as_array().unwrap().len(), 4 + 2);
    cmd("hybrid-tui", h.path())
        .args(["bake", "--weights", "int3", "--model"])
        .arg(&hf)
        .arg("--out")
        .arg(h.path().join("x"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("--weights int3"));
    cmd("hybrid-tui", h.path())
        .args(["bake", "--model"])
        .arg(h.path().join("missing"))
        .arg("--out")
        .arg(h.path().join("x"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("missing").and(predicate::str::contains("config.json")));
    assert!(!h.path().join("x").exists());
}

#[test]
fn first_run_makes_bakes_and_runs_shard_a_then_reuses() {
    let h = tempfile::tempdir().unwrap();
    cmd("hybrid-tui", h.path()).assert().success().stdout(
        predicate::str::contains("made the demo model")
            .and(predicate::str::contains("baked it"))
            .and(predicate::str::contains("compiled it on OpenVINO CPU"))
            .and(predicate::str::contains("ran the prompt through shard A")),
    );
    cmd("hybrid-tui", h.path())
        .args([
            "--set",
            "shard_a.static_shapes=true",
            "--set",
            "shard_a.prefill_chunk=16",
            "--split",
            "4",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("baked earlier")
                .and(predicate::str::contains("layers [0, 4) of 4 (static mode"))
                .and(predicate::str::contains("ran the prompt through shard A"))
                .and(predicate::str::contains("tokens generated greedily")),
        );
}

#[test]
fn first_run_with_a_model_that_is_not_baked_says_how() {
    let h = tempfile::tempdir().unwrap();
    let hf = hf_model(Arch::Llama);
    cmd("hybrid-tui", h.path())
        .arg("--model")
        .arg(&hf)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("not a baked model")
                .and(predicate::str::contains("hybrid-tui bake")),
        );
    cmd("hybrid-tui", h.path())
        .args(["--split", "9"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("split k=9 is out of range"));
}
