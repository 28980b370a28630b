//! Shard A on an OpenVINO device: compile the IR, run it.

use std::time::{Duration, Instant};

use openvino::{Core, DeviceType, ElementType, InferRequest, RwPropertyKey, Shape, Tensor};

use super::runtime::{RuntimeError, load_runtime};
use crate::bake::ir::{ShapeMode, ShardIr};
use crate::config::ShardASettings;
use crate::model::ModelSpec;

pub(crate) fn ov(context: &str) -> impl FnOnce(openvino::InferenceError) -> RuntimeError + '_ {
    move |e| RuntimeError::Call(format!("{context}: {e}"))
}

/// Device properties for shard A.
#[derive(Debug, Clone, Default)]
pub struct DeviceProps {
    pub performance_hint: String,
    pub inference_precision: String,
    pub cache_dir: String,
    /// Turn off dynamic activation quantization (exact comparisons on CPU).
    pub exact: bool,
    /// CPU: INFERENCE_NUM_THREADS (0 = OpenVINO's choice).
    pub num_threads: usize,
    /// CPU: ENABLE_CPU_PINNING (threads stay on the cores the process may use).
    pub pin_threads: bool,
}

impl DeviceProps {
    pub fn from_settings(s: &ShardASettings) -> DeviceProps {
        DeviceProps {
            performance_hint: s.performance_hint.clone(),
            inference_precision: s.inference_precision.clone(),
            cache_dir: s.cache_dir.clone(),
            exact: s.inference_precision == "f32",
            num_threads: s.threads,
            pin_threads: !s.cpu_cores.is_empty(),
        }
    }
}

/// The devices named by a device string: `AUTO:NPU,CPU` → NPU, CPU.
pub fn underlying_devices(device: &str) -> Vec<String> {
    match device.split_once(':') {
        Some((_, list)) => list.split(',').map(|d| d.trim().to_string()).collect(),
        None => vec![device.to_string()],
    }
}

/// A new OpenVINO core with the runtime loaded.
pub fn new_core(runtime_dir: &str) -> Result<Core, RuntimeError> {
    load_runtime(runtime_dir)?;
    Core::new().map_err(|e| RuntimeError::Call(format!("creating the OpenVINO core: {e}")))
}

/// Inputs of one shard-A call. `past` holds, per layer, keys and values
/// `[batch, kv_heads, past_len, head_dim]`.
pub struct ShardInputs<'a> {
    pub batch: usize,
    pub tokens: usize,
    pub past_len: usize,
    pub input_ids: &'a [i64],
    pub position_ids: &'a [i64],
    /// `[batch, 1, tokens, past_len + tokens]`, additive.
    pub attention_mask: &'a [f32],
    pub past: Vec<(&'a [f32], &'a [f32])>,
}

/// The per-call inputs of a resident/static call (batch 1).
pub struct ResidentCall<'a> {
    pub input_ids: &'a [i64],
    pub position_ids: &'a [i64],
    /// `[1, 1, T, P + T]`, additive.
    pub attention_mask: &'a [f32],
    /// P: past slots handed over (static: the capacity; resident: a span).
    pub past_len: usize,
}

pub struct ShardOutputs {
    /// `[batch, tokens, hidden]`
    pub hidden: Vec<f32>,
    /// Per layer (keys, values): the whole history (dynamic) or the new entries (static).
    pub present: Vec<(Vec<f32>, Vec<f32>)>,
    pub elapsed: Duration,
}

pub struct ShardASession {
    request: InferRequest,
    pub spec: ModelSpec,
    pub layers: usize,
    pub mode: ShapeMode,
    pub device: String,
    pub compile_time: Duration,
}

/// Set `props` on the devices `device` names, read the IR from memory and
/// compile it: an infer request and the compile time. `what` names the
/// model in errors.
pub(crate) fn compile_ir(
    core: &mut Core,
    xml: &str,
    bin: &[u8],
    device: &str,
    props: &DeviceProps,
    what: &str,
) -> Result<(InferRequest, Duration), RuntimeError> {
    for d in underlying_devices(device) {
        let dt = DeviceType::from(d.as_str());
        let mut set = |key: RwPropertyKey, value: &str| -> Result<(), RuntimeError> {
            if value.is_empty() {
                return Ok(());
            }
            core.set_property(&dt, &key, value).map_err(|e| {
                RuntimeError::Call(format!(
                    "setting {}={value} on device {d}: {e}",
                    key.as_ref()
                ))
            })
        };
        set(RwPropertyKey::HintPerformanceMode, &props.performance_hint)?;
        set(
            RwPropertyKey::HintInferencePrecision,
            &props.inference_precision,
        )?;
        set(RwPropertyKey::CacheDir, &props.cache_dir)?;
        if d == "CPU" && props.num_threads > 0 {
            set(
                RwPropertyKey::Other("INFERENCE_NUM_THREADS".into()),
                &props.num_threads.to_string(),
            )?;
        }
        if d == "CPU" && props.pin_threads {
            set(RwPropertyKey::Other("ENABLE_CPU_PINNING".into()), "YES")?;
        }
        if props.exact && d == "CPU" {
            set(
                RwPropertyKey::Other("DYNAMIC_QUANTIZATION_GROUP_SIZE".into()),
                "0",
            )?;
        }
    }
    let shape = Shape::new(&[bin.len() as i64]).map_err(ov("weights shape"))?;
    let mut weights = Tensor::new(ElementType::U8, &shape).map_err(ov("weights tensor"))?;
    weights
        .get_raw_data_mut()
        .map_err(ov("weights tensor"))?
        .copy_from_slice(bin);
    let model = core
        .read_model_from_buffer(xml.as_bytes(), Some(&weights))
        .map_err(|e| RuntimeError::Call(format!("reading {what}'s IR: {e}")))?;
    let t0 = Instant::now();
    let mut compiled = core
        .compile_model(&model, DeviceType::from(device))
        .map_err(|e| RuntimeError::Call(format!("compiling {what} on {device}: {e}")))?;
    let compile_time = t0.elapsed();
    let request = compiled
        .create_infer_request()
        .map_err(ov("creating an infer request"))?;
    Ok((request, compile_time))
}

pub(crate) fn tensor_from<T: Copy>(
    et: ElementType,
    dims: &[i64],
    data: &[T],
) -> Result<Tensor, RuntimeError> {
    let shape = Shape::new(dims).map_err(ov("shape"))?;
    let mut t = Tensor::new(et, &shape).map_err(ov("tensor"))?;
    let dst = t.get_data_mut::<T>().map_err(ov("tensor data"))?;
    if dst.len() != data.len() {
        return Err(RuntimeError::Call(format!(
            "input of {} values for shape {dims:?} ({} values)",
            data.len(),
            dst.len()
        )));
    }
    dst.copy_from_slice(data);
    Ok(t)
}

impl ShardASession {
    /// Read the IR from memory and compile it on `device`.
    pub fn compile(
        core: &mut Core,
        ir: &ShardIr,
        spec: &ModelSpec,
        device: &str,
        props: &DeviceProps,
    ) -> Result<ShardASession, RuntimeError> {
        let (request, compile_time) = compile_ir(core, &ir.xml, &ir.bin, device, props, "shard A")?;
        Ok(ShardASession {
            request,
            spec: spec.clone(),
            layers: ir.layers,
            mode: ir.mode,
            device: device.to_string(),
            compile_time,
        })
    }

    /// One call over tensors the caller keeps: `past` is a stream's own
    /// cache (set, not copied; its shape says the layout), `hidden_out` receives the
    /// hidden states in place (a tensor over a shared-memory slot). Only the
    /// small per-call inputs (ids, positions, mask) are copied.
    pub fn run_resident(
        &mut self,
        call: &ResidentCall<'_>,
        past: &[(Tensor, Tensor)],
        hidden_out: &Tensor,
    ) -> Result<Duration, RuntimeError> {
        let t = call.input_ids.len() as i64;
        if self.mode.capacity().is_none() {
            return Err(RuntimeError::Call(
                "run_resident needs a resident or static shard".into(),
            ));
        }
        let p = call.past_len as i64;
        if past.len() != self.layers {
            return Err(RuntimeError::Call(format!(
                "{} past layers given, shard A has {}",
                past.len(),
                self.layers
            )));
        }
        self.request
            .set_tensor(
                "input_ids",
                &tensor_from(ElementType::I64, &[1, t], call.input_ids)?,
            )
            .map_err(ov("input_ids"))?;
        self.request
            .set_tensor(
                "position_ids",
                &tensor_from(ElementType::I64, &[1, t], call.position_ids)?,
            )
            .map_err(ov("position_ids"))?;
        self.request
            .set_tensor(
                "attention_mask",
                &tensor_from(ElementType::F32, &[1, 1, t, p + t], call.attention_mask)?,
            )
            .map_err(ov("attention_mask"))?;
        for (l, (k, v)) in past.iter().enumerate() {
            self.request
                .set_tensor(&format!("past_key_values.{l}.key"), k)
                .map_err(ov("past key"))?;
            self.request
                .set_tensor(&format!("past_key_values.{l}.value"), v)
                .map_err(ov("past value"))?;
        }
        self.request
            .set_tensor("hidden_states", hidden_out)
            .map_err(ov("hidden_states output"))?;
        let t0 = Instant::now();
        self.request.infer().map_err(ov("running shard A"))?;
        Ok(t0.elapsed())
    }

    /// Layer `l`'s new (keys, values) `[1, kv_heads, T, head_dim]` from the last call.
    pub fn present(&self, l: usize) -> Result<(Tensor, Tensor), RuntimeError> {
        Ok((
            self.request
                .get_tensor(&format!("present.{l}.key"))
                .map_err(ov("present key"))?,
            self.request
                .get_tensor(&format!("present.{l}.value"))
                .map_err(ov("present value"))?,
        ))
    }

    /// The request's current hidden_states tensor (to check where it was written).
    pub fn hidden_tensor(&self) -> Result<Tensor, RuntimeError> {
        self.request
            .get_tensor("hidden_states")
            .map_err(ov("hidden_states"))
    }

    /// Run one call; copies outputs out of the request's tensors.
    pub fn infer(&mut self, x: &ShardInputs<'_>) -> Result<ShardOutputs, RuntimeError> {
        let (b, t, p) = (x.batch as i64, x.tokens as i64, x.past_len as i64);
        let (nkv, hd) = (self.spec.num_kv_heads as i64, self.spec.head_dim as i64);
        if x.past.len() != self.layers {
            return Err(RuntimeError::Call(format!(
                "{} past layers given, shard A has {}",
                x.past.len(),
                self.layers
            )));
        }
        self.request
            .set_tensor(
                "input_ids",
                &tensor_from(ElementType::I64, &[b, t], x.input_ids)?,
            )
            .map_err(ov("input_ids"))?;
        self.request
            .set_tensor(
                "position_ids",
                &tensor_from(ElementType::I64, &[b, t], x.position_ids)?,
            )
            .map_err(ov("position_ids"))?;
        self.request
            .set_tensor(
                "attention_mask",
                &tensor_from(ElementType::F32, &[b, 1, t, p + t], x.attention_mask)?,
            )
            .map_err(ov("attention_mask"))?;
        for (l, (k, v)) in x.past.iter().enumerate() {
            let dims = [b, nkv, p, hd];
            self.request
                .set_tensor(
                    &format!("past_key_values.{l}.key"),
                    &tensor_from(ElementType::F32, &dims, k)?,
                )
                .map_err(ov("past key"))?;
            self.request
                .set_tensor(
                    &format!("past_key_values.{l}.value"),
                    &tensor_from(ElementType::F32, &dims, v)?,
                )
                .map_err(ov("past value"))?;
        }
        let t0 = Instant::now();
        self.request.infer().map_err(ov("running shard A"))?;
        let elapsed = t0.elapsed();
        let read = |req: &InferRequest, name: &str| -> Result<Vec<f32>, RuntimeError> {
            let t = req.get_tensor(name).map_err(ov("reading an output"))?;
            Ok(t.get_data::<f32>().map_err(ov("output data"))?.to_vec())
        };
        let hidden = read(&self.request, "hidden_states")?;
        let mut present = Vec::with_capacity(self.layers);
        for l in 0..self.layers {
            present.push((
                read(&self.request, &format!("present.{l}.key"))?,
                read(&self.request, &format!("present.{l}.value"))?,
            ));
        }
        Ok(ShardOutputs {
            hidden,
            present,
            elapsed,
        })
    }
}
