//! What the telemetry thread reports, kept for the devices pane, the
//! compact strip and the check screen: the last snapshot and a minute of
//! CPU and memory use.

use std::collections::VecDeque;

use crate::hw::sampler::Snapshot;

/// Samples kept for the sparklines.
pub const HISTORY: usize = 60;

#[derive(Debug, Default)]
pub struct Telemetry {
    pub devices: Option<Snapshot>,
    pub cpu_history: VecDeque<u64>,
    pub mem_history: VecDeque<u64>,
}

impl Telemetry {
    pub fn on_snapshot(&mut self, s: Snapshot) {
        if let Some(c) = s.cpu.ok() {
            push_bounded(&mut self.cpu_history, c.total.round() as u64);
        }
        if let Some(m) = s.memory.ok() {
            let mem = (m.used() as f64 / m.total.max(1) as f64 * 100.0).round();
            push_bounded(&mut self.mem_history, mem as u64);
        }
        self.devices = Some(s);
    }
}

pub fn push_bounded<T>(q: &mut VecDeque<T>, v: T) {
    if q.len() == HISTORY {
        q.pop_front();
    }
    q.push_back(v);
}
