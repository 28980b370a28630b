//! The command line: every command and flag (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hybrid-tui",
    version,
    about = "Run an LLM split across an NPU (OpenVINO) and a GPU (burn)",
    long_about = "Run an LLM split across two accelerators: shard A on OpenVINO (NPU by default), shard B on burn (GPU through Vulkan, or the CPU). Without a subcommand: make sure a model is there (the demo model is made and baked on first use) and run a chat prompt through shard A."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Settings profile: cpu (default), core-ultra, core-ultra-dgpu, vulkan, max-performance, development, cost-optimized, or a user profile.
    #[arg(long, global = true, env = "HYBRID_TUI_PROFILE")]
    pub profile: Option<String>,
    /// Settings file instead of $XDG_CONFIG_HOME/hybrid-tui/config.toml.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Set any setting: --set shard_a.device=NPU (repeatable).
    #[arg(long = "set", global = true, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Shard A's OpenVINO device (same as --set shard_a.device=...).
    #[arg(long, global = true)]
    pub device: Option<String>,
    /// Layers in shard A (same as --set split.layers=...). `bench` also takes lists (8,12,16), ranges (4-12, 4-12+2) and auto.
    #[arg(long, global = true, value_name = "K")]
    pub split: Option<String>,
    /// Model: a baked directory, a Hugging Face id (org/name[@revision]), or "demo" (same as --set model.source=...).
    #[arg(long)]
    pub model: Option<String>,
    /// The workbench also serves the model over the OpenAI-compatible API (same as --set server.enabled=true).
    #[arg(long)]
    pub serve: bool,
}

#[derive(Subcommand, Debug)]
pub enum Command {
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
    /// Index files for retrieval: walk PATHs (respecting .gitignore), chunk, embed on embed.device, store under $XDG_DATA_HOME/hybrid-tui/index/NAME.sqlite. Incremental; --watch keeps it current.
    Index(IndexArgs),
    /// Search an index: the top-k chunks for a query, with file, lines and score.
    Search(SearchArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (/v1/chat/completions, /v1/completions, /v1/models, /health, /metrics), headless, one log line per request.
    Serve(ServeArgs),
}

#[derive(Args, Debug)]
pub struct IndexArgs {
    /// Folders or files to index.
    pub paths: Vec<PathBuf>,
    /// The index's name [default: the first PATH's folder name].
    #[arg(long)]
    pub name: Option<String>,
    /// Keep indexing as files change, until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Drop what the index holds and embed everything again (e.g. after changing embed.model).
    #[arg(long)]
    pub rebuild: bool,
    /// List the indexes instead.
    #[arg(long)]
    pub list: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// What to look for.
    pub query: String,
    /// The index to search [default: the only one].
    #[arg(long)]
    pub index: Option<String>,
    /// How many chunks [default: embed.top_k].
    #[arg(short, long)]
    pub k: Option<usize>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Baked model directory, a Hugging Face directory, or a Hub id org/name[@revision]. Default: the model.source setting.
    #[arg(long = "model", id = "serve_model", value_name = "DIR|ORG/NAME")]
    pub model: Option<String>,
    /// Address to bind (server.host). Loopback by default; anything else should have an API key.
    #[arg(long)]
    pub host: Option<String>,
    /// Port (server.port; 0 picks a free one, printed at start).
    #[arg(long)]
    pub port: Option<u16>,
    /// The key clients must send as 'Authorization: Bearer KEY'.
    #[arg(
        long,
        env = "HYBRID_TUI_API_KEY",
        conflicts_with = "api_key_file",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// A file holding the key (server.api_key_file); keeps it out of the process list.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Requests run as pipeline streams at once (server.parallel; default 4).
    #[arg(long)]
    pub parallel: Option<usize>,
    /// Requests that may wait for a stream; more get 429 (server.queue).
    #[arg(long)]
    pub queue: Option<usize>,
}

#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Print as JSON.
    #[arg(long)]
    pub json: bool,
    /// Remove the entry of this name (as listed). Downloads are removed from the Hugging Face cache, which other tools share.
    #[arg(long, value_name = "NAME")]
    pub remove: Option<String>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Baked model directory, a Hugging Face directory, or a Hub id org/name[@revision]. Default: the model.source setting.
    #[arg(long = "model", id = "bench_model", value_name = "DIR|ORG/NAME")]
    pub model: Option<String>,
    /// Prompt-processing tests: prompt sizes (list or ranges, llama-bench style); "0" for none.
    #[arg(long, default_value = "512", value_name = "N[,N...]")]
    pub pp: String,
    /// Generation tests: tokens to generate (list or ranges); "0" for none.
    #[arg(long, default_value = "128", value_name = "N[,N...]")]
    pub tg: String,
    /// Measured repetitions of each test.
    #[arg(long, default_value_t = 5)]
    pub reps: usize,
    /// Unmeasured runs before the repetitions of each test.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Concurrent streams (list), e.g. 1,2,4.
    #[arg(long, default_value = "1", value_name = "S[,S...]")]
    pub streams: String,
    /// Leave out the baselines (whole model on shard A's device, k = L; whole model on shard B's backend, k = 0).
    #[arg(long)]
    pub no_baselines: bool,
    /// Prompt tokens before a tg test's generation.
    #[arg(long, default_value_t = 8)]
    pub tg_prompt: usize,
    /// --split auto: optimize at this many streams (1 = latency of one stream). Default: the largest of --streams.
    #[arg(long, value_name = "S")]
    pub auto_streams: Option<usize>,
    /// --split auto: time budget of the search (e.g. 5m, 90s).
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    pub auto_budget: String,
    /// --split auto: tokens generated per stream in a probe.
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub auto_tokens: usize,
    /// Print the results as md (llama-bench's table), csv, json or jsonl instead of the live screen.
    #[arg(long, short = 'o', value_name = "FORMAT")]
    pub output: Option<String>,
    /// Do not append this run to the results file.
    #[arg(long)]
    pub no_save: bool,
    /// Print the change between two saved runs (ids as listed by --list, a unique prefix, last, last~1).
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pub compare: Option<Vec<String>>,
    /// List the saved runs.
    #[arg(long)]
    pub list: bool,
    /// Benchmark the embedding model instead (embed.model on embed.device): embeddings/s and tokens/s per batch size, alone and while the chat model decodes --tg tokens, and the chat model's decode speed with and without that load.
    #[arg(long)]
    pub embed: bool,
    /// --embed: batch sizes.
    #[arg(long, default_value = "1,8,32", value_name = "B[,B...]")]
    pub embed_batches: String,
    /// --embed: tokens per text ([CLS] and [SEP] included).
    #[arg(long, default_value_t = 128)]
    pub embed_tokens: usize,
    /// --embed: texts per timed pass.
    #[arg(long, default_value_t = 64)]
    pub embed_texts: usize,
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Print the report as JSON (for scripts and bug reports).
    #[arg(long)]
    pub json: bool,
    /// Print plain text even on a terminal.
    #[arg(long, conflicts_with = "json")]
    pub text: bool,
    /// Read sysfs/procfs/dev from this recorded tree instead of / (tests, bug reports).
    #[arg(long, value_name = "DIR", hide = true)]
    pub sysroot: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Baked model directory, a Hugging Face directory, or a Hub id org/name[@revision] (fetched into the Hugging Face cache; baked into ours on first use and reused). Default: the model.source setting.
    #[arg(long = "model", id = "gen_model", value_name = "DIR|ORG/NAME")]
    pub model: Option<String>,
    /// The prompt.
    #[arg(
        long,
        conflicts_with = "prompt_file",
        required_unless_present = "prompt_file"
    )]
    pub prompt: Option<String>,
    /// Read the prompt from a file ("-" for stdin).
    #[arg(long, value_name = "FILE")]
    pub prompt_file: Option<PathBuf>,
    /// Retrieve the prompt's top chunks (embed.top_k) from this index (`hybrid-tui index`) and put them before it; the sources follow the answer.
    #[arg(long, value_name = "NAME")]
    pub index: Option<String>,
    /// Apply the model's chat template (the prompt is the user's message).
    #[arg(long)]
    pub chat: bool,
    /// System message (with --chat).
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// Most tokens to generate per stream.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 128)]
    pub n: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Keep the smallest set of tokens with this much probability (1 = off).
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    /// Drop tokens below this share of the top token's probability (0 = off).
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    /// > 1 discourages tokens already in the context.
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    /// Seed of the sampler (stream i uses seed + i).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when this text appears (repeatable).
    #[arg(long = "stop", value_name = "TEXT")]
    pub stop: Vec<String>,
    /// Do not stop at end-of-sequence tokens (fixed-length runs).
    #[arg(long)]
    pub ignore_eos: bool,
    /// Run S copies of the prompt in parallel.
    #[arg(long, default_value_t = 1)]
    pub streams: usize,
    /// Print token ids, text and metrics as JSON at the end instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MakeTestModelArgs {
    /// llama, qwen2, mistral, or bert (an embedding model).
    #[arg(long, default_value = "llama")]
    pub arch: String,
    /// tiny, small, llama-3.2-1b or qwen2.5-0.5b; for bert: tiny, small or bge-small.
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// bert only: the pooling its sentence-transformers files name, cls or mean.
    #[arg(long, default_value = "cls")]
    pub pooling: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Weight dtype: bf16, f16 or f32.
    #[arg(long, default_value = "bf16")]
    pub dtype: String,
    /// Split the weights into shards with an index above this size.
    #[arg(long, default_value_t = 2000)]
    pub max_shard_mb: u64,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct BakeArgs {
    /// Hugging Face model directory (config.json, *.safetensors, tokenizer files), or a Hub id org/name[@revision] (fetched into the Hugging Face cache first).
    #[arg(long = "model", id = "bake_model", value_name = "DIR|ORG/NAME")]
    pub source: String,
    /// Output directory (written aside, then renamed into place).
    #[arg(long)]
    pub out: PathBuf,
    /// int4_sym, int4_asym, int8_asym, int8_sym or f16 [default: int4_sym for a chat model, int8_asym for an embedding model].
    #[arg(long)]
    pub weights: Option<String>,
    /// Group size of 4-bit weights: 128 (default), another divisor of the input size, or -1 per channel.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    pub group_size: i64,
    /// Share of the decoder weights in the primary precision (NNCF's ratio).
    #[arg(long, default_value_t = 1.0)]
    pub ratio: f64,
    /// Precision of the rest: int8_asym, int8_sym or none (f16).
    #[arg(long, default_value = "int8_asym")]
    pub backup: String,
    /// Embeddings and lm_head in the primary precision too.
    #[arg(long)]
    pub all_layers: bool,
    /// Replace an existing output directory.
    #[arg(long)]
    pub force: bool,
    /// Bake weights that hold NaN or infinite values (refused otherwise: the model would emit garbage).
    #[arg(long)]
    pub allow_non_finite: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}
