//! The devices pane: CPU per core, memory, Intel GPU, NPU and NVIDIA readings.
//!
//! ```text
//! ┌ devices ─────────────────┐
//! │ CPU ▮▮▮ per core, memory │
//! │ GPU / NPU rows           │
//! └──────────────────────────┘
//! ```

use super::*;

pub(super) fn gib(b: u64) -> f64 {
    b as f64 / (1u64 << 30) as f64
}

/// One accelerator row of the devices pane: a gauge, or a grey line.
pub(super) enum DevLine {
    Gauge(String, f64),
    Text(String),
}

pub(super) fn pct(v: Option<f32>) -> String {
    v.map(|p| format!("{p:>3.0}%"))
        .unwrap_or_else(|| "  –%".into())
}

/// GPU, NPU and NVIDIA rows from one snapshot.
pub(super) fn accel_lines(d: &Snapshot) -> Vec<DevLine> {
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
    let Some(d) = &app.telemetry.devices else {
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
            .data(app.telemetry.cpu_history.iter().copied())
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
