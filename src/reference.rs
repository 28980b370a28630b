//! An independent plain-Rust forward pass for Llama, Qwen2 and Mistral,
//! written from the architectures' definitions (Hugging Face `modeling_*.py`)
//! and sharing no code with the IR builder or shard B. Tests use it as the
//! judge. Straightforward loops, f64 accumulation; slow and obviously right.
//!
//! The tests run it from the source checkpoint (to judge an f16 bake) or from
//! the store's dequantized weights (to judge INT4), with its own RoPE and
//! Llama 3 scaling code and its own attention with the sliding window.

pub mod bert;

use std::collections::HashMap;

use crate::bake::store::{BakedModel, StoreError};
use crate::model::{Checkpoint, ModelError, ModelSpec};

/// Per-layer key/value history of one sequence: `[pos][kv_head * head_dim]`.
#[derive(Debug, Clone, Default)]
pub struct RefCache {
    keys: Vec<Vec<Vec<f32>>>,
    values: Vec<Vec<Vec<f32>>>,
}

impl RefCache {
    /// Tokens seen so far.
    pub fn len(&self) -> usize {
        self.keys.first().map(Vec::len).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub struct Reference {
    pub spec: ModelSpec,
    w: HashMap<String, Vec<f32>>,
}

impl Reference {
    /// Weights dequantized from a baked store (what shard A computes with).
    pub fn from_baked(model: &BakedModel) -> Result<Reference, StoreError> {
        let spec = model.spec().clone();
        let mut w = HashMap::new();
        for (name, _) in spec.expected_tensors() {
            w.insert(name.clone(), model.f32(&name)?);
        }
        Ok(Reference { spec, w })
    }

    /// Original weights of a Hugging Face checkpoint, widened to f32.
    pub fn from_checkpoint(spec: &ModelSpec, ckpt: &Checkpoint) -> Result<Reference, ModelError> {
        let mut w = HashMap::new();
        for (name, _) in spec.expected_tensors() {
            w.insert(name.clone(), ckpt.f32(&name)?);
        }
        Ok(Reference {
            spec: spec.clone(),
            w,
        })
    }

    fn get(&self, name: &str) -> &[f32] {
        self.w.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Run `tokens` at positions `cache.len()..` through the embeddings and
    /// layers `[0, upto)`; returns the hidden states `[tokens, hidden]`
    /// (before the final norm) and extends the cache.
    pub fn forward(&self, tokens: &[u32], upto: usize, cache: &mut RefCache) -> Vec<Vec<f32>> {
        let s = &self.spec;
        let h = s.hidden_size;
        if cache.keys.len() < upto {
            cache.keys.resize(upto, Vec::new());
            cache.values.resize(upto, Vec::new());
        }
        let start = cache.len();
        let emb = self.get("model.embed_tokens.weight");
        let mut x: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&t| emb[t as usize * h..(t as usize + 1) * h].to_vec())
            .collect();
        for l in 0..upto {
            let p = format!("model.layers.{l}");
            // Attention block.
            let normed: Vec<Vec<f32>> = x
                .iter()
                .map(|v| {
                    rms_norm(
                        v,
                        self.get(&format!("{p}.input_layernorm.weight")),
                        s.rms_norm_eps,
                    )
                })
                .collect();
            for (t, v) in normed.iter().enumerate() {
                let pos = start + t;
                let mut q = self.linear(v, &format!("{p}.self_attn.q_proj"));
                let mut k = self.linear(v, &format!("{p}.self_attn.k_proj"));
                let val = self.linear(v, &format!("{p}.self_attn.v_proj"));
                for head in q.chunks_mut(s.head_dim) {
                    self.rope(head, pos);
                }
                for head in k.chunks_mut(s.head_dim) {
                    self.rope(head, pos);
                }
                cache.keys[l].push(k);
                cache.values[l].push(val);
                let attn = self.attend(&q, l, pos, cache);
                let o = self.linear(&attn, &format!("{p}.self_attn.o_proj"));
                for (a, b) in x[t].iter_mut().zip(o) {
                    *a += b;
                }
            }
            // MLP block.
            for xt in x.iter_mut() {
                let n = rms_norm(
                    xt,
                    self.get(&format!("{p}.post_attention_layernorm.weight")),
                    s.rms_norm_eps,
                );
                let g = self.linear(&n, &format!("{p}.mlp.gate_proj"));
                let u = self.linear(&n, &format!("{p}.mlp.up_proj"));
                let act: Vec<f32> = g
                    .iter()
                    .zip(&u)
                    .map(|(&g, &u)| (g as f64 / (1.0 + (-g as f64).exp()) * u as f64) as f32)
                    .collect();
                let d = self.linear(&act, &format!("{p}.mlp.down_proj"));
                for (a, b) in xt.iter_mut().zip(d) {
                    *a += b;
                }
            }
        }
        x
    }

    /// Final norm and lm_head on one hidden state.
    pub fn logits(&self, hidden: &[f32]) -> Vec<f32> {
        let n = rms_norm(
            hidden,
            self.get("model.norm.weight"),
            self.spec.rms_norm_eps,
        );
        let head = if self.spec.tie_word_embeddings {
            "model.embed_tokens.weight"
        } else {
            "lm_head.weight"
        };
        matvec(self.get(head), &n, None)
    }

    fn linear(&self, x: &[f32], prefix: &str) -> Vec<f32> {
        let w = self.get(&format!("{prefix}.weight"));
        let b = self.w.get(&format!("{prefix}.bias")).map(Vec::as_slice);
        matvec(w, x, b)
    }

    fn rope(&self, head: &mut [f32], pos: usize) {
        let hd = head.len();
        let half = hd / 2;
        for i in 0..half {
            let f = inv_freq(&self.spec, i) as f32;
            // HF: freqs = position (f32) * inv_freq (f32), cos/sin of that.
            let angle = (pos as f32 * f) as f64;
            let (sin, cos) = angle.sin_cos();
            let (a, b) = (head[i] as f64, head[i + half] as f64);
            head[i] = (a * cos - b * sin) as f32;
            head[i + half] = (b * cos + a * sin) as f32;
        }
    }

    fn attend(&self, q: &[f32], layer: usize, pos: usize, cache: &RefCache) -> Vec<f32> {
        let s = &self.spec;
        let hd = s.head_dim;
        let group = s.num_heads / s.num_kv_heads;
        let first = match s.sliding_window {
            Some(w) if pos + 1 > w => pos + 1 - w,
            _ => 0,
        };
        let mut out = vec![0.0f32; s.num_heads * hd];
        for h in 0..s.num_heads {
            let kvh = h / group;
            let qh = &q[h * hd..(h + 1) * hd];
            let scores: Vec<f64> = (first..=pos)
                .map(|j| {
                    let k = &cache.keys[layer][j][kvh * hd..(kvh + 1) * hd];
                    qh.iter()
                        .zip(k)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
            let z: f64 = e.iter().sum();
            for d in 0..hd {
                let mut acc = 0.0f64;
                for (idx, j) in (first..=pos).enumerate() {
                    acc += e[idx] / z * cache.values[layer][j][kvh * hd + d] as f64;
                }
                out[h * hd + d] = acc as f32;
            }
        }
        out
    }
}

/// `inv_freq[i]` of RoPE, with Llama 3 scaling when configured (HF
/// `_compute_llama3_parameters`), computed in f32 as HF does.
fn inv_freq(spec: &ModelSpec, i: usize) -> f64 {
    let hd = spec.head_dim as f32;
    let base = (spec.rope_theta as f32).powf((2 * i) as f32 / hd);
    let freq = 1.0f32 / base;
    let Some(sc) = spec.rope_scaling else {
        return freq as f64;
    };
    let old = sc.original_max_position_embeddings as f32;
    let low_wavelen = old / sc.low_freq_factor as f32;
    let high_wavelen = old / sc.high_freq_factor as f32;
    let wavelen = 2.0 * std::f32::consts::PI / freq;
    let f = if wavelen < high_wavelen {
        freq
    } else if wavelen > low_wavelen {
        freq / sc.factor as f32
    } else {
        let smooth = (old / wavelen - sc.low_freq_factor as f32)
            / (sc.high_freq_factor as f32 - sc.low_freq_factor as f32);
        (1.0 - smooth) * freq / sc.factor as f32 + smooth * freq
    };
    f as f64
}

fn rms_norm(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let ms = x.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter()
        .zip(w)
        .map(|(&v, &g)| (v as f64 * r * g as f64) as f32)
        .collect()
}

/// `w` is row-major `[out, in]` (a Hugging Face Linear weight).
fn matvec(w: &[f32], x: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let n = x.len();
    w.chunks_exact(n)
        .enumerate()
        .map(|(o, row)| {
            let acc: f64 = row.iter().zip(x).map(|(&a, &b)| a as f64 * b as f64).sum();
            (acc + bias.map(|b| b[o] as f64).unwrap_or(0.0)) as f32
        })
        .collect()
}
