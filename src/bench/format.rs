//! The results in the four output formats: a llama-bench style markdown
//! table, CSV, JSON (the whole record) and JSON lines (one row per line).

use super::BenchError;
use serde::Serialize;

use super::record::{BenchRecord, Change, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Md,
    Csv,
    Json,
    Jsonl,
}

impl Output {
    pub fn parse(s: &str) -> Result<Output, BenchError> {
        match s {
            "md" => Ok(Output::Md),
            "csv" => Ok(Output::Csv),
            "json" => Ok(Output::Json),
            "jsonl" => Ok(Output::Jsonl),
            _ => Err(BenchError::Plan(format!(
                "--output {s}: choose md, csv, json or jsonl"
            ))),
        }
    }
}

/// "1.24 B", "12.6 M" (llama-bench's params column).
pub fn params(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}

/// "729.58 MiB", "4.58 GiB".
pub fn size(b: u64) -> String {
    let mib = b as f64 / (1024.0 * 1024.0);
    if mib >= 1024.0 {
        format!("{:.2} GiB", mib / 1024.0)
    } else {
        format!("{mib:.2} MiB")
    }
}

fn ratio(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.2}×")).unwrap_or_else(|| "–".into())
}

fn joules(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into())
}

/// The run as a markdown table plus its summary lines.
pub fn markdown(rec: &BenchRecord) -> String {
    let head = [
        "model",
        "size",
        "params",
        "shard A",
        "shard B",
        "split",
        "streams",
        "test",
        "t/s",
        "ttft ms",
        "vs half",
        "vs A only",
        "vs B only",
        "J/token",
        "shard B step",
    ];
    let right = [
        false, true, true, false, false, true, true, false, true, true, true, true, true, true,
        false,
    ];
    let model = format!(
        "{} {}",
        rec.model.arch,
        rec.model.weights.split(' ').next().unwrap_or("")
    );
    let cells: Vec<Vec<String>> = rec
        .rows
        .iter()
        .map(|r| {
            vec![
                model.clone(),
                size(rec.model.size_bytes),
                params(rec.model.params),
                rec.shard_a_device.clone(),
                rec.shard_b_backend.clone(),
                r.split_label(),
                r.streams.to_string(),
                r.test.clone(),
                format!("{:.2} ± {:.2}", r.tok_s, r.tok_s_sd),
                format!("{:.1} ± {:.1}", r.ttft_ms, r.ttft_ms_sd),
                ratio(r.vs_half),
                ratio(r.vs_a_only),
                ratio(r.vs_b_only),
                joules(r.joules_per_token),
                r.shard_b_work
                    .as_ref()
                    .map_or_else(|| "-".to_string(), |w| w.label()),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..head.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].chars().count())
                .chain([head[i].chars().count()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let line = |cols: Vec<String>| {
        let mut s = String::from("|");
        for (i, c) in cols.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if right[i] {
                s.push_str(&format!(" {}{c} |", " ".repeat(pad)));
            } else {
                s.push_str(&format!(" {c}{} |", " ".repeat(pad)));
            }
        }
        s.push('\n');
        s
    };
    let mut out = line(head.iter().map(|h| h.to_string()).collect());
    let mut rule = String::from("|");
    for (i, w) in widths.iter().enumerate() {
        if right[i] {
            rule.push_str(&format!(" {}: |", "-".repeat(w.saturating_sub(1))));
        } else {
            rule.push_str(&format!(" {} |", "-".repeat(*w)));
        }
    }
    out.push_str(&rule);
    out.push('\n');
    for c in cells {
        out.push_str(&line(c));
    }
    out.push('\n');
    out.push_str(&summary_lines(rec).join("\n"));
    out.push('\n');
    out
}

/// Below the table: run id, machine, energy source, winners, auto-split.
pub fn summary_lines(rec: &BenchRecord) -> Vec<String> {
    let mut v = vec![format!(
        "- run {} · {} · {} · OpenVINO {} · burn {} · shard B on {}",
        rec.id,
        rec.machine.cpu,
        rec.machine.cpu_summary,
        rec.machine.openvino,
        rec.machine.burn,
        rec.machine.shard_b_adapter
    )];
    if rec.shard_b_backend == "cpu" && !rec.machine.cpu_kernels.is_empty() {
        v.push(format!("- CPU kernels: {}", rec.machine.cpu_kernels));
    }
    v.push(format!(
        "- t/s: pp = prompt tokens of all streams over the slowest stream's time to first token; tg = tokens after each stream's first, over the time from the earliest first token to the last token; mean ± sd over {} repetition(s) after {} warm-up(s)",
        rec.plan.reps, rec.plan.warmup
    ));
    v.push(format!("- energy: {}", rec.energy));
    if let Some(a) = &rec.auto {
        let probes: Vec<String> = a
            .probes
            .iter()
            .map(|p| format!("k={} {:.2}", p.k, p.tok_s))
            .collect();
        v.push(format!(
            "- auto-split ({}): k={} is {:+.1}% over the half split k={} ({} probes in {:.0} s{}: {})",
            a.objective,
            a.best,
            a.gain_over_half * 100.0,
            a.half,
            a.probes.len(),
            a.spent_s,
            if a.out_of_time { ", budget spent" } else { "" },
            probes.join(", ")
        ));
    }
    for w in rec.winners() {
        v.push(format!("- {w}"));
    }
    if !rec.complete {
        v.push(format!(
            "- stopped early: {}",
            rec.error.clone().unwrap_or_else(|| "stopped".into())
        ));
    }
    v
}

/// One row with its run's context, flat (CSV columns, JSON lines).
#[derive(Debug, Serialize)]
pub struct FlatRow<'a> {
    pub run: &'a str,
    pub time: &'a str,
    pub model: &'a str,
    pub arch: &'a str,
    pub size_bytes: u64,
    pub params: u64,
    pub weights: &'a str,
    pub shard_a_device: &'a str,
    pub shard_b_backend: &'a str,
    pub shard_b_adapter: &'a str,
    pub split: usize,
    pub layers: usize,
    pub role: &'a str,
    pub test: &'a str,
    pub n: usize,
    pub streams: usize,
    pub reps: usize,
    pub tok_s: f64,
    pub tok_s_sd: f64,
    pub samples: String,
    pub tokens: String,
    pub ttft_ms: f64,
    pub ttft_ms_sd: f64,
    pub a_ms: f64,
    pub a_to_b_wait_ms: f64,
    pub b_ms: f64,
    pub b_to_a_wait_ms: f64,
    pub joules_per_token: Option<f64>,
    pub vs_half: Option<f64>,
    pub vs_a_only: Option<f64>,
    pub vs_b_only: Option<f64>,
    pub b_decode: Option<&'a str>,
    pub b_launches_per_step: Option<f64>,
    pub b_host_ms_per_step: Option<f64>,
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(";")
}

pub fn flat<'a>(rec: &'a BenchRecord, r: &'a Row) -> FlatRow<'a> {
    FlatRow {
        run: &rec.id,
        time: &rec.time,
        model: &rec.model.name,
        arch: &rec.model.arch,
        size_bytes: rec.model.size_bytes,
        params: rec.model.params,
        weights: &rec.model.weights,
        shard_a_device: &rec.shard_a_device,
        shard_b_backend: &rec.shard_b_backend,
        shard_b_adapter: &rec.machine.shard_b_adapter,
        split: r.split,
        layers: r.layers,
        role: match r.role {
            super::record::Role::Hybrid => "hybrid",
            super::record::Role::AOnly => "a-only",
            super::record::Role::BOnly => "b-only",
        },
        test: &r.test,
        n: r.n,
        streams: r.streams,
        reps: r.reps,
        tok_s: r.tok_s,
        tok_s_sd: r.tok_s_sd,
        samples: join(&r.samples),
        tokens: join(&r.tokens),
        ttft_ms: r.ttft_ms,
        ttft_ms_sd: r.ttft_ms_sd,
        a_ms: r.stages.a_ms,
        a_to_b_wait_ms: r.stages.a_to_b_wait_ms,
        b_ms: r.stages.b_ms,
        b_to_a_wait_ms: r.stages.b_to_a_wait_ms,
        joules_per_token: r.joules_per_token,
        vs_half: r.vs_half,
        vs_a_only: r.vs_a_only,
        vs_b_only: r.vs_b_only,
        b_decode: r.shard_b_work.as_ref().map(|w| w.decode.as_str()),
        b_launches_per_step: r.shard_b_work.as_ref().map(|w| w.launches_per_step),
        b_host_ms_per_step: r.shard_b_work.as_ref().map(|w| w.host_ms_per_step),
    }
}

pub fn csv(rec: &BenchRecord) -> Result<String, BenchError> {
    let e = |e: &dyn std::fmt::Display| BenchError::Report(e.to_string());
    let mut w = ::csv::Writer::from_writer(Vec::new());
    for r in &rec.rows {
        w.serialize(flat(rec, r)).map_err(|x| e(&x))?;
    }
    if rec.rows.is_empty() {
        return Ok(String::new());
    }
    let bytes = w.into_inner().map_err(|x| e(&x))?;
    String::from_utf8(bytes).map_err(|x| e(&x))
}

/// One JSON object per row: the flat fields plus the samples and token
/// counts as arrays.
pub fn jsonl(rec: &BenchRecord) -> Result<String, BenchError> {
    let e = |e: serde_json::Error| BenchError::Report(e.to_string());
    let mut out = String::new();
    for r in &rec.rows {
        let mut v = serde_json::to_value(flat(rec, r)).map_err(e)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("samples".into(), serde_json::json!(r.samples));
            o.insert("tokens".into(), serde_json::json!(r.tokens));
        }
        out.push_str(&serde_json::to_string(&v).map_err(e)?);
        out.push('\n');
    }
    Ok(out)
}

pub fn render(rec: &BenchRecord, o: Output) -> Result<String, BenchError> {
    match o {
        Output::Md => Ok(markdown(rec)),
        Output::Csv => csv(rec),
        Output::Json => serde_json::to_string_pretty(rec)
            .map(|s| s + "\n")
            .map_err(|e| BenchError::Report(e.to_string())),
        Output::Jsonl => jsonl(rec),
    }
}

/// `--compare A B` as a markdown table and the differences in setup.
pub fn comparison(a: &BenchRecord, b: &BenchRecord, rows: &[Change], notes: &[String]) -> String {
    let mut out = format!(
        "A = {} ({}, {})\nB = {} ({}, {})\n\n",
        a.id, a.time, a.model.name, b.id, b.time, b.model.name
    );
    if rows.is_empty() {
        out.push_str("no test, concurrency and split is in both runs\n");
    } else {
        out.push_str("| test | streams | split | A t/s | B t/s | change |\n");
        out.push_str("| ---- | ------: | ----- | ----: | ----: | -----: |\n");
        for c in rows {
            out.push_str(&format!(
                "| {} | {} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:+.1}%{} |\n",
                c.test,
                c.streams,
                c.split,
                c.a_tok_s,
                c.a_sd,
                c.b_tok_s,
                c.b_sd,
                c.change * 100.0,
                if c.significant { "" } else { " (within sd)" }
            ));
        }
    }
    if notes.is_empty() {
        out.push_str("\nsame model, machine and settings\n");
    } else {
        out.push_str("\ndifferences:\n");
        for n in notes {
            out.push_str(&format!("- {n}\n"));
        }
    }
    out
}
