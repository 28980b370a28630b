//! `hybrid-tui generate`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use hybrid_tui::config::Loaded;
use hybrid_tui::generate::{GenerateOptions, generate, print_summary};
use hybrid_tui::shard_b::sampling::SamplingParams;

use hybrid_tui::embed::Embedder;
use hybrid_tui::embed::index::{Hit, Index};
use hybrid_tui::embed::retrieve::{augment, retrieve, source_label};

use super::args::GenerateArgs;
use super::model::model_for;

pub fn cmd_generate(loaded: &Loaded, a: GenerateArgs) -> Result<()> {
    let s = &loaded.settings;
    let prompt = match (&a.prompt, &a.prompt_file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                .context("reading the prompt from stdin")?;
            t
        }
        (None, Some(f)) => {
            std::fs::read_to_string(f).with_context(|| format!("--prompt-file {}", f.display()))?
        }
        (None, None) => bail!("give --prompt TEXT or --prompt-file FILE"),
    };
    if a.streams == 0 {
        bail!("--streams must be at least 1");
    }
    if a.n == 0 {
        bail!("-n/--max-tokens 0: nothing to generate; give at least 1");
    }
    let sampling = SamplingParams {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
        seed: a.seed,
        ..SamplingParams::default()
    };
    if let Err(e) = sampling.validate() {
        bail!("--{} {}: {}", e.param.replace('_', "-"), e.value, e.allowed);
    }
    // Retrieval first: the embedding model's executive is done before
    // the chat model's starts.
    let (prompt, sources) = match &a.index {
        Some(name) => with_sources(loaded, name, &prompt)?,
        None => (prompt, Vec::new()),
    };
    // Before a bake can start rayon's pool with default settings.
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b)?;
    let model_dir = model_for(s, a.model.as_deref())?;
    let opts = GenerateOptions {
        model: a.model.as_ref().map(PathBuf::from),
        prompt,
        chat: a.chat,
        system: a.system.clone(),
        max_new_tokens: a.n,
        sampling,
        stop_strings: a.stop.clone(),
        ignore_eos: a.ignore_eos,
        streams: a.streams,
        json: a.json,
    };
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let summary = generate(s, &model_dir, &opts, &mut out, &mut err)?;
    if a.json {
        let mut v = serde_json::to_value(&summary)?;
        if a.index.is_some() {
            v["sources"] = serde_json::to_value(&sources)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        if !sources.is_empty() {
            println!("\nSources:");
            for (i, h) in sources.iter().enumerate() {
                println!("  [{}] {} ({:.3})", i + 1, source_label(h), h.score);
            }
        }
        print_summary(&summary, &mut err)?;
    }
    if let Some(e) = summary.streams.iter().find_map(|r| r.error.clone()) {
        bail!("{e}");
    }
    Ok(())
}

/// The prompt with index `name`'s top chunks before it, and those chunks.
fn with_sources(loaded: &Loaded, name: &str, prompt: &str) -> Result<(String, Vec<Hit>)> {
    let index = Index::open(name, false)?;
    let mut embedder = Embedder::start(&loaded.settings, &mut |e| {
        tracing::info!("embed.model: {e:?}")
    })?;
    let hits = retrieve(&mut embedder, &index, prompt, loaded.settings.embed.top_k);
    embedder.shutdown();
    let hits = hits?;
    Ok((augment(prompt, &hits), hits))
}
