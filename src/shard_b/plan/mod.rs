//! Shard B on a GPU as a fixed launch plan: packed weights, its own
//! kernels, preallocated buffers, and no burn ops on the way.
//!
//! burn's per-op path costs about 1–2 ms of host time per layer and token
//! (fusion stream, op dispatch, fresh mask and RoPE tables, encoding); the
//! kernels take microseconds. Here a step is, per layer:
//!
//! ```text
//! rms_norm ─ qkv matvec ─ rope_cache (q rotated; k rotated, v → cache at pos)
//!   ─ attention (per stream: key chunks, then combine) ─ o matvec (+= x)
//!   ─ rms_norm ─ gate·up matvec ─ silu_mul ─ down matvec (+= x)
//! ```
//!
//! then the final norm of each stream's last row, the lm_head and, when
//! the sampler is greedy, an argmax with a non-finite flag: 4 bytes and a
//! flag per stream come back. What changes between steps — the hidden rows
//! or token ids, each row's position, the rows to sample — is written into
//! device buffers before the step, so the launches themselves never change
//! for a given shape: a step of `T` rows over a given set of streams is
//! captured once (cubecl's graph capture) and replayed after
//! ([`DecodeMode::Replay`]), or launched anew each time
//! ([`DecodeMode::Launch`]).
//!
//! Several streams in one step (a batch) share the projections — each
//! weight is read once for all their rows — and their caches are slots of
//! shared buffers ([`pool`]), so the RoPE/cache write and the attention
//! are one launch each for all of them (per bank of slots). A step's
//! launches depend on its rows and their streams' banks, not on which
//! streams they are: one capture serves every mix of the same shape.
//!
//! The plan takes a model whose every projection packs in the GPU kernels'
//! layout with no padding (widths multiples of 32) and whose head dimension
//! is a multiple of 32; others run on burn's ops ([`super::ops`]).
//!
//! Known hazard: burn's own ops on the same GPU between replays (a test
//! that ran burn's dequantized model on the same Vulkan device in lockstep
//! with a replayed plan saw a wrong step about one run in two; launched
//! steps never). Not understood yet; the app keeps burn off the plan's GPU
//! (the sampler's non-greedy rules run on the CPU backend).

mod encode;
mod kernels;
mod logits;
mod mode;
mod pool;
mod profile;
mod warm;
mod weights;

pub use logits::PlanLogits;
pub use mode::{DecodeMode, PlanStats};
pub use pool::PlanKv;
pub use profile::StepProfile;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cubecl::client::{Client, Graph};
use cubecl::server::Handle;

use super::ShardBError;
use super::cube::{MATVEC_MAX_TOKENS, MAX_BINDING_BYTES};
use super::packed::{Packed, PackedLayer, load_stacked};
use crate::bake::store::{BakedModel, StoreError};
use crate::model::ModelSpec;
use kernels::{ATTN_UNITS, ROW_UNITS};
use weights::{Linear, f32_bytes, u32_bytes};

/// Keys per attention chunk of a decode step by default (one cube per
/// head, row and chunk; a unit takes one key of its chunk): a stream's
/// attention spreads over `fill / 32` cubes per head, and the cubes of
/// chunks past the fill leave at once. H200, `benches/shard_b`, 16 layers,
/// fill 256: 128-key chunks took 0.42 ms of a 1.53 ms step (a unit's four
/// keys one after another, each a chain of loads).
pub const ATTENTION_CHUNK: usize = 32;

/// A step whose host part takes longer is logged (debug): a decode step's
/// host part is well under a millisecond.
const SLOW_STEP: std::time::Duration = std::time::Duration::from_millis(20);
/// Captured step layouts kept at most (each holds its pipelines' bind
/// groups alive; a layout is a step's rows, segments and banks, so a few
/// serve any mix of streams).
const MAX_CAPTURES: usize = 64;

struct Layer {
    in_norm: Handle,
    qkv: Linear,
    /// q, k, v biases (zeros for models without).
    qkv_bias: Handle,
    o: Linear,
    post_norm: Handle,
    gate_up: Linear,
    down: Linear,
}

/// A step's rows: hidden states (f32, `[T, hidden]`) or token ids.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    Hidden(&'a [f32]),
    Tokens(&'a [u32]),
}

/// One stream's part of a step: its cache, the position of its first row
/// and how many rows it has.
pub struct Segment<'a> {
    pub kv: &'a PlanKv,
    pub pos: usize,
    pub rows: usize,
}

/// Buffers sized for `rows` rows over streams of up to `chunks` attention
/// chunks.
struct Scratch {
    rows: usize,
    /// Rows of chunked attention (steps of up to MATVEC_MAX_TOKENS rows).
    chunked_rows: usize,
    chunks: usize,
    partial_len: usize,
    x: Handle,
    n: Handle,
    qkv: Handle,
    q: Handle,
    attn: Handle,
    partial: Handle,
    gu: Handle,
    act: Handle,
    /// Int8 activations (`shard_b.weights_dtype = packed-q8`) of up to
    /// `MATVEC_MAX_TOKENS` rows: the normed rows (`[rows, h/32]` blocks
    /// of 8 words, and each block's scale and scaled sum), the
    /// attention's output rows and the MLP's `silu · up` rows the same way.
    nq: Handle,
    nd: Handle,
    oq: Handle,
    od: Handle,
    aq: Handle,
    ad: Handle,
    /// The step's small tables, written at once (one write a step): each
    /// row's position, the rows grouped by bank, each row's slot in its
    /// bank, and the rows to sample, `stride` words apart (a multiple of
    /// 64: bindings start at 256-byte offsets). `pos`, `order`, `slots`
    /// and `sel` bind its parts.
    meta: Handle,
    stride: usize,
    pos: Handle,
    order: Handle,
    slots: Handle,
    ids: Handle,
    sel: Handle,
    last: Handle,
    logits: Handle,
    picks: Handle,
}

/// What a step's launches depend on (a capture is for one layout): the
/// input kind, the rows, the segments (one sampled row each) and each
/// bank in use with its rows' count, in the order `Scratch::order` lists
/// the rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Layout {
    tokens: bool,
    rows: usize,
    segments: usize,
    banks: Vec<(usize, usize)>,
}

impl Layout {
    /// Attention in key chunks (then combined) for decode-sized steps;
    /// longer steps (prefill) take one cube per KV head and row over all keys.
    fn chunked(&self) -> bool {
        self.rows <= MATVEC_MAX_TOKENS
    }
}

/// Shard B as a launch plan on one GPU.
pub struct DecodePlan {
    client: Client,
    spec: ModelSpec,
    mode: DecodeMode,
    layers: Vec<Layer>,
    norm: Handle,
    head: Linear,
    /// The embedding table for token input (k = 0): `embed`, or the head
    /// when tied.
    embed: Option<Linear>,
    /// cos and sin `[positions, head_dim/2]`.
    cos: Handle,
    sin: Handle,
    positions: usize,
    scratch: Option<Scratch>,
    captured: HashMap<Layout, Graph>,
    pool: pool::KvPool,
    step: u64,
    current: Arc<AtomicU64>,
    stats: Arc<Mutex<PlanStats>>,
    /// A capture failed: replaying is off for this plan (the reason is logged).
    capture_failed: bool,
    /// Keys per attention chunk of decode steps.
    attention_chunk: usize,
    /// Decode steps multiply 4-bit weights with int8 activations
    /// (`packed-q8`): the norms, the attention combine and `silu · up`
    /// write int8 blocks.
    int8_activations: bool,
}

impl DecodePlan {
    /// Load layers `[first_layer, L)`, the norm and the head (and the
    /// embeddings for k = 0) into `client`'s device; None when a weight
    /// does not fit the plan (see the module docs) or `mode` is `Ops`.
    pub fn load(
        model: &BakedModel,
        first_layer: usize,
        client: Client,
        mode: DecodeMode,
    ) -> Result<Option<DecodePlan>, StoreError> {
        Self::load_parts(model, first_layer, client, mode, MAX_BINDING_BYTES)
    }

    /// [`DecodePlan::load`] with weights cut into parts, and cache banks,
    /// of at most `max_part_bytes` (tests cut small ones to run the
    /// several-part paths the 1B model's lm_head takes, and a bank per
    /// stream).
    pub fn load_parts(
        model: &BakedModel,
        first_layer: usize,
        client: Client,
        mode: DecodeMode,
        max_part_bytes: usize,
    ) -> Result<Option<DecodePlan>, StoreError> {
        let spec = model.spec().clone();
        if mode == DecodeMode::Ops
            || !spec.head_dim.is_multiple_of(ATTN_UNITS as usize)
            || spec.head_dim > ROW_UNITS as usize
            || kernels::attention_shared_bytes(spec.num_heads / spec.num_kv_heads, spec.head_dim)
                > kernels::MAX_SHARED_BYTES
        {
            return Ok(None);
        }
        let upload = |p: Packed| Linear::upload(&client, &p, max_part_bytes);
        let linear = |names: &[String]| -> Result<Option<Linear>, StoreError> {
            Ok(load_stacked(model, names)?.and_then(upload))
        };
        let vector = |name: &str| -> Result<Handle, StoreError> {
            Ok(client.create_from_slice(f32_bytes(&model.f32(name)?)))
        };
        let mut layers = Vec::new();
        for l in first_layer..spec.num_layers {
            let p = format!("model.layers.{l}");
            let Some(w) = PackedLayer::load(model, l)? else {
                return Ok(None);
            };
            let bias = w.qkv_bias.unwrap_or_else(|| vec![0.0; w.qkv.rows]);
            let (Some(qkv), Some(o), Some(gate_up), Some(down)) = (
                upload(w.qkv),
                upload(w.o),
                upload(w.gate_up),
                upload(w.down),
            ) else {
                return Ok(None);
            };
            layers.push(Layer {
                in_norm: vector(&format!("{p}.input_layernorm.weight"))?,
                qkv,
                qkv_bias: client.create_from_slice(f32_bytes(&bias)),
                o,
                post_norm: vector(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up,
                down,
            });
        }
        let Some(head) = linear(&[model.lm_head_name().to_string()])? else {
            return Ok(None);
        };
        let embed = if first_layer == 0 && !spec.tie_word_embeddings {
            match linear(&["model.embed_tokens.weight".to_string()])? {
                Some(e) => Some(e),
                None => return Ok(None),
            }
        } else {
            None
        };
        let norm = vector("model.norm.weight")?;
        let (cos, sin) = (client.empty(4), client.empty(4));
        Ok(Some(DecodePlan {
            client,
            pool: pool::KvPool::new(
                layers.len(),
                spec.num_kv_heads,
                spec.head_dim,
                max_part_bytes,
            ),
            spec,
            mode,
            layers,
            norm,
            head,
            embed,
            cos,
            sin,
            positions: 0,
            scratch: None,
            captured: HashMap::new(),
            step: 0,
            current: Arc::new(AtomicU64::new(0)),
            stats: Arc::new(Mutex::new(PlanStats::default())),
            capture_failed: false,
            attention_chunk: ATTENTION_CHUNK,
            int8_activations: false,
        }))
    }

    pub fn mode(&self) -> DecodeMode {
        if self.capture_failed {
            DecodeMode::Launch
        } else {
            self.mode
        }
    }

    /// Keys per attention chunk of decode steps (tests use a few, to
    /// cross chunk boundaries in a short run).
    pub fn set_attention_chunk(&mut self, keys: usize) {
        self.attention_chunk = keys.max(1);
        self.captured.clear();
    }

    /// Int8 activations for the 4-bit projections of decode steps (up to
    /// `MATVEC_MAX_TOKENS` rows; `shard_b.weights_dtype = packed-q8`):
    /// `dp4a` over a weight word's nibbles and four activation bytes.
    /// Prefill chunks and 8-bit weights keep f32 activations.
    pub fn set_int8_activations(&mut self, on: bool) {
        self.int8_activations = on;
        self.captured.clear();
    }

    pub fn stats(&self) -> PlanStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Bytes of weights resident on the device.
    pub fn resident_weight_bytes(&self) -> usize {
        let h = self.spec.hidden_size * 4;
        self.layers
            .iter()
            .map(|l| {
                l.qkv.resident_bytes()
                    + l.o.resident_bytes()
                    + l.gate_up.resident_bytes()
                    + l.down.resident_bytes()
                    + 2 * h
            })
            .sum::<usize>()
            + self.head.resident_bytes()
            + self.embed.as_ref().map_or(0, Linear::resident_bytes)
            + h
    }

    /// A new stream's cache with room for `capacity` tokens (a slot of
    /// the pool, which grows when it has none free).
    pub fn new_kv(&mut self, capacity: usize) -> PlanKv {
        let (kv, replaced) = self.pool.take(&self.client, capacity);
        if replaced {
            // Captured steps bind the pool's old buffers.
            self.captured.clear();
            tracing::debug!("shard B: captures dropped: the pool's buffers grew");
        }
        kv
    }

    /// Make sure the RoPE tables reach `positions` (computed on the host as
    /// burn's path computes them: `cos(p · inv_freq)` in f32).
    fn ensure_positions(&mut self, positions: usize) {
        if positions <= self.positions {
            return;
        }
        let positions = positions.next_power_of_two();
        let inv = self.spec.rope_inv_freq();
        let half = inv.len();
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        for p in 0..positions {
            for f in &inv {
                let a = p as f32 * f;
                cos.push(a.cos());
                sin.push(a.sin());
            }
        }
        self.cos = self.client.create_from_slice(f32_bytes(&cos));
        self.sin = self.client.create_from_slice(f32_bytes(&sin));
        self.positions = positions;
        // Captured steps read the old tables.
        self.captured.clear();
        tracing::debug!("shard B: captures dropped: the RoPE tables grew");
    }

    /// Make sure the scratch buffers take `rows` rows, `chunked` of them in
    /// chunked attention over streams of up to `chunks` chunks.
    fn ensure_scratch(&mut self, rows: usize, chunked: usize, chunks: usize) {
        if let Some(s) = &self.scratch
            && s.rows >= rows
            && s.chunked_rows >= chunked
            && s.chunks >= chunks
        {
            return;
        }
        let old = self
            .scratch
            .as_ref()
            .map_or((0, 0, 0), |s| (s.rows, s.chunked_rows, s.chunks));
        let rows = rows.max(old.0).next_power_of_two();
        let chunked_rows = chunked.max(old.1).max(1).next_power_of_two();
        let chunks = chunks.max(old.2);
        let s = &self.spec;
        let (h, q, kv) = (s.hidden_size, s.q_dim(), s.kv_dim());
        let inter = s.intermediate_size;
        let f = |n: usize| self.client.empty(4 * n.max(1));
        let partial_len = chunked_rows * s.num_heads * chunks * (s.head_dim + 2);
        let stride = rows.next_multiple_of(64);
        let meta = f(4 * stride);
        let part = |k: usize| meta.clone().offset_start((4 * k * stride) as u64);
        self.scratch = Some(Scratch {
            rows,
            chunked_rows,
            chunks,
            partial_len,
            x: f(rows * h),
            n: f(rows * h),
            qkv: f(rows * (q + 2 * kv)),
            q: f(rows * q),
            attn: f(rows * q),
            partial: f(partial_len),
            gu: f(rows * 2 * inter),
            act: f(rows * inter),
            nq: f(MATVEC_MAX_TOKENS * h / 4),
            nd: f(MATVEC_MAX_TOKENS * h / 16),
            oq: f(MATVEC_MAX_TOKENS * q / 4),
            od: f(MATVEC_MAX_TOKENS * q / 16),
            aq: f(MATVEC_MAX_TOKENS * inter / 4),
            ad: f(MATVEC_MAX_TOKENS * inter / 16),
            pos: part(0),
            order: part(1),
            slots: part(2),
            sel: part(3),
            meta,
            stride,
            ids: f(rows),
            last: f(rows * h),
            logits: f(rows * s.vocab_size),
            picks: f(2 * rows),
        });
        self.captured.clear();
        tracing::debug!(rows, "shard B: captures dropped: the step buffers grew");
    }

    /// Run one step over `segments` (their rows in order make up `input`)
    /// and return the logits of each segment's last row.
    pub fn step(
        &mut self,
        input: Input<'_>,
        segments: &[Segment<'_>],
    ) -> Result<Vec<PlanLogits>, ShardBError> {
        let (hidden, vocab) = (self.spec.hidden_size, self.spec.vocab_size);
        let rows: usize = segments.iter().map(|g| g.rows).sum();
        let given = match input {
            Input::Hidden(x) => x.len() / hidden.max(1),
            Input::Tokens(ids) => ids.len(),
        };
        if rows == 0 || given != rows {
            return Err(ShardBError::Device(format!(
                "a step of {given} input rows for segments of {rows} rows"
            )));
        }
        for g in segments {
            if g.pos + g.rows > g.kv.capacity {
                return Err(ShardBError::CacheFull {
                    len: g.pos,
                    new: g.rows,
                    capacity: g.kv.capacity,
                });
            }
        }
        let started = std::time::Instant::now();
        let layout = self.prepare(input, segments)?;
        let Some(scratch) = self.scratch.as_ref() else {
            return Err(ShardBError::Device("no scratch buffers".into()));
        };
        let client = &self.client;
        let replay = self.mode() == DecodeMode::Replay && rows <= MATVEC_MAX_TOKENS;
        let mut launches = 0u64;
        let (mut captures, mut replays) = (0u64, 0u64);
        if replay && let Some(graph) = self.captured.get(&layout) {
            // SAFETY: the graph's buffers are alive (the plan's weights,
            // scratch and cache pool, which a regrowth replaces only after
            // forgetting every capture) and are used only from this plan,
            // on this thread's stream.
            unsafe { graph.replay() }.map_err(|e| ShardBError::Device(e.to_string()))?;
            launches = self.launches_per_step(&layout);
            replays = 1;
        } else if replay {
            // The first step of this layout runs for real, then the same
            // launches are recorded.
            client
                .graph_prepare()
                .map_err(|e| ShardBError::Device(e.to_string()))?;
            launches += self.encode(scratch, &layout);
            match self.record(scratch, &layout) {
                Ok(graph) => {
                    captures = 1;
                    // Layouts come and go with the rows per stream (a
                    // prefill chunk beside decode rows); past a bound the
                    // old captures go (they are re-made on use).
                    if self.captured.len() >= MAX_CAPTURES {
                        self.captured.clear();
                        tracing::debug!("shard B: captures dropped: {MAX_CAPTURES} layouts held");
                    }
                    self.captured.insert(layout, graph);
                }
                Err(e) => {
                    tracing::warn!(
                        "shard B: capturing a decode step failed ({e}); launching each step instead"
                    );
                    self.capture_failed = true;
                }
            }
        } else {
            launches += self.encode(scratch, &layout);
        }
        self.step += 1;
        self.current.store(self.step, Ordering::Release);
        let host = started.elapsed();
        if host > SLOW_STEP {
            tracing::debug!(
                step = self.step,
                host_ms = host.as_secs_f64() * 1e3,
                rows,
                replayed = replays,
                captured = captures,
                "shard B: slow step on the host"
            );
        }
        if let Ok(mut st) = self.stats.lock() {
            st.steps += 1;
            st.segments += segments.len() as u64;
            st.launches += launches;
            st.captures += captures;
            st.replays += replays;
            st.uploads += 2;
            st.host_ns += host.as_nanos() as u64;
        }
        let Some(scratch) = self.scratch.as_ref() else {
            return Err(ShardBError::Device("no scratch buffers".into()));
        };
        let picks_of_step = Arc::new(Mutex::new(None));
        Ok((0..segments.len())
            .map(|row| PlanLogits {
                client: self.client.clone(),
                logits: scratch.logits.clone(),
                picks: scratch.picks.clone(),
                rows: segments.len(),
                row,
                vocab,
                step: self.step,
                current: self.current.clone(),
                stats: self.stats.clone(),
                picks_of_step: picks_of_step.clone(),
            })
            .collect())
    }

    /// Size the buffers for `segments` and write the step's inputs (rows,
    /// positions, the rows to sample, each row's cache slot) before its
    /// launches; returns the step's layout.
    fn prepare(
        &mut self,
        input: Input<'_>,
        segments: &[Segment<'_>],
    ) -> Result<Layout, ShardBError> {
        self.pool.collect_released();
        let rows: usize = segments.iter().map(|g| g.rows).sum();
        let mut places = Vec::with_capacity(segments.len());
        for g in segments {
            places.push(self.pool.place(g.kv.id).ok_or(ShardBError::ForeignStream)?);
        }
        let mut layout = Layout {
            tokens: matches!(input, Input::Tokens(_)),
            rows,
            segments: segments.len(),
            banks: Vec::new(),
        };
        let chunks = self.pool.capacity.div_ceil(self.attention_chunk);
        let chunked = if layout.chunked() { rows } else { 0 };
        self.ensure_scratch(rows, chunked, chunks);
        self.ensure_positions(self.pool.capacity);
        let Some(scratch) = self.scratch.as_ref() else {
            return Err(ShardBError::Device("no scratch buffers".into()));
        };
        let mut pos = Vec::with_capacity(rows);
        let mut sel = Vec::with_capacity(segments.len());
        let mut slots = Vec::with_capacity(rows);
        for (g, place) in segments.iter().zip(&places) {
            pos.extend((g.pos..g.pos + g.rows).map(|p| p as u32));
            slots.extend(std::iter::repeat_n(place.slot as u32, g.rows));
            sel.push((pos.len() - 1) as u32);
        }
        let shares: Vec<(pool::Place, usize)> = places
            .iter()
            .zip(segments)
            .map(|(&p, g)| (p, g.rows))
            .collect();
        let (order, banks) = pool::bank_order(&shares);
        layout.banks = banks;
        let client = &self.client;
        let write = |h: &Handle, bytes: &[u8]| {
            client.write(h, cubecl::bytes::Bytes::from_bytes_vec(bytes.to_vec()))
        };
        match input {
            Input::Hidden(x) => write(&scratch.x, f32_bytes(x)),
            Input::Tokens(ids) => write(&scratch.ids, u32_bytes(ids)),
        }
        let stride = scratch.stride;
        let mut meta = vec![0u32; 4 * stride];
        for (k, part) in [&pos, &order, &slots, &sel].into_iter().enumerate() {
            meta[k * stride..k * stride + part.len()].copy_from_slice(part);
        }
        write(&scratch.meta, u32_bytes(&meta));
        Ok(layout)
    }

    /// Record the step's launches into a graph (nothing runs).
    fn record(&self, scratch: &Scratch, layout: &Layout) -> Result<Graph, String> {
        self.client.start_capture().map_err(|e| e.to_string())?;
        self.encode(scratch, layout);
        self.client.stop_capture().map_err(|e| e.to_string())
    }
}
