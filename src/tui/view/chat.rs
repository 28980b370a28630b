//! The conversation (or the log), the downloads pane above it while a model is fetched, and the input box.
//!
//! ```text
//! │ [download gauges, one per file, while fetching]   │
//! │ conversation (or log, F2)                         │
//! ├───────────────────────────────────────────────────┤
//! │ input                                             │
//! ```

use super::*;

pub(super) fn main_area(f: &mut Frame, app: &App, area: Rect) {
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
        if !m.sources.is_empty() {
            let list: Vec<String> = m
                .sources
                .iter()
                .enumerate()
                .map(|(i, s)| format!("[{}] {s}", i + 1))
                .collect();
            for l in wrap(&format!("sources: {}", list.join("  ")), width) {
                lines.push(Line::styled(l, Style::default().fg(Color::Magenta)));
            }
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
pub(super) fn downloads_pane(f: &mut Frame, app: &App, area: Rect) -> Rect {
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

pub(super) fn input_box(f: &mut Frame, app: &App, area: Rect) {
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
