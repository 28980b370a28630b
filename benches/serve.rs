//! `hybrid-tui serve` under concurrent clients: requests/s, aggregate
//! generated tok/s and time to first token (p50/p99), at each client count
//! and `--parallel` setting.
//!
//! `cargo bench --profile dev --bench serve` (the server is the `hybrid-tui`
//! binary cargo built beside this bench, run with the usual settings
//! layers). Streaming completions over loopback, fixed length (`ignore_eos`),
//! usage from the server.
//!
//! - HYBRID_BENCH_PRESET: a make-test-model preset (default llama-3.2-1b)
//! - HYBRID_BENCH_MODEL: a baked directory to use instead of making one
//! - HYBRID_BENCH_CLIENTS: "1,4,16"
//! - HYBRID_BENCH_PARALLEL: `--parallel` values to try, "4"
//! - HYBRID_BENCH_REQUESTS: requests per client (default 2)
//! - HYBRID_BENCH_TOKENS: max_tokens per request (default 32)

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

fn env<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn list(k: &str, d: &str) -> Vec<usize> {
    env(k, d.to_string())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

const BIN: &str = env!("CARGO_BIN_EXE_hybrid-tui");

/// The preset made and baked once, by the binary itself.
fn model_dir(preset: &str) -> PathBuf {
    if let Ok(d) = std::env::var("HYBRID_BENCH_MODEL") {
        return PathBuf::from(d);
    }
    let root = std::env::temp_dir().join("hybrid-tui-bench");
    let hf = root.join(format!("hf-llama-{preset}"));
    let baked = root.join(format!("baked-llama-{preset}"));
    if !baked.join("manifest.toml").exists() {
        if !hf.join("config.json").exists() {
            let st = Command::new(BIN)
                .args([
                    "make-test-model",
                    "--arch",
                    "llama",
                    "--preset",
                    preset,
                    "--seed",
                    "1",
                    "--out",
                ])
                .arg(&hf)
                .status()
                .expect("make-test-model");
            assert!(st.success());
        }
        let st = Command::new(BIN)
            .args(["bake", "--model"])
            .arg(&hf)
            .arg("--out")
            .arg(&baked)
            .status()
            .expect("bake");
        assert!(st.success());
    }
    baked
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(model: &Path, parallel: usize) -> Server {
        let mut child = Command::new(BIN)
            .args(["serve", "--port", "0", "--queue", "256", "--parallel"])
            .arg(parallel.to_string())
            .arg("--model")
            .arg(model)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let _ = tx.send(rest.split('/').next().unwrap_or_default().to_string());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("listening");
        let base = format!("http://{addr}");
        let t0 = Instant::now();
        while ureq::get(&format!("{base}/health")).call().is_err() {
            assert!(t0.elapsed() < Duration::from_secs(600), "not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        Server { child, base }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One streamed request: (time to first token, completion tokens).
fn request(base: &str, i: usize, tokens: usize) -> (Duration, u64) {
    let body = json!({
        "prompt": format!("Request {i}: the quick brown fox jumps over the lazy dog and then"),
        "max_tokens": tokens,
        "ignore_eos": true,
        "temperature": 0.7,
        "seed": i,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    let t0 = Instant::now();
    let r = ureq::post(&format!("{base}/v1/completions"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .expect("request");
    let mut ttft = None;
    let mut n = 0;
    for line in BufReader::new(r.into_reader())
        .lines()
        .map_while(Result::ok)
    {
        let Some(d) = line.strip_prefix("data: ") else {
            continue;
        };
        if d == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(d).expect("chunk");
        // A chunk per token (its text may be empty: the random model's ids
        // often decode to nothing).
        if ttft.is_none() && v["choices"][0].is_object() {
            ttft = Some(t0.elapsed());
        }
        if let Some(c) = v["usage"]["completion_tokens"].as_u64() {
            n = c;
        }
    }
    (ttft.unwrap_or_else(|| t0.elapsed()), n)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let preset: String = env("HYBRID_BENCH_PRESET", "llama-3.2-1b".to_string());
    let clients = list("HYBRID_BENCH_CLIENTS", "1,4,16");
    let parallels = list("HYBRID_BENCH_PARALLEL", "4");
    let per_client: usize = env("HYBRID_BENCH_REQUESTS", 2);
    let tokens: usize = env("HYBRID_BENCH_TOKENS", 32);
    let model = model_dir(&preset);
    println!(
        "serve bench: {preset}, {tokens} tokens per request, {per_client} requests per client, streaming completions"
    );
    println!("| --parallel | clients | requests | req/s | gen tok/s | TTFT p50 ms | TTFT p99 ms |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &parallel in &parallels {
        let server = Server::start(&model, parallel);
        // One warm-up request.
        request(&server.base, 0, 4);
        for &c in &clients {
            let t0 = Instant::now();
            let results: Vec<(Duration, u64)> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..c)
                    .map(|k| {
                        let base = server.base.clone();
                        s.spawn(move || {
                            (0..per_client)
                                .map(|j| request(&base, 1 + k * per_client + j, tokens))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .flat_map(|h| h.join().expect("client"))
                    .collect()
            });
            let wall = t0.elapsed().as_secs_f64();
            let mut ttft: Vec<f64> = results.iter().map(|r| r.0.as_secs_f64() * 1e3).collect();
            ttft.sort_by(f64::total_cmp);
            let generated: u64 = results.iter().map(|r| r.1).sum();
            println!(
                "| {parallel} | {c} | {} | {:.2} | {:.1} | {:.0} | {:.0} |",
                results.len(),
                results.len() as f64 / wall,
                generated as f64 / wall,
                pct(&ttft, 0.5),
                pct(&ttft, 0.99)
            );
        }
    }
}
