//! The OpenVINO IR graph builder shard A is written with: element types,
//! ports and layers, one constructor per op, shape inference for the few
//! ops that need it, and `Graph::xml` (IR v11) with the weights' bin.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Et {
    F32,
    F16,
    I64,
    U4,
    I4,
    U8,
    I8,
}

impl Et {
    pub(super) fn precision(self) -> &'static str {
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
    pub(super) fn name(self) -> &'static str {
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
pub(super) struct T {
    pub(super) layer: usize,
    pub(super) port: usize,
    pub(super) et: Et,
    pub(super) shape: Vec<i64>,
}

pub(super) struct Port {
    pub(super) et: Et,
    pub(super) shape: Vec<i64>,
    pub(super) names: Option<String>,
}

pub(super) struct Layer {
    pub(super) name: String,
    pub(super) ty: &'static str,
    pub(super) version: &'static str,
    pub(super) data: Vec<(&'static str, String)>,
    pub(super) inputs: Vec<Port>,
    pub(super) outputs: Vec<Port>,
}

#[derive(Default)]
pub(super) struct Graph {
    pub(super) layers: Vec<Layer>,
    pub(super) edges: Vec<(usize, usize, usize, usize)>,
    pub(super) bin: Vec<u8>,
}

pub(super) fn dims(shape: &[i64]) -> String {
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
pub(super) fn broadcast(a: &[i64], b: &[i64]) -> Vec<i64> {
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
    pub(super) fn op(
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

    pub(super) fn op1(
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
    pub(super) fn name(&mut self, t: &T, name: &str) {
        let layer = &mut self.layers[t.layer];
        let n_in = layer.inputs.len();
        layer.outputs[t.port - n_in].names = Some(name.to_string());
        if layer.ty == "Parameter" {
            layer.name = name.to_string();
        }
    }

    pub(super) fn parameter(&mut self, name: &str, et: Et, shape: Vec<i64>) -> T {
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

    pub(super) fn result(&mut self, t: &T) {
        self.op("Result", "opset1", vec![], &[t], vec![]);
    }

    pub(super) fn constant(&mut self, et: Et, shape: Vec<i64>, bytes: &[u8]) -> T {
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

    pub(super) fn const_i64(&mut self, values: &[i64], shape: Vec<i64>) -> T {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(Et::I64, shape, &bytes)
    }

    pub(super) fn const_f32(&mut self, values: &[f32], shape: Vec<i64>) -> T {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.constant(Et::F32, shape, &bytes)
    }

    pub(super) fn scalar_f32(&mut self, v: f32) -> T {
        self.const_f32(&[v], vec![])
    }

    pub(super) fn convert(&mut self, x: &T, et: Et) -> T {
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

    pub(super) fn binary(&mut self, ty: &'static str, a: &T, b: &T) -> T {
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

    pub(super) fn unary(&mut self, ty: &'static str, version: &'static str, x: &T) -> T {
        let shape = x.shape.clone();
        self.op1(ty, version, vec![], &[x], x.et, shape)
    }

    pub(super) fn matmul_tb(&mut self, a: &T, b: &T) -> T {
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

    pub(super) fn reshape(
        &mut self,
        x: &T,
        target: &[i64],
        special_zero: bool,
        out: Vec<i64>,
    ) -> T {
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

    pub(super) fn transpose(&mut self, x: &T, perm: &[i64]) -> T {
        let p = self.const_i64(perm, vec![perm.len() as i64]);
        let shape = perm.iter().map(|&i| x.shape[i as usize]).collect();
        self.op1("Transpose", "opset1", vec![], &[x, &p], x.et, shape)
    }

    pub(super) fn concat(&mut self, xs: &[&T], axis: usize) -> T {
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

    pub(super) fn unsqueeze(&mut self, x: &T, axis: usize) -> T {
        let a = self.const_i64(&[axis as i64], vec![1]);
        let mut shape = x.shape.clone();
        shape.insert(axis, 1);
        self.op1("Unsqueeze", "opset1", vec![], &[x, &a], x.et, shape)
    }

    /// `x[..., start:stop]` on the last axis.
    pub(super) fn slice_last(&mut self, x: &T, start: i64, stop: i64) -> T {
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
    pub(super) fn weight(&mut self, st: &StoredTensor<'_>) -> T {
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

    pub(super) fn rms_norm(&mut self, x: &T, gamma: &[u8], eps: f64) -> T {
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
    pub(super) fn rope(&mut self, x: &T, cos: &T, sin: &T, hd: i64) -> T {
        let x1 = self.slice_last(x, 0, hd / 2);
        let x2 = self.slice_last(x, hd / 2, hd);
        let n2 = self.unary("Negative", "opset1", &x2);
        let rot = self.concat(&[&n2, &x1], 3);
        let a = self.binary("Multiply", x, cos);
        let b = self.binary("Multiply", &rot, sin);
        self.binary("Add", &a, &b)
    }

    pub(super) fn render(&self) -> String {
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
