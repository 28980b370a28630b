//! The workbench's real loop on a TestBackend, with scripted keys and the
//! real CPU pipeline (executive + shard B) on a tiny test model. Each step
//! types its keys, then runs the loop until an engine event says the step
//! is done (never a sleep), and the screen is compared with a snapshot.
//! Timings and counters are masked by filters.

mod common;

use std::time::Duration;

use common::baked_model;
use crossterm::event::{Event as TermEvent, KeyCode, KeyEvent, KeyModifiers};
use futures_util::StreamExt;
use hybrid_tui::config::Settings;
use hybrid_tui::engine::{Engine, EngineEvent};
use hybrid_tui::hw::memory::Memory;
use hybrid_tui::hw::sampler::{CpuUse, Pids, Sampler, Snapshot};
use hybrid_tui::hw::{Reading, Root};
use hybrid_tui::model::Arch;
use hybrid_tui::pipeline::Event;
use hybrid_tui::shard_b::sampling::SamplingParams;
use hybrid_tui::supervisor::SupervisorEvent;
use hybrid_tui::tui::app::{App, AppEvent};
use hybrid_tui::tui::keymap::Keymap;
use hybrid_tui::tui::run_loop;
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use tokio::sync::broadcast;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

/// Readings of the recorded Meteor Lake tree (GPU and NPU rows), with CPU
/// and memory filled in by hand: the same on every run.
fn fixed_snapshot() -> Snapshot {
    let mut snap = Sampler::new(
        Root::at(common::hw_fixture("mtl-i915")),
        Pids::of(common::HW_PID),
    )
    .sample_at(0);
    snap.cpu = Reading::Ok(CpuUse {
        total: 50.0,
        per_core: vec![10.0, 90.0],
        mhz: 2000,
    });
    snap.memory = Reading::Ok(Memory {
        total: 16 << 30,
        available: 8 << 30,
        swap_total: 0,
        swap_free: 0,
    });
    snap
}

struct Harness {
    term: Terminal<TestBackend>,
    app: App,
    rx: UnboundedReceiver<AppEvent>,
    tap: broadcast::Receiver<EngineEvent>,
    engine: Option<Engine>,
}

fn key(c: KeyCode) -> TermEvent {
    TermEvent::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn typed(s: &str) -> Vec<TermEvent> {
    s.chars().map(|c| key(KeyCode::Char(c))).collect()
}

fn screen(term: &Terminal<TestBackend>) -> String {
    let buf = term.backend().buffer();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// Numbers change from run to run (timings, counters, pids, segment
/// names): segment names become <segment>, every run of digits (and its
/// decimal part) '#', and runs of spaces one space (padding follows the
/// numbers' widths).
fn masked(s: &str) -> String {
    let mut text = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("hybrid-tui.") {
        let (head, tail) = rest.split_at(i + "hybrid-tui.".len());
        text.push_str(head);
        let end = tail
            .find(|c: char| !(c.is_ascii_hexdigit() || c == '.'))
            .unwrap_or(tail.len());
        if end > 0 {
            text.push_str("<segment>");
        }
        rest = &tail[end..];
    }
    text.push_str(rest);
    let mut out = String::with_capacity(text.len());
    let mut in_num = false;
    let mut in_space = false;
    for c in text.chars() {
        if c.is_ascii_digit() || (in_num && c == '.') {
            if !in_num {
                out.push('#');
                in_num = true;
            }
            continue;
        }
        in_num = false;
        if c == ' ' {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
            continue;
        }
        in_space = false;
        // Bar and sparkline lengths follow the timings.
        if "▁▂▃▄▅▆▇█".contains(c) {
            if !out.ends_with('▮') {
                out.push('▮');
            }
            continue;
        }
        out.push(c);
    }
    out
}

impl Harness {
    fn new(width: u16, height: u16) -> Harness {
        Harness::with_capacity(width, height, 256)
    }

    /// With `kv_capacity` tokens per stream.
    fn with_capacity(width: u16, height: u16, kv_capacity: usize) -> Harness {
        let dir = baked_model(Arch::Qwen2, "int4_sym");
        let mut s = Settings::default();
        s.executive.path = env!("CARGO_BIN_EXE_hybrid-executive").into();
        s.shard_a.inference_precision = "f32".into();
        s.shard_a.kv_capacity = kv_capacity;
        let (tx, rx) = unbounded_channel();
        let (tap_tx, tap) = broadcast::channel(4096);
        let engine = Engine::start(s.clone(), dir, move |e| {
            // The app's channel first: when the tap sees an event, the app
            // can already take it.
            let _ = tx.send(AppEvent::Engine(e.clone()));
            let _ = tap_tx.send(e);
        });
        let sender = engine.sender();
        let keymap = Keymap::new(&s.keys.map()).unwrap();
        let mut app = App::new(
            "cpu",
            "baked-qwen2-int4_sym",
            keymap,
            Box::new(move |c| {
                let _ = sender.send(c);
            }),
        );
        app.sampling = SamplingParams::greedy();
        // Fixed device readings, so the devices pane can be compared.
        // Fixed device readings, so the devices pane can be compared.
        app.on_event(AppEvent::Telemetry(Box::new(fixed_snapshot())));
        app.max_new_tokens = 24;
        app.answers_dir = common::fixtures().join("answers");
        Harness {
            term: Terminal::new(TestBackend::new(width, height)).unwrap(),
            app,
            rx,
            tap,
            engine: Some(engine),
        }
    }

    /// Type `keys`, run the loop until `done` matches an engine event, then
    /// take every queued event and draw once more.
    async fn step(&mut self, keys: Vec<TermEvent>, mut done: impl FnMut(&EngineEvent) -> bool) {
        let mut tap = self.tap.resubscribe();
        let stop = Box::pin(async move {
            loop {
                let got = tap.recv().await;
                if std::env::var("TUI_TEST_DEBUG").is_ok() {
                    eprintln!("tap: {got:?}");
                }
                match got {
                    Ok(e) if done(&e) => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(_) => return,
                }
            }
        });
        let input = futures_util::stream::iter(keys.into_iter().map(Ok))
            .chain(futures_util::stream::pending());
        tokio::time::timeout(
            Duration::from_secs(60),
            run_loop(&mut self.term, &mut self.app, input, &mut self.rx, stop),
        )
        .await
        .expect("step timed out")
        .expect("loop");
        if std::env::var("TUI_TEST_DEBUG").is_ok() {
            eprintln!(
                "step done: quit={} input={:?} messages={}",
                self.app.quit,
                self.app.input,
                self.app.messages.len()
            );
        }
        self.settle();
    }

    /// The random model's words are not part of the picture.
    fn hide_answers(&mut self) {
        for m in &mut self.app.messages {
            if m.role == hybrid_tui::tui::app::Role::Assistant {
                m.text = "(the answer)".into();
            }
        }
        self.settle();
    }

    /// Apply queued events and draw.
    fn settle(&mut self) {
        while let Ok(ev) = self.rx.try_recv() {
            self.app.on_event(ev);
        }
        self.app.on_event(AppEvent::Tick);
        self.term
            .draw(|f| hybrid_tui::tui::view::render(f, &self.app))
            .unwrap();
    }

    /// Keys only: run the loop until they are consumed (an immediate stop
    /// after the input, as the loop handles one event per round).
    async fn keys(&mut self, keys: Vec<TermEvent>) {
        for k in keys {
            self.app.on_event(AppEvent::Term(k));
        }
        self.settle();
    }
}

fn finished(e: &EngineEvent) -> bool {
    matches!(e, EngineEvent::Pipeline(Event::Finished(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_stops_scrolls_helps_and_resizes() {
    let mut h = Harness::new(110, 32);
    h.step(vec![], |e| matches!(e, EngineEvent::Ready(_))).await;
    insta::assert_snapshot!("ready", masked(&screen(&h.term)));

    let mut keys = typed("Hello there");
    keys.push(key(KeyCode::Enter));
    h.step(keys, finished).await;
    let answered = screen(&h.term);
    assert!(answered.contains("Hello there"));
    let answer = h.app.messages.last().unwrap().text.clone();
    assert!(answer.chars().count() > 1, "no answer text");
    assert!(
        !answer.contains("<|im_end|>") && !answer.contains("<|im_start|>"),
        "special tokens leaked: {answer:?}"
    );
    h.hide_answers();
    insta::assert_snapshot!("answered", masked(&screen(&h.term)));

    // A second, long question, stopped with Esc after its first token.
    h.app.max_new_tokens = 200;
    // A multi-line message (Alt-Enter), long enough to scroll.
    let mut keys = typed("and more");
    for i in 0..16 {
        keys.push(TermEvent::Key(KeyEvent::new(
            KeyCode::Enter,
            KeyModifiers::ALT,
        )));
        keys.extend(typed(&format!("line {i}")));
    }
    keys.push(key(KeyCode::Enter));
    h.step(keys, |e| {
        matches!(e, EngineEvent::Pipeline(Event::Token { .. }))
    })
    .await;
    h.step(vec![key(KeyCode::Esc)], finished).await;
    assert!(
        h.app
            .messages
            .iter()
            .any(|m| m.text.contains("and more\nline 0\n")),
        "Alt-Enter did not make a new line"
    );
    let stopped = h.app.messages.last().unwrap();
    assert!(
        stopped.note.as_deref().unwrap_or("").starts_with("stopped"),
        "{stopped:?}"
    );
    assert!(screen(&h.term).contains("stopped"));

    // Scroll up, help, resize.
    h.keys(vec![key(KeyCode::PageUp)]).await;
    let by_key = h.app.scroll;
    assert!(by_key > 0);
    let wheel = |kind| {
        TermEvent::Mouse(crossterm::event::MouseEvent {
            kind,
            column: 10,
            row: 10,
            modifiers: KeyModifiers::NONE,
        })
    };
    h.keys(vec![wheel(crossterm::event::MouseEventKind::ScrollUp)])
        .await;
    assert!(h.app.scroll > by_key, "the mouse wheel does not scroll");
    h.hide_answers();
    insta::assert_snapshot!("scrolled", masked(&screen(&h.term)));
    h.keys(vec![wheel(crossterm::event::MouseEventKind::ScrollDown)])
        .await;
    assert_eq!(h.app.scroll, by_key);
    h.keys(vec![key(KeyCode::Char('?'))]).await;
    h.hide_answers();
    insta::assert_snapshot!("help", masked(&screen(&h.term)));
    h.keys(vec![key(KeyCode::Char('x'))]).await;
    assert!(!h.app.show_help);
    h.term.backend_mut().resize(80, 24);
    h.settle();
    insta::assert_snapshot!("narrow", masked(&screen(&h.term)));
    h.term.backend_mut().resize(50, 12);
    h.settle();
    assert!(screen(&h.term).contains("terminal too small"));
    if let Some(e) = h.engine.take() {
        e.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executive_crash_is_shown_and_the_answer_completes() {
    let mut h = Harness::new(110, 32);
    let mut pid = 0;
    h.step(vec![], |e| {
        if let EngineEvent::Pipeline(Event::Supervisor(SupervisorEvent::Started {
            pid: p, ..
        })) = e
        {
            pid = *p;
        }
        matches!(e, EngineEvent::Ready(_))
    })
    .await;
    let mut keys = typed("Hi");
    keys.push(key(KeyCode::Enter));
    h.step(keys, |e| {
        matches!(e, EngineEvent::Pipeline(Event::Token { .. }))
    })
    .await;
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    h.step(vec![], finished).await;
    let s = screen(&h.term);
    assert!(s.contains("SIGKILL"), "{s}");
    assert!(s.contains("restarting it"), "{s}");
    let answer = h.app.messages.last().unwrap();
    assert_eq!(answer.role, hybrid_tui::tui::app::Role::Assistant);
    assert!(
        answer.note.as_deref().unwrap_or("").contains("tokens"),
        "{answer:?}"
    );
    h.hide_answers();
    insta::assert_snapshot!("recovered", masked(&screen(&h.term)));
    if let Some(e) = h.engine.take() {
        e.shutdown();
    }
}

/// The check screen (what `hybrid-tui check` shows on a terminal) over the
/// recorded Meteor Lake tree, with OpenVINO and Vulkan answers filled in.
#[test]
fn check_screen_snapshot() {
    use hybrid_tui::executive::probe::{DeviceInfo, ProbeReport};
    use hybrid_tui::hw::checks;
    use hybrid_tui::hw::vulkan::VulkanAdapter;
    let root = Root::at(common::hw_fixture("mtl-i915"));
    let s = Settings {
        shard_a: hybrid_tui::config::ShardASettings {
            device: "NPU".into(),
            ..Settings::default().shard_a
        },
        // Not the test user's demo model: the figures must not depend on it.
        model: hybrid_tui::config::ModelSettings {
            source: "/nonexistent/model".into(),
        },
        ..Settings::default()
    };
    let mut facts = checks::gather(&root, &s);
    facts.openvino = Reading::Ok(ProbeReport {
        library: "/opt/openvino/libopenvino_c.so".into(),
        version: "2026.4".into(),
        build: "2026.4.0-20000".into(),
        devices: ["CPU", "GPU", "NPU"]
            .iter()
            .map(|d| DeviceInfo {
                name: d.to_string(),
                full_name: Some(format!("Intel {d}")),
                plugin_version: None,
                properties: Default::default(),
            })
            .collect(),
    });
    facts.vulkan_adapters = Reading::Ok(vec![VulkanAdapter {
        index: 0,
        name: "Intel(R) Arc(tm) Graphics (MTL)".into(),
        kind: "IntegratedGpu".into(),
    }]);
    facts.model = Reading::Ok(checks::ModelNeed {
        source: "demo".into(),
        bytes: 400 << 20,
        how: "demo model".into(),
    });
    facts.cache = Reading::Ok(checks::Space {
        path: "/home/user/.cache/hybrid-tui".into(),
        free: 1 << 30,
    });
    let report = checks::build_report(&root, "core-ultra", facts);
    let keymap = Keymap::new(&s.keys.map()).unwrap();
    let mut app = App::new("core-ultra", "none", keymap, Box::new(|_| {}));
    app.check.only = true;
    app.on_event(AppEvent::Telemetry(Box::new(fixed_snapshot())));
    app.open_check();
    app.on_event(AppEvent::Check(Box::new(report)));
    let mut term = Terminal::new(TestBackend::new(110, 32)).unwrap();
    term.draw(|f| hybrid_tui::tui::view::render(f, &app))
        .unwrap();
    let text = masked(&screen(&term));
    assert!(text.contains("[fail]"), "{text}");
    insta::assert_snapshot!("check_screen", text);
    // Esc on a check-only screen quits.
    app.on_event(AppEvent::Term(key(KeyCode::Esc)));
    assert!(app.quit);
}

/// While the model downloads, the chat area shows a gauge per file; when it
/// is resolved the pane goes and the app says what it got (here: the Hub
/// could not be reached, so the demo model and why).
#[test]
fn the_download_pane_and_the_model_outcome() {
    use hybrid_tui::hub::FileProgress;
    use hybrid_tui::tui::app::ModelOutcome;
    let s = Settings::default();
    let keymap = Keymap::new(&s.keys.map()).unwrap();
    let mut app = App::new(
        "cpu",
        "Qwen/Qwen2.5-0.5B-Instruct",
        keymap,
        Box::new(|_| {}),
    );
    for (file, done, total) in [
        ("config.json", 700, 700),
        ("model.safetensors", 250_000_000, 988_097_824),
        ("model.safetensors", 500_000_000, 988_097_824),
        ("tokenizer.json", 0, 7_031_645),
    ] {
        app.on_event(AppEvent::Download(FileProgress {
            file: file.into(),
            done,
            total,
        }));
    }
    assert_eq!(app.downloads.len(), 3, "one row per file");
    let mut term = Terminal::new(TestBackend::new(110, 32)).unwrap();
    term.draw(|f| hybrid_tui::tui::view::render(f, &app))
        .unwrap();
    let text = screen(&term);
    assert!(
        text.contains("downloading Qwen/Qwen2.5-0.5B-Instruct · 500.0/995.1 MB"),
        "{text}"
    );
    assert!(text.contains("model.safetensors 500.0/988.1 MB"), "{text}");
    app.on_event(AppEvent::Model(ModelOutcome {
        result: Ok("qwen2-tiny-seed42.baked".into()),
        notes: vec![
            "could not get Qwen/Qwen2.5-0.5B-Instruct: cannot reach https://huggingface.co".into(),
        ],
        demo: true,
    }));
    assert!(app.downloads.is_empty());
    term.draw(|f| hybrid_tui::tui::view::render(f, &app))
        .unwrap();
    let text = screen(&term);
    assert!(!text.contains("downloading"), "{text}");
    assert!(
        text.contains("could not get Qwen/Qwen2.5-0.5B-Instruct"),
        "{text}"
    );
    assert!(text.contains("This is the demo model"), "{text}");
    assert!(
        text.contains("qwen2-tiny-seed42.baked"),
        "the status line names it: {text}"
    );
    // No model at all: the failure is what the chat says.
    app.on_event(AppEvent::Model(ModelOutcome {
        result: Err("no data directory".into()),
        notes: vec![],
        demo: false,
    }));
    term.draw(|f| hybrid_tui::tui::view::render(f, &app))
        .unwrap();
    assert!(app.failure.is_some());
}

/// `hybrid-tui bench` on a terminal, mid-run: progress, the current run
/// (rate, tokens, stage bar), devices, a real segment's ring occupancy, the
/// rows so far and both charts. Events as the runner sends them.
#[test]
fn bench_screen_mid_run_snapshot() {
    use hybrid_tui::bench::record::{Role, Row, Stages, add_ratios};
    use hybrid_tui::bench::{BenchEvent, Kind, Test};
    use hybrid_tui::pipeline::StageSample;
    use hybrid_tui::ring::{RingId, Segment, SegmentSpec, SlotHeader, kind};
    use hybrid_tui::tui::app::Screen;

    let s = Settings::default();
    let keymap = Keymap::new(&s.keys.map()).unwrap();
    let mut app = App::new("cpu", "llama-3.2-1b", keymap, Box::new(|_| {}));
    app.screen = Screen::Bench;
    app.on_event(AppEvent::Telemetry(Box::new(fixed_snapshot())));
    let bench = |app: &mut App, e: BenchEvent| app.on_event(AppEvent::Bench(Box::new(e)));
    bench(
        &mut app,
        BenchEvent::Planned {
            model: "llama-3.2-1b".into(),
            layers: 16,
            shard_a: "CPU".into(),
            shard_b: "cpu".into(),
            runs: 40,
        },
    );
    // A real segment with three token messages and one activation waiting.
    let seg = Segment::create(&SegmentSpec {
        token_slots: 8,
        token_slot_bytes: 4096,
        act_slots: 8,
        act_slot_bytes: 32768,
    })
    .unwrap();
    let h = SlotHeader {
        kind: kind::TOKENS,
        ..Default::default()
    };
    let mut tx = seg.producer(RingId::Tokens);
    for _ in 0..3 {
        assert!(tx.send(h, &[1; 8], Duration::ZERO).unwrap());
    }
    let mut ta = seg.producer(RingId::Activations);
    assert!(ta.send(h, &[2; 64], Duration::ZERO).unwrap());
    bench(
        &mut app,
        BenchEvent::Pipeline(Event::Supervisor(SupervisorEvent::Started {
            segment: seg.name().to_string(),
            pid: common::HW_EXEC_PID,
        })),
    );
    app.on_event(AppEvent::Tick);
    let mk = |split: usize, streams: usize, tok_s: f64, sd: f64| Row {
        split,
        layers: 16,
        role: Role::for_split(split, 16),
        test: "tg32".into(),
        kind: Kind::Tg,
        n: 32,
        streams,
        reps: 3,
        samples: vec![tok_s - sd, tok_s, tok_s + sd],
        tokens: vec![32 * streams; 3],
        tok_s,
        tok_s_sd: sd,
        ttft_ms: 850.0 / streams as f64 + 120.0 * split as f64 / 8.0,
        ttft_ms_sd: 12.5,
        stages: Stages {
            a_ms: 11.0 * split as f64,
            a_to_b_wait_ms: 0.2,
            b_ms: 9.0 * (16 - split) as f64 + 30.0,
            b_to_a_wait_ms: 0.1,
        },
        joules_per_token: None,
        vs_half: None,
        vs_a_only: None,
        vs_b_only: None,
        shard_b_work: None,
    };
    for (k, s1, s2) in [(16, 3.1, 3.3), (0, 2.2, 2.6), (4, 2.6, 3.4), (8, 2.9, 5.2)] {
        bench(&mut app, BenchEvent::Row(Box::new(mk(k, 1, s1, 0.05))));
        bench(&mut app, BenchEvent::Row(Box::new(mk(k, 2, s2, 0.11))));
    }
    // Three measured runs done before this one (runs_done counts RunDone).
    for _ in 0..3 {
        bench(
            &mut app,
            BenchEvent::RunDone {
                tok_s: 5.0,
                warmup: false,
            },
        );
    }
    bench(
        &mut app,
        BenchEvent::Loading {
            k: 12,
            role: Role::Hybrid,
        },
    );
    bench(
        &mut app,
        BenchEvent::RunStarted {
            k: 12,
            test: Test {
                kind: Kind::Tg,
                n: 32,
            },
            streams: 2,
            rep: Some(1),
            reps: 3,
        },
    );
    for _ in 0..5 {
        bench(
            &mut app,
            BenchEvent::Pipeline(Event::Stage(StageSample {
                stream: 0,
                tokens: 1,
                prefill: false,
                b_to_a_wait_ms: 0.1,
                a_ms: 131.0,
                a_to_b_wait_ms: 2.0,
                b_ms: 66.0,
            })),
        );
    }
    bench(
        &mut app,
        BenchEvent::Progress {
            tokens: 40,
            target: 64,
            tok_s: 5.87,
        },
    );
    let mut want = app.bench.rows.clone();
    add_ratios(&mut want, 16);
    assert_eq!(app.bench.rows, want, "the view keeps ratios current");
    let mut term = Terminal::new(TestBackend::new(120, 40)).unwrap();
    term.draw(|f| hybrid_tui::tui::view::render(f, &app))
        .unwrap();
    let text = screen(&term);
    assert!(text.contains("run 3/40"), "{text}");
    assert!(
        text.contains("k=12/16 · tg32 · 2 stream(s) · rep 2/3"),
        "{text}"
    );
    assert!(text.contains("40/64 tokens"), "{text}");
    assert!(text.contains("5.87 decode t/s"), "{text}");
    assert!(text.contains("tokens B→A: 3/8 used"), "{text}");
    assert!(text.contains("hidden A→B: 1/8 used"), "{text}");
    assert!(text.contains("8/16"), "{text}");
    insta::assert_snapshot!("bench_screen", text);
    // q stops the bench (the front end's guard stops the runner).
    app.on_event(AppEvent::Term(key(KeyCode::Char('q'))));
    assert!(app.quit);
    drop(seg);
}

/// An answer that fills shard_a.kv_capacity says so under it (the chat
/// template makes "Hello there" 40 tokens: 24 are left of 64).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_fills_the_context_says_so() {
    let mut h = Harness::with_capacity(110, 32, 64);
    h.step(vec![], |e| matches!(e, EngineEvent::Ready(_))).await;
    h.app.max_new_tokens = 500;
    let mut keys = typed("Hello there");
    keys.push(key(KeyCode::Enter));
    h.step(keys, finished).await;
    let last = h.app.messages.last().unwrap();
    let note = last.note.clone().unwrap_or_default();
    assert!(
        note.starts_with("context full: stopped at 64 tokens (raise shard_a.kv_capacity)"),
        "{note}"
    );
    assert!(screen(&h.term).contains("context full"));
    if let Some(e) = h.engine.take() {
        e.shutdown();
    }
}
