//! Profiles: the ones shipped in `profiles/` are compiled in; users may add
//! their own as `$XDG_CONFIG_HOME/hybrid-tui/profiles/<name>.toml` (a user
//! file of the same name as a built-in one takes its place).

use std::path::Path;

use super::{Layer, SettingsError, file_layer, toml_layer};

/// The profile used when none is chosen.
pub const DEFAULT_PROFILE: &str = "cpu";

/// Built-in profiles: (name, contents of `profiles/<name>.toml`).
pub const BUILTIN_PROFILES: &[(&str, &str)] = &[
    ("cpu", include_str!("../../profiles/cpu.toml")),
    ("core-ultra", include_str!("../../profiles/core-ultra.toml")),
    (
        "core-ultra-dgpu",
        include_str!("../../profiles/core-ultra-dgpu.toml"),
    ),
    ("vulkan", include_str!("../../profiles/vulkan.toml")),
    (
        "max-performance",
        include_str!("../../profiles/max-performance.toml"),
    ),
    (
        "development",
        include_str!("../../profiles/development.toml"),
    ),
    (
        "cost-optimized",
        include_str!("../../profiles/cost-optimized.toml"),
    ),
];

pub(super) fn load_profile(name: &str, user_dir: Option<&Path>) -> Result<Layer, SettingsError> {
    if let Some(dir) = user_dir {
        let path = dir.join("profiles").join(format!("{name}.toml"));
        if path.is_file() {
            return file_layer(&path);
        }
    }
    match BUILTIN_PROFILES.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => toml_layer(format!("profile {n} (profiles/{n}.toml, built in)"), text),
        None => Err(SettingsError::UnknownProfile {
            name: name.to_string(),
            builtin: BUILTIN_PROFILES
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            user_dir: user_dir
                .map(|d| d.join("profiles").display().to_string())
                .unwrap_or_else(|| "(no config directory)".into()),
        }),
    }
}
