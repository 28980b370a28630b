//! Shard A: the OpenVINO side. `runtime` finds and loads the OpenVINO
//! library, `session` compiles shard A's IR on a device and runs it, `probe`
//! describes the runtime and its devices.

pub mod kv;
pub mod probe;
pub mod runner;
pub mod runtime;
pub mod session;

pub use runtime::{OPENVINO_PIN, RuntimeError, load_runtime};
pub use session::{ShardASession, ShardInputs, ShardOutputs};
