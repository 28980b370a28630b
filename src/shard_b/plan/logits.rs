//! A step's logits on the device and the greedy choice made there.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use cubecl::client::Client;
use cubecl::prelude::{CubeCount, CubeDim};
use cubecl::server::Handle;

use super::super::ShardBError;
use super::kernels::{self, ROW_UNITS};
use super::mode::PlanStats;
use super::weights::buffer;

/// One stream's logits `[vocab]` of a step (row `row` of the step's
/// `[streams, vocab]`), on the device, valid until the plan's next step.
pub struct PlanLogits {
    pub(super) client: Client,
    pub(super) logits: Handle,
    pub(super) picks: Handle,
    /// Rows of the step (streams).
    pub(super) rows: usize,
    pub(super) row: usize,
    pub(super) vocab: usize,
    pub(super) step: u64,
    pub(super) current: Arc<AtomicU64>,
    pub(super) stats: Arc<Mutex<PlanStats>>,
    /// The step's greedy choices, made for all its streams by the first
    /// that asks (one launch, one readback).
    pub(super) picks_of_step: StepChoices,
}

/// A step's greedy choices (id, non-finite) per stream, once made.
pub(super) type StepChoices = Arc<Mutex<Option<Vec<(u32, bool)>>>>;

impl PlanLogits {
    fn check_current(&self) -> Result<(), ShardBError> {
        if self.current.load(Ordering::Acquire) != self.step {
            return Err(ShardBError::Readback(
                "these logits were overwritten by a later step of the same shard".into(),
            ));
        }
        Ok(())
    }

    fn count_readback(&self) {
        if let Ok(mut s) = self.stats.lock() {
            s.readbacks += 1;
        }
    }

    fn read_u32s(&self, handle: &Handle) -> Result<Vec<u32>, ShardBError> {
        self.count_readback();
        let bytes = self
            .client
            .read_one(handle.clone())
            .map_err(|e| ShardBError::Readback(e.to_string()))?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// The row back to the host.
    pub fn read(&self) -> Result<Vec<f32>, ShardBError> {
        self.check_current()?;
        let all = self.read_u32s(&self.logits)?;
        let (a, b) = (self.row * self.vocab, (self.row + 1) * self.vocab);
        match all.get(a..b) {
            Some(row) => Ok(row.iter().map(|&w| f32::from_bits(w)).collect()),
            None => Err(ShardBError::Readback(format!(
                "{} logits, expected {}",
                all.len(),
                self.rows * self.vocab
            ))),
        }
    }

    /// The greedy choice, made on the device: the id and whether the row
    /// held a NaN or an infinity. The first stream of a step to ask gets
    /// every stream's choice made at once (one launch, one readback).
    pub fn argmax(&self) -> Result<(u32, bool), ShardBError> {
        self.check_current()?;
        let mut cached = self.picks_of_step.lock().unwrap_or_else(|e| e.into_inner());
        if cached.is_none() {
            let started = std::time::Instant::now();
            // SAFETY: logits hold rows × vocab, picks 2 × rows (the
            // scratch's sizes for the step's streams).
            unsafe {
                kernels::argmax::launch_unchecked(
                    &self.client,
                    CubeCount::Static(self.rows as u32, 1, 1),
                    CubeDim::new_1d(ROW_UNITS),
                    buffer(&self.logits, self.rows * self.vocab),
                    buffer(&self.picks, 2 * self.rows),
                    0,
                    self.vocab as u32,
                );
            }
            if let Ok(mut s) = self.stats.lock() {
                s.launches += 1;
                s.host_ns += started.elapsed().as_nanos() as u64;
            }
            let v = self.read_u32s(&self.picks)?;
            if v.len() < 2 * self.rows {
                return Err(ShardBError::Readback(format!(
                    "{} picks, expected {}",
                    v.len(),
                    2 * self.rows
                )));
            }
            *cached = Some(
                v.chunks_exact(2)
                    .take(self.rows)
                    .map(|p| (p[0], p[1] != 0))
                    .collect(),
            );
        }
        cached
            .as_ref()
            .and_then(|all| all.get(self.row).copied())
            .ok_or_else(|| ShardBError::Readback("no choice for this stream".into()))
    }
}
