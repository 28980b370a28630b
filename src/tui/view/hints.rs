//! The hints line at the bottom and the help overlay (F1 or ?).
//!
//! ```text
//! └ hints: Enter send · Esc stop · F1 help … ─────┘
//!      ┌ help: every action and its key ┐
//! ```

use super::*;

pub(super) fn hints_line(f: &mut Frame, app: &App, area: Rect) {
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

pub(super) fn help_overlay(f: &mut Frame, app: &App, area: Rect) {
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
