//! What the bench reports as it runs ([`BenchEvent`]) and why it stops
//! ([`BenchError`]).

use super::Test;
use super::record::{AutoReport, Probe, Role, Row};
use crate::pipeline::Event;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Plan(String),
    /// The saved runs (results file) cannot be read or do not hold the run asked for.
    #[error("{0}")]
    Saved(String),
    /// A report cannot be written in the format asked for.
    #[error("writing the report: {0}")]
    Report(String),
    #[error("{0}")]
    Model(String),
    #[error("split k={k}: {message}")]
    Pipeline { k: usize, message: String },
    #[error("stopped before the end")]
    Cancelled,
}

/// Why the bench reports what it reports, as it runs.
#[derive(Debug, Clone)]
pub enum BenchEvent {
    /// What will run (auto-split: the configurations are known after the search).
    Planned {
        model: String,
        layers: usize,
        shard_a: String,
        shard_b: String,
        runs: usize,
    },
    /// Starting a configuration (shard B loads, the executive compiles).
    Loading {
        k: usize,
        role: Role,
    },
    /// A run starts; `rep` is None for a warm-up.
    RunStarted {
        k: usize,
        test: Test,
        streams: usize,
        rep: Option<usize>,
        reps: usize,
    },
    /// Tokens so far in the run (prompt tokens for pp, generated for tg)
    /// and the rate so far.
    Progress {
        tokens: usize,
        target: usize,
        tok_s: f64,
    },
    /// A run ended (`tok_s` as the row counts it).
    RunDone {
        tok_s: f64,
        warmup: bool,
    },
    /// A probe of the auto-split search.
    Probe(Probe),
    /// The search's answer.
    Auto(AutoReport),
    Row(Box<Row>),
    /// The pipeline's own events (executive start, stages), for live panes.
    Pipeline(Event),
}
