//! An independent plain-Rust BERT encoder and sentence pooling, written
//! from Hugging Face's `modeling_bert.py` and sentence-transformers'
//! `Pooling` and `Normalize` modules; it shares no code with the IR
//! builder. f64 throughout; slow and obviously right.
//!
//! Each sequence is run alone, unpadded: the judge of the padded, batched
//! and static shapes the encoder runs.

use std::collections::HashMap;

use crate::model::bert::{BertSpec, Pooling};

pub struct BertReference {
    pub spec: BertSpec,
    w: HashMap<String, Vec<f64>>,
}

fn layer_norm(x: &mut [f64], gamma: &[f64], beta: &[f64], eps: f64) {
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for (i, v) in x.iter_mut().enumerate() {
        *v = (*v - mean) * inv * gamma[i] + beta[i];
    }
}

/// `y = W x + b`, W `[rows, x.len()]`.
fn linear(w: &[f64], b: &[f64], x: &[f64]) -> Vec<f64> {
    let cols = x.len();
    b.iter()
        .enumerate()
        .map(|(r, bias)| {
            bias + w[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum::<f64>()
        })
        .collect()
}

/// GELU as BERT's `gelu` (the exact one, with erf).
fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

impl BertReference {
    /// The encoder's weights by name (with the spec's prefix), from any
    /// source: the checkpoint (judging a float bake) or a baked store's
    /// dequantized tensors (judging the graph that runs them).
    pub fn new<E>(
        spec: &BertSpec,
        mut load: impl FnMut(&str) -> Result<Vec<f32>, E>,
    ) -> Result<BertReference, E> {
        let mut w = HashMap::new();
        for (name, _) in spec.expected_tensors() {
            let v = load(&name)?;
            w.insert(name, v.into_iter().map(f64::from).collect());
        }
        Ok(BertReference {
            spec: spec.clone(),
            w,
        })
    }

    fn get(&self, short: &str) -> &[f64] {
        self.w
            .get(&self.spec.name(short))
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The last hidden states `[tokens][hidden]` of one unpadded sequence
    /// (token type 0 throughout).
    pub fn hidden(&self, ids: &[u32]) -> Vec<Vec<f64>> {
        let s = &self.spec;
        let (h, heads, hd) = (s.hidden_size, s.num_heads, s.head_dim());
        let word = self.get("embeddings.word_embeddings.weight");
        let pos = self.get("embeddings.position_embeddings.weight");
        let typ = self.get("embeddings.token_type_embeddings.weight");
        let mut x: Vec<Vec<f64>> = ids
            .iter()
            .enumerate()
            .map(|(p, &id)| {
                let id = id as usize;
                let mut v: Vec<f64> = (0..h)
                    .map(|j| word[id * h + j] + pos[p * h + j] + typ[j])
                    .collect();
                layer_norm(
                    &mut v,
                    self.get("embeddings.LayerNorm.weight"),
                    self.get("embeddings.LayerNorm.bias"),
                    s.layer_norm_eps,
                );
                v
            })
            .collect();
        for l in 0..s.num_layers {
            let p = format!("encoder.layer.{l}");
            let lin = |name: &str, v: &[f64]| {
                linear(
                    self.get(&format!("{p}.{name}.weight")),
                    self.get(&format!("{p}.{name}.bias")),
                    v,
                )
            };
            let q: Vec<Vec<f64>> = x.iter().map(|v| lin("attention.self.query", v)).collect();
            let k: Vec<Vec<f64>> = x.iter().map(|v| lin("attention.self.key", v)).collect();
            let v: Vec<Vec<f64>> = x.iter().map(|v| lin("attention.self.value", v)).collect();
            let scale = 1.0 / (hd as f64).sqrt();
            let mut next = Vec::with_capacity(x.len());
            for (i, xi) in x.iter().enumerate() {
                let mut ctx = vec![0.0; h];
                for hh in 0..heads {
                    let r = hh * hd..(hh + 1) * hd;
                    let scores: Vec<f64> = k
                        .iter()
                        .map(|kj| {
                            q[i][r.clone()]
                                .iter()
                                .zip(&kj[r.clone()])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                * scale
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = scores.iter().map(|sc| (sc - max).exp()).collect();
                    let z: f64 = e.iter().sum();
                    for (j, vj) in v.iter().enumerate() {
                        for d in r.clone() {
                            ctx[d] += e[j] / z * vj[d];
                        }
                    }
                }
                let mut a: Vec<f64> = lin("attention.output.dense", &ctx)
                    .iter()
                    .zip(xi)
                    .map(|(o, r)| o + r)
                    .collect();
                layer_norm(
                    &mut a,
                    self.get(&format!("{p}.attention.output.LayerNorm.weight")),
                    self.get(&format!("{p}.attention.output.LayerNorm.bias")),
                    s.layer_norm_eps,
                );
                let inter: Vec<f64> = lin("intermediate.dense", &a)
                    .into_iter()
                    .map(gelu)
                    .collect();
                let mut out: Vec<f64> = lin("output.dense", &inter)
                    .iter()
                    .zip(&a)
                    .map(|(o, r)| o + r)
                    .collect();
                layer_norm(
                    &mut out,
                    self.get(&format!("{p}.output.LayerNorm.weight")),
                    self.get(&format!("{p}.output.LayerNorm.bias")),
                    s.layer_norm_eps,
                );
                next.push(out);
            }
            x = next;
        }
        x
    }

    /// The sentence vector of one sequence: pooled as `pooling` says, then
    /// L2-normalized.
    pub fn embed(&self, ids: &[u32], pooling: Pooling) -> Vec<f64> {
        let x = self.hidden(ids);
        let h = self.spec.hidden_size;
        let pooled: Vec<f64> = match pooling {
            Pooling::Cls => x.first().cloned().unwrap_or_else(|| vec![0.0; h]),
            Pooling::Mean => (0..h)
                .map(|j| x.iter().map(|v| v[j]).sum::<f64>() / x.len().max(1) as f64)
                .collect(),
        };
        let norm = pooled.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
        pooled.iter().map(|v| v / norm).collect()
    }
}
