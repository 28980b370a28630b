//! Between HTTP requests and the engine: admission (`--parallel` streams at
//! once, a bounded queue behind them), one channel per request fed from the
//! engine's events, cancellation when a request goes away, and the
//! server's health.
//!
//! The engine reports every stream's events through one sink, on its own
//! thread; [`Bridge::on_event`] routes them by tag (until the stream has an
//! id) and by stream id. A [`Ticket`] is a request's hold on its stream:
//! dropping it before the stream ends (the client disconnected, the
//! handler's future was dropped) cancels the stream at once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::ApiError;
use super::metrics::Metrics;
use crate::engine::{Command, EngineEvent, Job, Rejection};
use crate::pipeline::{Event, StreamReport};
use crate::supervisor::SupervisorEvent;

/// Server tags start here, so a workbench sharing the engine keeps its own.
const FIRST_TAG: u64 = 1 << 48;

/// What a request hears about its stream.
#[derive(Debug)]
pub enum Update {
    Started {
        prompt_tokens: usize,
    },
    Text(String),
    Done(Box<StreamReport>),
    Rejected(Rejection),
    /// The engine stopped; the stream is gone.
    Failed(String),
}

/// Whether the server takes requests.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    Loading,
    Ready,
    /// The executive is being started again; streams resume after it.
    Restarting,
    Failed(String),
    ShuttingDown,
}

impl Health {
    pub fn label(&self) -> String {
        match self {
            Health::Loading => "loading".into(),
            Health::Ready => "ok".into(),
            Health::Restarting => "restarting".into(),
            Health::Failed(m) => format!("failed: {m}"),
            Health::ShuttingDown => "shutting down".into(),
        }
    }
}

struct Route {
    tx: UnboundedSender<Update>,
    stream: Option<u32>,
    /// The request went away before its stream had an id.
    abandoned: bool,
}

#[derive(Default)]
struct Routes {
    by_tag: HashMap<u64, Route>,
    by_stream: HashMap<u32, u64>,
    /// Streams told to stop whose end the engine has not reported yet.
    cancelling: HashSet<u32>,
}

pub struct Bridge {
    routes: Mutex<Routes>,
    commands: Mutex<Option<Sender<Command>>>,
    next_tag: AtomicU64,
    health: Mutex<Health>,
    failure: Mutex<Option<String>>,
    /// Tokens a stream may hold, once the engine is ready (0 before).
    capacity: AtomicUsize,
    slots: Arc<Semaphore>,
    parallel: usize,
    queue: usize,
    waiting: AtomicUsize,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Bridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (running, queued) = self.load();
        f.debug_struct("Bridge")
            .field("health", &self.health())
            .field("running", &running)
            .field("queued", &queued)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Bridge {
    pub fn new(parallel: usize, queue: usize) -> Arc<Bridge> {
        Arc::new(Bridge {
            routes: Mutex::new(Routes::default()),
            commands: Mutex::new(None),
            next_tag: AtomicU64::new(FIRST_TAG),
            health: Mutex::new(Health::Loading),
            failure: Mutex::new(None),
            capacity: AtomicUsize::new(0),
            slots: Arc::new(Semaphore::new(parallel.max(1))),
            parallel: parallel.max(1),
            queue,
            waiting: AtomicUsize::new(0),
            metrics: Metrics::default(),
        })
    }

    /// The engine's command channel.
    pub fn attach(&self, tx: Sender<Command>) {
        *lock(&self.commands) = Some(tx);
    }

    fn send(&self, c: Command) {
        if let Some(tx) = lock(&self.commands).as_ref() {
            let _ = tx.send(c);
        }
    }

    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }

    fn set_health(&self, h: Health) {
        let mut cur = lock(&self.health);
        if *cur != Health::ShuttingDown {
            *cur = h;
        }
    }

    /// Why the engine stopped, when it failed.
    pub fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    /// Tokens a stream may hold (`shard_a.kv_capacity`), once ready.
    pub fn capacity(&self) -> Option<usize> {
        Some(self.capacity.load(Ordering::SeqCst)).filter(|&c| c > 0)
    }

    /// Requests running and waiting now.
    pub fn load(&self) -> (usize, usize) {
        (
            self.parallel - self.slots.available_permits(),
            self.waiting.load(Ordering::SeqCst),
        )
    }

    pub fn parallel(&self) -> usize {
        self.parallel
    }

    /// Refuse new requests from now on.
    pub fn begin_shutdown(&self) {
        *lock(&self.health) = Health::ShuttingDown;
    }

    /// Cancel every stream a request holds (shutdown after the drain).
    pub fn cancel_all(&self) {
        let streams: Vec<u32> = {
            let mut r = lock(&self.routes);
            let v: Vec<u32> = r.by_stream.keys().copied().collect();
            r.cancelling.extend(v.iter().copied());
            v
        };
        for stream in streams {
            self.send(Command::Cancel { stream });
        }
    }

    /// Streams cancelled (their client went away, or shutdown) that the
    /// engine has not yet reported ended.
    pub fn cancelling(&self) -> usize {
        lock(&self.routes).cancelling.len()
    }

    /// Streams that requests hold now.
    pub fn active(&self) -> usize {
        lock(&self.routes).by_tag.len()
    }

    /// Wait for a free stream (or refuse: queue full, shutting down), then
    /// start `job`.
    pub async fn start(self: &Arc<Self>, job: Job) -> Result<Ticket, ApiError> {
        self.accepting()?;
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.queue {
                    self.waiting.fetch_sub(1, Ordering::SeqCst);
                    return Err(ApiError::queue_full(self.parallel, self.queue));
                }
                self.metrics.queued(1);
                let waited = Waiting(self.as_ref());
                let p = self.slots.clone().acquire_owned().await;
                drop(waited);
                p.map_err(|_| ApiError::unavailable("the server is shutting down"))?
            }
        };
        self.accepting()?;
        let tag = self.next_tag.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = unbounded_channel();
        lock(&self.routes).by_tag.insert(
            tag,
            Route {
                tx,
                stream: None,
                abandoned: false,
            },
        );
        self.metrics.in_flight(1);
        self.send(Command::Start {
            tag,
            job: Box::new(job),
        });
        Ok(Ticket {
            bridge: self.clone(),
            tag,
            rx,
            _permit: permit,
        })
    }

    fn accepting(&self) -> Result<(), ApiError> {
        match self.health() {
            Health::Ready | Health::Restarting => Ok(()),
            Health::Loading => Err(ApiError::unavailable(
                "the model is still loading; retry when GET /health answers 200",
            )),
            Health::Failed(m) => Err(ApiError::unavailable(format!("the engine stopped: {m}"))),
            Health::ShuttingDown => Err(ApiError::unavailable("the server is shutting down")),
        }
    }

    /// A request went away: cancel its stream now, or as soon as it has one.
    fn abandon(&self, tag: u64) {
        let mut r = lock(&self.routes);
        let Some(route) = r.by_tag.get_mut(&tag) else {
            return; // finished already
        };
        self.metrics.disconnected();
        match route.stream {
            Some(stream) => {
                r.by_stream.remove(&stream);
                r.by_tag.remove(&tag);
                r.cancelling.insert(stream);
                drop(r);
                self.send(Command::Cancel { stream });
            }
            None => route.abandoned = true,
        }
    }

    /// Route one engine event. Returns false for a stream that is not the
    /// server's (the workbench's chat, when both share the engine).
    pub fn on_event(&self, e: &EngineEvent) -> bool {
        match e {
            EngineEvent::Ready(info) => {
                self.capacity.store(info.capacity, Ordering::SeqCst);
                self.set_health(Health::Ready);
                false
            }
            EngineEvent::Submitted {
                tag,
                stream,
                prompt_tokens,
            } => {
                let mut r = lock(&self.routes);
                let Some(route) = r.by_tag.get_mut(tag) else {
                    return false;
                };
                if route.abandoned {
                    r.by_tag.remove(tag);
                    r.cancelling.insert(*stream);
                    drop(r);
                    self.send(Command::Cancel { stream: *stream });
                    return true;
                }
                route.stream = Some(*stream);
                let _ = route.tx.send(Update::Started {
                    prompt_tokens: *prompt_tokens,
                });
                r.by_stream.insert(*stream, *tag);
                true
            }
            EngineEvent::Rejected { tag, reason } => {
                let Some(route) = lock(&self.routes).by_tag.remove(tag) else {
                    return false;
                };
                let _ = route.tx.send(Update::Rejected(reason.clone()));
                true
            }
            EngineEvent::Pipeline(ev) => self.on_pipeline(ev),
            EngineEvent::Failed(m) => {
                *lock(&self.failure) = Some(m.clone());
                self.set_health(Health::Failed(m.clone()));
                let mut r = lock(&self.routes);
                for (_, route) in r.by_tag.drain() {
                    let _ = route.tx.send(Update::Failed(m.clone()));
                }
                r.by_stream.clear();
                false
            }
            EngineEvent::Stopped => {
                self.set_health(Health::Failed("the engine stopped".into()));
                // Requests still waiting hear it now.
                let mut r = lock(&self.routes);
                for (_, route) in r.by_tag.drain() {
                    let _ = route.tx.send(Update::Failed("the engine stopped".into()));
                }
                r.by_stream.clear();
                false
            }
        }
    }

    fn on_pipeline(&self, ev: &Event) -> bool {
        match ev {
            Event::Token { stream, text, .. } => {
                let r = lock(&self.routes);
                let Some(route) = r.by_stream.get(stream).and_then(|t| r.by_tag.get(t)) else {
                    return false;
                };
                // Every token, also one whose text is held back (an
                // incomplete character): streams send a chunk per token.
                let _ = route.tx.send(Update::Text(text.clone()));
                true
            }
            Event::Finished(report) => {
                let mut r = lock(&self.routes);
                let Some(tag) = r.by_stream.remove(&report.stream) else {
                    if r.cancelling.remove(&report.stream) {
                        self.metrics.cancelled();
                        return true;
                    }
                    return false;
                };
                r.cancelling.remove(&report.stream);
                self.metrics.stream_done(&report.metrics);
                if let Some(route) = r.by_tag.remove(&tag) {
                    let _ = route.tx.send(Update::Done(report.clone()));
                }
                true
            }
            Event::Stage(s) => {
                self.metrics.stage(s);
                false
            }
            Event::Supervisor(s) => {
                match s {
                    SupervisorEvent::Started { segment, .. } => self.metrics.segment(segment),
                    SupervisorEvent::Ready { .. } => self.set_health(Health::Ready),
                    SupervisorEvent::Lost { .. } => self.set_health(Health::Restarting),
                    SupervisorEvent::Restarting { .. } => self.metrics.restarted(),
                    _ => {}
                }
                false
            }
        }
    }
}

/// Counts a request in the queue while it waits (also when its client
/// goes away meanwhile).
struct Waiting<'a>(&'a Bridge);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.metrics.queued(-1);
    }
}

/// A request's hold on its stream and its slot.
pub struct Ticket {
    bridge: Arc<Bridge>,
    tag: u64,
    pub rx: UnboundedReceiver<Update>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.bridge.abandon(self.tag);
        self.bridge.metrics.in_flight(-1);
    }
}
