//! The built binary in a real terminal (tmux): it opens the workbench,
//! answers a question, quits, and leaves the terminal in cooked mode with
//! no shared memory and no executive behind. Waits poll the screen for a
//! condition, with a deadline.

mod common;

use std::path::Path;
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

fn wait_for(sock: &Path, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
    let t0 = Instant::now();
    loop {
        let screen = tmux(sock, &["capture-pane", "-p", "-t", "t"]);
        if pred(&screen) {
            return screen;
        }
        if t0.elapsed() > Duration::from_secs(secs) {
            let _ = tmux(sock, &["kill-server"]);
            panic!("timed out waiting for {what}; screen:\n{screen}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_workbench_answers_in_a_real_terminal_and_leaves_it_clean() {
    if Command::new("tmux").arg("-V").output().is_err() {
        assert!(
            std::env::var("HYBRID_TUI_REQUIRE_TMUX").is_err(),
            "HYBRID_TUI_REQUIRE_TMUX is set but tmux is missing"
        );
        eprintln!("tmux missing: real-terminal test skipped");
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let sock = home.path().join("tmux.sock");
    let after = home.path().join("after.txt");
    let bin = env!("CARGO_BIN_EXE_hybrid-tui");
    let h = home.path().display();
    // After the app exits, the shell records the terminal mode and waits.
    let script = format!(
        "export XDG_CONFIG_HOME={h}/config XDG_DATA_HOME={h}/data XDG_STATE_HOME={h}/state XDG_CACHE_HOME={h}/cache HYBRID_TUI_PROFILE=cpu; \
         {bin} --set shard_a.kv_capacity=256; echo \"exit=$?\" > {a}; stty -a >> {a}; echo done-marker; sleep 30",
        a = after.display()
    );
    tmux(
        &sock,
        &[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "110",
            "-y",
            "32",
            "bash",
            "-c",
            &script,
        ],
    );
    wait_for(&sock, "the executive to be ready", 120, |s| {
        s.contains("executive ready")
    });
    tmux(&sock, &["send-keys", "-t", "t", "-l", "Hello there"]);
    tmux(&sock, &["send-keys", "-t", "t", "Enter"]);
    let screen = wait_for(&sock, "the answer", 120, |s| s.contains("tok/s · ttft"));
    assert!(screen.contains("Hello there"), "{screen}");
    // The app's pid, to check its executive and segment afterwards.
    let pane_pid = tmux(&sock, &["display-message", "-p", "-t", "t", "#{pane_pid}"]);
    let pane_pid: u32 = pane_pid.trim().parse().unwrap();
    let app_pid = common::children_of(pane_pid)
        .into_iter()
        .find(|p| comm(*p).starts_with("hybrid-tui"))
        .expect("the app process");
    let exec_pid = common::children_of(app_pid)
        .into_iter()
        .find(|p| comm(*p).starts_with("hybrid-exec"))
        .expect("the executive process");
    tmux(&sock, &["send-keys", "-t", "t", "C-q"]);
    wait_for(&sock, "the app to exit", 30, |s| s.contains("done-marker"));
    let rec = std::fs::read_to_string(&after).unwrap();
    let _ = tmux(&sock, &["kill-server"]);
    assert!(rec.starts_with("exit=0"), "{rec}");
    // Cooked mode again: canonical input and echo on.
    assert!(rec.contains(" icanon") && rec.contains(" echo"), "{rec}");
    assert!(!Path::new(&format!("/proc/{exec_pid}")).exists() || comm(exec_pid).is_empty());
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&format!("hybrid-tui.{app_pid}.")))
        .collect();
    assert!(left.is_empty(), "segments left: {left:?}");
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
