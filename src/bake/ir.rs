//! Shard A's OpenVINO IR (v11), written by hand from the baked store.
//!
//! The graph: embeddings (Gather over the decompressed table) and decoder
//! layers `[0, k)`; weights stay in OpenVINO's compressed form exactly as
//! NNCF writes it (u4/i4/u8/i8 constants → Convert f16 → Subtract zero point
//! → Multiply scale → Reshape → Convert f32), so the CPU plugin fuses them
//! into low-bit FullyConnected kernels and the NPU takes them as they are.
//!
//! Inputs (B = batch, T = new tokens, P = past tokens):
//! - `input_ids` i64 `[B, T]`, `position_ids` i64 `[B, T]`
//! - `attention_mask` f32 `[B, 1, T, P + T]`: additive (0 = attend, -inf = not);
//!   causality, padding and sliding windows are all expressed here, by the caller
//! - `past_key_values.{l}.key` / `.value` f32 `[B, kv_heads, P, head_dim]`
//!
//! Outputs:
//! - `hidden_states` f32 `[B, T, hidden]` (after layer k-1, before any norm)
//! - `present.{l}.key` / `.value`: in dynamic mode the whole history
//!   `[B, kv_heads, P + T, head_dim]` (fed back as the next past); in static
//!   mode only the T new entries `[B, kv_heads, T, head_dim]`, which the
//!   caller writes into its fixed-capacity buffer.
//!
//! Static mode fixes B = 1, T = `chunk` and P = `capacity` (the NPU compiles
//! static shapes only); unused past slots and padded tokens are masked.
//! Resident mode fixes B = 1, keeps T and P dynamic, and takes the past
//! position-major, `[1, P, kv_heads, head_dim]` (transposed in the graph):
//! the executive's mode on CPU/GPU. Each stream keeps its cache in that
//! layout, so the first P positions are one contiguous prefix that is
//! handed to OpenVINO as it is (P = the filled part rounded up to a span,
//! not the capacity); only the T new entries come back.
//!
//! Numerics: with `INFERENCE_PRECISION_HINT=f32` and
//! `DYNAMIC_QUANTIZATION_GROUP_SIZE=0` shard A matches `reference` within
//! 1e-4 relative error (max |Δ| / max |ref| over all hidden states) for a
//! prompt and 8 decode steps, k ∈ {1, L/2, L}, dynamic and static modes,
//! llama, qwen2 and mistral (tests/shard_a.rs). RMSNorm, rotate-half RoPE
//! (inv_freq with Llama 3 scaling as a constant), SwiGLU and SDPA (opset13,
//! explicit mask, KV heads repeated for GQA with Unsqueeze/Broadcast/Reshape)
//! follow the patterns the CPU plugin fuses. Dynamic mode is the tests' (the
//! exported-decoder contract); the executive uses resident and static.

use std::fmt::Write as _;

use super::quant::Scheme;
use super::store::{BakedModel, StoreError, StoredTensor};

pub mod encoder;
mod graph;
use graph::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeMode {
    Dynamic,
    Static { chunk: usize, capacity: usize },
    Resident { capacity: usize },
}

impl ShapeMode {
    /// Fixed cache capacity, if the mode has one.
    pub fn capacity(self) -> Option<usize> {
        match self {
            ShapeMode::Dynamic => None,
            ShapeMode::Static { capacity, .. } | ShapeMode::Resident { capacity } => Some(capacity),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ShapeMode::Dynamic => "dynamic",
            ShapeMode::Static { .. } => "static",
            ShapeMode::Resident { .. } => "resident",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct IrOptions {
    /// Number of decoder layers in shard A (k).
    pub layers: usize,
    pub mode: ShapeMode,
}

/// An IR ready for `Core::read_model_from_buffer`.
pub struct ShardIr {
    pub xml: String,
    pub bin: Vec<u8>,
    pub layers: usize,
    pub mode: ShapeMode,
}

#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("split k={k} is out of range: the model has {layers} layers (0 ≤ k ≤ {layers})")]
    Split { k: usize, layers: usize },
    #[error(
        "static shapes need chunk ≥ 1 and capacity ≥ 1 (got chunk={chunk}, capacity={capacity})"
    )]
    StaticShape { chunk: usize, capacity: usize },
    #[error(
        "the encoder's static shape needs embed.batch ≥ 1 and 1 ≤ embed.max_length ≤ {max} (the model's positions); got batch={batch}, max_length={length}"
    )]
    EncoderShape {
        batch: usize,
        length: usize,
        max: usize,
    },
}

fn f32_bytes(model: &BakedModel, name: &str) -> Result<Vec<u8>, StoreError> {
    let t = model.tensor(name)?;
    Ok(match t.scheme {
        Scheme::F32 => t.data.to_vec(),
        _ => t
            .dequantize()
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
    })
}

/// Build shard A: embeddings and decoder layers `[0, opts.layers)`.
pub fn build_shard_a(model: &BakedModel, opts: &IrOptions) -> Result<ShardIr, IrError> {
    let spec = model.spec().clone();
    if opts.layers > spec.num_layers {
        return Err(IrError::Split {
            k: opts.layers,
            layers: spec.num_layers,
        });
    }
    let (b, t, p) = match opts.mode {
        ShapeMode::Dynamic => (-1i64, -1i64, -1i64),
        ShapeMode::Static { chunk, capacity } => {
            if chunk == 0 || capacity == 0 {
                return Err(IrError::StaticShape { chunk, capacity });
            }
            (1, chunk as i64, capacity as i64)
        }
        ShapeMode::Resident { capacity } => {
            if capacity == 0 {
                return Err(IrError::StaticShape { chunk: 1, capacity });
            }
            (1, -1, -1)
        }
    };
    let is_static = matches!(opts.mode, ShapeMode::Static { .. });
    // Static and resident modes return only the new entries.
    let new_only = !matches!(opts.mode, ShapeMode::Dynamic);
    let (h, nh, nkv, hd) = (
        spec.hidden_size as i64,
        spec.num_heads as i64,
        spec.num_kv_heads as i64,
        spec.head_dim as i64,
    );
    let kv_len = if is_static { p + t } else { -1 };

    let mut g = Graph::default();
    let ids = g.parameter("input_ids", Et::I64, vec![b, t]);
    let pos = g.parameter("position_ids", Et::I64, vec![b, t]);
    let mask = g.parameter("attention_mask", Et::F32, vec![b, 1, t, kv_len]);
    let resident = matches!(opts.mode, ShapeMode::Resident { .. });
    let mut past = Vec::new();
    for l in 0..opts.layers {
        let [k, v] = ["key", "value"].map(|which| {
            let name = format!("past_key_values.{l}.{which}");
            if resident {
                let x = g.parameter(&name, Et::F32, vec![b, p, nkv, hd]);
                g.transpose(&x, &[0, 2, 1, 3])
            } else {
                g.parameter(&name, Et::F32, vec![b, nkv, p, hd])
            }
        });
        past.push((k, v));
    }

    // Embeddings.
    let table = g.weight(&model.tensor("model.embed_tokens.weight")?);
    let axis0 = g.const_i64(&[0], vec![]);
    let mut x = g.op1(
        "Gather",
        "opset8",
        vec![("batch_dims", "0".into())],
        &[&table, &ids, &axis0],
        Et::F32,
        vec![b, t, h],
    );

    // cos/sin [B, 1, T, hd] from the positions.
    let (cos, sin) = if opts.layers > 0 {
        let pf = g.convert(&pos, Et::F32);
        let pf = g.unsqueeze(&pf, 2);
        let inv = spec.rope_inv_freq();
        let invc = g.const_f32(&inv, vec![hd / 2]);
        let freqs = g.binary("Multiply", &pf, &invc);
        let emb = g.concat(&[&freqs, &freqs], 2);
        let c = g.unary("Cos", "opset1", &emb);
        let s = g.unary("Sin", "opset1", &emb);
        (Some(g.unsqueeze(&c, 1)), Some(g.unsqueeze(&s, 1)))
    } else {
        (None, None)
    };

    let mut presents = Vec::new();
    for (l, (past_k, past_v)) in past.iter().enumerate() {
        let (Some(cos), Some(sin)) = (&cos, &sin) else {
            break;
        };
        let pre = format!("model.layers.{l}");
        let n = g.rms_norm(
            &x,
            &f32_bytes(model, &format!("{pre}.input_layernorm.weight"))?,
            spec.rms_norm_eps,
        );
        let proj = |g: &mut Graph, which: &str, heads: i64| -> Result<T, IrError> {
            let w = g.weight(&model.tensor(&format!("{pre}.self_attn.{which}_proj.weight"))?);
            let mut y = g.matmul_tb(&n, &w);
            if spec.qkv_bias {
                let bias = f32_bytes(model, &format!("{pre}.self_attn.{which}_proj.bias"))?;
                let bc = g.constant(Et::F32, vec![heads * hd], &bias);
                y = g.binary("Add", &y, &bc);
            }
            let y = g.reshape(&y, &[0, 0, heads, hd], true, vec![b, t, heads, hd]);
            Ok(g.transpose(&y, &[0, 2, 1, 3]))
        };
        let q = proj(&mut g, "q", nh)?;
        let k = proj(&mut g, "k", nkv)?;
        let v = proj(&mut g, "v", nkv)?;
        let q = g.rope(&q, cos, sin, hd);
        let k = g.rope(&k, cos, sin, hd);
        let k_all = g.concat(&[past_k, &k], 2);
        let v_all = g.concat(&[past_v, &v], 2);
        if new_only {
            presents.push((k.clone(), v.clone()));
        } else {
            presents.push((k_all.clone(), v_all.clone()));
        }
        // Grouped-query attention: repeat each KV head for its query heads.
        let rep = nh / nkv;
        let expand = |g: &mut Graph, kv: &T| -> T {
            if rep == 1 {
                return kv.clone();
            }
            let u = g.unsqueeze(kv, 2);
            let target = g.const_i64(&[1, 1, rep, 1, 1], vec![5]);
            let mut bshape = u.shape.clone();
            bshape[2] = rep;
            let bc = g.op1(
                "Broadcast",
                "opset3",
                vec![("mode", "bidirectional".into())],
                &[&u, &target],
                Et::F32,
                bshape,
            );
            g.reshape(&bc, &[0, nh, -1, hd], true, vec![b, nh, kv.shape[2], hd])
        };
        let kr = expand(&mut g, &k_all);
        let vr = expand(&mut g, &v_all);
        let attn = g.op1(
            "ScaledDotProductAttention",
            "opset13",
            vec![("causal", "false".into())],
            &[&q, &kr, &vr, &mask],
            Et::F32,
            vec![b, nh, t, hd],
        );
        let attn = g.transpose(&attn, &[0, 2, 1, 3]);
        let attn = g.reshape(&attn, &[0, 0, nh * hd], true, vec![b, t, nh * hd]);
        let wo = g.weight(&model.tensor(&format!("{pre}.self_attn.o_proj.weight"))?);
        let o = g.matmul_tb(&attn, &wo);
        x = g.binary("Add", &x, &o);

        let n2 = g.rms_norm(
            &x,
            &f32_bytes(model, &format!("{pre}.post_attention_layernorm.weight"))?,
            spec.rms_norm_eps,
        );
        let wg = g.weight(&model.tensor(&format!("{pre}.mlp.gate_proj.weight"))?);
        let wu = g.weight(&model.tensor(&format!("{pre}.mlp.up_proj.weight"))?);
        let wd = g.weight(&model.tensor(&format!("{pre}.mlp.down_proj.weight"))?);
        let gate = g.matmul_tb(&n2, &wg);
        let gate = g.unary("Swish", "opset4", &gate);
        let up = g.matmul_tb(&n2, &wu);
        let act = g.binary("Multiply", &gate, &up);
        let down = g.matmul_tb(&act, &wd);
        x = g.binary("Add", &x, &down);
    }

    g.name(&x, "hidden_states");
    g.result(&x);
    for (l, (k, v)) in presents.iter().enumerate() {
        g.name(k, &format!("present.{l}.key"));
        g.name(v, &format!("present.{l}.value"));
        g.result(k);
        g.result(v);
    }
    Ok(ShardIr {
        xml: g.render(),
        bin: g.bin,
        layers: opts.layers,
        mode: opts.mode,
    })
}
