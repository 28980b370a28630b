//! The binaries as users run them: exit codes and messages.

mod common;

use common::cmd;

use assert_cmd::Command;
use std::path::Path;

use common::{baked_model, hf_model};
use hybrid_tui::model::Arch;
use predicates::prelude::*;

/// Run `c`, require success (showing its stderr if not), parse stdout as JSON.
fn json_of(c: &mut Command) -> serde_json::Value {
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json on stdout")
}

#[test]
fn probe_prints_the_runtime_and_cpu_as_json() {
    let h = tempfile::tempdir().unwrap();
    let v = json_of(cmd("hybrid-executive", h.path()).arg("--probe"));
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
            .and(predicate::str::contains("shard A (executive process)"))
            .and(predicate::str::contains(
                "split 2/4 · shard A on OpenVINO CPU (compiled in",
            ))
            .and(predicate::str::contains("stream 0: ")),
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
                .and(predicate::str::contains(
                    "split 4/4 · shard A on OpenVINO CPU",
                ))
                .and(predicate::str::contains("stream 0: ")),
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

fn generate_json(h: &Path, args: &[&str]) -> serde_json::Value {
    json_of(
        cmd("hybrid-tui", h)
            .args(["--set", "shard_a.inference_precision=f32", "generate"])
            .args(args)
            .arg("--json"),
    )
}

#[test]
fn generate_streams_text_and_reports_json() {
    let h = tempfile::tempdir().unwrap();
    let baked = baked_model(Arch::Qwen2, "int4_sym");
    let m = baked.to_str().unwrap();
    // Greedy, fixed length, two streams: both equal, 12 tokens each.
    let greedy12 = [
        "--model",
        m,
        "--prompt",
        "the cat",
        "--chat",
        "-n",
        "12",
        "--ignore-eos",
        "--temperature",
        "0",
    ];
    let v = generate_json(h.path(), &[&greedy12[..], &["--streams", "2"]].concat());
    let streams = v["streams"].as_array().unwrap();
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[0]["tokens"].as_array().unwrap().len(), 12);
    assert_eq!(streams[0]["tokens"], streams[1]["tokens"]);
    assert_eq!(streams[0]["finish"], "length");
    assert!(v["throughput_tok_s"].as_f64().unwrap() > 0.0);
    assert!(v["stages"]["a_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(v["split"], 2);
    // --split 0: every layer on shard B; the same greedy tokens.
    let v0 = generate_json(h.path(), &[&greedy12[..], &["--split", "0"]].concat());
    assert_eq!(v0["split"], 0);
    assert_eq!(v0["streams"][0]["tokens"], streams[0]["tokens"]);
    // Text streams to stdout, the summary to stderr.
    cmd("hybrid-tui", h.path())
        .args([
            "generate", "--model", m, "--prompt", "hi", "-n", "4", "--seed", "3",
        ])
        .assert()
        .success()
        .stderr(predicate::str::contains("stream 0: ").and(predicate::str::contains("tok/s")));
}

#[test]
fn generate_bakes_a_hugging_face_directory_once() {
    let h = tempfile::tempdir().unwrap();
    let hf = hf_model(Arch::Llama);
    let run = || {
        cmd("hybrid-tui", h.path())
            .args(["generate", "--model"])
            .arg(&hf)
            .args(["--prompt", "hello", "-n", "3", "--temperature", "0"])
            .assert()
            .success()
    };
    run().stderr(predicate::str::contains("on first use"));
    run().stderr(predicate::str::contains("using the bake"));
}

#[test]
fn generate_with_too_little_shared_memory_says_so_at_start() {
    let h = tempfile::tempdir().unwrap();
    let baked = baked_model(Arch::Llama, "int4_sym");
    cmd("hybrid-tui", h.path())
        .args([
            "--set",
            "ring.slots=200000",
            "--set",
            "shard_a.prefill_chunk=4096",
            "generate",
            "--model",
            baked.to_str().unwrap(),
            "--prompt",
            "x",
            "-n",
            "2",
        ])
        .timeout(std::time::Duration::from_secs(60))
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("/dev/shm has")
                .and(predicate::str::contains("MiB"))
                .and(predicate::str::contains("ring.slots")),
        );
}
