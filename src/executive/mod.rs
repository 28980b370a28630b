//! Shard A: the OpenVINO side. `runtime` finds and loads the OpenVINO
//! library, `session` compiles shard A's IR on a device and runs it, `probe`
//! describes the runtime and its devices, `encoder` runs the embedding model.

pub mod embed_serve;
pub mod encoder;
pub mod hostmem;
pub mod kv;
pub mod probe;
pub mod runtime;
pub mod serve;
pub mod session;
pub mod shard;

pub use runtime::{OPENVINO_PIN, RuntimeError, load_runtime};
pub use session::{ShardASession, ShardInputs, ShardOutputs};
