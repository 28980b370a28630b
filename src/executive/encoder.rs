//! The embedding model on an OpenVINO device: compile the encoder's IR, run
//! a padded batch of token rows, read back one unit vector per text.

use std::time::Duration;

use openvino::{Core, ElementType, InferRequest};

use super::runtime::RuntimeError;
use super::session::{DeviceProps, compile_ir, ov, tensor_from};
use crate::bake::ir::encoder::{EncoderIr, EncoderShape};
use crate::model::bert_tokens::TokenBatch;

pub struct EncoderSession {
    request: InferRequest,
    pub shape: EncoderShape,
    /// Length of a vector.
    pub hidden: usize,
    pub device: String,
    pub compile_time: Duration,
}

impl EncoderSession {
    /// Read the encoder's IR from memory and compile it on `device`.
    pub fn compile(
        core: &mut Core,
        ir: &EncoderIr,
        hidden: usize,
        device: &str,
        props: &DeviceProps,
    ) -> Result<EncoderSession, RuntimeError> {
        let (request, compile_time) =
            compile_ir(core, &ir.xml, &ir.bin, device, props, "the embedding model")?;
        Ok(EncoderSession {
            request,
            shape: ir.shape,
            hidden,
            device: device.to_string(),
            compile_time,
        })
    }

    /// The static shape's `[rows, len]`, if the encoder has one.
    pub fn static_shape(&self) -> Option<(usize, usize)> {
        match self.shape {
            EncoderShape::Dynamic => None,
            EncoderShape::Static { batch, length } => Some((batch, length)),
        }
    }

    /// One call: the vectors of the batch's texts, `[texts × hidden]`
    /// (padding rows dropped).
    pub fn run(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, RuntimeError> {
        if let Some((rows, len)) = self.static_shape()
            && (batch.rows, batch.len) != (rows, len)
        {
            return Err(RuntimeError::Call(format!(
                "a [{}, {}] batch for an encoder compiled for [{rows}, {len}]",
                batch.rows, batch.len
            )));
        }
        let dims = [batch.rows as i64, batch.len as i64];
        self.request
            .set_tensor(
                "input_ids",
                &tensor_from(ElementType::I64, &dims, &batch.ids)?,
            )
            .map_err(ov("input_ids"))?;
        self.request
            .set_tensor(
                "attention_mask",
                &tensor_from(ElementType::I64, &dims, &batch.mask)?,
            )
            .map_err(ov("attention_mask"))?;
        self.request
            .infer()
            .map_err(ov("running the embedding model"))?;
        let out = self
            .request
            .get_tensor("embeddings")
            .map_err(ov("embeddings"))?;
        let data = out.get_data::<f32>().map_err(ov("embeddings data"))?;
        let n = batch.texts() * self.hidden;
        data.get(..n).map(<[f32]>::to_vec).ok_or_else(|| {
            RuntimeError::Call(format!(
                "the embedding model returned {} values, {n} expected",
                data.len()
            ))
        })
    }
}
