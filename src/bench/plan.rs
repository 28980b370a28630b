//! What a bench runs: tests (pp/tg sizes), repetitions, stream counts,
//! splits, baselines and the auto-split search's options, and the checks a
//! plan must pass before anything runs.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::BenchError;
use crate::config::Settings;

/// A workload: prompt processing of N tokens, or generation of N tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Pp,
    Tg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Test {
    pub kind: Kind,
    pub n: usize,
}

impl Test {
    /// "pp512", "tg128" (llama-bench's names).
    pub fn name(&self) -> String {
        match self.kind {
            Kind::Pp => format!("pp{}", self.n),
            Kind::Tg => format!("tg{}", self.n),
        }
    }
}

/// Which splits to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Splits {
    /// The configured split (`split.layers`).
    Configured,
    List(Vec<usize>),
    Auto,
}

/// What `--split auto` optimizes, and how long it may search.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoOptions {
    /// Concurrency to optimize at: 1 = latency of one stream, more =
    /// throughput of that many streams.
    pub streams: usize,
    pub budget: Duration,
    /// Tokens generated per stream in a probe.
    pub probe_tokens: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub tests: Vec<Test>,
    pub reps: usize,
    pub warmup: usize,
    pub streams: Vec<usize>,
    pub splits: Splits,
    pub baselines: bool,
    pub auto: AutoOptions,
    /// Prompt tokens of a tg test (generation starts after them).
    pub tg_prompt: usize,
}

/// Parse a llama-bench style list: "1,2,4", "4-12" (every value), "4-12+4"
/// (a step). `flag` names the option in errors.
pub fn parse_list(flag: &str, s: &str) -> Result<Vec<usize>, BenchError> {
    let bad = |item: &str, why: &str| {
        BenchError::Plan(format!(
            "{flag} {s}: '{item}' {why} (give numbers like 1,2,4 or ranges like 4-12 or 4-12+2)"
        ))
    };
    let num = |item: &str, t: &str| {
        t.trim().parse::<usize>().map_err(|e| match e.kind() {
            std::num::IntErrorKind::PosOverflow => bad(item, "is too large"),
            _ => bad(item, "is not a whole number"),
        })
    };
    let mut out = Vec::new();
    for item in s.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(bad(item, "is empty"));
        }
        match item.split_once('-') {
            None => out.push(num(item, item)?),
            Some((a, rest)) => {
                let (b, step) = match rest.split_once('+') {
                    Some((b, st)) => (b, num(item, st)?),
                    None => (rest, 1),
                };
                let (a, b) = (num(item, a)?, num(item, b)?);
                if step == 0 {
                    return Err(bad(item, "has a step of 0"));
                }
                if b < a {
                    return Err(bad(item, "runs backwards"));
                }
                out.extend((a..=b).step_by(step));
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    out.retain(|v| seen.insert(*v));
    Ok(out)
}

impl Plan {
    /// Check the plan against the model and the settings before anything
    /// runs; the splits to run, baselines included.
    pub fn validate(&self, settings: &Settings, layers: usize) -> Result<Vec<usize>, BenchError> {
        let plan = self;
        let bad = |m: String| Err(BenchError::Plan(m));
        if plan.tests.is_empty() {
            return bad(
                "nothing to run: give --pp and/or --tg sizes (e.g. --pp 512 --tg 128)".into(),
            );
        }
        if plan.reps == 0 {
            return bad("--reps must be at least 1".into());
        }
        if plan.streams.is_empty() || plan.streams.contains(&0) {
            return bad("--streams: every value must be at least 1".into());
        }
        let cap = settings.shard_a.kv_capacity;
        for t in &plan.tests {
            if t.n == 0 {
                return bad(format!("{}: a test needs at least 1 token", t.name()));
            }
            if t.kind == Kind::Tg && t.n < 2 {
                return bad(format!(
                    "{}: tg needs at least 2 tokens (the first is timed as time to first token)",
                    t.name()
                ));
            }
            let need = match t.kind {
                Kind::Pp => t.n + 1,
                Kind::Tg => plan.tg_prompt + t.n,
            };
            if need > cap {
                return bad(format!(
                    "{} needs {need} positions but shard_a.kv_capacity is {cap}: use a smaller size or --set shard_a.kv_capacity={need}",
                    t.name()
                ));
            }
        }
        let mut ks = match &plan.splits {
            Splits::Configured => vec![settings.split_for(layers)],
            Splits::List(v) => v.clone(),
            Splits::Auto => Vec::new(),
        };
        if let Some(k) = ks.iter().find(|k| **k > layers) {
            return bad(format!(
                "--split {k}: the model has {layers} layers, so k must be 0..={layers}"
            ));
        }
        if plan.baselines {
            for b in [layers, 0] {
                if !ks.contains(&b) {
                    ks.push(b);
                }
            }
        }
        Ok(ks)
    }
}
