//! The workbench: a ratatui front end over the engine.
//!
//! One loop (`run_loop`) over one event type: terminal input (crossterm's
//! async stream), engine events, telemetry samples, log lines and a frame
//! tick. Each round draws once from the state (`view::render` only reads),
//! then takes the next event and every other one already queued. The loop
//! is generic over the backend and the input stream, so tests drive the
//! real loop with scripted keys on a `TestBackend`.
//!
//! The terminal: `ratatui::try_init` (raw mode, alternate screen, a panic
//! hook that restores), mouse capture and bracketed paste on; restored on
//! quit, on SIGTERM/SIGINT/SIGHUP (tokio signal streams end the loop) and on
//! panic. The executive runs in its own process group, so its crash never
//! touches the terminal: the chat shows it, the pipeline restarts it, the
//! answer continues. Logging goes to the log file and the log view (F2),
//! never to the terminal the app owns. The model is resolved on a "model"
//! thread while the screen is up: downloads arrive as `AppEvent::Download`
//! (a gauge per file), then `AppEvent::Model` says what was got (the label,
//! why a configured model could not be had, whether it is the demo), and
//! the thread starts the engine into a shared slot unless the app is
//! already quitting.

pub mod keymap;
pub mod state;
pub mod view;

/// The app's state (`state::app`), where front ends and tests reach it.
pub use state::app;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use ratatui::Terminal;
use ratatui::backend::Backend;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::config::Settings;
use crate::embed::worker::EmbedWorker;
use crate::engine::Engine;
use crate::hw::Root;
use crate::hw::sampler::{self, Pids};
use app::{App, AppEvent, Screen};
use state::server::ServerEvent;

/// Why the workbench could not run (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    /// A `[keys]` binding (the settings check these first).
    #[error(transparent)]
    Keys(#[from] crate::config::keys::KeyError),
    #[error("the terminal: {0}")]
    Terminal(#[from] std::io::Error),
    #[error("drawing: {0}")]
    Draw(String),
    #[error("reading the terminal: {0}")]
    Read(std::io::Error),
}

/// Frame tick: ring and speed figures refresh at this rate.
pub const TICK: Duration = Duration::from_millis(100);

/// Run the app loop until the app quits, the input ends or `stop` resolves.
pub async fn run_loop<B, S>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    mut input: S,
    rx: &mut UnboundedReceiver<AppEvent>,
    mut stop: impl std::future::Future<Output = ()> + Unpin,
) -> Result<(), TuiError>
where
    B: Backend,
    B::Error: Send + Sync + 'static,
    S: Stream<Item = std::io::Result<crossterm::event::Event>> + Unpin,
{
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        terminal
            .draw(|f| view::render(f, app))
            .map_err(|e| TuiError::Draw(e.to_string()))?;
        tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(e)) => app.on_event(AppEvent::Term(e)),
                Some(Err(e)) => return Err(TuiError::Read(e)),
                None => app.quit = true,
            },
            Some(ev) = rx.recv() => {
                app.on_event(ev);
                while let Ok(ev) = rx.try_recv() {
                    app.on_event(ev);
                }
            }
            _ = tick.tick() => app.on_event(AppEvent::Tick),
            _ = &mut stop => return Ok(()),
        }
        if app.quit {
            return Ok(());
        }
    }
}

/// The log file and, line by line, the app's log pane.
fn init_logging(settings: &Settings, tx: UnboundedSender<AppEvent>) {
    let pane: crate::logging::LineSink = Arc::new(move |line: &str| {
        let _ = tx.send(AppEvent::Log(line.to_string()));
    });
    crate::logging::init(settings, Some(pane));
}

/// The engine, once the model thread has started it; `closed` once the
/// workbench is quitting (no engine may start after that).
#[derive(Default)]
struct EngineSlot {
    engine: Option<Engine>,
    /// The API server beside the chat (`--serve`).
    server: Option<ServerThread>,
    closed: bool,
}

/// The API server's thread and how to stop it.
struct ServerThread {
    stop: Arc<tokio::sync::Notify>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerThread {
    /// Refuse new requests, cancel those in flight, wait for the thread.
    fn stop(self) {
        self.stop.notify_one();
        let _ = self.thread.join();
    }
}

/// Open the workbench on the real terminal. The model is resolved on a
/// thread while the screen is up (a Hub model's download shows in a pane),
/// then the engine starts; why there is no model is shown in the app.
pub fn run_terminal(settings: &Settings, profile: &str) -> Result<(), TuiError> {
    let (tx, mut rx) = unbounded_channel();
    init_logging(settings, tx.clone());
    let keymap = keymap::Keymap::new(&settings.keys.map())?;
    let slot: Arc<Mutex<EngineSlot>> = Arc::default();
    let commands: Box<dyn FnMut(crate::engine::Command) + Send> = {
        let slot = slot.clone();
        Box::new(move |c| {
            if let Ok(g) = slot.lock()
                && let Some(e) = &g.engine
            {
                e.send(c);
            }
        })
    };
    let mut app = App::new(profile, &settings.model.source, keymap, commands);
    // The embedding model (retrieval, `/v1/embeddings`): started on first use.
    let embed = EmbedWorker::spawn(settings.clone());
    let _stop_embed = StopEmbed(embed.clone());
    app.set_retriever(retriever(embed.clone(), settings.embed.top_k, tx.clone()));
    app.set_indexer(indexer(embed.clone(), settings, tx.clone()));
    {
        let (tx, settings, slot, embed) =
            (tx.clone(), settings.clone(), slot.clone(), embed.clone());
        let _ = std::thread::Builder::new()
            .name("model".into())
            .spawn(move || resolve_and_start(&settings, &tx, &slot, &embed));
    }
    start_sampler(app.pids.clone(), &tx);
    app.set_check_runner(check_runner(settings, profile, Root::live(), tx.clone()));
    // The executive is stopped and the segment removed before we return,
    // and also if anything below panics (the guard's drop).
    let _guard = StopEngine(slot);
    on_terminal(&mut app, &mut rx)
}

/// Stops the embedding model's executive (and removes its segment) when dropped.
struct StopEmbed(EmbedWorker);

impl Drop for StopEmbed {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// How the app retrieves: a thread per question embeds it (the embedding
/// thread) and searches the index, then sends `AppEvent::Retrieved`.
fn retriever(embed: EmbedWorker, k: usize, tx: UnboundedSender<AppEvent>) -> app::Retriever {
    Box::new(move |tag, name, question| {
        let (embed, tx) = (embed.clone(), tx.clone());
        let _ = std::thread::Builder::new()
            .name("retrieve".into())
            .spawn(move || {
                let result = (|| -> Result<Vec<crate::embed::index::Hit>, String> {
                    let index = crate::embed::index::Index::open(&name, false)
                        .map_err(|e| e.to_string())?;
                    let got = embed
                        .embed_blocking(vec![question], crate::embed::TextKind::Query)
                        .map_err(|e| e.to_string())?;
                    let q = got.vectors.into_iter().next().unwrap_or_default();
                    index
                        .check_model(&got.model, q.len())
                        .map_err(|e| e.to_string())?;
                    index.search(&q, k).map_err(|e| e.to_string())
                })();
                let _ = tx.send(AppEvent::Retrieved { tag, result });
            });
    })
}

/// How `/index add` indexes: a pass on the embedding thread, its progress
/// sent as `AppEvent::Indexing`.
fn indexer(embed: EmbedWorker, settings: &Settings, tx: UnboundedSender<AppEvent>) -> app::Indexer {
    let opts = crate::embed::chunk::ChunkOptions::from_settings(&settings.embed);
    Box::new(move |name, path| {
        let tx = tx.clone();
        let progress_name = name.clone();
        let job = crate::embed::worker::IndexJob {
            name: name.clone(),
            roots: vec![path],
            opts,
            progress: Box::new(move |progress| {
                let _ = tx.send(AppEvent::Indexing {
                    name: progress_name.clone(),
                    progress,
                });
            }),
        };
        if let Err(e) = embed.index(job) {
            tracing::warn!("cannot index {name}: {e}");
        }
    })
}

/// Stops the engine (executive and segment) when dropped.
struct StopEngine(Arc<Mutex<EngineSlot>>);

impl Drop for StopEngine {
    fn drop(&mut self) {
        let (engine, server) = match self.0.lock() {
            Ok(mut g) => {
                g.closed = true;
                (g.engine.take(), g.server.take())
            }
            Err(_) => (None, None),
        };
        // The server first: its streams are cancelled while the engine runs.
        if let Some(s) = server {
            s.stop();
        }
        if let Some(e) = engine {
            e.shutdown();
        }
    }
}

/// The model thread: resolve `model.source` (downloads reported to the
/// app), start the engine, tell the app.
fn resolve_and_start(
    settings: &Settings,
    tx: &UnboundedSender<AppEvent>,
    slot: &Mutex<EngineSlot>,
    embed: &EmbedWorker,
) {
    use crate::catalog::{CatalogEvent, Fallback};
    let mut notes = Vec::new();
    let r = crate::catalog::resolve(&settings.model.source, Fallback::Demo, &mut |e| match e {
        CatalogEvent::Step(step) => tracing::info!("{step}"),
        CatalogEvent::Download(p) => {
            let _ = tx.send(AppEvent::Download(p));
        }
        CatalogEvent::Fallback(lines) => {
            for l in &lines {
                tracing::info!("{l}");
            }
            // The first line says why; the screen says the rest itself.
            notes.extend(lines.into_iter().take(1));
        }
    });
    let dir = match r {
        Ok(d) => d,
        Err(e) => {
            let _ = tx.send(AppEvent::Model(app::ModelOutcome {
                result: Err(e.to_string()),
                notes,
                demo: false,
            }));
            return;
        }
    };
    let label = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let demo = crate::catalog::demo::is_demo(&dir);
    let Ok(mut g) = slot.lock() else { return };
    if g.closed {
        return;
    }
    // The app hears of the model before the engine's first event.
    let _ = tx.send(AppEvent::Model(app::ModelOutcome {
        result: Ok(label),
        notes,
        demo,
    }));
    let etx = tx.clone();
    let bridge = settings.server.enabled.then(|| serve_bridge(settings, tx));
    let routed = bridge.clone();
    let engine = Engine::start(settings.clone(), dir.clone(), move |e| {
        // The server's streams go to the server; everything else (and what
        // both need: readiness, stages, the executive) to the app.
        if routed.as_ref().is_some_and(|b| b.on_event(&e)) {
            return;
        }
        let _ = etx.send(AppEvent::Engine(e));
    });
    if let Some(b) = bridge {
        b.attach(engine.sender());
        g.server = start_server(settings, &dir, b, embed.clone(), tx);
    }
    g.engine = Some(engine);
}

fn serve_bridge(
    settings: &Settings,
    tx: &UnboundedSender<AppEvent>,
) -> Arc<crate::serve::bridge::Bridge> {
    let opts = crate::serve::ServeOptions::from_settings(settings, String::new(), 0);
    let b = crate::serve::bridge::Bridge::new(opts.parallel, opts.queue);
    let _ = tx.send(AppEvent::Server(ServerEvent::Attached(b.clone())));
    b
}

/// The API server on a thread of its own, sharing the engine through
/// `bridge`; what it does reaches the app as `AppEvent::Server`.
fn start_server(
    settings: &Settings,
    dir: &std::path::Path,
    bridge: Arc<crate::serve::bridge::Bridge>,
    embed: EmbedWorker,
    tx: &UnboundedSender<AppEvent>,
) -> Option<ServerThread> {
    use crate::serve::{self, Notice, ServeOptions};
    let fail = |m: String| {
        let _ = tx.send(AppEvent::Server(ServerEvent::Failed(m)));
        None
    };
    let mut opts = ServeOptions::from_settings(
        settings,
        serve::model_id(&settings.model.source, dir),
        serve::created(dir),
    );
    // Quitting the workbench cancels what runs.
    opts.drain = std::time::Duration::ZERO;
    if !settings.server.api_key_file.is_empty() {
        match serve::key_from_file(std::path::Path::new(&settings.server.api_key_file)) {
            Ok(k) => opts.api_key = Some(k),
            Err(e) => return fail(e.to_string()),
        }
    } else if !opts.is_loopback() {
        tracing::warn!(
            "serving on {} without an API key (server.api_key_file)",
            opts.host
        );
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let (stopped, tx2) = (stop.clone(), tx.clone());
    let notice: serve::NoticeSink = Arc::new(move |n: Notice| {
        if let Notice::Request(line) = &n {
            tracing::info!(target: "serve", "{line}");
        }
        let _ = tx2.send(AppEvent::Server(ServerEvent::Notice(n)));
    });
    let tx3 = tx.clone();
    let thread = std::thread::Builder::new()
        .name("server".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx3.send(AppEvent::Server(ServerEvent::Failed(e.to_string())));
                    return;
                }
            };
            let r = rt.block_on(async {
                let listener = serve::bind(&opts).await?;
                notice(Notice::Listening(listener.local_addr()?));
                serve::serve_on(
                    listener,
                    bridge,
                    embed,
                    opts,
                    async move { stopped.notified().await },
                    notice,
                )
                .await
            });
            if let Err(e) = r {
                let _ = tx3.send(AppEvent::Server(ServerEvent::Failed(e.to_string())));
            }
        });
    match thread {
        Ok(thread) => Some(ServerThread { stop, thread }),
        Err(e) => fail(format!("cannot start the server's thread: {e}")),
    }
}

/// `hybrid-tui check` on a terminal: the check screen alone, live.
pub fn run_check_screen(settings: &Settings, profile: &str, root: Root) -> Result<(), TuiError> {
    let (tx, mut rx) = unbounded_channel();
    init_logging(settings, tx.clone());
    let keymap = keymap::Keymap::new(&settings.keys.map())?;
    let mut app = App::new(profile, "none", keymap, Box::new(|_| {}));
    app.check.only = true;
    app.state = crate::supervisor::ExecState::Stopped;
    let pids = Pids::new();
    {
        let tx = tx.clone();
        sampler::spawn(root.clone(), pids, sampler::PERIOD, move |s| {
            tx.send(AppEvent::Telemetry(Box::new(s))).is_ok()
        });
    }
    app.set_check_runner(check_runner(settings, profile, root, tx));
    app.open_check();
    debug_assert_eq!(app.screen, Screen::Check);
    on_terminal(&mut app, &mut rx)
}

fn start_sampler(pids: Pids, tx: &UnboundedSender<AppEvent>) {
    let tx = tx.clone();
    sampler::spawn(Root::live(), pids, sampler::PERIOD, move |s| {
        tx.send(AppEvent::Telemetry(Box::new(s))).is_ok()
    });
}

/// Runs the hardware check on a thread and sends the report to the app.
fn check_runner(
    settings: &Settings,
    profile: &str,
    root: Root,
    tx: UnboundedSender<AppEvent>,
) -> Box<dyn FnMut() + Send> {
    let settings = settings.clone();
    let profile = profile.to_string();
    Box::new(move || {
        let (settings, profile, root, tx) =
            (settings.clone(), profile.clone(), root.clone(), tx.clone());
        let _ = std::thread::Builder::new()
            .name("check".into())
            .spawn(move || {
                let r = crate::hw::checks::report(&root, &settings, &profile);
                let _ = tx.send(AppEvent::Check(Box::new(r)));
            });
    })
}

/// Take over the terminal, run the loop until the app quits or a signal
/// comes, and give the terminal back as it was.
fn on_terminal(app: &mut App, rx: &mut UnboundedReceiver<AppEvent>) -> Result<(), TuiError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let mut terminal = ratatui::try_init()?;
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::event::EnableMouseCapture,
        crossterm::event::EnableBracketedPaste
    );
    let result = rt.block_on(async {
        let stop = Box::pin(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
                _ = hup.recv() => {},
            }
        });
        run_loop(
            &mut terminal,
            app,
            crossterm::event::EventStream::new(),
            rx,
            stop,
        )
        .await
    });
    let _ = crossterm::execute!(
        std::io::stdout(),
        crossterm::event::DisableMouseCapture,
        crossterm::event::DisableBracketedPaste
    );
    // Not ratatui::restore() nor the Terminal's drop: both print failures
    // with eprintln!, which panics when the terminal is gone (a closed
    // window, SIGHUP).
    let _ = terminal.show_cursor();
    std::mem::forget(terminal);
    let _ = ratatui::try_restore();
    drop(rt);
    result
}

/// Stops the bench thread and waits for it (its pipeline stops the
/// executive and removes the segment) when dropped.
struct StopBench {
    stop: crate::bench::StopFlag,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StopBench {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `hybrid-tui bench` on a terminal: the bench runs on a thread while the
/// screen shows it live; the record is saved by the thread (so a stop
/// keeps the rows so far) and returned for printing after the screen closes.
pub fn run_bench_screen(
    settings: &Settings,
    profile: &str,
    model_dir: PathBuf,
    plan: crate::bench::Plan,
    save: impl Fn(&mut crate::bench::record::BenchRecord) -> String + Send + 'static,
) -> Result<Option<(crate::bench::record::BenchRecord, String)>, TuiError> {
    let (tx, mut rx) = unbounded_channel();
    init_logging(settings, tx.clone());
    let keymap = keymap::Keymap::new(&settings.keys.map())?;
    let label = model_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut app = App::new(profile, &label, keymap, Box::new(|_| {}));
    app.screen = Screen::Bench;
    start_sampler(app.pids.clone(), &tx);
    let stop = crate::bench::StopFlag::default();
    let out: Arc<Mutex<Option<(crate::bench::record::BenchRecord, String)>>> = Arc::default();
    let thread = {
        let (settings, profile, stop, out, tx) = (
            settings.clone(),
            profile.to_string(),
            stop.clone(),
            out.clone(),
            tx.clone(),
        );
        std::thread::Builder::new()
            .name("bench".into())
            .spawn(move || {
                let etx = tx.clone();
                let r = crate::bench::run(&settings, &profile, &model_dir, &plan, stop, &mut |e| {
                    let _ = etx.send(AppEvent::Bench(Box::new(e)));
                });
                let done = match r {
                    Ok(mut rec) => {
                        let saved = save(&mut rec);
                        if let Ok(mut g) = out.lock() {
                            *g = Some((rec.clone(), saved.clone()));
                        }
                        Ok(Box::new((rec, saved)))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let _ = tx.send(AppEvent::BenchDone(done));
            })?
    };
    let guard = StopBench {
        stop,
        thread: Some(thread),
    };
    let r = on_terminal(&mut app, &mut rx);
    if app.bench.done.is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "stopping the bench: the run in progress ends first, the rows so far are saved"
        );
    }
    drop(guard);
    r?;
    let rec = out.lock().ok().and_then(|mut g| g.take());
    Ok(rec)
}
