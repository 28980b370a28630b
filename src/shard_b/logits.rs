//! A step's logits as each body leaves them: a tensor of burn's ops, the
//! GPU plan's row in device memory, or the CPU plan's row on the host;
//! read back, handed to the sampler, or their greedy choice.

use burn::tensor::{DType, Device, Tensor, TensorData};

use super::{ShardB, ShardBError, plan};

/// Logits of a step: `[T, vocab]` from burn's ops, or the last row's
/// `[1, vocab]` from the decode plan or the CPU plan (which compute no
/// others).
pub struct Logits(pub(super) LogitsKind);

pub(super) enum LogitsKind {
    Tensor(Tensor<2>),
    Plan(plan::PlanLogits),
    Host(Vec<f32>),
}

impl From<Tensor<2>> for Logits {
    fn from(t: Tensor<2>) -> Logits {
        Logits(LogitsKind::Tensor(t))
    }
}

impl Logits {
    /// Rows held.
    pub fn rows(&self) -> usize {
        match &self.0 {
            LogitsKind::Tensor(t) => t.dims()[0],
            LogitsKind::Plan(_) | LogitsKind::Host(_) => 1,
        }
    }

    /// Every row held, to the host.
    pub fn read(&self) -> Result<Vec<f32>, ShardBError> {
        match &self.0 {
            LogitsKind::Tensor(t) => ShardB::read_f32(t.clone()),
            LogitsKind::Plan(p) => p.read(),
            LogitsKind::Host(v) => Ok(v.clone()),
        }
    }

    /// The last row, to the host.
    pub fn read_last(&self) -> Result<Vec<f32>, ShardBError> {
        match &self.0 {
            LogitsKind::Tensor(t) => {
                let r = t.dims()[0];
                ShardB::read_f32(t.clone().narrow(0, r - 1, 1))
            }
            LogitsKind::Plan(p) => p.read(),
            LogitsKind::Host(v) => Ok(v.clone()),
        }
    }

    /// The last row as a tensor `[vocab]` (the sampler's input): on the
    /// device for burn's logits; on the CPU backend for the plan's, so that
    /// no burn op runs on the plan's GPU between its replays (tests/shard_b
    /// saw burn's ops on the same device corrupt a replayed step now and
    /// then; see `plan`'s module docs).
    pub(crate) fn last_row(self) -> Result<Tensor<1>, ShardBError> {
        match self.0 {
            LogitsKind::Tensor(t) => {
                let [r, v] = t.dims();
                Ok(t.narrow(0, r - 1, 1).reshape([v]))
            }
            LogitsKind::Plan(p) => Ok(host_row(p.read()?)),
            LogitsKind::Host(v) => Ok(host_row(v)),
        }
    }

    /// The greedy choice of the last row when the device makes it (the
    /// plan's argmax, with its non-finite flag); None for burn's logits.
    pub(crate) fn device_argmax(&self) -> Option<Result<u32, ShardBError>> {
        let picked = match &self.0 {
            LogitsKind::Tensor(_) => return None,
            LogitsKind::Plan(p) => p.argmax(),
            LogitsKind::Host(v) => Ok(host_argmax(v)),
        };
        Some(picked.and_then(|(id, bad)| match bad {
            true => Err(ShardBError::NonFinite),
            false => Ok(id),
        }))
    }
}

/// A row of logits on the host as a tensor of the CPU backend.
fn host_row(row: Vec<f32>) -> Tensor<1> {
    let v = row.len();
    Tensor::<1>::from_data(TensorData::new(row, [v]), (&Device::flex(), DType::F32))
}

/// The first index of the largest value, and whether the row holds a NaN
/// or an infinity (as the plan's argmax kernel answers).
fn host_argmax(row: &[f32]) -> (u32, bool) {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    (best as u32, row.iter().any(|v| !v.is_finite()))
}
