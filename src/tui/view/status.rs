//! The status line: profile, model, split, both devices, the executive's state.
//!
//! ```text
//! ┌ status: profile · model · split k/L · A device · B backend · executive ┐
//! ```

use super::*;

pub(super) fn state_style(s: ExecState) -> (&'static str, Color) {
    match s {
        ExecState::Starting => ("starting", Color::Yellow),
        ExecState::Compiling => ("compiling", Color::Yellow),
        ExecState::Ready => ("ready", Color::Green),
        ExecState::Restarting => ("restarting", Color::Yellow),
        ExecState::Failed => ("failed", Color::Red),
        ExecState::Stopped => ("stopped", Color::DarkGray),
    }
}

pub(super) fn status_line(f: &mut Frame, app: &App, area: Rect) {
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
    if let Some(index) = &app.index {
        text.push_str(&format!(" │ index {index}"));
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
