//! What the pipeline reports: per-message stage times, tokens, and each
//! stream's end (its report and why it finished).
//!
//! `Token {stream, id, text}` holds text back while it ends in an incomplete
//! UTF-8 character; `Stage {b_to_a_wait_ms, a_ms, a_to_b_wait_ms, b_ms}` per
//! message comes from the slot timestamps; `Finished(StreamReport {tokens,
//! text, finish, metrics {ttft_ms, prefill_tok_s, decode_tok_s}})` ends a
//! stream with a [`Finish`]: `eos`, `stop_string`, `length` (the request's
//! budget), `context` (it filled `shard_a.kv_capacity`), `cancelled` or
//! `error` (with a message). Every `SupervisorEvent` is passed on as well.

use serde::Serialize;

use crate::shard_b::sampling::StopReason;
use crate::supervisor::SupervisorEvent;

/// Per-stage timings of one message (one prefill chunk or one decode step).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StageSample {
    pub stream: u32,
    pub tokens: usize,
    pub prefill: bool,
    /// From submitting the tokens to the executive starting on them.
    pub b_to_a_wait_ms: f64,
    /// Shard A's call, from start to published.
    pub a_ms: f64,
    /// From published to shard B starting on it.
    pub a_to_b_wait_ms: f64,
    /// Shard B's layers, head and sampling.
    pub b_ms: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StreamMetrics {
    pub prompt_tokens: usize,
    pub generated: usize,
    pub ttft_ms: f64,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    pub total_ms: f64,
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// One of the model's end-of-sequence tokens.
    Eos,
    /// A stop string appeared.
    StopString,
    /// The token budget (`max_new_tokens`) is spent.
    Length,
    /// The stream filled shard_a.kv_capacity: nothing more fits.
    Context,
    /// Stopped on request.
    Cancelled,
    /// Failed; the report's `error` says why.
    Error,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Eos => "eos",
            Finish::StopString => "stop_string",
            Finish::Length => "length",
            Finish::Context => "context",
            Finish::Cancelled => "cancelled",
            Finish::Error => "error",
        }
    }
}

impl std::fmt::Display for Finish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the name `--json` prints.
impl PartialEq<&str> for Finish {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<&StopReason> for Finish {
    fn from(r: &StopReason) -> Finish {
        match r {
            StopReason::Eos(_) => Finish::Eos,
            StopReason::StopString(_) => Finish::StopString,
            StopReason::Length => Finish::Length,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamReport {
    pub stream: u32,
    pub tokens: Vec<u32>,
    pub text: String,
    pub finish: Finish,
    pub error: Option<String>,
    pub metrics: StreamMetrics,
    /// Logits of every sampled step, when asked for.
    #[serde(skip)]
    pub logits: Vec<Vec<f32>>,
}

#[derive(Debug, Clone)]
pub enum Event {
    Supervisor(SupervisorEvent),
    Token { stream: u32, id: u32, text: String },
    Stage(StageSample),
    Finished(Box<StreamReport>),
}
