//! Shard B: decoder layers `[k, L)`, the final norm, lm_head and sampling.
//!
//! Three bodies run it: on a GPU with packed weights, the decode plan
//! ([`plan`]: the project's own kernels, fixed buffers, captured and
//! replayed steps, streams batched); on the CPU with packed weights, the
//! CPU plan ([`cpu`]: the packed kernels and the project's own loops over
//! host buffers, streams batched); otherwise burn's tensor ops ([`ops`]:
//! Flex on the CPU with dense weights, or a GPU through wgpu on Vulkan).
//!
//! With `k = 0` the same code runs the whole model from token ids (the
//! embeddings are loaded too): the single-device baseline.

pub mod cpu;
pub mod cube;
pub mod device;
pub mod linear;
mod logits;
pub mod ops;
pub mod packed;
pub mod plan;
pub mod sampling;

use std::sync::Mutex;

use burn::backend::DispatchDevice;
use burn::tensor::{DType, Device, Tensor, TensorData};

use crate::bake::store::{BakedModel, StoreError};
use crate::model::ModelSpec;
pub use device::{BackendInfo, select_device};
pub use linear::{QuantLinear, Stacked, WeightDtype};
pub use logits::Logits;
use logits::LogitsKind;
pub use plan::{DecodeMode, PlanStats, StepProfile};

#[derive(Debug, thiserror::Error)]
pub enum ShardBError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("split k={k} is out of range: the model has {layers} layers (0 ≤ k ≤ {layers})")]
    Split { k: usize, layers: usize },
    #[error(
        "shard_b.weights_dtype = packed-q8 (int8 activations) on a GPU ({adapter}) needs the decode plan, and this model or shard_b.decode = ops keeps shard B on burn's ops; set shard_b.weights_dtype to packed (the GPU kernel for packed weights), f16 or f32"
    )]
    PackedQ8OnGpu { adapter: String },
    #[error(
        "stream is full: {len} + {new} tokens exceed its KV capacity {capacity}; raise shard_a.kv_capacity or start a new conversation"
    )]
    CacheFull {
        len: usize,
        new: usize,
        capacity: usize,
    },
    #[error(
        "hidden states of {got} bytes do not hold {tokens} tokens × {hidden} values of {dtype:?}"
    )]
    BadInput {
        got: usize,
        tokens: usize,
        hidden: usize,
        dtype: HiddenDtype,
    },
    #[error(
        "this shard starts at layer {0}: token ids can only enter a shard that starts at layer 0"
    )]
    NoEmbeddings(usize),
    #[error(
        "the model's output for the next token holds NaN or infinite values: its weights are broken (bake it again from a good checkpoint)"
    )]
    NonFinite,
    #[error("token id {id} is outside the vocabulary ({vocab})")]
    BadToken { id: u32, vocab: usize },
    #[error("reading a result back from the device: {0}")]
    Readback(String),
    #[error("the GPU did not take a step of shard B's plan: {0}")]
    Device(String),
    #[error("a stream made by another shard B was given to this one")]
    ForeignStream,
    #[error("a batched step takes hidden states or token ids, not both")]
    MixedBatch,
    #[error(
        "a stream's part of a step holds no rows: each stream in a step needs at least one token"
    )]
    EmptyRows,
}

/// Granularity, in cache slots, of the key span burn's attention reads.
pub const ATTENTION_SPAN: usize = 128;

/// Element type of hidden states arriving as bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenDtype {
    F32,
    F16,
}

impl HiddenDtype {
    pub fn size(self) -> usize {
        match self {
            HiddenDtype::F32 => 4,
            HiddenDtype::F16 => 2,
        }
    }
}

enum StreamKv {
    Ops(ops::OpsKv),
    Plan(plan::PlanKv),
    Cpu(cpu::CpuKv),
}

/// One stream's KV cache for shard B's layers, preallocated to capacity.
pub struct Stream {
    kv: StreamKv,
    len: usize,
    capacity: usize,
}

impl Stream {
    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    /// Start over (the buffers are kept; stale entries are never read).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

/// A stream's rows for a step: hidden states as bytes, or token ids (a
/// shard that starts at layer 0).
#[derive(Clone, Copy)]
pub enum StepInput<'a> {
    Hidden {
        bytes: &'a [u8],
        dtype: HiddenDtype,
        rows: usize,
    },
    Tokens(&'a [u32]),
}

/// One stream's part of a batched step ([`ShardB::forward_batch`]).
pub struct BatchItem<'a> {
    pub input: StepInput<'a>,
    pub stream: &'a mut Stream,
}

/// How [`ShardB::load_with`] loads shard B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoadOptions {
    pub weights_dtype: WeightDtype,
    /// How a GPU with packed weights runs steps.
    pub decode: DecodeMode,
    /// The decode plan cuts weights into parts, and its banks of cache
    /// slots, of at most this many bytes (a storage binding's limit; tests
    /// cut small ones to run the several-part paths the 1B model's lm_head
    /// takes, and a bank per stream).
    pub max_part_bytes: usize,
}

impl LoadOptions {
    pub fn new(weights_dtype: WeightDtype) -> LoadOptions {
        LoadOptions {
            weights_dtype,
            decode: DecodeMode::default(),
            max_part_bytes: cube::MAX_BINDING_BYTES,
        }
    }
}

#[allow(clippy::large_enum_variant)]
enum Body {
    Ops(ops::OpsModel),
    Plan(Mutex<plan::DecodePlan>),
    Cpu(cpu::CpuModel),
}

pub struct ShardB {
    pub spec: ModelSpec,
    /// First layer of this shard (k).
    pub first_layer: usize,
    pub device: Device,
    pub info: BackendInfo,
    pub weights_dtype: WeightDtype,
    body: Body,
}

impl ShardB {
    /// Load layers `[first_layer, L)`, the final norm and lm_head (and the
    /// embeddings when `first_layer == 0`) onto `device`, decoding with the
    /// default [`DecodeMode`].
    pub fn load(
        model: &BakedModel,
        first_layer: usize,
        device: Device,
        info: BackendInfo,
        weights_dtype: WeightDtype,
    ) -> Result<ShardB, ShardBError> {
        Self::load_with(
            model,
            first_layer,
            device,
            info,
            LoadOptions::new(weights_dtype),
        )
    }

    /// [`ShardB::load`] with all the options: on a GPU with packed weights
    /// the decode plan (replayed or launched, `opts.decode`), else burn's
    /// ops.
    pub fn load_with(
        model: &BakedModel,
        first_layer: usize,
        device: Device,
        info: BackendInfo,
        opts: LoadOptions,
    ) -> Result<ShardB, ShardBError> {
        let LoadOptions {
            weights_dtype,
            decode: mode,
            max_part_bytes,
        } = opts;
        let spec = model.spec().clone();
        if first_layer > spec.num_layers {
            return Err(ShardBError::Split {
                k: first_layer,
                layers: spec.num_layers,
            });
        }
        let planned = match (device.as_dispatch(), weights_dtype) {
            (DispatchDevice::Cube(d), WeightDtype::Packed | WeightDtype::PackedQ8) => {
                plan::DecodePlan::load_parts(model, first_layer, d.client(), mode, max_part_bytes)?
                    .map(|mut p| {
                        p.set_int8_activations(weights_dtype == WeightDtype::PackedQ8);
                        p
                    })
            }
            _ => None,
        };
        if planned.is_none() && weights_dtype == WeightDtype::PackedQ8 && info.backend != "cpu" {
            return Err(ShardBError::PackedQ8OnGpu {
                adapter: info.name.clone(),
            });
        }
        let cpu_planned = match (&planned, mode) {
            (None, DecodeMode::Replay | DecodeMode::Launch) if !cube::supported(&device) => {
                cpu::CpuModel::load(model, first_layer, weights_dtype)?
            }
            _ => None,
        };
        let body = match (planned, cpu_planned) {
            (Some(p), _) => Body::Plan(Mutex::new(p)),
            (None, Some(c)) => Body::Cpu(c),
            (None, None) => Body::Ops(ops::OpsModel::load(
                model,
                first_layer,
                &device,
                weights_dtype,
            )?),
        };
        Ok(ShardB {
            spec,
            first_layer,
            device,
            info,
            weights_dtype,
            body,
        })
    }

    fn plan(&self) -> Option<std::sync::MutexGuard<'_, plan::DecodePlan>> {
        match &self.body {
            Body::Plan(p) => Some(p.lock().unwrap_or_else(|e| e.into_inner())),
            Body::Ops(_) | Body::Cpu(_) => None,
        }
    }

    /// How decode steps run: the plan's mode, `Launch` on the CPU plan
    /// (its loops run anew each step; there is nothing to capture), or
    /// `Ops`.
    pub fn decode_mode(&self) -> DecodeMode {
        match &self.body {
            Body::Cpu(_) => DecodeMode::Launch,
            _ => self.plan().map_or(DecodeMode::Ops, |p| p.mode()),
        }
    }

    /// Keys per attention chunk of the plan's decode steps (tests cross
    /// chunk boundaries with a few); nothing on burn's ops.
    pub fn set_attention_chunk(&self, keys: usize) {
        if let Some(mut p) = self.plan() {
            p.set_attention_chunk(keys);
        }
    }

    /// Build the decode plan's kernels for every size of step before a
    /// step needs them (see [`plan::DecodePlan::warm_up`]): the row counts
    /// built, none on burn's ops or the CPU (nothing to compile).
    pub fn warm_up(&self) -> Result<Vec<usize>, ShardBError> {
        match self.plan() {
            Some(mut p) => p.warm_up(),
            None => Ok(Vec::new()),
        }
    }

    /// Profile a decode step of `streams` streams attending over `fill`
    /// positions (see [`plan::DecodePlan::profile`]); None on burn's ops.
    pub fn profile_decode(
        &self,
        streams: usize,
        fill: usize,
        reps: usize,
    ) -> Option<Result<plan::StepProfile, ShardBError>> {
        self.plan().map(|mut p| p.profile(streams, fill, reps))
    }

    /// The plan's counters, the CPU plan's with its time per part (None
    /// on burn's ops).
    pub fn plan_stats(&self) -> Option<PlanStats> {
        match &self.body {
            Body::Cpu(c) => Some(c.stats()),
            _ => self.plan().map(|p| p.stats()),
        }
    }

    /// A new stream with room for `capacity` tokens.
    pub fn new_stream(&self, capacity: usize) -> Stream {
        let kv = match &self.body {
            Body::Ops(m) => StreamKv::Ops(m.new_kv(&self.spec, capacity, &self.device)),
            Body::Plan(p) => {
                StreamKv::Plan(p.lock().unwrap_or_else(|e| e.into_inner()).new_kv(capacity))
            }
            Body::Cpu(c) => StreamKv::Cpu(c.new_kv(capacity)),
        };
        Stream {
            kv,
            len: 0,
            capacity,
        }
    }

    /// Projection groups (q/k/v and gate/up, per layer) held as one stacked
    /// weight, and how many there are: packed weights stack, dense ones do
    /// not (see [`Stacked`]); the plan stacks them all.
    pub fn stacked_projections(&self) -> (usize, usize) {
        let layers = self.spec.num_layers - self.first_layer;
        match &self.body {
            Body::Ops(m) => m.stacked_projections(),
            Body::Plan(_) | Body::Cpu(_) => (2 * layers, 2 * layers),
        }
    }

    /// Bytes of weights resident on the device.
    pub fn resident_weight_bytes(&self) -> usize {
        match &self.body {
            Body::Ops(m) => m.resident_weight_bytes(self.spec.hidden_size),
            Body::Plan(p) => p
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .resident_weight_bytes(),
            Body::Cpu(c) => c.resident_weight_bytes(),
        }
    }

    /// Hidden states `[tokens, hidden]` arriving as bytes (from a shared-memory
    /// slot) through the shard. Returns the logits on the device.
    pub fn forward_bytes(
        &self,
        bytes: &[u8],
        dtype: HiddenDtype,
        tokens: usize,
        stream: &mut Stream,
    ) -> Result<Logits, ShardBError> {
        let input = StepInput::Hidden {
            bytes,
            dtype,
            rows: tokens,
        };
        self.forward_one(input, stream)
    }

    /// Token ids through the whole model (a shard that starts at layer 0).
    pub fn forward_tokens(&self, ids: &[u32], stream: &mut Stream) -> Result<Logits, ShardBError> {
        self.forward_one(StepInput::Tokens(ids), stream)
    }

    fn forward_one(
        &self,
        input: StepInput<'_>,
        stream: &mut Stream,
    ) -> Result<Logits, ShardBError> {
        let mut out = self.forward_batch(&mut [BatchItem { input, stream }])?;
        out.pop()
            .ok_or_else(|| ShardBError::Readback("a step returned no logits".into()))
    }

    /// Several streams' rows as one step: each weight is read once for
    /// all of them (their attention runs per stream), on the plan and on
    /// burn's ops. Inputs must all be hidden states
    /// or all token ids. Returns each stream's logits, in order; on an
    /// error no stream has advanced.
    pub fn forward_batch(&self, items: &mut [BatchItem<'_>]) -> Result<Vec<Logits>, ShardBError> {
        let h = self.spec.hidden_size;
        let vocab = self.spec.vocab_size;
        for item in items.iter() {
            let rows = match item.input {
                StepInput::Hidden { bytes, dtype, rows } => {
                    if bytes.len() != rows * h * dtype.size() {
                        return Err(ShardBError::BadInput {
                            got: bytes.len(),
                            tokens: rows,
                            hidden: h,
                            dtype,
                        });
                    }
                    rows
                }
                StepInput::Tokens(ids) => {
                    if self.first_layer != 0 {
                        return Err(ShardBError::NoEmbeddings(self.first_layer));
                    }
                    if let Some(&id) = ids.iter().find(|&&i| i as usize >= vocab) {
                        return Err(ShardBError::BadToken { id, vocab });
                    }
                    ids.len()
                }
            };
            if rows == 0 {
                return Err(ShardBError::EmptyRows);
            }
            let st = &item.stream;
            if st.len + rows > st.capacity {
                return Err(ShardBError::CacheFull {
                    len: st.len,
                    new: rows,
                    capacity: st.capacity,
                });
            }
        }
        match &self.body {
            Body::Ops(m) => {
                let mut rows = Vec::with_capacity(items.len());
                for item in items.iter_mut() {
                    let x = match item.input {
                        StepInput::Hidden { bytes, dtype, rows } => {
                            let dt = match dtype {
                                HiddenDtype::F32 => DType::F32,
                                HiddenDtype::F16 => DType::F16,
                            };
                            let data = TensorData::from_bytes_vec(bytes.to_vec(), [rows, h], dt);
                            Tensor::<2>::from_data(data, (&self.device, DType::F32))
                        }
                        StepInput::Tokens(ids) => m.embed(ids, &self.device),
                    };
                    let (pos, capacity) = (item.stream.len, item.stream.capacity);
                    let StreamKv::Ops(kv) = &mut item.stream.kv else {
                        return Err(ShardBError::ForeignStream);
                    };
                    rows.push(ops::OpsRows {
                        x,
                        kv,
                        pos,
                        capacity,
                    });
                }
                let logits = m.forward(&self.spec, &mut rows)?;
                let added: Vec<usize> = rows.iter().map(|r| r.x.dims()[0]).collect();
                drop(rows);
                for (item, n) in items.iter_mut().zip(added) {
                    item.stream.len += n;
                }
                Ok(logits.into_iter().map(Logits::from).collect())
            }
            Body::Plan(p) => self.planned(p, items),
            Body::Cpu(c) => self.cpu_planned(c, items),
        }
    }

    /// One step of the plan over `items`' streams.
    fn planned(
        &self,
        plan: &Mutex<plan::DecodePlan>,
        items: &mut [BatchItem<'_>],
    ) -> Result<Vec<Logits>, ShardBError> {
        let gathered = Gathered::of(items)?;
        let mut segments = Vec::with_capacity(items.len());
        for (item, &n) in items.iter().zip(&gathered.rows) {
            let StreamKv::Plan(kv) = &item.stream.kv else {
                return Err(ShardBError::ForeignStream);
            };
            segments.push(plan::Segment {
                kv,
                pos: item.stream.len,
                rows: n,
            });
        }
        let logits = plan
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .step(gathered.input(), &segments)?;
        drop(segments);
        gathered.advance(items);
        Ok(logits
            .into_iter()
            .map(|l| Logits(LogitsKind::Plan(l)))
            .collect())
    }

    /// One step of the CPU plan over `items`' streams.
    fn cpu_planned(
        &self,
        model: &cpu::CpuModel,
        items: &mut [BatchItem<'_>],
    ) -> Result<Vec<Logits>, ShardBError> {
        let gathered = Gathered::of(items)?;
        let mut segments = Vec::with_capacity(items.len());
        for (item, &n) in items.iter_mut().zip(&gathered.rows) {
            let pos = item.stream.len;
            let StreamKv::Cpu(kv) = &mut item.stream.kv else {
                return Err(ShardBError::ForeignStream);
            };
            segments.push(cpu::CpuSegment { kv, pos, rows: n });
        }
        let logits = model.step(gathered.input(), &mut segments)?;
        drop(segments);
        gathered.advance(items);
        Ok(logits
            .into_iter()
            .map(|l| Logits(LogitsKind::Host(l)))
            .collect())
    }

    /// Read logits back to the host (tests, reports; decoding samples on the device).
    pub fn read_f32(t: Tensor<2>) -> Result<Vec<f32>, ShardBError> {
        t.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ShardBError::Readback(format!("{e:?}")))
    }
}

/// A batch's rows gathered for a plan: the hidden states as f32 (or the
/// token ids) of every stream in order, and each stream's row count.
struct Gathered {
    hidden: Vec<f32>,
    ids: Vec<u32>,
    rows: Vec<usize>,
}

impl Gathered {
    fn of(items: &[BatchItem<'_>]) -> Result<Gathered, ShardBError> {
        let mut g = Gathered {
            hidden: Vec::new(),
            ids: Vec::new(),
            rows: Vec::with_capacity(items.len()),
        };
        for item in items {
            match item.input {
                StepInput::Hidden { bytes, dtype, rows } => {
                    match dtype {
                        HiddenDtype::F32 => g.hidden.extend(
                            bytes
                                .chunks_exact(4)
                                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                        ),
                        HiddenDtype::F16 => g.hidden.extend(
                            bytes
                                .chunks_exact(2)
                                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                        ),
                    }
                    g.rows.push(rows);
                }
                StepInput::Tokens(t) => {
                    g.ids.extend_from_slice(t);
                    g.rows.push(t.len());
                }
            }
        }
        if !g.hidden.is_empty() && !g.ids.is_empty() {
            return Err(ShardBError::MixedBatch);
        }
        Ok(g)
    }

    fn input(&self) -> plan::Input<'_> {
        if self.ids.is_empty() {
            plan::Input::Hidden(&self.hidden)
        } else {
            plan::Input::Tokens(&self.ids)
        }
    }

    /// Each stream past its rows (after a step that took them).
    fn advance(&self, items: &mut [BatchItem<'_>]) {
        for (item, n) in items.iter_mut().zip(&self.rows) {
            item.stream.len += n;
        }
    }
}
