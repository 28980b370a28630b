//! Packed weights out of the store as both of shard B's plans take them:
//! projections stacked (q/k/v, gate/up), and a layer's four projections
//! with its q/k/v biases.

use super::Packed;
use crate::bake::store::{BakedModel, StoreError};

/// The weights `names` packed and stacked in order (one name: that
/// weight); None when one is not an integer weight or they do not stack.
pub fn load_stacked(model: &BakedModel, names: &[String]) -> Result<Option<Packed>, StoreError> {
    let mut parts = Vec::with_capacity(names.len());
    for n in names {
        match Packed::from_stored(&model.tensor(n)?) {
            Some(p) => parts.push(p),
            None => return Ok(None),
        }
    }
    Ok(match parts.len() {
        1 => parts.pop(),
        _ => Packed::stack(&parts),
    })
}

/// A decoder layer's projections, packed: q/k/v stacked, o, gate/up
/// stacked, down, and the q/k/v biases of models that have them.
pub struct PackedLayer {
    pub qkv: Packed,
    pub o: Packed,
    pub gate_up: Packed,
    pub down: Packed,
    pub qkv_bias: Option<Vec<f32>>,
}

impl PackedLayer {
    /// Layer `l`'s projections; None when one is not an integer weight.
    pub fn load(model: &BakedModel, l: usize) -> Result<Option<PackedLayer>, StoreError> {
        let p = format!("model.layers.{l}");
        let names =
            |xs: &[&str]| -> Vec<String> { xs.iter().map(|x| format!("{p}.{x}.weight")).collect() };
        let (Some(qkv), Some(o), Some(gate_up), Some(down)) = (
            load_stacked(
                model,
                &names(&["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"]),
            )?,
            load_stacked(model, &names(&["self_attn.o_proj"]))?,
            load_stacked(model, &names(&["mlp.gate_proj", "mlp.up_proj"]))?,
            load_stacked(model, &names(&["mlp.down_proj"]))?,
        ) else {
            return Ok(None);
        };
        let qkv_bias = if model.spec().qkv_bias {
            let mut b = Vec::with_capacity(qkv.rows);
            for x in ["q_proj", "k_proj", "v_proj"] {
                b.extend(model.f32(&format!("{p}.self_attn.{x}.bias"))?);
            }
            Some(b)
        } else {
            None
        };
        Ok(Some(PackedLayer {
            qkv,
            o,
            gate_up,
            down,
            qkv_bias,
        }))
    }
}
