//! `hybrid-tui index` and `hybrid-tui search`: the embedding model over
//! files, and queries against what it indexed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use hybrid_tui::config::Loaded;
use hybrid_tui::embed::chunk::ChunkOptions;
use hybrid_tui::embed::index::{Index, IndexEvent, IndexReport, default_name, index_dir, list};
use hybrid_tui::embed::{Embedder, TextKind};

use super::args::{IndexArgs, SearchArgs};
use super::model::CatalogView;

fn start_embedder(loaded: &Loaded) -> Result<Embedder> {
    let mut view = CatalogView::new();
    let e = Embedder::start(&loaded.settings, &mut |ev| {
        view.show(ev, &mut |l| eprintln!("{l}"))
    })?;
    eprintln!(
        "embedding model {} on {} ({} dimensions)",
        e.model_name(),
        e.device,
        e.dim()
    );
    Ok(e)
}

fn print_report(r: &IndexReport, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(r)?);
    } else {
        println!(
            "index {}: {} files ({} indexed, {} unchanged, {} removed, {} binary and {} large skipped), {} chunks added, {} in the index · {:.1}s, {:.1} chunks/s, {:.1} docs/s",
            r.name,
            r.files,
            r.indexed,
            r.unchanged,
            r.removed,
            r.skipped_binary,
            r.skipped_large,
            r.chunks_added,
            r.chunks_total,
            r.seconds,
            r.chunks_per_s,
            r.docs_per_s
        );
    }
    Ok(())
}

pub fn cmd_index(loaded: &Loaded, a: IndexArgs) -> Result<()> {
    if a.list {
        for name in list()? {
            let idx = Index::open(&name, false)?;
            let (files, chunks) = idx.counts()?;
            let model = idx.model()?.map(|(m, _)| m).unwrap_or_default();
            println!("{name}\t{files} files\t{chunks} chunks\t{model}");
        }
        return Ok(());
    }
    if a.paths.is_empty() {
        bail!("give the folders or files to index: hybrid-tui index PATH... [--name N]");
    }
    for p in &a.paths {
        if !p.exists() {
            bail!("{}: no such file or directory to index", p.display());
        }
    }
    let name = a.name.clone().unwrap_or_else(|| default_name(&a.paths[0]));
    let mut idx = Index::open(&name, true)?;
    let mut embedder = start_embedder(loaded)?;
    idx.bind_model(&embedder.model_name(), embedder.dim(), a.rebuild)?;
    let opts = ChunkOptions::from_settings(&loaded.settings.embed);
    let bar = indicatif::ProgressBar::hidden();
    if !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let mut chunks = 0usize;
    let mut pass = |idx: &mut Index, embedder: &mut Embedder| -> Result<IndexReport> {
        let r = idx.update(&a.paths, embedder, &opts, &mut |ev| match ev {
            IndexEvent::Found { files } => bar.set_length(files as u64),
            IndexEvent::File {
                done, chunks: c, ..
            } => {
                chunks += c;
                bar.set_position(done as u64);
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "{chunks} chunks, {:.1} chunks/s",
                    chunks as f64 / secs
                ));
            }
            IndexEvent::Skipped { path, why } => {
                tracing::info!(path = %path.display(), "not indexed: {why}")
            }
            IndexEvent::Removed { path } => {
                tracing::info!(path = %path.display(), "dropped from the index")
            }
        });
        Ok(r?)
    };
    let report = pass(&mut idx, &mut embedder)?;
    bar.finish_and_clear();
    print_report(&report, a.json)?;
    if a.watch {
        watch(&a.paths, &mut || {
            let r = pass(&mut idx, &mut embedder)?;
            if r.indexed + r.removed > 0 {
                print_report(&r, a.json)?;
            }
            Ok(())
        })?;
    }
    embedder.shutdown();
    Ok(())
}

/// Run `again` after each burst of changes under `paths` (notify, 300 ms
/// debounce) until SIGINT/SIGTERM.
fn watch(paths: &[PathBuf], again: &mut dyn FnMut() -> Result<()>) -> Result<()> {
    use notify::{RecursiveMode, Watcher};
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    })
    .context("starting the file watcher")?;
    for p in paths {
        watcher
            .watch(p, RecursiveMode::Recursive)
            .with_context(|| format!("watching {}", p.display()))?;
    }
    eprintln!("watching for changes (Ctrl-C to stop)");
    while !hybrid_tui::supervisor::interrupted() {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(()) => {
                // Let a burst of changes settle, then one pass for all.
                std::thread::sleep(Duration::from_millis(300));
                while rx.try_recv().is_ok() {}
                again()?;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    Ok(())
}

pub fn cmd_search(loaded: &Loaded, a: SearchArgs) -> Result<()> {
    let name = match a.index {
        Some(n) => n,
        None => {
            let names = list()?;
            match names.as_slice() {
                [one] => one.clone(),
                [] => bail!(
                    "no index yet in {}: make one with `hybrid-tui index PATH`",
                    index_dir()?.display()
                ),
                many => bail!(
                    "several indexes ({}): choose one with --index NAME",
                    many.join(", ")
                ),
            }
        }
    };
    let idx = Index::open(&name, false)?;
    let mut embedder = start_embedder(loaded)?;
    idx.check_model(&embedder.model_name(), embedder.dim())?;
    let k = a.k.unwrap_or(loaded.settings.embed.top_k);
    let query = embedder
        .embed(&[a.query.as_str()], TextKind::Query)?
        .pop()
        .context("no vector for the query")?;
    let t0 = Instant::now();
    let hits = idx.search(&query, k)?;
    let search_ms = t0.elapsed().as_secs_f64() * 1e3;
    embedder.shutdown();
    if a.json {
        let v = serde_json::json!({"index": name, "query": a.query, "search_ms": search_ms, "hits": hits});
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    for (i, h) in hits.iter().enumerate() {
        println!(
            "{:>2}. {:.4}  {}:{}-{}",
            i + 1,
            h.score,
            h.path,
            h.start_line,
            h.end_line
        );
        for line in h.text.lines().take(4) {
            println!("      {line}");
        }
    }
    if hits.is_empty() {
        println!("index {name} is empty");
    }
    Ok(())
}
