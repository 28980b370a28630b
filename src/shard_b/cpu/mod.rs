//! Shard B on the CPU as a planned step: packed weights, the project's own
//! loops over host buffers, and no burn ops on the way.
//!
//! burn's per-op path on the CPU backend (Flex) costs host time around the
//! packed kernels: a tensor per op, copies in and out of the kernel, fresh
//! RoPE tables and masks each step, a score matrix per head, and logits for
//! every row of a prompt. Here a step is, per layer:
//!
//! ```text
//! rms_norm ─ qkv (one stacked weight) ─ rope + cache write
//!   ─ attention (online softmax over key blocks) ─ o (+= x)
//!   ─ rms_norm ─ gate·up (stacked, silu(gate)·up as its outputs are
//!     put in order) ─ down (+= x, likewise)
//! ```
//!
//! then the final norm and the lm_head of each stream's last row only.
//! Several streams in one step share the projections (each weight read
//! once for all their rows); attention runs per stream. The projections
//! are [`Packed::matmul_with`] (exact, or with int8 activations for
//! `packed-q8`); everything else is plain Rust. Each part's time is
//! counted ([`PlanStats::parts_ns`]), so the bench shows where a step goes.

mod attention;
mod layer;
mod math;

use std::sync::Mutex;
use std::time::Instant;

use super::ShardBError;
use super::linear::WeightDtype;
use super::packed::{Epilogue, Kernel, Packed, PackedLayer, TileWork, Tiled, load_stacked, sized};
use super::plan::{Input, PlanStats};
use crate::bake::store::{BakedModel, StoreError};
use crate::model::ModelSpec;
use layer::{Layer, StepContext, rms_norm};

/// The parts of a step the CPU plan times, in [`PlanStats::parts_ns`]'s
/// order.
pub const PARTS: [&str; 9] = [
    "input",
    "rms_norm",
    "qkv",
    "rope_cache",
    "attention",
    "o",
    "gate_up_silu",
    "down",
    "lm_head",
];

#[derive(Clone, Copy)]
enum Part {
    Input,
    Norm,
    Qkv,
    RopeCache,
    Attention,
    O,
    GateUp,
    Down,
    Head,
}

/// A projection as the CPU plan multiplies it: packed rows (the exact
/// loops, or int8 activations row by row), or 4-bit tiles for int8
/// activations on AVX-512 VNNI ([`Tiled`]).
enum Proj {
    Rows(Packed),
    Tiled(Tiled),
}

impl Proj {
    /// Tiles where int8 activations are asked for and the weight and the
    /// CPU take them, else rows.
    fn new(p: Packed, kernel: Kernel) -> Proj {
        match kernel.is_q8().then(|| Tiled::from_packed(&p)).flatten() {
            Some(t) => Proj::Tiled(t),
            None => Proj::Rows(p),
        }
    }

    /// `x` `[tokens, cols]` → `[tokens, rows]`, where `epilogue` says.
    fn matmul(
        &self,
        x: &[f32],
        tokens: usize,
        kernel: Kernel,
        work: &mut TileWork,
        epilogue: Epilogue<'_>,
    ) {
        match self {
            Proj::Rows(p) => epilogue.apply(&p.matmul_with(x, tokens, kernel), p.rows),
            Proj::Tiled(t) => t.matmul_into(x, tokens, work, epilogue),
        }
    }

    fn resident_bytes(&self) -> usize {
        match self {
            Proj::Rows(p) => p.resident_bytes(),
            Proj::Tiled(t) => t.resident_bytes(),
        }
    }
}

/// The buffers a step reuses: a prompt chunk's activations are megabytes,
/// and fresh pages each step cost page faults (dearest in a VM).
#[derive(Default)]
pub(super) struct Scratch {
    pub(super) norm: Vec<f32>,
    pub(super) qkv: Vec<f32>,
    pub(super) q: Vec<f32>,
    pub(super) attn: Vec<f32>,
    /// The head's outputs.
    pub(super) out: Vec<f32>,
    pub(super) act: Vec<f32>,
    pub(super) tiles: TileWork,
}

/// One stream's cache: per layer, keys and values `[kv_heads, capacity,
/// head_dim]`.
pub struct CpuKv {
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    capacity: usize,
}

/// One stream's part of a step: its cache, the position of its first row
/// and how many rows it has.
pub struct CpuSegment<'a> {
    pub kv: &'a mut CpuKv,
    pub pos: usize,
    pub rows: usize,
}

/// Shard B's weights for the CPU plan.
pub struct CpuModel {
    spec: ModelSpec,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    head: Proj,
    /// The embedding table for token input (k = 0) when it is not the
    /// head (tied, the head stays in rows and serves as the table).
    embed: Option<Packed>,
    /// This shard starts at layer 0 (it takes token ids).
    takes_tokens: bool,
    inv_freq: Vec<f32>,
    kernel: Kernel,
    stats: Mutex<PlanStats>,
    scratch: Mutex<Scratch>,
}

impl CpuModel {
    /// Load layers `[first_layer, L)`, the norm and the head (and the
    /// embeddings for k = 0); None when a projection is not an integer
    /// weight the packed kernel takes (those run on burn's ops).
    pub fn load(
        model: &BakedModel,
        first_layer: usize,
        dtype: WeightDtype,
    ) -> Result<Option<CpuModel>, StoreError> {
        let spec = model.spec().clone();
        let kernel = match dtype {
            WeightDtype::Packed => Kernel::Best,
            WeightDtype::PackedQ8 => Kernel::Q8,
            _ => return Ok(None),
        };
        let mut layers = Vec::with_capacity(spec.num_layers - first_layer);
        for l in first_layer..spec.num_layers {
            let Some(w) = PackedLayer::load(model, l)? else {
                return Ok(None);
            };
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                in_norm: model.f32(&format!("{p}.input_layernorm.weight"))?,
                qkv: Proj::new(w.qkv, kernel),
                qkv_bias: w.qkv_bias,
                o: Proj::new(w.o, kernel),
                post_norm: model.f32(&format!("{p}.post_attention_layernorm.weight"))?,
                gate_up: Proj::new(w.gate_up, kernel),
                down: Proj::new(w.down, kernel),
            });
        }
        let Some(head) = load_stacked(model, &[model.lm_head_name().to_string()])? else {
            return Ok(None);
        };
        let (head, embed) = match (first_layer, spec.tie_word_embeddings) {
            (0, true) => (Proj::Rows(head), None),
            (0, false) => match load_stacked(model, &["model.embed_tokens.weight".to_string()])? {
                Some(e) => (Proj::new(head, kernel), Some(e)),
                None => return Ok(None),
            },
            _ => (Proj::new(head, kernel), None),
        };
        Ok(Some(CpuModel {
            norm: model.f32("model.norm.weight")?,
            inv_freq: spec.rope_inv_freq(),
            spec,
            layers,
            head,
            embed,
            takes_tokens: first_layer == 0,
            kernel,
            stats: Mutex::new(PlanStats::default()),
            scratch: Mutex::new(Scratch::default()),
        }))
    }

    /// A cache with room for `capacity` tokens.
    pub fn new_kv(&self, capacity: usize) -> CpuKv {
        let n = self.spec.num_kv_heads * capacity * self.spec.head_dim;
        let make = || (0..self.layers.len()).map(|_| vec![0f32; n]).collect();
        CpuKv {
            keys: make(),
            values: make(),
            capacity,
        }
    }

    /// Bytes of weights held (packed values, scales and zero points; norms
    /// and biases as f32).
    pub fn resident_weight_bytes(&self) -> usize {
        let h = self.spec.hidden_size;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.resident_bytes()
                    + l.o.resident_bytes()
                    + l.gate_up.resident_bytes()
                    + l.down.resident_bytes()
                    + l.qkv_bias.as_ref().map_or(0, |b| 4 * b.len())
                    + 2 * h * 4
            })
            .sum();
        layers
            + self.head.resident_bytes()
            + self.embed.as_ref().map_or(0, |e| e.resident_bytes())
            + h * 4
    }

    /// The step counters, with each part's time.
    pub fn stats(&self) -> PlanStats {
        *self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One step over `segments`' streams (`input` holds their rows in
    /// order): every layer, then the logits of each stream's last row.
    /// The caches are written at the segments' positions; the caller
    /// advances the streams.
    ///
    /// The step runs on a thread of the CPU pool (rayon's global pool),
    /// not on the caller's: from outside the pool every parallel part was
    /// a job handed over and the caller put to sleep until it was done,
    /// ~270 context switches a decode token on the 2-core VM; inside it,
    /// the parts split between the pool's threads by work stealing.
    pub fn step(
        &self,
        input: Input<'_>,
        segments: &mut [CpuSegment<'_>],
    ) -> Result<Vec<Vec<f32>>, ShardBError> {
        rayon::scope(|_| self.step_in_pool(input, segments))
    }

    fn step_in_pool(
        &self,
        input: Input<'_>,
        segments: &mut [CpuSegment<'_>],
    ) -> Result<Vec<Vec<f32>>, ShardBError> {
        let started = Instant::now();
        let mut timer = Timer::new();
        let spec = &self.spec;
        let h = spec.hidden_size;
        let rows: usize = segments.iter().map(|s| s.rows).sum();
        let mut x = match input {
            Input::Hidden(v) => v.to_vec(),
            Input::Tokens(ids) => {
                let table = match (&self.embed, &self.head) {
                    _ if !self.takes_tokens => None,
                    (Some(e), _) => Some(e),
                    (None, Proj::Rows(h)) => Some(h),
                    (None, Proj::Tiled(_)) => None,
                };
                let Some(table) = table else {
                    return Err(ShardBError::NoEmbeddings(
                        spec.num_layers - self.layers.len(),
                    ));
                };
                ids.iter().flat_map(|&id| table.row(id as usize)).collect()
            }
        };
        if x.len() != rows * h {
            return Err(ShardBError::BadInput {
                got: x.len() * 4,
                tokens: rows,
                hidden: h,
                dtype: super::HiddenDtype::F32,
            });
        }
        let ctx = StepContext::new(spec, &self.inv_freq, segments, self.kernel);
        let mut scratch = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let sc = &mut *scratch;
        timer.lap(Part::Input);
        for (li, layer) in self.layers.iter().enumerate() {
            layer.attention(li, &ctx, &mut x, segments, sc, &mut timer);
            layer.mlp(&ctx, &mut x, sc, &mut timer);
        }
        // The final norm and the head over each stream's last row only.
        let _span = tracing::trace_span!("lm_head").entered();
        let mut last = Vec::with_capacity(segments.len() * h);
        let mut row = 0;
        for s in segments.iter() {
            row += s.rows;
            last.extend_from_slice(&x[(row - 1) * h..row * h]);
        }
        let normed = sized(&mut sc.norm, last.len());
        rms_norm(&last, &self.norm, ctx.eps, normed);
        timer.lap(Part::Norm);
        let logits = &mut sc.out;
        let store = Epilogue::Store(logits);
        self.head
            .matmul(normed, segments.len(), self.kernel, &mut sc.tiles, store);
        timer.lap(Part::Head);
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        stats.steps += 1;
        stats.segments += segments.len() as u64;
        stats.host_ns += started.elapsed().as_nanos() as u64;
        for (a, b) in stats.parts_ns.iter_mut().zip(timer.parts) {
            *a += b;
        }
        Ok(logits
            .chunks_exact(spec.vocab_size)
            .map(<[f32]>::to_vec)
            .collect())
    }
}

/// Each part's time in a step (the clock runs from one lap to the next).
struct Timer {
    parts: [u64; PARTS.len()],
    clock: Instant,
}

impl Timer {
    fn new() -> Timer {
        Timer {
            parts: [0; PARTS.len()],
            clock: Instant::now(),
        }
    }

    /// The time since the last lap goes to `part`.
    fn lap(&mut self, part: Part) {
        let now = Instant::now();
        self.parts[part as usize] += (now - self.clock).as_nanos() as u64;
        self.clock = now;
    }
}
