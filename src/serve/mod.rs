//! `hybrid-tui serve`: an OpenAI-compatible HTTP API over the engine, so
//! editors, agents and scripts can use the model this tool runs.
//!
//! ```text
//!  clients ──HTTP──▶ axum (tokio) ── routes: /v1/models, /v1/chat/completions,
//!                        │           /v1/completions, /health, /metrics
//!                        ▼
//!                 Bridge: admission (--parallel streams, --queue waiting, 429 beyond),
//!                        │ a channel per request, cancel on disconnect, health
//!                        ▼  Command::Start / Cancel          ▲ EngineEvent (sink)
//!                 Engine thread: Pipeline (shard A in the executive, shard B here)
//! ```
//!
//! Requests are pipeline streams, so concurrent requests keep both shards
//! busy at once. Every error is OpenAI-shaped ([`error::ApiError`]);
//! a failure during a stream is sent as an SSE `error` event before the
//! stream closes. On shutdown new requests get 503, requests in flight have
//! `server.drain_s` to finish and are cancelled after it, then the engine
//! stops the executive and removes the segment.

mod answer;
pub mod api;
pub mod bridge;
pub mod embeddings;
pub mod error;
pub mod metrics;
mod routes;
pub mod stop;

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::embed::worker::EmbedWorker;
use crate::engine::{Engine, EngineEvent};
use bridge::Bridge;

/// Streams at once when `--parallel` is not given. Where the shards are
/// separate devices, several streams keep both busy (4 about doubled
/// throughput on the H200); on a CPU-only machine the count does not change
/// throughput, only who waits (docs/measurements.md, "API server").
pub const DEFAULT_PARALLEL: usize = 4;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub host: String,
    pub port: u16,
    /// Clients must send `Authorization: Bearer KEY`; None for no key.
    pub api_key: Option<String>,
    pub parallel: usize,
    pub queue: usize,
    pub max_body_kib: usize,
    pub drain: Duration,
    /// The id `/v1/models` lists and requests may name.
    pub model_id: String,
    /// When the model was made (seconds since the epoch), for `/v1/models`.
    pub created: u64,
    /// The embedding model's id (`embed.model`): `/v1/models` lists it and
    /// `/v1/embeddings` takes it.
    pub embed_model_id: String,
}

impl ServeOptions {
    /// From the `[server]` settings; the caller adds the key and the model.
    pub fn from_settings(s: &Settings, model_id: String, created: u64) -> ServeOptions {
        ServeOptions {
            host: s.server.host.clone(),
            port: s.server.port,
            api_key: None,
            parallel: if s.server.parallel == 0 {
                DEFAULT_PARALLEL
            } else {
                s.server.parallel
            },
            queue: s.server.queue,
            max_body_kib: s.server.max_body_kib,
            drain: Duration::from_secs_f64(s.server.drain_s),
            model_id,
            created,
            embed_model_id: s.embed.model.clone(),
        }
    }

    /// Whether the address is loopback only.
    pub fn is_loopback(&self) -> bool {
        match self.host.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => self.host == "localhost",
        }
    }
}

/// The id clients see for a model source: the Hub id, "demo", or the
/// baked directory's name.
pub fn model_id(source: &str, dir: &Path) -> String {
    let name = |p: &Path| {
        p.canonicalize()
            .unwrap_or_else(|_| p.to_path_buf())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    };
    match crate::catalog::Source::parse(source) {
        Ok(crate::catalog::Source::Hub { repo, .. }) => repo,
        Ok(crate::catalog::Source::Demo) => "demo".into(),
        Ok(crate::catalog::Source::Dir(p)) => name(&p),
        Err(_) => name(dir),
    }
}

/// When the baked model was written (seconds since the epoch; 0 unknown).
pub fn created(dir: &Path) -> u64 {
    std::fs::metadata(dir.join(crate::bake::store::MANIFEST))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The API key from `server.api_key_file` ("" = none).
pub fn key_from_file(path: &Path) -> Result<String, ServeError> {
    let k = std::fs::read_to_string(path).map_err(|source| ServeError::KeyFile {
        path: path.to_path_buf(),
        message: source.to_string(),
    })?;
    let k = k.trim().to_string();
    if k.is_empty() {
        return Err(ServeError::KeyFile {
            path: path.to_path_buf(),
            message: "the file is empty; put the key in it".into(),
        });
    }
    Ok(k)
}

/// One line of the request log.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestLine {
    pub peer: SocketAddr,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub ms: f64,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// stop, length, error, disconnected, or "" for requests that generate nothing.
    pub finish: String,
    pub decode_tok_s: f64,
    pub user: Option<String>,
}

impl std::fmt::Display for RequestLine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {} {:.0}ms",
            self.peer, self.method, self.path, self.status, self.ms
        )?;
        if !self.finish.is_empty() {
            write!(
                f,
                " prompt={} completion={} finish={} {:.1}tok/s",
                self.prompt_tokens, self.completion_tokens, self.finish, self.decode_tok_s
            )?;
        }
        if let Some(u) = &self.user {
            write!(f, " user={u}")?;
        }
        Ok(())
    }
}

/// What the server tells its front end (the CLI prints it, the workbench
/// shows it).
#[derive(Debug, Clone)]
pub enum Notice {
    Listening(SocketAddr),
    /// The model is loaded and the executive ready: requests are taken.
    Ready(String),
    Request(RequestLine),
    /// Shutdown began: `n` requests still in flight.
    Draining(usize),
    /// Shard A's executive was lost (why); the pipeline restarts it within
    /// `executive.max_restarts` and streams continue after it.
    Lost(String),
    /// A new executive is being started (attempt n).
    Restarting(u32),
}

pub type NoticeSink = Arc<dyn Fn(Notice) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "cannot listen on {addr}: {source} (is another server on that port? pick one with --port)"
    )]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("the server stopped: {0}")]
    Io(#[from] std::io::Error),
    #[error("the engine stopped: {0}")]
    Engine(String),
    #[error("the API key file {path}: {message}")]
    KeyFile {
        path: std::path::PathBuf,
        message: String,
    },
}

/// Run the server until `shutdown` completes (or the engine fails), then
/// drain, cancel what is left, and stop the engine.
pub async fn run(
    settings: &Settings,
    model_dir: &Path,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
    notice: NoticeSink,
) -> Result<(), ServeError> {
    let listener = bind(&opts).await?;
    notice(Notice::Listening(listener.local_addr()?));
    let bridge = Bridge::new(opts.parallel, opts.queue);
    let failed = Arc::new(tokio::sync::Notify::new());
    let engine = {
        let (bridge, failed, notice) = (bridge.clone(), failed.clone(), notice.clone());
        Engine::start(settings.clone(), model_dir.to_path_buf(), move |e| {
            if matches!(e, EngineEvent::Failed(_) | EngineEvent::Stopped) {
                failed.notify_one();
            }
            tell(&notice, &e);
            bridge.on_event(&e);
        })
    };
    bridge.attach(engine.sender());
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = failed.notified() => {}
        }
    };
    let embed = EmbedWorker::spawn(settings.clone());
    let served = serve_on(listener, bridge.clone(), embed.clone(), opts, stop, notice).await;
    // The embedding model's executive and segment go before we return.
    let _ = tokio::task::spawn_blocking(move || embed.stop()).await;
    // Stops the executive and removes the segment; joins the engine thread.
    let _ = tokio::task::spawn_blocking(move || engine.shutdown()).await;
    served?;
    match bridge.failure() {
        Some(m) => Err(ServeError::Engine(m)),
        None => Ok(()),
    }
}

/// Bind the server's address.
pub async fn bind(opts: &ServeOptions) -> Result<tokio::net::TcpListener, ServeError> {
    let addr = format!("{}:{}", opts.host, opts.port);
    tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}

/// What an engine event means to the server's front end.
pub fn tell(notice: &NoticeSink, e: &EngineEvent) {
    match e {
        EngineEvent::Ready(info) => notice(Notice::Ready(format!(
            "{} (split {} of {} layers, shard A on {}, shard B on {})",
            info.model_dir.display(),
            info.split,
            info.layers,
            info.shard_a_device,
            info.shard_b_backend
        ))),
        EngineEvent::Pipeline(crate::pipeline::Event::Supervisor(
            crate::supervisor::SupervisorEvent::Lost { reason, .. },
        )) => notice(Notice::Lost(reason.clone())),
        EngineEvent::Pipeline(crate::pipeline::Event::Supervisor(
            crate::supervisor::SupervisorEvent::Restarting { attempt, .. },
        )) => notice(Notice::Restarting(*attempt)),
        _ => {}
    }
}

/// Serve requests through `bridge` (attached to a running engine) until
/// `stop` completes; then refuse new requests, let those in flight finish
/// for `opts.drain`, and cancel the rest.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    bridge: Arc<Bridge>,
    embed: EmbedWorker,
    opts: ServeOptions,
    stop: impl Future<Output = ()> + Send + 'static,
    notice: NoticeSink,
) -> Result<(), ServeError> {
    let drain_for = opts.drain;
    let app = routes::router(routes::Server {
        bridge: bridge.clone(),
        embed,
        opts,
        notice: notice.clone(),
    });
    let drain = async move {
        stop.await;
        bridge.begin_shutdown();
        notice(Notice::Draining(bridge.active()));
        let deadline = Instant::now() + drain_for;
        while bridge.active() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bridge.cancel_all();
    };
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(drain)
    .await?;
    Ok(())
}
