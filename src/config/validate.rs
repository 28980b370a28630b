//! Checks of the settings' values: types (as each layer is read) and values
//! beyond types (once the layers are merged). Every error names the layer
//! (file, variable, flag), the key, and what is allowed.

use std::collections::BTreeMap;

use config::{Value, ValueKind};

use super::{Settings, SettingsError, keys};

impl Settings {
    /// Value checks beyond types.
    pub(super) fn validate(
        &self,
        provenance: &BTreeMap<String, String>,
    ) -> Result<(), SettingsError> {
        let origin = |key: &str| {
            provenance
                .get(key)
                .cloned()
                .unwrap_or_else(|| "default".into())
        };
        let one_of = |key: &str, value: &str, allowed: &[&str]| {
            if allowed.contains(&value) {
                Ok(())
            } else {
                Err(SettingsError::BadValue {
                    origin: origin(key),
                    key: key.into(),
                    message: format!("'{value}' is not one of: {}", allowed.join(", ")),
                })
            }
        };
        one_of(
            "shard_a.performance_hint",
            &self.shard_a.performance_hint,
            &["", "LATENCY", "THROUGHPUT", "CUMULATIVE_THROUGHPUT"],
        )?;
        one_of(
            "shard_a.inference_precision",
            &self.shard_a.inference_precision,
            &["", "f32", "f16", "bf16"],
        )?;
        one_of(
            "shard_b.backend",
            &self.shard_b.backend,
            &["cpu", "vulkan", "auto"],
        )?;
        one_of(
            "shard_b.weights_dtype",
            &self.shard_b.weights_dtype,
            &["f32", "f16", "packed", "packed-q8"],
        )?;
        one_of(
            "shard_b.decode",
            &self.shard_b.decode,
            &["replay", "launch", "ops"],
        )?;
        let adapter = self.shard_b.adapter.as_str();
        if !(["auto", "integrated", "discrete"].contains(&adapter)
            || adapter.parse::<usize>().is_ok())
        {
            return Err(SettingsError::BadValue {
                origin: origin("shard_b.adapter"),
                key: "shard_b.adapter".into(),
                message: format!(
                    "'{adapter}' is not one of: auto, integrated, discrete, or an adapter index"
                ),
            });
        }
        if self.shard_a.device.trim().is_empty() {
            return Err(SettingsError::BadValue {
                origin: origin("shard_a.device"),
                key: "shard_a.device".into(),
                message: "empty device: use an OpenVINO device string such as CPU, NPU, GPU.0 or AUTO:NPU,CPU".into(),
            });
        }
        for key in ["shard_a.prefill_chunk", "shard_a.kv_capacity"] {
            let v = if key.ends_with("chunk") {
                self.shard_a.prefill_chunk
            } else {
                self.shard_a.kv_capacity
            };
            if v == 0 {
                return Err(SettingsError::BadValue {
                    origin: origin(key),
                    key: key.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        one_of(
            "embed.inference_precision",
            &self.embed.inference_precision,
            &["", "f32", "f16", "bf16"],
        )?;
        for (key, v) in [
            ("embed.batch", self.embed.batch),
            ("embed.max_length", self.embed.max_length),
            ("embed.chunk_tokens", self.embed.chunk_tokens),
            ("embed.top_k", self.embed.top_k),
        ] {
            if v == 0 {
                return Err(SettingsError::BadValue {
                    origin: origin(key),
                    key: key.into(),
                    message: "must be at least 1".into(),
                });
            }
        }
        if !(0..=19).contains(&self.embed.nice) {
            return Err(SettingsError::BadValue {
                origin: origin("embed.nice"),
                key: "embed.nice".into(),
                message: format!("{} is not a niceness from 0 to 19", self.embed.nice),
            });
        }
        if self.embed.max_length < 3 {
            return Err(SettingsError::BadValue {
                origin: origin("embed.max_length"),
                key: "embed.max_length".into(),
                message: "must be at least 3 ([CLS], a token, [SEP])".into(),
            });
        }
        if self.embed.chunk_overlap >= self.embed.chunk_tokens {
            return Err(SettingsError::BadValue {
                origin: origin("embed.chunk_overlap"),
                key: "embed.chunk_overlap".into(),
                message: format!(
                    "{} must be below embed.chunk_tokens ({})",
                    self.embed.chunk_overlap, self.embed.chunk_tokens
                ),
            });
        }
        if self.embed.model.trim().is_empty() {
            return Err(SettingsError::BadValue {
                origin: origin("embed.model"),
                key: "embed.model".into(),
                message: format!(
                    "empty: give a Hub id (e.g. {}), a Hugging Face directory or a baked one",
                    super::DEFAULT_EMBED_MODEL
                ),
            });
        }
        if self.split.layers < -1 {
            return Err(SettingsError::BadValue {
                origin: origin("split.layers"),
                key: "split.layers".into(),
                message: format!(
                    "{} is not a layer count: use 0..=L, or -1 for half of the layers",
                    self.split.layers
                ),
            });
        }
        if self.server.host.trim().is_empty() {
            return Err(SettingsError::BadValue {
                origin: origin("server.host"),
                key: "server.host".into(),
                message: "empty: give an address to bind, e.g. 127.0.0.1 or 0.0.0.0".into(),
            });
        }
        if self.server.max_body_kib == 0 {
            return Err(SettingsError::BadValue {
                origin: origin("server.max_body_kib"),
                key: "server.max_body_kib".into(),
                message: "must be at least 1".into(),
            });
        }
        if self.ring.slots == 0 {
            return Err(SettingsError::BadValue {
                origin: origin("ring.slots"),
                key: "ring.slots".into(),
                message: "must be at least 1".into(),
            });
        }
        for (key, v) in [
            (
                "executive.handshake_timeout_s",
                self.executive.handshake_timeout_s,
            ),
            (
                "executive.compile_timeout_s",
                self.executive.compile_timeout_s,
            ),
            (
                "executive.heartbeat_timeout_s",
                self.executive.heartbeat_timeout_s,
            ),
            ("executive.call_timeout_s", self.executive.call_timeout_s),
            ("server.drain_s", self.server.drain_s),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(SettingsError::BadValue {
                    origin: origin(key),
                    key: key.into(),
                    message: format!("{v} is not a positive number of seconds"),
                });
            }
        }
        if let Err(e) = keys::bindings(&self.keys.map()) {
            let key = e.key();
            return Err(SettingsError::BadValue {
                origin: origin(&key),
                key,
                message: e.to_string(),
            });
        }
        for (key, v) in [
            ("shard_a.cpu_cores", &self.shard_a.cpu_cores),
            ("shard_b.cpu_cores", &self.shard_b.cpu_cores),
        ] {
            if let Err(e) = crate::affinity::parse_cpu_list(v) {
                return Err(SettingsError::BadValue {
                    origin: origin(key),
                    key: key.into(),
                    message: e.to_string(),
                });
            }
        }
        Ok(())
    }
}

/// Integer keys that take negative values (their own check bounds them).
const SIGNED_KEYS: &[&str] = &["split.layers"];
/// Integer keys that refuse 0 ([`Settings::validate`] says so too).
const POSITIVE_KEYS: &[&str] = &["shard_a.prefill_chunk", "shard_a.kv_capacity", "ring.slots"];

pub(super) fn check_type(
    origin: &str,
    key: &str,
    value: &Value,
    expected: &Value,
) -> Result<(), SettingsError> {
    let bad = |what: &str| SettingsError::BadValue {
        origin: origin.into(),
        key: key.into(),
        message: format!("expected {what}, found {}", describe(&value.kind)),
    };
    match (&expected.kind, &value.kind) {
        (ValueKind::String(_), ValueKind::String(_)) => Ok(()),
        // Numbers written where a string is expected ("0" adapter index, say) are fine.
        (ValueKind::String(_), ValueKind::I64(_) | ValueKind::U64(_)) => Ok(()),
        (ValueKind::String(_), _) => Err(bad("a string")),
        (ValueKind::Boolean(_), ValueKind::Boolean(_)) => Ok(()),
        (ValueKind::Boolean(_), _) => Err(bad("true or false")),
        (ValueKind::I64(_) | ValueKind::U64(_), ValueKind::I64(n))
            if *n >= 0 || SIGNED_KEYS.contains(&key) =>
        {
            Ok(())
        }
        (ValueKind::I64(_) | ValueKind::U64(_), ValueKind::U64(_)) => Ok(()),
        (ValueKind::I64(_) | ValueKind::U64(_), _) if POSITIVE_KEYS.contains(&key) => {
            Err(bad("a whole number ≥ 1"))
        }
        (ValueKind::I64(_) | ValueKind::U64(_), _) => Err(bad("a whole number ≥ 0")),
        _ => Ok(()),
    }
}

fn describe(kind: &ValueKind) -> String {
    match kind {
        ValueKind::Nil => "nothing".into(),
        ValueKind::Boolean(b) => format!("the boolean {b}"),
        ValueKind::I64(n) => format!("the number {n}"),
        ValueKind::I128(n) => format!("the number {n}"),
        ValueKind::U64(n) => format!("the number {n}"),
        ValueKind::U128(n) => format!("the number {n}"),
        ValueKind::Float(f) => format!("the number {f}"),
        ValueKind::String(s) if is_integer_text(s) => format!("the number {s}, which is too large"),
        ValueKind::String(s) => format!("the string {s:?}"),
        ValueKind::Table(_) => "a table".into(),
        ValueKind::Array(_) => "a list".into(),
    }
}

/// Digits, maybe after a minus: a number, however large.
fn is_integer_text(s: &str) -> bool {
    let digits = s.strip_prefix('-').unwrap_or(s);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}
