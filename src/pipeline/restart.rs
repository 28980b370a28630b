//! Starting an executive again after one was lost (or failed to start),
//! with backoff and a bound.
//!
//! On a lost executive (exit, crash, hang, corrupt ring) the pipeline reports
//! it, waits 250 ms × 2^(n-1) (capped at 4 s) and starts a new one with a new
//! segment; every live stream is sent again from position 0 (NEW|RESET) and
//! shard B skips the rows it already holds. After `executive.max_restarts`
//! failures the streams end with an error. Start-up goes through the same
//! loop: a start that fails transiently (`SupervisorError::is_transient`:
//! killed by a signal, or no hello within the handshake timeout) counts as a
//! restart; one that fails for a reason of its own (an `error` message, an
//! exit code, a spawn error, a protocol mismatch, a compile timeout) is
//! returned at once, since a second try would fail the same way.

use std::time::Duration;

use super::{Event, PipelineError};
use crate::supervisor::{ExecState, Executive, StartConfig, SupervisorError, SupervisorEvent};

/// Start a new executive after `last` went wrong, with backoff (250 ms
/// doubling up to 4 s), counting each try in `restarts`; gives up once
/// `max` restarts are spent.
pub(super) fn start_again(
    start: &StartConfig,
    max: u32,
    restarts: &mut u32,
    last: String,
    sink: &mut dyn FnMut(Event),
) -> Result<Executive, PipelineError> {
    let mut last = last;
    loop {
        *restarts += 1;
        if *restarts > max {
            sink(Event::Supervisor(SupervisorEvent::State {
                state: ExecState::Failed,
            }));
            sink(Event::Supervisor(SupervisorEvent::Failed {
                message: format!("gave up after {} restarts: {last}", *restarts - 1),
            }));
            return Err(PipelineError::GaveUp {
                restarts: *restarts - 1,
                max,
                last,
            });
        }
        let backoff = Duration::from_millis(250u64 << (*restarts - 1).min(4));
        sink(Event::Supervisor(SupervisorEvent::State {
            state: ExecState::Restarting,
        }));
        sink(Event::Supervisor(SupervisorEvent::Restarting {
            attempt: *restarts,
            backoff_ms: backoff.as_millis() as u64,
        }));
        std::thread::sleep(backoff);
        if crate::supervisor::interrupted() {
            return Err(PipelineError::Supervisor(SupervisorError::Interrupted));
        }
        match Executive::start(start, &mut |e| sink(Event::Supervisor(e))) {
            Ok(x) => return Ok(x),
            Err(SupervisorError::Interrupted) => {
                return Err(PipelineError::Supervisor(SupervisorError::Interrupted));
            }
            Err(e) => {
                last = e.to_string();
                sink(Event::Supervisor(SupervisorEvent::Lost {
                    reason: last.clone(),
                    stderr_tail: Vec::new(),
                }));
            }
        }
    }
}
