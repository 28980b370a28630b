//! Layered settings.
//!
//! Layers, lowest first: built-in defaults → `profiles/<name>.toml` (chosen
//! with `--profile` or `HYBRID_TUI_PROFILE`) → the user's file
//! (`$XDG_CONFIG_HOME/hybrid-tui/config.toml`, or `--config FILE`) →
//! environment variables `HYBRID_TUI__SECTION__KEY` → command-line flags.
//!
//! Every layer is checked on its own before merging, so an unknown key or a
//! wrong type is reported against the file (or variable, or flag) it came
//! from. [`Loaded::provenance`] says which layer set each effective value.

pub mod keys;
mod profiles;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};
use serde::{Deserialize, Serialize};

use validate::check_type;

pub use profiles::{BUILTIN_PROFILES, DEFAULT_PROFILE};

/// The model the first run fetches and bakes (a small instruct model);
/// offline, the demo model stands in for it.
pub const DEFAULT_MODEL: &str = "Qwen/Qwen2.5-0.5B-Instruct";

/// Environment variable that picks the profile when `--profile` is absent.
pub const PROFILE_ENV: &str = "HYBRID_TUI_PROFILE";
/// Prefix of environment variables that set keys (`HYBRID_TUI__SHARD_A__DEVICE`).
pub const ENV_PREFIX: &str = "HYBRID_TUI";

/// All settings. Field docs are the user documentation of each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub model: ModelSettings,
    pub shard_a: ShardASettings,
    pub shard_b: ShardBSettings,
    pub split: SplitSettings,
    pub executive: ExecutiveSettings,
    pub ring: RingSettings,
    pub keys: KeySettings,
    pub openvino: OpenVinoSettings,
    pub log: LogSettings,
    pub server: ServerSettings,
}

/// The workbench's keys: "ctrl+r", "alt+enter", "f1", "pageup", "?"...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub quit: String,
    pub send: String,
    pub newline: String,
    pub stop: String,
    pub regenerate: String,
    pub clear: String,
    pub copy_answer: String,
    pub help: String,
    pub scroll_up: String,
    pub scroll_down: String,
    pub history_prev: String,
    pub history_next: String,
    pub edit_system: String,
    pub toggle_log: String,
    pub hardware: String,
    pub back: String,
    pub rerun: String,
    pub select_up: String,
    pub select_down: String,
}

impl KeySettings {
    /// Action name → key, as the keymap takes them.
    pub fn map(&self) -> BTreeMap<String, String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

impl Default for KeySettings {
    fn default() -> Self {
        use keys::Action as A;
        let k = |a: A| a.default_key().to_string();
        KeySettings {
            quit: k(A::Quit),
            send: k(A::Send),
            newline: k(A::Newline),
            stop: k(A::Stop),
            regenerate: k(A::Regenerate),
            clear: k(A::Clear),
            copy_answer: k(A::CopyAnswer),
            help: k(A::Help),
            scroll_up: k(A::ScrollUp),
            scroll_down: k(A::ScrollDown),
            history_prev: k(A::HistoryPrev),
            history_next: k(A::HistoryNext),
            edit_system: k(A::EditSystem),
            toggle_log: k(A::ToggleLog),
            hardware: k(A::Hardware),
            back: k(A::Back),
            rerun: k(A::Rerun),
            select_up: k(A::SelectUp),
            select_down: k(A::SelectDown),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// A Hugging Face id (org/name[@revision]: fetched and baked on first
    /// use), a baked model directory, or "demo" for the random-weight demo
    /// model the tool makes and bakes itself.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardASettings {
    /// Any OpenVINO device string: NPU, GPU.0, CPU, AUTO:NPU,CPU, HETERO:NPU,CPU.
    pub device: String,
    /// OpenVINO PERFORMANCE_HINT: LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT, or "" for the device default.
    pub performance_hint: String,
    /// OpenVINO CACHE_DIR for compiled blobs; "" disables caching.
    pub cache_dir: String,
    /// OpenVINO INFERENCE_PRECISION_HINT: f32, f16, bf16, or "" for the device default.
    pub inference_precision: String,
    /// Build static prefill/decode variants (required by the NPU; can be forced elsewhere).
    pub static_shapes: bool,
    /// Prompt chunk of the static prefill variant, in tokens.
    pub prefill_chunk: usize,
    /// KV-cache capacity per stream, in tokens.
    pub kv_capacity: usize,
    /// OpenVINO CPU threads (INFERENCE_NUM_THREADS); 0 = OpenVINO's choice.
    pub threads: usize,
    /// CPU cores the executive may run on, e.g. "0-3,8"; "" = any.
    pub cpu_cores: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardBSettings {
    /// burn backend: cpu, vulkan or auto.
    pub backend: String,
    /// Vulkan adapter: auto, integrated, discrete, or an index.
    pub adapter: String,
    /// Dtype weights are dequantized to at load: f32 or f16.
    pub weights_dtype: String,
    /// Threads of the CPU backend's pool; 0 = one per core it may use.
    pub threads: usize,
    /// CPU cores shard B's threads may run on, e.g. "4-7"; "" = any.
    pub cpu_cores: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutiveSettings {
    /// The hybrid-executive program; "" = the one next to hybrid-tui.
    pub path: String,
    /// Seconds to wait for the executive's hello after starting it.
    pub handshake_timeout_s: f64,
    /// Seconds to wait for shard A to compile (an NPU can take minutes).
    pub compile_timeout_s: f64,
    /// Seconds without a heartbeat before a running executive counts as hung.
    pub heartbeat_timeout_s: f64,
    /// Seconds one shard A call may run before the executive counts as hung.
    pub call_timeout_s: f64,
    /// Restarts after a crash or hang before giving up.
    pub max_restarts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingSettings {
    /// Slots of each shared-memory ring (messages in flight).
    pub slots: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSettings {
    /// Layers [0, k) run in shard A (0 = every layer on shard B, L = every
    /// layer on shard A); -1 means half of the model's layers.
    pub layers: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenVinoSettings {
    /// Folder holding libopenvino_c.so; "" searches (env OPENVINO_LIB_DIR,
    /// the project-local .openvino, /opt/intel/openvino, system paths).
    pub runtime_dir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// tracing filter, e.g. "info" or "hybrid_tui=debug".
    pub level: String,
    /// Log file; "" means `$XDG_STATE_HOME/hybrid-tui/hybrid-tui.log`.
    pub file: String,
}

/// `hybrid-tui serve` and the workbench's server (`--serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Run the server inside the workbench too.
    pub enabled: bool,
    /// Address to bind; loopback unless you mean it (set an API key then).
    pub host: String,
    pub port: u16,
    /// A file holding the API key clients must send (`Authorization: Bearer KEY`); "" for none.
    pub api_key_file: String,
    /// Requests run as pipeline streams at once; 0 picks the measured default.
    pub parallel: usize,
    /// Requests that may wait for a free stream; more get 429.
    pub queue: usize,
    /// Largest request body, in KiB (413 above it).
    pub max_body_kib: usize,
    /// On SIGINT/SIGTERM, how long requests in flight may finish before they are cancelled.
    pub drain_s: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: ModelSettings {
                source: DEFAULT_MODEL.into(),
            },
            shard_a: ShardASettings {
                device: "CPU".into(),
                performance_hint: "LATENCY".into(),
                cache_dir: String::new(),
                inference_precision: String::new(),
                static_shapes: false,
                prefill_chunk: 64,
                kv_capacity: 1024,
                threads: 0,
                cpu_cores: String::new(),
            },
            shard_b: ShardBSettings {
                backend: "cpu".into(),
                adapter: "auto".into(),
                weights_dtype: "f32".into(),
                threads: 0,
                cpu_cores: String::new(),
            },
            split: SplitSettings { layers: -1 },
            executive: ExecutiveSettings {
                path: String::new(),
                handshake_timeout_s: 10.0,
                compile_timeout_s: 600.0,
                heartbeat_timeout_s: 10.0,
                call_timeout_s: 120.0,
                max_restarts: 3,
            },
            ring: RingSettings { slots: 8 },
            keys: KeySettings::default(),
            openvino: OpenVinoSettings {
                runtime_dir: String::new(),
            },
            log: LogSettings {
                level: "info".into(),
                file: String::new(),
            },
            server: ServerSettings {
                enabled: false,
                host: "127.0.0.1".into(),
                port: 8080,
                api_key_file: String::new(),
                parallel: 0,
                queue: 64,
                max_body_kib: 1024,
                drain_s: 10.0,
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "unknown profile '{name}': built-in profiles are {builtin}; user profiles are read from {user_dir}"
    )]
    UnknownProfile {
        name: String,
        builtin: String,
        user_dir: String,
    },
    #[error("{origin}: unknown setting '{key}'; allowed keys{section}: {allowed}")]
    UnknownKey {
        origin: String,
        key: String,
        section: String,
        allowed: String,
    },
    #[error("{origin}: bad value for '{key}': {message}")]
    BadValue {
        origin: String,
        key: String,
        message: String,
    },
    #[error("{origin}: {message}")]
    Unreadable { origin: String, message: String },
    #[error("--set {0}: expected KEY=VALUE, e.g. --set shard_a.device=NPU")]
    BadOverride(String),
}

/// What the command line contributes to the settings.
#[derive(Debug, Clone, Default)]
pub struct CliLayer {
    pub profile: Option<String>,
    pub config_file: Option<PathBuf>,
    /// `key=value` pairs from `--set` and from dedicated flags.
    pub overrides: Vec<(String, String)>,
}

/// Where the settings are read from, made explicit for tests.
#[derive(Debug, Clone)]
pub struct SettingsEnv {
    pub vars: BTreeMap<String, String>,
    pub user_config_dir: Option<PathBuf>,
}

impl SettingsEnv {
    /// The real process environment and XDG config directory.
    pub fn from_process() -> Self {
        SettingsEnv {
            vars: std::env::vars().collect(),
            user_config_dir: crate::paths::config_dir(),
        }
    }
}

/// The effective settings and where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub settings: Settings,
    pub profile: String,
    /// Dotted key → origin label of the layer that set it last.
    pub provenance: BTreeMap<String, String>,
}

struct Layer {
    origin: String,
    config: Config,
}

impl Settings {
    /// Load and merge all layers.
    pub fn load(cli: &CliLayer, env: &SettingsEnv) -> Result<Loaded, SettingsError> {
        let defaults =
            Config::try_from(&Settings::default()).map_err(|e| SettingsError::Unreadable {
                origin: "built-in defaults".into(),
                message: e.to_string(),
            })?;
        let default_keys = flatten(&defaults);

        let profile = cli
            .profile
            .clone()
            .or_else(|| env.vars.get(PROFILE_ENV).cloned())
            .unwrap_or_else(|| DEFAULT_PROFILE.to_string());
        let mut layers = vec![Layer {
            origin: "default".into(),
            config: defaults.clone(),
        }];
        layers.push(profiles::load_profile(
            &profile,
            env.user_config_dir.as_deref(),
        )?);

        let user_file = cli.config_file.clone().or_else(|| {
            env.user_config_dir
                .as_ref()
                .map(|d| d.join("config.toml"))
                .filter(|p| p.exists())
        });
        if let Some(path) = user_file {
            layers.push(file_layer(&path)?);
        }

        let env_vars: config::Map<String, String> = env
            .vars
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}__")))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !env_vars.is_empty() {
            let origin = format!(
                "environment ({})",
                env_vars.keys().cloned().collect::<Vec<_>>().join(", ")
            );
            let config = Config::builder()
                .add_source(
                    Environment::with_prefix(ENV_PREFIX)
                        .prefix_separator("__")
                        .separator("__")
                        .try_parsing(true)
                        .source(Some(env_vars)),
                )
                .build()
                .map_err(|e| SettingsError::Unreadable {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
            layers.push(Layer { origin, config });
        }

        for (key, value) in &cli.overrides {
            let origin = format!("command line ({key}={value})");
            let mut b = Config::builder();
            b = b
                .set_override(key.as_str(), parse_scalar(value))
                .map_err(|e| SettingsError::Unreadable {
                    origin: origin.clone(),
                    message: e.to_string(),
                })?;
            let config = b.build().map_err(|e| SettingsError::Unreadable {
                origin: origin.clone(),
                message: e.to_string(),
            })?;
            layers.push(Layer { origin, config });
        }

        // Check each layer alone: unknown keys, then types.
        let mut provenance = BTreeMap::new();
        for layer in &layers {
            let keys = flatten(&layer.config);
            for key in keys.keys() {
                if !default_keys.contains_key(key) {
                    return Err(unknown_key(&layer.origin, key, &default_keys));
                }
            }
            for (key, value) in &keys {
                let expected = &default_keys[key];
                check_type(&layer.origin, key, value, expected)?;
                provenance.insert(key.clone(), layer.origin.clone());
            }
        }

        let mut builder = Config::builder();
        for layer in layers {
            builder = builder.add_source(layer.config);
        }
        let merged = builder.build().map_err(|e| SettingsError::Unreadable {
            origin: "merged settings".into(),
            message: e.to_string(),
        })?;
        let settings: Settings =
            merged
                .try_deserialize()
                .map_err(|e| SettingsError::Unreadable {
                    origin: "merged settings".into(),
                    message: e.to_string(),
                })?;
        settings.validate(&provenance)?;
        Ok(Loaded {
            settings,
            profile,
            provenance,
        })
    }
}

impl Settings {
    /// Shard A's layer count k for a model of `num_layers` layers.
    pub fn split_for(&self, num_layers: usize) -> usize {
        if self.split.layers < 0 {
            num_layers / 2
        } else {
            self.split.layers as usize
        }
    }
}

impl Loaded {
    /// The effective settings as TOML lines, each with its origin.
    pub fn render(&self) -> String {
        let mut out = format!("# profile: {}\n", self.profile);
        let config = match Config::try_from(&self.settings) {
            Ok(c) => c,
            Err(e) => return format!("{out}# cannot render settings: {e}\n"),
        };
        let flat = flatten(&config);
        let mut section = String::new();
        for (key, value) in &flat {
            let (sec, name) = key.split_once('.').unwrap_or(("", key.as_str()));
            if sec != section {
                out.push_str(&format!("\n[{sec}]\n"));
                section = sec.to_string();
            }
            let origin = self
                .provenance
                .get(key)
                .map(String::as_str)
                .unwrap_or("default");
            out.push_str(&format!(
                "{name} = {}  # from {origin}\n",
                toml_value(value)
            ));
        }
        out
    }
}

fn toml_value(v: &Value) -> String {
    match &v.kind {
        ValueKind::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn file_layer(path: &Path) -> Result<Layer, SettingsError> {
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError::Unreadable {
        origin: origin.clone(),
        message: format!("cannot read the settings file: {e}"),
    })?;
    toml_layer(origin, &text)
}

fn toml_layer(origin: String, text: &str) -> Result<Layer, SettingsError> {
    let config = Config::builder()
        .add_source(File::from_str(text, FileFormat::Toml))
        .build()
        .map_err(|e| SettingsError::Unreadable {
            origin: origin.clone(),
            message: format!("not valid TOML: {e}"),
        })?;
    Ok(Layer { origin, config })
}

/// Dotted keys of every leaf value.
fn flatten(config: &Config) -> BTreeMap<String, Value> {
    fn walk(prefix: &str, table: &config::Map<String, Value>, out: &mut BTreeMap<String, Value>) {
        for (k, v) in table {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            match &v.kind {
                ValueKind::Table(t) => walk(&key, t, out),
                _ => {
                    out.insert(key, v.clone());
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Ok(table) = config
        .clone()
        .try_deserialize::<config::Map<String, Value>>()
    {
        walk("", &table, &mut out);
    }
    out
}

fn unknown_key(origin: &str, key: &str, known: &BTreeMap<String, Value>) -> SettingsError {
    let section = key.split_once('.').map(|(s, _)| s);
    let in_section: Vec<&str> = known
        .keys()
        .filter(|k| section.is_some_and(|s| k.starts_with(&format!("{s}."))))
        .map(String::as_str)
        .collect();
    let (section, allowed) = if in_section.is_empty() {
        let mut sections: Vec<&str> = known
            .keys()
            .filter_map(|k| k.split_once('.').map(|(s, _)| s))
            .collect();
        sections.dedup();
        (
            " (sections)".to_string(),
            sections
                .iter()
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    } else {
        (
            format!(" in [{}]", section.unwrap_or_default()),
            in_section.join(", "),
        )
    };
    SettingsError::UnknownKey {
        origin: origin.into(),
        key: key.into(),
        section,
        allowed,
    }
}

/// Command-line values are strings; read numbers and booleans as such.
fn parse_scalar(s: &str) -> ValueKind {
    if let Ok(b) = s.parse::<bool>() {
        ValueKind::Boolean(b)
    } else if let Ok(n) = s.parse::<i64>() {
        ValueKind::I64(n)
    } else if let Ok(n) = s.parse::<u64>() {
        ValueKind::U64(n)
    } else {
        ValueKind::String(s.to_string())
    }
}

/// Parse `key=value` from `--set`.
pub fn parse_override(s: &str) -> Result<(String, String), SettingsError> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(SettingsError::BadOverride(s.to_string())),
    }
}

#[cfg(test)]
mod tests;
