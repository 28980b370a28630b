//! `hybrid-tui bench`: the plan from the flags, the live screen or a table, the saved runs.

use anyhow::{Context, Result, bail};

use hybrid_tui::config::Loaded;

use super::args::{BenchArgs, Global};
use super::model::model_for;

/// The bench plan from the command line.
pub fn bench_plan(a: &BenchArgs, g: &Global) -> Result<hybrid_tui::bench::Plan> {
    use hybrid_tui::bench::{AutoOptions, Kind, Plan, Splits, Test, parse_list};
    let list = parse_list;
    let mut tests = Vec::new();
    for n in list("--pp", &a.pp)?.into_iter().filter(|n| *n > 0) {
        tests.push(Test { kind: Kind::Pp, n });
    }
    for n in list("--tg", &a.tg)?.into_iter().filter(|n| *n > 0) {
        tests.push(Test { kind: Kind::Tg, n });
    }
    let streams = list("--streams", &a.streams)?;
    if streams.contains(&0) {
        bail!("--streams: every value must be at least 1");
    }
    let splits = match g.split.as_deref() {
        None => Splits::Configured,
        Some("auto") => Splits::Auto,
        Some(v) => Splits::List(list("--split", v)?),
    };
    let budget = humantime::parse_duration(&a.auto_budget)
        .map_err(|e| anyhow::anyhow!("--auto-budget {}: {e} (e.g. 5m, 90s)", a.auto_budget))?;
    let auto_streams = a
        .auto_streams
        .unwrap_or_else(|| streams.iter().copied().max().unwrap_or(1));
    if auto_streams == 0 {
        bail!("--auto-streams must be at least 1");
    }
    if a.auto_tokens < 4 {
        bail!(
            "--auto-tokens {}: a probe needs at least 4 tokens",
            a.auto_tokens
        );
    }
    Ok(Plan {
        tests,
        reps: a.reps,
        warmup: a.warmup,
        streams,
        splits,
        baselines: !a.no_baselines,
        auto: AutoOptions {
            streams: auto_streams,
            budget,
            probe_tokens: a.auto_tokens,
        },
        tg_prompt: a.tg_prompt.max(1),
    })
}

/// `hybrid-tui bench`: run (live screen or headless), list or compare runs.
pub fn cmd_bench(loaded: &Loaded, g: &Global, a: BenchArgs, screen: bool) -> Result<()> {
    use hybrid_tui::bench::format::{self, Output};
    use hybrid_tui::bench::{self, BenchEvent, record};
    if a.embed {
        return embed_bench(loaded, &a);
    }
    let results = record::results_file()
        .ok_or_else(|| anyhow::anyhow!("no data directory: set HOME or XDG_DATA_HOME"))?;
    if a.list || a.compare.is_some() {
        let (runs, skipped) = record::load(&results)?;
        for s in skipped {
            eprintln!("warning: skipped a line that is not a bench run: {s}");
        }
        if let Some(c) = &a.compare {
            let find = |k: &str| record::find(&runs, k);
            let (ra, rb) = (find(&c[0])?, find(&c[1])?);
            let (rows, notes) = record::compare(ra, rb);
            print!("{}", format::comparison(ra, rb, &rows, &notes));
            return Ok(());
        }
        println!(
            "{:<16} {:<21} {:<36} {:<8} {:<8} {:>5}  tests",
            "id", "time", "model", "shard A", "shard B", "rows"
        );
        for r in &runs {
            println!(
                "{:<16} {:<21} {:<36} {:<8} {:<8} {:>5}  {}{}",
                r.id,
                r.time,
                r.model.name,
                r.shard_a_device,
                r.shard_b_backend,
                r.rows.len(),
                r.plan.tests.join(","),
                if r.complete { "" } else { " (stopped early)" }
            );
        }
        return Ok(());
    }
    let output = a.output.as_deref().map(Output::parse).transpose()?;
    let plan = bench_plan(&a, g)?;
    let s = &loaded.settings;
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b)?;
    let model_dir = model_for(s, a.model.as_deref())?;
    let no_save = a.no_save;
    let path = results.clone();
    let save = move |rec: &mut record::BenchRecord| -> String {
        if no_save {
            return format!("run {} not saved (--no-save)", rec.id);
        }
        match record::append(&path, rec) {
            Ok(()) => format!("saved as run {} in {}", rec.id, path.display()),
            Err(e) => format!("could not save the run to {}: {e}", path.display()),
        }
    };
    let (rec, saved) = if screen {
        match hybrid_tui::tui::run_bench_screen(s, &loaded.profile, model_dir, plan, save)? {
            Some(r) => r,
            None => bail!("the bench ended without results"),
        }
    } else {
        let mut current = String::new();
        let mut sink = |e: BenchEvent| match e {
            BenchEvent::Loading { k, role } => {
                eprintln!("bench: split k={k} ({role:?}): loading shard B, compiling shard A")
            }
            BenchEvent::RunStarted {
                k,
                test,
                streams,
                rep,
                reps,
            } => {
                current = format!(
                    "k={k} {} ×{streams} {}",
                    test.name(),
                    match rep {
                        Some(r) => format!("rep {}/{reps}", r + 1),
                        None => "warm-up".into(),
                    }
                )
            }
            BenchEvent::RunDone { tok_s, .. } => eprintln!("bench: {current}: {tok_s:.2} t/s"),
            BenchEvent::Probe(p) => {
                eprintln!("bench: auto-split probe k={}: {:.2} t/s", p.k, p.tok_s)
            }
            BenchEvent::Auto(r) => eprintln!(
                "bench: auto-split picked k={} ({:+.1}% over the half split k={})",
                r.best,
                r.gain_over_half * 100.0,
                r.half
            ),
            _ => {}
        };
        let rec = bench::run(
            s,
            &loaded.profile,
            &model_dir,
            &plan,
            bench::StopFlag::default(),
            &mut sink,
        )?;
        let mut rec = rec;
        let saved = save(&mut rec);
        (rec, saved)
    };
    let text = format::render(&rec, output.unwrap_or(Output::Md))?;
    print!("{text}");
    eprintln!("{saved}");
    if !rec.complete {
        bail!(
            "the bench stopped early: {}",
            rec.error.clone().unwrap_or_else(|| "stopped".into())
        );
    }
    Ok(())
}

/// `bench --embed`: a table (or JSON with `-o json`).
fn embed_bench(loaded: &Loaded, a: &BenchArgs) -> Result<()> {
    use hybrid_tui::bench::embed::{EmbedBenchOptions, run};
    let batches = a
        .embed_batches
        .split(',')
        .map(|b| b.trim().parse::<usize>().ok().filter(|&b| b > 0))
        .collect::<Option<Vec<_>>>()
        .with_context(|| {
            format!(
                "--embed-batches {}: give sizes like 1,8,32",
                a.embed_batches
            )
        })?;
    let llm_tokens: usize =
        a.tg.split(',')
            .next()
            .and_then(|t| t.trim().parse().ok())
            .with_context(|| format!("--tg {}: a token count", a.tg))?;
    let llm = if llm_tokens > 0 {
        Some(super::model::model_for(
            &loaded.settings,
            a.model.as_deref(),
        )?)
    } else {
        None
    };
    let opts = EmbedBenchOptions {
        load_batch: batches
            .iter()
            .copied()
            .find(|&b| b == 8)
            .unwrap_or(batches[0]),
        batches,
        tokens: a.embed_tokens,
        texts: a.embed_texts,
        reps: a.reps,
        llm_tokens,
    };
    let r = run(&loaded.settings, llm.as_deref(), &opts)?;
    if a.output.as_deref() == Some("json") {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    println!(
        "embedding model {} on {} ({} dimensions), {} tokens a text",
        r.model, r.device, r.dim, r.tokens_per_text
    );
    println!("| batch | when | embeddings/s | tokens/s | ms/batch |");
    println!("| ---: | --- | ---: | ---: | ---: |");
    for row in &r.rows {
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.1} |",
            row.batch, row.when, row.embeddings_per_s, row.tokens_per_s, row.ms_per_batch
        );
    }
    if let (Some(x), Some(y)) = (r.llm_decode_tok_s_alone, r.llm_decode_tok_s_indexing) {
        println!(
            "chat model decode: {x:.1} tok/s alone, {y:.1} tok/s while indexing ({:+.0}%)",
            (y / x - 1.0) * 100.0
        );
    }
    Ok(())
}
