//! `hybrid-tui generate`.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};

use hybrid_tui::config::Loaded;
use hybrid_tui::generate::{GenerateOptions, generate, print_summary};
use hybrid_tui::shard_b::sampling::SamplingParams;

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
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        print_summary(&summary, &mut err)?;
    }
    if let Some(e) = summary.streams.iter().find_map(|r| r.error.clone()) {
        bail!("{e}");
    }
    Ok(())
}
