//! Finding the OpenVINO runtime.
//!
//! Order: the `openvino.runtime_dir` setting, `OPENVINO_LIB_DIR`, the
//! project-local folder that `scripts/setup` fills (`.openvino/` in the
//! source tree, or `$XDG_DATA_HOME/hybrid-tui/openvino`), `INTEL_OPENVINO_DIR`
//! and the usual system installs (`/opt/intel/openvino*`, `/usr/lib`,
//! `/usr/local/lib`), then `LD_LIBRARY_PATH`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The OpenVINO release the project pins (PyPI wheel `openvino==2026.4.1`).
pub const OPENVINO_PIN: &str = "2026.4.1";

#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "OpenVINO runtime not found (looked for libopenvino_c.so in: {tried}).\nFix: run `scripts/setup` (installs openvino=={pin} into .openvino/), or point HYBRID_TUI__OPENVINO__RUNTIME_DIR (or OPENVINO_LIB_DIR) at the folder holding libopenvino_c.so",
        tried = .tried.join(", "), pin = OPENVINO_PIN
    )]
    NotFound { tried: Vec<String> },
    #[error("OpenVINO runtime at {path} could not be loaded: {message}")]
    Load { path: PathBuf, message: String },
    #[error("OpenVINO: {0}")]
    Call(String),
}

/// Candidate folders, in search order, each with where it came from.
pub fn candidates(setting: &str) -> Vec<(String, PathBuf)> {
    let mut v = Vec::new();
    if !setting.is_empty() {
        v.push((
            "setting openvino.runtime_dir".into(),
            PathBuf::from(setting),
        ));
    }
    if let Ok(d) = std::env::var("OPENVINO_LIB_DIR") {
        v.push(("OPENVINO_LIB_DIR".into(), PathBuf::from(d)));
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".openvino");
    v.push(("project-local".into(), local));
    if let Some(d) = crate::paths::data_dir() {
        v.push(("user data".into(), d.join("openvino")));
    }
    if let Ok(d) = std::env::var("INTEL_OPENVINO_DIR") {
        v.push((
            "INTEL_OPENVINO_DIR".into(),
            PathBuf::from(d).join("runtime/lib/intel64"),
        ));
    }
    let mut opt: Vec<PathBuf> = std::fs::read_dir("/opt/intel")
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("openvino"))
                })
                .map(|p| p.join("runtime/lib/intel64"))
                .collect()
        })
        .unwrap_or_default();
    opt.sort();
    for p in opt {
        v.push(("system".into(), p));
    }
    for d in ["/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/local/lib"] {
        v.push(("system".into(), PathBuf::from(d)));
    }
    if let Ok(ld) = std::env::var("LD_LIBRARY_PATH") {
        for d in ld.split(':').filter(|d| !d.is_empty()) {
            v.push(("LD_LIBRARY_PATH".into(), PathBuf::from(d)));
        }
    }
    v
}

/// The C library inside a candidate folder: `libopenvino_c.so`, a versioned
/// `libopenvino_c.so.NNNN`, or the PyPI wheel layout `openvino/libs/` below it.
pub fn library_in(dir: &Path) -> Option<PathBuf> {
    for d in [dir.to_path_buf(), dir.join("openvino/libs")] {
        let plain = d.join("libopenvino_c.so");
        if plain.exists() {
            return Some(plain);
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut versioned: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("libopenvino_c.so."))
                })
                .collect();
            versioned.sort();
            if let Some(p) = versioned.pop() {
                return Some(p);
            }
        }
    }
    None
}

/// Find the runtime without loading it.
pub fn find_runtime(setting: &str) -> Result<PathBuf, RuntimeError> {
    // An explicit setting is authoritative: never fall back to another install.
    if !setting.is_empty() {
        let dir = PathBuf::from(setting);
        return library_in(&dir).ok_or_else(|| RuntimeError::NotFound {
            tried: vec![format!("{} (setting openvino.runtime_dir)", dir.display())],
        });
    }
    let cands = candidates(setting);
    for (_, dir) in &cands {
        if let Some(lib) = library_in(dir) {
            return Ok(lib);
        }
    }
    Err(RuntimeError::NotFound {
        tried: cands
            .iter()
            .map(|(why, p)| format!("{} ({why})", p.display()))
            .collect(),
    })
}

static LOADED: OnceLock<Result<PathBuf, RuntimeError>> = OnceLock::new();

/// Find and load the runtime once per process; returns the library's path.
pub fn load_runtime(setting: &str) -> Result<PathBuf, RuntimeError> {
    LOADED
        .get_or_init(|| {
            let lib = find_runtime(setting)?;
            openvino_sys::library::load_from(&lib).map_err(|message| RuntimeError::Load {
                path: lib.clone(),
                message,
            })?;
            Ok(lib)
        })
        .clone()
}
