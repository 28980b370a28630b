//! `hybrid-tui bench`: prefill (`pp N`) and decode (`tg N`) workloads over
//! splits, stream counts and the two single-device baselines, with
//! repetitions, mean ± sd, energy where it can be read, an auto-split
//! search, a results file and comparisons between saved runs.
//!
//! The runner knows nothing of terminals: it reports [`BenchEvent`]s to a
//! sink (the live screen, or the headless progress lines) and returns a
//! [`record::BenchRecord`].
//!
//! For each split k of the plan (its list, the configured split, or the
//! auto-split's winner and L/2; then the baselines k = L and k = 0) the
//! runner starts a pipeline with `split.layers = k` (a run-time setting, no
//! re-bake), runs `warmup` + `reps` runs of each test and stream count, and
//! shuts the pipeline down before the next k. A run submits S streams at once
//! (greedy, eos ignored, synthetic prompt ids spread over the vocabulary) and
//! polls the pipeline itself, so a stop flag (the live screen's quit,
//! SIGINT/SIGTERM) cancels between polls; the rows so far are kept and the
//! record says it stopped early.
//!
//! What a run counts comes from the pipeline's own reports, not the bench's
//! clock: pp t/s = Σ prompt tokens / max ttft; tg t/s = Σ (generated − 1) /
//! (max last-token time − min first-token time), both from submission
//! (`StreamMetrics`); stage times from the slot timestamps are averaged per
//! run (decode steps for tg, prefill chunks for pp).
//!
//! The auto-split is a pattern search over k ∈ [1, L−1] from L/2: probe k ±
//! step (a fresh pipeline each, one short warm-up, one `tg --auto-tokens` run
//! at the auto concurrency), move to the better neighbour if it beats the
//! best so far, else halve the step; stop at step 0 or when the budget is
//! spent (probes already made are reused). Single-stream decode time is
//! roughly A(k) + B(k) and multi-stream throughput roughly 1/max(A(k), B(k)),
//! both unimodal in k, so this finds the peak in O(log L) probes.

pub mod embed;
pub mod energy;
mod events;
pub mod format;
mod plan;
pub mod record;
mod work;

pub use events::{BenchError, BenchEvent};
pub use plan::{AutoOptions, Kind, Plan, Splits, Test, parse_list};

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bake::store::BakedModel;
use crate::config::Settings;
use crate::pipeline::{
    Event, Finish, GenRequest, Pipeline, PipelineError, StageSample, StreamReport,
};
use crate::shard_b::sampling::{SamplingParams, StopCriteria};
use record::{AutoReport, BenchRecord, Probe, Role, Row, Stages, StepWork};

/// Stops a running bench from another thread (the live screen's quit).
#[derive(Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst) || crate::supervisor::interrupted()
    }
}

/// Mean and sample standard deviation (0 for a single value).
pub fn mean_sd(v: &[f64]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// One measured run.
#[derive(Debug, Clone)]
struct RunResult {
    tok_s: f64,
    /// Tokens the run counted: prompt tokens (pp) or generated tokens (tg).
    tokens: usize,
    ttft_ms: f64,
    stages: Stages,
    joules: Option<f64>,
    /// Shard B's plan counters over the run, and its decode mode.
    work: Option<crate::shard_b::PlanStats>,
    decode: &'static str,
}

/// Prompt ids for stream `i`: spread over the vocabulary, away from the
/// lowest ids (where special tokens usually are), the same in every run.
fn prompt_ids(len: usize, stream: usize, vocab: usize) -> Vec<u32> {
    let span = vocab.saturating_sub(16).max(1);
    (0..len)
        .map(|j| (8 + (j * 7919 + stream * 104_729 + 13) % span) as u32)
        .collect()
}

struct Runner<'a> {
    settings: &'a Settings,
    model_dir: &'a Path,
    layers: usize,
    vocab: usize,
    plan: &'a Plan,
    stop: StopFlag,
    energy: energy::EnergyMeter,
}

impl Runner<'_> {
    fn open(&self, k: usize, sink: &mut dyn FnMut(BenchEvent)) -> Result<Pipeline, BenchError> {
        let mut s = self.settings.clone();
        s.split.layers = k as i64;
        let fail = |e: PipelineError| BenchError::Pipeline {
            k,
            message: e.to_string(),
        };
        let p = Pipeline::new(&s, self.model_dir, &mut |e| sink(BenchEvent::Pipeline(e)))
            .map_err(fail)?;
        // Every step size's kernels before anything is measured: a prompt
        // of a new size, or a stream count that drops as streams end, would
        // otherwise build them mid-run.
        if let Err(e) = p.warm_up() {
            p.shutdown();
            return Err(fail(e));
        }
        Ok(p)
    }

    /// Run `streams` copies of `test` to the end and measure them.
    fn measure(
        &self,
        p: &mut Pipeline,
        k: usize,
        test: Test,
        streams: usize,
        sink: &mut dyn FnMut(BenchEvent),
    ) -> Result<RunResult, BenchError> {
        let (prompt_len, new_tokens) = match test.kind {
            Kind::Pp => (test.n, 1),
            Kind::Tg => (self.plan.tg_prompt, test.n),
        };
        let target = streams * test.n;
        let mut ids = Vec::new();
        let before = self.energy.read();
        let work_before = p.shard_b.plan_stats();
        let t0 = Instant::now();
        for i in 0..streams {
            let req = GenRequest {
                prompt: prompt_ids(prompt_len, i, self.vocab),
                max_new_tokens: new_tokens,
                sampling: SamplingParams::greedy(),
                stop: StopCriteria {
                    ignore_eos: true,
                    ..Default::default()
                },
                record_logits: false,
            };
            ids.push(p.submit(req).map_err(|e| BenchError::Pipeline {
                k,
                message: e.to_string(),
            })?);
        }
        let mut stages: Vec<StageSample> = Vec::new();
        let mut first: Option<Instant> = None;
        let mut count = 0usize;
        let mut last_progress = Instant::now();
        let mut reports: Vec<StreamReport> = Vec::new();
        while reports.len() < ids.len() {
            if self.stop.stopped() {
                for &id in &ids {
                    p.cancel(id, &mut |_| {});
                }
                p.take_finished();
                return Err(BenchError::Cancelled);
            }
            let mut progressed = false;
            p.poll(&mut |e| {
                match &e {
                    Event::Stage(st) => {
                        if st.prefill == (test.kind == Kind::Pp) {
                            stages.push(*st);
                        }
                        if test.kind == Kind::Pp && st.prefill {
                            count += st.tokens;
                            progressed = true;
                        }
                    }
                    Event::Token { id, .. } if *id != u32::MAX && test.kind == Kind::Tg => {
                        count += 1;
                        first.get_or_insert_with(Instant::now);
                        progressed = true;
                    }
                    _ => {}
                }
                sink(BenchEvent::Pipeline(e));
            })
            .map_err(|e| BenchError::Pipeline {
                k,
                message: e.to_string(),
            })?;
            reports.extend(
                p.take_finished()
                    .into_iter()
                    .filter(|r| ids.contains(&r.stream)),
            );
            if progressed && last_progress.elapsed() >= Duration::from_millis(50) {
                last_progress = Instant::now();
                let tok_s = match (test.kind, first) {
                    (Kind::Tg, Some(f)) if count > streams => {
                        (count - streams) as f64 / f.elapsed().as_secs_f64().max(1e-9)
                    }
                    (Kind::Pp, _) => count as f64 / t0.elapsed().as_secs_f64().max(1e-9),
                    _ => 0.0,
                };
                sink(BenchEvent::Progress {
                    tokens: count.min(target),
                    target,
                    tok_s,
                });
            }
        }
        let after = self.energy.read();
        if let Some(r) = reports
            .iter()
            .find(|r| r.finish == Finish::Error || r.error.is_some())
        {
            return Err(BenchError::Pipeline {
                k,
                message: r.error.clone().unwrap_or_else(|| "a stream failed".into()),
            });
        }
        let ttft: Vec<f64> = reports.iter().map(|r| r.metrics.ttft_ms).collect();
        let (ttft_mean, _) = mean_sd(&ttft);
        let (tok_s, tokens) = match test.kind {
            Kind::Pp => {
                let tokens: usize = reports.iter().map(|r| r.metrics.prompt_tokens).sum();
                let slowest = ttft.iter().cloned().fold(0.0, f64::max);
                (tokens as f64 / (slowest / 1e3).max(1e-9), tokens)
            }
            Kind::Tg => {
                let tokens: usize = reports.iter().map(|r| r.metrics.generated).sum();
                // The first token of each stream is its time to first
                // token, not decode: decode runs from the earliest first
                // token to the last token of all streams.
                let decoded: usize = reports
                    .iter()
                    .map(|r| r.metrics.generated.saturating_sub(1))
                    .sum();
                let start = ttft.iter().cloned().fold(f64::INFINITY, f64::min);
                let end = reports
                    .iter()
                    .map(|r| r.metrics.total_ms)
                    .fold(0.0, f64::max);
                (decoded as f64 / ((end - start) / 1e3).max(1e-9), tokens)
            }
        };
        let joules = match (&before, &after) {
            (Some(b), Some(a)) => self.energy.joules(b, a),
            _ => None,
        };
        let work = match (p.shard_b.plan_stats(), work_before) {
            (Some(a), Some(b)) => Some(a.since(&b)),
            _ => None,
        };
        Ok(RunResult {
            tok_s,
            tokens,
            ttft_ms: ttft_mean,
            stages: Stages::mean(stages.iter().map(Stages::of)),
            joules,
            work,
            decode: p.shard_b.decode_mode().name(),
        })
    }

    /// Warm-ups, then the repetitions of one test at one concurrency. A
    /// stop after some repetitions keeps them: the row is returned with the
    /// repetitions done and the error that ended it.
    fn row(
        &self,
        p: &mut Pipeline,
        k: usize,
        role: Role,
        test: Test,
        streams: usize,
        sink: &mut dyn FnMut(BenchEvent),
    ) -> Result<(Row, Option<BenchError>), BenchError> {
        let reps = self.plan.reps;
        let mut runs = Vec::new();
        let mut ended = None;
        // Warm-ups (rep None) first, then the measured repetitions.
        let order = (0..self.plan.warmup)
            .map(|_| None)
            .chain((0..reps).map(Some));
        for rep in order {
            sink(BenchEvent::RunStarted {
                k,
                test,
                streams,
                rep,
                reps,
            });
            match self.measure(p, k, test, streams, sink) {
                Ok(r) => {
                    sink(BenchEvent::RunDone {
                        tok_s: r.tok_s,
                        warmup: rep.is_none(),
                    });
                    if rep.is_some() {
                        runs.push(r);
                    }
                }
                Err(e) if !runs.is_empty() => {
                    ended = Some(e);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((self.row_of(k, role, test, streams, &runs), ended))
    }

    fn row_of(&self, k: usize, role: Role, test: Test, streams: usize, runs: &[RunResult]) -> Row {
        let samples: Vec<f64> = runs.iter().map(|r| r.tok_s).collect();
        let (mean, sd) = mean_sd(&samples);
        let ttfts: Vec<f64> = runs.iter().map(|r| r.ttft_ms).collect();
        let (ttft_mean, ttft_sd) = mean_sd(&ttfts);
        let work = runs.iter().filter_map(|r| r.work).reduce(|a, b| a.plus(&b));
        let joules: Option<Vec<f64>> = runs
            .iter()
            .map(|r| r.joules.map(|j| j / r.tokens.max(1) as f64))
            .collect();
        Row {
            split: k,
            layers: self.layers,
            role,
            test: test.name(),
            kind: test.kind,
            n: test.n,
            streams,
            reps: runs.len(),
            samples,
            tokens: runs.iter().map(|r| r.tokens).collect(),
            tok_s: mean,
            tok_s_sd: sd,
            ttft_ms: ttft_mean,
            ttft_ms_sd: ttft_sd,
            stages: Stages::mean(runs.iter().map(|r| r.stages)),
            joules_per_token: joules.map(|j| mean_sd(&j).0),
            vs_half: None,
            vs_a_only: None,
            vs_b_only: None,
            shard_b_work: work
                .and_then(|w| StepWork::of(runs.first().map_or("", |r| r.decode), &w))
                .filter(|_| k < self.layers),
        }
    }

    /// Throughput of one probe: a short tg at the auto concurrency.
    fn probe(&self, k: usize, sink: &mut dyn FnMut(BenchEvent)) -> Result<f64, BenchError> {
        sink(BenchEvent::Loading {
            k,
            role: Role::for_split(k, self.layers),
        });
        let mut p = self.open(k, sink)?;
        let test = Test {
            kind: Kind::Tg,
            n: self.plan.auto.probe_tokens,
        };
        let streams = self.plan.auto.streams;
        // One short warm-up (first-call costs), then the measured run.
        let warm = Test {
            kind: Kind::Tg,
            n: 2.max(test.n / 4),
        };
        let r = self
            .measure(&mut p, k, warm, streams, sink)
            .and_then(|_| self.measure(&mut p, k, test, streams, sink));
        p.shutdown();
        let r = r?;
        sink(BenchEvent::Probe(Probe { k, tok_s: r.tok_s }));
        Ok(r.tok_s)
    }

    /// Pattern search over k in [1, L-1] from the half split: probe both
    /// k ± step around the best so far and move to the better one if it
    /// beats it, else halve the step;
    /// stop at step 0 or when the budget is spent. Decode time per token is
    /// a sum of two stage times that trade layers, so the curve has one
    /// peak and the search finds it in O(log L) probes.
    fn auto(&self, sink: &mut dyn FnMut(BenchEvent)) -> Result<AutoReport, BenchError> {
        let l = self.layers;
        let start = Instant::now();
        let half = l / 2;
        let mut probes: Vec<Probe> = Vec::new();
        let measure = |k: usize,
                       probes: &mut Vec<Probe>,
                       sink: &mut dyn FnMut(BenchEvent)|
         -> Result<f64, BenchError> {
            if let Some(p) = probes.iter().find(|p| p.k == k) {
                return Ok(p.tok_s);
            }
            let v = self.probe(k, sink)?;
            probes.push(Probe { k, tok_s: v });
            Ok(v)
        };
        let lo = 1.min(l);
        let hi = l.saturating_sub(1).max(lo);
        let mut best = half.clamp(lo, hi);
        let mut best_v = measure(best, &mut probes, sink)?;
        let mut step = (l / 4).max(1);
        let mut out_of_time = false;
        'search: while step > 0 {
            let mut round: Option<(usize, f64)> = None;
            for cand in [best.saturating_sub(step), best + step] {
                if cand < lo || cand > hi || cand == best {
                    continue;
                }
                let cached = probes.iter().any(|p| p.k == cand);
                if !cached && start.elapsed() >= self.plan.auto.budget {
                    out_of_time = true;
                    break 'search;
                }
                let v = measure(cand, &mut probes, sink)?;
                if round.is_none_or(|(_, r)| v > r) {
                    round = Some((cand, v));
                }
            }
            match round {
                Some((k, v)) if v > best_v => {
                    best = k;
                    best_v = v;
                }
                _ => step /= 2,
            }
        }
        let half_v = probes
            .iter()
            .find(|p| p.k == half)
            .map(|p| p.tok_s)
            .unwrap_or(best_v);
        let report = AutoReport {
            streams: self.plan.auto.streams,
            objective: if self.plan.auto.streams == 1 {
                "latency of one stream (tg t/s)".into()
            } else {
                format!("throughput of {} streams (tg t/s)", self.plan.auto.streams)
            },
            probe_tokens: self.plan.auto.probe_tokens,
            budget_s: self.plan.auto.budget.as_secs_f64(),
            spent_s: start.elapsed().as_secs_f64(),
            out_of_time,
            probes,
            best,
            half,
            gain_over_half: best_v / half_v.max(1e-12) - 1.0,
        };
        sink(BenchEvent::Auto(report.clone()));
        Ok(report)
    }
}

/// Run the plan on the baked model in `model_dir`. The settings give
/// devices, cores and everything else; the split is the plan's.
pub fn run(
    settings: &Settings,
    profile: &str,
    model_dir: &Path,
    plan: &Plan,
    stop: StopFlag,
    sink: &mut dyn FnMut(BenchEvent),
) -> Result<BenchRecord, BenchError> {
    let model = BakedModel::open(model_dir).map_err(|e| BenchError::Model(e.to_string()))?;
    let layers = model.spec().num_layers;
    let vocab = model.spec().vocab_size;
    let desc = record::ModelDesc::of(&model);
    drop(model);
    let mut ks = plan.validate(settings, layers)?;
    let runner = Runner {
        settings,
        model_dir,
        layers,
        vocab,
        plan,
        stop: stop.clone(),
        energy: energy::EnergyMeter::new(&crate::hw::Root::live()),
    };
    let per_config = plan.tests.len() * plan.streams.len() * (plan.reps + plan.warmup);
    let auto = if plan.splits == Splits::Auto {
        let a = runner.auto(sink)?;
        ks.splice(0..0, [a.half, a.best]);
        Some(a)
    } else {
        None
    };
    // Once each, in order (the auto-split's winner may be the half split).
    let mut seen = std::collections::HashSet::new();
    ks.retain(|k| seen.insert(*k));
    sink(BenchEvent::Planned {
        model: desc.name.clone(),
        layers,
        shard_a: settings.shard_a.device.clone(),
        shard_b: settings.shard_b.backend.clone(),
        runs: per_config * ks.len(),
    });
    let mut rows = Vec::new();
    let mut adapter = String::new();
    let mut complete = true;
    let mut failure = None;
    'configs: for &k in &ks {
        let role = Role::for_split(k, layers);
        sink(BenchEvent::Loading { k, role });
        let mut p = match runner.open(k, sink) {
            Ok(p) => p,
            Err(e) => {
                complete = false;
                failure = Some(e);
                break;
            }
        };
        adapter = p.shard_b.info.name.clone();
        for &test in &plan.tests {
            for &s in &plan.streams {
                match runner.row(&mut p, k, role, test, s, sink) {
                    Ok((r, ended)) => {
                        sink(BenchEvent::Row(Box::new(r.clone())));
                        rows.push(r);
                        if let Some(e) = ended {
                            p.shutdown();
                            complete = false;
                            failure = Some(e);
                            break 'configs;
                        }
                    }
                    Err(e) => {
                        p.shutdown();
                        complete = false;
                        failure = Some(e);
                        break 'configs;
                    }
                }
            }
        }
        p.shutdown();
    }
    record::add_ratios(&mut rows, layers);
    if rows.is_empty()
        && let Some(e) = failure
    {
        return Err(e);
    }
    let rec = BenchRecord::new(
        settings,
        profile,
        desc,
        adapter,
        plan,
        auto,
        runner.energy.source.clone(),
        rows,
        complete,
        failure.map(|e| e.to_string()),
    );
    Ok(rec)
}
