//! `hybrid-tui` without a command: the workbench on a terminal, the first run as text otherwise.

use anyhow::Result;

use hybrid_tui::catalog::{self, Fallback};
use hybrid_tui::config::Loaded;
use hybrid_tui::generate::{GenerateOptions, generate, print_summary};
use hybrid_tui::shard_b::sampling::SamplingParams;

use super::model::CatalogView;

/// Tokens the first run generates.
const FIRST_RUN_TOKENS: usize = 24;

/// The workbench on the chat screen (stdout is a terminal).
pub fn cmd_workbench(loaded: &Loaded) -> Result<()> {
    let s = &loaded.settings;
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b)?;
    // The model is resolved (fetched, made, baked) while the screen is up.
    Ok(hybrid_tui::tui::run_terminal(s, &loaded.profile)?)
}

/// Without a terminal: the same start as text (make sure a model is there,
/// generate a short chat answer through both shards, print the timings).
pub fn cmd_first_run(loaded: &Loaded) -> Result<()> {
    let s = &loaded.settings;
    println!(
        "hybrid-tui {} · profile {} · shard A on OpenVINO {} · shard B on burn {}",
        env!("CARGO_PKG_VERSION"),
        loaded.profile,
        s.shard_a.device,
        s.shard_b.backend
    );
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b)?;
    let mut view = CatalogView::new();
    let model = catalog::resolve(&s.model.source, Fallback::Demo, &mut |e| {
        view.show(e, &mut |l| println!("  • {l}"))
    })?;
    println!(
        "  • chat prompt through shard A (executive process) → shared memory → shard B, greedy:"
    );
    let opts = GenerateOptions {
        model: None,
        prompt: "Hello! What can you do?".into(),
        chat: true,
        system: None,
        max_new_tokens: FIRST_RUN_TOKENS,
        sampling: SamplingParams::greedy(),
        stop_strings: Vec::new(),
        ignore_eos: false,
        streams: 1,
        json: false,
    };
    let mut out = std::io::stdout();
    let mut err = std::io::stdout();
    let summary = generate(s, &model, &opts, &mut out, &mut err)?;
    print_summary(&summary, &mut err)?;
    if catalog::demo::is_demo(&model) {
        println!(
            "  • the demo model has random weights: its answers are noise; bake a real model for real answers"
        );
    }
    Ok(())
}
