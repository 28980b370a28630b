//! The live bench screen's state: progress, the run in progress, the rows
//! so far, and how bench events change it (drawn by `view::bench`).

use crate::bench::record::{AutoReport, BenchRecord, Probe, Role, Row, add_ratios};
use crate::bench::{BenchEvent, Test};

/// The run in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentRun {
    pub k: usize,
    pub test: Test,
    pub streams: usize,
    /// None: a warm-up.
    pub rep: Option<usize>,
    pub reps: usize,
    pub tokens: usize,
    pub target: usize,
    pub tok_s: f64,
}

#[derive(Debug, Clone, Default)]
pub struct BenchState {
    pub model: String,
    pub layers: usize,
    pub shard_a: String,
    pub shard_b: String,
    pub runs_total: usize,
    pub runs_done: usize,
    /// What happens now, in words.
    pub phase: String,
    pub current: Option<CurrentRun>,
    pub rows: Vec<Row>,
    pub probes: Vec<Probe>,
    pub auto: Option<AutoReport>,
    /// How it ended: where the results went, or why it stopped.
    pub done: Option<Result<String, String>>,
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Hybrid => "hybrid",
        Role::AOnly => "A only",
        Role::BOnly => "B only",
    }
}

impl BenchState {
    pub fn on_event(&mut self, ev: BenchEvent) {
        match ev {
            BenchEvent::Planned {
                model,
                layers,
                shard_a,
                shard_b,
                runs,
            } => {
                self.model = model;
                self.layers = layers;
                self.shard_a = shard_a;
                self.shard_b = shard_b;
                self.runs_total = runs;
            }
            BenchEvent::Loading { k, role } => {
                self.phase = format!(
                    "loading split k={k} ({}): shard B's weights, shard A's compile",
                    role_name(role)
                );
                self.current = None;
            }
            BenchEvent::RunStarted {
                k,
                test,
                streams,
                rep,
                reps,
            } => {
                self.phase = match rep {
                    Some(r) => format!(
                        "k={k} · {} · {streams} stream(s) · rep {}/{reps}",
                        test.name(),
                        r + 1
                    ),
                    None => format!("k={k} · {} · {streams} stream(s) · warm-up", test.name()),
                };
                self.current = Some(CurrentRun {
                    k,
                    test,
                    streams,
                    rep,
                    reps,
                    tokens: 0,
                    target: streams * test.n,
                    tok_s: 0.0,
                });
            }
            BenchEvent::Progress {
                tokens,
                target,
                tok_s,
            } => {
                if let Some(c) = &mut self.current {
                    c.tokens = tokens;
                    c.target = target;
                    c.tok_s = tok_s;
                }
            }
            BenchEvent::RunDone { tok_s, .. } => {
                self.runs_done += 1;
                if let Some(c) = &mut self.current {
                    c.tokens = c.target;
                    c.tok_s = tok_s;
                }
            }
            BenchEvent::Probe(p) => {
                self.phase = format!("auto-split: k={} gave {:.2} t/s", p.k, p.tok_s);
                self.probes.push(p);
            }
            BenchEvent::Auto(a) => self.auto = Some(a),
            BenchEvent::Row(r) => {
                self.rows.push(*r);
                add_ratios(&mut self.rows, self.layers);
            }
            BenchEvent::Pipeline(_) => {}
        }
    }

    /// The bench ended; `r` is the record and where it was saved, or why
    /// there is none.
    pub fn finish(&mut self, r: Result<Box<(BenchRecord, String)>, String>) {
        self.current = None;
        self.done = Some(match r {
            Ok(b) => {
                let (rec, saved) = *b;
                self.rows = rec.rows;
                self.phase = if rec.complete {
                    "done".into()
                } else {
                    format!("stopped: {}", rec.error.unwrap_or_else(|| "stopped".into()))
                };
                Ok(saved)
            }
            Err(e) => {
                self.phase = "failed".into();
                Err(e)
            }
        });
    }
}
