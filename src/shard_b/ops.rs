//! Shard B on burn's tensor ops: the CPU backend (Flex), and a GPU for the
//! weights the decode plan ([`super::plan`]) does not take.
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

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::linear::{QuantLinear, Stacked, WeightDtype};
use super::{ATTENTION_SPAN, ShardBError};
use crate::bake::store::{BakedModel, StoreError};
use crate::model::ModelSpec;

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

/// One stream's rows of a step ([`OpsModel::forward`]).
pub struct OpsRows<'a> {
    pub x: Tensor<2>,
    pub kv: &'a mut OpsKv,
    pub pos: usize,
    pub capacity: usize,
}

/// One stream's KV cache for shard B's layers, preallocated to capacity.
pub struct OpsKv {
    keys: Vec<Tensor<3>>,
    values: Vec<Tensor<3>>,
}

/// What one step's attention shares across layers: positions, the RoPE
/// tables and the mask.
struct StepContext {
    pos: usize,
    t: usize,
    span: usize,
    cos: Tensor<3>,
    sin: Tensor<3>,
    mask: Tensor<3>,
}

/// Self-attention: the norm before it, q/k/v, RoPE, the cache, o.
struct Attention {
    norm: Tensor<1>,
    /// q, k, v.
    qkv: Stacked<3>,
    o: QuantLinear,
}

impl Attention {
    /// `x + o(attention(norm(x)))` for the rows of several streams (in
    /// order, `ctxs[i].t` rows for stream `i`): the norm and the
    /// projections over all rows at once (each weight read once), RoPE, the
    /// cache write and attention per stream.
    fn forward(
        &self,
        spec: &ModelSpec,
        x: Tensor<2>,
        ctxs: &[StepContext],
        caches: &mut [(&mut Tensor<3>, &mut Tensor<3>)],
    ) -> Result<Tensor<2>, ShardBError> {
        let _span = tracing::trace_span!("attention").entered();
        let n = rms_norm(x.clone(), &self.norm, spec.rms_norm_eps);
        let [q, k, v] = self.qkv.forward(n)?;
        let attn = match (ctxs, caches) {
            // One stream: its rows are all the rows.
            ([ctx], [(keys, values)]) => attend(spec, ctx, q, k, v, keys, values),
            (ctxs, caches) => {
                let mut outs = Vec::with_capacity(ctxs.len());
                let mut row = 0;
                for (ctx, (keys, values)) in ctxs.iter().zip(caches.iter_mut()) {
                    let part = |y: &Tensor<2>| y.clone().narrow(0, row, ctx.t);
                    let (qi, ki, vi) = (part(&q), part(&k), part(&v));
                    outs.push(attend(spec, ctx, qi, ki, vi, keys, values));
                    row += ctx.t;
                }
                Tensor::cat(outs, 0)
            }
        };
        Ok(x + self.o.forward(attn)?)
    }
}

/// One stream's attention: its q, k, v rows `[T, ·]` rotated, k and v
/// written into its cache at the step's positions, softmax over the span.
fn attend(
    spec: &ModelSpec,
    ctx: &StepContext,
    q: Tensor<2>,
    k: Tensor<2>,
    v: Tensor<2>,
    keys: &mut Tensor<3>,
    values: &mut Tensor<3>,
) -> Tensor<2> {
    let (nh, nkv, hd) = (spec.num_heads, spec.num_kv_heads, spec.head_dim);
    let (t, pos, span) = (ctx.t, ctx.pos, ctx.span);
    let rep = nh / nkv;
    let heads = |y: Tensor<2>, h: usize| y.reshape([t, h, hd]).swap_dims(0, 1);
    let q = rope(heads(q, nh), &ctx.cos, &ctx.sin);
    let k = rope(heads(k, nkv), &ctx.cos, &ctx.sin);
    let v = heads(v, nkv);
    let device = q.device();
    let range = [0..nkv, pos..pos + t, 0..hd];
    let old = std::mem::replace(keys, Tensor::empty([0, 0, 0], &device));
    *keys = old.slice_assign(range.clone(), k);
    let old = std::mem::replace(values, Tensor::empty([0, 0, 0], &device));
    *values = old.slice_assign(range, v);
    let ks = keys.clone().slice([0..nkv, 0..span, 0..hd]);
    let vs = values.clone().slice([0..nkv, 0..span, 0..hd]);
    // [nh, T, hd] → [nkv, rep*T, hd]: query heads of one KV head become rows.
    let qg = q.reshape([nkv, rep * t, hd]);
    let scale = 1.0 / (hd as f64).sqrt();
    let scores = qg.matmul(ks.swap_dims(1, 2)).mul_scalar(scale) + ctx.mask.clone();
    let attn = softmax(scores, 2).matmul(vs); // [nkv, rep*T, hd]
    attn.reshape([nh, t, hd])
        .swap_dims(0, 1)
        .reshape([t, nh * hd])
}

/// The MLP: the norm before it, gate/up, SiLU·up, down.
struct Mlp {
    norm: Tensor<1>,
    /// gate, up.
    gate_up: Stacked<2>,
    down: QuantLinear,
}

impl Mlp {
    /// `x + down(silu(gate(n)) · up(n))`, `n = norm(x)`.
    fn forward(&self, spec: &ModelSpec, x: Tensor<2>) -> Result<Tensor<2>, ShardBError> {
        let _span = tracing::trace_span!("mlp").entered();
        let n = rms_norm(x.clone(), &self.norm, spec.rms_norm_eps);
        let [gate, up] = self.gate_up.forward(n)?;
        Ok(x + self.down.forward(silu(gate) * up)?)
    }
}

struct Layer {
    attention: Attention,
    mlp: Mlp,
}

/// Shard B's weights as burn tensors.
pub struct OpsModel {
    layers: Vec<Layer>,
    norm: Tensor<1>,
    /// lm_head; when embeddings are tied this is also the embedding table.
    head: QuantLinear,
    /// The embedding table when it is not the lm_head (k = 0, untied).
    embed: Option<QuantLinear>,
    inv_freq: Vec<f32>,
}

impl OpsModel {
    pub fn load(
        model: &BakedModel,
        first_layer: usize,
        device: &Device,
        weights_dtype: WeightDtype,
    ) -> Result<OpsModel, StoreError> {
        let spec = model.spec();
        let lin = |name: &str, bias: bool| {
            let b = bias.then(|| name.replace(".weight", ".bias"));
            QuantLinear::load(model, name, b.as_deref(), device, weights_dtype)
        };
        let mut layers = Vec::new();
        for l in first_layer..spec.num_layers {
            let p = format!("model.layers.{l}");
            let attention = Attention {
                norm: vector(model, &format!("{p}.input_layernorm.weight"), device)?,
                qkv: Stacked::load(
                    model,
                    [
                        &format!("{p}.self_attn.q_proj.weight"),
                        &format!("{p}.self_attn.k_proj.weight"),
                        &format!("{p}.self_attn.v_proj.weight"),
                    ],
                    spec.qkv_bias,
                    device,
                    weights_dtype,
                )?,
                o: lin(&format!("{p}.self_attn.o_proj.weight"), false)?,
            };
            let mlp = Mlp {
                norm: vector(
                    model,
                    &format!("{p}.post_attention_layernorm.weight"),
                    device,
                )?,
                gate_up: Stacked::load(
                    model,
                    [
                        &format!("{p}.mlp.gate_proj.weight"),
                        &format!("{p}.mlp.up_proj.weight"),
                    ],
                    false,
                    device,
                    weights_dtype,
                )?,
                down: lin(&format!("{p}.mlp.down_proj.weight"), false)?,
            };
            layers.push(Layer { attention, mlp });
        }
        let head = lin(model.lm_head_name(), false)?;
        let embed = if first_layer == 0 && !spec.tie_word_embeddings {
            Some(lin("model.embed_tokens.weight", false)?)
        } else {
            None
        };
        Ok(OpsModel {
            norm: vector(model, "model.norm.weight", device)?,
            inv_freq: spec.rope_inv_freq(),
            layers,
            head,
            embed,
        })
    }

    /// A cache with room for `capacity` tokens.
    pub fn new_kv(&self, spec: &ModelSpec, capacity: usize, device: &Device) -> OpsKv {
        let shape = [spec.num_kv_heads, capacity, spec.head_dim];
        let make = || {
            (0..self.layers.len())
                .map(|_| Tensor::<3>::zeros(shape, (device, DType::F32)))
                .collect::<Vec<_>>()
        };
        OpsKv {
            keys: make(),
            values: make(),
        }
    }

    /// Projection groups held as one stacked weight, and how many there are.
    pub fn stacked_projections(&self) -> (usize, usize) {
        let stacked = self
            .layers
            .iter()
            .map(|l| {
                usize::from(l.attention.qkv.is_stacked()) + usize::from(l.mlp.gate_up.is_stacked())
            })
            .sum();
        (stacked, 2 * self.layers.len())
    }

    /// Bytes of weights resident on the device.
    pub fn resident_weight_bytes(&self, hidden: usize) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| {
                l.attention.qkv.resident_bytes()
                    + l.attention.o.resident_bytes()
                    + l.mlp.gate_up.resident_bytes()
                    + l.mlp.down.resident_bytes()
                    + 2 * hidden * 4
            })
            .sum();
        per_layer
            + self.head.resident_bytes()
            + self.embed.as_ref().map(|e| e.resident_bytes()).unwrap_or(0)
            + hidden * 4
    }

    /// Embedding rows of `ids` (a shard that starts at layer 0).
    pub fn embed(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        let idx = Tensor::<1, Int>::from_data(
            TensorData::new(
                ids.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                [ids.len()],
            ),
            device,
        );
        self.embed.as_ref().unwrap_or(&self.head).embed(idx)
    }

    /// Several streams' rows as one step: `items[i]` is stream `i`'s rows
    /// `x` `[T, hidden]`, its cache, the position of its first row and its
    /// capacity. The norms, projections and MLP run over all rows at once
    /// (each weight read once); attention per stream. Logits `[T, vocab]`
    /// per stream.
    pub fn forward(
        &self,
        spec: &ModelSpec,
        items: &mut [OpsRows<'_>],
    ) -> Result<Vec<Tensor<2>>, ShardBError> {
        let rep = spec.num_heads / spec.num_kv_heads;
        let mut ctxs = Vec::with_capacity(items.len());
        let mut xs = Vec::with_capacity(items.len());
        for item in items.iter() {
            let t = item.x.dims()[0];
            let total = item.pos + t;
            // Attention reads the cache in spans of ATTENTION_SPAN slots
            // (masked past the fill), so kernel shapes, and the autotuning
            // each new shape costs on a GPU, change once every
            // ATTENTION_SPAN tokens, not every token.
            let span = total
                .div_ceil(ATTENTION_SPAN)
                .saturating_mul(ATTENTION_SPAN)
                .min(item.capacity);
            let device = item.x.device();
            let (cos, sin) = self.rope_tables(spec, item.pos, t, &device);
            ctxs.push(StepContext {
                pos: item.pos,
                t,
                span,
                cos,
                sin,
                mask: mask(spec, item.pos, t, rep, span, &device),
            });
            xs.push(item.x.clone());
        }
        let mut x = match xs.len() {
            1 => xs.remove(0),
            _ => Tensor::cat(xs, 0),
        };
        for (li, layer) in self.layers.iter().enumerate() {
            let mut caches: Vec<(&mut Tensor<3>, &mut Tensor<3>)> = items
                .iter_mut()
                .map(|item| (&mut item.kv.keys[li], &mut item.kv.values[li]))
                .collect();
            x = layer.attention.forward(spec, x, &ctxs, &mut caches)?;
            x = layer.mlp.forward(spec, x)?;
        }
        let n = rms_norm(x, &self.norm, spec.rms_norm_eps);
        let logits = self.head.forward(n)?;
        if ctxs.len() == 1 {
            return Ok(vec![logits]);
        }
        let mut row = 0;
        Ok(ctxs
            .iter()
            .map(|ctx| {
                let part = logits.clone().narrow(0, row, ctx.t);
                row += ctx.t;
                part
            })
            .collect())
    }

    /// cos and sin `[1, T, hd]` for positions `pos..pos+T`.
    fn rope_tables(
        &self,
        spec: &ModelSpec,
        pos: usize,
        t: usize,
        device: &Device,
    ) -> (Tensor<3>, Tensor<3>) {
        let hd = spec.head_dim;
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
            Tensor::<3>::from_data(TensorData::new(v, [1, t, hd]), (device, DType::F32))
        };
        (mk(cos), mk(sin))
    }
}

/// Additive mask `[1, rep*T, span]` (causal, sliding window, slots past
/// the fill hidden), rows in the `[rep, T]` order of the grouped query.
fn mask(
    spec: &ModelSpec,
    pos: usize,
    t: usize,
    rep: usize,
    span: usize,
    device: &Device,
) -> Tensor<3> {
    let window = spec.sliding_window;
    let mut one = vec![f32::NEG_INFINITY; t * span];
    for i in 0..t {
        let q = pos + i;
        for j in 0..=q {
            if window.is_none_or(|w| q - j < w) {
                one[i * span + j] = 0.0;
            }
        }
    }
    let mut all = Vec::with_capacity(rep * one.len());
    for _ in 0..rep {
        all.extend_from_slice(&one);
    }
    Tensor::<3>::from_data(
        TensorData::new(all, [1, rep * t, span]),
        (device, DType::F32),
    )
}
