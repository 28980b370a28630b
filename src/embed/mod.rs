//! The embedding model as the rest of the tool uses it: [`Embedder`]
//! resolves `embed.model` (fetched and baked on first use, like the chat
//! model), starts its executive (`hybrid-executive --serve`, role embed) on
//! `embed.device`, tokenizes texts and sends them through the rings in
//! batches of `embed.batch` (two in flight), and reads back one unit vector
//! per text. A crash or hang of that executive is restarted (up to
//! `executive.max_restarts` times) and the batch sent again.
//!
//! Queries take the model's query instruction (`embed.query_instruction`);
//! documents go in as they are.

pub mod chunk;
pub mod index;
pub mod retrieve;
pub mod worker;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::bake::encoder::EncoderManifest;
use crate::bake::store::StoreError;
use crate::catalog::{self, CatalogError, CatalogEvent, Fallback};
use crate::config::Settings;
use crate::executive::embed_serve::{batch_bytes, encode_batch};
use crate::model::ModelError;
use crate::model::bert::BertSpec;
use crate::model::bert_tokens::BertTokenizer;
use crate::ring::wait::mono_ns;
use crate::ring::{RingError, SegmentSpec, SlotHeader, dtype, kind};
use crate::supervisor::protocol::{Role, model_hash};
use crate::supervisor::{Executive, StartConfig, SupervisorError, executive_path};

/// What `embed.model` may name, said when it names something else.
const WHAT_TO_GIVE: &str = "Give an embedding model: a Hub id (BAAI/bge-small-en-v1.5 is the default), or a BERT-family model's directory, Hugging Face or baked (hybrid-tui make-test-model --arch bert makes a random-weight one)";

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embed.model: {0}")]
    Catalog(#[from] CatalogError),
    #[error("embed.model = \"demo\": the demo model is a chat model. {WHAT_TO_GIVE}")]
    Demo,
    #[error("embed.model = {0:?}: no such directory. {WHAT_TO_GIVE}")]
    Missing(String),
    #[error("embed.model: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("the embedding model's executive: {0}")]
    Supervisor(#[from] SupervisorError),
    #[error("the embedding model's rings: {0}")]
    Ring(#[from] RingError),
    /// The executive could not embed a batch (its reason).
    #[error("the embedding model failed on a batch: {0}")]
    Failed(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether a text is a search query (prefixed with the query instruction)
/// or a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    Query,
    Document,
}

/// What the embedder has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EmbedStats {
    pub texts: u64,
    pub tokens: u64,
    pub batches: u64,
    /// Time from sending a batch to its vectors, summed.
    pub busy: Duration,
    pub restarts: u32,
}

/// The embedding model, running.
pub struct Embedder {
    exec: Option<Executive>,
    start: StartConfig,
    tok: BertTokenizer,
    pub spec: BertSpec,
    /// The baked model's directory.
    pub dir: PathBuf,
    pub device: String,
    batch: usize,
    max_length: usize,
    static_shape: bool,
    query_prefix: String,
    max_restarts: u32,
    next_request: u64,
    pub stats: EmbedStats,
}

/// The query prefix `embed.query_instruction` asks for.
fn query_prefix(setting: &str, spec: &BertSpec) -> String {
    match setting {
        "auto" => spec.query_instruction.clone().unwrap_or_default(),
        other => other.to_string(),
    }
}

impl Embedder {
    /// Resolve `embed.model` and start its executive; `sink` hears the
    /// catalog's steps (fetching, baking).
    pub fn start(
        settings: &Settings,
        sink: &mut dyn FnMut(CatalogEvent),
    ) -> Result<Embedder, EmbedError> {
        let e = settings.embed_resolved();
        // The catalog's own words for these suggest the chat demo model.
        if catalog::Source::parse(&e.model).map_err(CatalogError::from)? == catalog::Source::Demo {
            return Err(EmbedError::Demo);
        }
        let dir = catalog::resolve(&e.model, Fallback::None, sink).map_err(|err| match err {
            CatalogError::Missing(_) => EmbedError::Missing(e.model.clone()),
            other => other.into(),
        })?;
        let manifest = EncoderManifest::read(&dir)?;
        let spec = manifest.encoder.clone();
        let max_length = e.max_length.min(spec.max_position_embeddings);
        let tok = BertTokenizer::from_dir(&dir, max_length)?;
        let hash = model_hash(&dir).map_err(|source| EmbedError::Io {
            path: dir.join(crate::bake::store::MANIFEST),
            source,
        })?;
        let start = StartConfig {
            role: Role::Embed,
            program: executive_path(&settings.executive.path)?,
            model_dir: dir.canonicalize().unwrap_or_else(|_| dir.clone()),
            model_hash: hash,
            split: 0,
            settings: settings.clone(),
            segment: SegmentSpec {
                token_slots: 2,
                token_slot_bytes: batch_bytes(e.batch, max_length),
                act_slots: 2,
                act_slot_bytes: e.batch * spec.hidden_size * 4,
            },
        };
        let exec = Executive::start(&start, &mut |_| {})?;
        Ok(Embedder {
            device: exec.device.clone(),
            exec: Some(exec),
            start,
            tok,
            query_prefix: query_prefix(&e.query_instruction, &spec),
            spec,
            dir,
            batch: e.batch,
            max_length,
            static_shape: e.static_shapes,
            max_restarts: settings.executive.max_restarts,
            next_request: 1,
            stats: EmbedStats::default(),
        })
    }

    /// Length of the vectors.
    pub fn dim(&self) -> usize {
        self.spec.hidden_size
    }

    /// The model's name as the index and the API report it.
    pub fn model_name(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    pub fn tokenizer(&self) -> &BertTokenizer {
        &self.tok
    }

    /// One unit vector per text, in order.
    pub fn embed(&mut self, texts: &[&str], what: TextKind) -> Result<Vec<Vec<f32>>, EmbedError> {
        let seqs = texts
            .iter()
            .map(|t| match what {
                TextKind::Query if !self.query_prefix.is_empty() => {
                    self.tok.encode(&format!("{}{t}", self.query_prefix))
                }
                _ => self.tok.encode(t),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut out = Vec::with_capacity(texts.len());
        for group in seqs.chunks(self.batch * 2) {
            let mut attempt = 0;
            loop {
                match self.run_group(group) {
                    Ok(v) => {
                        out.extend(v);
                        break;
                    }
                    Err(EmbedError::Supervisor(e))
                        if e.is_transient() && attempt < self.max_restarts =>
                    {
                        attempt += 1;
                        tracing::warn!("the embedding executive was lost ({e}); restarting");
                        self.restart()?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    fn restart(&mut self) -> Result<(), EmbedError> {
        if let Some(old) = self.exec.take() {
            drop(old);
        }
        self.stats.restarts += 1;
        self.exec = Some(Executive::start(&self.start, &mut |_| {})?);
        Ok(())
    }

    /// Up to two batches in flight: the second is sent while the first runs.
    fn run_group(&mut self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let shape = self.static_shape.then_some((self.batch, self.max_length));
        let batches = seqs
            .chunks(self.batch)
            .map(|c| self.tok.batch(c, shape))
            .collect::<Result<Vec<_>, _>>()?;
        let exec = self
            .exec
            .as_mut()
            .ok_or(EmbedError::Failed("the executive is not running".into()))?;
        let mut pending = VecDeque::new();
        for b in &batches {
            let request = self.next_request;
            self.next_request += 1;
            let header = SlotHeader {
                kind: kind::EMBED_TOKENS,
                stream: b.texts() as u32,
                count: b.rows as u32,
                first_pos: b.len as u32,
                dtype: dtype::U32,
                request,
                t_submit_ns: mono_ns(),
                ..Default::default()
            };
            let payload = encode_batch(b);
            while !exec
                .tokens
                .send(header, &payload, Duration::from_millis(100))?
            {
                exec.check(&mut |_| {})?;
            }
            pending.push_back((request, b.texts(), Instant::now()));
        }
        let mut out = Vec::with_capacity(seqs.len());
        let dim = self.spec.hidden_size;
        // Every reply is read, even after a failed one, so none is left in
        // the ring for the next call to take as its own.
        let mut failed = None;
        while let Some((request, texts, sent)) = pending.pop_front() {
            let (h, payload) = loop {
                if let Some(msg) = exec.acts.recv(Duration::from_millis(100))? {
                    break (msg.header, msg.payload().to_vec());
                }
                exec.check(&mut |_| {})?;
            };
            let problem = if h.request != request {
                Some(format!(
                    "reply to request {} where {request} was due",
                    h.request
                ))
            } else if h.kind == kind::ERROR {
                Some(String::from_utf8_lossy(&payload).into_owned())
            } else if payload.len() != texts * dim * 4 {
                Some(format!(
                    "{} bytes of vectors for {texts} texts of {dim}",
                    payload.len()
                ))
            } else {
                None
            };
            if let Some(p) = problem {
                failed.get_or_insert(p);
                continue;
            }
            let floats: Vec<f32> = payload
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            out.extend(floats.chunks_exact(dim).map(<[f32]>::to_vec));
            self.stats.batches += 1;
            self.stats.texts += texts as u64;
            self.stats.busy += sent.elapsed();
        }
        if let Some(p) = failed {
            return Err(EmbedError::Failed(p));
        }
        self.stats.tokens += seqs.iter().map(|s| s.len() as u64).sum::<u64>();
        Ok(out)
    }

    /// Ask the executive to stop (it is killed if it does not).
    pub fn shutdown(mut self) {
        if let Some(e) = self.exec.take() {
            e.shutdown();
        }
    }
}
