//! Below 100 columns: the panes as one compact row under the conversation.
//!
//! ```text
//! │ conversation                                  │
//! │ devices · ring · speed (one row)              │
//! ```

use super::*;

pub(super) fn compact_panes(f: &mut Frame, app: &App, area: Rect) {
    let mut lines = Vec::new();
    if let Some(d) = &app.telemetry.devices {
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
