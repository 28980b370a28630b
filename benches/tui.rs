//! The workbench's cost: frame time and CPU use.
//!
//! `cargo bench --bench tui` (or the test-profile build of it):
//! 1. frame time: `view::render` of a full screen (110×32 and 200×60) with a
//!    long conversation and every pane filled, 2000 frames each;
//! 2. idle: the real loop with the real engine (tiny test model) and the
//!    telemetry sampler, no input, for HYBRID_BENCH_IDLE_S seconds (default
//!    10): CPU of the UI thread, of the whole process, and of the executive;
//! 3. streaming: the same while answering (greedy, 256 tokens).

use std::time::{Duration, Instant};

use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use futures_util::StreamExt;
use hybrid_tui::bake::{BakeOptions, bake};
use hybrid_tui::config::Settings;
use hybrid_tui::engine::{Engine, EngineEvent};
use hybrid_tui::hw::memory::Memory;
use hybrid_tui::hw::sampler::{self, CpuUse, Pids};
use hybrid_tui::hw::{Reading, Root};
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};
use hybrid_tui::pipeline::Event;
use hybrid_tui::shard_b::sampling::SamplingParams;
use hybrid_tui::tui::app::{App, AppEvent, ChatMessage, Role};
use hybrid_tui::tui::keymap::Keymap;
use hybrid_tui::tui::{run_loop, view};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn cpu_secs(who: libc::c_int) -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn proc_cpu_secs(pid: u32) -> f64 {
    let tick = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let f: Vec<&str> = s.rsplit(')').next()?.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / tick)
        })
        .unwrap_or(0.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn app(commands: Box<dyn FnMut(hybrid_tui::engine::Command) + Send>) -> App {
    let keymap = Keymap::new(&Settings::default().keys.map()).expect("keymap");
    let mut a = App::new("cpu", "bench", keymap, commands);
    a.sampling = SamplingParams::greedy();
    a
}

fn frames() {
    let mut a = app(Box::new(|_| {}));
    let para = "The quick brown fox jumps over the lazy dog, and then some more words follow to make a long line that wraps. ";
    for i in 0..40 {
        a.messages.push(ChatMessage {
            role: if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            },
            text: para.repeat(1 + i % 5),
            note: Some("64 tokens · 31.2 tok/s · first token 80 ms".into()),
            sources: Vec::new(),
        });
    }
    let mut snap = sampler::Sampler::new(Root::live(), Pids::new()).sample();
    snap.cpu = Reading::Ok(CpuUse {
        total: 37.0,
        per_core: vec![12.0, 80.0, 40.0, 5.0],
        mhz: 2400,
    });
    snap.memory = Reading::Ok(Memory {
        total: 24 << 30,
        available: 18 << 30,
        swap_total: 0,
        swap_free: 0,
    });
    a.on_event(AppEvent::Telemetry(Box::new(snap)));
    for (w, h) in [(110u16, 32u16), (200, 60)] {
        let mut term = Terminal::new(TestBackend::new(w, h)).expect("terminal");
        let mut times = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            term.draw(|f| view::render(f, &a)).expect("draw");
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "frame {w}×{h}: p50 {:.3} ms · p99 {:.3} ms · max {:.3} ms (2000 frames, 40 messages)",
            pct(&mut times, 0.5),
            pct(&mut times, 0.99),
            pct(&mut times, 1.0)
        );
    }
}

fn model() -> std::path::PathBuf {
    let root = std::env::temp_dir().join("hybrid-tui-bench");
    let hf = root.join("hf-qwen2-tiny");
    let baked = root.join("baked-qwen2-tiny");
    if !baked.join("manifest.toml").exists() {
        make_test_model(
            &hf,
            &TestModelOptions {
                arch: Arch::Qwen2,
                preset: Preset::Tiny,
                seed: 42,
                dtype: WeightDtype::Bf16,
                max_shard_bytes: 2 << 30,
            },
        )
        .expect("model");
        bake(&hf, &baked, &BakeOptions::default(), &mut |_| {}).expect("bake");
    }
    baked
}

fn live() {
    let idle_s: u64 = std::env::var("HYBRID_BENCH_IDLE_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let mut s = Settings::default();
    if let Ok(p) = std::env::var("HYBRID_TUI_EXECUTIVE") {
        s.executive.path = p;
    } else {
        s.executive.path = env!("CARGO_BIN_EXE_hybrid-executive").into();
    }
    s.shard_a.kv_capacity = 512;
    let dir = model();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (tap_tx, tap) = tokio::sync::broadcast::channel(8192);
    let etx = tx.clone();
    let engine = Engine::start(s, dir, move |e| {
        let _ = etx.send(AppEvent::Engine(e.clone()));
        let _ = tap_tx.send(e);
    });
    let sender = engine.sender();
    let mut a = app(Box::new(move |c| {
        let _ = sender.send(c);
    }));
    a.max_new_tokens = 256;
    {
        let tx = tx.clone();
        let pids = a.pids.clone();
        sampler::spawn(Root::live(), pids, sampler::PERIOD, move |s| {
            tx.send(AppEvent::Telemetry(Box::new(s))).is_ok()
        });
    }
    let mut term = Terminal::new(TestBackend::new(110, 32)).expect("terminal");
    let wait = |tap: &tokio::sync::broadcast::Receiver<EngineEvent>,
                f: fn(&EngineEvent) -> bool| {
        let mut t = tap.resubscribe();
        Box::pin(async move {
            while let Ok(e) = t.recv().await {
                if f(&e) {
                    return;
                }
            }
        })
    };
    let mut exec_pid = 0;
    rt.block_on(async {
        let ready = wait(&tap, |e| matches!(e, EngineEvent::Ready(_)));
        run_loop(
            &mut term,
            &mut a,
            futures_util::stream::pending(),
            &mut rx,
            ready,
        )
        .await
        .expect("loop");
    });
    if let Some(p) = std::fs::read_dir("/proc").ok().and_then(|d| {
        d.flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm"))
                    .is_ok_and(|c| c.trim().starts_with("hybrid-exec"))
                    && std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                        s.rsplit(')')
                            .next()
                            .and_then(|r| r.split_whitespace().nth(1))
                            == Some(&std::process::id().to_string())
                    })
            })
    }) {
        exec_pid = p;
    }
    // CPU seconds so far: this (UI) thread, the process, the executive.
    let cpu_now = || {
        [
            cpu_secs(libc::RUSAGE_THREAD),
            cpu_secs(libc::RUSAGE_SELF),
            proc_cpu_secs(exec_pid),
        ]
    };
    let measure = |label: &str, t0: Instant, before: [f64; 3]| {
        let secs = t0.elapsed().as_secs_f64();
        let after = cpu_now();
        let p = |i: usize| (after[i] - before[i]) / secs * 100.0;
        println!(
            "{label}: {secs:.1}s · UI thread {:.2}% of a core · whole process {:.2}% · executive {:.2}%",
            p(0),
            p(1),
            p(2)
        );
    };
    // Idle.
    let before = cpu_now();
    let t0 = Instant::now();
    rt.block_on(async {
        let stop = Box::pin(tokio::time::sleep(Duration::from_secs(idle_s)));
        run_loop(
            &mut term,
            &mut a,
            futures_util::stream::pending(),
            &mut rx,
            stop,
        )
        .await
        .expect("loop");
    });
    measure("idle", t0, before);
    // Streaming: type a question, run until the answer is finished.
    let mut keys: Vec<std::io::Result<TermEvent>> = "Tell me a story"
        .chars()
        .map(|c| {
            Ok(TermEvent::Key(KeyEvent::new(
                KeyCode::Char(c),
                KeyModifiers::NONE,
            )))
        })
        .collect();
    keys.push(Ok(TermEvent::Key(KeyEvent::new(
        KeyCode::Enter,
        KeyModifiers::NONE,
    ))));
    let before = cpu_now();
    let t0 = Instant::now();
    rt.block_on(async {
        let done = wait(&tap, |e| {
            matches!(e, EngineEvent::Pipeline(Event::Finished(_)))
        });
        let input = futures_util::stream::iter(keys).chain(futures_util::stream::pending());
        run_loop(&mut term, &mut a, input, &mut rx, done)
            .await
            .expect("loop");
    });
    // The tap can see Finished before the app has taken it from its queue.
    while let Ok(ev) = rx.try_recv() {
        a.on_event(ev);
    }
    let tokens = a
        .speed
        .last
        .as_ref()
        .map(|r| r.metrics.generated)
        .unwrap_or(0);
    measure(&format!("streaming {tokens} tokens"), t0, before);
    engine.shutdown();
}

fn main() {
    frames();
    live();
}
