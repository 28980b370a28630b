//! The built binary in a real terminal (tmux): it opens the workbench,
//! answers a question, and on quit (a key, or SIGTERM) leaves the terminal
//! in cooked mode with no shared memory and no executive behind. Waits poll
//! the screen for a condition, with a deadline.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn tmux(sock: &Path, args: &[&str]) -> String {
    let out = Command::new("tmux")
        .arg("-S")
        .arg(sock)
        .args(args)
        .output()
        .expect("tmux");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Shared-memory segments named after `pid`.
fn segments_of(pid: u32) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("hybrid-tui.{pid}.")))
        .collect()
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

struct Session {
    _home: tempfile::TempDir,
    sock: PathBuf,
    after: PathBuf,
    app: u32,
    executive: u32,
}

/// A failed assertion must not leave the app running in a detached tmux
/// server (with its executive and segment) after the test is gone.
impl Drop for Session {
    fn drop(&mut self) {
        let _ = tmux(&self.sock, &["kill-server"]);
    }
}

impl Session {
    fn wait_for(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let screen = tmux(&self.sock, &["capture-pane", "-p", "-t", "t"]);
            if pred(&screen) {
                return screen;
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                let _ = tmux(&self.sock, &["kill-server"]);
                panic!("timed out waiting for {what}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run `hybrid-tui ARGS` in a tmux session of `w`×`h` with its own XDG
    /// directories; after the app exits the shell records its status and
    /// the terminal mode, then waits. None when tmux is missing and not
    /// required.
    fn start(args: &str, w: u16, h: u16) -> Option<Session> {
        if Command::new("tmux").arg("-V").output().is_err() {
            assert!(
                std::env::var("HYBRID_TUI_REQUIRE_TMUX").is_err(),
                "HYBRID_TUI_REQUIRE_TMUX is set but tmux is missing"
            );
            eprintln!("tmux missing: real-terminal test skipped");
            return None;
        }
        let home = tempfile::tempdir().unwrap();
        let sock = home.path().join("tmux.sock");
        let after = home.path().join("after.txt");
        let bin = env!("CARGO_BIN_EXE_hybrid-tui");
        let d = home.path().display();
        let script = format!(
            "export XDG_CONFIG_HOME={d}/config XDG_DATA_HOME={d}/data XDG_STATE_HOME={d}/state XDG_CACHE_HOME={d}/cache HYBRID_TUI_PROFILE=cpu; \
             {bin} {args}; echo \"exit=$?\" > {a}; stty -a >> {a}; echo done-marker; sleep 30",
            a = after.display()
        );
        let (w, h) = (w.to_string(), h.to_string());
        tmux(
            &sock,
            &[
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                &w,
                "-y",
                &h,
                "bash",
                "-c",
                &script,
            ],
        );
        Some(Session {
            _home: home,
            sock,
            after,
            app: 0,
            executive: 0,
        })
    }

    /// Start the workbench in tmux and wait until it has answered a question.
    /// None when tmux is missing and not required.
    fn answered() -> Option<Session> {
        let mut s = Session::start("--set shard_a.kv_capacity=256", 110, 32)?;
        let ready = s.wait_for("the executive to be ready", 120, |s| {
            s.contains("executive ready")
        });
        assert!(
            ready.contains("This is the demo model"),
            "the demo model is not called what it is:\n{ready}"
        );
        // This machine cannot reach the Hub: the default model is not had,
        // and the screen says why instead of ending in an error.
        assert!(
            ready.contains("could not get Qwen/Qwen2.5-0.5B-Instruct"),
            "no word on the default model:\n{ready}"
        );
        tmux(&s.sock, &["send-keys", "-t", "t", "-l", "Hello there"]);
        tmux(&s.sock, &["send-keys", "-t", "t", "Enter"]);
        let screen = s.wait_for("the answer", 120, |s| s.contains("tok/s · ttft"));
        assert!(screen.contains("Hello there"), "{screen}");
        s.find_processes();
        Some(s)
    }

    /// The app in the pane and its executive.
    fn find_processes(&mut self) {
        let pane = tmux(
            &self.sock,
            &["display-message", "-p", "-t", "t", "#{pane_pid}"],
        );
        let pane: u32 = pane.trim().parse().unwrap();
        self.app = common::children_of(pane)
            .into_iter()
            .find(|p| comm(*p).starts_with("hybrid-tui"))
            .expect("the app process");
        self.executive = common::children_of(self.app)
            .into_iter()
            .find(|p| comm(*p).starts_with("hybrid-exec"))
            .expect("the executive process");
    }

    /// After the app is gone: its status line, terminal mode, no executive,
    /// no segment.
    fn check_clean_exit(&self, want_status: &str) {
        self.wait_for("the app to exit", 30, |s| s.contains("done-marker"));
        let rec = std::fs::read_to_string(&self.after).unwrap();
        let _ = tmux(&self.sock, &["kill-server"]);
        assert!(rec.starts_with(want_status), "{rec}");
        // Cooked mode again: canonical input and echo on.
        assert!(rec.contains(" icanon") && rec.contains(" echo"), "{rec}");
        assert!(
            comm(self.executive).is_empty(),
            "the executive {} is still there",
            self.executive
        );
        let left = segments_of(self.app);
        assert!(left.is_empty(), "segments left: {left:?}");
    }
}

#[test]
fn the_workbench_answers_and_quits_with_its_key() {
    let Some(s) = Session::answered() else { return };
    // F3: the hardware check over the chat, with the live devices pane; Esc back.
    tmux(&s.sock, &["send-keys", "-t", "t", "F3"]);
    let check = s.wait_for("the check screen", 60, |s| {
        s.contains("recommended: --profile")
    });
    assert!(check.contains("[pass] OpenVINO runtime"), "{check}");
    assert!(check.contains("Intel NPU: not available"), "{check}");
    tmux(&s.sock, &["send-keys", "-t", "t", "Escape"]);
    s.wait_for("the chat again", 10, |s| s.contains("Hello there"));
    tmux(&s.sock, &["send-keys", "-t", "t", "C-q"]);
    s.check_clean_exit("exit=0");
}

#[test]
fn sigterm_restores_the_terminal_and_stops_the_executive() {
    let Some(s) = Session::answered() else { return };
    unsafe { libc::kill(s.app as i32, libc::SIGTERM) };
    s.check_clean_exit("exit=");
}

/// `hybrid-tui check` on a terminal: the live check screen; Esc quits and
/// the terminal is cooked again.
#[test]
fn the_check_screen_runs_alone_and_quits_with_esc() {
    let Some(s) = Session::start("check", 100, 30) else {
        return;
    };
    let screen = s.wait_for("the checks and the gauges", 60, |s| {
        s.contains("recommended: --profile cpu") && s.contains("mem ")
    });
    assert!(screen.contains("hardware check · profile cpu"), "{screen}");
    assert!(screen.contains("[pass] Shared memory"), "{screen}");
    assert!(screen.contains("Intel NPU: not available"), "{screen}");
    tmux(&s.sock, &["send-keys", "-t", "t", "Escape"]);
    s.wait_for("the app to exit", 30, |s| s.contains("done-marker"));
    let rec = std::fs::read_to_string(&s.after).unwrap();
    let _ = tmux(&s.sock, &["kill-server"]);
    assert!(rec.starts_with("exit=0"), "{rec}");
    assert!(rec.contains(" icanon") && rec.contains(" echo"), "{rec}");
}

/// Closing the terminal (the tmux server goes, the app gets SIGHUP and a
/// dead tty) still stops the executive and removes the segment.
#[test]
fn a_closed_terminal_leaves_nothing_behind() {
    let Some(s) = Session::answered() else { return };
    let _ = tmux(&s.sock, &["kill-server"]);
    let t0 = Instant::now();
    while !comm(s.app).is_empty() && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(comm(s.app).is_empty(), "the app {} is still running", s.app);
    assert!(
        comm(s.executive).is_empty(),
        "the executive {} is still there",
        s.executive
    );
    let left = segments_of(s.app);
    assert!(left.is_empty(), "segments left: {left:?}");
}

/// `hybrid-tui --serve`: the workbench serves the same engine over the
/// API; a request from outside shows in the server pane while the chat
/// still answers, and quitting stops both.
#[test]
fn the_workbench_serves_the_api_beside_the_chat() {
    let Some(mut s) = Session::start(
        "--serve --set server.port=0 --set shard_a.kv_capacity=256",
        120,
        40,
    ) else {
        return;
    };
    let screen = s.wait_for("the server's address and the executive", 120, |s| {
        s.contains("http://127.0.0.1:") && s.contains("executive ready")
    });
    let addr = screen
        .split("http://")
        .nth(1)
        .and_then(|r| r.split("/v1").next())
        .expect("address")
        .to_string();
    let r: serde_json::Value = ureq::post(&format!("http://{addr}/v1/chat/completions"))
        .set("Content-Type", "application/json")
        .send_string(r#"{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "user": "tester"}"#)
        .expect("request")
        .into_json()
        .expect("json");
    assert!(
        r["usage"]["completion_tokens"].as_u64().unwrap() >= 1,
        "{r}"
    );
    let pane = s.wait_for("the request in the server pane", 20, |s| {
        s.contains("1 done")
    });
    assert!(pane.contains("tester"), "{pane}");
    assert!(pane.contains("200 /v1/chat/completions"), "{pane}");
    // The chat shares the pipeline.
    tmux(&s.sock, &["send-keys", "-t", "t", "-l", "Hello there"]);
    tmux(&s.sock, &["send-keys", "-t", "t", "Enter"]);
    s.wait_for("the chat's answer", 120, |s| s.contains("tok/s · ttft"));
    s.find_processes();
    tmux(&s.sock, &["send-keys", "-t", "t", "C-q"]);
    s.check_clean_exit("exit=0");
    assert!(
        ureq::get(&format!("http://{addr}/health")).call().is_err(),
        "the server still answers after quit"
    );
}

/// The rep the bench screen shows ("rep N/reps"), if any.
fn rep_of(screen: &str, reps: usize) -> Option<usize> {
    let tail = format!("/{reps}");
    screen.split("rep ").skip(1).find_map(|rest| {
        let (n, after) = rest.split_once(&tail)?;
        n.parse()
            .ok()
            .filter(|_| !after.starts_with(|c: char| c.is_ascii_digit()))
    })
}

/// `hybrid-tui bench` on a terminal: the live screen runs, q stops it
/// mid-run, the terminal is cooked again, the executive and the segment are
/// gone, the rows so far are printed and saved, and the exit code says it
/// stopped early.
#[test]
fn the_bench_screen_runs_live_and_q_stops_it() {
    let model = common::baked_model(hybrid_tui::model::Arch::Llama, "int4_sym");
    // So many reps that the bench cannot end between seeing one and the
    // key; the wait takes any rep from the third on (a state that stays
    // true), never one short-lived screen.
    let args = format!(
        "bench --model {} --pp 0 --tg 400 --reps 100000 --split 2 --no-baselines",
        model.display()
    );
    let Some(mut s) = Session::start(&args, 120, 40) else {
        return;
    };
    let screen = s.wait_for("the bench mid-run", 120, |s| {
        rep_of(s, 100_000).is_some_and(|n| n >= 3) && s.contains("decode t/s")
    });
    assert!(
        screen.contains("hybrid-tui bench · baked-llama-int4_sym"),
        "{screen}"
    );
    assert!(screen.contains("tokens B→A:"), "the ring pane: {screen}");
    assert!(screen.contains("CPU "), "the devices pane: {screen}");
    s.find_processes();
    tmux(&s.sock, &["send-keys", "-t", "t", "q"]);
    let out = s.wait_for("the app to exit", 60, |s| s.contains("done-marker"));
    assert!(out.contains("saved as run"), "{out}");
    assert!(out.contains("stopped early"), "{out}");
    s.check_clean_exit("exit=1");
}

#[test]
fn an_attached_index_puts_sources_under_the_answer() {
    let bert = common::test_bert();
    let args = format!(
        "--set shard_a.kv_capacity=1024 --set embed.model={} --set embed.query_instruction= --set embed.chunk_tokens=24 --set embed.chunk_overlap=4 --set embed.top_k=2",
        bert.display()
    );
    let Some(mut s) = Session::start(&args, 120, 40) else {
        return;
    };
    s.wait_for("the executive to be ready", 120, |s| {
        s.contains("executive ready")
    });
    s.find_processes();
    // Index a folder from the chat: the index pane shows the pass, then
    // the index is attached.
    let tree = s._home.path().join("tree");
    std::fs::create_dir_all(tree.join("src")).unwrap();
    std::fs::write(
        tree.join("notes.md"),
        "The lighthouse keeper logs every ship that passes the northern cape.\n\nStorms come from the west in winter.\n",
    )
    .unwrap();
    std::fs::write(
        tree.join("src/main.rs"),
        "fn main() {\n    println!(\"lighthouse\");\n}\n",
    )
    .unwrap();
    let add = format!("/index add {} docs", tree.display());
    tmux(&s.sock, &["send-keys", "-t", "t", "-l", &add]);
    tmux(&s.sock, &["send-keys", "-t", "t", "Enter"]);
    let pane = s.wait_for("the index pane to finish", 60, |s| {
        s.contains("index docs · done in") && s.contains("; attached")
    });
    assert!(pane.contains("2/2 files"), "{pane}");
    assert!(
        pane.contains("chunks/s") && pane.contains("docs/s"),
        "{pane}"
    );
    // The command line sees what the chat indexed; attaching by name works.
    let listed = common::app(s._home.path())
        .args(["index", "--list"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains("docs\t2 files"), "{listed}");
    tmux(&s.sock, &["send-keys", "-t", "t", "-l", "/index docs"]);
    tmux(&s.sock, &["send-keys", "-t", "t", "Enter"]);
    s.wait_for("the index attached", 30, |s| {
        s.contains("attached index docs")
    });
    tmux(
        &s.sock,
        &["send-keys", "-t", "t", "-l", "Who logs the ships?"],
    );
    tmux(&s.sock, &["send-keys", "-t", "t", "Enter"]);
    let screen = s.wait_for("an answer with sources", 120, |s| {
        s.contains("tok/s · ttft") && s.contains("sources: [1]")
    });
    assert!(
        screen.contains("notes.md:") || screen.contains("main.rs:"),
        "sources name the files and lines:\n{screen}"
    );
    // The embedding model runs in an executive of its own, beside shard A's.
    let executives: Vec<u32> = common::children_of(s.app)
        .into_iter()
        .filter(|p| comm(*p).starts_with("hybrid-exec"))
        .collect();
    assert_eq!(executives.len(), 2, "{executives:?}");
    tmux(&s.sock, &["send-keys", "-t", "t", "C-q"]);
    s.check_clean_exit("exit=0");
    for pid in executives {
        assert!(comm(pid).is_empty(), "executive {pid} is still there");
    }
}
