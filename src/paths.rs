//! XDG locations of the project's files.

use std::path::PathBuf;

use etcetera::BaseStrategy;

const APP: &str = "hybrid-tui";

fn base() -> Option<etcetera::base_strategy::Xdg> {
    etcetera::base_strategy::Xdg::new().ok()
}

/// `$XDG_CONFIG_HOME/hybrid-tui`.
pub fn config_dir() -> Option<PathBuf> {
    base().map(|b| b.config_dir().join(APP))
}

/// `$XDG_DATA_HOME/hybrid-tui`: demo models, benchmark results.
pub fn data_dir() -> Option<PathBuf> {
    base().map(|b| b.data_dir().join(APP))
}

/// `$XDG_CACHE_HOME/hybrid-tui`: compiled blobs, baked models.
pub fn cache_dir() -> Option<PathBuf> {
    base().map(|b| b.cache_dir().join(APP))
}

/// `$XDG_STATE_HOME/hybrid-tui`: logs.
pub fn state_dir() -> Option<PathBuf> {
    base().and_then(|b| b.state_dir()).map(|d| d.join(APP))
}
