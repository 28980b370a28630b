//! The front end's commands: one file per command, the arguments in
//! `args`, the settings and logging here.

pub mod args;
pub mod bake;
pub mod bench;
pub mod check;
pub mod generate;
pub mod index;
pub mod model;
pub mod models;
pub mod serve;
pub mod start;

use anyhow::Result;

use hybrid_tui::config::{CliLayer, Loaded, Settings, SettingsEnv, parse_override};

use args::Global;

pub fn load_settings(g: &Global, bench: bool) -> Result<Loaded> {
    let mut overrides = Vec::new();
    for s in &g.set {
        overrides.push(parse_override(s)?);
    }
    if let Some(d) = &g.device {
        overrides.push(("shard_a.device".into(), d.clone()));
    }
    // bench reads --split itself (lists, ranges, auto).
    if let (Some(k), false) = (&g.split, bench) {
        let k: usize = k.parse().map_err(|_| {
            anyhow::anyhow!("--split {k}: give the number of layers in shard A (0 to L)")
        })?;
        overrides.push(("split.layers".into(), k.to_string()));
    }
    if g.serve {
        overrides.push(("server.enabled".into(), "true".into()));
    }
    if let Some(m) = &g.model {
        overrides.push(("model.source".into(), m.clone()));
    }
    let cli = CliLayer {
        profile: g.profile.clone(),
        config_file: g.config.clone(),
        overrides,
    };
    Ok(Settings::load(&cli, &SettingsEnv::from_process())?)
}

/// Log to a file, never to the terminal the app owns.
pub fn init_logging(settings: &Settings) {
    hybrid_tui::logging::init(settings, None);
}
