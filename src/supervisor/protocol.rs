//! The control channel: JSON lines over the executive's stdin/stdout.
//!
//! ```text
//! executive → parent   {"type":"hello","protocol":2,"pid":..,"version":".."}
//! parent → executive   {"type":"start","protocol":2,"role":"shard_a"|"embed","model_dir":..,"model_hash":..,"split":k,"segment":"hybrid-tui.<pid>.<rand>","shard_a":{..},"runtime_dir":..}
//! executive → parent   {"type":"compiling",..} then heartbeats {"type":"stats",..}
//! executive → parent   {"type":"ready","model_hash":..,"device":..,"compile_ms":..,"capacities":{..}}
//!                      or {"type":"error","message":..,"fatal":true}
//! executive → parent   {"type":"stats",..} every HEARTBEAT while running
//! parent → executive   {"type":"shutdown"}  → executive: {"type":"bye"}, exit 0
//! ```
//!
//! Bulk data never travels here: only through the shared-memory rings. The
//! executive's stderr is its log (forwarded to the parent's log).
//!
//! `stats` carries {phase, uptime_ms, infers, tokens, infer_ms_total,
//! last_infer_ms, streams, busy_ms}; a heartbeat thread that lives as long as
//! the process sends it every 500 ms, so it beats while compiling and during
//! long calls (`busy_ms` is how long the call in progress has run). `ready`
//! carries the capacities {kv_capacity, chunk, hidden, act_slot_bytes,
//! max_out_bytes}. The model hash is the first 8 bytes of
//! sha256(manifest.toml), compared on both sides.
//!
//! Both sides read lines through [`read_control_line`]: at most [`MAX_LINE`]
//! bytes, UTF-8, one message. Anything else is a protocol violation,
//! reported with a 60-byte excerpt and the length, never the line itself.
//! The executive exits 4 on one (after an `error` message) and 5 when
//! `--parent-pid` is not its parent; the parent logs a bad line from the
//! executive and goes on (heartbeats tell whether it is alive).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{EmbedSettings, ShardASettings};

/// Bumped on any incompatible change of these messages or of the ring layout.
pub const PROTOCOL_VERSION: u32 = 2;
/// How often the executive says it is alive.
pub const HEARTBEAT: Duration = Duration::from_millis(500);

/// The longest control line either side accepts. A start request is a few
/// KiB; anything longer is not ours.
pub const MAX_LINE: usize = 64 * 1024;

/// What reading one control line gave.
#[derive(Debug, PartialEq)]
pub enum ControlLine<T> {
    Msg(T),
    /// The other side closed the channel.
    Eof,
    /// Not a message: `what` says why, with a short excerpt of the line
    /// (never the whole of it).
    Bad {
        what: String,
    },
}

/// A short, printable excerpt of `bytes` for an error message.
pub fn excerpt(bytes: &[u8]) -> String {
    const SHOWN: usize = 60;
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(SHOWN)]);
    let more = if bytes.len() > SHOWN { "…" } else { "" };
    format!("{text:?}{more} ({} bytes)", bytes.len())
}

/// Read one JSON line of at most [`MAX_LINE`] bytes and parse it. An
/// over-long line, bytes that are not UTF-8 and JSON that is not a message
/// are [`ControlLine::Bad`]; an I/O error counts as the end.
pub fn read_control_line<T: serde::de::DeserializeOwned>(
    r: &mut impl std::io::BufRead,
) -> ControlLine<T> {
    use std::io::{BufRead, Read};
    let mut buf = Vec::new();
    match r
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut buf)
    {
        Ok(0) | Err(_) => return ControlLine::Eof,
        Ok(_) => {}
    }
    if buf.len() > MAX_LINE && buf.last() != Some(&b'\n') {
        return ControlLine::Bad {
            what: format!(
                "a control line longer than {MAX_LINE} bytes, starting {}",
                excerpt(&buf)
            ),
        };
    }
    let Ok(text) = std::str::from_utf8(&buf) else {
        return ControlLine::Bad {
            what: format!("a control line that is not UTF-8: {}", excerpt(&buf)),
        };
    };
    match serde_json::from_str::<T>(text.trim()) {
        Ok(m) => ControlLine::Msg(m),
        Err(e) => ControlLine::Bad {
            what: format!("not a protocol message ({e}): {}", excerpt(&buf)),
        },
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToExecutive {
    Start(Box<StartRequest>),
    Shutdown,
}

/// What an executive runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Shard A of the LLM (the token and activation rings).
    #[default]
    ShardA,
    /// The embedding model (batches of token rows in, vectors out).
    Embed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartRequest {
    pub protocol: u32,
    #[serde(default)]
    pub role: Role,
    /// The embedding model's settings (role embed; its device resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embed: Option<EmbedSettings>,
    pub model_dir: PathBuf,
    /// [`model_hash`] of the model the parent loaded shard B from.
    pub model_hash: String,
    /// Layers in shard A.
    pub split: usize,
    pub segment: String,
    pub shard_a: ShardASettings,
    pub runtime_dir: String,
}

/// What the executive can take, reported when ready. An embedding
/// executive reports its rows per batch as `chunk`, its longest row as
/// `kv_capacity` and its vector length as `hidden`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacities {
    /// KV capacity per stream, tokens.
    pub kv_capacity: usize,
    /// Most tokens per token message.
    pub chunk: usize,
    pub hidden: usize,
    /// Bytes of one activation slot, and the most one call writes.
    pub act_slot_bytes: usize,
    pub max_out_bytes: usize,
}

/// Heartbeat and counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecStats {
    /// "compiling" or "running".
    pub phase: String,
    pub uptime_ms: u64,
    pub infers: u64,
    pub tokens: u64,
    pub infer_ms_total: f64,
    pub last_infer_ms: f64,
    pub streams: usize,
    /// How long the call in progress has been running (0 when idle).
    pub busy_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromExecutive {
    Hello {
        protocol: u32,
        pid: u32,
        version: String,
    },
    Compiling {
        device: String,
        layers: usize,
        mode: String,
    },
    Ready {
        model_hash: String,
        device: String,
        compile_ms: f64,
        capacities: Capacities,
    },
    Stats(ExecStats),
    Error {
        message: String,
        fatal: bool,
    },
    Bye,
}

/// A short hash naming a baked model: sha256 of its manifest (which holds
/// the source hashes and every tensor's entry), 16 hex digits.
pub fn model_hash(dir: &Path) -> std::io::Result<String> {
    let bytes = std::fs::read(dir.join(crate::bake::store::MANIFEST))?;
    let d = Sha256::digest(&bytes);
    Ok(d.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// One JSON line.
pub fn encode<T: Serialize>(msg: &T) -> String {
    // Serializing these plain structs cannot fail.
    let mut s = serde_json::to_string(msg)
        .unwrap_or_else(|e| format!("{{\"type\":\"error\",\"message\":\"{e}\",\"fatal\":true}}"));
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_as_tagged_json_lines() {
        let m = FromExecutive::Ready {
            model_hash: "ab".into(),
            device: "CPU".into(),
            compile_ms: 1.5,
            capacities: Capacities {
                kv_capacity: 8,
                chunk: 4,
                hidden: 16,
                act_slot_bytes: 4096,
                max_out_bytes: 256,
            },
        };
        let line = encode(&m);
        assert!(line.ends_with('\n') && line.starts_with("{\"type\":\"ready\""));
        let back: FromExecutive = serde_json::from_str(line.trim()).unwrap();
        assert_eq!(back, m);
        let s: ToExecutive = serde_json::from_str("{\"type\":\"shutdown\"}").unwrap();
        assert_eq!(s, ToExecutive::Shutdown);
    }
}
