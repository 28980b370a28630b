//! What `/metrics` reports, in Prometheus' text format: requests (in
//! flight, queued, by outcome), tokens, decode speed, time to first token,
//! per-stage times from the slot timestamps, ring occupancy and executive
//! restarts.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::{Arc, Mutex};

use crate::pipeline::{StageSample, StreamMetrics};
use crate::ring::{RingStats, Segment};

/// A sum and a count: a Prometheus summary without quantiles.
#[derive(Debug, Default, Clone, Copy)]
struct Summary {
    sum: f64,
    count: u64,
}

impl Summary {
    fn add(&mut self, v: f64) {
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Default)]
struct State {
    /// Finished requests by HTTP status.
    requests: BTreeMap<u16, u64>,
    in_flight: u64,
    queued: u64,
    prompt_tokens: u64,
    generated_tokens: u64,
    ttft_ms: Summary,
    decode_tok_s_last: f64,
    decode_tok_s: Summary,
    stage_a_ms: Summary,
    stage_b_ms: Summary,
    wait_b_to_a_ms: Summary,
    wait_a_to_b_ms: Summary,
    restarts: u64,
    segment: Option<(String, Arc<Segment>)>,
    disconnects: u64,
    cancelled: u64,
}

/// Shared by the handlers and the engine's event sink.
#[derive(Default)]
pub struct Metrics {
    state: Mutex<State>,
}

impl Metrics {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        // A panic elsewhere cannot make the counters unreadable.
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    pub fn queued(&self, delta: i64) {
        self.with(|s| s.queued = s.queued.saturating_add_signed(delta));
    }

    pub fn in_flight(&self, delta: i64) {
        self.with(|s| s.in_flight = s.in_flight.saturating_add_signed(delta));
    }

    pub fn request_done(&self, status: u16) {
        self.with(|s| *s.requests.entry(status).or_insert(0) += 1);
    }

    pub fn disconnected(&self) {
        self.with(|s| s.disconnects += 1);
    }

    /// A cancelled stream's end, as the engine reported it.
    pub fn cancelled(&self) {
        self.with(|s| s.cancelled += 1);
    }

    pub fn stream_done(&self, m: &StreamMetrics) {
        self.with(|s| {
            s.prompt_tokens += m.prompt_tokens as u64;
            s.generated_tokens += m.generated as u64;
            if m.generated > 0 {
                s.ttft_ms.add(m.ttft_ms);
            }
            if m.decode_tok_s > 0.0 {
                s.decode_tok_s_last = m.decode_tok_s;
                s.decode_tok_s.add(m.decode_tok_s);
            }
        });
    }

    pub fn stage(&self, st: &StageSample) {
        self.with(|s| {
            s.stage_a_ms.add(st.a_ms);
            s.stage_b_ms.add(st.b_ms);
            s.wait_b_to_a_ms.add(st.b_to_a_wait_ms);
            s.wait_a_to_b_ms.add(st.a_to_b_wait_ms);
        });
    }

    pub fn restarted(&self) {
        self.with(|s| s.restarts += 1);
    }

    /// The executive's new segment: ring occupancy is read from it.
    pub fn segment(&self, name: &str) {
        let seg = Segment::open(name).ok();
        self.with(|s| s.segment = seg.map(|x| (name.to_string(), x)));
    }

    /// The text `/metrics` answers.
    pub fn render(&self) -> String {
        self.with(|s| {
            let rings = s.segment.as_ref().map(|(_, seg)| seg.stats());
            render(s, rings)
        })
    }
}

/// One metric: name (after `hybrid_tui_`), type, help, and its samples
/// (label or suffix, value).
type Metric = (&'static str, &'static str, &'static str, Vec<(String, f64)>);

fn render(s: &State, rings: Option<[RingStats; 2]>) -> String {
    let one = |v: f64| vec![(String::new(), v)];
    let summary = |x: Summary| {
        vec![
            ("_sum".to_string(), x.sum),
            ("_count".to_string(), x.count as f64),
        ]
    };
    let by_status = s
        .requests
        .iter()
        .map(|(code, n)| (format!("{{status=\"{code}\"}}"), *n as f64))
        .collect();
    let mut metrics: Vec<Metric> = vec![
        (
            "requests_total",
            "counter",
            "Finished API requests by HTTP status.",
            by_status,
        ),
        (
            "requests_in_flight",
            "gauge",
            "Requests running as pipeline streams.",
            one(s.in_flight as f64),
        ),
        (
            "requests_queued",
            "gauge",
            "Requests waiting for a free stream.",
            one(s.queued as f64),
        ),
        (
            "client_disconnects_total",
            "counter",
            "Requests whose client went away before the end.",
            one(s.disconnects as f64),
        ),
        (
            "streams_cancelled_total",
            "counter",
            "Streams the engine ended after a cancel (disconnect, shutdown).",
            one(s.cancelled as f64),
        ),
        (
            "prompt_tokens_total",
            "counter",
            "Prompt tokens of finished streams.",
            one(s.prompt_tokens as f64),
        ),
        (
            "generated_tokens_total",
            "counter",
            "Tokens generated by finished streams.",
            one(s.generated_tokens as f64),
        ),
        (
            "decode_tokens_per_second",
            "gauge",
            "Decode speed of the last finished stream.",
            one(s.decode_tok_s_last),
        ),
        (
            "stream_decode_tokens_per_second",
            "summary",
            "Decode speed per finished stream.",
            summary(s.decode_tok_s),
        ),
        (
            "time_to_first_token_ms",
            "summary",
            "From submission to the first token, per stream.",
            summary(s.ttft_ms),
        ),
        (
            "stage_shard_a_ms",
            "summary",
            "Shard A's time per message (the executive).",
            summary(s.stage_a_ms),
        ),
        (
            "stage_shard_b_ms",
            "summary",
            "Shard B's time per message (this process).",
            summary(s.stage_b_ms),
        ),
        (
            "stage_wait_b_to_a_ms",
            "summary",
            "A message's wait in the token ring.",
            summary(s.wait_b_to_a_ms),
        ),
        (
            "stage_wait_a_to_b_ms",
            "summary",
            "A message's wait in the activation ring.",
            summary(s.wait_a_to_b_ms),
        ),
        (
            "executive_restarts_total",
            "counter",
            "Times the executive was started again.",
            one(s.restarts as f64),
        ),
    ];
    if let Some([tokens, acts]) = rings {
        let rings = |f: fn(&RingStats) -> u64| {
            vec![
                ("{ring=\"tokens\"}".to_string(), f(&tokens) as f64),
                ("{ring=\"activations\"}".to_string(), f(&acts) as f64),
            ]
        };
        metrics.push((
            "ring_occupancy",
            "gauge",
            "Messages in each ring now.",
            rings(|r| r.occupancy),
        ));
        metrics.push((
            "ring_high_water",
            "gauge",
            "Most messages each ring has held.",
            rings(|r| r.high_water),
        ));
    }
    let mut o = String::new();
    for (name, kind, help, samples) in metrics {
        let _ = writeln!(o, "# HELP hybrid_tui_{name} {help}");
        let _ = writeln!(o, "# TYPE hybrid_tui_{name} {kind}");
        for (suffix, v) in samples {
            let _ = writeln!(o, "hybrid_tui_{name}{suffix} {v}");
        }
    }
    o
}
