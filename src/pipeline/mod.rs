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
mod restart;
mod stream;
pub mod text;

pub use events::{Event, Finish, StageSample, StreamMetrics, StreamReport};
pub use pool::{PoolError, configure_cpu_pool};
use restart::start_again;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokenizers::Tokenizer;

use crate::bake::store::BakedModel;
use crate::config::Settings;
use crate::ring::wait::mono_ns;
use crate::ring::{SegmentSpec, SlotHeader, dtype, flags, kind};
use crate::shard_b::sampling::{SamplingParams, StopCriteria};
use crate::shard_b::{
    BatchItem, DecodeMode, HiddenDtype, LoadOptions, ShardB, ShardBError, StepInput, WeightDtype,
    select_device,
};
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

    /// Take the replies that are ready (waiting up to 20 ms for the
    /// first), run their rows through shard B as one step (each weight read
    /// once for all the streams), sample where due.
    fn receive(&mut self, sink: &mut dyn FnMut(Event)) -> Result<(), String> {
        let Some(exec) = self.exec.as_mut() else {
            return Ok(());
        };
        let mut replies: Vec<(SlotHeader, Vec<u8>)> = Vec::new();
        let in_flight = self.streams.values().filter(|s| s.in_flight).count();
        // Once one reply is here, the others in flight are worth waiting
        // for a while (shard B batches them: a step of several streams reads
        // the weights once): up to half a recent step, at most 2 ms.
        let batch_wait = Duration::from_nanos((self.b_step_ns / 2.0).min(2e6) as u64);
        let mut wait = Duration::from_millis(20);
        let mut deadline = None;
        while replies.len() < in_flight.max(1) {
            let Some(msg) = exec.acts.recv(wait).map_err(|e| e.to_string())? else {
                break;
            };
            replies.push((msg.header, msg.payload().to_vec()));
            let until = *deadline.get_or_insert_with(|| Instant::now() + batch_wait);
            wait = until.saturating_duration_since(Instant::now());
        }
        if replies.is_empty() {
            return Ok(());
        }
        let b_start = mono_ns();
        let hidden = self.shard_b.spec.hidden_size;
        // The rows shard B runs: (header, stream, bytes from, rows).
        let mut work: Vec<(SlotHeader, u32, usize, usize)> = Vec::new();
        for (h, payload) in &replies {
            let Some(st) = self.streams.get_mut(&h.stream) else {
                continue; // cancelled meanwhile
            };
            if h.request != st.request {
                continue; // a reply from before a restart
            }
            st.in_flight = false;
            if h.kind == kind::ERROR {
                let text = String::from_utf8_lossy(payload).into_owned();
                if let Some(st) = self.streams.remove(&h.stream) {
                    self.report(
                        h.stream,
                        st,
                        Finish::Error,
                        Some(format!("shard A: {text}")),
                        sink,
                    );
                }
                continue;
            }
            let rows = h.count as usize;
            let first = h.first_pos as usize;
            if h.dtype != dtype::F32 || h.payload_len as usize != rows * hidden * 4 {
                return Err(format!(
                    "activation message for stream {} has {} bytes for {rows} rows of {hidden} (dtype {})",
                    h.stream, h.payload_len, h.dtype
                ));
            }
            if first > st.b.len() {
                return Err(format!(
                    "stream {}: shard A sent position {first}, shard B is at {}",
                    h.stream,
                    st.b.len()
                ));
            }
            // Rows shard B already holds (a re-prefill after a restart) are skipped.
            let skip = (st.b.len() - first).min(rows);
            work.push((*h, h.stream, skip * hidden * 4, rows - skip));
        }
        // The streams leave the map while shard B holds them mutably.
        let mut taken: Vec<(u32, StreamState)> = work
            .iter()
            .filter_map(|w| self.streams.remove(&w.1).map(|st| (w.1, st)))
            .collect();
        let payload_of = |h: &SlotHeader| {
            replies
                .iter()
                .find(|(r, _)| r.stream == h.stream && r.request == h.request)
                .map(|(_, p)| p.as_slice())
                .unwrap_or(&[])
        };
        let stepping: Vec<usize> = (0..work.len()).filter(|&i| work[i].3 > 0).collect();
        let mut outcome: Vec<Option<Result<crate::shard_b::Logits, String>>> =
            (0..work.len()).map(|_| None).collect();
        // Shard B's time of each stream's step: the batch's.
        let mut times: Vec<(u64, u64)> = vec![(b_start, b_start); work.len()];
        let mut items: Vec<BatchItem> = Vec::with_capacity(stepping.len());
        for (i, (_, st)) in taken.iter_mut().enumerate() {
            let (h, _, from, rows) = &work[i];
            if *rows == 0 {
                continue;
            }
            items.push(BatchItem {
                input: StepInput::Hidden {
                    bytes: &payload_of(h)[*from..],
                    dtype: HiddenDtype::F32,
                    rows: *rows,
                },
                stream: &mut st.b,
            });
        }
        let batched = items.len() > 1;
        let whole = match batched {
            true => Some(self.shard_b.forward_batch(&mut items)),
            false => None,
        };
        match whole {
            Some(Ok(logits)) => {
                let t = mono_ns();
                for (&i, l) in stepping.iter().zip(logits) {
                    outcome[i] = Some(Ok(l));
                    times[i] = (b_start, t);
                }
            }
            // One stream at a time (one stream, or a batch that failed: each
            // error is then its stream's own).
            _ => {
                for (&i, item) in stepping.iter().zip(items.iter_mut()) {
                    let t0 = mono_ns();
                    let one = self
                        .shard_b
                        .forward_batch(std::slice::from_mut(item))
                        .map_err(|e| e.to_string())
                        .and_then(|mut l| l.pop().ok_or_else(|| "no logits".to_string()));
                    outcome[i] = Some(one);
                    times[i] = (t0, mono_ns());
                }
            }
        }
        drop(items);
        if let Some(&(t0, t1)) = times.iter().find(|(t0, t1)| t1 > t0) {
            let ns = t1.saturating_sub(t0) as f64;
            self.b_step_ns = match self.b_step_ns {
                0.0 => ns,
                ema => 0.8 * ema + 0.2 * ns,
            };
        }
        let parts = work.into_iter().zip(taken).zip(outcome).zip(times);
        for ((((h, _, _, rows), (id, mut st)), out), (t0, t1)) in parts {
            let first = h.first_pos as usize;
            let count = h.count as usize;
            let mut failure = None;
            let mut sampled = None;
            match out {
                Some(Ok(logits)) if rows > 0 && st.b.len() == st.tokens.len() => {
                    let kept = if st.req.record_logits {
                        logits.read_last().map(Some).map_err(|e| e.to_string())
                    } else {
                        Ok(None)
                    };
                    match kept.and_then(|k| {
                        st.sampler
                            .sample(logits)
                            .map(|id| (id, k))
                            .map_err(|e| e.to_string())
                    }) {
                        Ok(s) => sampled = Some(s),
                        Err(e) => failure = Some(e),
                    }
                }
                Some(Err(e)) => failure = Some(e),
                _ => {}
            }
            sink(Event::Stage(StageSample {
                stream: id,
                tokens: count,
                prefill: count > 1 || first + count <= st.req.prompt.len(),
                b_to_a_wait_ms: h.t_start_ns.saturating_sub(h.t_submit_ns) as f64 / 1e6,
                a_ms: h.t_done_ns.saturating_sub(h.t_start_ns) as f64 / 1e6,
                a_to_b_wait_ms: t0.saturating_sub(h.t_done_ns) as f64 / 1e6,
                b_ms: t1.saturating_sub(t0) as f64 / 1e6,
            }));
            if let Some(e) = failure {
                self.report(id, st, Finish::Error, Some(format!("shard B: {e}")), sink);
                continue;
            }
            let Some((token, logits)) = sampled else {
                self.streams.insert(id, st);
                continue;
            };
            let now = Instant::now();
            st.t_first.get_or_insert(now);
            st.t_last = now;
            st.tokens.push(token);
            st.generated.push(token);
            if let Some(l) = logits {
                st.logits.push(l);
            }
            let delta = st.text.push(&self.tokenizer, token);
            sink(Event::Token {
                stream: id,
                id: token,
                text: delta,
            });
            let finish = st
                .req
                .stop
                .check(token, st.text.text())
                .map(|r| Finish::from(&r))
                .or_else(|| (st.generated.len() >= st.req.max_new_tokens).then_some(Finish::Length))
                .or_else(|| (st.tokens.len() >= self.capacity).then_some(Finish::Context));
            match finish {
                Some(finish) => self.report(id, st, finish, None, sink),
                None => {
                    self.streams.insert(id, st);
                }
            }
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
