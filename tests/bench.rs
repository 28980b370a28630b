//! `hybrid-tui bench`: short headless runs on the tiny test model in every
//! output format (each parsed, its numbers checked against each other and
//! against the workload), the results file, --list and --compare, the
//! auto-split search, bad input; the parts (lists, statistics, ratios,
//! energy counters) on their own.

mod common;

use common::app as cmd;

use std::path::Path;

use common::baked_model;
use hybrid_tui::bench::energy::EnergyMeter;
use hybrid_tui::bench::record::{self, Role, Row, Stages};
use hybrid_tui::bench::{Kind, mean_sd, parse_list};
use hybrid_tui::hw::Root;
use hybrid_tui::model::Arch;
use predicates::prelude::*;
use rand::Rng;

/// A short bench on the tiny llama (4 layers): pp8 and tg6, 1 and 2
/// streams, split 1 and 3 plus both baselines, 2 repetitions.
fn bench(home: &Path, output: &str) -> std::process::Output {
    let model = baked_model(Arch::Llama, "int4_sym");
    let out = cmd(home)
        .args(["bench", "--model"])
        .arg(&model)
        .args([
            "--pp",
            "8",
            "--tg",
            "6",
            "--reps",
            "2",
            "--warmup",
            "1",
            "--streams",
            "1,2",
            "--split",
            "1,3",
            "--output",
            output,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bench -o {output} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const LAYERS: usize = 4;
/// (split, test, streams) of every row the plan above makes.
fn expected_rows() -> Vec<(usize, String, usize)> {
    let mut v = Vec::new();
    for k in [1, 3, LAYERS, 0] {
        for t in ["pp8", "tg6"] {
            for s in [1, 2] {
                v.push((k, t.to_string(), s));
            }
        }
    }
    v
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// The checks every format's rows must pass: the workload's token counts,
/// mean and sd of the samples, positive rates, ratios that agree with the
/// rows they compare with.
fn check_rows(rows: &[Row]) {
    let got: Vec<(usize, String, usize)> = rows
        .iter()
        .map(|r| (r.split, r.test.clone(), r.streams))
        .collect();
    assert_eq!(got, expected_rows());
    for r in rows {
        let what = format!("k={} {} ×{}", r.split, r.test, r.streams);
        assert_eq!(r.reps, 2, "{what}");
        assert_eq!(r.samples.len(), 2, "{what}");
        // Every repetition counted exactly the workload's tokens.
        assert_eq!(r.tokens, vec![r.streams * r.n; 2], "{what}");
        assert!(
            r.samples.iter().all(|v| v.is_finite() && *v > 0.0),
            "{what}"
        );
        let (m, sd) = mean_sd(&r.samples);
        assert!(close(r.tok_s, m), "{what}: mean {} vs {m}", r.tok_s);
        assert!(close(r.tok_s_sd, sd), "{what}: sd {} vs {sd}", r.tok_s_sd);
        assert!(r.tok_s_sd >= 0.0 && r.ttft_ms_sd >= 0.0, "{what}");
        assert!(r.ttft_ms > 0.0, "{what}");
        assert_eq!(
            r.role,
            match r.split {
                0 => Role::BOnly,
                LAYERS => Role::AOnly,
                _ => Role::Hybrid,
            }
        );
        let base = |k: usize| {
            rows.iter()
                .find(|o| o.split == k && o.test == r.test && o.streams == r.streams)
                .unwrap()
                .tok_s
        };
        let a = r.vs_a_only.expect("vs A only");
        let b = r.vs_b_only.expect("vs B only");
        assert!(close(a, r.tok_s / base(LAYERS)), "{what}: vs A {a}");
        assert!(close(b, r.tok_s / base(0)), "{what}: vs B {b}");
        // The half split (k=2) is not in this plan.
        assert_eq!(r.vs_half, None, "{what}");
        if r.kind == Kind::Pp {
            assert!(
                r.stages.a_ms > 0.0 || r.split == 0,
                "{what}: {:?}",
                r.stages
            );
        } else {
            assert!(r.stages.b_ms > 0.0, "{what}: {:?}", r.stages);
        }
        assert_eq!(r.joules_per_token, None, "no energy counter here: {what}");
    }
}

#[test]
fn headless_bench_in_every_format_parses_and_agrees_with_itself() {
    let h = tempfile::tempdir().unwrap();

    // json: the whole record.
    let out = bench(h.path(), "json");
    let rec: record::BenchRecord = serde_json::from_slice(&out.stdout).expect("json record");
    check_rows(&rec.rows);
    assert!(rec.complete);
    assert_eq!(rec.model.layers, LAYERS);
    assert_eq!(rec.shard_a_device, "CPU");
    assert_eq!(rec.shard_b_backend, "cpu");
    assert!(
        rec.machine.openvino.starts_with("2026.4"),
        "{:?}",
        rec.machine
    );
    assert!(!rec.machine.burn.is_empty() && rec.machine.burn != "unknown");
    // The CPU plan's loops as this build picks them here (AMX where present).
    let kernels = hybrid_tui::shard_b::packed::best_kernel_name();
    assert_eq!(rec.machine.cpu_kernels, kernels);
    assert!(rec.energy.starts_with("not available"), "{}", rec.energy);
    assert_eq!(rec.settings["shard_a"]["device"], "CPU");
    assert!(String::from_utf8_lossy(&out.stderr).contains("saved as run"));

    // jsonl: one row per line, the same fields.
    let out = bench(h.path(), "jsonl");
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a json line"))
        .collect();
    assert_eq!(rows.len(), expected_rows().len());
    for (v, (k, test, s)) in rows.iter().zip(expected_rows()) {
        assert_eq!(v["split"], k);
        assert_eq!(v["test"], test);
        assert_eq!(v["streams"], s);
        let samples: Vec<f64> = serde_json::from_value(v["samples"].clone()).unwrap();
        let (m, sd) = mean_sd(&samples);
        assert!(close(v["tok_s"].as_f64().unwrap(), m));
        assert!(close(v["tok_s_sd"].as_f64().unwrap(), sd));
        let n = v["n"].as_u64().unwrap() as usize;
        assert_eq!(v["tokens"], serde_json::json!([s * n, s * n]));
    }

    // csv: a header and a record per row.
    let out = bench(h.path(), "csv");
    let mut r = csv::Reader::from_reader(out.stdout.as_slice());
    let head = r.headers().unwrap().clone();
    let col = |name: &str| head.iter().position(|h| h == name).expect(name);
    let recs: Vec<csv::StringRecord> = r.records().map(|x| x.unwrap()).collect();
    assert_eq!(recs.len(), expected_rows().len());
    for (row, (k, test, s)) in recs.iter().zip(expected_rows()) {
        assert_eq!(row[col("split")].parse::<usize>().unwrap(), k);
        assert_eq!(&row[col("test")], test);
        assert_eq!(row[col("streams")].parse::<usize>().unwrap(), s);
        let samples: Vec<f64> = row[col("samples")]
            .split(';')
            .map(|x| x.parse().unwrap())
            .collect();
        let (m, _) = mean_sd(&samples);
        assert!(close(row[col("tok_s")].parse().unwrap(), m));
        let n: usize = row[col("n")].parse().unwrap();
        assert_eq!(&row[col("tokens")], format!("{};{}", s * n, s * n));
        assert_eq!(&row[col("joules_per_token")], "");
    }

    // md: llama-bench's table, then the summary.
    let out = bench(h.path(), "md");
    let text = String::from_utf8(out.stdout).unwrap();
    let table: Vec<&str> = text.lines().take_while(|l| l.starts_with('|')).collect();
    assert_eq!(table.len(), 2 + expected_rows().len(), "{text}");
    assert!(
        table[0].contains(" t/s |") && table[0].contains("vs A only"),
        "{}",
        table[0]
    );
    for (line, (k, test, s)) in table[2..].iter().zip(expected_rows()) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 15, "{line}");
        // Shard B's step on the CPU plan: its time and the largest parts
        // (which ones depends on the timing of this tiny model; A only has
        // no layers in shard B).
        assert!(
            (k == LAYERS && cells[14] == "-")
                || (cells[14].starts_with("cpu plan: ") && cells[14].contains(" streams / step (")),
            "{line}"
        );
        assert!(cells[5].starts_with(&format!("{k}/{LAYERS}")), "{line}");
        assert_eq!(cells[6], s.to_string());
        assert_eq!(cells[7], test);
        let (mean, sd) = cells[8].split_once(" ± ").expect("mean ± sd");
        assert!(mean.parse::<f64>().unwrap() > 0.0 && sd.parse::<f64>().unwrap() >= 0.0);
    }
    assert!(text.contains("best split k="), "{text}");
    assert!(text.contains("energy: not available"), "{text}");
    assert!(text.contains(&format!("CPU kernels: {kernels}")), "{text}");

    // Four runs saved, listed, compared.
    let saved = record::load(&h.path().join("data/hybrid-tui/bench/results.jsonl")).unwrap();
    assert_eq!(saved.0.len(), 4);
    assert!(saved.1.is_empty());
    let ids: std::collections::HashSet<&str> = saved.0.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids.len(), 4, "ids are unique");
    let list = cmd(h.path()).args(["bench", "--list"]).output().unwrap();
    let list = String::from_utf8(list.stdout).unwrap();
    for r in &saved.0 {
        assert!(list.contains(&r.id), "{list}");
    }
    let out = cmd(h.path())
        .args(["bench", "--compare", "last~1", "last"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let (a, b) = (&saved.0[2], &saved.0[3]);
    assert!(text.contains(&format!("A = {}", a.id)), "{text}");
    assert!(text.contains(&format!("B = {}", b.id)), "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("| tg6") || l.starts_with("| pp8"))
        .collect();
    assert_eq!(lines.len(), expected_rows().len(), "{text}");
    // Each change is B over A of the same row.
    for (line, (ra, rb)) in lines.iter().zip(a.rows.iter().zip(&b.rows)) {
        let want = (rb.tok_s / ra.tok_s - 1.0) * 100.0;
        assert!(
            line.contains(&format!("{want:+.1}%")),
            "{line} vs {want:+.1}%"
        );
    }
    cmd(h.path())
        .args(["bench", "--compare", "nope", "last"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no saved run 'nope'"));
}

#[test]
fn auto_split_searches_around_the_half_split_and_reports_its_gain() {
    let h = tempfile::tempdir().unwrap();
    let model = baked_model(Arch::Llama, "int4_sym");
    let out = cmd(h.path())
        .args(["bench", "--model"])
        .arg(&model)
        .args([
            "--pp",
            "0",
            "--tg",
            "4",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--split",
            "auto",
            "--auto-tokens",
            "4",
            "--auto-budget",
            "10m",
            "--no-baselines",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: record::BenchRecord = serde_json::from_slice(&out.stdout).unwrap();
    let a = rec.auto.expect("auto report");
    assert_eq!(a.half, 2);
    assert_eq!(a.streams, 1);
    // The half split and both neighbours were probed, nothing outside 1..=3.
    let ks: Vec<usize> = a.probes.iter().map(|p| p.k).collect();
    for k in [1, 2, 3] {
        assert!(ks.contains(&k), "{ks:?}");
    }
    assert!(ks.iter().all(|k| (1..=3).contains(k)), "{ks:?}");
    let best = a
        .probes
        .iter()
        .max_by(|x, y| x.tok_s.total_cmp(&y.tok_s))
        .unwrap();
    assert_eq!(a.best, best.k);
    let half = a.probes.iter().find(|p| p.k == 2).unwrap();
    assert!(close(a.gain_over_half, best.tok_s / half.tok_s - 1.0));
    assert!(a.gain_over_half >= 0.0);
    assert!(!a.out_of_time);
    // The table has the half split and the winner, measured in full.
    let mut splits: Vec<usize> = rec.rows.iter().map(|r| r.split).collect();
    splits.dedup();
    let mut want = vec![2, a.best];
    want.dedup();
    assert_eq!(splits, want);

    // No time at all: only the half split is probed.
    let out = cmd(h.path())
        .args(["bench", "--model"])
        .arg(&model)
        .args([
            "--pp",
            "0",
            "--tg",
            "4",
            "--reps",
            "1",
            "--warmup",
            "0",
            "--split",
            "auto",
            "--auto-budget",
            "0s",
            "--no-baselines",
            "--no-save",
            "-o",
            "json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec: record::BenchRecord = serde_json::from_slice(&out.stdout).unwrap();
    let a = rec.auto.unwrap();
    assert!(a.out_of_time);
    assert_eq!(a.probes.len(), 1);
    assert_eq!(a.best, 2);
}

#[test]
fn bad_bench_input_is_named() {
    let h = tempfile::tempdir().unwrap();
    let model = baked_model(Arch::Llama, "int4_sym");
    let run = |args: &[&str], needle: &str| {
        cmd(h.path())
            .args(["bench", "--model"])
            .arg(&model)
            .args(args)
            .assert()
            .failure()
            .stderr(predicate::str::contains(needle));
    };
    run(&["--split", "9"], "--split 9: the model has 4 layers");
    run(
        &["--split", "2-x"],
        "--split 2-x: '2-x' is not a whole number",
    );
    run(&["--pp", "8,,16"], "--pp 8,,16: '' is empty");
    run(
        &["--streams", "0"],
        "--streams: every value must be at least 1",
    );
    run(
        &["--tg", "1", "--pp", "0"],
        "tg1: tg needs at least 2 tokens",
    );
    run(
        &["--output", "xml"],
        "--output xml: choose md, csv, json or jsonl",
    );
    run(&["--auto-budget", "soon"], "--auto-budget soon");
    run(
        &["--pp", "5000"],
        "pp5000 needs 5001 positions but shard_a.kv_capacity",
    );
    cmd(h.path())
        .args(["--split", "x", "config"])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--split x: give the number of layers",
        ));
    // Nothing saved yet: --compare names the file.
    cmd(h.path())
        .args(["bench", "--compare", "last", "last~1"])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("results.jsonl")
                .and(predicate::str::contains("no bench results saved yet")),
        );
}

#[test]
fn lists_take_numbers_and_ranges_like_llama_bench() {
    assert_eq!(parse_list("--split", "8,12,16").unwrap(), vec![8, 12, 16]);
    assert_eq!(parse_list("--split", "4-7").unwrap(), vec![4, 5, 6, 7]);
    assert_eq!(
        parse_list("--split", "4-12+4,2").unwrap(),
        vec![4, 8, 12, 2]
    );
    assert_eq!(parse_list("--streams", "1, 2,2").unwrap(), vec![1, 2]);
    assert!(
        parse_list("--split", "7-4")
            .unwrap_err()
            .to_string()
            .contains("backwards")
    );
    assert!(
        parse_list("--split", "4-8+0")
            .unwrap_err()
            .to_string()
            .contains("step of 0")
    );
    assert!(
        parse_list("--pp", "a")
            .unwrap_err()
            .to_string()
            .contains("'a'")
    );
}

#[test]
fn mean_and_sd_match_a_two_pass_reference_on_random_samples() {
    let mut rng = rand::rng();
    for n in [1usize, 2, 3, 7, 50] {
        let v: Vec<f64> = (0..n).map(|_| rng.random_range(0.5..500.0)).collect();
        let (m, sd) = mean_sd(&v);
        // Reference: Welford's one-pass recurrence.
        let (mut mean, mut m2) = (0.0f64, 0.0f64);
        for (i, x) in v.iter().enumerate() {
            let d = x - mean;
            mean += d / (i + 1) as f64;
            m2 += d * (x - mean);
        }
        let sd_ref = if n > 1 {
            (m2 / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        assert!((m - mean).abs() <= 1e-9 * mean, "n={n}");
        assert!(
            (sd - sd_ref).abs() <= 1e-9 * sd_ref.max(1.0),
            "n={n}: {sd} vs {sd_ref}"
        );
    }
}

fn row(split: usize, test: &str, streams: usize, tok_s: f64) -> Row {
    Row {
        split,
        layers: 8,
        role: Role::for_split(split, 8),
        test: test.into(),
        kind: Kind::Tg,
        n: 16,
        streams,
        reps: 1,
        samples: vec![tok_s],
        tokens: vec![16 * streams],
        tok_s,
        tok_s_sd: 0.0,
        ttft_ms: 1.0,
        ttft_ms_sd: 0.0,
        stages: Stages::default(),
        joules_per_token: None,
        vs_half: None,
        vs_a_only: None,
        vs_b_only: None,
        shard_b_work: None,
    }
}

#[test]
fn ratios_compare_rows_of_the_same_test_and_concurrency() {
    let mut rng = rand::rng();
    let mut rows = Vec::new();
    for k in [0usize, 3, 4, 8] {
        for s in [1, 2] {
            rows.push(row(k, "tg16", s, rng.random_range(1.0..100.0)));
        }
    }
    record::add_ratios(&mut rows, 8);
    for r in &rows {
        let of = |k: usize| {
            rows.iter()
                .find(|o| o.split == k && o.streams == r.streams)
                .unwrap()
                .tok_s
        };
        assert!(close(r.vs_half.unwrap(), r.tok_s / of(4)));
        assert!(close(r.vs_a_only.unwrap(), r.tok_s / of(8)));
        assert!(close(r.vs_b_only.unwrap(), r.tok_s / of(0)));
    }
}

#[test]
fn rapl_packages_are_read_and_unwrapped() {
    let d = tempfile::tempdir().unwrap();
    let pc = d.path().join("sys/class/powercap");
    let zone = |name: &str, label: &str, uj: u64| {
        let z = pc.join(name);
        std::fs::create_dir_all(&z).unwrap();
        std::fs::write(z.join("name"), format!("{label}\n")).unwrap();
        std::fs::write(z.join("energy_uj"), format!("{uj}\n")).unwrap();
        std::fs::write(z.join("max_energy_range_uj"), "1000000000\n").unwrap();
    };
    zone("intel-rapl:0", "package-0", 999_000_000);
    // A sub-zone (cores) must not be added to its package.
    zone("intel-rapl:0:0", "core", 5_000);
    zone("intel-rapl:1", "psys", 7_000);
    let m = EnergyMeter::new(&Root::at(d.path()));
    assert!(m.available, "{}", m.source);
    assert_eq!(m.source, "RAPL package-0");
    let a = m.read().unwrap();
    // 2 J later, across the counter's wrap at 1000 J.
    std::fs::write(pc.join("intel-rapl:0/energy_uj"), "1000000\n").unwrap();
    let b = m.read().unwrap();
    let j = m.joules(&a, &b).unwrap();
    assert!((j - 2.0).abs() < 1e-9, "{j}");

    let none = EnergyMeter::new(&Root::at(tempfile::tempdir().unwrap().path()));
    assert!(!none.available);
    assert!(
        none.source.starts_with("not available: no RAPL powercap"),
        "{}",
        none.source
    );
    assert!(none.read().is_none());
}
