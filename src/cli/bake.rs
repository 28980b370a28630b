//! `hybrid-tui make-test-model` and `hybrid-tui bake`.

use anyhow::{Context, Result, bail};

use hybrid_tui::bake::quant::Scheme;
use hybrid_tui::bake::{Backup, BakeOptions, BakeReport, Progress, bake};
use hybrid_tui::catalog::{self, Source};
use hybrid_tui::hub::HubOptions;
use hybrid_tui::model::Arch;
use hybrid_tui::model::bert::{Pooling, is_bert_dir};
use hybrid_tui::model::test_bert::{BertPreset, TestBertOptions, make_test_bert};
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};

use super::args::{BakeArgs, MakeTestModelArgs};
use super::model::CatalogView;

pub fn cmd_make_test_model(a: MakeTestModelArgs) -> Result<()> {
    if a.arch == "bert" {
        return make_test_bert_cmd(a);
    }
    let arch = Arch::parse(&a.arch)
        .with_context(|| format!("--arch {}: expected llama, qwen2, mistral or bert", a.arch))?;
    let preset = Preset::parse(&a.preset).with_context(|| {
        format!(
            "--preset {}: expected tiny, small, llama-3.2-1b or qwen2.5-0.5b",
            a.preset
        )
    })?;
    let dtype = WeightDtype::parse(&a.dtype)
        .with_context(|| format!("--dtype {}: expected bf16, f16 or f32", a.dtype))?;
    let spec = make_test_model(
        &a.out,
        &TestModelOptions {
            arch,
            preset,
            seed: a.seed,
            dtype,
            max_shard_bytes: a.max_shard_mb.saturating_mul(1_000_000).max(1),
        },
    )?;
    println!(
        "wrote {} ({} {}, {} layers, hidden {}, {:.1}M parameters, {} weights, seed {})",
        a.out.display(),
        arch.name(),
        preset.name(),
        spec.num_layers,
        spec.hidden_size,
        spec.num_params() as f64 / 1e6,
        a.dtype,
        a.seed
    );
    Ok(())
}

fn make_test_bert_cmd(a: MakeTestModelArgs) -> Result<()> {
    let preset = BertPreset::parse(&a.preset).with_context(|| {
        format!(
            "--preset {}: a bert test model is tiny, small or bge-small",
            a.preset
        )
    })?;
    let pooling = Pooling::parse(&a.pooling)
        .with_context(|| format!("--pooling {}: expected cls or mean", a.pooling))?;
    let dtype = WeightDtype::parse(&a.dtype)
        .with_context(|| format!("--dtype {}: expected bf16, f16 or f32", a.dtype))?;
    let spec = make_test_bert(
        &a.out,
        &TestBertOptions {
            preset,
            pooling,
            seed: a.seed,
            dtype,
        },
    )?;
    println!(
        "wrote {} (bert {}, {} layers, hidden {}, {} pooling, {:.1}M parameters, {} weights, seed {})",
        a.out.display(),
        preset.name(),
        spec.num_layers,
        spec.hidden_size,
        pooling.name(),
        spec.num_params() as f64 / 1e6,
        a.dtype,
        a.seed
    );
    Ok(())
}

pub fn cmd_bake(a: BakeArgs) -> Result<()> {
    let weights = match a.weights.as_deref().map(|w| (w, Scheme::parse(w))) {
        None => None,
        Some((_, Some(s))) if s != Scheme::F32 => Some(s),
        Some((w, _)) => {
            bail!("--weights {w}: expected int4_sym, int4_asym, int8_asym, int8_sym or f16")
        }
    };
    let backup = Backup::parse(&a.backup).with_context(|| {
        format!(
            "--backup {}: expected int8_asym, int8_sym or none",
            a.backup
        )
    })?;
    let mut opts = BakeOptions {
        weights: weights.unwrap_or(Scheme::Int4Sym),
        group_size: a.group_size,
        ratio: a.ratio,
        backup,
        all_layers: a.all_layers,
        force: a.force,
        allow_non_finite: a.allow_non_finite,
    };
    let bar = indicatif::ProgressBar::hidden();
    if !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    }
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tensors {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let source = match Source::parse(&a.source).map_err(|e| anyhow::anyhow!("--model: {e}"))? {
        Source::Hub { repo, revision } => {
            let mut view = CatalogView::new();
            catalog::fetch(&HubOptions::from_env(), &repo, &revision, &mut |e| {
                view.show(e, &mut |l| eprintln!("{l}"))
            })?
        }
        Source::Dir(d) => d,
        Source::Demo => bail!(
            "--model demo: the demo model is baked by itself on first use; give a Hugging Face directory or id"
        ),
    };
    if is_bert_dir(&source) {
        // Embedding models default to INT8, the NPU's preferred form.
        opts.weights = weights.unwrap_or(Scheme::Int8Asym);
    }
    let report = bake(&source, &a.out, &opts, &mut |p| match p {
        Progress::Start { tensors } => bar.set_length(tensors as u64),
        Progress::Tensor { name } => {
            bar.set_message(name);
            bar.inc(1);
        }
    })?;
    bar.finish_and_clear();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_bake_summary(&report, &opts, is_bert_dir(&source));
    }
    Ok(())
}

pub fn print_bake_summary(r: &BakeReport, o: &BakeOptions, encoder: bool) {
    if encoder {
        println!(
            "baked {} · embedding model, {} per channel (layer norms and biases f32)",
            r.out.display(),
            o.weights.name(),
        );
    } else {
        println!(
            "baked {} · {} (group {}, ratio {}, backup {}{})",
            r.out.display(),
            o.weights.name(),
            o.group_size,
            o.ratio,
            o.backup.name(),
            if o.all_layers { ", all layers" } else { "" }
        );
    }
    println!(
        "parameters {:.2}M · {:.1} MB → {:.1} MB ({:.2}×) · {:.0}% of ratio-defining weights in {} · {:.2}s ({:.1}M parameters/s)",
        r.params as f64 / 1e6,
        r.bytes_before as f64 / 1e6,
        r.bytes_after as f64 / 1e6,
        r.bytes_before as f64 / r.bytes_after.max(1) as f64,
        r.primary_share * 100.0,
        o.weights.name(),
        r.seconds,
        r.params as f64 / 1e6 / r.seconds.max(1e-9)
    );
    println!(
        "{:<12} {:>14} {:>14}  precision",
        "block", "mean |err|", "max |err|"
    );
    for l in &r.layers {
        let prec: Vec<String> = l
            .precision
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "{:<12} {:>14.3e} {:>14.3e}  {}",
            l.block,
            l.mean_abs_error,
            l.max_abs_error,
            prec.join(" ")
        );
    }
}
