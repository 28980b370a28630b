//! OpenVINO's runtime and devices, as `hybrid-executive --probe` reports
//! them (the executive loads the runtime; this process never does for a
//! check, so a broken runtime cannot take the check down with it).

use std::process::Command;
use std::time::Duration;

use crate::config::Settings;
pub use crate::executive::probe::ProbeReport;
use crate::supervisor::executive_path;

use super::Reading;

/// Run the probe; its error text (e.g. "libopenvino_c.so not found ...")
/// becomes the reason.
pub fn probe(settings: &Settings, timeout: Duration) -> Reading<ProbeReport> {
    let program = match executive_path(&settings.executive.path) {
        Ok(p) => p,
        Err(e) => return Reading::Unavailable(e.to_string()),
    };
    let mut cmd = Command::new(&program);
    cmd.arg("--probe")
        .arg("--runtime-dir")
        .arg(&settings.openvino.runtime_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Reading::Unavailable(format!("{}: {e}", program.display())),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let pid = child.id();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(timeout) {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Reading::Unavailable(format!("{}: {e}", program.display())),
        Err(_) => {
            // SAFETY: kill(2) on the probe's pid, which we have not reaped.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            return Reading::Unavailable(format!(
                "{} --probe did not answer within {} s",
                program.display(),
                timeout.as_secs()
            ));
        }
    };
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = err.trim().trim_start_matches("error: ");
        return Reading::Unavailable(if err.is_empty() {
            format!("{} --probe failed ({})", program.display(), out.status)
        } else {
            err.to_string()
        });
    }
    match serde_json::from_slice::<ProbeReport>(&out.stdout) {
        Ok(r) => Reading::Ok(r),
        Err(e) => Reading::Unavailable(format!(
            "{} --probe printed bad JSON: {e}",
            program.display()
        )),
    }
}
