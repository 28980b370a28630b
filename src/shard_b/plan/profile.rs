//! The plan's step profile: a tool that times a step's launches on the
//! device, by kernel class (`benches/shard_b` prints it).

use cubecl::client::Client;

use super::super::ShardBError;
use super::{DecodePlan, Input, PlanKv, Segment};

/// Issues a step's launches, counting them; when timing, each launch group
/// runs in its own profiling window and its device time is added to its
/// class (a tool: the windows serialize the step).
pub(super) struct Timer<'a> {
    client: &'a Client,
    pub(super) launches: u64,
    timing: bool,
    /// Device ms and launches per class, in first-seen order.
    classes: Vec<(&'static str, f64, u64)>,
}

impl<'a> Timer<'a> {
    pub(super) fn new(client: &'a Client, timing: bool) -> Timer<'a> {
        Timer {
            client,
            launches: 0,
            timing,
            classes: Vec::new(),
        }
    }

    pub(super) fn run(&mut self, class: &'static str, f: impl FnOnce() -> u64) {
        if !self.timing {
            self.launches += f();
            return;
        }
        let ms = match self.client.profile_start() {
            Ok(window) => {
                let n = f();
                self.launches += n;
                let ms = self
                    .client
                    .profile_end(window)
                    .ok()
                    .and_then(|d| super::super::device::block_on(d.resolve()))
                    .map_or(f64::NAN, |t| t.duration().as_secs_f64() * 1e3);
                (ms, n)
            }
            Err(_) => {
                let n = f();
                self.launches += n;
                (f64::NAN, n)
            }
        };
        match self.classes.iter_mut().find(|c| c.0 == class) {
            Some(c) => {
                c.1 += ms.0;
                c.2 += ms.1;
            }
            None => self.classes.push((class, ms.0, ms.1)),
        }
    }
}

/// Where a decode step's time goes on the device ([`DecodePlan::profile`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StepProfile {
    /// Streams in the step (one row each) and the cache fill they attend over.
    pub streams: usize,
    pub fill: usize,
    /// Launches per step.
    pub launches: u64,
    /// Host time to issue a step: launched anew, and replayed (ms).
    pub host_launch_ms: f64,
    pub host_replay_ms: f64,
    /// Device time of a whole step: launched, and replayed (ms).
    pub device_launch_ms: f64,
    pub device_replay_ms: f64,
    /// Device ms of each class of kernels over the step, each launch
    /// timed alone (their sum leaves out the gaps between launches), with
    /// its launches.
    pub classes: Vec<(String, f64, u64)>,
}

impl DecodePlan {
    /// Profile a decode step of `streams` streams (one row each) attending
    /// over `fill` cached positions, `reps` times each way: host and device
    /// time launched and replayed, and each kernel class's device time. The
    /// caches are fresh (what they hold does not change the time).
    pub fn profile(
        &mut self,
        streams: usize,
        fill: usize,
        reps: usize,
    ) -> Result<StepProfile, ShardBError> {
        let err = |e: &dyn std::fmt::Display| ShardBError::Device(e.to_string());
        let kvs: Vec<PlanKv> = (0..streams.max(1)).map(|_| self.new_kv(fill + 1)).collect();
        let segments: Vec<Segment> = kvs
            .iter()
            .map(|kv| Segment {
                kv,
                pos: fill,
                rows: 1,
            })
            .collect();
        let x: Vec<f32> = (0..segments.len() * self.spec.hidden_size)
            .map(|i| ((i * 7919 % 1000) as f32 / 1000.0 - 0.5) * 0.1)
            .collect();
        let layout = self.prepare(Input::Hidden(&x), &segments)?;
        let Some(sc) = self.scratch.as_ref() else {
            return Err(ShardBError::Device("no scratch buffers".into()));
        };
        let c = &self.client;
        let sync = || super::super::device::block_on(c.sync()).map_err(|e| err(&e));
        let reps = reps.max(1);
        let device_ms = |run: &dyn Fn()| -> Result<f64, ShardBError> {
            let w = c.profile_start().map_err(|e| err(&e))?;
            for _ in 0..reps {
                run();
            }
            let d = c.profile_end(w).map_err(|e| err(&e))?;
            let ticks = super::super::device::block_on(d.resolve())
                .ok_or_else(|| ShardBError::Readback("no device time".into()))?;
            Ok(ticks.duration().as_secs_f64() * 1e3 / reps as f64)
        };
        let host_ms = |run: &dyn Fn()| -> Result<f64, ShardBError> {
            let mut total = 0.0;
            for _ in 0..reps {
                sync()?;
                let t = std::time::Instant::now();
                run();
                total += t.elapsed().as_secs_f64() * 1e3;
            }
            sync()?;
            Ok(total / reps as f64)
        };
        // Launched anew.
        let launches = self.encode(sc, &layout);
        sync()?;
        let host_launch_ms = host_ms(&|| {
            self.encode(sc, &layout);
        })?;
        let device_launch_ms = device_ms(&|| {
            self.encode(sc, &layout);
        })?;
        // Captured and replayed.
        c.graph_prepare().map_err(|e| err(&e))?;
        self.encode(sc, &layout);
        let graph = self.record(sc, &layout).map_err(|e| err(&e))?;
        sync()?;
        // SAFETY: the graph's buffers (weights, scratch, the cache pool) live
        // until after its last replay below, on this thread's stream.
        let failed = std::cell::Cell::new(None);
        let replay = || {
            if let Err(e) = unsafe { graph.replay() } {
                failed.set(Some(e.to_string()));
            }
        };
        let host_replay_ms = host_ms(&replay)?;
        let device_replay_ms = device_ms(&replay)?;
        if let Some(e) = failed.take() {
            return Err(ShardBError::Device(e));
        }
        // Each class alone.
        let mut t = Timer::new(c, true);
        for _ in 0..reps {
            self.encode_timed(sc, &layout, &mut t);
        }
        sync()?;
        let classes = t
            .classes
            .into_iter()
            .map(|(name, ms, n)| (name.to_string(), ms / reps as f64, n / reps as u64))
            .collect();
        drop(graph);
        Ok(StepProfile {
            streams: segments.len(),
            fill,
            launches,
            host_launch_ms,
            host_replay_ms,
            device_launch_ms,
            device_replay_ms,
            classes,
        })
    }
}
