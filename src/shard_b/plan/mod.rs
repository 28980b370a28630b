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
//! weight is read once for all their rows — and have their own RoPE/cache
//! and attention launches, each bound to its stream's cache.
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

mod kernels;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cubecl::client::{Client, Graph};
use cubecl::prelude::{BufferArg, CubeCount, CubeDim, TensorArg};
use cubecl::server::Handle;

use super::ShardBError;
use super::cube::{
    HostParts, MATVEC_MAX_TOKENS, MAX_BINDING_BYTES, MatmulDims, Matvec, grid,
    kernels::packed_rows_kernel, launch_matmul, matvec_for,
};
use super::packed::Packed;
use crate::bake::store::{BakedModel, StoreError};
use crate::model::ModelSpec;
use kernels::{ATTN_UNITS, ROW_UNITS};

/// Keys per attention chunk of a decode step by default (one cube per
/// head, row and chunk; a unit takes one key of its chunk): a stream's
/// attention spreads over `fill / 32` cubes per head, and the cubes of
/// chunks past the fill leave at once. H200, `benches/shard_b`, 16 layers,
/// fill 256: 128-key chunks took 0.42 ms of a 1.53 ms step (a unit's four
/// keys one after another, each a chain of loads).
pub const ATTENTION_CHUNK: usize = 32;

/// How decode steps reach the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeMode {
    /// Capture a step's launches once per shape, replay them after.
    #[default]
    Replay,
    /// The same launches, issued anew every step.
    Launch,
    /// burn's ops (the path before the plan; kept for comparison and for
    /// models the plan does not take).
    Ops,
}

impl DecodeMode {
    pub fn parse(s: &str) -> Option<DecodeMode> {
        match s {
            "replay" => Some(DecodeMode::Replay),
            "launch" => Some(DecodeMode::Launch),
            "ops" => Some(DecodeMode::Ops),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DecodeMode::Replay => "replay",
            DecodeMode::Launch => "launch",
            DecodeMode::Ops => "ops",
        }
    }
}

/// Counters of the work the plan has issued (the bench divides them by
/// tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub steps: u64,
    /// Streams over all steps (a batched step counts each of its streams).
    pub segments: u64,
    /// Kernel launches issued (a replayed step counts its recorded ones).
    pub launches: u64,
    pub captures: u64,
    pub replays: u64,
    /// Host-to-device writes (inputs, positions, rows to sample).
    pub uploads: u64,
    /// Device-to-host reads (sampled ids, logits).
    pub readbacks: u64,
    /// Host time spent issuing steps and greedy choices (writing inputs,
    /// launching or replaying; not waiting for the device), in ns.
    pub host_ns: u64,
}

impl PlanStats {
    /// The work done since `earlier`.
    pub fn since(&self, earlier: &PlanStats) -> PlanStats {
        PlanStats {
            steps: self.steps.saturating_sub(earlier.steps),
            segments: self.segments.saturating_sub(earlier.segments),
            launches: self.launches.saturating_sub(earlier.launches),
            captures: self.captures.saturating_sub(earlier.captures),
            replays: self.replays.saturating_sub(earlier.replays),
            uploads: self.uploads.saturating_sub(earlier.uploads),
            readbacks: self.readbacks.saturating_sub(earlier.readbacks),
            host_ns: self.host_ns.saturating_sub(earlier.host_ns),
        }
    }
}

/// A packed weight as device buffers: parts of at most
/// `MAX_BINDING_BYTES` of words.
struct Linear {
    rows: usize,
    kw: usize,
    kx: usize,
    group_words: usize,
    groups: usize,
    bits: u32,
    matvec: Matvec,
    parts: Vec<Part>,
}

struct Part {
    start: usize,
    rows: usize,
    words: Handle,
    scales: Handle,
    shifts: Handle,
}

fn f32_bytes(v: &[f32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

fn u32_bytes(v: &[u32]) -> &[u8] {
    bytemuck::cast_slice(v)
}

/// A contiguous 2-D tensor argument over `handle`.
fn tensor(handle: &Handle, rows: usize, cols: usize) -> TensorArg {
    // SAFETY: every handle given here holds at least rows × cols elements
    // (the plan sizes its buffers for the rows it launches).
    unsafe { TensorArg::from_raw_parts(handle.clone(), [cols, 1].into(), [rows, cols].into()) }
}

/// A buffer argument of `len` elements over `handle`.
fn buffer(handle: &Handle, len: usize) -> BufferArg {
    // SAFETY: as for `tensor`: the handle holds at least `len` elements.
    unsafe { BufferArg::from_raw_parts(handle.clone(), len) }
}

impl Linear {
    /// None when `p` does not fit the kernels without padding.
    fn upload(client: &Client, p: &Packed, max_part_bytes: usize) -> Option<Linear> {
        let host = HostParts::split(p, max_part_bytes)?;
        if host.cols_padded != p.cols {
            return None;
        }
        let matvec = matvec_for(p.rows, host.cols_padded);
        let parts = host
            .parts
            .iter()
            .map(|part| Part {
                start: part.start,
                rows: part.rows,
                words: client.create_from_slice(u32_bytes(&part.words)),
                scales: client.create_from_slice(f32_bytes(&part.scales)),
                shifts: client.create_from_slice(f32_bytes(&part.shifts)),
            })
            .collect();
        Some(Linear {
            rows: p.rows,
            kw: host.kw,
            kx: p.cols,
            group_words: host.group_words,
            groups: host.groups,
            bits: p.bits,
            matvec,
            parts,
        })
    }

    fn resident_bytes(&self) -> usize {
        self.rows * (self.kw * 4 + self.groups * 8)
    }

    /// `out[t, ·] (+)= x[t] · Wᵀ` for `tokens` rows; `out` rows are this
    /// weight's rows wide.
    fn launch(
        &self,
        client: &Client,
        x: &Handle,
        tokens: usize,
        out: &Handle,
        accumulate: bool,
    ) -> u64 {
        for part in &self.parts {
            let dims = MatmulDims {
                tokens,
                rows: part.rows,
                kw: self.kw,
                kx: self.kx,
                group_words: self.group_words,
                groups: self.groups,
                bits: self.bits,
                out_cols: self.rows,
                out_col0: part.start,
                accumulate,
            };
            // SAFETY: `x` holds tokens × kx, `out` tokens × rows (the
            // plan's buffers are sized for the rows it launches), the part
            // its rows × kw words and rows × groups scales and shifts;
            // kx = kw · 32/bits is a multiple of 32 (checked at upload).
            unsafe {
                launch_matmul(
                    client,
                    tensor(x, tokens, self.kx),
                    tensor(&part.words, part.rows, self.kw),
                    tensor(&part.scales, part.rows, self.groups),
                    tensor(&part.shifts, part.rows, self.groups),
                    tensor(out, tokens, self.rows),
                    dims,
                    self.matvec,
                );
            }
        }
        self.parts.len() as u64
    }

    /// Rows `ids` (an id buffer of `n`, each below `rows`) as f32 into
    /// `out`: each part writes the ids it holds. Returns the launches.
    fn rows_into(&self, client: &Client, ids: &Handle, n: usize, out: &Handle) -> u64 {
        let units = (n * self.kw) as u32;
        for part in &self.parts {
            // SAFETY: ids are checked below the row count by the caller and
            // the kernel reads only the rows of this part; it guards
            // positions by n × kw; out holds n × kx.
            unsafe {
                packed_rows_kernel::launch_unchecked(
                    client,
                    grid(units.div_ceil(256)),
                    CubeDim::new_1d(256),
                    tensor(ids, 1, n),
                    tensor(&part.words, part.rows, self.kw),
                    tensor(&part.scales, part.rows, self.groups),
                    tensor(&part.shifts, part.rows, self.groups),
                    tensor(out, n, self.kx),
                    n as u32,
                    self.kw as u32,
                    self.group_words as u32,
                    self.groups as u32,
                    part.start as u32,
                    part.rows as u32,
                    self.bits,
                );
            }
        }
        self.parts.len() as u64
    }
}

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

/// One stream's KV cache in the plan: per layer `[kv_heads, capacity,
/// head_dim]` keys and values.
pub struct PlanKv {
    id: u64,
    keys: Vec<Handle>,
    values: Vec<Handle>,
    capacity: usize,
    dropped: Arc<Mutex<Vec<u64>>>,
}

impl Drop for PlanKv {
    fn drop(&mut self) {
        // The plan forgets the steps it captured over this cache.
        if let Ok(mut d) = self.dropped.lock() {
            d.push(self.id);
        }
    }
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
    /// Rows of chunked attention (segments of up to MATVEC_MAX_TOKENS rows).
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
    pos: Handle,
    ids: Handle,
    sel: Handle,
    last: Handle,
    logits: Handle,
    picks: Handle,
}

/// The step shape a capture is for: the rows, the input kind, and each
/// segment's stream and rows.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Shape {
    tokens: bool,
    segments: Vec<(u64, usize)>,
}

struct Captured {
    graph: Graph,
    /// The streams' caches it writes, kept alive as long as it is.
    _caches: Vec<Handle>,
}

/// One stream's logits `[vocab]` of a step (row `row` of the step's
/// `[streams, vocab]`), on the device, valid until the plan's next step.
pub struct PlanLogits {
    client: Client,
    logits: Handle,
    picks: Handle,
    /// Rows of the step (streams).
    rows: usize,
    row: usize,
    vocab: usize,
    step: u64,
    current: Arc<AtomicU64>,
    stats: Arc<Mutex<PlanStats>>,
    /// The step's greedy choices, made for all its streams by the first
    /// that asks (one launch, one readback).
    picks_of_step: StepChoices,
}

/// A step's greedy choices (id, non-finite) per stream, once made.
type StepChoices = Arc<Mutex<Option<Vec<(u32, bool)>>>>;

impl PlanLogits {
    fn check_current(&self) -> Result<(), ShardBError> {
        if self.current.load(Ordering::Acquire) != self.step {
            return Err(ShardBError::Readback(
                "these logits were overwritten by a later step of the same shard".into(),
            ));
        }
        Ok(())
    }

    fn count_readback(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.readbacks += 1;
        }
    }

    fn read_u32s(&self, handle: &Handle) -> Result<Vec<u32>, ShardBError> {
        self.count_readback();
        let bytes = self
            .client
            .read_one(handle.clone())
            .map_err(|e| ShardBError::Readback(e.to_string()))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The row back to the host.
    pub fn read(&self) -> Result<Vec<f32>, ShardBError> {
        self.check_current()?;
        let all = self.read_u32s(&self.logits)?;
        let (a, b) = (self.row * self.vocab, (self.row + 1) * self.vocab);
        match all.get(a..b) {
            Some(row) => Ok(row.iter().map(|&w| f32::from_bits(w)).collect()),
            None => Err(ShardBError::Readback(format!(
                "{} logits, expected {}",
                all.len(),
                self.rows * self.vocab
            ))),
        }
    }

    /// The greedy choice, made on the device: the id and whether the row
    /// held a NaN or an infinity. The first stream of a step to ask gets
    /// every stream's choice made at once (one launch, one readback).
    pub fn argmax(&self) -> Result<(u32, bool), ShardBError> {
        self.check_current()?;
        let mut cached = self.picks_of_step.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none() {
            let started = std::time::Instant::now();
            // SAFETY: logits hold rows × vocab, picks 2 × rows (the
            // scratch's sizes for the step's streams).
            unsafe {
                kernels::argmax::launch_unchecked(
                    &self.client,
                    CubeCount::Static(self.rows as u32, 1, 1),
                    CubeDim::new_1d(ROW_UNITS),
                    buffer(&self.logits, self.rows * self.vocab),
                    buffer(&self.picks, 2 * self.rows),
                    0,
                    self.vocab as u32,
                );
            }
            if let Ok(mut s) = self.stats.lock() {
                s.launches += 1;
                s.host_ns += started.elapsed().as_nanos() as u64;
            }
            let v = self.read_u32s(&self.picks)?;
            if v.len() < 2 * self.rows {
                return Err(ShardBError::Readback(format!(
                    "{} picks, expected {}",
                    v.len(),
                    2 * self.rows
                )));
            }
            *cached = Some(
                v.chunks_exact(2)
                    .take(self.rows)
                    .map(|p| (p[0], p[1] != 0))
                    .collect(),
            );
        }
        cached
            .as_ref()
            .and_then(|all| all.get(self.row).copied())
            .ok_or_else(|| ShardBError::Readback("no choice for this stream".into()))
    }
}

/// Issues a step's launches, counting them; when timing, each launch group
/// runs in its own profiling window and its device time is added to its
/// class (a tool: the windows serialize the step).
struct Timer<'a> {
    client: &'a Client,
    launches: u64,
    timing: bool,
    /// Device ms and launches per class, in first-seen order.
    classes: Vec<(&'static str, f64, u64)>,
}

impl<'a> Timer<'a> {
    fn new(client: &'a Client, timing: bool) -> Timer<'a> {
        Timer {
            client,
            launches: 0,
            timing,
            classes: Vec::new(),
        }
    }

    fn run(&mut self, class: &'static str, f: impl FnOnce() -> u64) {
        if !self.timing {
            self.launches += f();
            return;
        }
        let ms = match self.client.profile_start() {
            Ok(window) => {
                let n = f();
                self.launches += n;
                let ms = self
                    .client
                    .profile_end(window)
                    .ok()
                    .and_then(|d| super::device::block_on(d.resolve()))
                    .map_or(f64::NAN, |t| t.duration().as_secs_f64() * 1e3);
                (ms, n)
            }
            Err(_) => {
                let n = f();
                self.launches += n;
                (f64::NAN, n)
            }
        };
        match self.classes.iter_mut().find(|c| c.0 == class) {
            Some(c) => {
                c.1 += ms.0;
                c.2 += ms.1;
            }
            None => self.classes.push((class, ms.0, ms.1)),
        }
    }
}

/// Where a decode step's time goes on the device ([`DecodePlan::profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepProfile {
    /// Streams in the step (one row each) and the cache fill they attend over.
    pub streams: usize,
    pub fill: usize,
    /// Launches per step.
    pub launches: u64,
    /// Host time to issue a step: launched anew, and replayed (ms).
    pub host_launch_ms: f64,
    pub host_replay_ms: f64,
    /// Device time of a whole step: launched, and replayed (ms).
    pub device_launch_ms: f64,
    pub device_replay_ms: f64,
    /// Device ms of each class of kernels over the step, each launch
    /// timed alone (their sum leaves out the gaps between launches), with
    /// its launches.
    pub classes: Vec<(String, f64, u64)>,
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
    captured: HashMap<Shape, Captured>,
    dropped: Arc<Mutex<Vec<u64>>>,
    next_kv: u64,
    step: u64,
    current: Arc<AtomicU64>,
    stats: Arc<Mutex<PlanStats>>,
    /// A capture failed: replaying is off for this plan (the reason is logged).
    capture_failed: bool,
    /// Keys per attention chunk of decode steps.
    attention_chunk: usize,
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

    /// [`DecodePlan::load`] with weights cut into parts of at most
    /// `max_part_bytes` of words (tests cut small weights to run the
    /// several-part paths the 1B model's lm_head takes).
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
        {
            return Ok(None);
        }
        let packed = |name: &str| -> Result<Option<Packed>, StoreError> {
            Ok(Packed::from_stored(&model.tensor(name)?))
        };
        let linear = |names: &[String]| -> Result<Option<Linear>, StoreError> {
            let mut parts = Vec::new();
            for n in names {
                match packed(n)? {
                    Some(p) => parts.push(p),
                    None => return Ok(None),
                }
            }
            let stacked = match parts.len() {
                1 => parts.pop(),
                _ => Packed::stack(&parts),
            };
            Ok(stacked.and_then(|p| Linear::upload(&client, &p, max_part_bytes)))
        };
        let vector = |name: &str| -> Result<Handle, StoreError> {
            Ok(client.create_from_slice(f32_bytes(&model.f32(name)?)))
        };
        let mut layers = Vec::new();
        for l in first_layer..spec.num_layers {
            let p = format!("model.layers.{l}");
            let names = |xs: &[&str]| -> Vec<String> {
                xs.iter().map(|x| format!("{p}.{x}.weight")).collect()
            };
            let (Some(qkv), Some(o), Some(gate_up), Some(down)) = (
                linear(&names(&[
                    "self_attn.q_proj",
                    "self_attn.k_proj",
                    "self_attn.v_proj",
                ]))?,
                linear(&names(&["self_attn.o_proj"]))?,
                linear(&names(&["mlp.gate_proj", "mlp.up_proj"]))?,
                linear(&names(&["mlp.down_proj"]))?,
            ) else {
                return Ok(None);
            };
            let bias = if spec.qkv_bias {
                let mut b = Vec::with_capacity(qkv.rows);
                for x in ["q_proj", "k_proj", "v_proj"] {
                    b.extend(model.f32(&format!("{p}.self_attn.{x}.bias"))?);
                }
                b
            } else {
                vec![0.0; qkv.rows]
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
            dropped: Arc::new(Mutex::new(Vec::new())),
            next_kv: 0,
            step: 0,
            current: Arc::new(AtomicU64::new(0)),
            stats: Arc::new(Mutex::new(PlanStats::default())),
            capture_failed: false,
            attention_chunk: ATTENTION_CHUNK,
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

    /// A new stream's cache with room for `capacity` tokens.
    pub fn new_kv(&mut self, capacity: usize) -> PlanKv {
        let s = &self.spec;
        let bytes = s.num_kv_heads * capacity * s.head_dim * 4;
        let make = || {
            (0..self.layers.len())
                .map(|_| self.client.empty(bytes))
                .collect::<Vec<_>>()
        };
        let kv = PlanKv {
            id: self.next_kv,
            keys: make(),
            values: make(),
            capacity,
            dropped: self.dropped.clone(),
        };
        self.next_kv += 1;
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
            pos: f(rows),
            ids: f(rows),
            sel: f(rows),
            last: f(rows * h),
            logits: f(rows * s.vocab_size),
            picks: f(2 * rows),
        });
        self.captured.clear();
    }

    /// Forget the captures over caches that are gone.
    fn collect_dropped(&mut self) {
        let gone: Vec<u64> = match self.dropped.lock() {
            Ok(mut d) => std::mem::take(&mut *d),
            Err(_) => return,
        };
        if !gone.is_empty() {
            self.captured
                .retain(|shape, _| !shape.segments.iter().any(|(id, _)| gone.contains(id)));
        }
    }

    /// Run one step over `segments` (their rows in order make up `input`)
    /// and return the logits of each segment's last row.
    pub fn step(
        &mut self,
        input: Input<'_>,
        segments: &[Segment<'_>],
    ) -> Result<Vec<PlanLogits>, ShardBError> {
        let s = self.spec.clone();
        let rows: usize = segments.iter().map(|g| g.rows).sum();
        let given = match input {
            Input::Hidden(x) => x.len() / s.hidden_size.max(1),
            Input::Tokens(ids) => ids.len(),
        };
        if rows == 0 || given != rows {
            return Err(ShardBError::Readback(format!(
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
        self.collect_dropped();
        self.prepare(input, segments);
        let Some(scratch) = self.scratch.as_ref() else {
            return Err(ShardBError::Readback("no scratch buffers".into()));
        };
        let client = &self.client;
        let tokens = matches!(input, Input::Tokens(_));
        let shape = Shape {
            tokens,
            segments: segments.iter().map(|g| (g.kv.id, g.rows)).collect(),
        };
        let replay = self.mode() == DecodeMode::Replay && rows <= MATVEC_MAX_TOKENS;
        let mut launches = 0u64;
        let (mut captures, mut replays) = (0u64, 0u64);
        if replay && let Some(c) = self.captured.get(&shape) {
            // SAFETY: the graph's buffers are alive (the plan's weights and
            // scratch, which a regrowth replaces only after forgetting every
            // capture; the caches, held by the capture) and are used only
            // from this plan, on this thread's stream.
            unsafe { c.graph.replay() }.map_err(|e| ShardBError::Readback(e.to_string()))?;
            launches = self.launches_per_step(segments, tokens);
            replays = 1;
        } else if replay {
            // The first step of this shape runs for real, then the same
            // launches are recorded.
            client
                .graph_prepare()
                .map_err(|e| ShardBError::Readback(e.to_string()))?;
            launches += self.encode(scratch, segments, tokens);
            match self.record(scratch, segments, tokens) {
                Ok(graph) => {
                    captures = 1;
                    let caches = segments
                        .iter()
                        .flat_map(|g| g.kv.keys.iter().chain(&g.kv.values).cloned())
                        .collect();
                    self.captured.insert(
                        shape,
                        Captured {
                            graph,
                            _caches: caches,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(
                        "shard B: capturing a decode step failed ({e}); launching each step instead"
                    );
                    self.capture_failed = true;
                }
            }
        } else {
            launches += self.encode(scratch, segments, tokens);
        }
        self.step += 1;
        self.current.store(self.step, Ordering::Release);
        if let Ok(mut st) = self.stats.lock() {
            st.steps += 1;
            st.segments += segments.len() as u64;
            st.launches += launches;
            st.captures += captures;
            st.replays += replays;
            st.uploads += 3;
            st.host_ns += started.elapsed().as_nanos() as u64;
        }
        let Some(scratch) = self.scratch.as_ref() else {
            return Err(ShardBError::Readback("no scratch buffers".into()));
        };
        let picks_of_step = Arc::new(Mutex::new(None));
        Ok((0..segments.len())
            .map(|row| PlanLogits {
                client: self.client.clone(),
                logits: scratch.logits.clone(),
                picks: scratch.picks.clone(),
                rows: segments.len(),
                row,
                vocab: s.vocab_size,
                step: self.step,
                current: self.current.clone(),
                stats: self.stats.clone(),
                picks_of_step: picks_of_step.clone(),
            })
            .collect())
    }

    /// Size the buffers for `segments` and write the step's inputs (rows,
    /// positions, the rows to sample) before its launches.
    fn prepare(&mut self, input: Input<'_>, segments: &[Segment<'_>]) {
        let rows: usize = segments.iter().map(|g| g.rows).sum();
        let chunks = segments
            .iter()
            .map(|g| g.kv.capacity.div_ceil(self.attention_chunk))
            .max()
            .unwrap_or(1);
        let chunked = segments
            .iter()
            .filter(|g| g.rows <= MATVEC_MAX_TOKENS)
            .map(|g| g.rows)
            .sum();
        self.ensure_scratch(rows, chunked, chunks);
        self.ensure_positions(segments.iter().map(|g| g.kv.capacity).max().unwrap_or(1));
        let Some(scratch) = self.scratch.as_ref() else {
            return;
        };
        let mut pos = Vec::with_capacity(rows);
        let mut sel = Vec::with_capacity(segments.len());
        for g in segments {
            pos.extend((g.pos..g.pos + g.rows).map(|p| p as u32));
            sel.push((pos.len() - 1) as u32);
        }
        let client = &self.client;
        let write = |h: &Handle, bytes: &[u8]| {
            client.write(h, cubecl::bytes::Bytes::from_bytes_vec(bytes.to_vec()))
        };
        match input {
            Input::Hidden(x) => write(&scratch.x, f32_bytes(x)),
            Input::Tokens(ids) => write(&scratch.ids, u32_bytes(ids)),
        }
        write(&scratch.pos, u32_bytes(&pos));
        write(&scratch.sel, u32_bytes(&sel));
    }

    /// Profile a decode step of `streams` streams (one row each) attending
    /// over `fill` cached positions, `reps` times each way: host and device
    /// time launched and replayed, and each kernel class's device time. The
    /// caches are fresh (what they hold does not change the time).
    pub fn profile(
        &mut self,
        streams: usize,
        fill: usize,
        reps: usize,
    ) -> Result<StepProfile, ShardBError> {
        let err = |e: &dyn std::fmt::Display| ShardBError::Readback(e.to_string());
        let kvs: Vec<PlanKv> = (0..streams.max(1)).map(|_| self.new_kv(fill + 1)).collect();
        let segments: Vec<Segment> = kvs
            .iter()
            .map(|kv| Segment {
                kv,
                pos: fill,
                rows: 1,
            })
            .collect();
        let x: Vec<f32> = (0..segments.len() * self.spec.hidden_size)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
            .collect();
        self.prepare(Input::Hidden(&x), &segments);
        let Some(sc) = self.scratch.as_ref() else {
            return Err(ShardBError::Readback("no scratch buffers".into()));
        };
        let c = &self.client;
        let sync = || super::device::block_on(c.sync()).map_err(|e| err(&e));
        let reps = reps.max(1);
        let device_ms = |run: &dyn Fn()| -> Result<f64, ShardBError> {
            let w = c.profile_start().map_err(|e| err(&e))?;
            for _ in 0..reps {
                run();
            }
            let d = c.profile_end(w).map_err(|e| err(&e))?;
            let ticks = super::device::block_on(d.resolve())
                .ok_or_else(|| ShardBError::Readback("no device time".into()))?;
            Ok(ticks.duration().as_secs_f64() * 1e3 / reps as f64)
        };
        let host_ms = |run: &dyn Fn()| -> Result<f64, ShardBError> {
            let mut total = 0.0;
            for _ in 0..reps {
                sync()?;
                let t = std::time::Instant::now();
                run();
                total += t.elapsed().as_secs_f64() * 1e3;
            }
            sync()?;
            Ok(total / reps as f64)
        };
        // Launched anew.
        let launches = self.encode(sc, &segments, false);
        sync()?;
        let host_launch_ms = host_ms(&|| {
            self.encode(sc, &segments, false);
        })?;
        let device_launch_ms = device_ms(&|| {
            self.encode(sc, &segments, false);
        })?;
        // Captured and replayed.
        c.graph_prepare().map_err(|e| err(&e))?;
        self.encode(sc, &segments, false);
        let graph = self.record(sc, &segments, false).map_err(|e| err(&e))?;
        sync()?;
        // SAFETY: the graph's buffers (weights, scratch, these caches) live
        // until after its last replay below, on this thread's stream.
        let replay = || {
            let _ = unsafe { graph.replay() };
        };
        let host_replay_ms = host_ms(&replay)?;
        let device_replay_ms = device_ms(&replay)?;
        // Each class alone.
        let mut t = Timer::new(c, true);
        for _ in 0..reps {
            self.encode_timed(sc, &segments, false, &mut t);
        }
        sync()?;
        let classes = t
            .classes
            .into_iter()
            .map(|(name, ms, n)| (name.to_string(), ms / reps as f64, n / reps as u64))
            .collect();
        drop(graph);
        Ok(StepProfile {
            streams: segments.len(),
            fill,
            launches,
            host_launch_ms,
            host_replay_ms,
            device_launch_ms,
            device_replay_ms,
            classes,
        })
    }

    /// Record the step's launches into a graph (nothing runs).
    fn record(
        &self,
        scratch: &Scratch,
        segments: &[Segment<'_>],
        tokens: bool,
    ) -> Result<Graph, String> {
        self.client.start_capture().map_err(|e| e.to_string())?;
        self.encode(scratch, segments, tokens);
        self.client.stop_capture().map_err(|e| e.to_string())
    }

    /// Launches one step takes.
    fn launches_per_step(&self, segments: &[Segment<'_>], tokens: bool) -> u64 {
        let parts = |l: &Linear| l.parts.len() as u64;
        let attention = segments
            .iter()
            .map(|g| if g.rows > MATVEC_MAX_TOKENS { 2 } else { 3 })
            .sum::<u64>();
        let per_layer: u64 = self
            .layers
            .first()
            .map(|l| {
                3 + parts(&l.qkv) + parts(&l.o) + parts(&l.gate_up) + parts(&l.down) + attention
            })
            .unwrap_or(0);
        let table = self.embed.as_ref().unwrap_or(&self.head);
        u64::from(tokens) * parts(table)
            + per_layer * self.layers.len() as u64
            + 1
            + parts(&self.head)
    }

    /// Issue the step's launches; returns how many.
    fn encode(&self, sc: &Scratch, segments: &[Segment<'_>], tokens: bool) -> u64 {
        let mut t = Timer::new(&self.client, false);
        self.encode_timed(sc, segments, tokens, &mut t);
        t.launches
    }

    /// [`DecodePlan::encode`] through `t` (which may time each launch).
    fn encode_timed(&self, sc: &Scratch, segments: &[Segment<'_>], tokens: bool, t: &mut Timer) {
        let s = &self.spec;
        let c = &self.client;
        let rows: usize = segments.iter().map(|g| g.rows).sum();
        let (h, nh, nkv, hd) = (s.hidden_size, s.num_heads, s.num_kv_heads, s.head_dim);
        let (qd, kvd, inter) = (s.q_dim(), s.kv_dim(), s.intermediate_size);
        let eps = s.rms_norm_eps as f32;
        if tokens {
            let table = self.embed.as_ref().unwrap_or(&self.head);
            t.run("embedding", || table.rows_into(c, &sc.ids, rows, &sc.x));
        }
        let norm = |x: &Handle, w: &Handle, out: &Handle, n: usize, gather: bool| {
            // SAFETY: x and out hold ≥ n rows of h (gathered rows are
            // indices below the step's rows), w holds h.
            unsafe {
                kernels::rms_norm::launch_unchecked(
                    c,
                    CubeCount::Static(n as u32, 1, 1),
                    CubeDim::new_1d(ROW_UNITS),
                    buffer(x, rows * h),
                    buffer(w, h),
                    buffer(&sc.sel, segments.len()),
                    buffer(out, n * h),
                    h as u32,
                    eps,
                    gather,
                );
            }
            1
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let window = s.sliding_window.unwrap_or(0) as u32;
        for (li, layer) in self.layers.iter().enumerate() {
            t.run("rms_norm", || {
                norm(&sc.x, &layer.in_norm, &sc.n, rows, false)
            });
            t.run("qkv", || layer.qkv.launch(c, &sc.n, rows, &sc.qkv, false));
            let (mut row0, mut prow0) = (0usize, 0usize);
            for g in segments {
                let (kc, vc) = (&g.kv.keys[li], &g.kv.values[li]);
                let cache = nkv * g.kv.capacity * hd;
                // SAFETY: rows row0..row0+g.rows of qkv, pos and q exist;
                // positions are below the cache capacity (checked in
                // `step`) and the RoPE tables' length.
                t.run("rope_cache", || unsafe {
                    kernels::rope_cache::launch_unchecked(
                        c,
                        CubeCount::Static(g.rows as u32, 1, 1),
                        CubeDim::new_1d(ROW_UNITS),
                        buffer(&sc.qkv, rows * (qd + 2 * kvd)),
                        buffer(&layer.qkv_bias, qd + 2 * kvd),
                        buffer(&sc.pos, rows),
                        buffer(&self.cos, self.positions * hd / 2),
                        buffer(&self.sin, self.positions * hd / 2),
                        buffer(&sc.q, rows * qd),
                        buffer(kc, cache),
                        buffer(vc, cache),
                        row0 as u32,
                        nh as u32,
                        nkv as u32,
                        g.kv.capacity as u32,
                        hd,
                    );
                    1
                });
                let direct = g.rows > MATVEC_MAX_TOKENS;
                let chunks = if direct {
                    1
                } else {
                    g.kv.capacity.div_ceil(self.attention_chunk)
                };
                let chunk = if direct {
                    g.kv.capacity
                } else {
                    self.attention_chunk
                };
                // SAFETY: as above; partial holds the step's chunked rows
                // (prow0 counts them) × heads × the scratch's chunks ×
                // (hd + 2), and is only written for a chunked segment.
                t.run("attention", || unsafe {
                    kernels::attention::launch_unchecked(
                        c,
                        CubeCount::Static(nh as u32, g.rows as u32, chunks as u32),
                        CubeDim::new_1d(ATTN_UNITS),
                        buffer(&sc.q, rows * qd),
                        buffer(&sc.pos, rows),
                        buffer(kc, cache),
                        buffer(vc, cache),
                        buffer(&sc.attn, rows * qd),
                        buffer(&sc.partial, sc.partial_len),
                        row0 as u32,
                        prow0 as u32,
                        nh as u32,
                        (nh / nkv) as u32,
                        g.kv.capacity as u32,
                        window,
                        chunk as u32,
                        sc.chunks as u32,
                        scale,
                        hd,
                        direct,
                    );
                    1
                });
                if !direct {
                    // SAFETY: as above.
                    t.run("attention", || unsafe {
                        kernels::attention_combine::launch_unchecked(
                            c,
                            CubeCount::Static(nh as u32, g.rows as u32, 1),
                            CubeDim::new_1d(hd as u32),
                            buffer(&sc.partial, sc.partial_len),
                            buffer(&sc.pos, rows),
                            buffer(&sc.attn, rows * qd),
                            row0 as u32,
                            prow0 as u32,
                            nh as u32,
                            chunk as u32,
                            sc.chunks as u32,
                            hd,
                        );
                        1
                    });
                    prow0 += g.rows;
                }
                row0 += g.rows;
            }
            t.run("o", || layer.o.launch(c, &sc.attn, rows, &sc.x, true));
            t.run("rms_norm", || {
                norm(&sc.x, &layer.post_norm, &sc.n, rows, false)
            });
            t.run("gate_up", || {
                layer.gate_up.launch(c, &sc.n, rows, &sc.gu, false)
            });
            let n = (rows * inter) as u32;
            // SAFETY: gu holds rows × 2·inter, act rows × inter; the
            // kernel guards its index by n.
            t.run("silu_mul", || unsafe {
                kernels::silu_mul::launch_unchecked(
                    c,
                    grid(n.div_ceil(256)),
                    CubeDim::new_1d(256),
                    buffer(&sc.gu, rows * 2 * inter),
                    buffer(&sc.act, rows * inter),
                    n,
                    inter as u32,
                );
                1
            });
            t.run("down", || layer.down.launch(c, &sc.act, rows, &sc.x, true));
        }
        t.run("rms_norm", || {
            norm(&sc.x, &self.norm, &sc.last, segments.len(), true)
        });
        t.run("lm_head", || {
            self.head
                .launch(c, &sc.last, segments.len(), &sc.logits, false)
        });
    }
}
