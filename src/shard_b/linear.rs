//! The seam between the model and its weights' storage.
//!
//! Today every weight is dequantized once at load (burn 0.22.1's own 4-bit
//! matmul is unusable: it panics on Vulkan and Flex dequantizes the whole
//! weight on every call), to f32 or f16 as the settings say. The INT4 kernels
//! issue replaces the body of [`QuantLinear`] with packed-INT4 kernels; the
//! model code only ever calls [`QuantLinear::forward`].

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use crate::bake::store::{BakedModel, StoreError};

/// Dtype weights are held in on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightDtype {
    F32,
    F16,
}

impl WeightDtype {
    pub fn parse(s: &str) -> Option<WeightDtype> {
        match s {
            "f32" => Some(WeightDtype::F32),
            "f16" => Some(WeightDtype::F16),
            _ => None,
        }
    }
    fn dtype(self) -> DType {
        match self {
            WeightDtype::F32 => DType::F32,
            WeightDtype::F16 => DType::F16,
        }
    }
    fn bytes(self) -> usize {
        match self {
            WeightDtype::F32 => 4,
            WeightDtype::F16 => 2,
        }
    }
}

/// `y = x W^T (+ b)` for a Hugging Face `[out, in]` weight.
pub struct QuantLinear {
    /// `[out, in]`, as stored: used transposed (the faster layout on Flex).
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
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
        let values = t.dequantize();
        let weight = Tensor::<2>::from_data(
            TensorData::new(values, [rows, cols]),
            (device, dtype.dtype()),
        );
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
            dtype,
            out_features: rows,
            in_features: cols,
        })
    }

    /// `x`: `[tokens, in]` f32 → `[tokens, out]` f32.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let y = match self.dtype {
            WeightDtype::F32 => x.matmul(self.weight.clone().transpose()),
            WeightDtype::F16 => x
                .cast(DType::F16)
                .matmul(self.weight.clone().transpose())
                .cast(DType::F32),
        };
        match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        }
    }

    /// Rows of the weight as f32: an embedding lookup (`[out, in]` is `[vocab, hidden]`).
    pub fn embed(&self, ids: Tensor<1, Int>) -> Tensor<2> {
        self.weight.clone().select(0, ids).cast(DType::F32)
    }

    /// Bytes this layer keeps resident on the device.
    pub fn resident_bytes(&self) -> usize {
        self.out_features * self.in_features * self.dtype.bytes()
            + self
                .bias
                .as_ref()
                .map(|_| self.out_features * 4)
                .unwrap_or(0)
    }
}
