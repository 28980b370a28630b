//! Drawing: a pure function of the app state.
//!
//! ```text
//! ┌ status: profile · model · split k/L · A device · B backend · executive ┐
//! │ conversation (or log)                    │ devices                      │
//! │                                          │ ring                         │
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

use super::app::{App, Role, Screen};
use super::keymap::Action;
use crate::hw::Reading;
use crate::hw::checks::{self, Status};
use crate::hw::sampler::Snapshot;
use crate::supervisor::ExecState;

pub const MIN_W: u16 = 60;
pub const MIN_H: u16 = 16;

pub fn render(f: &mut Frame, app: &App) {
    let area = f.area();
    if area.width >= MIN_W && area.height >= MIN_H && app.screen == Screen::Check {
        check_screen(f, app, area);
        return;
    }
    if area.width >= MIN_W && area.height >= 30 && app.screen == Screen::Bench {
        super::bench::render(f, app, area);
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
        let [dev, ring, speed] = Layout::vertical([
            Constraint::Percentage(40),
            Constraint::Length(7),
            Constraint::Min(8),
        ])
        .areas(panes);
        devices_pane(f, app, dev);
        ring_pane(f, app, ring);
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

fn state_style(s: ExecState) -> (&'static str, Color) {
    match s {
        ExecState::Starting => ("starting", Color::Yellow),
        ExecState::Compiling => ("compiling", Color::Yellow),
        ExecState::Ready => ("ready", Color::Green),
        ExecState::Restarting => ("restarting", Color::Yellow),
        ExecState::Failed => ("failed", Color::Red),
        ExecState::Stopped => ("stopped", Color::DarkGray),
    }
}

fn status_line(f: &mut Frame, app: &App, area: Rect) {
    let (state, color) = state_style(app.state);
    let right = format!("executive {state} ");
    let [left_area, right_area] =
        Layout::horizontal([Constraint::Min(0), Constraint::Length(right.len() as u16)])
            .areas(area);
    let mut text = format!(" hybrid-tui │ {} │ {}", app.profile, app.model_label);
    if let Some(i) = &app.info {
        text.push_str(&format!(
            " │ split {}/{} │ A: {} │ B: {}",
            i.split, i.layers, i.shard_a_device, i.shard_b_backend
        ));
    }
    f.render_widget(
        Paragraph::new(text).style(Style::default().add_modifier(Modifier::BOLD)),
        left_area,
    );
    f.render_widget(
        Paragraph::new(Line::from(vec![
            Span::raw("executive "),
            Span::styled(state, Style::default().fg(color)),
        ])),
        right_area,
    );
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

fn main_area(f: &mut Frame, app: &App, area: Rect) {
    if app.show_log {
        let block = Block::default().borders(Borders::ALL).title(" log (F2) ");
        let h = area.height.saturating_sub(2) as usize;
        let lines: Vec<Line> = app
            .log
            .iter()
            .rev()
            .take(h)
            .rev()
            .map(|l| Line::raw(l.clone()))
            .collect();
        f.render_widget(Paragraph::new(lines).block(block), area);
        return;
    }
    let block = Block::default().borders(Borders::ALL).title(" chat ");
    let mut inner = block.inner(area);
    f.render_widget(block, area);
    if !app.downloads.is_empty() {
        inner = downloads_pane(f, app, inner);
    }
    let width = inner.width as usize;
    let mut lines: Vec<Line> = Vec::new();
    if app.messages.is_empty() {
        let hint = match (&app.failure, app.state) {
            (Some(e), _) => format!("cannot chat: {e}"),
            (None, ExecState::Ready) => "Type a message and press Enter. F1 or ? for help.".into(),
            (None, s) => format!(
                "Starting: shard B is loading and the executive is {} shard A…",
                match s {
                    ExecState::Compiling => "compiling",
                    _ => "starting",
                }
            ),
        };
        for l in wrap(&hint, width) {
            lines.push(Line::styled(l, Style::default().fg(Color::DarkGray)));
        }
    }
    for m in &app.messages {
        let (who, style) = match m.role {
            Role::User => ("you", Style::default().fg(Color::Cyan)),
            Role::Assistant => ("model", Style::default().fg(Color::Green)),
            Role::Info => ("·", Style::default().fg(Color::Yellow)),
        };
        lines.push(Line::styled(
            who.to_string(),
            style.add_modifier(Modifier::BOLD),
        ));
        for l in wrap(&m.text, width) {
            lines.push(Line::raw(l));
        }
        if let Some(n) = &m.note {
            for l in wrap(n, width) {
                lines.push(Line::styled(l, Style::default().fg(Color::DarkGray)));
            }
        }
        lines.push(Line::raw(""));
    }
    let h = inner.height as usize;
    let max_scroll = lines.len().saturating_sub(h);
    let scroll = app.scroll.min(max_scroll);
    let start = lines.len().saturating_sub(h + scroll);
    let visible: Vec<Line> = lines.into_iter().skip(start).take(h).collect();
    f.render_widget(Paragraph::new(visible), inner);
}

/// The model's download at the top of the chat area, a gauge per file;
/// returns the area left below it.
fn downloads_pane(f: &mut Frame, app: &App, area: Rect) -> Rect {
    let rows = (app.downloads.len() as u16 + 1).min(area.height / 2);
    let [top, rest] = Layout::vertical([Constraint::Length(rows), Constraint::Min(0)]).areas(area);
    let done: u64 = app.downloads.iter().map(|d| d.done).sum();
    let total: u64 = app.downloads.iter().map(|d| d.total).sum();
    f.render_widget(
        Paragraph::new(format!(
            "downloading {} · {:.1}/{:.1} MB",
            app.model_label,
            done as f64 / 1e6,
            total as f64 / 1e6
        ))
        .style(Style::default().add_modifier(Modifier::BOLD)),
        Rect { height: 1, ..top },
    );
    // The latest files when they do not all fit.
    let shown = rows.saturating_sub(1) as usize;
    let skip = app.downloads.len().saturating_sub(shown);
    for (i, d) in app.downloads.iter().skip(skip).enumerate() {
        let row = Rect {
            y: top.y + 1 + i as u16,
            height: 1,
            ..top
        };
        f.render_widget(
            Gauge::default()
                .ratio(if d.total == 0 {
                    0.0
                } else {
                    (d.done as f64 / d.total as f64).clamp(0.0, 1.0)
                })
                .label(format!(
                    "{} {:.1}/{:.1} MB",
                    d.file,
                    d.done as f64 / 1e6,
                    d.total as f64 / 1e6
                )),
            row,
        );
    }
    rest
}

fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// One accelerator row of the devices pane: a gauge, or a grey line.
enum DevLine {
    Gauge(String, f64),
    Text(String),
}

fn pct(v: Option<f32>) -> String {
    v.map(|p| format!("{p:>3.0}%"))
        .unwrap_or_else(|| "  –%".into())
}

/// GPU, NPU and NVIDIA rows from one snapshot.
fn accel_lines(d: &Snapshot) -> Vec<DevLine> {
    let mut out = Vec::new();
    match &d.intel_gpus {
        Reading::Ok(list) => {
            for g in list {
                // Whole-GPU use when the PMU is readable, else our own.
                let (busy, whose) = match g.all_busy_pct.ok() {
                    Some(p) => (Some(*p), "all"),
                    None => (g.ours_busy_pct, "ours"),
                };
                out.push(DevLine::Gauge(
                    format!(
                        "{} {} {whose} · {} MHz",
                        if g.integrated { "iGPU" } else { "dGPU" },
                        pct(busy),
                        g.cur_mhz
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "?".into())
                    ),
                    busy.unwrap_or(0.0) as f64 / 100.0,
                ));
            }
        }
        Reading::Unavailable(r) => {
            out.push(DevLine::Text(format!("Intel GPU: not available ({r})")))
        }
    }
    match &d.npus {
        Reading::Ok(list) => {
            for n in list {
                out.push(DevLine::Gauge(
                    format!(
                        "NPU {} · {} MHz · {} MiB",
                        pct(n.busy_pct),
                        n.cur_mhz
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "?".into()),
                        n.memory_bytes.unwrap_or(0) >> 20
                    ),
                    n.busy_pct.unwrap_or(0.0) as f64 / 100.0,
                ));
            }
        }
        Reading::Unavailable(r) => {
            out.push(DevLine::Text(format!("Intel NPU: not available ({r})")))
        }
    }
    match &d.nvidia {
        Reading::Ok(list) => {
            for g in list {
                out.push(DevLine::Gauge(
                    format!(
                        "GPU{} {} · {:.1}/{:.1} GiB",
                        g.index,
                        pct(g.busy_pct),
                        gib(g.mem_used.unwrap_or(0)),
                        gib(g.mem_total.unwrap_or(0))
                    ),
                    g.busy_pct.unwrap_or(0.0) as f64 / 100.0,
                ));
            }
        }
        Reading::Unavailable(r) => out.push(DevLine::Text(format!("NVIDIA: not available ({r})"))),
    }
    out
}

pub(super) fn devices_pane(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" devices ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(d) = &app.devices else {
        f.render_widget(Paragraph::new("sampling…"), inner);
        return;
    };
    let rows = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .split(inner);
    match &d.cpu {
        Reading::Ok(c) => {
            f.render_widget(
                Gauge::default()
                    .ratio((c.total as f64 / 100.0).clamp(0.0, 1.0))
                    .label(format!(
                        "CPU {:>3.0}% · {} cores",
                        c.total,
                        c.per_core.len()
                    )),
                rows[0],
            );
            let cores: String = c
                .per_core
                .iter()
                .map(|u| match *u as u32 {
                    0..=12 => '▁',
                    13..=25 => '▂',
                    26..=37 => '▃',
                    38..=50 => '▄',
                    51..=62 => '▅',
                    63..=75 => '▆',
                    76..=87 => '▇',
                    _ => '█',
                })
                .collect();
            f.render_widget(Paragraph::new(format!("cores {cores}")), rows[1]);
        }
        Reading::Unavailable(r) => f.render_widget(
            Paragraph::new(format!("CPU: not available ({r})"))
                .style(Style::default().fg(Color::DarkGray)),
            rows[0],
        ),
    }
    f.render_widget(
        Sparkline::default()
            .data(app.cpu_history.iter().copied())
            .max(100),
        rows[2],
    );
    if let Some(m) = d.memory.ok() {
        f.render_widget(
            Gauge::default()
                .ratio((m.used() as f64 / m.total.max(1) as f64).clamp(0.0, 1.0))
                .label(format!("mem {:.1}/{:.1} GiB", gib(m.used()), gib(m.total))),
            rows[3],
        );
    }
    let mut area = rows[4];
    for line in accel_lines(d) {
        if area.height == 0 {
            break;
        }
        match line {
            DevLine::Gauge(label, ratio) => {
                let [row, rest] =
                    Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
                f.render_widget(
                    Gauge::default().ratio(ratio.clamp(0.0, 1.0)).label(label),
                    row,
                );
                area = rest;
            }
            DevLine::Text(t) => {
                // One line each, so every device keeps a row; the check
                // screen (F3) has the whole reason.
                let text = clip(&t, area.width as usize);
                let [row, rest] =
                    Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(area);
                f.render_widget(
                    Paragraph::new(text).style(Style::default().fg(Color::DarkGray)),
                    row,
                );
                area = rest;
            }
        }
    }
}

/// The hardware check screen: facts and checks on the left, the live
/// devices pane on the right (under them when narrow).
fn check_screen(f: &mut Frame, app: &App, area: Rect) {
    let [title, body, rec, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(area);
    let head = match (&app.check, app.check_running) {
        (_, true) => format!(" hardware check · profile {} · checking…", app.profile),
        (Some(r), false) => format!(
            " hardware check · profile {} · {} pass · {} warn · {} fail",
            app.profile, r.counts.pass, r.counts.warn, r.counts.fail
        ),
        (None, false) => format!(" hardware check · profile {}", app.profile),
    };
    f.render_widget(
        Paragraph::new(head).style(Style::default().fg(Color::Black).bg(Color::Cyan)),
        title,
    );
    let (list_area, dev_area) = if area.width >= 100 {
        let [l, d] = Layout::horizontal([Constraint::Min(50), Constraint::Length(38)]).areas(body);
        (l, d)
    } else {
        let [l, d] = Layout::vertical([Constraint::Min(3), Constraint::Length(10)]).areas(body);
        (l, d)
    };
    let block = Block::default().borders(Borders::ALL).title(" checks ");
    let inner = block.inner(list_area);
    f.render_widget(block, list_area);
    let w = inner.width as usize;
    let Some(r) = &app.check else {
        f.render_widget(
            Paragraph::new("running the checks (OpenVINO probe, Vulkan adapters)…"),
            inner,
        );
        devices_pane(f, app, dev_area);
        return;
    };
    // Machine lines, one line per check (the selected one marked), then
    // the selected check's detail and fix.
    let mut top: Vec<Line> = Vec::new();
    // Machine lines as room allows, keeping 6 rows for the detail.
    let room = (inner.height as usize).saturating_sub(r.checks.len() + 7);
    let machine = checks::machine_lines(&r.facts);
    for (k, v) in machine.iter().take(room) {
        top.push(Line::raw(clip(&format!("{k:<9} {v}"), w)));
    }
    if room > 0 {
        top.push(Line::raw(""));
    }
    let selected = app.check_selected.min(r.checks.len().saturating_sub(1));
    for (i, c) in r.checks.iter().enumerate() {
        let color = match c.status {
            Status::Pass => Color::Green,
            Status::Warn => Color::Yellow,
            Status::Fail => Color::Red,
        };
        let mark = if i == selected { "▶" } else { " " };
        let text = clip(&format!("{}: {}", c.title, c.detail), w.saturating_sub(8));
        let style = if i == selected {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        };
        top.push(Line::from(vec![
            Span::raw(mark),
            Span::styled(
                format!("[{}] ", c.status.label()),
                Style::default().fg(color).add_modifier(Modifier::BOLD),
            ),
            Span::styled(text, style),
        ]));
    }
    let top_h = (top.len() as u16).min(inner.height);
    let [list, detail] =
        Layout::vertical([Constraint::Length(top_h), Constraint::Min(0)]).areas(inner);
    f.render_widget(Paragraph::new(top), list);
    if let Some(c) = r.checks.get(selected) {
        let mut lines = vec![Line::styled(
            format!("{} ({})", c.title, c.id),
            Style::default().add_modifier(Modifier::BOLD),
        )];
        for l in wrap(&c.detail, w) {
            lines.push(Line::raw(l));
        }
        if let Some(fix) = c.fix {
            for l in wrap(&format!("fix: {fix}"), w) {
                lines.push(Line::styled(l, Style::default().fg(Color::Yellow)));
            }
        }
        let block = Block::default().borders(Borders::TOP);
        f.render_widget(Paragraph::new(lines).block(block), detail);
    }
    devices_pane(f, app, dev_area);
    if let Some(r) = &app.check {
        let rc = &r.recommended;
        let flags = if rc.flags.is_empty() {
            String::new()
        } else {
            format!(" {}", rc.flags)
        };
        f.render_widget(
            Paragraph::new(format!(
                "recommended: --profile {}{flags} — {}",
                rc.profile, rc.why
            ))
            .wrap(Wrap { trim: true })
            .style(Style::default().add_modifier(Modifier::BOLD)),
            rec,
        );
    }
    let back = if app.check_only {
        "quit"
    } else {
        "back to the chat"
    };
    f.render_widget(
        Paragraph::new(format!(
            "Esc {back} · ↑/↓ select a check · r check again · {} quit",
            app.keymap.key_for(Action::Quit)
        ))
        .style(Style::default().fg(Color::DarkGray)),
        hints,
    );
}

/// `text` cut to `width` display columns, with … when cut.
pub(super) fn clip(text: &str, width: usize) -> String {
    let lines = wrap(text, width.saturating_sub(1).max(1));
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [first, ..] => format!("{first}…"),
    }
}

fn human_rate(b: f64) -> String {
    if b >= 1e9 {
        format!("{:.2} GB/s", b / 1e9)
    } else if b >= 1e6 {
        format!("{:.1} MB/s", b / 1e6)
    } else {
        format!("{:.0} kB/s", b / 1e3)
    }
}

pub(super) fn ring_pane(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" ring ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let Some(r) = &app.ring else {
        f.render_widget(Paragraph::new("no segment yet"), inner);
        return;
    };
    let mut lines = Vec::new();
    for (i, name) in ["tokens B→A", "hidden A→B"].iter().enumerate() {
        let s = r.stats[i];
        lines.push(Line::raw(format!(
            "{name}: {}/{} used · high {}",
            s.occupancy, s.slots, s.high_water
        )));
        lines.push(Line::styled(
            format!(
                "  {} · slot {} KiB · {} msgs",
                human_rate(r.bytes_per_s[i]),
                s.slot_bytes / 1024,
                s.messages
            ),
            Style::default().fg(Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(lines), inner);
}

fn speed_pane(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default().borders(Borders::ALL).title(" speed ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [text, spark, bar] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(1),
        Constraint::Length(2),
    ])
    .areas(inner);
    let s = &app.speed;
    let mut lines = vec![Line::raw(if app.active.is_some() {
        format!("decoding {:.1} tok/s", s.live_tok_s)
    } else {
        match s.decode.back() {
            Some(v) => format!("last answer {v:.1} tok/s"),
            None => "no answer yet".into(),
        }
    })];
    if let Some(r) = &s.last {
        lines.push(Line::raw(format!(
            "ttft {:.0} ms · prefill {:.0} tok/s",
            r.metrics.ttft_ms, r.metrics.prefill_tok_s
        )));
    }
    f.render_widget(Paragraph::new(lines), text);
    let data: Vec<u64> = s.decode.iter().map(|v| (v * 10.0) as u64).collect();
    f.render_widget(Sparkline::default().data(data), spark);
    if let Some(st) = &s.stages {
        stage_bar(f, st, bar);
    }
}

/// The stage breakdown of a step as one bar (shard A, wait, shard B, wait)
/// and a legend under it.
pub(super) fn stage_bar(f: &mut Frame, st: &crate::pipeline::StageSample, bar: Rect) {
    let total = (st.a_ms + st.a_to_b_wait_ms + st.b_ms + st.b_to_a_wait_ms).max(1e-9);
    let parts = [
        (st.a_ms, Color::Blue),
        (st.a_to_b_wait_ms, Color::DarkGray),
        (st.b_ms, Color::Green),
        (st.b_to_a_wait_ms, Color::Gray),
    ];
    let widths = split_width(
        bar.width as usize,
        &parts.iter().map(|(v, _)| v / total).collect::<Vec<_>>(),
    );
    let spans: Vec<Span> = parts
        .iter()
        .zip(widths)
        .map(|((_, c), n)| Span::styled("█".repeat(n), Style::default().fg(*c)))
        .collect();
    let legend = format!(
        "A {:.1} · wait {:.1} · B {:.1} · wait {:.1} ms",
        st.a_ms, st.a_to_b_wait_ms, st.b_ms, st.b_to_a_wait_ms
    );
    f.render_widget(
        Paragraph::new(vec![Line::from(spans), Line::raw(legend)]),
        bar,
    );
}

/// Split `width` cells in the given shares (summing to 1): floors, then the
/// cells left over to the largest remainders, so the bar is always full.
fn split_width(width: usize, shares: &[f64]) -> Vec<usize> {
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

fn compact_panes(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = Vec::new();
    if let Some(d) = &app.devices {
        let mut parts = Vec::new();
        if let Some(c) = d.cpu.ok() {
            parts.push(format!("CPU {:.0}%", c.total));
        }
        if let Some(m) = d.memory.ok() {
            parts.push(format!("mem {:.1}/{:.1} GiB", gib(m.used()), gib(m.total)));
        }
        let accels: Vec<String> = accel_lines(d)
            .into_iter()
            .filter_map(|l| match l {
                DevLine::Gauge(label, _) => Some(label),
                DevLine::Text(_) => None,
            })
            .collect();
        parts.push(if accels.is_empty() {
            format!(
                "no GPU/NPU reading ({} for why)",
                app.keymap.key_for(Action::Hardware)
            )
        } else {
            accels.join(" · ")
        });
        lines.push(Line::raw(parts.join(" · ")));
    }
    if let Some(r) = &app.ring {
        lines.push(Line::raw(format!(
            "ring B→A {}/{} · A→B {}/{} · {}",
            r.stats[0].occupancy,
            r.stats[0].slots,
            r.stats[1].occupancy,
            r.stats[1].slots,
            human_rate(r.bytes_per_s[1])
        )));
    }
    let s = &app.speed;
    lines.push(Line::raw(match (&s.stages, app.active.is_some()) {
        (Some(st), true) => format!(
            "{:.1} tok/s · A {:.1} · B {:.1} ms",
            s.live_tok_s, st.a_ms, st.b_ms
        ),
        (Some(st), false) => format!(
            "last {:.1} tok/s · A {:.1} · B {:.1} ms",
            s.decode.back().copied().unwrap_or(0.0),
            st.a_ms,
            st.b_ms
        ),
        _ => "no answer yet".into(),
    }));
    f.render_widget(
        Paragraph::new(lines).style(Style::default().fg(Color::Gray)),
        area,
    );
}

fn input_box(f: &mut Frame, app: &App, area: Rect) {
    let title = if app.editing_system {
        " system prompt (Enter saves, Esc cancels) "
    } else if app.active.is_some() {
        " generating… (Esc stops) "
    } else {
        " message "
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner_w = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line> = wrap(&app.input, inner_w)
        .into_iter()
        .map(Line::raw)
        .collect();
    let h = area.height.saturating_sub(2) as usize;
    let skip = lines.len().saturating_sub(h);
    let shown: Vec<Line> = lines.into_iter().skip(skip).collect();
    f.render_widget(Paragraph::new(shown).block(block), area);
}

fn hints_line(f: &mut Frame, app: &App, area: Rect) {
    let k = |a: Action| app.keymap.key_for(a);
    let text = match &app.notice {
        Some(n) => n.clone(),
        // Narrow terminals get the keys a user needs first; F1 lists all.
        None if area.width < 100 => format!(
            "{} help · {} send · {} stop · {} hardware · {} quit",
            k(Action::Help),
            k(Action::Send),
            k(Action::Stop),
            k(Action::Hardware),
            k(Action::Quit)
        ),
        None => format!(
            "{} help · {} send · {} stop · {} regenerate · {} log · {} hardware · {} quit",
            k(Action::Help),
            k(Action::Send),
            k(Action::Stop),
            k(Action::Regenerate),
            k(Action::ToggleLog),
            k(Action::Hardware),
            k(Action::Quit)
        ),
    };
    f.render_widget(
        Paragraph::new(text).style(Style::default().fg(Color::DarkGray)),
        area,
    );
}

fn help_overlay(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = vec![Line::styled(
        "keys (any key closes this)",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    lines.push(Line::raw(format!(
        "{:<12} this help (when the message is empty)",
        "?"
    )));
    for a in Action::ALL {
        lines.push(Line::raw(format!(
            "{:<12} {}",
            app.keymap.key_for(a),
            a.describe()
        )));
    }
    lines.push(Line::raw(format!("{:<12} quit", "Ctrl-C")));
    lines.push(Line::raw(format!(
        "{:<12} scroll the conversation",
        "mouse wheel"
    )));
    // Across the whole screen, so nothing half-hidden shows around it.
    let w = area.width.saturating_sub(4);
    let h = (lines.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    f.render_widget(Clear, r);
    f.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(" help ")),
        r,
    );
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
