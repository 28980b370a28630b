//! The scheduler's receiving half: the ready replies of shard A through
//! shard B as one step, then sampling and each stream's end.

use std::time::{Duration, Instant};

use super::stream::StreamState;
use super::{Event, Finish, Pipeline, StageSample};
use crate::ring::SlotHeader;
use crate::ring::wait::mono_ns;
use crate::ring::{dtype, kind};
use crate::shard_b::{BatchItem, HiddenDtype, StepInput};

impl Pipeline {
    /// Take the replies that are ready (waiting up to 20 ms for the
    /// first), run their rows through shard B as one step (each weight read
    /// once for all the streams), sample where due.
    pub(super) fn receive(&mut self, sink: &mut dyn FnMut(Event)) -> Result<(), String> {
        let Some(exec) = self.exec.as_mut() else {
            return Ok(());
        };
        let mut replies: Vec<(SlotHeader, Vec<u8>)> = Vec::new();
        let in_flight = self.streams.values().filter(|s| s.in_flight).count();
        // Once one reply is here, the others in flight are worth waiting
        // for a while (shard B batches them: a step of several streams reads
        // the weights once): up to half a recent step, at most 2 ms.
        let batch_wait = Duration::from_nanos((self.b_step_ns / 2.0).min(2e6) as u64);
        let mut wait = Duration::from_millis(20);
        let mut deadline = None;
        while replies.len() < in_flight.max(1) {
            let Some(msg) = exec.acts.recv(wait).map_err(|e| e.to_string())? else {
                break;
            };
            replies.push((msg.header, msg.payload().to_vec()));
            let until = *deadline.get_or_insert_with(|| Instant::now() + batch_wait);
            wait = until.saturating_duration_since(Instant::now());
        }
        if replies.is_empty() {
            return Ok(());
        }
        let b_start = mono_ns();
        let hidden = self.shard_b.spec.hidden_size;
        // The rows shard B runs: (header, stream, bytes from, rows).
        let mut work: Vec<(SlotHeader, u32, usize, usize)> = Vec::new();
        for (h, payload) in &replies {
            let Some(st) = self.streams.get_mut(&h.stream) else {
                continue; // cancelled meanwhile
            };
            if h.request != st.request {
                continue; // a reply from before a restart
            }
            st.in_flight = false;
            if h.kind == kind::ERROR {
                let text = String::from_utf8_lossy(payload).into_owned();
                if let Some(st) = self.streams.remove(&h.stream) {
                    self.report(
                        h.stream,
                        st,
                        Finish::Error,
                        Some(format!("shard A: {text}")),
                        sink,
                    );
                }
                continue;
            }
            let rows = h.count as usize;
            let first = h.first_pos as usize;
            if h.dtype != dtype::F32 || h.payload_len as usize != rows * hidden * 4 {
                return Err(format!(
                    "activation message for stream {} has {} bytes for {rows} rows of {hidden} (dtype {})",
                    h.stream, h.payload_len, h.dtype
                ));
            }
            if first > st.b.len() {
                return Err(format!(
                    "stream {}: shard A sent position {first}, shard B is at {}",
                    h.stream,
                    st.b.len()
                ));
            }
            // Rows shard B already holds (a re-prefill after a restart) are skipped.
            let skip = (st.b.len() - first).min(rows);
            work.push((*h, h.stream, skip * hidden * 4, rows - skip));
        }
        // The streams leave the map while shard B holds them mutably.
        let mut taken: Vec<(u32, StreamState)> = work
            .iter()
            .filter_map(|w| self.streams.remove(&w.1).map(|st| (w.1, st)))
            .collect();
        let payload_of = |h: &SlotHeader| {
            replies
                .iter()
                .find(|(r, _)| r.stream == h.stream && r.request == h.request)
                .map(|(_, p)| p.as_slice())
                .unwrap_or(&[])
        };
        let stepping: Vec<usize> = (0..work.len()).filter(|&i| work[i].3 > 0).collect();
        let mut outcome: Vec<Option<Result<crate::shard_b::Logits, String>>> =
            (0..work.len()).map(|_| None).collect();
        // Shard B's time of each stream's step: the batch's.
        let mut times: Vec<(u64, u64)> = vec![(b_start, b_start); work.len()];
        let mut items: Vec<BatchItem> = Vec::with_capacity(stepping.len());
        for (i, (_, st)) in taken.iter_mut().enumerate() {
            let (h, _, from, rows) = &work[i];
            if *rows == 0 {
                continue;
            }
            items.push(BatchItem {
                input: StepInput::Hidden {
                    bytes: &payload_of(h)[*from..],
                    dtype: HiddenDtype::F32,
                    rows: *rows,
                },
                stream: &mut st.b,
            });
        }
        let batched = items.len() > 1;
        let whole = match batched {
            true => Some(self.shard_b.forward_batch(&mut items)),
            false => None,
        };
        match whole {
            Some(Ok(logits)) => {
                let t = mono_ns();
                for (&i, l) in stepping.iter().zip(logits) {
                    outcome[i] = Some(Ok(l));
                    times[i] = (b_start, t);
                }
            }
            // One stream at a time (one stream, or a batch that failed: each
            // error is then its stream's own).
            _ => {
                for (&i, item) in stepping.iter().zip(items.iter_mut()) {
                    let t0 = mono_ns();
                    let one = self
                        .shard_b
                        .forward_batch(std::slice::from_mut(item))
                        .map_err(|e| e.to_string())
                        .and_then(|mut l| l.pop().ok_or_else(|| "no logits".to_string()));
                    outcome[i] = Some(one);
                    times[i] = (t0, mono_ns());
                }
            }
        }
        drop(items);
        if let Some(&(t0, t1)) = times.iter().find(|(t0, t1)| t1 > t0) {
            let ns = t1.saturating_sub(t0) as f64;
            self.b_step_ns = match self.b_step_ns {
                0.0 => ns,
                ema => 0.8 * ema + 0.2 * ns,
            };
        }
        let parts = work.into_iter().zip(taken).zip(outcome).zip(times);
        for ((((h, _, _, rows), (id, mut st)), out), (t0, t1)) in parts {
            let first = h.first_pos as usize;
            let count = h.count as usize;
            let mut failure = None;
            let mut sampled = None;
            match out {
                Some(Ok(logits)) if rows > 0 && st.b.len() == st.tokens.len() => {
                    let kept = if st.req.record_logits {
                        logits.read_last().map(Some).map_err(|e| e.to_string())
                    } else {
                        Ok(None)
                    };
                    match kept.and_then(|k| {
                        st.sampler
                            .sample(logits)
                            .map(|id| (id, k))
                            .map_err(|e| e.to_string())
                    }) {
                        Ok(s) => sampled = Some(s),
                        Err(e) => failure = Some(e),
                    }
                }
                Some(Err(e)) => failure = Some(e),
                _ => {}
            }
            sink(Event::Stage(StageSample {
                stream: id,
                tokens: count,
                prefill: count > 1 || first + count <= st.req.prompt.len(),
                b_to_a_wait_ms: h.t_start_ns.saturating_sub(h.t_submit_ns) as f64 / 1e6,
                a_ms: h.t_done_ns.saturating_sub(h.t_start_ns) as f64 / 1e6,
                a_to_b_wait_ms: t0.saturating_sub(h.t_done_ns) as f64 / 1e6,
                b_ms: t1.saturating_sub(t0) as f64 / 1e6,
            }));
            if let Some(e) = failure {
                self.report(id, st, Finish::Error, Some(format!("shard B: {e}")), sink);
                continue;
            }
            let Some((token, logits)) = sampled else {
                self.streams.insert(id, st);
                continue;
            };
            let now = Instant::now();
            st.t_first.get_or_insert(now);
            st.t_last = now;
            st.tokens.push(token);
            st.generated.push(token);
            if let Some(l) = logits {
                st.logits.push(l);
            }
            let delta = st.text.push(&self.tokenizer, token);
            sink(Event::Token {
                stream: id,
                id: token,
                text: delta,
            });
            let finish = st
                .req
                .stop
                .check(token, st.text.text())
                .map(|r| Finish::from(&r))
                .or_else(|| (st.generated.len() >= st.req.max_new_tokens).then_some(Finish::Length))
                .or_else(|| (st.tokens.len() >= self.capacity).then_some(Finish::Context));
            match finish {
                Some(finish) => self.report(id, st, finish, None, sink),
                None => {
                    self.streams.insert(id, st);
                }
            }
        }
        Ok(())
    }
}
