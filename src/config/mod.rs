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
mod sections;
mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat, Value, ValueKind};

use validate::check_type;

pub use profiles::{BUILTIN_PROFILES, DEFAULT_PROFILE};
pub use sections::*;

/// The model the first run fetches and bakes (a small instruct model);
/// offline, the demo model stands in for it.
pub const DEFAULT_MODEL: &str = "Qwen/Qwen2.5-0.5B-Instruct";

/// The embedding model `embed.model` names by default (fetched and baked
/// on first use; offline it must already be in the Hugging Face cache).
pub const DEFAULT_EMBED_MODEL: &str = "BAAI/bge-small-en-v1.5";

/// Environment variable that picks the profile when `--profile` is absent.
pub const PROFILE_ENV: &str = "HYBRID_TUI_PROFILE";
/// Prefix of environment variables that set keys (`HYBRID_TUI__SHARD_A__DEVICE`).
pub const ENV_PREFIX: &str = "HYBRID_TUI";

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

impl Settings {
    /// `[embed]` with its device resolved: "" is shard A's device.
    pub fn embed_resolved(&self) -> EmbedSettings {
        let mut e = self.embed.clone();
        if e.device.trim().is_empty() {
            e.device = self.shard_a.device.clone();
        }
        e
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
