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
    /// per group to int8 (integer dot products; see `Kernel::Q8`).
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
        // Packed weights go to the GPU kernels on a CubeCL device (dense if
        // their groups do not fit the kernels' layout), else to the CPU kernel.
        let weight = match packed {
            Some(p) if cube::supported(device) => {
                DevicePacked::upload(&p, device).map_or_else(dense, Weight::Gpu)
            }
            Some(p) => Weight::Packed(Arc::new(p)),
            None => dense(),
        };
        let bias = match bias {
            Some(b) => Some(Tensor::<1>::from_data(
                TensorData::new(model.f32(b)?, [rows]),
                (device, DType::F32),
            )),
            None => None,
        };
        Ok(QuantLinear {
            weight,
            bias,
            device: device.clone(),
            dtype,
            out_features: rows,
            in_features: cols,
        })
    }

    /// `x`: `[tokens, in]` f32 → `[tokens, out]` f32.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = match (&self.weight, self.dtype) {
            (Weight::Packed(p), _) => {
                let tokens = x.dims()[0];
                // The CPU backend's tensors are host memory: one copy out,
                // one copy back in.
                let xs = x
                    .into_data()
                    .try_into_vec_as::<f32>()
                    .expect("shard B activations are f32 on the CPU backend");
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
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
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
