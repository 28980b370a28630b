//! `hybrid-tui serve`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use hybrid_tui::config::Loaded;
use hybrid_tui::serve::{self, Notice, ServeOptions};

use super::args::ServeArgs;
use super::model::model_for;

pub fn cmd_serve(loaded: &Loaded, a: ServeArgs) -> Result<()> {
    let s = &loaded.settings;
    let source = a.model.clone().unwrap_or_else(|| s.model.source.clone());
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b)?;
    let model_dir = model_for(s, a.model.as_deref())?;
    let mut opts = ServeOptions::from_settings(
        s,
        serve::model_id(&source, &model_dir),
        serve::created(&model_dir),
    );
    if let Some(h) = a.host {
        opts.host = h;
    }
    if let Some(p) = a.port {
        opts.port = p;
    }
    match a.parallel {
        Some(0) => bail!("--parallel 0: give at least 1 stream"),
        Some(n) => opts.parallel = n,
        None => {}
    }
    if let Some(q) = a.queue {
        opts.queue = q;
    }
    let key_file = a.api_key_file.or_else(|| {
        (!s.server.api_key_file.is_empty()).then(|| s.server.api_key_file.clone().into())
    });
    opts.api_key = match (a.api_key, key_file) {
        (Some(k), _) => Some(k),
        (None, Some(f)) => Some(serve::key_from_file(&f)?),
        (None, None) => None,
    };
    if opts.api_key.as_ref().is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key: the key is empty");
    }
    if !opts.is_loopback() && opts.api_key.is_none() {
        eprintln!(
            "warning: serving on {} without an API key: anyone who can reach this address can use the model (give --api-key-file FILE)",
            opts.host
        );
    }
    let notice: serve::NoticeSink = Arc::new(|n: Notice| match n {
        Notice::Listening(addr) => {
            eprintln!("serve: listening on http://{addr}/v1 (loading the model)")
        }
        Notice::Ready(what) => eprintln!("serve: ready: {what}"),
        Notice::Request(line) => eprintln!("{line}"),
        Notice::Draining(n) => eprintln!("serve: shutting down: {n} requests in flight"),
        Notice::Lost(why) => eprintln!("serve: shard A's executive was lost ({why})"),
        Notice::Restarting(n) => {
            eprintln!("serve: restarting the executive (attempt {n}); streams resume after it")
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let shutdown = async {
        while !hybrid_tui::supervisor::interrupted() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    rt.block_on(serve::run(s, &model_dir, opts, shutdown, notice))?;
    Ok(())
}
