//! The embedding model's OpenVINO IR: a BERT encoder with its pooling and
//! L2 normalization, so one call turns token ids into sentence vectors.
//!
//! Inputs: `input_ids` and `attention_mask`, i64 `[B, T]` (rows padded on
//! the right; the mask 1 on real tokens, 0 on padding). Output:
//! `embeddings` f32 `[B, hidden]`, unit length. Token types are 0 (one
//! sentence a row), positions `0..T`. Dynamic mode leaves B and T open;
//! static mode fixes them (`embed.batch × embed.max_length`: the NPU
//! compiles static shapes only), and the caller pads.
//!
//! Weights stay in the store's compressed form through the same
//! decompression subgraph as shard A (INT8 per channel → f16 → scale →
//! f32). Layer norm is MVN (opset6) with the scale and shift, GELU the erf
//! form (opset7), attention SDPA (opset13) with an additive mask of
//! -30000 on padded keys (finite, so f16 devices do not turn it into NaN);
//! pooling is the first token (CLS) or the masked mean, then NormalizeL2
//! (eps 1e-12, max mode, as sentence-transformers' `F.normalize`).

use super::graph::*;
use super::{IrError, StoreError};
use crate::bake::encoder::BakedEncoder;
use crate::model::bert::Pooling;

/// Shapes of an encoder IR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncoderShape {
    Dynamic,
    Static { batch: usize, length: usize },
}

/// An encoder IR ready for `Core::read_model_from_buffer`.
pub struct EncoderIr {
    pub xml: String,
    pub bin: Vec<u8>,
    pub shape: EncoderShape,
    pub pooling: Pooling,
}

fn f32_const(g: &mut Graph, model: &BakedEncoder, short: &str) -> Result<T, StoreError> {
    let t = model.tensor(short)?;
    let n = t.numel() as i64;
    let values = t.dequantize();
    Ok(g.const_f32(&values, vec![n]))
}

fn layer_norm(g: &mut Graph, model: &BakedEncoder, x: &T, prefix: &str) -> Result<T, StoreError> {
    let axes = g.const_i64(&[-1], vec![1]);
    let eps = model.spec().layer_norm_eps;
    let n = g.op1(
        "MVN",
        "opset6",
        vec![
            ("eps", format!("{eps:e}")),
            ("normalize_variance", "true".into()),
            ("eps_mode", "inside_sqrt".into()),
        ],
        &[x, &axes],
        Et::F32,
        x.shape.clone(),
    );
    let gamma = f32_const(g, model, &format!("{prefix}.weight"))?;
    let beta = f32_const(g, model, &format!("{prefix}.bias"))?;
    let y = g.binary("Multiply", &n, &gamma);
    Ok(g.binary("Add", &y, &beta))
}

fn dense(g: &mut Graph, model: &BakedEncoder, x: &T, prefix: &str) -> Result<T, StoreError> {
    let w = g.weight(&model.tensor(&format!("{prefix}.weight"))?);
    let y = g.matmul_tb(x, &w);
    let b = f32_const(g, model, &format!("{prefix}.bias"))?;
    Ok(g.binary("Add", &y, &b))
}

/// Build the encoder with `pooling` (the model's own unless overridden).
pub fn build_encoder(
    model: &BakedEncoder,
    shape: EncoderShape,
    pooling: Pooling,
) -> Result<EncoderIr, IrError> {
    let spec = model.spec().clone();
    let (b, t) = match shape {
        EncoderShape::Dynamic => (-1i64, -1i64),
        EncoderShape::Static { batch, length } => {
            if batch == 0 || length == 0 || length > spec.max_position_embeddings {
                return Err(IrError::EncoderShape {
                    batch,
                    length,
                    max: spec.max_position_embeddings,
                });
            }
            (batch as i64, length as i64)
        }
    };
    let (h, heads) = (spec.hidden_size as i64, spec.num_heads as i64);
    let hd = h / heads;
    let mut g = Graph::default();
    let ids = g.parameter("input_ids", Et::I64, vec![b, t]);
    let mask = g.parameter("attention_mask", Et::I64, vec![b, t]);

    // Embeddings: word + position (0..T) + token type 0, then layer norm.
    let axis0 = g.const_i64(&[0], vec![]);
    let word = g.weight(&model.tensor("embeddings.word_embeddings.weight")?);
    let x = g.op1(
        "Gather",
        "opset8",
        vec![("batch_dims", "0".into())],
        &[&word, &ids, &axis0],
        Et::F32,
        vec![b, t, h],
    );
    let pos_table = g.weight(&model.tensor("embeddings.position_embeddings.weight")?);
    let shape_of = g.op1(
        "ShapeOf",
        "opset3",
        vec![("output_type", "i64".into())],
        &[&ids],
        Et::I64,
        vec![2],
    );
    let one = g.const_i64(&[1], vec![1]);
    let len = g.op1(
        "Gather",
        "opset8",
        vec![("batch_dims", "0".into())],
        &[&shape_of, &one, &axis0],
        Et::I64,
        vec![1],
    );
    let zero1 = g.const_i64(&[0], vec![1]);
    let step = g.const_i64(&[1], vec![1]);
    let axes0 = g.const_i64(&[0], vec![1]);
    let pos = g.op1(
        "Slice",
        "opset8",
        vec![],
        &[&pos_table, &zero1, &len, &step, &axes0],
        Et::F32,
        vec![t, h],
    );
    let type_table = g.weight(&model.tensor("embeddings.token_type_embeddings.weight")?);
    let typ = g.op1(
        "Gather",
        "opset8",
        vec![("batch_dims", "0".into())],
        &[&type_table, &axis0, &axis0],
        Et::F32,
        vec![h],
    );
    let x = g.binary("Add", &x, &pos);
    let x = g.binary("Add", &x, &typ);
    let mut x = layer_norm(&mut g, model, &x, "embeddings.LayerNorm")?;

    // Additive mask [B, 1, 1, T]: 0 on real keys, -30000 on padding.
    let mf = g.convert(&mask, Et::F32);
    let one_f = g.scalar_f32(1.0);
    let off = g.binary("Subtract", &mf, &one_f);
    let big = g.scalar_f32(30000.0);
    let add_mask = g.binary("Multiply", &off, &big);
    let add_mask = g.unsqueeze(&add_mask, 1);
    let add_mask = g.unsqueeze(&add_mask, 1);

    for l in 0..spec.num_layers {
        let p = format!("encoder.layer.{l}");
        let heads_of = |g: &mut Graph, y: &T| {
            let y = g.reshape(y, &[0, 0, heads, hd], true, vec![b, t, heads, hd]);
            g.transpose(&y, &[0, 2, 1, 3])
        };
        let q = dense(&mut g, model, &x, &format!("{p}.attention.self.query"))?;
        let k = dense(&mut g, model, &x, &format!("{p}.attention.self.key"))?;
        let v = dense(&mut g, model, &x, &format!("{p}.attention.self.value"))?;
        let (q, k, v) = (
            heads_of(&mut g, &q),
            heads_of(&mut g, &k),
            heads_of(&mut g, &v),
        );
        let a = g.op1(
            "ScaledDotProductAttention",
            "opset13",
            vec![("causal", "false".into())],
            &[&q, &k, &v, &add_mask],
            Et::F32,
            vec![b, heads, t, hd],
        );
        let a = g.transpose(&a, &[0, 2, 1, 3]);
        let a = g.reshape(&a, &[0, 0, h], true, vec![b, t, h]);
        let o = dense(&mut g, model, &a, &format!("{p}.attention.output.dense"))?;
        let r = g.binary("Add", &o, &x);
        let a = layer_norm(
            &mut g,
            model,
            &r,
            &format!("{p}.attention.output.LayerNorm"),
        )?;
        let i = dense(&mut g, model, &a, &format!("{p}.intermediate.dense"))?;
        let i = g.op1(
            "Gelu",
            "opset7",
            vec![("approximation_mode", "ERF".into())],
            &[&i],
            Et::F32,
            i.shape.clone(),
        );
        let o = dense(&mut g, model, &i, &format!("{p}.output.dense"))?;
        let r = g.binary("Add", &o, &a);
        x = layer_norm(&mut g, model, &r, &format!("{p}.output.LayerNorm"))?;
    }

    let pooled = match pooling {
        Pooling::Cls => {
            let axis1 = g.const_i64(&[1], vec![]);
            g.op1(
                "Gather",
                "opset8",
                vec![("batch_dims", "0".into())],
                &[&x, &axis0, &axis1],
                Et::F32,
                vec![b, h],
            )
        }
        Pooling::Mean => {
            let m3 = g.unsqueeze(&mf, 2);
            let masked = g.binary("Multiply", &x, &m3);
            let axis1 = g.const_i64(&[1], vec![1]);
            let sum = g.op1(
                "ReduceSum",
                "opset1",
                vec![("keep_dims", "false".into())],
                &[&masked, &axis1],
                Et::F32,
                vec![b, h],
            );
            let count = g.op1(
                "ReduceSum",
                "opset1",
                vec![("keep_dims", "true".into())],
                &[&mf, &axis1],
                Et::F32,
                vec![b, 1],
            );
            g.binary("Divide", &sum, &count)
        }
    };
    let axis1 = g.const_i64(&[1], vec![1]);
    let out = g.op1(
        "NormalizeL2",
        "opset1",
        vec![("eps", "1e-12".into()), ("eps_mode", "max".into())],
        &[&pooled, &axis1],
        Et::F32,
        vec![b, h],
    );
    g.name(&out, "embeddings");
    g.result(&out);
    Ok(EncoderIr {
        xml: g.render(),
        bin: g.bin,
        shape,
        pooling,
    })
}
