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

/// model.source = a Hugging Face directory bakes it on first use and
/// reuses the bake after, as `generate --model` does (it used to be refused
/// as "not a baked model").
#[test]
fn first_run_with_a_hugging_face_directory_bakes_it_once() {
    let h = tempfile::tempdir().unwrap();
    let hf = hf_model(Arch::Llama);
    cmd("hybrid-tui", h.path())
        .arg("--model")
        .arg(&hf)
        .assert()
        .success()
        .stdout(predicate::str::contains("on first use").and(predicate::str::contains("tok/s")));
    cmd("hybrid-tui", h.path())
        .args(["--set", &format!("model.source={}", hf.display())])
        .assert()
        .success()
        .stdout(predicate::str::contains("using the bake of"));
    let missing = h.path().join("no-such-model");
    cmd("hybrid-tui", h.path())
        .arg("--model")
        .arg(&missing)
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("no-such-model: no such directory")
                .and(predicate::str::contains("\"demo\"")),
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

/// `-n 0` is refused; a generation that fills the KV capacity stops with
/// finish "context", and says so on stderr.
#[test]
fn generate_lengths_say_what_happened() {
    let h = tempfile::tempdir().unwrap();
    let baked = baked_model(Arch::Llama, "int4_sym");
    let m = baked.to_str().unwrap();
    cmd("hybrid-tui", h.path())
        .args(["generate", "--model", m, "--prompt", "hi", "-n", "0"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("-n/--max-tokens 0")
                .and(predicate::str::contains("at least 1")),
        );
    let out = cmd("hybrid-tui", h.path())
        .args(["--set", "shard_a.kv_capacity=64", "generate", "--model", m])
        .args([
            "--prompt",
            "hello there",
            "-n",
            "100",
            "--ignore-eos",
            "--temperature",
            "0",
            "--json",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = &v["streams"][0];
    assert_eq!(s["finish"], "context", "{v}");
    let generated = s["tokens"].as_array().unwrap().len();
    assert_eq!(
        generated + v["prompt_tokens"].as_u64().unwrap() as usize,
        64
    );
    assert!(
        err.contains("context limit") && err.contains("shard_a.kv_capacity = 64"),
        "{err}"
    );
}

/// What `hybrid-executive --serve` does with input that is not the
/// protocol: binary bytes, a 20 MB line, a wrong parent. Each exits
/// non-zero with a short message and never echoes the input.
#[test]
fn the_executive_refuses_input_that_is_not_the_protocol() {
    use rand::Rng;
    use std::io::Write;
    let run = |args: &[&str], input: Vec<u8>| {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hybrid-executive"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        // It may exit before reading it all: a broken pipe is expected.
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        out
    };
    let noise: Vec<u8> = (0..65536)
        .map(|_| rand::rng().random_range(0x80..=0xFFu8))
        .collect();
    let mut long = b"{\"type\":\"start\",\"x\":\"".to_vec();
    long.resize(20 << 20, b'a');
    long.push(b'\n');
    for (what, input, needle) in [
        ("binary bytes", noise, "not UTF-8"),
        ("a 20 MB line", long, "longer than"),
        (
            "JSON of another kind",
            b"{\"type\":\"launch\"}\n".to_vec(),
            "not a protocol message",
        ),
    ] {
        let out = run(&["--serve"], input);
        let (so, se) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(4), "{what}: {se}");
        assert!(se.contains(needle), "{what}: {se}");
        assert!(so.contains("\"type\":\"error\""), "{what}: {so}");
        assert!(
            so.len() + se.len() < 4096,
            "{what}: {} bytes of output (the input echoed?)",
            so.len() + se.len()
        );
    }
    let out = run(&["--serve", "--parent-pid", "1"], Vec::new());
    let se = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{se}");
    assert!(
        se.contains("--parent-pid 1") && se.contains("not this process's parent"),
        "{se}"
    );
}

/// A Hub id that breaks the Hub's rules is refused before anything is
/// fetched or any path is touched.
#[test]
fn bad_hub_ids_are_refused_with_the_rule() {
    let h = tempfile::tempdir().unwrap();
    for id in ["foo/bar@../../../../tmp/x", "foo/bar@a:b", "foo--x/bar"] {
        cmd("hybrid-tui", h.path())
            .args(["generate", "--model", id, "--prompt", "x"])
            .assert()
            .failure()
            .stderr(predicate::str::contains("not a valid Hugging Face id"));
        cmd("hybrid-tui", h.path())
            .args(["bake", "--model", id, "--out"])
            .arg(h.path().join("out"))
            .assert()
            .failure()
            .stderr(predicate::str::contains("not a valid Hugging Face id"));
    }
}

/// Settings whose numbers are out of range say what is allowed.
#[test]
fn number_settings_say_what_is_allowed() {
    let h = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            &["--set", "shard_a.kv_capacity=-1", "config"][..],
            "a whole number ≥ 1",
        ),
        (
            &["--set", "executive.max_restarts=-1", "config"],
            "a whole number ≥ 0",
        ),
        (
            &["--set", "ring.slots=99999999999999999999", "config"],
            "the number 99999999999999999999, which is too large",
        ),
        (
            &[
                "bench",
                "--tg",
                "99999999999999999999",
                "--no-save",
                "-o",
                "md",
            ],
            "'99999999999999999999' is too large",
        ),
    ] {
        cmd("hybrid-tui", h.path())
            .args(args)
            .assert()
            .failure()
            .stderr(
                predicate::str::contains(needle).and(predicate::str::contains("the string").not()),
            );
    }
}

/// An empty directory given to bake: the cause is said once, with what a
/// model directory holds.
#[test]
fn baking_an_empty_directory_says_why_once() {
    let h = tempfile::tempdir().unwrap();
    let empty = h.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = cmd("hybrid-tui", h.path())
        .args(["bake", "--model"])
        .arg(&empty)
        .arg("--out")
        .arg(h.path().join("out"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.json") && err.contains("not a Hugging Face model directory"),
        "{err}"
    );
    assert_eq!(err.matches("missing").count(), 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
