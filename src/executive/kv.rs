//! Shard A's per-stream KV cache and the attention masks that go with it.
//!
//! Dynamic shapes: the IR returns the whole history as `present`, which
//! becomes the next call's `past` (the cache holds it by value).
//! Static shapes (NPU): a fixed-capacity buffer per layer; the IR returns
//! only the new entries, written here in place at the fill position.

use crate::model::ModelSpec;

/// Additive mask value for positions a query must not see.
pub const MASKED: f32 = f32::NEG_INFINITY;

fn visible(query_pos: usize, key_pos: usize, window: Option<usize>) -> bool {
    key_pos <= query_pos && window.is_none_or(|w| query_pos - key_pos < w)
}

/// Mask `[1, 1, T, P + T]` for T new tokens after P past ones (dynamic shapes).
pub fn dynamic_mask(past: usize, tokens: usize, window: Option<usize>) -> Vec<f32> {
    let total = past + tokens;
    let mut m = vec![MASKED; tokens * total];
    for i in 0..tokens {
        for j in 0..total {
            if visible(past + i, j, window) {
                m[i * total + j] = 0.0;
            }
        }
    }
    m
}

/// Mask `[1, 1, C, S + C]` for a static chunk of C slots (of which `valid`
/// hold real tokens) after `filled` of the S past slots. Padded rows see
/// only themselves, so no row is empty (no NaN anywhere).
pub fn static_mask(
    capacity: usize,
    filled: usize,
    chunk: usize,
    valid: usize,
    window: Option<usize>,
) -> Vec<f32> {
    let total = capacity + chunk;
    let mut m = vec![MASKED; chunk * total];
    for i in 0..chunk {
        let row = &mut m[i * total..(i + 1) * total];
        if i >= valid {
            row[capacity + i] = 0.0;
            continue;
        }
        let qpos = filled + i;
        for (j, slot) in row.iter_mut().enumerate().take(filled) {
            if visible(qpos, j, window) {
                *slot = 0.0;
            }
        }
        for j in 0..=i {
            if visible(qpos, filled + j, window) {
                row[capacity + j] = 0.0;
            }
        }
    }
    m
}

/// One stream's KV cache for the layers of shard A.
pub struct KvCache {
    kv_heads: usize,
    head_dim: usize,
    /// Static: capacity in tokens; dynamic: None.
    capacity: Option<usize>,
    len: usize,
    /// Per layer (keys, values), `[kv_heads, len or capacity, head_dim]`.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
}

impl KvCache {
    pub fn dynamic(spec: &ModelSpec, layers: usize) -> KvCache {
        KvCache {
            kv_heads: spec.num_kv_heads,
            head_dim: spec.head_dim,
            capacity: None,
            len: 0,
            layers: vec![(Vec::new(), Vec::new()); layers],
        }
    }

    pub fn fixed(spec: &ModelSpec, layers: usize, capacity: usize) -> KvCache {
        let n = spec.num_kv_heads * capacity * spec.head_dim;
        KvCache {
            kv_heads: spec.num_kv_heads,
            head_dim: spec.head_dim,
            capacity: Some(capacity),
            len: 0,
            layers: vec![(vec![0.0; n], vec![0.0; n]); layers],
        }
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> Option<usize> {
        self.capacity
    }

    /// Forget everything (a new conversation on the same stream).
    pub fn reset(&mut self) {
        self.len = 0;
        if self.capacity.is_none() {
            for (k, v) in &mut self.layers {
                k.clear();
                v.clear();
            }
        }
    }

    /// The past as the IR takes it, per layer.
    pub fn past(&self) -> Vec<(&[f32], &[f32])> {
        self.layers
            .iter()
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect()
    }

    /// Past length the IR sees: the fill (dynamic) or the capacity (static).
    pub fn past_len(&self) -> usize {
        self.capacity.unwrap_or(self.len)
    }

    /// Take a dynamic call's `present` outputs as the new history.
    pub fn replace(&mut self, present: Vec<(Vec<f32>, Vec<f32>)>, added: usize) {
        self.layers = present;
        self.len += added;
    }

    /// Write the first `valid` of a static call's `chunk` new entries in place.
    /// Returns false (and writes nothing) when they do not fit.
    pub fn append(&mut self, present: &[(Vec<f32>, Vec<f32>)], chunk: usize, valid: usize) -> bool {
        let Some(cap) = self.capacity else {
            return false;
        };
        if self.len + valid > cap {
            return false;
        }
        let hd = self.head_dim;
        for ((k, v), (nk, nv)) in self.layers.iter_mut().zip(present) {
            for h in 0..self.kv_heads {
                for t in 0..valid {
                    let dst = (h * cap + self.len + t) * hd;
                    let src = (h * chunk + t) * hd;
                    k[dst..dst + hd].copy_from_slice(&nk[src..src + hd]);
                    v[dst..dst + hd].copy_from_slice(&nv[src..src + hd]);
                }
            }
        }
        self.len += valid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_mask_is_causal_and_windowed() {
        let m = dynamic_mask(2, 3, None);
        // row 0 is position 2: sees 0..=2
        assert_eq!(&m[0..5], &[0.0, 0.0, 0.0, MASKED, MASKED]);
        assert_eq!(&m[10..15], &[0.0; 5]);
        let w = dynamic_mask(0, 4, Some(2));
        assert_eq!(&w[12..16], &[MASKED, MASKED, 0.0, 0.0]);
    }

    #[test]
    fn static_mask_pads_rows_to_themselves() {
        let m = static_mask(4, 2, 3, 2, None);
        let total = 7;
        // row 0: past slots 0,1 and itself (slot 4)
        assert_eq!(
            &m[0..total],
            &[0.0, 0.0, MASKED, MASKED, 0.0, MASKED, MASKED]
        );
        // row 2 is padding: only itself
        assert_eq!(
            &m[2 * total..3 * total],
            &[MASKED, MASKED, MASKED, MASKED, MASKED, MASKED, 0.0]
        );
    }
}
