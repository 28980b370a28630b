//! The executive's lifecycle: spawn, handshake, health, shutdown.
//!
//! [`Executive::start`] removes segments left by dead runs, creates this
//! run's segment, spawns `hybrid-executive --serve` (PR_SET_PDEATHSIG so
//! it dies with the thread that spawned it, plus stdin EOF as a second
//! line of defence), waits for hello within `executive.handshake_timeout_s`,
//! sends the start request and waits for ready within
//! `executive.compile_timeout_s`. [`Executive::check`] notices exit, crash
//! and hang (no heartbeat for `executive.heartbeat_timeout_s`). Restarting
//! is the pipeline's call (it knows which streams to re-prefill); every
//! problem is reported as a [`SupervisorEvent`].
//!
//! The child is spawned with `PR_SET_PDEATHSIG(SIGKILL)` in `pre_exec`; the
//! executive also sets it itself and exits (code 5) if its parent is not the
//! pid it was given, which closes the fork/prctl race. PDEATHSIG fires when
//! the *thread* that spawned the child exits, so the pipeline spawns and
//! restarts from the thread that owns it. A call busy for longer than
//! `executive.call_timeout_s` is a hang too (SIGKILL). Dropping an
//! [`Executive`] kills and reaps the child and unlinks the segment;
//! [`Executive::shutdown`] asks first.

pub mod protocol;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::Settings;
use crate::ring::{Consumer, Producer, RingError, RingId, Segment, SegmentSpec};
use protocol::{
    Capacities, ControlLine, ExecStats, FromExecutive, PROTOCOL_VERSION, Role, StartRequest,
    ToExecutive, encode,
};

/// What the executive is doing, as the status line shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecState {
    Starting,
    Compiling,
    Ready,
    Restarting,
    Failed,
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SupervisorEvent {
    State {
        state: ExecState,
    },
    Started {
        pid: u32,
        segment: String,
    },
    Ready {
        device: String,
        compile_ms: f64,
        capacities: Capacities,
    },
    Stats {
        stats: ExecStats,
    },
    /// The executive died or hung; `reason` says how.
    Lost {
        reason: String,
        stderr_tail: Vec<String>,
    },
    Restarting {
        attempt: u32,
        backoff_ms: u64,
    },
    Failed {
        message: String,
    },
    StaleSegmentsRemoved {
        paths: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    #[error(
        "cannot start the executive {path}: {message}. Build it (cargo build --bins) or set executive.path"
    )]
    Spawn { path: PathBuf, message: String },
    #[error(
        "the executive ({path}) did not answer the handshake within {secs}s (executive.handshake_timeout_s); it was stopped"
    )]
    HandshakeTimeout { path: PathBuf, secs: f64 },
    #[error(
        "shard A did not compile within {secs}s (executive.compile_timeout_s); the executive was stopped"
    )]
    CompileTimeout { secs: f64 },
    /// It said why, or exited with a code of its own: starting it again
    /// would fail the same way.
    #[error("the executive failed to start: {message}")]
    StartFailed { message: String },
    /// A signal ended it before it was ready (killed, crashed): a new one
    /// may well start.
    #[error("the executive failed to start: {message}")]
    Died { message: String },
    #[error(
        "the executive speaks protocol {got}, this hybrid-tui speaks {want}: they come from different builds"
    )]
    Protocol { got: u32, want: u32 },
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("the executive {reason}")]
    Lost { reason: String },
    #[error("interrupted")]
    Interrupted,
}

impl SupervisorError {
    /// Whether starting another executive may succeed where this one
    /// failed: it died of a signal or hung, rather than refusing (a bad
    /// model, a missing library, a protocol mismatch) or being asked to
    /// stop. A compile timeout is not retried: the next compile would take
    /// as long.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SupervisorError::Died { .. }
                | SupervisorError::HandshakeTimeout { .. }
                | SupervisorError::Lost { .. }
        )
    }
}

/// The termination signal that arrived (0: none).
static SIGNAL: AtomicI32 = AtomicI32::new(0);

/// Turn SIGINT, SIGTERM and SIGHUP into a flag that start-up waits and the
/// pipeline check, so the executive is shut down and the segment unlinked
/// instead of the process dying mid-way. (The executive runs in its own
/// process group, so a terminal's Ctrl-C reaches only this process.)
pub fn install_signal_handlers() -> std::io::Result<()> {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to a static atomic.
        unsafe {
            signal_hook::low_level::register(sig, move || SIGNAL.store(sig, Ordering::SeqCst))?;
        }
    }
    Ok(())
}

/// Whether a termination signal arrived.
pub fn interrupted() -> bool {
    SIGNAL.load(Ordering::SeqCst) != 0
}

/// The exit code for a run a signal stopped, as shells report it: 128 + the
/// signal (SIGHUP 129, SIGINT 130, SIGTERM 143); None when none arrived.
pub fn signal_exit_code() -> Option<u8> {
    match SIGNAL.load(Ordering::SeqCst) {
        0 => None,
        s => Some(128u8.saturating_add(s as u8)),
    }
}

/// Where the executive program is: the setting, else next to this program.
pub fn executive_path(setting: &str) -> Result<PathBuf, SupervisorError> {
    if !setting.is_empty() {
        return Ok(PathBuf::from(setting));
    }
    let exe = std::env::current_exe().map_err(|e| SupervisorError::Spawn {
        path: PathBuf::from("hybrid-executive"),
        message: format!("cannot tell where this program is: {e}"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let mut tried = Vec::new();
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        let p = d.join("hybrid-executive");
        if p.is_file() {
            return Ok(p);
        }
        tried.push(p.display().to_string());
    }
    Err(SupervisorError::Spawn {
        path: PathBuf::from("hybrid-executive"),
        message: format!("not found (looked at {})", tried.join(", ")),
    })
}

/// What starting an executive needs.
#[derive(Debug, Clone)]
pub struct StartConfig {
    pub program: PathBuf,
    /// Shard A, or the embedding model (its settings from `settings.embed`,
    /// an empty device meaning shard A's).
    pub role: Role,
    pub model_dir: PathBuf,
    pub model_hash: String,
    pub split: usize,
    pub settings: Settings,
    pub segment: SegmentSpec,
}

enum Line {
    Msg(FromExecutive),
    Garbage(String),
    Closed,
}

/// A running executive and its end of the rings.
pub struct Executive {
    child: Child,
    stdin: Option<ChildStdin>,
    rx: Receiver<Line>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    pub segment: Arc<Segment>,
    pub tokens: Producer,
    pub acts: Consumer,
    pub capacities: Capacities,
    pub pid: u32,
    pub device: String,
    pub compile_ms: f64,
    pub stats: ExecStats,
    last_heard: Instant,
    heartbeat_timeout: Duration,
    call_timeout: Duration,
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with code {c}"),
        (None, Some(9)) => "was killed (SIGKILL)".into(),
        (None, Some(11)) => "crashed (SIGSEGV)".into(),
        (None, Some(6)) => "aborted (SIGABRT)".into(),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "ended".into(),
    }
}

impl Executive {
    /// Spawn and hand-shake; returns once shard A is compiled and ready.
    pub fn start(
        cfg: &StartConfig,
        sink: &mut dyn FnMut(SupervisorEvent),
    ) -> Result<Executive, SupervisorError> {
        sink(SupervisorEvent::State {
            state: ExecState::Starting,
        });
        let stale = crate::ring::remove_stale_segments();
        if !stale.is_empty() {
            sink(SupervisorEvent::StaleSegmentsRemoved {
                paths: stale.iter().map(|p| p.display().to_string()).collect(),
            });
        }
        let segment = Segment::create(&cfg.segment)?;
        let mut cmd = Command::new(&cfg.program);
        cmd.arg("--serve")
            .arg("--parent-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // The child starts with the process's cores, not those of the
        // (maybe pinned) shard-B thread spawning it; shard_a.cpu_cores
        // then narrows them in the executive.
        let cores = crate::affinity::process_cores();
        let set = crate::affinity::cpu_set(&cores);
        // SAFETY: prctl and sched_setaffinity are async-signal-safe system
        // calls; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
                libc::setpgid(0, 0);
                if !cores.is_empty() {
                    libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| SupervisorError::Spawn {
            path: cfg.program.clone(),
            message: e.to_string(),
        })?;
        let pid = child.id();
        let (tx, rx) = channel();
        if let Some(out) = child.stdout.take() {
            std::thread::spawn(move || {
                let mut out = BufReader::new(out);
                loop {
                    let msg = match protocol::read_control_line::<FromExecutive>(&mut out) {
                        ControlLine::Msg(m) => Line::Msg(m),
                        ControlLine::Bad { what } => Line::Garbage(what),
                        ControlLine::Eof => break,
                    };
                    if tx.send(msg).is_err() {
                        return;
                    }
                }
                let _ = tx.send(Line::Closed);
            });
        }
        let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
        if let Some(err) = child.stderr.take() {
            let tail = stderr_tail.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines() {
                    let Ok(line) = line else { break };
                    tracing::info!(target: "executive", pid, "{line}");
                    if let Ok(mut t) = tail.lock() {
                        if t.len() == 20 {
                            t.pop_front();
                        }
                        t.push_back(line);
                    }
                }
            });
        }
        let stdin = child.stdin.take();
        let mut exec = Executive {
            child,
            stdin,
            rx,
            stderr_tail,
            tokens: segment.producer(RingId::Tokens),
            acts: segment.consumer(RingId::Activations),
            segment,
            capacities: Capacities {
                kv_capacity: 0,
                chunk: 0,
                hidden: 0,
                act_slot_bytes: 0,
                max_out_bytes: 0,
            },
            pid,
            device: match cfg.role {
                Role::ShardA => cfg.settings.shard_a.device.clone(),
                Role::Embed => cfg.settings.embed_resolved().device,
            },
            compile_ms: 0.0,
            stats: ExecStats::default(),
            last_heard: Instant::now(),
            heartbeat_timeout: Duration::from_secs_f64(cfg.settings.executive.heartbeat_timeout_s),
            call_timeout: Duration::from_secs_f64(cfg.settings.executive.call_timeout_s),
        };
        sink(SupervisorEvent::Started {
            pid,
            segment: exec.segment.name().to_string(),
        });
        // Dropping `exec` on any error below kills and reaps the child.
        let hs = cfg.settings.executive.handshake_timeout_s;
        match exec.wait_for(Duration::from_secs_f64(hs), sink)? {
            Some(FromExecutive::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {}
            Some(FromExecutive::Hello { protocol, .. }) => {
                return Err(SupervisorError::Protocol {
                    got: protocol,
                    want: PROTOCOL_VERSION,
                });
            }
            Some(other) => {
                return Err(SupervisorError::StartFailed {
                    message: format!("expected hello, got {other:?}"),
                });
            }
            None => {
                return Err(SupervisorError::HandshakeTimeout {
                    path: cfg.program.clone(),
                    secs: hs,
                });
            }
        }
        exec.send(&ToExecutive::Start(Box::new(StartRequest {
            protocol: PROTOCOL_VERSION,
            role: cfg.role,
            embed: (cfg.role == Role::Embed).then(|| cfg.settings.embed_resolved()),
            model_dir: cfg.model_dir.clone(),
            model_hash: cfg.model_hash.clone(),
            split: cfg.split,
            segment: exec.segment.name().to_string(),
            shard_a: cfg.settings.shard_a.clone(),
            runtime_dir: cfg.settings.openvino.runtime_dir.clone(),
        })))?;
        sink(SupervisorEvent::State {
            state: ExecState::Compiling,
        });
        let ct = cfg.settings.executive.compile_timeout_s;
        loop {
            match exec.wait_for(Duration::from_secs_f64(ct), sink)? {
                Some(FromExecutive::Ready {
                    device,
                    compile_ms,
                    capacities,
                    ..
                }) => {
                    exec.capacities = capacities;
                    exec.device = device.clone();
                    exec.compile_ms = compile_ms;
                    exec.last_heard = Instant::now();
                    sink(SupervisorEvent::Ready {
                        device,
                        compile_ms,
                        capacities,
                    });
                    sink(SupervisorEvent::State {
                        state: ExecState::Ready,
                    });
                    return Ok(exec);
                }
                Some(FromExecutive::Compiling { .. }) => continue,
                Some(other) => {
                    return Err(SupervisorError::StartFailed {
                        message: format!("expected ready, got {other:?}"),
                    });
                }
                None => return Err(SupervisorError::CompileTimeout { secs: ct }),
            }
        }
    }

    fn send(&mut self, msg: &ToExecutive) -> Result<(), SupervisorError> {
        let line = encode(msg);
        let ok = self
            .stdin
            .as_mut()
            .map(|s| s.write_all(line.as_bytes()).and_then(|_| s.flush()).is_ok())
            .unwrap_or(false);
        if ok { Ok(()) } else { Err(self.lost_error()) }
    }

    fn stderr_tail(&self) -> Vec<String> {
        self.stderr_tail
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn lost_error(&mut self) -> SupervisorError {
        // Give the stderr reader a moment to catch the last words.
        let status = self.child.wait().ok();
        std::thread::sleep(Duration::from_millis(20));
        let signalled = status.is_some_and(|s| s.signal().is_some());
        let how = status.map(describe).unwrap_or_else(|| "ended".into());
        let tail = self.stderr_tail();
        let message = if tail.is_empty() {
            format!("it {how}")
        } else {
            format!("it {how}: {}", tail.join(" | "))
        };
        if signalled {
            SupervisorError::Died { message }
        } else {
            SupervisorError::StartFailed { message }
        }
    }

    /// Next protocol message other than a heartbeat, within `timeout`.
    /// `Ok(None)`: timeout. An error message or an exit is an error.
    fn wait_for(
        &mut self,
        timeout: Duration,
        sink: &mut dyn FnMut(SupervisorEvent),
    ) -> Result<Option<FromExecutive>, SupervisorError> {
        let deadline = Instant::now() + timeout;
        loop {
            if interrupted() {
                return Err(SupervisorError::Interrupted);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            match self.rx.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(Line::Msg(FromExecutive::Stats(s))) => {
                    self.last_heard = Instant::now();
                    sink(SupervisorEvent::Stats { stats: s });
                }
                Ok(Line::Msg(FromExecutive::Error { message, .. })) => {
                    return Err(SupervisorError::StartFailed { message });
                }
                Ok(Line::Msg(m)) => {
                    self.last_heard = Instant::now();
                    return Ok(Some(m));
                }
                Ok(Line::Garbage(g)) => {
                    tracing::warn!(target: "executive", "not a protocol line: {g}");
                }
                Ok(Line::Closed) | Err(RecvTimeoutError::Disconnected) => {
                    return Err(self.lost_error());
                }
                Err(RecvTimeoutError::Timeout) => {
                    if let Ok(Some(_)) = self.child.try_wait() {
                        return Err(self.lost_error());
                    }
                }
            }
        }
    }

    /// Drain control messages; an error if the executive is gone or hung.
    pub fn check(&mut self, sink: &mut dyn FnMut(SupervisorEvent)) -> Result<(), SupervisorError> {
        loop {
            match self.rx.try_recv() {
                Ok(Line::Msg(FromExecutive::Stats(s))) => {
                    self.last_heard = Instant::now();
                    self.stats = s.clone();
                    sink(SupervisorEvent::Stats { stats: s });
                }
                Ok(Line::Msg(FromExecutive::Error { message, fatal })) => {
                    self.last_heard = Instant::now();
                    tracing::warn!(target: "executive", fatal, "{message}");
                    if fatal {
                        let _ = self.child.kill();
                        return Err(SupervisorError::Lost {
                            reason: format!("reported a fatal error: {message}"),
                        });
                    }
                }
                Ok(Line::Msg(_)) => self.last_heard = Instant::now(),
                Ok(Line::Garbage(g)) => {
                    tracing::warn!(target: "executive", "not a protocol line: {g}");
                }
                Ok(Line::Closed) | Err(std::sync::mpsc::TryRecvError::Disconnected) => break,
                Err(std::sync::mpsc::TryRecvError::Empty) => break,
            }
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(SupervisorError::Lost {
                reason: describe(status),
            });
        }
        if self.stats.busy_ms > self.call_timeout.as_millis() as u64 {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Err(SupervisorError::Lost {
                reason: format!(
                    "hung: one shard A call has run for {:.1}s (executive.call_timeout_s); it was killed",
                    self.stats.busy_ms as f64 / 1e3
                ),
            });
        }
        let silent = self.last_heard.elapsed();
        if silent > self.heartbeat_timeout {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Err(SupervisorError::Lost {
                reason: format!(
                    "hung: no heartbeat for {:.1}s (executive.heartbeat_timeout_s); it was killed",
                    silent.as_secs_f64()
                ),
            });
        }
        Ok(())
    }

    /// The last lines the executive wrote to stderr.
    pub fn last_words(&self) -> Vec<String> {
        self.stderr_tail()
    }

    /// Ask it to stop; kill it if it has not within 2 s.
    pub fn shutdown(mut self) {
        let _ = self.send(&ToExecutive::Shutdown);
        self.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // Drop kills and reaps.
    }
}

impl Drop for Executive {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
