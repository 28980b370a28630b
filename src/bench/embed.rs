//! `hybrid-tui bench --embed`: the embedding model's throughput at several
//! batch sizes, alone and while the chat model decodes, and the chat
//! model's decode speed with and without an indexing load beside it.
//!
//! Each text is random corpus words cut to `tokens` of the embedding
//! model's tokens ([CLS] and [SEP] included). A batch size's figure is the
//! best of `reps` timed passes over `texts` texts, after one untimed pass
//! (compile and warm-up). "While the LLM decodes": `generate` runs the chat
//! model (its own executive, shard B here) for `llm_tokens` tokens, once
//! alone and once with a thread embedding batches of `load_batch` texts as
//! fast as it can beside it; both speeds are reported. The load's rate is
//! over the chat model's whole run (its start, prefill and decode).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::config::Settings;
use crate::embed::{EmbedError, Embedder, TextKind};
use crate::generate::{GenerateError, GenerateOptions, generate};
use crate::model::test_model::CORPUS;
use crate::shard_b::sampling::SamplingParams;

#[derive(Debug, thiserror::Error)]
pub enum EmbedBenchError {
    #[error(transparent)]
    Embed(#[from] EmbedError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
}

#[derive(Debug, Clone)]
pub struct EmbedBenchOptions {
    pub batches: Vec<usize>,
    /// Tokens per text.
    pub tokens: usize,
    /// Texts per timed pass.
    pub texts: usize,
    pub reps: usize,
    /// The chat model's decode run (0 skips the runs beside the LLM).
    pub llm_tokens: usize,
    /// Batch size of the indexing load beside the LLM.
    pub load_batch: usize,
}

/// One batch size's throughput.
#[derive(Debug, Clone, Serialize)]
pub struct EmbedRow {
    pub batch: usize,
    /// "alone" or "beside the LLM".
    pub when: String,
    pub embeddings_per_s: f64,
    pub tokens_per_s: f64,
    /// Milliseconds per call (one batch).
    pub ms_per_batch: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EmbedBenchReport {
    pub model: String,
    pub device: String,
    pub dim: usize,
    pub tokens_per_text: usize,
    pub rows: Vec<EmbedRow>,
    /// The chat model's decode tok/s alone and with the indexing load.
    pub llm_decode_tok_s_alone: Option<f64>,
    pub llm_decode_tok_s_indexing: Option<f64>,
}

/// `n` texts of `tokens` tokens each (the embedding model's count).
fn texts(embedder: &Embedder, n: usize, tokens: usize, seed: u64) -> Vec<String> {
    let words: Vec<&str> = CORPUS.split_whitespace().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let body = tokens.saturating_sub(2).max(1);
    (0..n)
        .map(|_| {
            let mut t = String::new();
            while embedder.tokenizer().count(&t) < body {
                t.push_str(words[rng.random_range(0..words.len())]);
                t.push(' ');
            }
            t
        })
        .collect()
}

/// The best of `reps` timed passes over `texts`, in seconds (after one untimed).
fn timed(embedder: &mut Embedder, texts: &[String], reps: usize) -> Result<f64, EmbedError> {
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    embedder.embed(&refs, TextKind::Document)?;
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        let t0 = Instant::now();
        embedder.embed(&refs, TextKind::Document)?;
        best = best.min(t0.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn row(batch: usize, when: &str, secs: f64, texts: usize, tokens: usize) -> EmbedRow {
    EmbedRow {
        batch,
        when: when.into(),
        embeddings_per_s: texts as f64 / secs,
        tokens_per_s: (texts * tokens) as f64 / secs,
        ms_per_batch: secs * 1e3 / texts.div_ceil(batch).max(1) as f64,
    }
}

fn with_batch(settings: &Settings, batch: usize) -> Settings {
    let mut s = settings.clone();
    s.embed.batch = batch;
    s
}

/// Run the benchmark; `llm` is the chat model's baked directory (None
/// skips the runs beside it).
pub fn run(
    settings: &Settings,
    llm: Option<&Path>,
    opts: &EmbedBenchOptions,
) -> Result<EmbedBenchReport, EmbedBenchError> {
    let mut rows = Vec::new();
    let mut report = EmbedBenchReport {
        model: String::new(),
        device: String::new(),
        dim: 0,
        tokens_per_text: opts.tokens,
        rows: Vec::new(),
        llm_decode_tok_s_alone: None,
        llm_decode_tok_s_indexing: None,
    };
    for &b in &opts.batches {
        let mut e = Embedder::start(&with_batch(settings, b), &mut |_| {})?;
        let t = texts(&e, opts.texts.max(b), opts.tokens, 7);
        let secs = timed(&mut e, &t, opts.reps)?;
        rows.push(row(b, "alone", secs, t.len(), opts.tokens));
        (report.model, report.device, report.dim) = (e.model_name(), e.device.clone(), e.dim());
        e.shutdown();
    }
    if let (Some(dir), true) = (llm, opts.llm_tokens > 0) {
        let gen_opts = GenerateOptions {
            model: None,
            prompt: "Tell me about the sea and the ships that cross it.".into(),
            chat: false,
            system: None,
            max_new_tokens: opts.llm_tokens,
            sampling: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            stop_strings: Vec::new(),
            ignore_eos: true,
            streams: 1,
            json: true,
        };
        let decode = |s: &crate::generate::GenerateSummary| {
            s.streams
                .first()
                .map(|r| r.metrics.decode_tok_s)
                .unwrap_or(0.0)
        };
        let alone = generate(
            settings,
            dir,
            &gen_opts,
            &mut std::io::sink(),
            &mut std::io::sink(),
        )?;
        report.llm_decode_tok_s_alone = Some(decode(&alone));
        // The indexing load: its own embedder, batches back to back.
        let mut e = Embedder::start(&with_batch(settings, opts.load_batch), &mut |_| {})?;
        let t = texts(&e, opts.load_batch, opts.tokens, 11);
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicU64::new(0));
        let load = {
            let (stop, done) = (stop.clone(), done.clone());
            std::thread::spawn(move || -> Result<f64, EmbedError> {
                let refs: Vec<&str> = t.iter().map(String::as_str).collect();
                e.embed(&refs, TextKind::Document)?;
                let t0 = Instant::now();
                while !stop.load(Ordering::SeqCst) {
                    e.embed(&refs, TextKind::Document)?;
                    done.fetch_add(refs.len() as u64, Ordering::SeqCst);
                }
                let secs = t0.elapsed().as_secs_f64();
                e.shutdown();
                Ok(secs)
            })
        };
        // Let the load reach its pace before the LLM starts.
        while done.load(Ordering::SeqCst) == 0 && !load.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let before = done.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let busy = generate(
            settings,
            dir,
            &gen_opts,
            &mut std::io::sink(),
            &mut std::io::sink(),
        );
        let span = t0.elapsed().as_secs_f64();
        let during = done.load(Ordering::SeqCst) - before;
        stop.store(true, Ordering::SeqCst);
        let loaded = load.join().unwrap_or_else(|_| {
            Err(EmbedError::Failed(
                "the indexing load's thread panicked".into(),
            ))
        });
        let busy = busy?;
        loaded?;
        report.llm_decode_tok_s_indexing = Some(decode(&busy));
        rows.push(row(
            opts.load_batch,
            "beside the LLM",
            span,
            during as usize,
            opts.tokens,
        ));
    }
    report.rows = rows;
    Ok(report)
}
