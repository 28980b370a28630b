//! How a GPU runs shard B's steps, and the plan's counters.

/// How decode steps reach the GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecodeMode {
    /// Capture a step's launches once per shape, replay them after.
    #[default]
    Replay,
    /// The same launches, issued anew every step.
    Launch,
    /// burn's ops (the path before the plan; kept for comparison and for
    /// models the plan does not take).
    Ops,
}

impl DecodeMode {
    pub fn parse(s: &str) -> Option<DecodeMode> {
        match s {
            "replay" => Some(DecodeMode::Replay),
            "launch" => Some(DecodeMode::Launch),
            "ops" => Some(DecodeMode::Ops),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            DecodeMode::Replay => "replay",
            DecodeMode::Launch => "launch",
            DecodeMode::Ops => "ops",
        }
    }
}

/// Counters of the work the plan has issued (the bench divides them by
/// tokens).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub steps: u64,
    /// Streams over all steps (a batched step counts each of its streams).
    pub segments: u64,
    /// Kernel launches issued (a replayed step counts its recorded ones).
    pub launches: u64,
    pub captures: u64,
    pub replays: u64,
    /// Host-to-device writes (the input rows, and the step's tables of
    /// positions, slots and rows to sample in one write).
    pub uploads: u64,
    /// Device-to-host reads (sampled ids, logits).
    pub readbacks: u64,
    /// Host time spent issuing steps and greedy choices (writing inputs,
    /// launching or replaying; not waiting for the device), in ns. On the
    /// CPU plan, the steps' whole time.
    pub host_ns: u64,
    /// The CPU plan's time per part of a step (`shard_b::cpu::PARTS`), in
    /// ns; zeros on a GPU, whose parts run on the device
    /// ([`super::StepProfile`] measures those).
    pub parts_ns: [u64; crate::shard_b::cpu::PARTS.len()],
}

impl PlanStats {
    /// The work done since `earlier`.
    pub fn since(&self, earlier: &PlanStats) -> PlanStats {
        PlanStats {
            steps: self.steps.saturating_sub(earlier.steps),
            segments: self.segments.saturating_sub(earlier.segments),
            launches: self.launches.saturating_sub(earlier.launches),
            captures: self.captures.saturating_sub(earlier.captures),
            replays: self.replays.saturating_sub(earlier.replays),
            uploads: self.uploads.saturating_sub(earlier.uploads),
            readbacks: self.readbacks.saturating_sub(earlier.readbacks),
            host_ns: self.host_ns.saturating_sub(earlier.host_ns),
            parts_ns: std::array::from_fn(|i| self.parts_ns[i].saturating_sub(earlier.parts_ns[i])),
        }
    }

    /// Both counts together.
    pub fn plus(&self, other: &PlanStats) -> PlanStats {
        PlanStats {
            steps: self.steps + other.steps,
            segments: self.segments + other.segments,
            launches: self.launches + other.launches,
            captures: self.captures + other.captures,
            replays: self.replays + other.replays,
            uploads: self.uploads + other.uploads,
            readbacks: self.readbacks + other.readbacks,
            host_ns: self.host_ns + other.host_ns,
            parts_ns: std::array::from_fn(|i| self.parts_ns[i] + other.parts_ns[i]),
        }
    }
}
