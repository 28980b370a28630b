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

use std::fmt::Write as _;

use super::quant::Scheme;
use super::store::{BakedModel, StoreError, StoredTensor};

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Et {
    F32,
    F16,
    I64,
    U4,
    I4,
    U8,
    I8,
}

impl Et {
    fn precision(self) -> &'static str {
        match self {
            Et::F32 => "FP32",
            Et::F16 => "FP16",
            Et::I64 => "I64",
            Et::U4 => "U4",
            Et::I4 => "I4",
            Et::U8 => "U8",
            Et::I8 => "I8",
        }
    }
    fn name(self) -> &'static str {
        match self {
            Et::F32 => "f32",
            Et::F16 => "f16",
            Et::I64 => "i64",
            Et::U4 => "u4",
            Et::I4 => "i4",
            Et::U8 => "u8",
            Et::I8 => "i8",
        }
    }
}

/// One output port of a layer: a tensor in the graph.
#[derive(Debug, Clone)]
struct T {
    layer: usize,
    port: usize,
    et: Et,
    shape: Vec<i64>,
}

struct Port {
    et: Et,
    shape: Vec<i64>,
    names: Option<String>,
}

struct Layer {
    name: String,
    ty: &'static str,
    version: &'static str,
    data: Vec<(&'static str, String)>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
}

#[derive(Default)]
struct Graph {
    layers: Vec<Layer>,
    edges: Vec<(usize, usize, usize, usize)>,
    bin: Vec<u8>,
}

fn dims(shape: &[i64]) -> String {
    shape
        .iter()
        .map(|d| {
            if *d < 0 {
                "?".to_string()
            } else {
                d.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// numpy broadcasting of two shapes; -1 is a dynamic dimension.
fn broadcast(a: &[i64], b: &[i64]) -> Vec<i64> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (x, y) {
                (1, y) => y,
                (x, 1) => x,
                (-1, y) => y,
                (x, _) => x,
            }
        })
        .collect()
}

impl Graph {
    fn op(
        &mut self,
        ty: &'static str,
        version: &'static str,
        data: Vec<(&'static str, String)>,
        inputs: &[&T],
        outputs: Vec<(Et, Vec<i64>)>,
    ) -> Vec<T> {
        let id = self.layers.len();
        for (i, t) in inputs.iter().enumerate() {
            self.edges.push((t.layer, t.port, id, i));
        }
        let n_in = inputs.len();
        let outs: Vec<T> = outputs
            .iter()
            .enumerate()
            .map(|(j, (et, shape))| T {
                layer: id,
                port: n_in + j,
                et: *et,
                shape: shape.clone(),
            })
            .collect();
        self.layers.push(Layer {
            name: format!("{}_{id}", ty.to_lowercase()),
            ty,
            version,
            data,
            inputs: inputs
                .iter()
                .map(|t| Port {
                    et: t.et,
                    shape: t.shape.clone(),
                    names: None,
                })
                .collect(),
            outputs: outputs
                .into_iter()
                .map(|(et, shape)| Port {
                    et,
                    shape,
                    names: None,
                })
                .collect(),
        });
        outs
    }

    fn op1(
        &mut self,
        ty: &'static str,
        version: &'static str,
        data: Vec<(&'static str, String)>,
        inputs: &[&T],
        et: Et,
        shape: Vec<i64>,
    ) -> T {
        self.op(ty, version, data, inputs, vec![(et, shape)])
            .remove(0)
    }

    /// Give a tensor its name (the name set_tensor/get_tensor use).
    fn name(&mut self, t: &T, name: &str) {
        let layer = &mut self.layers[t.layer];
        let n_in = layer.inputs.len();
        layer.outputs[t.port - n_in].names = Some(name.to_string());
        if layer.ty == "Parameter" {
            layer.name = name.to_string();
        }
    }

    fn parameter(&mut self, name: &str, et: Et, shape: Vec<i64>) -> T {
        let t = self.op1(
            "Parameter",
            "opset1",
            vec![("shape", dims(&shape)), ("element_type", et.name().into())],
            &[],
            et,
            shape,
        );
        self.name(&t, name);
        t
    }

    fn result(&mut self, t: &T) {
        self.op("Result", "opset1", vec![], &[t], vec![]);
    }

    fn constant(&mut self, et: Et, shape: Vec<i64>, bytes: &[u8]) -> T {
        let offset = self.bin.len();
        self.bin.extend_from_slice(bytes);
        self.op1(
            "Const",
            "opset1",
            vec![
                ("element_type", et.name().into()),
                ("shape", dims(&shape)),
                ("offset", offset.to_string()),
                ("size", bytes.len().to_string()),
            ],
            &[],
            et,
            shape,
        )
    }

    fn const_i64(&mut self, values: &[i64], shape: Vec<i64>) -> T {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(Et::I64, shape, &bytes)
    }

    fn const_f32(&mut self, values: &[f32], shape: Vec<i64>) -> T {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(Et::F32, shape, &bytes)
    }

    fn scalar_f32(&mut self, v: f32) -> T {
        self.const_f32(&[v], vec![])
    }

    fn convert(&mut self, x: &T, et: Et) -> T {
        let shape = x.shape.clone();
        self.op1(
            "Convert",
            "opset1",
            vec![("destination_type", et.name().into())],
            &[x],
            et,
            shape,
        )
    }

    fn binary(&mut self, ty: &'static str, a: &T, b: &T) -> T {
        let shape = broadcast(&a.shape, &b.shape);
        self.op1(
            ty,
            "opset1",
            vec![("auto_broadcast", "numpy".into())],
            &[a, b],
            a.et,
            shape,
        )
    }

    fn unary(&mut self, ty: &'static str, version: &'static str, x: &T) -> T {
        let shape = x.shape.clone();
        self.op1(ty, version, vec![], &[x], x.et, shape)
    }

    fn matmul_tb(&mut self, a: &T, b: &T) -> T {
        let mut shape = a.shape.clone();
        let n = b.shape[0];
        if let Some(last) = shape.last_mut() {
            *last = n;
        }
        self.op1(
            "MatMul",
            "opset1",
            vec![
                ("transpose_a", "false".into()),
                ("transpose_b", "true".into()),
            ],
            &[a, b],
            Et::F32,
            shape,
        )
    }

    fn reshape(&mut self, x: &T, target: &[i64], special_zero: bool, out: Vec<i64>) -> T {
        let s = self.const_i64(target, vec![target.len() as i64]);
        self.op1(
            "Reshape",
            "opset1",
            vec![("special_zero", special_zero.to_string())],
            &[x, &s],
            x.et,
            out,
        )
    }

    fn transpose(&mut self, x: &T, perm: &[i64]) -> T {
        let p = self.const_i64(perm, vec![perm.len() as i64]);
        let shape = perm.iter().map(|&i| x.shape[i as usize]).collect();
        self.op1("Transpose", "opset1", vec![], &[x, &p], x.et, shape)
    }

    fn concat(&mut self, xs: &[&T], axis: usize) -> T {
        let mut shape = xs[0].shape.clone();
        shape[axis] = if xs.iter().any(|x| x.shape[axis] < 0) {
            -1
        } else {
            xs.iter().map(|x| x.shape[axis]).sum()
        };
        let et = xs[0].et;
        self.op1(
            "Concat",
            "opset1",
            vec![("axis", axis.to_string())],
            xs,
            et,
            shape,
        )
    }

    fn unsqueeze(&mut self, x: &T, axis: usize) -> T {
        let a = self.const_i64(&[axis as i64], vec![1]);
        let mut shape = x.shape.clone();
        shape.insert(axis, 1);
        self.op1("Unsqueeze", "opset1", vec![], &[x, &a], x.et, shape)
    }

    /// `x[..., start:stop]` on the last axis.
    fn slice_last(&mut self, x: &T, start: i64, stop: i64) -> T {
        let axis = x.shape.len() as i64 - 1;
        let b = self.const_i64(&[start], vec![1]);
        let e = self.const_i64(&[stop], vec![1]);
        let s = self.const_i64(&[1], vec![1]);
        let a = self.const_i64(&[axis], vec![1]);
        let mut shape = x.shape.clone();
        if let Some(last) = shape.last_mut() {
            *last = stop - start;
        }
        self.op1("Slice", "opset8", vec![], &[x, &b, &e, &s, &a], x.et, shape)
    }

    /// A weight `[rows, cols]` as f32, through NNCF's decompression subgraph.
    fn weight(&mut self, st: &StoredTensor<'_>) -> T {
        let rows = st.rows() as i64;
        let cols = st.cols() as i64;
        let shape = vec![rows, cols];
        match st.scheme {
            Scheme::F32 => self.constant(Et::F32, shape, st.data),
            Scheme::F16 => {
                let c = self.constant(Et::F16, shape, st.data);
                self.convert(&c, Et::F32)
            }
            s => {
                let et = match s {
                    Scheme::Int4Sym => Et::I4,
                    Scheme::Int4Asym => Et::U4,
                    Scheme::Int8Sym => Et::I8,
                    _ => Et::U8,
                };
                let zp_et = if s.bits() == 4 { Et::U4 } else { Et::U8 };
                let group = st.group as i64;
                let grouped = group < cols;
                let (q_shape, p_shape) = if grouped {
                    (vec![rows, cols / group, group], vec![rows, cols / group, 1])
                } else {
                    (vec![rows, cols], vec![rows, 1])
                };
                let q = self.constant(et, q_shape, st.data);
                let mut c = self.convert(&q, Et::F16);
                if let Some(zp) = st.zero_points {
                    let z = self.constant(zp_et, p_shape.clone(), zp);
                    let z = self.convert(&z, Et::F16);
                    c = self.binary("Subtract", &c, &z);
                }
                let sc = self.constant(Et::F16, p_shape, st.scales.unwrap_or(&[]));
                c = self.binary("Multiply", &c, &sc);
                if grouped {
                    c = self.reshape(&c, &[rows, cols], false, vec![rows, cols]);
                }
                self.convert(&c, Et::F32)
            }
        }
    }

    fn rms_norm(&mut self, x: &T, gamma: &[u8], eps: f64) -> T {
        let two = self.scalar_f32(2.0);
        let sq = self.binary("Power", x, &two);
        let axes = self.const_i64(&[-1], vec![1]);
        let mut mshape = x.shape.clone();
        if let Some(l) = mshape.last_mut() {
            *l = 1;
        }
        let mean = self.op1(
            "ReduceMean",
            "opset1",
            vec![("keep_dims", "true".into())],
            &[&sq, &axes],
            Et::F32,
            mshape,
        );
        let e = self.scalar_f32(eps as f32);
        let v = self.binary("Add", &mean, &e);
        let r = self.unary("Sqrt", "opset1", &v);
        let one = self.scalar_f32(1.0);
        let inv = self.binary("Divide", &one, &r);
        let y = self.binary("Multiply", x, &inv);
        let h = *x.shape.last().unwrap_or(&1);
        let g = self.constant(Et::F32, vec![h], gamma);
        self.binary("Multiply", &y, &g)
    }

    /// Hugging Face rotate_half RoPE on `[B, heads, T, hd]`.
    fn rope(&mut self, x: &T, cos: &T, sin: &T, hd: i64) -> T {
        let x1 = self.slice_last(x, 0, hd / 2);
        let x2 = self.slice_last(x, hd / 2, hd);
        let n2 = self.unary("Negative", "opset1", &x2);
        let rot = self.concat(&[&n2, &x1], 3);
        let a = self.binary("Multiply", x, cos);
        let b = self.binary("Multiply", &rot, sin);
        self.binary("Add", &a, &b)
    }

    fn render(&self) -> String {
        let mut s = String::with_capacity(self.layers.len() * 400);
        s.push_str(
            "<?xml version=\"1.0\"?>\n<net name=\"hybrid_shard_a\" version=\"11\">\n<layers>\n",
        );
        let port = |s: &mut String, id: usize, p: &Port| {
            let names = p
                .names
                .as_ref()
                .map(|n| format!(" names=\"{n}\""))
                .unwrap_or_default();
            let _ = write!(
                s,
                "<port id=\"{id}\" precision=\"{}\"{names}>",
                p.et.precision()
            );
            for d in &p.shape {
                let _ = write!(s, "<dim>{d}</dim>");
            }
            s.push_str("</port>\n");
        };
        for (id, l) in self.layers.iter().enumerate() {
            let _ = writeln!(
                s,
                "<layer id=\"{id}\" name=\"{}\" type=\"{}\" version=\"{}\">",
                l.name, l.ty, l.version
            );
            if !l.data.is_empty() {
                s.push_str("<data");
                for (k, v) in &l.data {
                    let _ = write!(s, " {k}=\"{v}\"");
                }
                s.push_str("/>\n");
            }
            if !l.inputs.is_empty() {
                s.push_str("<input>\n");
                for (i, p) in l.inputs.iter().enumerate() {
                    port(&mut s, i, p);
                }
                s.push_str("</input>\n");
            }
            if !l.outputs.is_empty() {
                s.push_str("<output>\n");
                for (j, p) in l.outputs.iter().enumerate() {
                    port(&mut s, l.inputs.len() + j, p);
                }
                s.push_str("</output>\n");
            }
            s.push_str("</layer>\n");
        }
        s.push_str("</layers>\n<edges>\n");
        for (fl, fp, tl, tp) in &self.edges {
            let _ = writeln!(
                s,
                "<edge from-layer=\"{fl}\" from-port=\"{fp}\" to-layer=\"{tl}\" to-port=\"{tp}\"/>"
            );
        }
        s.push_str("</edges>\n</net>\n");
        s
    }
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
