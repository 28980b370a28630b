//! The embedding model behind a thread of its own, for front ends that are
//! not one loop (the API server, the workbench): requests go in over a
//! channel, answers come back on a oneshot. The thread starts the
//! [`Embedder`] on the first request (so nothing is fetched or compiled
//! until embeddings are wanted), keeps it, and shuts it down when the
//! last handle is dropped. It owns the executive, so the executive's
//! PR_SET_PDEATHSIG is tied to this long-lived thread, not to a pool
//! thread that may come and go. A model that fails to start is tried
//! again on the next request.

use std::path::PathBuf;
use std::sync::mpsc;

use super::chunk::ChunkOptions;
use super::index::{Index, IndexEvent, IndexReport};
use super::{EmbedError, Embedder, TextKind};
use crate::config::Settings;

/// What one request got: a vector per text and the tokens they took.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: u64,
    /// The baked model that made them.
    pub model: String,
}

type Reply = tokio::sync::oneshot::Sender<Result<Embedded, EmbedError>>;

enum Job {
    Embed {
        texts: Vec<String>,
        kind: TextKind,
        reply: Reply,
    },
    /// Bring an index up to date (`Index::update`) on this thread.
    Index(Box<IndexJob>),
    /// Shut the model's executive down, then say so.
    Stop(mpsc::Sender<()>),
}

/// What an indexing pass reports as it goes, and at its end.
#[derive(Debug, Clone)]
pub enum IndexProgress {
    /// Files looked at of all found, chunks stored, on which device.
    Files {
        done: usize,
        total: usize,
        chunks: usize,
        device: String,
    },
    /// The pass ended: its report, or why it failed.
    Done(Result<IndexReport, String>),
}

/// An indexing pass for the worker: index `name` over `roots`.
pub struct IndexJob {
    pub name: String,
    pub roots: Vec<PathBuf>,
    pub opts: ChunkOptions,
    pub progress: Box<dyn FnMut(IndexProgress) + Send>,
}

/// A handle on the embedding thread; cheap to clone.
#[derive(Clone)]
pub struct EmbedWorker {
    tx: mpsc::Sender<Job>,
}

impl EmbedWorker {
    /// Spawn the thread (the model starts with the first request).
    pub fn spawn(settings: Settings) -> EmbedWorker {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("embed".into())
            .spawn(move || serve(settings, rx))
            .ok();
        EmbedWorker { tx }
    }

    /// Ask for `texts`' vectors; await the answer (the model could not
    /// start, or failed, or the thread is gone: the error says which).
    pub async fn embed(&self, texts: Vec<String>, kind: TextKind) -> Result<Embedded, EmbedError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Embed { texts, kind, reply })
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// [`EmbedWorker::embed`] for callers outside an async runtime.
    pub fn embed_blocking(
        &self,
        texts: Vec<String>,
        kind: TextKind,
    ) -> Result<Embedded, EmbedError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx
            .send(Job::Embed { texts, kind, reply })
            .map_err(|_| stopped())?;
        rx.blocking_recv().map_err(|_| stopped())?
    }

    /// Index `job.roots` into `job.name` on the embedding thread (requests
    /// sent meanwhile wait their turn); progress through `job.progress`.
    pub fn index(&self, job: IndexJob) -> Result<(), EmbedError> {
        self.tx
            .send(Job::Index(Box::new(job)))
            .map_err(|_| stopped())
    }

    /// Stop the model's executive (its segment removed) and wait for it;
    /// later requests start it again. Call before the process exits.
    pub fn stop(&self) {
        let (done, rx) = mpsc::channel();
        if self.tx.send(Job::Stop(done)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// The embedder, started on first use.
fn ready<'a>(
    settings: &Settings,
    embedder: &'a mut Option<Embedder>,
) -> Result<&'a mut Embedder, EmbedError> {
    if embedder.is_none() {
        let e = Embedder::start(settings, &mut |e| tracing::info!("embed.model: {e:?}"))?;
        tracing::info!(model = %e.model_name(), device = %e.device, "embedding model ready");
        *embedder = Some(e);
    }
    embedder
        .as_mut()
        .ok_or_else(|| EmbedError::Failed("the embedding model did not start".into()))
}

/// One indexing pass on this thread.
fn index_pass(e: &mut Embedder, job: &mut IndexJob) -> Result<IndexReport, String> {
    let mut index = Index::open(&job.name, true).map_err(|x| x.to_string())?;
    index
        .bind_model(&e.model_name(), e.dim(), false)
        .map_err(|x| x.to_string())?;
    let device = e.device.clone();
    let mut chunks = 0;
    let progress = &mut job.progress;
    index
        .update(&job.roots, e, &job.opts, &mut |ev| {
            if let IndexEvent::File {
                done,
                total,
                chunks: c,
                ..
            } = ev
            {
                chunks += c;
                progress(IndexProgress::Files {
                    done,
                    total,
                    chunks,
                    device: device.clone(),
                });
            }
        })
        .map_err(|x| x.to_string())
}

fn stopped() -> EmbedError {
    EmbedError::Failed("the embedding thread has stopped".into())
}

fn serve(settings: Settings, rx: mpsc::Receiver<Job>) {
    let mut embedder: Option<Embedder> = None;
    while let Ok(job) = rx.recv() {
        let (texts, kind, reply) = match job {
            Job::Embed { texts, kind, reply } => (texts, kind, reply),
            Job::Index(mut job) => {
                let result = match ready(&settings, &mut embedder) {
                    Ok(e) => index_pass(e, &mut job),
                    Err(err) => Err(err.to_string()),
                };
                (job.progress)(IndexProgress::Done(result));
                continue;
            }
            Job::Stop(done) => {
                if let Some(e) = embedder.take() {
                    e.shutdown();
                }
                let _ = done.send(());
                continue;
            }
        };
        let e = match ready(&settings, &mut embedder) {
            Ok(e) => e,
            Err(err) => {
                let _ = reply.send(Err(err));
                continue;
            }
        };
        let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
        let before = e.stats.tokens;
        let answer = e.embed(&texts, kind).map(|vectors| Embedded {
            vectors,
            tokens: e.stats.tokens - before,
            model: e.model_name(),
        });
        let _ = reply.send(answer);
    }
    if let Some(e) = embedder {
        e.shutdown();
    }
}
