//! The speed pane: decode tok/s, time to first token, and the per-token stage breakdown bar.
//!
//! ```text
//! ┌ speed ──────────────────────┐
//! │ tok/s ▁▂▃ · ttft            │
//! │ [A | A→B | B | B→A] stages  │
//! └─────────────────────────────┘
//! ```

use super::*;

pub(super) fn speed_pane(f: &mut Frame, app: &App, area: Rect) {
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
