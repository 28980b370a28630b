//! The ring pane: each ring's occupancy, high-water mark and bytes/s.
//!
//! ```text
//! ┌ ring ─────────────────────┐
//! │ tokens B→A: used/slots …  │
//! │ acts A→B:   used/slots …  │
//! └───────────────────────────┘
//! ```

use super::*;

pub(super) fn human_rate(b: f64) -> String {
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
