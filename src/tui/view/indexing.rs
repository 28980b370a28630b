//! The index pane (`/index add`): a pass over files on the embedding
//! device while the chat goes on.
//!
//! ```text
//! ┌ index project ────────────────────┐
//! │ ████████████░░░░░░ 12/40 files    │
//! │ 230 chunks · 14.8 chunks/s        │
//! │ 0.5 docs/s · on NPU               │
//! └───────────────────────────────────┘
//! ```

use super::*;

pub(super) fn index_pane(f: &mut Frame, app: &App, area: Rect) {
    let Some(v) = &app.indexing else { return };
    let title = match v.finished_s {
        Some(s) => format!(" index {} · done in {s:.1}s ", v.name),
        None => format!(" index {} ", v.name),
    };
    let block = Block::default().borders(Borders::ALL).title(title);
    let inner = block.inner(area);
    f.render_widget(block, area);
    let [bar, text] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(inner);
    let ratio = if v.total > 0 {
        v.done as f64 / v.total as f64
    } else {
        0.0
    };
    f.render_widget(
        Gauge::default()
            .gauge_style(Style::default().fg(Color::Magenta))
            .ratio(ratio.clamp(0.0, 1.0))
            .label(format!("{}/{} files", v.done, v.total)),
        bar,
    );
    let (chunks_s, docs_s) = v.rates();
    let device = if v.device.is_empty() {
        "starting the embedding model…".to_string()
    } else {
        format!("on {}", v.device)
    };
    let lines = vec![
        Line::raw(format!("{} chunks · {chunks_s:.1} chunks/s", v.chunks)),
        Line::raw(format!("{docs_s:.1} docs/s · {device}")),
    ];
    f.render_widget(Paragraph::new(lines), text);
}
