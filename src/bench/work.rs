//! Shard B's work per step in a bench row: the plans' counters divided by
//! their steps, and the CPU plan's time per part.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Shard B's work per step on the decode plan (a GPU with packed weights),
/// over a row's measured repetitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepWork {
    /// replay, launch.
    pub decode: String,
    pub steps: u64,
    /// Kernel launches per step (a replayed step counts its recorded ones),
    /// the greedy choice included.
    pub launches_per_step: f64,
    /// Host time per step issuing work (not waiting for the device).
    pub host_ms_per_step: f64,
    /// Steps replayed from a capture, per step.
    pub replayed: f64,
    /// Streams per step (above 1 when streams were batched).
    #[serde(default)]
    pub streams_per_step: f64,
    /// The CPU plan's time per part of a step, ms (`shard_b::cpu::PARTS`);
    /// empty on a GPU.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parts_ms_per_step: BTreeMap<String, f64>,
}

impl StepWork {
    pub fn of(decode: &str, s: &crate::shard_b::PlanStats) -> Option<StepWork> {
        (s.steps > 0).then(|| {
            let n = s.steps as f64;
            StepWork {
                decode: decode.to_string(),
                steps: s.steps,
                launches_per_step: s.launches as f64 / n,
                host_ms_per_step: s.host_ns as f64 / 1e6 / n,
                replayed: s.replays as f64 / n,
                streams_per_step: s.segments as f64 / n,
                parts_ms_per_step: crate::shard_b::cpu::PARTS
                    .iter()
                    .zip(s.parts_ns)
                    .filter(|(_, ns)| *ns > 0)
                    .map(|(name, ns)| (name.to_string(), ns as f64 / 1e6 / n))
                    .collect(),
            }
        })
    }

    /// "replay: 147 launches, 0.41 ms host, 1.0 streams / step"; on the
    /// CPU plan "cpu plan: 48.1 ms, 1.0 streams / step (gate_up 17.2,
    /// down 9.1, ...)", its five largest parts.
    pub fn label(&self) -> String {
        if self.parts_ms_per_step.is_empty() {
            return format!(
                "{}: {:.0} launches, {:.2} ms host, {:.1} streams / step",
                self.decode, self.launches_per_step, self.host_ms_per_step, self.streams_per_step
            );
        }
        let mut parts: Vec<(&String, &f64)> = self.parts_ms_per_step.iter().collect();
        parts.sort_by(|a, b| b.1.total_cmp(a.1));
        let parts: Vec<String> = parts
            .iter()
            .take(5)
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect();
        format!(
            "cpu plan: {:.2} ms, {:.1} streams / step ({})",
            self.host_ms_per_step,
            self.streams_per_step,
            parts.join(", ")
        )
    }
}
