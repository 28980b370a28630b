//! The live bench screen: progress, the current run (rate, tokens, stage
//! breakdown), device use, ring occupancy, the results table as it grows
//! and two charts (t/s against the split, t/s against the streams).
//!
//! ```text
//! ┌ hybrid-tui bench · model · L layers · shard A … · shard B … ───────────┐
//! │ [progress gauge: run i/n · what runs now]                              │
//! │ current run (rate, tokens, stages) │ devices │ ring                    │
//! │ results table                                                          │
//! │ t/s against split              │ t/s against streams                   │
//! └ hints ─────────────────────────────────────────────────────────────────┘
//! ```

use ratatui::symbols::Marker;
use ratatui::widgets::{Axis, Cell, Chart, Dataset, GraphType, LegendPosition, Row as TRow, Table};

use super::*;
use crate::bench::record::Row;
use crate::tui::state::bench::BenchState;

pub(super) fn render(f: &mut Frame, app: &App, area: Rect) {
    let b = &app.bench;
    let [title, progress, top, table, charts, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(9),
        Constraint::Min(4),
        Constraint::Length(12),
        Constraint::Length(1),
    ])
    .areas(area);
    let head = if b.model.is_empty() {
        format!("hybrid-tui bench · profile {}", app.profile)
    } else {
        format!(
            "hybrid-tui bench · {} · {} layers · shard A OpenVINO {} · shard B {} · profile {}",
            b.model, b.layers, b.shard_a, b.shard_b, app.profile
        )
    };
    f.render_widget(
        Paragraph::new(clip(&head, title.width as usize))
            .style(Style::default().add_modifier(Modifier::BOLD)),
        title,
    );
    let ratio = if b.runs_total > 0 {
        b.runs_done as f64 / b.runs_total as f64
    } else {
        0.0
    };
    f.render_widget(
        Gauge::default()
            .ratio(ratio.clamp(0.0, 1.0))
            .gauge_style(Style::default().fg(Color::Cyan))
            .label(format!(
                "run {}/{} · {}",
                b.runs_done, b.runs_total, b.phase
            )),
        progress,
    );
    let [cur, dev, ring] = Layout::horizontal([
        Constraint::Percentage(38),
        Constraint::Percentage(32),
        Constraint::Percentage(30),
    ])
    .areas(top);
    current_pane(f, app, cur);
    devices_pane(f, app, dev);
    ring_pane(f, app, ring);
    results_table(f, b, table);
    let [by_split, by_streams] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    let (rows, what) = chart_rows(b);
    let per_split = series(
        &rows,
        |r| format!("{} ×{}", r.test, r.streams),
        |r| r.split as f64,
    );
    chart(
        f,
        by_split,
        &format!(" {what} t/s against split k "),
        "k",
        &per_split,
    );
    let per_streams = series(
        &rows,
        |r| format!("{} k={}", r.test, r.split),
        |r| r.streams as f64,
    );
    chart(
        f,
        by_streams,
        &format!(" {what} t/s against streams "),
        "streams",
        &per_streams,
    );
    let hint = match &b.done {
        None => format!(
            "q / {}: stop the bench and quit (finished rows are saved)",
            app.keymap.key_for(Action::Back)
        ),
        Some(Ok(saved)) => format!("{saved} · q: quit (the table is printed on exit)"),
        Some(Err(e)) => format!("failed: {e} · q: quit"),
    };
    let style = match &b.done {
        Some(Err(_)) => Style::default().fg(Color::Red),
        _ => Style::default().fg(Color::DarkGray),
    };
    f.render_widget(
        Paragraph::new(clip(&hint, hints.width as usize)).style(style),
        hints,
    );
}

pub(super) fn current_pane(f: &mut Frame, app: &App, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(" current run ");
    let inner = block.inner(area);
    f.render_widget(block, area);
    let b = &app.bench;
    let [what, gauge, rate, stages] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(2),
        Constraint::Length(2),
    ])
    .areas(inner);
    let Some(c) = &b.current else {
        let mut lines = vec![Line::raw(clip(&b.phase, inner.width as usize))];
        if !b.probes.is_empty() {
            let p: Vec<String> = b
                .probes
                .iter()
                .map(|p| format!("k={} {:.1}", p.k, p.tok_s))
                .collect();
            lines.push(Line::raw(format!("probes: {}", p.join(" · "))));
        }
        f.render_widget(Paragraph::new(lines), inner);
        return;
    };
    let label = format!(
        "k={}/{} · {} · {} stream(s) · {}",
        c.k,
        b.layers,
        c.test.name(),
        c.streams,
        match c.rep {
            Some(r) => format!("rep {}/{}", r + 1, c.reps),
            None => "warm-up".into(),
        }
    );
    f.render_widget(Paragraph::new(clip(&label, what.width as usize)), what);
    f.render_widget(
        Gauge::default()
            .ratio((c.tokens as f64 / c.target.max(1) as f64).clamp(0.0, 1.0))
            .label(format!("{}/{} tokens", c.tokens, c.target)),
        gauge,
    );
    let unit = match c.test.kind {
        crate::bench::Kind::Pp => "prompt t/s",
        crate::bench::Kind::Tg => "decode t/s",
    };
    let mut lines = vec![Line::styled(
        format!("{:.2} {unit}", c.tok_s),
        Style::default().add_modifier(Modifier::BOLD),
    )];
    if let Some(p) = b.probes.last() {
        lines.push(Line::styled(
            format!("auto-split: {} probe(s), last k={}", b.probes.len(), p.k),
            Style::default().fg(Color::DarkGray),
        ));
    }
    f.render_widget(Paragraph::new(lines), rate);
    if let Some(st) = &app.speed.stages {
        stage_bar(f, st, stages);
    }
}

pub(super) fn ratio(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}×")).unwrap_or_else(|| "–".into())
}

pub(super) fn results_table(f: &mut Frame, b: &BenchState, area: Rect) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(format!(" results ({} rows) ", b.rows.len()));
    let header = TRow::new(
        [
            "split", "streams", "test", "t/s", "ttft ms", "vs half", "vs A", "vs B", "J/token",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    // The newest rows that fit.
    let fit = area.height.saturating_sub(3) as usize;
    let skip = b.rows.len().saturating_sub(fit);
    let rows: Vec<TRow> = b.rows[skip..]
        .iter()
        .map(|r| {
            TRow::new(vec![
                Cell::from(r.split_label()),
                Cell::from(r.streams.to_string()),
                Cell::from(r.test.clone()),
                Cell::from(format!("{:.2} ± {:.2}", r.tok_s, r.tok_s_sd)),
                Cell::from(format!("{:.0}", r.ttft_ms)),
                Cell::from(ratio(r.vs_half)),
                Cell::from(ratio(r.vs_a_only)),
                Cell::from(ratio(r.vs_b_only)),
                Cell::from(
                    r.joules_per_token
                        .map(|j| format!("{j:.3}"))
                        .unwrap_or_else(|| "n/a".into()),
                ),
            ])
        })
        .collect();
    let widths = [
        Constraint::Length(14),
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(20),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(6),
        Constraint::Length(8),
    ];
    f.render_widget(Table::new(rows, widths).header(header).block(block), area);
}

const COLORS: [Color; 6] = [
    Color::Cyan,
    Color::Yellow,
    Color::Green,
    Color::Magenta,
    Color::Blue,
    Color::Red,
];

/// Series of (x, t/s) points, one per key, x sorted.
pub(super) fn series(
    rows: &[&Row],
    key: impl Fn(&Row) -> String,
    x: impl Fn(&Row) -> f64,
) -> Vec<(String, Vec<(f64, f64)>)> {
    let mut out: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in rows {
        let k = key(r);
        let p = (x(r), r.tok_s);
        match out.iter_mut().find(|(n, _)| *n == k) {
            Some((_, v)) => v.push(p),
            None => out.push((k, vec![p])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

pub(super) fn chart(
    f: &mut Frame,
    area: Rect,
    title: &str,
    xname: &str,
    data: &[(String, Vec<(f64, f64)>)],
) {
    let block = Block::default()
        .borders(Borders::ALL)
        .title(title.to_string());
    if data.iter().all(|(_, v)| v.len() < 2) {
        let inner = block.inner(area);
        f.render_widget(block, area);
        f.render_widget(
            Paragraph::new(format!("(a line needs two {xname} values; none yet)"))
                .style(Style::default().fg(Color::DarkGray)),
            inner,
        );
        return;
    }
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for (_, v) in data {
        for (x, y) in v {
            x0 = x0.min(*x);
            x1 = x1.max(*x);
            y1 = y1.max(*y);
        }
    }
    let y1 = (y1 * 1.1).max(1e-3);
    let sets: Vec<Dataset> = data
        .iter()
        .filter(|(_, v)| v.len() >= 2)
        .enumerate()
        .map(|(i, (name, v))| {
            Dataset::default()
                .name(name.clone())
                .marker(Marker::Braille)
                .graph_type(GraphType::Line)
                .style(Style::default().fg(COLORS[i % COLORS.len()]))
                .data(v)
        })
        .collect();
    let mid = (x0 + x1) / 2.0;
    let xlabels = if mid.fract() == 0.0 {
        vec![format!("{x0:.0}"), format!("{mid:.0}"), format!("{x1:.0}")]
    } else {
        vec![format!("{x0:.0}"), format!("{x1:.0}")]
    };
    let c = Chart::new(sets)
        .block(block)
        .legend_position(Some(LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(80)))
        .x_axis(
            Axis::default()
                .title(xname.to_string())
                .bounds([x0, x1])
                .labels(xlabels),
        )
        .y_axis(Axis::default().title("t/s").bounds([0.0, y1]).labels([
            "0".to_string(),
            format!("{:.1}", y1 / 2.0),
            format!("{y1:.1}"),
        ]));
    f.render_widget(c, area);
}

/// The rows a chart draws: decode (tg) rows when there are any, else
/// prefill (pp) rows, so one chart never mixes scales 10× apart.
pub(super) fn chart_rows(b: &BenchState) -> (Vec<&Row>, &'static str) {
    let tg: Vec<&Row> = b
        .rows
        .iter()
        .filter(|r| r.kind == crate::bench::Kind::Tg)
        .collect();
    if tg.is_empty() {
        (b.rows.iter().collect(), "prefill")
    } else {
        (tg, "decode")
    }
}
