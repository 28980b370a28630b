//! Shard B: decoder layers `[k, L)`, the final norm, lm_head and sampling,
//! on burn (Flex on the CPU, or a GPU through wgpu on Vulkan).
//!
//! With `k = 0` the same code runs the whole model from token ids (the
//! embeddings are loaded too): the single-device baseline.
//!
//! Per layer, for `T` new tokens at positions `p..p+T` of a stream:
//! ```text
//! x [T,H] ─ rms ─ q,k,v proj ─ rope ─┬─ k,v written in place into the stream's
//!                                     │  cache [kv_heads, capacity, head_dim]
//!          q [kv_heads, rep*T, hd] ───┴─ softmax(q kᵀ/√d + mask) v ─ o proj ─ + x
//! x ─ rms ─ silu(gate) * up ─ down ─ + x
//! ```
//! Grouped-query attention folds each KV head's `rep` query heads into the
//! rows of one matmul, so K/V are never repeated.

pub mod cube;
pub mod device;
pub mod linear;
pub mod packed;
pub mod sampling;

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::bake::store::{BakedModel, StoreError};
use crate::model::ModelSpec;
pub use device::{BackendInfo, select_device};
pub use linear::{QuantLinear, Stacked, WeightDtype};

#[derive(Debug, thiserror::Error)]
pub enum ShardBError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("split k={k} is out of range: the model has {layers} layers (0 ≤ k ≤ {layers})")]
    Split { k: usize, layers: usize },
    #[error(
        "shard_b.weights_dtype = packed-q8 (int8 activations) is a CPU kernel (shard B is on {adapter}); set shard_b.weights_dtype to packed (the GPU kernel for packed weights), f16 or f32"
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
}

/// Granularity, in cache slots, of the key span attention reads.
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

struct Layer {
    in_norm: Tensor<1>,
    /// q, k, v.
    qkv: Stacked<3>,
    o: QuantLinear,
    post_norm: Tensor<1>,
    /// gate, up.
    gate_up: Stacked<2>,
    down: QuantLinear,
}

/// One stream's KV cache for shard B's layers, preallocated to capacity.
pub struct Stream {
    keys: Vec<Tensor<3>>,
    values: Vec<Tensor<3>>,
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
    /// Start over (the buffers are kept; stale entries are never read, the mask hides them).
    pub fn reset(&mut self) {
        self.len = 0;
    }
}

pub struct ShardB {
    pub spec: ModelSpec,
    /// First layer of this shard (k).
    pub first_layer: usize,
    pub device: Device,
    pub info: BackendInfo,
    pub weights_dtype: WeightDtype,
    layers: Vec<Layer>,
    norm: Tensor<1>,
    /// lm_head; when embeddings are tied this is also the embedding table.
    head: QuantLinear,
    /// The embedding table when it is not the lm_head (k = 0, untied).
    embed: Option<QuantLinear>,
    inv_freq: Vec<f32>,
}

fn vector(model: &BakedModel, name: &str, device: &Device) -> Result<Tensor<1>, StoreError> {
    let v = model.f32(name)?;
    let n = v.len();
    Ok(Tensor::<1>::from_data(
        TensorData::new(v, [n]),
        (device, DType::F32),
    ))
}

fn rms_norm(x: Tensor<2>, w: &Tensor<1>, eps: f64) -> Tensor<2> {
    let ms = x.clone().powf_scalar(2.0).mean_dim(1);
    let inv = ms.add_scalar(eps).sqrt().recip();
    x * inv * w.clone().unsqueeze::<2>()
}

/// Hugging Face rotate_half RoPE on `[heads, T, hd]` with `cos`, `sin` `[1, T, hd]`.
fn rope(x: Tensor<3>, cos: &Tensor<3>, sin: &Tensor<3>) -> Tensor<3> {
    let hd = x.dims()[2];
    let half = hd / 2;
    let x1 = x.clone().narrow(2, 0, half);
    let x2 = x.clone().narrow(2, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 2);
    x * cos.clone() + rotated * sin.clone()
}

impl ShardB {
    /// Load layers `[first_layer, L)`, the final norm and lm_head (and the
    /// embeddings when `first_layer == 0`) onto `device`.
    pub fn load(
        model: &BakedModel,
        first_layer: usize,
        device: Device,
        info: BackendInfo,
        weights_dtype: WeightDtype,
    ) -> Result<ShardB, ShardBError> {
        let spec = model.spec().clone();
        if weights_dtype == WeightDtype::PackedQ8 && info.backend != "cpu" {
            return Err(ShardBError::PackedQ8OnGpu {
                adapter: info.name.clone(),
            });
        }
        if first_layer > spec.num_layers {
            return Err(ShardBError::Split {
                k: first_layer,
                layers: spec.num_layers,
            });
        }
        let lin = |name: &str, bias: bool| {
            let b = bias.then(|| name.replace(".weight", ".bias"));
            QuantLinear::load(model, name, b.as_deref(), &device, weights_dtype)
        };
        let mut layers = Vec::new();
        for l in first_layer..spec.num_layers {
            let p = format!("model.layers.{l}");
            layers.push(Layer {
                in_norm: vector(model, &format!("{p}.input_layernorm.weight"), &device)?,
                qkv: Stacked::load(
                    model,
                    [
                        &format!("{p}.self_attn.q_proj.weight"),
                        &format!("{p}.self_attn.k_proj.weight"),
                        &format!("{p}.self_attn.v_proj.weight"),
                    ],
                    spec.qkv_bias,
                    &device,
                    weights_dtype,
                )?,
                o: lin(&format!("{p}.self_attn.o_proj.weight"), false)?,
                post_norm: vector(
                    model,
                    &format!("{p}.post_attention_layernorm.weight"),
                    &device,
                )?,
                gate_up: Stacked::load(
                    model,
                    [
                        &format!("{p}.mlp.gate_proj.weight"),
                        &format!("{p}.mlp.up_proj.weight"),
                    ],
                    false,
                    &device,
                    weights_dtype,
                )?,
                down: lin(&format!("{p}.mlp.down_proj.weight"), false)?,
            });
        }
        let head = lin(model.lm_head_name(), false)?;
        let embed = if first_layer == 0 && !spec.tie_word_embeddings {
            Some(lin("model.embed_tokens.weight", false)?)
        } else {
            None
        };
        Ok(ShardB {
            norm: vector(model, "model.norm.weight", &device)?,
            inv_freq: spec.rope_inv_freq(),
            spec,
            first_layer,
            device,
            info,
            weights_dtype,
            layers,
            head,
            embed,
        })
    }

    /// A new stream with room for `capacity` tokens.
    pub fn new_stream(&self, capacity: usize) -> Stream {
        let s = &self.spec;
        let shape = [s.num_kv_heads, capacity, s.head_dim];
        let make = || {
            (0..self.layers.len())
                .map(|_| Tensor::<3>::zeros(shape, (&self.device, DType::F32)))
                .collect::<Vec<_>>()
        };
        Stream {
            keys: make(),
            values: make(),
            len: 0,
            capacity,
        }
    }

    /// Projection groups (q/k/v and gate/up, per layer) held as one stacked
    /// weight, and how many there are: packed weights stack, dense ones do
    /// not (see [`Stacked`]).
    pub fn stacked_projections(&self) -> (usize, usize) {
        let stacked = self
            .layers
            .iter()
            .map(|l| usize::from(l.qkv.is_stacked()) + usize::from(l.gate_up.is_stacked()))
            .sum();
        (stacked, 2 * self.layers.len())
    }

    /// Bytes of weights resident on the device.
    pub fn resident_weight_bytes(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.resident_bytes()
                    + l.o.resident_bytes()
                    + l.gate_up.resident_bytes()
                    + l.down.resident_bytes()
                    + 2 * self.spec.hidden_size * 4
            })
            .sum();
        per_layer
            + self.head.resident_bytes()
            + self.embed.as_ref().map(|e| e.resident_bytes()).unwrap_or(0)
            + self.spec.hidden_size * 4
    }

    /// Hidden states `[tokens, hidden]` arriving as bytes (from a shared-memory
    /// slot): one copy into the device tensor, then the shard. Returns logits
    /// `[tokens, vocab]` on the device.
    pub fn forward_bytes(
        &self,
        bytes: &[u8],
        dtype: HiddenDtype,
        tokens: usize,
        stream: &mut Stream,
    ) -> Result<Tensor<2>, ShardBError> {
        let h = self.spec.hidden_size;
        if bytes.len() != tokens * h * dtype.size() {
            return Err(ShardBError::BadInput {
                got: bytes.len(),
                tokens,
                hidden: h,
                dtype,
            });
        }
        let dt = match dtype {
            HiddenDtype::F32 => DType::F32,
            HiddenDtype::F16 => DType::F16,
        };
        let data = TensorData::from_bytes_vec(bytes.to_vec(), [tokens, h], dt);
        let x = Tensor::<2>::from_data(data, (&self.device, DType::F32));
        self.forward_hidden(x, stream)
    }

    /// Token ids through the whole model (a shard that starts at layer 0).
    pub fn forward_tokens(
        &self,
        ids: &[u32],
        stream: &mut Stream,
    ) -> Result<Tensor<2>, ShardBError> {
        if self.first_layer != 0 {
            return Err(ShardBError::NoEmbeddings(self.first_layer));
        }
        let vocab = self.spec.vocab_size;
        if let Some(&id) = ids.iter().find(|&&i| i as usize >= vocab) {
            return Err(ShardBError::BadToken { id, vocab });
        }
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(
                ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [ids.len()],
            ),
            &self.device,
        );
        let table = self.embed.as_ref().unwrap_or(&self.head);
        let x = table.embed(idx);
        self.forward_hidden(x, stream)
    }

    fn forward_hidden(
        &self,
        mut x: Tensor<2>,
        stream: &mut Stream,
    ) -> Result<Tensor<2>, ShardBError> {
        let s = &self.spec;
        let t = x.dims()[0];
        let pos = stream.len;
        if pos + t > stream.capacity {
            return Err(ShardBError::CacheFull {
                len: pos,
                new: t,
                capacity: stream.capacity,
            });
        }
        let (nh, nkv, hd) = (s.num_heads, s.num_kv_heads, s.head_dim);
        let rep = nh / nkv;
        let total = pos + t;
        // Attention reads the cache in spans of ATTENTION_SPAN slots (masked
        // past the fill), so kernel shapes, and the autotuning each new shape
        // costs on a GPU, change once every ATTENTION_SPAN tokens, not every token.
        let span = total
            .div_ceil(ATTENTION_SPAN)
            .saturating_mul(ATTENTION_SPAN)
            .min(stream.capacity);
        let (cos, sin) = self.rope_tables(pos, t);
        let mask = self.mask(pos, t, rep, span);
        let scale = 1.0 / (hd as f64).sqrt();
        for (li, layer) in self.layers.iter().enumerate() {
            let n = rms_norm(x.clone(), &layer.in_norm, s.rms_norm_eps);
            let heads = |y: Tensor<2>, h: usize| y.reshape([t, h, hd]).swap_dims(0, 1);
            let [q, k, v] = layer.qkv.forward(n)?;
            let q = rope(heads(q, nh), &cos, &sin);
            let k = rope(heads(k, nkv), &cos, &sin);
            let v = heads(v, nkv);
            let range = [0..nkv, pos..total, 0..hd];
            let keys =
                std::mem::replace(&mut stream.keys[li], Tensor::empty([0, 0, 0], &self.device));
            stream.keys[li] = keys.slice_assign(range.clone(), k);
            let values = std::mem::replace(
                &mut stream.values[li],
                Tensor::empty([0, 0, 0], &self.device),
            );
            stream.values[li] = values.slice_assign(range, v);
            let keys = stream.keys[li].clone().slice([0..nkv, 0..span, 0..hd]);
            let values = stream.values[li].clone().slice([0..nkv, 0..span, 0..hd]);
            // [nh, T, hd] → [nkv, rep*T, hd]: query heads of one KV head become rows.
            let qg = q.reshape([nkv, rep * t, hd]);
            let scores = qg.matmul(keys.swap_dims(1, 2)).mul_scalar(scale) + mask.clone();
            let attn = softmax(scores, 2).matmul(values); // [nkv, rep*T, hd]
            let attn = attn
                .reshape([nh, t, hd])
                .swap_dims(0, 1)
                .reshape([t, nh * hd]);
            x = x + layer.o.forward(attn)?;
            let n2 = rms_norm(x.clone(), &layer.post_norm, s.rms_norm_eps);
            let [gate, up] = layer.gate_up.forward(n2)?;
            let act = silu(gate) * up;
            x = x + layer.down.forward(act)?;
        }
        stream.len = total;
        let n = rms_norm(x, &self.norm, s.rms_norm_eps);
        self.head.forward(n)
    }

    /// cos and sin `[1, T, hd]` for positions `pos..pos+T`.
    fn rope_tables(&self, pos: usize, t: usize) -> (Tensor<3>, Tensor<3>) {
        let hd = self.spec.head_dim;
        let half = hd / 2;
        let mut cos = Vec::with_capacity(t * hd);
        let mut sin = Vec::with_capacity(t * hd);
        for p in pos..pos + t {
            let row: Vec<f32> = (0..hd)
                .map(|i| p as f32 * self.inv_freq[i % half])
                .collect();
            cos.extend(row.iter().map(|a| a.cos()));
            sin.extend(row.iter().map(|a| a.sin()));
        }
        let mk = |v: Vec<f32>| {
            Tensor::<3>::from_data(TensorData::new(v, [1, t, hd]), (&self.device, DType::F32))
        };
        (mk(cos), mk(sin))
    }

    /// Additive mask `[1, rep*T, span]` (causal, sliding window, slots past
    /// the fill hidden), rows in the `[rep, T]` order of the grouped query.
    fn mask(&self, pos: usize, t: usize, rep: usize, span: usize) -> Tensor<3> {
        let total = span;
        let window = self.spec.sliding_window;
        let mut one = vec![f32::NEG_INFINITY; t * total];
        for i in 0..t {
            let q = pos + i;
            for j in 0..=q {
                if window.is_none_or(|w| q - j < w) {
                    one[i * total + j] = 0.0;
                }
            }
        }
        let mut all = Vec::with_capacity(rep * one.len());
        for _ in 0..rep {
            all.extend_from_slice(&one);
        }
        Tensor::<3>::from_data(
            TensorData::new(all, [1, rep * t, total]),
            (&self.device, DType::F32),
        )
    }

    /// Read logits back to the host (tests, reports; decoding samples on the device).
    pub fn read_f32(t: Tensor<2>) -> Result<Vec<f32>, ShardBError> {
        t.into_data()
            .try_into_vec_as::<f32>()
            .map_err(|e| ShardBError::Readback(format!("{e:?}")))
    }
}
