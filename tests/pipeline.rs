//! Two processes, one model: the executive (shard A on OpenVINO CPU) and
//! shard B (burn CPU) in this process, through the shared-memory rings.
//!
//! Judge: the single-device burn baseline (shard B with k = 0 runs the
//! whole model from token ids). Greedy tokens must be equal for 64 steps
//! and the logits of every step within max|Δ|/max|ref| ≤ 1e-3. Prompts are
//! fresh random ids each run (seed printed on failure).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{baked_model, children_of, fresh_seed, rel_err};
use hybrid_tui::bake::store::BakedModel;
use hybrid_tui::config::Settings;
use hybrid_tui::model::Arch;
use hybrid_tui::pipeline::{Event, Finish, GenRequest, Pipeline, PipelineError};
use hybrid_tui::ring::segment::list_segments;
use hybrid_tui::shard_b::{ShardB, WeightDtype, select_device};
use hybrid_tui::supervisor::protocol::PROTOCOL_VERSION;
use hybrid_tui::supervisor::{ExecState, SupervisorError, SupervisorEvent};
use rand::{Rng, SeedableRng};

const STEPS: usize = 64;
const LOGIT_TOL: f64 = 1e-3;

fn settings(k: i64) -> Settings {
    let mut s = Settings::default();
    s.executive.path = env!("CARGO_BIN_EXE_hybrid-executive").into();
    s.shard_a.inference_precision = "f32".into();
    s.shard_a.prefill_chunk = 8;
    s.shard_a.kv_capacity = 128;
    s.split.layers = k;
    s.ring.slots = 4;
    s
}

fn prompt(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // Skip the special ids at the top of the vocabulary.
    (0..n)
        .map(|_| rng.random_range(0..vocab as u32 - 8))
        .collect()
}

fn greedy(prompt: Vec<u32>, steps: usize) -> GenRequest {
    common::greedy_request(prompt, steps, true)
}

/// Single-device burn: tokens and per-step logits.
fn baseline(model: &BakedModel, prompt: &[u32], steps: usize) -> (Vec<u32>, Vec<Vec<f32>>) {
    let s = Settings::default();
    let (device, info) = select_device(&s.shard_b).expect("device");
    let b = ShardB::load(model, 0, device, info, WeightDtype::F32).expect("load");
    common::greedy_tokens(&b, prompt, steps)
}

fn check_split(arch: Arch, k: i64, streams: usize) {
    let dir = baked_model(arch, "int4_sym");
    let model = BakedModel::open(&dir).expect("open");
    let vocab = model.spec().vocab_size;
    let seed = fresh_seed();
    let prompts: Vec<Vec<u32>> = (0..streams)
        .map(|i| prompt(seed + i as u64, 11 + 3 * i, vocab))
        .collect();
    let mut events = Vec::new();
    let mut p = Pipeline::new(&settings(k), &dir, &mut |e| events.push(e)).expect("pipeline");
    let reports = p
        .run(
            prompts.iter().map(|q| greedy(q.clone(), STEPS)).collect(),
            &mut |e| events.push(e),
        )
        .expect("run");
    let split = p.split;
    p.shutdown();
    assert_eq!(reports.len(), streams);
    for (i, (r, q)) in reports.iter().zip(&prompts).enumerate() {
        let (want, want_logits) = baseline(&model, q, STEPS);
        assert_eq!(
            r.tokens, want,
            "{arch:?} k={split} stream {i}/{streams}: tokens differ from the baseline (seed {seed})"
        );
        // A random model can fall into a loop for some prompts; the
        // logits of every step are compared below either way.
        let distinct = want.iter().collect::<std::collections::BTreeSet<_>>().len();
        if distinct <= 4 {
            eprintln!("note: stream {i}'s baseline repeats {distinct} tokens (seed {seed})");
        }
        assert_eq!(r.logits.len(), STEPS);
        for (step, (a, b)) in r.logits.iter().zip(&want_logits).enumerate() {
            let e = rel_err(a, b);
            assert!(
                e <= LOGIT_TOL,
                "{arch:?} k={split} stream {i} step {step}: logits rel err {e:.3e} (seed {seed})"
            );
        }
        assert_eq!(r.finish, "length");
        assert!(r.metrics.ttft_ms > 0.0 && r.metrics.decode_tok_s > 0.0);
    }
    let stages = events
        .iter()
        .filter(|e| matches!(e, Event::Stage(s) if s.a_ms > 0.0 && s.b_ms > 0.0))
        .count();
    assert!(stages >= streams * STEPS, "stage samples: {stages}");
}

#[test]
fn llama_half_split_one_stream_equals_baseline() {
    check_split(Arch::Llama, -1, 1);
}

#[test]
fn llama_half_split_four_streams_each_equal_their_solo_run() {
    check_split(Arch::Llama, -1, 4);
}

#[test]
fn llama_split_one_and_four_streams() {
    check_split(Arch::Llama, 1, 1);
    check_split(Arch::Llama, 1, 4);
}

#[test]
fn qwen2_every_layer_in_shard_a_and_none() {
    let l = BakedModel::open(&baked_model(Arch::Qwen2, "int4_sym"))
        .unwrap()
        .spec()
        .num_layers as i64;
    check_split(Arch::Qwen2, l, 1);
    check_split(Arch::Qwen2, 0, 4);
}

#[test]
fn mistral_static_shapes_forced_on_cpu() {
    // The NPU's path (static prefill + decode variants) on the CPU.
    let dir = baked_model(Arch::Mistral, "int4_sym");
    let model = BakedModel::open(&dir).unwrap();
    let mut s = settings(-1);
    s.shard_a.static_shapes = true;
    let q = prompt(fresh_seed(), 13, model.spec().vocab_size);
    let mut p = Pipeline::new(&s, &dir, &mut |_| {}).expect("pipeline");
    let r = p.run(vec![greedy(q.clone(), 32)], &mut |_| {}).unwrap();
    p.shutdown();
    let (want, _) = baseline(&model, &q, 32);
    assert_eq!(r[0].tokens, want);
}

/// Run one request; after `at` tokens, `fault()` once. The finished report.
fn run_with_fault(
    p: &mut Pipeline,
    req: GenRequest,
    at: usize,
    events: &mut Vec<Event>,
    fault: impl FnOnce(),
) -> hybrid_tui::pipeline::StreamReport {
    p.submit(req).unwrap();
    let mut tokens = 0;
    let mut fault = Some(fault);
    while p.active() > 0 {
        p.poll(&mut |e| {
            if matches!(e, Event::Token { .. }) {
                tokens += 1;
            }
            events.push(e)
        })
        .expect("poll");
        if tokens == at
            && let Some(f) = fault.take()
        {
            f();
        }
    }
    p.take_finished().pop().unwrap()
}

fn kill9(pid: u32) {
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn alive(pid: u32) -> bool {
    // A zombie still has /proc; look at its state.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim().chars().next();
            state != Some('Z')
        })
        .unwrap_or(false)
}

#[test]
fn killing_the_executive_mid_generation_restarts_it_and_the_tokens_stay_the_same() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    let model = BakedModel::open(&dir).unwrap();
    let q = prompt(fresh_seed(), 10, model.spec().vocab_size);
    let (want, _) = baseline(&model, &q, 48);
    let mut events = Vec::new();
    let mut p = Pipeline::new(&settings(-1), &dir, &mut |e| events.push(e)).unwrap();
    let first_pid = p.executive().unwrap().pid;
    let first_segment = p.executive().unwrap().segment.path();
    let r = run_with_fault(&mut p, greedy(q, 48), 20, &mut events, || kill9(first_pid));
    assert_eq!(
        r.tokens, want,
        "the conversation did not survive the restart"
    );
    assert_eq!(p.restarts(), 1);
    let second = p.executive().unwrap().pid;
    assert_ne!(second, first_pid);
    assert!(!alive(first_pid));
    assert!(
        !first_segment.exists(),
        "the dead run's segment was not removed"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Supervisor(SupervisorEvent::Lost { reason, .. }) if reason.contains("SIGKILL")
    )));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Supervisor(SupervisorEvent::Restarting { .. })))
    );
    p.shutdown();
    assert!(!alive(second), "shutdown left the executive running");
}

fn write_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn an_executive_that_never_answers_the_handshake_times_out() {
    let tmp = tempfile::tempdir().unwrap();
    let mute = write_script(tmp.path(), "mute-executive", "#!/bin/sh\nexec sleep 60\n");
    let mut s = settings(-1);
    s.executive.path = mute.display().to_string();
    s.executive.handshake_timeout_s = 1.0;
    s.executive.max_restarts = 0;
    let before = children_of(std::process::id());
    let t0 = Instant::now();
    let err = Pipeline::new(&s, &baked_model(Arch::Llama, "int4_sym"), &mut |_| {})
        .err()
        .expect("must time out");
    // The mute one sleeps 60 s: an answer well before says the timeout
    // worked (a bound far from the 1 s asked for, so load cannot fail it).
    assert!(t0.elapsed() < Duration::from_secs(40));
    assert!(
        matches!(
            err,
            PipelineError::Supervisor(SupervisorError::HandshakeTimeout { .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("handshake") && msg.contains("executive.handshake_timeout_s"),
        "{msg}"
    );
    // Other tests run executives concurrently: look for the mute one only.
    let mute_left = children_of(std::process::id()).into_iter().any(|p| {
        !before.contains(&p)
            && alive(p)
            && std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep\0"))
    });
    assert!(!mute_left, "the mute executive was left running");
}

#[test]
fn an_executive_that_crashes_at_start_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = write_script(
        tmp.path(),
        "broken-executive",
        "#!/bin/sh\necho 'cannot find libfoo.so' >&2\nexit 7\n",
    );
    let mut s = settings(-1);
    s.executive.path = bad.display().to_string();
    let err = Pipeline::new(&s, &baked_model(Arch::Llama, "int4_sym"), &mut |_| {})
        .err()
        .expect("must fail");
    let msg = err.to_string();
    assert!(msg.contains("code 7") && msg.contains("libfoo"), "{msg}");
    let missing = {
        let mut s = settings(-1);
        s.executive.path = "/nonexistent/hybrid-executive".into();
        Pipeline::new(&s, &baked_model(Arch::Llama, "int4_sym"), &mut |_| {})
            .err()
            .unwrap()
            .to_string()
    };
    assert!(
        missing.contains("/nonexistent/hybrid-executive") && missing.contains("executive.path"),
        "{missing}"
    );
}

#[test]
fn a_corrupted_token_slot_is_reported_by_the_executive_not_a_crash() {
    use hybrid_tui::ring::{SlotHeader, kind};
    let dir = baked_model(Arch::Llama, "int4_sym");
    let mut events = Vec::new();
    let mut p = Pipeline::new(&settings(-1), &dir, &mut |e| events.push(e)).unwrap();
    // A token message whose header is garbage (wrong magic, wrong seq).
    let sent = p.executive_mut().unwrap().tokens.send_raw(
        SlotHeader {
            magic: 0x5A5A_5A5A,
            kind: kind::TOKENS,
            count: 1,
            seq: 999,
            payload_len: 4,
            ..Default::default()
        },
        &[1, 0, 0, 0],
    );
    assert!(sent);
    let t0 = Instant::now();
    let mut lost = None;
    while t0.elapsed() < Duration::from_secs(60) && lost.is_none() {
        let _ = p.poll(&mut |e| {
            if let Event::Supervisor(SupervisorEvent::Lost { reason, .. }) = &e {
                lost = Some(reason.clone());
            }
        });
    }
    let reason = lost.expect("the executive did not report the corrupt slot");
    assert!(reason.contains("corrupted slot"), "{reason}");
    assert!(p.executive().is_some(), "a new executive was started");
    p.shutdown();
}

/// `hybrid-tui generate` running a long generation in a child process;
/// returns it and its executive's pid once both run and the segment exists.
// The child is handed to the caller, which waits for it.
#[allow(clippy::zombie_processes)]
fn long_generation(dir: &Path) -> (std::process::Child, u32) {
    let mut parent = std::process::Command::new(env!("CARGO_BIN_EXE_hybrid-tui"))
        .args([
            "--set",
            "shard_a.kv_capacity=100000",
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "hello there",
            "-n",
            "90000",
            "--ignore-eos",
            "--temperature",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ppid = parent.id();
    let t0 = Instant::now();
    loop {
        let kids = children_of(ppid);
        let seg = list_segments()
            .iter()
            .any(|n| n.starts_with(&format!("hybrid-tui.{ppid}.")));
        if let (Some(&k), true) = (kids.first(), seg) {
            // Let it generate for a moment.
            std::thread::sleep(Duration::from_millis(1500));
            return (parent, k);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = parent.kill();
            let _ = parent.wait();
            panic!("the executive never started");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn killing_the_parent_takes_the_executive_down_and_the_next_start_cleans_up() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    let (mut parent, exec) = long_generation(&dir);
    let ppid = parent.id();
    let stale: Vec<String> = list_segments()
        .into_iter()
        .filter(|n| n.starts_with(&format!("hybrid-tui.{ppid}.")))
        .collect();
    assert_eq!(stale.len(), 1, "the running parent's segment");
    // Kill the parent without warning: its segment stays behind.
    kill9(ppid);
    parent.wait().unwrap();
    let t1 = Instant::now();
    while alive(exec) && t1.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!alive(exec), "the executive outlived its parent by 20 s");
    let p = Pipeline::new(&settings(-1), &dir, &mut |_| {}).unwrap();
    assert!(
        list_segments().iter().all(|n| !stale.contains(n)),
        "the next start did not remove the stale segment"
    );
    // (Another test's start may have removed it first; the event itself is
    // checked in tests/process.rs, where nothing else runs at the same time.)
    p.shutdown();
}

#[test]
fn a_hung_executive_is_detected_killed_and_replaced() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    let model = BakedModel::open(&dir).unwrap();
    let q = prompt(fresh_seed(), 9, model.spec().vocab_size);
    let (want, _) = baseline(&model, &q, 24);
    let mut s = settings(-1);
    s.executive.heartbeat_timeout_s = 1.0;
    let mut events = Vec::new();
    let mut p = Pipeline::new(&s, &dir, &mut |e| events.push(e)).unwrap();
    let first = p.executive().unwrap().pid;
    // Frozen, not dead: only the missing heartbeats tell.
    let r = run_with_fault(&mut p, greedy(q, 24), 8, &mut events, || unsafe {
        libc::kill(first as i32, libc::SIGSTOP);
    });
    assert_eq!(r.tokens, want);
    assert!(events.iter().any(|e| matches!(
        e,
        Event::Supervisor(SupervisorEvent::Lost { reason, .. }) if reason.contains("hung")
    )));
    assert!(!alive(first), "the hung executive was not killed");
    p.shutdown();
}

#[test]
fn streamed_text_never_splits_a_character() {
    use hybrid_tui::pipeline::text::TextStream;
    let dir = baked_model(Arch::Llama, "int4_sym");
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let text = "naïve café — 🙂 über straße 東京";
    let ids = tok.encode(text, false).unwrap().get_ids().to_vec();
    assert!(ids.len() > 8);
    let mut ts = TextStream::new();
    let mut out = String::new();
    let mut held_back = 0;
    for &id in &ids {
        let d = ts.push(&tok, id);
        assert!(!d.contains('\u{FFFD}'), "a partial character leaked: {d:?}");
        if d.is_empty() {
            held_back += 1;
        }
        out.push_str(&d);
    }
    out.push_str(&ts.finish());
    assert_eq!(out, tok.decode(&ids, true).unwrap());
    assert!(out.contains("🙂") && out.contains("東京"));
    assert!(
        held_back > 0,
        "no token ended inside a character: the test proves nothing"
    );
}

#[test]
fn sigterm_and_sigint_stop_generate_cleanly() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let (parent, exec) = long_generation(&dir);
        let ppid = parent.id();
        unsafe { libc::kill(ppid as i32, sig) };
        let out = parent.wait_with_output().unwrap();
        // As shells report it: 128 + the signal (SIGTERM 143, SIGINT 130).
        assert_eq!(out.status.code(), Some(128 + sig), "signal {sig}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("interrupted"), "{err}");
        assert!(!alive(exec), "the executive outlived a clean stop");
        assert!(
            list_segments()
                .iter()
                .all(|n| !n.starts_with(&format!("hybrid-tui.{ppid}."))),
            "the segment was left behind"
        );
    }
}

#[test]
fn a_call_that_never_ends_counts_as_a_hang() {
    // A peer that speaks the protocol and reports a call busy for 1000 s.
    let tmp = tempfile::tempdir().unwrap();
    let stuck = write_script(
        tmp.path(),
        "stuck-executive",
        &r#"#!/bin/sh
echo '{"type":"hello","protocol":PROTOCOL,"pid":1,"version":"stuck"}'
read line
echo '{"type":"ready","model_hash":"x","device":"CPU","compile_ms":1.0,"capacities":{"kv_capacity":128,"chunk":8,"hidden":64,"act_slot_bytes":4096,"max_out_bytes":4096}}'
while true; do
  echo '{"type":"stats","phase":"running","uptime_ms":1,"infers":0,"tokens":0,"infer_ms_total":0.0,"last_infer_ms":0.0,"streams":1,"busy_ms":1000000}'
  sleep 0.1
done
"#
            .replace("PROTOCOL", &PROTOCOL_VERSION.to_string()),
    );
    let mut s = settings(-1);
    s.executive.path = stuck.display().to_string();
    s.executive.call_timeout_s = 5.0;
    s.executive.max_restarts = 0;
    let mut events = Vec::new();
    let mut p = Pipeline::new(&s, &baked_model(Arch::Llama, "int4_sym"), &mut |e| {
        events.push(e)
    })
    .expect("the stuck executive starts");
    let t0 = Instant::now();
    let err = loop {
        match p.poll(&mut |e| events.push(e)) {
            Ok(()) => assert!(t0.elapsed() < Duration::from_secs(60), "no hang noticed"),
            Err(e) => break e,
        }
    };
    let msg = err.to_string();
    assert!(
        msg.contains("one shard A call has run") && msg.contains("executive.call_timeout_s"),
        "{msg}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Supervisor(SupervisorEvent::Failed { .. })))
    );
}

/// A kill at spawn (before the handshake) and one in the compile window
/// are retried with backoff like a crash mid-run: the pipeline starts, and
/// the tokens are the baseline's.
#[test]
fn a_crash_during_start_up_is_retried_like_one_mid_run() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    let model = BakedModel::open(&dir).unwrap();
    let q = prompt(fresh_seed(), 7, model.spec().vocab_size);
    let (want, _) = baseline(&model, &q, 16);
    // First start: killed as soon as it is spawned. Second: killed once it
    // has the start request (compiling). Third: left alone.
    let mut starts = 0;
    let mut pid = 0;
    let mut killed = Vec::new();
    let mut events = Vec::new();
    let mut p = Pipeline::new(&settings(-1), &dir, &mut |e| {
        match &e {
            Event::Supervisor(SupervisorEvent::Started { pid: p, .. }) => {
                starts += 1;
                pid = *p;
                if starts == 1 {
                    kill9(pid);
                    killed.push(pid);
                }
            }
            Event::Supervisor(SupervisorEvent::State {
                state: ExecState::Compiling,
            }) if starts == 2 => {
                kill9(pid);
                killed.push(pid);
            }
            _ => {}
        }
        events.push(e);
    })
    .expect("the third start succeeds");
    assert_eq!(starts, 3);
    assert_eq!(p.restarts(), 2);
    let lost: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            Event::Supervisor(SupervisorEvent::Lost { reason, .. }) => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(lost.iter().all(|r| r.contains("SIGKILL")), "{lost:?}");
    for k in &killed {
        assert!(!alive(*k), "the killed executive {k} is still there");
    }
    let r = p.run(vec![greedy(q, 16)], &mut |_| {}).unwrap();
    assert_eq!(r[0].tokens, want);
    p.shutdown();
}

/// Every start killed: the error comes once executive.max_restarts is
/// spent, and says what happened.
#[test]
fn start_up_crashes_give_up_after_max_restarts() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    let mut s = settings(-1);
    s.executive.max_restarts = 2;
    let mut starts = 0;
    let err = Pipeline::new(&s, &dir, &mut |e| {
        if let Event::Supervisor(SupervisorEvent::Started { pid, .. }) = e {
            starts += 1;
            kill9(pid);
        }
    })
    .err()
    .expect("every start is killed");
    assert_eq!(starts, 3, "one start and two restarts");
    assert!(
        matches!(
            err,
            PipelineError::GaveUp {
                restarts: 2,
                max: 2,
                ..
            }
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("SIGKILL") && msg.contains("executive.max_restarts"),
        "{msg}"
    );
}

/// A model whose weights make NaN logits (baked with --allow-non-finite)
/// ends its stream with an error, not with tokens.
#[test]
fn nan_logits_end_the_stream_with_an_error() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    common::copy_model(&common::hf_model(Arch::Llama), &src);
    common::poison(&src, "model.norm.weight", 4, f32::NAN);
    let baked = d.path().join("baked");
    let opts = hybrid_tui::bake::BakeOptions {
        allow_non_finite: true,
        ..Default::default()
    };
    hybrid_tui::bake::bake(&src, &baked, &opts, &mut |_| {}).unwrap();
    let vocab = BakedModel::open(&baked).unwrap().spec().vocab_size;
    let mut p = Pipeline::new(&settings(-1), &baked, &mut |_| {}).unwrap();
    let r = p
        .run(vec![greedy(prompt(fresh_seed(), 5, vocab), 8)], &mut |_| {})
        .unwrap();
    p.shutdown();
    assert_eq!(r[0].finish, Finish::Error);
    assert!(r[0].tokens.is_empty(), "tokens from NaN: {:?}", r[0].tokens);
    let e = r[0].error.clone().unwrap_or_default();
    assert!(e.contains("NaN or infinite"), "{e}");
}

/// 0 new tokens is refused; a stream that fills the KV capacity says so
/// ("context", not "length").
#[test]
fn lengths_say_what_happened() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    let vocab = BakedModel::open(&dir).unwrap().spec().vocab_size;
    let mut s = settings(-1);
    s.shard_a.kv_capacity = 24;
    let mut p = Pipeline::new(&s, &dir, &mut |_| {}).unwrap();
    let err = p
        .submit(greedy(prompt(fresh_seed(), 5, vocab), 0))
        .expect_err("0 tokens");
    assert!(matches!(err, PipelineError::NothingToGenerate), "{err}");
    assert!(err.to_string().contains("at least 1"), "{err}");
    let q = prompt(fresh_seed(), 5, vocab);
    let r = p.run(vec![greedy(q.clone(), 100)], &mut |_| {}).unwrap();
    assert_eq!(r[0].finish, Finish::Context);
    assert_eq!(r[0].tokens.len(), 24 - 5, "generated up to the capacity");
    let r = p.run(vec![greedy(q, 19)], &mut |_| {}).unwrap();
    assert_eq!(r[0].finish, Finish::Length, "the budget ran out first");
    p.shutdown();
}
