//! The scheduler: streams through shard A (the executive, over the rings)
//! and shard B (burn, in this thread).
//!
//! Each stream has at most one message in flight. A prompt goes to shard A
//! in chunks of up to `shard_a.prefill_chunk` tokens; every reply runs
//! through shard B at once, and the reply that brings shard B level with
//! the stream's tokens is sampled. With several streams the token ring
//! holds work for shard A while shard B computes another stream's reply:
//! both shards busy at once.
//!
//! When the executive dies or hangs, a new one is started (with backoff)
//! and every live stream is prefilled again from position 0; shard B skips
//! the rows it already holds, so the conversation continues where it was.

mod events;
mod pool;
pub mod prompt;
mod receive;
mod restart;
mod stream;
pub mod text;

pub use events::{Event, Finish, StageSample, StreamMetrics, StreamReport};
pub use pool::{PoolError, configure_cpu_pool};
use restart::start_again;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokenizers::Tokenizer;

use crate::bake::store::BakedModel;
use crate::config::Settings;
use crate::ring::wait::mono_ns;
use crate::ring::{SegmentSpec, SlotHeader, dtype, flags, kind};
use crate::shard_b::sampling::{SamplingParams, StopCriteria};
use crate::shard_b::{DecodeMode, LoadOptions, ShardB, ShardBError, WeightDtype, select_device};
use crate::supervisor::protocol::model_hash;
use crate::supervisor::{Executive, StartConfig, SupervisorError, SupervisorEvent, executive_path};
use stream::StreamState;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    #[error(transparent)]
    ShardB(#[from] ShardBError),
    #[error(transparent)]
    Store(#[from] crate::bake::store::StoreError),
    #[error("split k={k} is out of range: the model has {layers} layers (0 ≤ k ≤ {layers})")]
    Split { k: usize, layers: usize },
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// shard_b.cpu_cores cannot be applied to this thread.
    #[error("shard_b.cpu_cores: {0}")]
    Cores(#[from] crate::affinity::AffinityError),
    #[error(transparent)]
    Pool(#[from] PoolError),
    #[error(transparent)]
    Device(#[from] crate::shard_b::device::DeviceError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("an empty prompt: give at least one token")]
    EmptyPrompt,
    #[error("a prompt of {tokens} tokens does not fit shard_a.kv_capacity = {capacity}")]
    PromptTooLong { tokens: usize, capacity: usize },
    #[error("a request for 0 new tokens: nothing to generate; ask for at least 1")]
    NothingToGenerate,
    #[error(
        "the executive failed {restarts} times in a row (executive.max_restarts = {max}); last: {last}"
    )]
    GaveUp {
        restarts: u32,
        max: u32,
        last: String,
    },
}

/// One generation.
#[derive(Debug, Clone)]
pub struct GenRequest {
    pub prompt: Vec<u32>,
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub stop: StopCriteria,
    /// Keep the logits of every sampled step (tests and comparisons).
    pub record_logits: bool,
}

pub struct Pipeline {
    settings: Settings,
    start: StartConfig,
    pub shard_b: ShardB,
    pub tokenizer: Tokenizer,
    pub model: BakedModel,
    pub split: usize,
    exec: Option<Executive>,
    restarts: u32,
    streams: BTreeMap<u32, StreamState>,
    next_stream: u32,
    next_request: u64,
    ends: Vec<u32>,
    /// Shard B's recent step time (an exponential mean, ns): how long a
    /// batched step waits for the replies of other streams in flight.
    b_step_ns: f64,
    finished: Vec<StreamReport>,
    capacity: usize,
    chunk: usize,
}

impl Pipeline {
    /// Load shard B, start the executive (shard A) and wait until it is ready.
    pub fn new(
        settings: &Settings,
        model_dir: &Path,
        sink: &mut dyn FnMut(Event),
    ) -> Result<Pipeline, PipelineError> {
        let model = BakedModel::open(model_dir)?;
        let spec = model.spec().clone();
        let split = settings.split_for(spec.num_layers);
        if split > spec.num_layers {
            return Err(PipelineError::Split {
                k: split,
                layers: spec.num_layers,
            });
        }
        let tok_path = model_dir.join("tokenizer.json");
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| PipelineError::Tokenizer {
            message: e.to_string(),
            path: tok_path.clone(),
        })?;
        configure_cpu_pool(&settings.shard_b)?;
        // This thread runs shard B: it goes on shard B's cores.
        let cores = crate::affinity::parse_cpu_list(&settings.shard_b.cpu_cores)?;
        crate::affinity::pin_current_thread(&cores)?;
        let (device, info) = select_device(&settings.shard_b)?;
        let wdt = WeightDtype::parse(&settings.shard_b.weights_dtype).unwrap_or(WeightDtype::F32);
        let mode = DecodeMode::parse(&settings.shard_b.decode).unwrap_or_default();
        let opts = LoadOptions {
            decode: mode,
            ..LoadOptions::new(wdt)
        };
        let shard_b = ShardB::load_with(&model, split, device, info, opts)?;
        let chunk = settings.shard_a.prefill_chunk;
        let hash = model_hash(model_dir).map_err(|source| PipelineError::Io {
            path: model_dir.join(crate::bake::store::MANIFEST),
            source,
        })?;
        let start = StartConfig {
            role: crate::supervisor::protocol::Role::ShardA,
            program: executive_path(&settings.executive.path)?,
            model_dir: model_dir
                .canonicalize()
                .unwrap_or_else(|_| model_dir.to_path_buf()),
            model_hash: hash,
            split,
            settings: settings.clone(),
            segment: SegmentSpec::for_model(settings.ring.slots, chunk, spec.hidden_size),
        };
        // A crash or hang during start-up is retried like one mid-run.
        let mut restarts = 0;
        let exec = match Executive::start(&start, &mut |e| sink(Event::Supervisor(e))) {
            Ok(x) => x,
            Err(e) if e.is_transient() && settings.executive.max_restarts > 0 => {
                let reason = e.to_string();
                sink(Event::Supervisor(SupervisorEvent::Lost {
                    reason: reason.clone(),
                    stderr_tail: Vec::new(),
                }));
                tracing::warn!("executive lost during start-up: {reason}");
                start_again(
                    &start,
                    settings.executive.max_restarts,
                    &mut restarts,
                    reason,
                    sink,
                )?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(Pipeline {
            settings: settings.clone(),
            start,
            shard_b,
            tokenizer,
            model,
            split,
            exec: Some(exec),
            restarts,
            streams: BTreeMap::new(),
            next_stream: 0,
            next_request: 1,
            b_step_ns: 0.0,
            ends: Vec::new(),
            finished: Vec::new(),
            capacity: settings.shard_a.kv_capacity,
            chunk,
        })
    }

    /// Build shard B's GPU kernels for every size of step now rather than
    /// in the middle of one ([`ShardB::warm_up`]); nothing off the GPU
    /// plan.
    pub fn warm_up(&self) -> Result<(), PipelineError> {
        let started = std::time::Instant::now();
        let buckets = self.shard_b.warm_up()?;
        if !buckets.is_empty() {
            tracing::info!(
                ms = started.elapsed().as_millis() as u64,
                "shard B: kernels built for steps of {buckets:?} rows"
            );
        }
        Ok(())
    }

    /// The running executive (pid, segment, stats), if any.
    pub fn executive(&self) -> Option<&Executive> {
        self.exec.as_ref()
    }

    /// The running executive, to reach its rings (fault tests, diagnostics).
    pub fn executive_mut(&mut self) -> Option<&mut Executive> {
        self.exec.as_mut()
    }

    /// Executive restarts so far.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Streams not finished yet.
    pub fn active(&self) -> usize {
        self.streams.len()
    }

    /// Start a stream; returns its id.
    pub fn submit(&mut self, req: GenRequest) -> Result<u32, PipelineError> {
        if req.prompt.is_empty() {
            return Err(PipelineError::EmptyPrompt);
        }
        if req.max_new_tokens == 0 {
            return Err(PipelineError::NothingToGenerate);
        }
        if req.prompt.len() >= self.capacity {
            return Err(PipelineError::PromptTooLong {
                tokens: req.prompt.len(),
                capacity: self.capacity,
            });
        }
        let id = self.next_stream;
        self.next_stream += 1;
        let b = self.shard_b.new_stream(self.capacity);
        self.streams.insert(id, StreamState::new(req, b));
        Ok(id)
    }

    /// Stop a stream now (Esc in the chat); its report says "cancelled".
    pub fn cancel(&mut self, stream: u32, sink: &mut dyn FnMut(Event)) {
        if let Some(st) = self.streams.remove(&stream) {
            self.report(stream, st, Finish::Cancelled, None, sink);
        }
    }

    fn report(
        &mut self,
        id: u32,
        st: StreamState,
        finish: Finish,
        error: Option<String>,
        sink: &mut dyn FnMut(Event),
    ) {
        let (rest, r) = st.into_report(id, finish, error);
        if !rest.is_empty() {
            sink(Event::Token {
                stream: id,
                id: u32::MAX,
                text: rest,
            });
        }
        self.ends.push(id);
        sink(Event::Finished(Box::new(r.clone())));
        self.finished.push(r);
    }

    /// Reports of streams finished since the last call.
    pub fn take_finished(&mut self) -> Vec<StreamReport> {
        std::mem::take(&mut self.finished)
    }

    /// Run `requests` to the end; reports in request order.
    pub fn run(
        &mut self,
        requests: Vec<GenRequest>,
        sink: &mut dyn FnMut(Event),
    ) -> Result<Vec<StreamReport>, PipelineError> {
        let mut ids = Vec::new();
        for r in requests {
            ids.push(self.submit(r)?);
        }
        while ids.iter().any(|i| self.streams.contains_key(i)) {
            if crate::supervisor::interrupted() {
                for &id in &ids {
                    self.cancel(id, sink);
                }
                return Err(PipelineError::Supervisor(SupervisorError::Interrupted));
            }
            self.poll(sink)?;
        }
        let mut done = self.take_finished();
        done.retain(|r| ids.contains(&r.stream));
        done.sort_by_key(|r| ids.iter().position(|i| *i == r.stream));
        Ok(done)
    }

    /// One round: submit what can go, take at most one reply (waiting up to
    /// 20 ms), check the executive's health.
    pub fn poll(&mut self, sink: &mut dyn FnMut(Event)) -> Result<(), PipelineError> {
        if self.exec.is_none() {
            self.restart("is not running".into(), sink)?;
        }
        if let Err(e) = self.submit_ready() {
            return self.lost(e, sink);
        }
        let reply = self.receive(sink);
        if let Err(e) = reply {
            return self.lost(e, sink);
        }
        let check = match self.exec.as_mut() {
            Some(x) => x.check(&mut |e| sink(Event::Supervisor(e))),
            None => Ok(()),
        };
        if let Err(e) = check {
            return self.lost(e.to_string(), sink);
        }
        Ok(())
    }

    fn submit_ready(&mut self) -> Result<(), String> {
        let Some(exec) = self.exec.as_mut() else {
            return Ok(());
        };
        for id in std::mem::take(&mut self.ends) {
            let h = SlotHeader {
                kind: kind::TOKENS,
                stream: id,
                flags: flags::END,
                dtype: dtype::U32,
                ..Default::default()
            };
            if !exec
                .tokens
                .send(h, &[], Duration::ZERO)
                .map_err(|e| e.to_string())?
            {
                self.ends.push(id);
            }
        }
        for (&id, st) in self.streams.iter_mut() {
            if st.in_flight || st.a_pos >= st.tokens.len() {
                continue;
            }
            let end = (st.a_pos + self.chunk).min(st.tokens.len());
            let ids = &st.tokens[st.a_pos..end];
            let bytes: Vec<u8> = ids.iter().flat_map(|t| t.to_le_bytes()).collect();
            let request = self.next_request;
            let h = SlotHeader {
                kind: kind::TOKENS,
                stream: id,
                flags: if st.fresh {
                    flags::NEW | flags::RESET
                } else {
                    0
                },
                first_pos: st.a_pos as u32,
                count: ids.len() as u32,
                dtype: dtype::U32,
                request,
                t_submit_ns: mono_ns(),
                ..Default::default()
            };
            if !exec
                .tokens
                .send(h, &bytes, Duration::ZERO)
                .map_err(|e| e.to_string())?
            {
                break; // ring full: the executive has enough to do
            }
            self.next_request += 1;
            st.request = request;
            st.a_pos = end;
            st.fresh = false;
            st.in_flight = true;
        }
        Ok(())
    }

    /// The executive is gone or untrustworthy: report, restart, re-prefill.
    fn lost(&mut self, reason: String, sink: &mut dyn FnMut(Event)) -> Result<(), PipelineError> {
        let tail = self
            .exec
            .as_ref()
            .map(|x| x.last_words())
            .unwrap_or_default();
        sink(Event::Supervisor(SupervisorEvent::Lost {
            reason: reason.clone(),
            stderr_tail: tail,
        }));
        tracing::warn!("executive lost: {reason}");
        // Dropping it kills and reaps the process and unlinks the segment.
        self.exec = None;
        self.restart(reason, sink)
    }

    fn restart(&mut self, last: String, sink: &mut dyn FnMut(Event)) -> Result<(), PipelineError> {
        let max = self.settings.executive.max_restarts;
        match start_again(&self.start, max, &mut self.restarts, last, sink) {
            Ok(x) => self.exec = Some(x),
            Err(e) => {
                let message = e.to_string();
                let ids: Vec<u32> = self.streams.keys().copied().collect();
                for id in ids {
                    if let Some(st) = self.streams.remove(&id) {
                        self.report(id, st, Finish::Error, Some(message.clone()), sink);
                    }
                }
                return Err(e);
            }
        }
        // Its caches are empty: every live stream starts over in shard A.
        self.ends.clear();
        for st in self.streams.values_mut() {
            st.a_pos = 0;
            st.fresh = true;
            st.in_flight = false;
        }
        Ok(())
    }

    /// Stop the executive cleanly.
    pub fn shutdown(mut self) {
        if let Some(x) = self.exec.take() {
            x.shutdown();
        }
    }
}
