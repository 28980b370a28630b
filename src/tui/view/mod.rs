//! Drawing: a pure function of the app state, one file per screen region.
//!
//! ```text
//! ┌ status: profile · model · split k/L · A device · B backend · executive ┐
//! │ conversation (or log)                    │ devices                      │
//! │                                          │ ring                         │
//! │                                          │ server (with --serve)        │
//! │                                          │ index (with /index add)      │
//! │                                          │ speed                        │
//! ├──────────────────────────────────────────┴──────────────────────────────┤
//! │ input                                                                    │
//! └ hints ───────────────────────────────────────────────────────────────────┘
//! ```
//! Below 100 columns the panes go under the conversation as one compact
//! row; below 60×16 the screen says it is too small.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Gauge, Paragraph, Sparkline, Wrap};
use unicode_width::UnicodeWidthChar;

use crate::hw::Reading;
use crate::hw::checks::{self, Status};
use crate::hw::sampler::Snapshot;
use crate::supervisor::ExecState;
use crate::tui::keymap::Action;
use crate::tui::state::app::{App, Role, Screen};

mod bench;
mod chat;
mod check;
mod compact;
mod devices;
mod hints;
mod indexing;
mod ring;
mod server;
mod speed;
mod status;

use self::{
    chat::*, check::*, compact::*, devices::*, hints::*, indexing::*, ring::*, server::*, speed::*,
    status::*,
};

pub const MIN_W: u16 = 60;
pub const MIN_H: u16 = 16;

pub fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width >= MIN_W && area.height >= MIN_H && app.screen == Screen::Check {
        check_screen(f, app, area);
        return;
    }
    if area.width >= MIN_W && area.height >= 30 && app.screen == Screen::Bench {
        bench::render(f, app, area);
        return;
    }
    if app.screen == Screen::Bench {
        let msg = format!(
            "terminal too small: {}×{}, the bench screen needs at least {MIN_W}×30 (it goes on; its table is printed on exit)",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    if area.width < MIN_W || area.height < MIN_H {
        let msg = format!(
            "terminal too small: {}×{}, hybrid-tui needs at least {MIN_W}×{MIN_H}",
            area.width, area.height
        );
        f.render_widget(Paragraph::new(msg).wrap(Wrap { trim: true }), area);
        return;
    }
    let input_h = (app.input.lines().count().max(1) as u16 + 2).min(8);
    let [status, body, input, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(input_h),
        Constraint::Length(1),
    ])
    .areas(area);
    status_line(f, app, status);
    if area.width >= 100 {
        let [chat, panes] =
            Layout::horizontal([Constraint::Min(50), Constraint::Length(38)]).areas(body);
        main_area(f, app, chat);
        let server_h = if app.server.is_some() { 8 } else { 0 };
        let index_h = if app.indexing.is_some() { 5 } else { 0 };
        let [dev, ring, server, index, speed] = Layout::vertical([
            Constraint::Percentage(40),
            Constraint::Length(7),
            Constraint::Length(server_h),
            Constraint::Length(index_h),
            Constraint::Min(8),
        ])
        .areas(panes);
        devices_pane(f, app, dev);
        ring_pane(f, app, ring);
        if app.server.is_some() {
            server_pane(f, app, server);
        }
        if app.indexing.is_some() {
            index_pane(f, app, index);
        }
        speed_pane(f, app, speed);
    } else {
        let [chat, strip] =
            Layout::vertical([Constraint::Min(3), Constraint::Length(3)]).areas(body);
        main_area(f, app, chat);
        compact_panes(f, app, strip);
    }
    input_box(f, app, input);
    hints_line(f, app, hints);
    if app.show_help {
        help_overlay(f, app, area);
    }
}

/// Wrap `text` to `width` columns (by display width, breaking at spaces when it can).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut out = Vec::new();
    for para in text.split('\n') {
        let mut line = String::new();
        let mut w = 0;
        for word in para.split_inclusive(' ') {
            let ww: usize = word.chars().map(|c| c.width().unwrap_or(0)).sum();
            if w + ww > width && w > 0 {
                out.push(std::mem::take(&mut line).trim_end().to_string());
                w = 0;
            }
            if ww > width {
                for c in word.chars() {
                    let cw = c.width().unwrap_or(0);
                    if w + cw > width {
                        out.push(std::mem::take(&mut line));
                        w = 0;
                    }
                    line.push(c);
                    w += cw;
                }
            } else {
                line.push_str(word);
                w += ww;
            }
        }
        out.push(line.trim_end().to_string());
    }
    out
}

/// `text` cut to `width` display columns, with … when cut.
pub(crate) fn clip(text: &str, width: usize) -> String {
    let lines = wrap(text, width.saturating_sub(1).max(1));
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [first, ..] => format!("{first}…"),
    }
}

/// Split `width` cells in the given shares (summing to 1): floors, then the
/// cells left over to the largest remainders, so the bar is always full.
pub(super) fn split_width(width: usize, shares: &[f64]) -> Vec<usize> {
    let exact: Vec<f64> = shares.iter().map(|s| s.max(0.0) * width as f64).collect();
    let mut cells: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())));
    let mut left = width.saturating_sub(cells.iter().sum());
    for i in order.into_iter().cycle().take(shares.len() * 2) {
        if left == 0 {
            break;
        }
        cells[i] += 1;
        left -= 1;
    }
    cells
}

#[cfg(test)]
mod tests {
    use super::{split_width, wrap};

    #[test]
    fn stage_bar_fills_its_width() {
        for w in [1, 7, 36, 100] {
            let c = split_width(w, &[0.31, 0.02, 0.66, 0.01]);
            assert_eq!(c.iter().sum::<usize>(), w, "{c:?}");
        }
        assert_eq!(split_width(10, &[0.5, 0.5]), vec![5, 5]);
    }
    use unicode_width::UnicodeWidthStr;

    #[test]
    fn wrapping_keeps_words_and_display_width() {
        let w = wrap("the quick brown fox jumps", 10);
        assert_eq!(w, vec!["the quick", "brown fox", "jumps"]);
        // Wide characters count two columns; a long word is cut.
        for l in wrap("東京東京東京 abcdefghijklmnop", 6) {
            assert!(l.width() <= 6, "{l:?}");
        }
        assert_eq!(wrap("a\n\nb", 5), vec!["a", "", "b"]);
    }
}
