//! The check screen's state: the last report, whether a check runs, which
//! check is selected, and how to start one.

use crate::hw::checks::{Report, Status};

pub struct CheckState {
    pub report: Option<Report>,
    pub running: bool,
    /// Opened by `hybrid-tui check`: no chat behind the check screen.
    pub only: bool,
    /// The check whose detail and fix are shown.
    pub selected: usize,
    /// Starts a check (a thread that sends `AppEvent::Check`).
    run: Box<dyn FnMut() + Send>,
}

impl Default for CheckState {
    fn default() -> Self {
        CheckState {
            report: None,
            running: false,
            only: false,
            selected: 0,
            run: Box::new(|| {}),
        }
    }
}

impl std::fmt::Debug for CheckState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckState")
            .field("running", &self.running)
            .field("only", &self.only)
            .field("selected", &self.selected)
            .finish()
    }
}

impl CheckState {
    pub fn set_runner(&mut self, f: Box<dyn FnMut() + Send>) {
        self.run = f;
    }

    /// A finished check: select the first failure, else the first warning.
    pub fn done(&mut self, r: Report) {
        let first = |st| r.checks.iter().position(|c| c.status == st);
        self.selected = first(Status::Fail)
            .or_else(|| first(Status::Warn))
            .unwrap_or(0);
        self.report = Some(r);
        self.running = false;
    }

    /// Run a check unless one runs.
    pub fn rerun(&mut self) {
        if !self.running {
            self.running = true;
            (self.run)();
        }
    }

    /// Run one if there is no report yet.
    pub fn ensure(&mut self) {
        if self.report.is_none() {
            self.rerun();
        }
    }

    pub fn select_up(&mut self) {
        self.selected = self.selected.saturating_sub(1);
    }

    pub fn select_down(&mut self) {
        let last = self
            .report
            .as_ref()
            .map_or(0, |r| r.checks.len().saturating_sub(1));
        self.selected = (self.selected + 1).min(last);
    }
}
