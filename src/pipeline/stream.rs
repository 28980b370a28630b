//! One stream's state in the scheduler: its tokens, where shard A and
//! shard B are in it, its sampler and detokenizer, and its clock; and the
//! report it ends with.

use std::time::Instant;

use super::text::TextStream;
use super::{Finish, GenRequest, StreamMetrics, StreamReport};
use crate::shard_b::sampling::Sampler;

pub(super) struct StreamState {
    pub(super) req: GenRequest,
    /// Prompt and generated tokens so far.
    pub(super) tokens: Vec<u32>,
    /// Next position to send to shard A.
    pub(super) a_pos: usize,
    /// The next message starts the stream over in shard A.
    pub(super) fresh: bool,
    pub(super) in_flight: bool,
    pub(super) request: u64,
    pub(super) b: crate::shard_b::Stream,
    pub(super) sampler: Sampler,
    pub(super) text: TextStream,
    pub(super) generated: Vec<u32>,
    pub(super) logits: Vec<Vec<f32>>,
    pub(super) t_start: Instant,
    pub(super) t_first: Option<Instant>,
    pub(super) t_last: Instant,
}

impl StreamState {
    pub(super) fn new(req: GenRequest, b: crate::shard_b::Stream) -> StreamState {
        let mut sampler = Sampler::new(req.sampling.clone());
        sampler.observe(&req.prompt);
        let now = Instant::now();
        StreamState {
            tokens: req.prompt.clone(),
            a_pos: 0,
            fresh: true,
            in_flight: false,
            request: 0,
            b,
            sampler,
            text: TextStream::new(),
            generated: Vec::new(),
            logits: Vec::new(),
            t_start: now,
            t_first: None,
            t_last: now,
            req,
        }
    }

    /// The stream's report, and the text its detokenizer still held back.
    pub(super) fn into_report(
        mut self,
        id: u32,
        finish: Finish,
        error: Option<String>,
    ) -> (String, StreamReport) {
        let rest = self.text.finish();
        let prompt = self.req.prompt.len();
        let ttft = self
            .t_first
            .map(|t| (t - self.t_start).as_secs_f64())
            .unwrap_or(0.0);
        let decode_s = self
            .t_first
            .map(|t| (self.t_last - t).as_secs_f64())
            .unwrap_or(0.0);
        let n = self.generated.len();
        let metrics = StreamMetrics {
            prompt_tokens: prompt,
            generated: n,
            ttft_ms: ttft * 1e3,
            prefill_tok_s: if ttft > 0.0 {
                prompt as f64 / ttft
            } else {
                0.0
            },
            decode_tok_s: if n > 1 && decode_s > 0.0 {
                (n - 1) as f64 / decode_s
            } else {
                0.0
            },
            total_ms: (self.t_last - self.t_start).as_secs_f64() * 1e3,
        };
        let report = StreamReport {
            stream: id,
            tokens: std::mem::take(&mut self.generated),
            text: self.text.text().to_string(),
            finish,
            error,
            metrics,
            logits: std::mem::take(&mut self.logits),
        };
        (rest, report)
    }
}
