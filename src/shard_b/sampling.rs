//! Sampling on the device; only the chosen token id is read back.
//!
//! Order (as Hugging Face's logits processors): repetition penalty →
//! temperature → top-k → top-p → min-p, then a Gumbel-max draw: the argmax
//! of `logits + g` with `g = -ln(-ln u)`, `u` uniform, picks token `i` with
//! probability `softmax(logits)_i`. The uniforms come from the stream's own
//! seeded ChaCha8 generator, so a seed reproduces a stream whatever else runs.
//! Temperature 0 is greedy (argmax).

use std::collections::{BTreeMap, BTreeSet};

use burn::tensor::activation::softmax;
use burn::tensor::{DType, Device, IndexingUpdateOp, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::{Logits, ShardBError};

#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy.
    pub temperature: f32,
    /// 0 is off.
    pub top_k: usize,
    /// 1 is off.
    pub top_p: f32,
    /// 0 is off.
    pub min_p: f32,
    /// 1 is off; > 1 discourages tokens already in the context.
    pub repetition_penalty: f32,
    /// OpenAI's presence penalty: subtracted once from the logit of every
    /// token the stream has generated so far. 0 is off.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted from a token's logit once per
    /// time the stream has generated it. 0 is off.
    pub frequency_penalty: f32,
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: 0,
        }
    }
}

/// A sampling parameter out of its range: the parameter (as the front ends
/// name it in their own way), the value, and what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{param} = {value}: {allowed}")]
pub struct SamplingError {
    pub param: &'static str,
    pub value: String,
    pub allowed: &'static str,
}

impl SamplingParams {
    pub fn greedy() -> SamplingParams {
        SamplingParams::default()
    }

    /// Check every value against its range; the first one out of it is the
    /// error.
    pub fn validate(&self) -> Result<(), SamplingError> {
        let bad = |param, value: f32, allowed| {
            Err(SamplingError {
                param,
                value: value.to_string(),
                allowed,
            })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "temperature",
                self.temperature,
                "must be 0 (greedy) or more",
            );
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "must be in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "must be in [0, 1]");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "repetition_penalty",
                self.repetition_penalty,
                "must be more than 0 (1 is off)",
            );
        }
        if !(-2.0..=2.0).contains(&self.presence_penalty) {
            return bad(
                "presence_penalty",
                self.presence_penalty,
                "must be in [-2, 2]",
            );
        }
        if !(-2.0..=2.0).contains(&self.frequency_penalty) {
            return bad(
                "frequency_penalty",
                self.frequency_penalty,
                "must be in [-2, 2]",
            );
        }
        Ok(())
    }
}

/// One stream's sampler: parameters, its random generator and the context
/// the repetition penalty looks at.
pub struct Sampler {
    pub params: SamplingParams,
    rng: ChaCha8Rng,
    seen: BTreeSet<u32>,
    /// How often the stream has generated each token (presence and
    /// frequency penalties).
    generated: BTreeMap<u32, u32>,
}

/// Read the chosen id and the row's non-finite flag back in one transfer:
/// `[id, bad]`. A row with a NaN or an infinity is an error, not a token.
fn read_id(id: Tensor<1, Int>, bad: Tensor<1, Int>) -> Result<u32, ShardBError> {
    let v = Tensor::cat(vec![id, bad], 0)
        .into_data()
        .try_into_vec_as::<i64>()
        .map_err(|e| ShardBError::Readback(format!("{e:?}")))?;
    match v[..] {
        [_, bad] if bad != 0 => Err(ShardBError::NonFinite),
        [id, _] => Ok(id as u32),
        _ => Err(ShardBError::Readback(format!(
            "expected an id and a flag, read {} values",
            v.len()
        ))),
    }
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Sampler {
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(params.seed),
            params,
            seen: BTreeSet::new(),
            generated: BTreeMap::new(),
        }
    }

    /// Tokens of the context (prompt and output) for the repetition penalty.
    pub fn observe(&mut self, ids: &[u32]) {
        self.seen.extend(ids.iter().copied());
    }

    /// Choose the next token from the last row of `logits` (`[T, vocab]`).
    /// Plain greedy decoding of the decode plan's logits is chosen on the
    /// device (4 bytes and a flag come back); everything else runs the rules
    /// below on the last row as a device tensor.
    pub fn sample(&mut self, logits: impl Into<Logits>) -> Result<u32, ShardBError> {
        let logits = logits.into();
        let p = &self.params;
        let penalized = (p.repetition_penalty != 1.0 && !self.seen.is_empty())
            || ((p.presence_penalty != 0.0 || p.frequency_penalty != 0.0)
                && !self.generated.is_empty());
        let id = if p.temperature <= 0.0
            && !penalized
            && let Some(choice) = logits.device_argmax()
        {
            choice?
        } else {
            self.sample_row(logits.last_row()?)?
        };
        self.seen.insert(id);
        *self.generated.entry(id).or_insert(0) += 1;
        Ok(id)
    }

    /// The rules on one row of logits `[vocab]`.
    fn sample_row(&mut self, mut l: Tensor<1>) -> Result<u32, ShardBError> {
        let v = l.dims()[0];
        let device = l.device();
        let p = &self.params;
        if p.repetition_penalty != 1.0 && !self.seen.is_empty() {
            l = penalize(l, &self.seen, p.repetition_penalty, &device);
        }
        if (p.presence_penalty != 0.0 || p.frequency_penalty != 0.0) && !self.generated.is_empty() {
            l = penalize_generated(
                l,
                &self.generated,
                p.presence_penalty,
                p.frequency_penalty,
                &device,
            );
        }
        let bad = l.clone().is_finite().bool_not().any().int();
        let id = if p.temperature <= 0.0 {
            read_id(l.argmax(0), bad)?
        } else {
            let l = l.div_scalar(p.temperature);
            let (mut sorted, order) = l.sort_descending_with_indices(0);
            if p.top_k > 0 && p.top_k < v {
                let pos = Tensor::<1, Int>::arange(0..v as i64, &device);
                sorted =
                    sorted.mask_fill(pos.greater_equal_elem(p.top_k as i64), f32::NEG_INFINITY);
            }
            if p.top_p < 1.0 {
                let probs = softmax(sorted.clone(), 0);
                // Keep the smallest prefix whose mass reaches top_p (the first always stays).
                let before = probs.clone().cumsum(0) - probs;
                sorted = sorted.mask_fill(before.greater_equal_elem(p.top_p), f32::NEG_INFINITY);
            }
            if p.min_p > 0.0 {
                let probs = softmax(sorted.clone(), 0);
                let top = probs.clone().narrow(0, 0, 1);
                sorted = sorted.mask_fill((probs / top).lower_elem(p.min_p), f32::NEG_INFINITY);
            }
            let gumbel: Vec<f32> = (0..v)
                .map(|_| {
                    let u: f64 = self.rng.random_range(f64::MIN_POSITIVE..1.0);
                    (-(-u.ln()).ln()) as f32
                })
                .collect();
            let g = Tensor::<1>::from_data(TensorData::new(gumbel, [v]), (&device, DType::F32));
            let j = (sorted + g).argmax(0);
            read_id(order.select(0, j), bad)?
        };
        Ok(id)
    }
}

/// Hugging Face's repetition penalty: positive logits divided by `penalty`,
/// negative ones multiplied, for every token already seen.
fn penalize(l: Tensor<1>, seen: &BTreeSet<u32>, penalty: f32, device: &Device) -> Tensor<1> {
    let ids: Vec<i64> = seen
        .iter()
        .filter(|&&i| (i as usize) < l.dims()[0])
        .map(|&i| i as i64)
        .collect();
    if ids.is_empty() {
        return l;
    }
    let n = ids.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), device);
    let g = l.clone().select(0, idx.clone());
    let shrunk = g.clone().div_scalar(penalty);
    let grown = g.clone().mul_scalar(penalty);
    let new = shrunk.mask_where(g.lower_elem(0.0), grown);
    l.select_assign(0, idx, new, IndexingUpdateOp::Assign)
}

/// OpenAI's presence and frequency penalties: `logit -= presence + frequency
/// × count` for every token generated `count > 0` times (the prompt does not
/// count, as in vLLM).
fn penalize_generated(
    l: Tensor<1>,
    generated: &BTreeMap<u32, u32>,
    presence: f32,
    frequency: f32,
    device: &Device,
) -> Tensor<1> {
    let vocab = l.dims()[0];
    let (ids, deltas): (Vec<i64>, Vec<f32>) = generated
        .iter()
        .filter(|&(&i, _)| (i as usize) < vocab)
        .map(|(&i, &n)| (i as i64, -(presence + frequency * n as f32)))
        .unzip();
    if ids.is_empty() {
        return l;
    }
    let n = ids.len();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), device);
    let d = Tensor::<1>::from_data(TensorData::new(deltas, [n]), (device, DType::F32));
    l.select_assign(0, idx, d, IndexingUpdateOp::Add)
}

/// Why generation stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// One of the model's end-of-sequence ids.
    Eos(u32),
    /// A stop string appeared in the text.
    StopString(String),
    /// The token budget is spent.
    Length,
}

/// Stops on every eos id of generation_config.json and on stop strings.
#[derive(Debug, Clone, Default)]
pub struct StopCriteria {
    pub eos: Vec<u32>,
    pub stop_strings: Vec<String>,
    pub ignore_eos: bool,
}

impl StopCriteria {
    /// `text` is the generated text so far (decoded), including `token`.
    pub fn check(&self, token: u32, text: &str) -> Option<StopReason> {
        if !self.ignore_eos && self.eos.contains(&token) {
            return Some(StopReason::Eos(token));
        }
        self.stop_strings
            .iter()
            .find(|s| !s.is_empty() && text.contains(s.as_str()))
            .map(|s| StopReason::StopString(s.clone()))
    }
}
