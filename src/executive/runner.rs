//! One stream through shard A: positions, masks and the KV cache handled,
//! prompts split into chunks in static mode.

use std::time::Duration;

use super::kv::{KvCache, dynamic_mask, static_mask};
use super::runtime::RuntimeError;
use super::session::{ShardASession, ShardInputs};
use crate::bake::ir::ShapeMode;

pub struct ShardARunner {
    pub session: ShardASession,
    cache: KvCache,
    /// Time spent in OpenVINO inference so far.
    pub infer_time: Duration,
}

impl ShardARunner {
    /// A runner with an empty stream; `capacity` bounds static mode's cache.
    pub fn new(session: ShardASession) -> ShardARunner {
        let cache = match session.mode {
            ShapeMode::Dynamic => KvCache::dynamic(&session.spec, session.layers),
            ShapeMode::Static { capacity, .. } => {
                KvCache::fixed(&session.spec, session.layers, capacity)
            }
        };
        ShardARunner {
            session,
            cache,
            infer_time: Duration::ZERO,
        }
    }

    /// Tokens in the stream so far.
    pub fn len(&self) -> usize {
        self.cache.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cache.is_empty()
    }

    pub fn reset(&mut self) {
        self.cache.reset();
    }

    /// Run `ids` (the next tokens of the stream); returns their hidden states
    /// `[ids.len(), hidden]`.
    pub fn run(&mut self, ids: &[u32]) -> Result<Vec<f32>, RuntimeError> {
        let spec = self.session.spec.clone();
        let h = spec.hidden_size;
        match self.session.mode {
            ShapeMode::Dynamic => {
                let p = self.cache.len();
                let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
                let pos: Vec<i64> = (p..p + ids.len()).map(|i| i as i64).collect();
                let mask = dynamic_mask(p, ids.len(), spec.sliding_window);
                let out = self.session.infer(&ShardInputs {
                    batch: 1,
                    tokens: ids.len(),
                    past_len: p,
                    input_ids: &ids64,
                    position_ids: &pos,
                    attention_mask: &mask,
                    past: self.cache.past(),
                })?;
                self.infer_time += out.elapsed;
                self.cache.replace(out.present, ids.len());
                Ok(out.hidden)
            }
            ShapeMode::Static { chunk, capacity } => {
                let mut hidden = Vec::with_capacity(ids.len() * h);
                for part in ids.chunks(chunk) {
                    let filled = self.cache.len();
                    if filled + part.len() > capacity {
                        return Err(RuntimeError::Call(format!(
                            "the stream ({filled} tokens + {}) exceeds shard_a.kv_capacity = {capacity}",
                            part.len()
                        )));
                    }
                    let mut cid = vec![0i64; chunk];
                    for (d, &s) in cid.iter_mut().zip(part) {
                        *d = s as i64;
                    }
                    let pos: Vec<i64> = (filled..filled + chunk).map(|i| i as i64).collect();
                    let mask =
                        static_mask(capacity, filled, chunk, part.len(), spec.sliding_window);
                    let out = self.session.infer(&ShardInputs {
                        batch: 1,
                        tokens: chunk,
                        past_len: capacity,
                        input_ids: &cid,
                        position_ids: &pos,
                        attention_mask: &mask,
                        past: self.cache.past(),
                    })?;
                    self.infer_time += out.elapsed;
                    self.cache.append(&out.present, chunk, part.len());
                    hidden.extend_from_slice(&out.hidden[..part.len() * h]);
                }
                Ok(hidden)
            }
        }
    }
}
