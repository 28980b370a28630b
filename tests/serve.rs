//! `hybrid-tui serve` driven over loopback HTTP: bad input, load,
//! disconnects, a killed executive, shutdown; and the official `openai`
//! Python client (tests/openai_client.py) against the real binary.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{baked_model, children_of, test_bert};
use hybrid_tui::model::Arch;
use serde_json::{Value, json};

/// A running server with its own XDG directories; killed if a test fails.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<String>>>,
    _home: tempfile::TempDir,
}

impl Server {
    fn start(model: &Path, args: &[&str]) -> Server {
        let home = tempfile::tempdir().expect("home");
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("hybrid-tui"))
            .args(["serve", "--model"])
            .arg(model)
            .args(["--port", "0"])
            .args(args)
            .env("XDG_CONFIG_HOME", home.path().join("config"))
            .env("XDG_DATA_HOME", home.path().join("data"))
            .env("XDG_STATE_HOME", home.path().join("state"))
            .env("XDG_CACHE_HOME", home.path().join("cache"))
            .env_remove("HYBRID_TUI_PROFILE")
            .env_remove("HYBRID_TUI_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hybrid-tui serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split('/').next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no 'listening on' line: {:?}", log.lock().unwrap()));
        let s = Server {
            child,
            base: format!("http://{addr}"),
            log,
            _home: home,
        };
        s.wait_ready();
        s
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn wait_ready(&self) {
        let t0 = Instant::now();
        loop {
            if let Ok(r) = ureq::get(&self.url("/health")).call() {
                assert_eq!(r.status(), 200);
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(120),
                "not ready in 120 s: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn health(&self) -> Value {
        let r = match ureq::get(&self.url("/health")).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("/health: {e}"),
        };
        r.into_json().expect("health json")
    }

    /// `/metrics` as text.
    fn metrics(&self) -> String {
        ureq::get(&self.url("/metrics"))
            .call()
            .expect("/metrics")
            .into_string()
            .expect("text")
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait; the exit status and the log.
    fn stop(self) -> (std::process::ExitStatus, Vec<String>) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.exited()
    }

    /// Wait for the server to exit by itself; the exit status and the log.
    fn exited(mut self) -> (std::process::ExitStatus, Vec<String>) {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("wait") {
                std::thread::sleep(Duration::from_millis(100));
                let log = self.log.lock().unwrap().clone();
                return (st, log);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "still running after 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POST a JSON body; the status and the JSON answer (errors included).
fn post(s: &Server, path: &str, body: &str) -> (u16, Value) {
    post_with(s, path, body, None)
}

fn post_with(s: &Server, path: &str, body: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = ureq::post(&s.url(path)).set("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let r = match req.send_string(body) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{path}: {e}"),
    };
    let status = r.status();
    let text = r.into_string().expect("body");
    let v = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, v)
}

/// An OpenAI error body: every key there, and the status, param and code.
fn assert_error(
    got: (u16, Value),
    status: u16,
    param: Option<&str>,
    code: Option<&str>,
    says: &str,
) {
    let (st, v) = got;
    assert_eq!(st, status, "{v}");
    let e = &v["error"];
    for k in ["message", "type", "param", "code"] {
        assert!(e.get(k).is_some(), "no error.{k} in {v}");
    }
    assert_eq!(e["param"].as_str(), param, "{v}");
    if let Some(c) = code {
        assert_eq!(e["code"], c, "{v}");
    }
    let m = e["message"].as_str().unwrap_or_default();
    assert!(m.contains(says), "'{m}' does not say '{says}'");
}

fn user(text: &str) -> Value {
    json!([{"role": "user", "content": text}])
}

fn model() -> PathBuf {
    baked_model(Arch::Qwen2, "int4_sym")
}

/// A bad request: path, body, and the status, param, code and words of its error.
type Case<'a> = (
    &'a str,
    String,
    u16,
    Option<&'a str>,
    Option<&'a str>,
    &'a str,
);

#[test]
fn bad_requests_get_openai_errors_and_the_server_keeps_answering() {
    let s = Server::start(
        &model(),
        &[
            "--set",
            "shard_a.kv_capacity=64",
            "--set",
            "server.max_body_kib=64",
        ],
    );
    let id = model().file_name().unwrap().to_string_lossy().into_owned();
    let chat = "/v1/chat/completions";
    let cases: Vec<Case> = vec![
        (chat, r#"{"messages": ["#.into(), 400, None, None, "not valid JSON"),
        (chat, "[1, 2]".into(), 400, None, None, "JSON object"),
        (chat, "{}".into(), 400, Some("messages"), None, "messages is missing"),
        (chat, json!({"messages": "hi"}).to_string(), 400, Some("messages"), None, "messages"),
        (chat, json!({"messages": user("hi"), "temperature": "hot"}).to_string(), 400, Some("temperature"), None, "temperature"),
        (chat, json!({"messages": user("hi"), "max_tokens": -3}).to_string(), 400, Some("max_tokens"), None, "max_tokens"),
        (chat, json!({"messages": user("hi"), "max_tokens": 0}).to_string(), 400, Some("max_tokens"), None, "at least 1"),
        (chat, json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(), 400, Some("messages[0].role"), None, "'wizard' is not a role"),
        (chat, json!({"messages": [{"role": "user"}]}).to_string(), 400, Some("messages[0].content"), None, "missing"),
        (chat, json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}).to_string(), 400, Some("messages[0].content[0].type"), Some("unsupported_parameter"), "only text parts"),
        (chat, json!({"messages": []}).to_string(), 400, Some("messages"), None, "empty"),
        (chat, json!({"messages": user("hi"), "n": 2}).to_string(), 400, Some("n"), Some("unsupported_parameter"), "n must be 1"),
        (chat, json!({"messages": user("hi"), "logprobs": true}).to_string(), 400, Some("logprobs"), Some("unsupported_parameter"), "log probabilities"),
        (chat, json!({"messages": user("hi"), "tools": [{"type": "function", "function": {"name": "f"}}]}).to_string(), 400, Some("tools"), Some("unsupported_parameter"), "tool"),
        (chat, json!({"messages": user("hi"), "response_format": {"type": "json_schema", "json_schema": {}}}).to_string(), 400, Some("response_format"), Some("unsupported_parameter"), "json_schema"),
        (chat, json!({"messages": user("hi"), "logit_bias": {"5": 10}}).to_string(), 400, Some("logit_bias"), Some("unsupported_parameter"), "logit_bias"),
        (chat, json!({"messages": user("hi"), "temperature": 5}).to_string(), 400, Some("temperature"), None, "[0, 2]"),
        (chat, json!({"messages": user("hi"), "top_p": 0}).to_string(), 400, Some("top_p"), None, "(0, 1]"),
        (chat, json!({"messages": user("hi"), "presence_penalty": 3}).to_string(), 400, Some("presence_penalty"), None, "[-2, 2]"),
        (chat, json!({"messages": user("hi"), "stop": ["a", "b", "c", "d", "e"]}).to_string(), 400, Some("stop"), None, "at most 4"),
        (chat, json!({"messages": user("hi"), "stop": 7}).to_string(), 400, Some("stop"), None, "string or a list"),
        (chat, json!({"messages": user("hi"), "model": "gpt-4o"}).to_string(), 404, Some("model"), Some("model_not_found"), &id),
        (chat, json!({"messages": user("hi"), "stream_options": {"include_usage": true}}).to_string(), 400, Some("stream_options"), None, "stream: true"),
        (chat, json!({"messages": user(&"many words here ".repeat(40))}).to_string(), 400, Some("messages"), Some("context_length_exceeded"), "context holds 64"),
        (chat, format!(r#"{{"messages": [{{"role": "user", "content": "{}"}}]}}"#, "x".repeat(100 * 1024)), 413, None, Some("request_too_large"), "64 KiB"),
        ("/v1/completions", json!({"prompt": [1, 2, 3]}).to_string(), 400, Some("prompt"), Some("unsupported_parameter"), "token ids"),
        ("/v1/completions", json!({"prompt": ["a", "b"]}).to_string(), 400, Some("prompt"), Some("unsupported_parameter"), "one prompt"),
        ("/v1/completions", json!({"max_tokens": 3}).to_string(), 400, Some("prompt"), None, "prompt is missing"),
        ("/v1/completions", json!({"prompt": "hi", "echo": true}).to_string(), 400, Some("echo"), Some("unsupported_parameter"), "echo"),
        ("/v1/completions", json!({"prompt": ""}).to_string(), 400, Some("prompt"), None, "empty"),
        ("/v1/nothing", "{}".into(), 404, None, Some("unknown_url"), "no endpoint POST /v1/nothing"),
    ];
    for (path, body, status, param, code, says) in cases {
        let got = post(&s, path, &body);
        assert_error(got, status, param, code, says);
        assert_eq!(s.health()["status"], "ok", "after {path} {body:.80}");
    }
    // A wrong method is OpenAI-shaped too.
    let r = ureq::get(&s.url(chat)).call();
    match r {
        Err(ureq::Error::Status(405, r)) => {
            let v: Value = r.into_json().expect("json");
            assert!(
                v["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("GET is not allowed"),
                "{v}"
            );
        }
        other => panic!("GET {chat}: {other:?}"),
    }
    // And a good request still works after all of that; asking for no
    // tools (an empty list, tool_choice "none") is no tool calling.
    let (st, v) = post(
        &s,
        chat,
        &json!({"messages": user("hi"), "max_tokens": 3, "tools": [], "tool_choice": "none", "user": "u1"}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    let (status, log) = s.stop();
    assert_eq!(status.code(), Some(143), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("panicked")), "{log:?}");
}

/// Pick a prompt that the tiny test model answers with at least `n` tokens
/// (its random weights may end early on an eos).
fn chat_body(i: usize, max_tokens: usize, stream: bool) -> String {
    json!({
        "messages": [
            {"role": "system", "content": "You answer briefly."},
            {"role": "user", "content": format!("question number {i}: what is in the box?")},
        ],
        "max_tokens": max_tokens,
        "temperature": 0.8,
        "seed": i,
        "stream": stream,
    })
    .to_string()
}

#[test]
fn two_hundred_requests_from_sixteen_clients_complete_with_their_usage() {
    let s = Server::start(&model(), &["--parallel", "4", "--queue", "64"]);
    let failures = Arc::new(Mutex::new(Vec::new()));
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for c in 0..16 {
            let (s, failures) = (&s, failures.clone());
            scope.spawn(move || {
                let mut i = c;
                while i < 200 {
                    let max = 1 + i % 8;
                    let (st, v) = post(s, "/v1/chat/completions", &chat_body(i, max, false));
                    let u = &v["usage"];
                    let (p, n, t) = (
                        u["prompt_tokens"].as_u64().unwrap_or(0),
                        u["completion_tokens"].as_u64().unwrap_or(0),
                        u["total_tokens"].as_u64().unwrap_or(0),
                    );
                    let finish = v["choices"][0]["finish_reason"].as_str().unwrap_or("");
                    let ok = st == 200
                        && p > 10
                        && n >= 1
                        && n as usize <= max
                        && t == p + n
                        && (finish == "stop" || (finish == "length" && n as usize == max));
                    if !ok {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("request {i}: {st} {v}"));
                    }
                    i += 16;
                }
            });
        }
    });
    let took = t0.elapsed();
    let f = failures.lock().unwrap();
    assert!(
        f.is_empty(),
        "{} of 200 failed: {:?}",
        f.len(),
        &f[..f.len().min(5)]
    );
    // Every request logged once, and counted.
    let metrics = s.metrics();
    assert!(
        metrics.contains("hybrid_tui_requests_total{status=\"200\"} 200"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hybrid_tui_requests_in_flight 0"),
        "{metrics}"
    );
    eprintln!("200 requests from 16 clients in {took:?}");
    let (status, log) = s.stop();
    assert_eq!(status.code(), Some(143));
    let lines = log
        .iter()
        .filter(|l| l.contains("POST /v1/chat/completions 200"))
        .count();
    assert_eq!(lines, 200, "one log line per request");
}

/// Read SSE `data:` lines until `n` have come, then drop the connection.
fn read_events(r: ureq::Response, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = BufReader::new(r.into_reader()).lines();
    while out.len() < n {
        match lines.next() {
            Some(Ok(l)) => {
                if let Some(d) = l.strip_prefix("data: ") {
                    out.push(d.to_string());
                }
            }
            _ => break,
        }
    }
    out
}

#[test]
fn clients_that_disconnect_mid_stream_leave_no_stream_running() {
    let s = Server::start(&model(), &["--parallel", "4"]);
    let body = json!({"prompt": "once upon a time", "max_tokens": 900, "ignore_eos": true, "stream": true, "temperature": 1.0, "seed": 3}).to_string();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                let r = ureq::post(&s.url("/v1/completions"))
                    .set("Content-Type", "application/json")
                    .send_string(&body)
                    .expect("stream");
                let got = read_events(r, 3);
                assert_eq!(got.len(), 3, "{got:?}");
            });
        }
    });
    // The requests are gone and the engine has ended every stream.
    let t0 = Instant::now();
    loop {
        let h = s.health();
        if h["requests_running"] == 0 && h["requests_queued"] == 0 && h["streams_cancelling"] == 0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "streams still running: {h}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let metrics = s.metrics();
    let cancelled = metrics
        .lines()
        .find_map(|l| l.strip_prefix("hybrid_tui_streams_cancelled_total "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert_eq!(cancelled, 8.0, "{metrics}");
    let (_, log) = s.stop();
    assert_eq!(
        log.iter()
            .filter(|l| l.contains("finish=disconnected"))
            .count(),
        8,
        "{log:?}"
    );
}

#[test]
fn a_killed_executive_costs_latency_not_requests() {
    let s = Server::start(&model(), &["--parallel", "4", "--queue", "64"]);
    let done = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|scope| {
        for c in 0..12 {
            let (s, done) = (&s, done.clone());
            scope.spawn(move || {
                let stream = c % 2 == 0;
                // Long enough that the kill below lands mid-run (60 tokens
                // each were all done within 300 ms on a fast 2-core VM).
                let body = chat_body(c, 200, stream);
                if stream {
                    let r = ureq::post(&s.url("/v1/chat/completions"))
                        .set("Content-Type", "application/json")
                        .send_string(&body)
                        .expect("stream");
                    let events = read_events(r, usize::MAX);
                    done.lock()
                        .unwrap()
                        .push(events.last().cloned().unwrap_or_default());
                } else {
                    let (st, v) = post(s, "/v1/chat/completions", &body);
                    done.lock().unwrap().push(if st == 200 {
                        "[DONE]".into()
                    } else {
                        v.to_string()
                    });
                }
            });
        }
        // Kill shard A's executive while they run: once the server says
        // requests are running, not after a fixed wait.
        let t0 = Instant::now();
        while s.health()["requests_running"] == 0 {
            assert!(t0.elapsed() < Duration::from_secs(20), "no request started");
            std::thread::sleep(Duration::from_millis(5));
        }
        let kids = children_of(s.pid());
        assert!(!kids.is_empty(), "no executive under the server");
        for k in kids {
            unsafe { libc::kill(k as i32, libc::SIGKILL) };
        }
    });
    let done = done.lock().unwrap();
    assert_eq!(done.len(), 12);
    for d in done.iter() {
        assert_eq!(d, "[DONE]", "a request did not complete: {d}");
    }
    let metrics = s.metrics();
    assert!(
        metrics.contains("hybrid_tui_executive_restarts_total 1"),
        "{metrics}"
    );
    let (_, log) = s.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("executive was lost (the executive was killed (SIGKILL))")),
        "{log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("restarting the executive (attempt 1)")),
        "{log:?}"
    );
}

#[test]
fn shutdown_drains_requests_refuses_new_ones_and_leaves_nothing() {
    let s = Server::start(&model(), &["--set", "server.drain_s=20"]);
    let pid = s.pid();
    // About a second of tokens, so the request is still running when the
    // signal comes (the signal is seen within 100 ms).
    let body = json!({"prompt": "the long story", "max_tokens": 1000, "ignore_eos": true, "stream": true, "temperature": 1.0, "seed": 5}).to_string();
    let r = ureq::post(&s.url("/v1/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .expect("stream");
    let mut reader = BufReader::new(r.into_reader());
    let mut first = String::new();
    reader.read_line(&mut first).expect("first event");
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    std::thread::sleep(Duration::from_millis(200));
    // New requests: 503 while the one in flight finishes.
    let (st, v) = post(&s, "/v1/completions", &json!({"prompt": "hi"}).to_string());
    assert_error((st, v), 503, None, Some("unavailable"), "shutting down");
    let mut rest = String::new();
    reader
        .read_to_string(&mut rest)
        .expect("rest of the stream");
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");
    let (status, log) = s.stop();
    assert_eq!(status.code(), Some(143), "{log:?}");
    // No segment and no executive of this server are left.
    let segs: Vec<_> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with(&format!("hybrid-tui.{pid}."))
                })
                .collect()
        })
        .unwrap_or_default();
    assert!(segs.is_empty(), "segments left: {segs:?}");
    assert!(children_of(pid).is_empty());
}

#[test]
fn a_full_queue_answers_429_with_retry_after() {
    let s = Server::start(&model(), &["--parallel", "1", "--queue", "1"]);
    let body =
        json!({"prompt": "a long one", "max_tokens": 600, "ignore_eos": true, "temperature": 0})
            .to_string();
    let statuses = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let r = ureq::post(&s.url("/v1/completions"))
                    .set("Content-Type", "application/json")
                    .send_string(&body);
                let got = match r {
                    Ok(r) => (r.status(), None, String::new()),
                    Err(ureq::Error::Status(code, r)) => (
                        code,
                        r.header("Retry-After").map(str::to_string),
                        r.into_string().unwrap_or_default(),
                    ),
                    Err(e) => panic!("{e}"),
                };
                statuses.lock().unwrap().push(got);
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    let busy: Vec<_> = statuses.iter().filter(|s| s.0 == 429).collect();
    // One runs, one waits, the other two are turned away.
    assert_eq!((ok, busy.len()), (2, 2), "{statuses:?}");
    for (_, retry, body) in busy {
        assert_eq!(retry.as_deref(), Some("1"), "{body}");
        let v: Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"]["code"], "queue_full", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("--parallel"),
            "{v}"
        );
    }
    assert_eq!(s.health()["status"], "ok");
}

#[test]
fn a_failure_mid_stream_arrives_as_an_sse_error_event() {
    // No restarts allowed: killing the executive ends every stream.
    let s = Server::start(&model(), &["--set", "executive.max_restarts=0"]);
    let body = json!({"prompt": "going on", "max_tokens": 1000, "ignore_eos": true, "stream": true, "temperature": 0}).to_string();
    let r = ureq::post(&s.url("/v1/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .expect("stream");
    let mut lines = BufReader::new(r.into_reader()).lines();
    let first = lines.next().expect("a first line").expect("read");
    assert!(first.starts_with("data: "), "{first}");
    for k in children_of(s.pid()) {
        unsafe { libc::kill(k as i32, libc::SIGKILL) };
    }
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let at = rest
        .iter()
        .position(|l| l == "event: error")
        .unwrap_or_else(|| {
            panic!(
                "no error event: {:?}",
                &rest[rest.len().saturating_sub(5)..]
            )
        });
    let data = rest[at + 1].strip_prefix("data: ").expect("its data");
    let v: Value = serde_json::from_str(data).expect("error json");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("executive"), "{v}");
    assert!(
        !rest.iter().any(|l| l == "data: [DONE]"),
        "an error stream does not end with [DONE]"
    );
    // The engine cannot go on: the server says so and exits 1, leaving nothing.
    let pid = s.pid();
    let (status, log) = s.exited();
    assert_eq!(status.code(), Some(1), "{log:?}");
    assert!(
        log.iter().any(|l| l.contains("error: the engine stopped")),
        "{log:?}"
    );
    assert!(children_of(pid).is_empty());
}

/// The Python virtualenv with the `openai` package (made by scripts/test).
fn openai_python() -> Option<PathBuf> {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-test/bin/python");
    let ok = py.exists()
        && Command::new(&py)
            .args(["-c", "import openai"])
            .status()
            .is_ok_and(|s| s.success());
    if ok {
        return Some(py);
    }
    if std::env::var("HYBRID_TUI_REQUIRE_OPENAI").is_ok_and(|v| v == "1") {
        panic!(
            "HYBRID_TUI_REQUIRE_OPENAI=1 but .venv-test has no openai package (scripts/test makes it)"
        );
    }
    eprintln!("skipped: no .venv-test with the openai package (run scripts/test)");
    None
}

#[test]
fn embeddings_answer_in_openai_shapes_and_refuse_what_they_cannot_do() {
    let bert = test_bert();
    let setting = format!("embed.model={}", bert.display());
    let s = Server::start(&model(), &["--set", &setting]);
    let embed_id = bert.display().to_string();
    let (st, v) = post(
        &s,
        "/v1/embeddings",
        &json!({"input": ["the sea", "a longer sentence about the sea and the sky"], "model": embed_id}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    let data = v["data"].as_array().expect("data");
    assert_eq!(data.len(), 2, "{v}");
    let a: Vec<f64> = serde_json::from_value(data[0]["embedding"].clone()).expect("floats");
    let b: Vec<f64> = serde_json::from_value(data[1]["embedding"].clone()).expect("floats");
    assert_eq!(a.len(), 64, "the tiny preset's hidden size");
    let norm = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-4, "unit vectors: {norm}");
    assert!(a != b, "different texts, different vectors");
    assert_eq!(data[1]["index"], 1);
    let tokens = v["usage"]["prompt_tokens"].as_u64().expect("usage");
    assert!(tokens >= 8, "{v}");
    assert_eq!(v["usage"]["total_tokens"], tokens);
    // The same text alone: the same vector (batching does not change it).
    let (_, one) = post(
        &s,
        "/v1/embeddings",
        &json!({"input": "the sea"}).to_string(),
    );
    let alone: Vec<f64> =
        serde_json::from_value(one["data"][0]["embedding"].clone()).expect("floats");
    let d = alone
        .iter()
        .zip(&a)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(d < 1e-5, "max |Δ| {d}");
    // Both models are listed; each endpoint refuses the other's.
    let models = ureq::get(&s.url("/v1/models"))
        .call()
        .expect("models")
        .into_json::<Value>()
        .expect("json");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 2, "{models}");
    assert!(ids.contains(&embed_id.as_str()), "{models}");
    let chat_id = ids
        .iter()
        .find(|i| **i != embed_id)
        .expect("the chat model")
        .to_string();
    let cases: Vec<Case> = vec![
        (
            "/v1/embeddings",
            json!({"input": "x", "model": chat_id}).to_string(),
            400,
            Some("model"),
            None,
            "chat model",
        ),
        (
            "/v1/embeddings",
            json!({"input": "x", "model": "nope"}).to_string(),
            404,
            Some("model"),
            Some("model_not_found"),
            "nope",
        ),
        (
            "/v1/embeddings",
            json!({"input": [1, 2, 3]}).to_string(),
            400,
            Some("input"),
            Some("unsupported_parameter"),
            "token ids",
        ),
        (
            "/v1/embeddings",
            json!({"input": []}).to_string(),
            400,
            Some("input"),
            None,
            "empty list",
        ),
        (
            "/v1/embeddings",
            json!({"input": ["a", 7]}).to_string(),
            400,
            Some("input[1]"),
            None,
            "must be a string",
        ),
        (
            "/v1/embeddings",
            json!({"model": embed_id}).to_string(),
            400,
            Some("input"),
            None,
            "missing",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "encoding_format": "hex"}).to_string(),
            400,
            Some("encoding_format"),
            None,
            "base64",
        ),
        (
            "/v1/embeddings",
            json!({"input": "a", "dimensions": 3}).to_string(),
            400,
            Some("dimensions"),
            Some("unsupported_parameter"),
            "64 dimensions",
        ),
        (
            "/v1/chat/completions",
            json!({"model": embed_id, "messages": [{"role": "user", "content": "hi"}]}).to_string(),
            400,
            Some("model"),
            None,
            "embedding model",
        ),
    ];
    for (path, body, status, param, code, says) in cases {
        assert_error(post(&s, path, &body), status, param, code, says);
    }
    // One embedding executive beside shard A's; gone with the server.
    let kids = children_of(s.pid());
    assert_eq!(
        kids.len(),
        2,
        "shard A's and the embedding model's executives: {kids:?}"
    );
    let (status, _) = s.stop();
    assert_eq!(status.code(), Some(143), "SIGTERM");
    std::thread::sleep(Duration::from_millis(300));
    for pid in kids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "executive {pid} left behind"
        );
    }
}

#[test]
fn the_official_openai_client_works_against_the_server() {
    let Some(py) = openai_python() else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let key_file = home.path().join("key");
    std::fs::write(&key_file, "sk-test-0123456789\n").unwrap();
    let bert = format!("embed.model={}", test_bert().display());
    let s = Server::start(
        &model(),
        &["--api-key-file", key_file.to_str().unwrap(), "--set", &bert],
    );
    // Without the key: 401 from everything but /health.
    let got = post(&s, "/v1/completions", &json!({"prompt": "hi"}).to_string());
    assert_error(
        got,
        401,
        None,
        Some("invalid_api_key"),
        "Authorization: Bearer",
    );
    let got = post_with(
        &s,
        "/v1/completions",
        &json!({"prompt": "hi"}).to_string(),
        Some("sk-wrong"),
    );
    assert_error(got, 401, None, Some("invalid_api_key"), "not this server's");
    assert_eq!(s.health()["status"], "ok");
    let out = Command::new(py)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py"))
        .args([&format!("{}/v1", s.base), "sk-test-0123456789"])
        .arg(model())
        .arg(assert_cmd::cargo::cargo_bin("hybrid-tui"))
        .env("XDG_CACHE_HOME", home.path().join("cache"))
        .env("XDG_STATE_HOME", home.path().join("state"))
        .output()
        .expect("python");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("openai-client: all checks passed"), "{text}");
    drop(s);
}
