//! `hybrid-tui`: the command-line front end.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use hybrid_tui::bake::quant::Scheme;
use hybrid_tui::bake::{Backup, BakeOptions, BakeReport, Progress, bake};
use hybrid_tui::catalog::{self, CatalogEvent, Fallback, Source};
use hybrid_tui::config::{CliLayer, Loaded, Settings, SettingsEnv, parse_override};
use hybrid_tui::generate::{GenerateOptions, generate, print_summary};
use hybrid_tui::hub::HubOptions;
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};
use hybrid_tui::shard_b::sampling::SamplingParams;

#[derive(Parser, Debug)]
#[command(
    name = "hybrid-tui",
    version,
    about = "Run an LLM split across an NPU (OpenVINO) and a GPU (burn)",
    long_about = "Run an LLM split across two accelerators: shard A on OpenVINO (NPU by default), shard B on burn (GPU through Vulkan, or the CPU). Without a subcommand: make sure a model is there (the demo model is made and baked on first use) and run a chat prompt through shard A."
)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Debug)]
struct Global {
    /// Settings profile: cpu (default), core-ultra, core-ultra-dgpu, vulkan, or a user profile.
    #[arg(long, global = true, env = "HYBRID_TUI_PROFILE")]
    profile: Option<String>,
    /// Settings file instead of $XDG_CONFIG_HOME/hybrid-tui/config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Set any setting: --set shard_a.device=NPU (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Shard A's OpenVINO device (same as --set shard_a.device=...).
    #[arg(long, global = true)]
    device: Option<String>,
    /// Layers in shard A (same as --set split.layers=...). `bench` also takes lists (8,12,16), ranges (4-12, 4-12+2) and auto.
    #[arg(long, global = true, value_name = "K")]
    split: Option<String>,
    /// Model: a baked directory, a Hugging Face id (org/name[@revision]), or "demo" (same as --set model.source=...).
    #[arg(long)]
    model: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the effective settings and where each value came from.
    Config {
        /// Print as JSON instead of annotated TOML.
        #[arg(long)]
        json: bool,
    },
    /// Write a Hugging Face model directory with random weights (for tests and demos).
    MakeTestModel(MakeTestModelArgs),
    /// Compress a Hugging Face model (data-free, NNCF's semantics) into a baked directory.
    Bake(BakeArgs),
    /// Generate text headless: shard A in the executive, shard B here, streamed to stdout.
    Generate(GenerateArgs),
    /// List the models on disk (baked, demo, Hugging Face downloads) or remove one.
    Models(ModelsArgs),
    /// Benchmark the split: prefill (pp) and decode (tg) over splits, streams and both single-device baselines, live on a terminal; a table (md, csv, json, jsonl) otherwise. Every run is saved for --compare.
    Bench(BenchArgs),
    /// Check the hardware (NPU, GPUs, drivers, OpenVINO, shared memory, memory, disk) and recommend a profile. Live screen on a terminal; text otherwise; exit code 1 when a check fails.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
struct ModelsArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    /// Remove the entry of this name (as listed). Downloads are removed from the Hugging Face cache, which other tools share.
    #[arg(long, value_name = "NAME")]
    remove: Option<String>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Baked model directory, a Hugging Face directory, or a Hub id org/name[@revision]. Default: the model.source setting.
    #[arg(long = "model", id = "bench_model", value_name = "DIR|ORG/NAME")]
    model: Option<String>,
    /// Prompt-processing tests: prompt sizes (list or ranges, llama-bench style); "0" for none.
    #[arg(long, default_value = "512", value_name = "N[,N...]")]
    pp: String,
    /// Generation tests: tokens to generate (list or ranges); "0" for none.
    #[arg(long, default_value = "128", value_name = "N[,N...]")]
    tg: String,
    /// Measured repetitions of each test.
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Unmeasured runs before the repetitions of each test.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Concurrent streams (list), e.g. 1,2,4.
    #[arg(long, default_value = "1", value_name = "S[,S...]")]
    streams: String,
    /// Leave out the baselines (whole model on shard A's device, k = L; whole model on shard B's backend, k = 0).
    #[arg(long)]
    no_baselines: bool,
    /// Prompt tokens before a tg test's generation.
    #[arg(long, default_value_t = 8)]
    tg_prompt: usize,
    /// --split auto: optimize at this many streams (1 = latency of one stream). Default: the largest of --streams.
    #[arg(long, value_name = "S")]
    auto_streams: Option<usize>,
    /// --split auto: time budget of the search (e.g. 5m, 90s).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    auto_budget: String,
    /// --split auto: tokens generated per stream in a probe.
    #[arg(long, default_value_t = 16, value_name = "N")]
    auto_tokens: usize,
    /// Print the results as md (llama-bench's table), csv, json or jsonl instead of the live screen.
    #[arg(long, short = 'o', value_name = "FORMAT")]
    output: Option<String>,
    /// Do not append this run to the results file.
    #[arg(long)]
    no_save: bool,
    /// Print the change between two saved runs (ids as listed by --list, a unique prefix, last, last~1).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    compare: Option<Vec<String>>,
    /// List the saved runs.
    #[arg(long)]
    list: bool,
}

#[derive(Args, Debug)]
struct CheckArgs {
    /// Print the report as JSON (for scripts and bug reports).
    #[arg(long)]
    json: bool,
    /// Print plain text even on a terminal.
    #[arg(long, conflicts_with = "json")]
    text: bool,
    /// Read sysfs/procfs/dev from this recorded tree instead of / (tests, bug reports).
    #[arg(long, value_name = "DIR", hide = true)]
    sysroot: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// Baked model directory, a Hugging Face directory, or a Hub id org/name[@revision] (fetched into the Hugging Face cache; baked into ours on first use and reused). Default: the model.source setting.
    #[arg(long = "model", id = "gen_model", value_name = "DIR|ORG/NAME")]
    model: Option<String>,
    /// The prompt.
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    prompt: Option<String>,
    /// Read the prompt from a file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    prompt_file: Option<PathBuf>,
    /// Apply the model's chat template (the prompt is the user's message).
    #[arg(long)]
    chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    system: Option<String>,
    /// Most tokens to generate per stream.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    n: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Keep the smallest set of tokens with this much probability (1 = off).
    #[arg(long, default_value_t = 0.9)]
    top_p: f32,
    /// Drop tokens below this share of the top token's probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    min_p: f32,
    /// > 1 discourages tokens already in the context.
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f32,
    /// Seed of the sampler (stream i uses seed + i).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    stop: Vec<String>,
    /// Do not stop at end-of-sequence tokens (fixed-length runs).
    #[arg(long)]
    ignore_eos: bool,
    /// Run S copies of the prompt in parallel.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// Print token ids, text and metrics as JSON at the end instead of streaming text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct MakeTestModelArgs {
    /// llama, qwen2 or mistral.
    #[arg(long, default_value = "llama")]
    arch: String,
    /// tiny, small, llama-3.2-1b or qwen2.5-0.5b.
    #[arg(long, default_value = "tiny")]
    preset: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Weight dtype: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    dtype: String,
    /// Split the weights into shards with an index above this size.
    #[arg(long, default_value_t = 2000)]
    max_shard_mb: u64,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args, Debug)]
struct BakeArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer files), or a Hub id org/name[@revision] (fetched into the Hugging Face cache first).
    #[arg(long = "model", id = "bake_model", value_name = "DIR|ORG/NAME")]
    source: String,
    /// Output directory (written aside, then renamed into place).
    #[arg(long)]
    out: PathBuf,
    /// int4_sym, int4_asym, int8_asym, int8_sym or f16.
    #[arg(long, default_value = "int4_sym")]
    weights: String,
    /// Group size of 4-bit weights: 128 (default), another divisor of the input size, or -1 per channel.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    group_size: i64,
    /// Share of the decoder weights in the primary precision (NNCF's ratio).
    #[arg(long, default_value_t = 1.0)]
    ratio: f64,
    /// Precision of the rest: int8_asym, int8_sym or none (f16).
    #[arg(long, default_value = "int8_asym")]
    backup: String,
    /// Embeddings and lm_head in the primary precision too.
    #[arg(long)]
    all_layers: bool,
    /// Replace an existing output directory.
    #[arg(long)]
    force: bool,
    /// Bake weights that hold NaN or infinite values (refused otherwise: the model would emit garbage).
    #[arg(long)]
    allow_non_finite: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

fn load_settings(g: &Global, bench: bool) -> Result<Loaded> {
    let mut overrides = Vec::new();
    for s in &g.set {
        overrides.push(parse_override(s)?);
    }
    if let Some(d) = &g.device {
        overrides.push(("shard_a.device".into(), d.clone()));
    }
    // bench reads --split itself (lists, ranges, auto).
    if let (Some(k), false) = (&g.split, bench) {
        let k: usize = k.parse().map_err(|_| {
            anyhow::anyhow!("--split {k}: give the number of layers in shard A (0 to L)")
        })?;
        overrides.push(("split.layers".into(), k.to_string()));
    }
    if let Some(m) = &g.model {
        overrides.push(("model.source".into(), m.clone()));
    }
    let cli = CliLayer {
        profile: g.profile.clone(),
        config_file: g.config.clone(),
        overrides,
    };
    Ok(Settings::load(&cli, &SettingsEnv::from_process())?)
}

/// Log to a file, never to the terminal the app owns.
fn init_logging(settings: &Settings) {
    let path = if settings.log.file.is_empty() {
        hybrid_tui::paths::state_dir().map(|d| d.join("hybrid-tui.log"))
    } else {
        Some(PathBuf::from(&settings.log.file))
    };
    let Some(path) = path else { return };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
    else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&settings.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = hybrid_tui::supervisor::install_signal_handlers() {
        eprintln!("warning: cannot handle termination signals: {e}");
    }
    // Written, not eprintln!: stderr may be a closed terminal by now.
    use std::io::Write;
    let result = run(cli);
    // A signal stopped it (the workbench quits cleanly on one too): 128 + the
    // signal, as shells report it.
    if let Some(code) = hybrid_tui::supervisor::signal_exit_code() {
        let _ = writeln!(
            std::io::stderr(),
            "interrupted: the executive was stopped and its shared memory removed"
        );
        return ExitCode::from(code);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {}", chain_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each said once: many of the library's errors
/// already end in their cause's text ("{path}: {source}").
fn chain_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

fn run(cli: Cli) -> Result<()> {
    // make-test-model and bake need no settings; everything else does.
    match cli.command {
        Some(Command::MakeTestModel(a)) => return cmd_make_test_model(a),
        Some(Command::Bake(a)) => return cmd_bake(a),
        _ => {}
    }
    let bench = matches!(cli.command, Some(Command::Bench(_)));
    let loaded = load_settings(&cli.global, bench)?;
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let check_screen = matches!(&cli.command, Some(Command::Check(a)) if !a.json && !a.text && tty);
    let bench_screen = matches!(&cli.command, Some(Command::Bench(a)) if a.output.is_none() && a.compare.is_none() && !a.list && tty);
    let workbench = (cli.command.is_none() && tty) || check_screen || bench_screen;
    // The workbench logs to its file and its log pane itself.
    if !workbench {
        init_logging(&loaded.settings);
    }
    match cli.command {
        Some(Command::Config { json }) => {
            if json {
                let v = serde_json::json!({
                    "profile": loaded.profile,
                    "settings": loaded.settings,
                    "origin": loaded.provenance,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", loaded.render());
            }
            Ok(())
        }
        Some(Command::Generate(a)) => cmd_generate(&loaded, a),
        Some(Command::Check(a)) => cmd_check(&loaded, a, check_screen),
        Some(Command::Models(a)) => cmd_models(a),
        Some(Command::Bench(a)) => cmd_bench(&loaded, &cli.global, a, bench_screen),
        None if workbench => cmd_workbench(&loaded),
        None => cmd_first_run(&loaded),
        Some(_) => Ok(()),
    }
}

fn cmd_generate(loaded: &Loaded, a: GenerateArgs) -> Result<()> {
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
    if !(a.temperature >= 0.0 && a.temperature.is_finite()) {
        bail!(
            "--temperature {}: must be 0 (greedy) or more",
            a.temperature
        );
    }
    if !(0.0..=1.0).contains(&a.top_p) || a.top_p == 0.0 {
        bail!("--top-p {}: must be in (0, 1]", a.top_p);
    }
    // Before a bake can start rayon's pool with default settings.
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b).map_err(|e| anyhow::anyhow!(e))?;
    let model_dir = model_for(s, a.model.as_deref())?;
    let opts = GenerateOptions {
        model: a.model.as_ref().map(PathBuf::from),
        prompt,
        chat: a.chat,
        system: a.system.clone(),
        max_new_tokens: a.n,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            min_p: a.min_p,
            repetition_penalty: a.repetition_penalty,
            seed: a.seed,
        },
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

/// The bench plan from the command line.
fn bench_plan(a: &BenchArgs, g: &Global) -> Result<hybrid_tui::bench::Plan> {
    use hybrid_tui::bench::{AutoOptions, Kind, Plan, Splits, Test, parse_list};
    let list = |flag: &str, v: &str| parse_list(flag, v).map_err(|e| anyhow::anyhow!(e));
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
fn cmd_bench(loaded: &Loaded, g: &Global, a: BenchArgs, screen: bool) -> Result<()> {
    use hybrid_tui::bench::format::{self, Output};
    use hybrid_tui::bench::{self, BenchEvent, record};
    let results = record::results_file()
        .ok_or_else(|| anyhow::anyhow!("no data directory: set HOME or XDG_DATA_HOME"))?;
    if a.list || a.compare.is_some() {
        let (runs, skipped) = record::load(&results).map_err(|e| anyhow::anyhow!(e))?;
        for s in skipped {
            eprintln!("warning: skipped a line that is not a bench run: {s}");
        }
        if let Some(c) = &a.compare {
            let find = |k: &str| record::find(&runs, k).map_err(|e| anyhow::anyhow!(e));
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
    let output = a
        .output
        .as_deref()
        .map(Output::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!(e))?;
    let plan = bench_plan(&a, g)?;
    let s = &loaded.settings;
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b).map_err(|e| anyhow::anyhow!(e))?;
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
    let text =
        format::render(&rec, output.unwrap_or(Output::Md)).map_err(|e| anyhow::anyhow!(e))?;
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

/// The baked model of a command's `--model`, else of `model.source` (the
/// first-run default, with the demo model as its fallback); what happened
/// goes to stderr.
/// Tokens the first run generates.
const FIRST_RUN_TOKENS: usize = 24;

/// Shows what the catalog does: steps as lines, downloads as one progress
/// bar per file on stderr when it is a terminal.
struct CatalogView {
    bars: indicatif::MultiProgress,
    style: indicatif::ProgressStyle,
    files: std::collections::HashMap<String, indicatif::ProgressBar>,
}

impl CatalogView {
    fn new() -> CatalogView {
        let bars = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            indicatif::MultiProgress::new()
        } else {
            indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::hidden())
        };
        let style = indicatif::ProgressStyle::with_template(
            "{msg:40} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        CatalogView {
            bars,
            style,
            files: std::collections::HashMap::new(),
        }
    }

    fn show(&mut self, e: CatalogEvent, line: &mut dyn FnMut(&str)) {
        match e {
            CatalogEvent::Step(s) => line(&s),
            CatalogEvent::Fallback(lines) => lines.iter().for_each(|l| line(l)),
            CatalogEvent::Download(p) => {
                let bar = self.files.entry(p.file.clone()).or_insert_with(|| {
                    let b = self.bars.add(indicatif::ProgressBar::new(p.total));
                    b.set_style(self.style.clone());
                    b.set_message(p.file.clone());
                    b
                });
                bar.set_length(p.total);
                bar.set_position(p.done);
                if p.total > 0 && p.done >= p.total {
                    bar.finish();
                }
            }
        }
    }
}

/// The baked model to run: `--model` when given (its errors are the
/// answer), else `model.source` (the demo model stands in for a Hub model
/// that cannot be had).
fn model_for(s: &Settings, model: Option<&str>) -> Result<PathBuf> {
    let (source, fallback) = match model {
        Some(m) => (m, Fallback::None),
        None => (s.model.source.as_str(), Fallback::Demo),
    };
    let mut view = CatalogView::new();
    Ok(catalog::resolve(source, fallback, &mut |e| {
        view.show(e, &mut |l| eprintln!("{l}"))
    })?)
}

/// `hybrid-tui models`: list or remove cached models.
fn cmd_models(a: ModelsArgs) -> Result<()> {
    let hub = HubOptions::from_env();
    if let Some(name) = &a.remove {
        let m = catalog::remove(&hub, name)?;
        println!(
            "removed {} ({}, {:.1} MB) from {}",
            m.name,
            m.kind,
            m.bytes as f64 / 1e6,
            m.path.display()
        );
        return Ok(());
    }
    let list = catalog::list(&hub);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("no models cached yet (the first run fetches or makes one)");
        return Ok(());
    }
    println!(
        "{:<44} {:<9} {:>9}  {:<28} {:<20} source",
        "name", "kind", "size", "precision", "date"
    );
    for m in list {
        println!(
            "{:<44} {:<9} {:>7.1}MB  {:<28} {:<20} {}",
            m.name,
            m.kind,
            m.bytes as f64 / 1e6,
            m.precision,
            m.modified,
            m.source
        );
    }
    Ok(())
}

/// `hybrid-tui check`: the live screen on a terminal, JSON or text otherwise.
fn cmd_check(loaded: &Loaded, a: CheckArgs, screen: bool) -> Result<()> {
    use hybrid_tui::hw::{Root, checks};
    let root = match &a.sysroot {
        Some(d) if !d.is_dir() => bail!("--sysroot {}: not a directory", d.display()),
        Some(d) => Root::at(d),
        None => Root::live(),
    };
    if screen {
        return Ok(hybrid_tui::tui::run_check_screen(
            &loaded.settings,
            &loaded.profile,
            root,
        )?);
    }
    let report = checks::report(&root, &loaded.settings, &loaded.profile);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", checks::render_text(&report));
    }
    if report.counts.fail > 0 {
        bail!(
            "{} check(s) failed: {}",
            report.counts.fail,
            report
                .checks
                .iter()
                .filter(|c| c.status == checks::Status::Fail)
                .map(|c| c.id)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

/// The workbench on the chat screen (stdout is a terminal).
fn cmd_workbench(loaded: &Loaded) -> Result<()> {
    let s = &loaded.settings;
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b).map_err(|e| anyhow::anyhow!(e))?;
    // The model is resolved (fetched, made, baked) while the screen is up.
    Ok(hybrid_tui::tui::run_terminal(s, &loaded.profile)?)
}

/// Without a terminal: the same start as text (make sure a model is there,
/// generate a short chat answer through both shards, print the timings).
fn cmd_first_run(loaded: &Loaded) -> Result<()> {
    let s = &loaded.settings;
    println!(
        "hybrid-tui {} · profile {} · shard A on OpenVINO {} · shard B on burn {}",
        env!("CARGO_PKG_VERSION"),
        loaded.profile,
        s.shard_a.device,
        s.shard_b.backend
    );
    hybrid_tui::pipeline::configure_cpu_pool(&s.shard_b).map_err(|e| anyhow::anyhow!(e))?;
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

fn cmd_make_test_model(a: MakeTestModelArgs) -> Result<()> {
    let arch = Arch::parse(&a.arch)
        .with_context(|| format!("--arch {}: expected llama, qwen2 or mistral", a.arch))?;
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

fn cmd_bake(a: BakeArgs) -> Result<()> {
    let weights = match Scheme::parse(&a.weights) {
        Some(s) if s != Scheme::F32 => s,
        _ => bail!(
            "--weights {}: expected int4_sym, int4_asym, int8_asym, int8_sym or f16",
            a.weights
        ),
    };
    let backup = Backup::parse(&a.backup).with_context(|| {
        format!(
            "--backup {}: expected int8_asym, int8_sym or none",
            a.backup
        )
    })?;
    let opts = BakeOptions {
        weights,
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
        print_bake_summary(&report, &opts);
    }
    Ok(())
}

fn print_bake_summary(r: &BakeReport, o: &BakeOptions) {
    println!(
        "baked {} · {} (group {}, ratio {}, backup {}{})",
        r.out.display(),
        o.weights.name(),
        o.group_size,
        o.ratio,
        o.backup.name(),
        if o.all_layers { ", all layers" } else { "" }
    );
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
