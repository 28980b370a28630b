//! The seam between the model and its weights' storage.
//!
//! A weight is either dequantized once at load to f32 or f16 (burn 0.22.1's
//! own 4-bit matmul is unusable: it panics on Vulkan and Flex dequantizes
//! the whole weight on every call), or, with `shard_b.weights_dtype =
//! packed`, kept packed as stored (4-bit or 8-bit with its scales) and
//! multiplied by [`super::packed`]'s kernel on the CPU backend, or by
//! [`super::cube`]'s kernels in device memory on a GPU. The model code
//! only ever calls [`QuantLinear::forward`] and [`QuantLinear::embed`].

use std::sync::Arc;

use super::ShardBError;
use super::cube::{self, DevicePacked};
use super::packed::{Kernel, Packed};

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::bake::store::{BakedModel, StoreError};

/// Dtype weights are held in on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    F16,
    /// Integer weights stay packed (the CPU kernel, or the GPU kernels on
    /// a GPU); float weights are f32.
    Packed,
    /// As Packed, with 4-bit layers multiplied by activations quantized
    /// to int8 (integer dot products): per group on the CPU
    /// (`Kernel::Q8`), per 32 columns in the GPU decode plan's decode
    /// steps (`DecodePlan::set_int8_activations`).
    PackedQ8,
}

impl WeightDtype {
    pub fn parse(s: &str) -> Option<WeightDtype> {
        match s {
            "f32" => Some(WeightDtype::F32),
            "f16" => Some(WeightDtype::F16),
            "packed" => Some(WeightDtype::Packed),
            "packed-q8" => Some(WeightDtype::PackedQ8),
            _ => None,
        }
    }
    fn dtype(self) -> DType {
        match self {
            WeightDtype::F32 | WeightDtype::Packed | WeightDtype::PackedQ8 => DType::F32,
            WeightDtype::F16 => DType::F16,
        }
    }
    fn bytes(self) -> usize {
        match self {
            WeightDtype::F32 | WeightDtype::Packed | WeightDtype::PackedQ8 => 4,
            WeightDtype::F16 => 2,
        }
    }
}

/// Where a weight lives (one per layer: the size difference does not matter).
#[allow(clippy::large_enum_variant)]
enum Weight {
    /// `[out, in]` on the device, as stored: used transposed (the faster
    /// layout on Flex).
    Dense(Tensor<2>),
    /// Packed on the host, for the CPU kernel.
    Packed(Arc<Packed>),
    /// Packed in device memory, for the GPU kernels.
    Gpu(DevicePacked),
}

/// Packed weights go to the GPU kernels on a CubeCL device, else to the CPU
/// kernel; the weight comes back when its groups do not fit the GPU
/// kernels' layout (the caller keeps it dense).
fn packed_weight(p: Packed, device: &Device) -> Result<Weight, Packed> {
    if !cube::supported(device) {
        return Ok(Weight::Packed(Arc::new(p)));
    }
    match DevicePacked::upload(&p, device) {
        Some(d) => Ok(Weight::Gpu(d)),
        None => Err(p),
    }
}

/// `y = x W^T (+ b)` for a Hugging Face `[out, in]` weight.
pub struct QuantLinear {
    weight: Weight,
    bias: Option<Tensor<1>>,
    device: Device,
    dtype: WeightDtype,
    pub out_features: usize,
    pub in_features: usize,
}

impl QuantLinear {
    /// Load `name` (and `bias`, if given) from the store onto `device`.
    pub fn load(
        model: &BakedModel,
        name: &str,
        bias: Option<&str>,
        device: &Device,
        dtype: WeightDtype,
    ) -> Result<QuantLinear, StoreError> {
        let t = model.tensor(name)?;
        let (rows, cols) = (t.rows(), t.cols());
        let packed = match dtype {
            WeightDtype::Packed | WeightDtype::PackedQ8 => Packed::from_stored(&t),
            _ => None,
        };
        let dense = || {
            Weight::Dense(Tensor::<2>::from_data(
                TensorData::new(t.dequantize(), [rows, cols]),
                (device, dtype.dtype()),
            ))
        };
        let weight = match packed.map(|p| packed_weight(p, device)) {
            Some(Ok(w)) => w,
            _ => dense(),
        };
        let bias = match bias {
            Some(b) => Some(model.f32(b)?),
            None => None,
        };
        Ok(QuantLinear::new(weight, bias, device, dtype, rows, cols))
    }

    fn new(
        weight: Weight,
        bias: Option<Vec<f32>>,
        device: &Device,
        dtype: WeightDtype,
        rows: usize,
        cols: usize,
    ) -> QuantLinear {
        let bias =
            bias.map(|b| Tensor::<1>::from_data(TensorData::new(b, [rows]), (device, DType::F32)));
        QuantLinear {
            weight,
            bias,
            device: device.clone(),
            dtype,
            out_features: rows,
            in_features: cols,
        }
    }

    /// `x`: `[tokens, in]` f32 → `[tokens, out]` f32.
    pub fn forward(&self, x: Tensor<2>) -> Result<Tensor<2>, ShardBError> {
        let y = match (&self.weight, self.dtype) {
            (Weight::Packed(p), _) => {
                let tokens = x.dims()[0];
                // The CPU backend's tensors are host memory: one copy out,
                // one copy back in.
                let xs = x
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .map_err(|e| ShardBError::Readback(format!("{e:?}")))?;
                let kernel = match self.dtype {
                    WeightDtype::PackedQ8 => Kernel::Q8,
                    _ => Kernel::Best,
                };
                let y = p.matmul_with(&xs, tokens, kernel);
                Tensor::<2>::from_data(
                    TensorData::new(y, [tokens, p.rows]),
                    (&self.device, DType::F32),
                )
            }
            (Weight::Gpu(d), _) => d.matmul(x),
            (Weight::Dense(w), WeightDtype::F16) => x
                .cast(DType::F16)
                .matmul(w.clone().transpose())
                .cast(DType::F32),
            (Weight::Dense(w), _) => x.matmul(w.clone().transpose()),
        };
        Ok(match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        })
    }

    /// Rows of the weight as f32: an embedding lookup (`[out, in]` is `[vocab, hidden]`).
    pub fn embed(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        match &self.weight {
            Weight::Dense(w) => w.clone().select(0, ids).cast(DType::F32),
            Weight::Gpu(d) => d.rows_f32(ids),
            Weight::Packed(p) => {
                let ids: Vec<i64> = ids.into_data().try_into_vec_as::<i64>().unwrap_or_default();
                let mut rows = Vec::with_capacity(ids.len() * p.cols);
                for id in &ids {
                    rows.extend(p.row((*id).clamp(0, p.rows as i64 - 1) as usize));
                }
                Tensor::<2>::from_data(
                    TensorData::new(rows, [ids.len(), p.cols]),
                    (&self.device, DType::F32),
                )
            }
        }
    }

    /// Bytes this layer keeps resident on the device.
    pub fn resident_bytes(&self) -> usize {
        let w = match &self.weight {
            Weight::Packed(p) => p.resident_bytes(),
            Weight::Gpu(d) => d.resident_bytes(),
            Weight::Dense(_) => self.out_features * self.in_features * self.dtype.bytes(),
        };
        w + self
            .bias
            .as_ref()
            .map(|_| self.out_features * 4)
            .unwrap_or(0)
    }
}

/// `N` projections of one input (q, k, v; gate, up). Packed alike (same
/// width, bits and group), they are held as one weight, their rows stacked,
/// so a token costs one kernel launch instead of `N`: on a GPU each launch
/// has a fixed cost that a 1B model's small matrices do not amortize, and on
/// the CPU each is a trip through the thread pool. Dense weights, and parts
/// stored in different formats, stay one linear each.
pub struct Stacked<const N: usize> {
    weights: StackedWeights,
    /// Output width of each projection.
    sizes: [usize; N],
}

enum StackedWeights {
    One(Box<QuantLinear>),
    Each(Vec<QuantLinear>),
}

impl<const N: usize> Stacked<N> {
    /// Load `names` (with their `.bias` tensors when `bias`).
    pub fn load(
        model: &BakedModel,
        names: [&str; N],
        bias: bool,
        device: &Device,
        dtype: WeightDtype,
    ) -> Result<Stacked<N>, StoreError> {
        let bias_name = |n: &str| bias.then(|| n.replace(".weight", ".bias"));
        let mut sizes = [0; N];
        let mut packed = Vec::with_capacity(N);
        for (i, name) in names.iter().enumerate() {
            let t = model.tensor(name)?;
            sizes[i] = t.rows();
            if matches!(dtype, WeightDtype::Packed | WeightDtype::PackedQ8) {
                packed.push(Packed::from_stored(&t));
            }
        }
        let stacked = packed
            .into_iter()
            .collect::<Option<Vec<Packed>>>()
            .and_then(|parts| Packed::stack(&parts));
        if let Some(p) = stacked
            && let Ok(weight) = packed_weight(p, device)
        {
            let mut b = Vec::new();
            for name in names.iter().filter_map(|n| bias_name(n)) {
                b.extend(model.f32(&name)?);
            }
            let (rows, cols) = (sizes.iter().sum(), model.tensor(names[0])?.cols());
            let linear = QuantLinear::new(weight, bias.then_some(b), device, dtype, rows, cols);
            return Ok(Stacked {
                weights: StackedWeights::One(Box::new(linear)),
                sizes,
            });
        }
        let each = names
            .iter()
            .map(|n| QuantLinear::load(model, n, bias_name(n).as_deref(), device, dtype))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Stacked {
            weights: StackedWeights::Each(each),
            sizes,
        })
    }

    /// Whether the projections are one stacked weight.
    pub fn is_stacked(&self) -> bool {
        matches!(self.weights, StackedWeights::One(_))
    }

    /// `x`: `[tokens, in]` → each projection's `[tokens, out_i]`.
    pub fn forward(&self, x: Tensor<2>) -> Result<[Tensor<2>; N], ShardBError> {
        match &self.weights {
            StackedWeights::One(linear) => {
                let y = linear.forward(x)?;
                let mut start = 0;
                Ok(std::array::from_fn(|i| {
                    let part = y.clone().narrow(1, start, self.sizes[i]);
                    start += self.sizes[i];
                    part
                }))
            }
            StackedWeights::Each(each) => {
                let mut failed = None;
                let out = std::array::from_fn(|i| {
                    each[i].forward(x.clone()).unwrap_or_else(|e| {
                        failed.get_or_insert(e);
                        Tensor::empty([0, 0], &x.device())
                    })
                });
                match failed {
                    Some(e) => Err(e),
                    None => Ok(out),
                }
            }
        }
    }

    /// Bytes these projections keep resident on the device.
    pub fn resident_bytes(&self) -> usize {
        match &self.weights {
            StackedWeights::One(linear) => linear.resident_bytes(),
            StackedWeights::Each(each) => each.iter().map(QuantLinear::resident_bytes).sum(),
        }
    }
}
