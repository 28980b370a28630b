//! The hardware check screen (F3, or `hybrid-tui check`): the checks with their fixes, the machine, live gauges.
//!
//! ```text
//! ┌ hardware check · profile … ──────────────────────────┐
//! │ [pass|warn|fail] title: detail  (fix under a failure) │
//! │ machine lines                  │ live device gauges   │
//! └ recommended: --profile … ─────────────────────────────┘
//! ```

use super::*;

/// The hardware check screen: facts and checks on the left, the live
/// devices pane on the right (under them when narrow).
pub(super) fn check_screen(f: &mut Frame, app: &App, area: Rect) {
    let [title, body, rec, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(5),
        Constraint::Length(2),
        Constraint::Length(1),
    ])
    .areas(area);
    let head = match (&app.check.report, app.check.running) {
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
    let Some(r) = &app.check.report else {
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
    let selected = app.check.selected.min(r.checks.len().saturating_sub(1));
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
    if let Some(r) = &app.check.report {
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
    let back = if app.check.only {
        "quit"
    } else {
        "back to the chat"
    };
    f.render_widget(
        Paragraph::new(format!(
            "{} {back} · {}/{} select a check · {} check again · {} quit",
            app.keymap.key_for(Action::Back),
            app.keymap.key_for(Action::SelectUp),
            app.keymap.key_for(Action::SelectDown),
            app.keymap.key_for(Action::Rerun),
            app.keymap.key_for(Action::Quit)
        ))
        .style(Style::default().fg(Color::DarkGray)),
        hints,
    );
}
