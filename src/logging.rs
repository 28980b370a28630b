//! The one logging setup: tracing to the log file (`log.file`, else
//! `$XDG_STATE_HOME/hybrid-tui/hybrid-tui.log`) at `log.level`, never to a
//! terminal the app may own; each line can also go to a second place (the
//! workbench's log pane). The executive logs to its stderr instead, which
//! the supervisor forwards into this log.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::config::Settings;

/// Where the log goes: the setting, else the state directory.
pub fn log_path(settings: &Settings) -> Option<PathBuf> {
    if settings.log.file.is_empty() {
        crate::paths::state_dir().map(|d| d.join("hybrid-tui.log"))
    } else {
        Some(PathBuf::from(&settings.log.file))
    }
}

/// A line of the log, for a second sink.
pub type LineSink = Arc<dyn Fn(&str) + Send + Sync>;

/// Writes to the log file and hands every non-empty line to `lines`.
#[derive(Clone)]
struct Tee {
    file: Option<Arc<Mutex<std::fs::File>>>,
    lines: Option<LineSink>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.file
            && let Ok(mut f) = f.lock()
        {
            let _ = f.write_all(buf);
        }
        if let Some(lines) = &self.lines {
            for line in String::from_utf8_lossy(buf).lines() {
                if !line.trim().is_empty() {
                    lines(line);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Install the process's tracing subscriber (once; later calls do nothing).
/// A log file that cannot be opened leaves only `lines`.
pub fn init(settings: &Settings, lines: Option<LineSink>) {
    let file = log_path(settings).and_then(|p| {
        if let Some(d) = p.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .ok()
    });
    let tee = Tee {
        file: file.map(|f| Arc::new(Mutex::new(f))),
        lines,
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || tee.clone())
        .try_init();
}
