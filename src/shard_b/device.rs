//! Choosing shard B's burn device at run time: `cpu` (Flex), `vulkan`
//! (a GPU through wgpu on the Vulkan API), or `auto` (a Vulkan GPU if there
//! is one, else the CPU).

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use burn::tensor::Device;
use burn::tensor::DeviceKind;
use burn::tensor::wgpu::WgpuBackend;

use crate::config::ShardBSettings;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(
        "shard_b.backend = vulkan, shard_b.adapter = {wanted}: no such Vulkan adapter. Adapters found: {found}. Fix: set shard_b.adapter to one of them (auto, integrated, discrete, or an index), or use shard_b.backend = cpu; the hardware check (hybrid-tui check) tells why a GPU is missing"
    )]
    NoAdapter { wanted: String, found: String },
    #[error("{0}")]
    Other(String),
}

/// What shard B runs on, for status lines and reports.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    /// "cpu" or "vulkan".
    pub backend: String,
    /// Adapter name (or "Flex (CPU)").
    pub name: String,
    pub is_gpu: bool,
}

/// A Vulkan adapter as wgpu reports it.
#[derive(Debug, Clone)]
pub struct Adapter {
    pub index: usize,
    pub name: String,
    /// DiscreteGpu, IntegratedGpu, VirtualGpu, Cpu (software), Other.
    pub kind: String,
}

/// Every Vulkan adapter on this machine (an empty list when there is no
/// Vulkan loader or driver).
pub fn vulkan_adapters() -> Vec<Adapter> {
    use burn::tensor::wgpu::wgpu;
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
    desc.backends = wgpu::Backends::VULKAN;
    let instance = wgpu::Instance::new(desc);
    let adapters = block_on(instance.enumerate_adapters(wgpu::Backends::VULKAN));
    adapters
        .into_iter()
        .enumerate()
        .map(|(index, a)| {
            let info = a.get_info();
            Adapter {
                index,
                name: info.name,
                kind: format!("{:?}", info.device_type),
            }
        })
        .collect()
}

/// Wait for a future by polling it (wgpu's adapter enumeration is async
/// only on the web, and is ready at once natively; a profiling window's
/// duration resolves once the device has run its work).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    let mut f = std::pin::pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}

fn describe(adapters: &[Adapter]) -> String {
    if adapters.is_empty() {
        "none (no Vulkan driver; install your GPU's Vulkan driver, or mesa-vulkan-drivers for a software one)".into()
    } else {
        adapters
            .iter()
            .map(|a| format!("{}: {} ({})", a.index, a.name, a.kind))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// The burn device the settings ask for.
pub fn select_device(s: &ShardBSettings) -> Result<(Device, BackendInfo), DeviceError> {
    let cpu = || {
        (
            Device::flex(),
            BackendInfo {
                backend: "cpu".into(),
                name: "Flex (CPU)".into(),
                is_gpu: false,
            },
        )
    };
    match s.backend.as_str() {
        "cpu" => Ok(cpu()),
        "vulkan" | "auto" => {
            let adapters = vulkan_adapters();
            let pick = pick_adapter(&adapters, &s.adapter, s.backend == "auto");
            match pick {
                Some((kind, a)) => {
                    let device = vulkan_device(kind, a)?;
                    Ok((
                        device,
                        BackendInfo {
                            backend: "vulkan".into(),
                            name: a.name.clone(),
                            is_gpu: a.kind != "Cpu",
                        },
                    ))
                }
                None if s.backend == "auto" => Ok(cpu()),
                None => Err(DeviceError::NoAdapter {
                    wanted: s.adapter.clone(),
                    found: describe(&adapters),
                }),
            }
        }
        other => Err(DeviceError::Other(format!(
            "shard_b.backend = {other}: expected cpu, vulkan or auto"
        ))),
    }
}

/// wgpu devices may be set up once per process: keep each one started.
fn vulkan_device(kind: DeviceKind, a: &Adapter) -> Result<Device, DeviceError> {
    static STARTED: OnceLock<Mutex<HashMap<usize, Device>>> = OnceLock::new();
    let mut started = STARTED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(d) = started.get(&a.index) {
        return Ok(d.clone());
    }
    let device = Device::wgpu_options()
        .device_kind(kind)
        .graphics_api(WgpuBackend::Vulkan)
        .init()
        .map_err(|e| {
            DeviceError::Other(format!(
                "starting Vulkan adapter {} ({}): {e}",
                a.index, a.name
            ))
        })?;
    started.insert(a.index, device.clone());
    Ok(device)
}

/// Map the adapter setting to a wgpu device kind. `auto` prefers a discrete
/// GPU, then an integrated one, then (only when not choosing automatically
/// between GPU and CPU) any other adapter, such as a software one.
fn pick_adapter<'a>(
    adapters: &'a [Adapter],
    wanted: &str,
    gpu_only: bool,
) -> Option<(DeviceKind, &'a Adapter)> {
    let nth_of = |kind: &str, a: &Adapter| {
        adapters
            .iter()
            .filter(|x| x.kind == kind)
            .position(|x| x.index == a.index)
            .unwrap_or(0)
    };
    let kind_of = |a: &Adapter| match a.kind.as_str() {
        "DiscreteGpu" => DeviceKind::DiscreteGpu(nth_of("DiscreteGpu", a)),
        "IntegratedGpu" => DeviceKind::IntegratedGpu(nth_of("IntegratedGpu", a)),
        "VirtualGpu" => DeviceKind::VirtualGpu(nth_of("VirtualGpu", a)),
        _ => DeviceKind::Cpu,
    };
    let find = |k: &str| adapters.iter().find(|a| a.kind == k);
    let a = match wanted {
        "discrete" => find("DiscreteGpu"),
        "integrated" => find("IntegratedGpu"),
        "auto" => find("DiscreteGpu")
            .or_else(|| find("IntegratedGpu"))
            .or_else(|| find("VirtualGpu"))
            .or_else(|| if gpu_only { None } else { adapters.first() }),
        n => n.parse::<usize>().ok().and_then(|i| adapters.get(i)),
    }?;
    Some((kind_of(a), a))
}
