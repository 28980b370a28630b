//! What the settings are: one struct per section, each field a key (its
//! doc is the key's documentation), and the built-in defaults. How they
//! are read and merged is in `config/mod.rs`, their checks in `validate.rs`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{DEFAULT_EMBED_MODEL, DEFAULT_MODEL, keys};

/// All settings. Field docs are the user documentation of each key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub model: ModelSettings,
    pub shard_a: ShardASettings,
    pub shard_b: ShardBSettings,
    pub split: SplitSettings,
    pub executive: ExecutiveSettings,
    pub ring: RingSettings,
    pub keys: KeySettings,
    pub openvino: OpenVinoSettings,
    pub log: LogSettings,
    pub server: ServerSettings,
    pub embed: EmbedSettings,
}

/// The workbench's keys: "ctrl+r", "alt+enter", "f1", "pageup", "?"...
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySettings {
    pub quit: String,
    pub send: String,
    pub newline: String,
    pub stop: String,
    pub regenerate: String,
    pub clear: String,
    pub copy_answer: String,
    pub help: String,
    pub scroll_up: String,
    pub scroll_down: String,
    pub history_prev: String,
    pub history_next: String,
    pub edit_system: String,
    pub toggle_log: String,
    pub hardware: String,
    pub back: String,
    pub rerun: String,
    pub select_up: String,
    pub select_down: String,
}

impl KeySettings {
    /// Action name → key, as the keymap takes them.
    pub fn map(&self) -> BTreeMap<String, String> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m
                .into_iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k, s.to_string())))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

impl Default for KeySettings {
    fn default() -> Self {
        use keys::Action as A;
        let k = |a: A| a.default_key().to_string();
        KeySettings {
            quit: k(A::Quit),
            send: k(A::Send),
            newline: k(A::Newline),
            stop: k(A::Stop),
            regenerate: k(A::Regenerate),
            clear: k(A::Clear),
            copy_answer: k(A::CopyAnswer),
            help: k(A::Help),
            scroll_up: k(A::ScrollUp),
            scroll_down: k(A::ScrollDown),
            history_prev: k(A::HistoryPrev),
            history_next: k(A::HistoryNext),
            edit_system: k(A::EditSystem),
            toggle_log: k(A::ToggleLog),
            hardware: k(A::Hardware),
            back: k(A::Back),
            rerun: k(A::Rerun),
            select_up: k(A::SelectUp),
            select_down: k(A::SelectDown),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSettings {
    /// A Hugging Face id (org/name[@revision]: fetched and baked on first
    /// use), a baked model directory, or "demo" for the random-weight demo
    /// model the tool makes and bakes itself.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardASettings {
    /// Any OpenVINO device string: NPU, GPU.0, CPU, AUTO:NPU,CPU, HETERO:NPU,CPU.
    pub device: String,
    /// OpenVINO PERFORMANCE_HINT: LATENCY, THROUGHPUT, CUMULATIVE_THROUGHPUT, or "" for the device default.
    pub performance_hint: String,
    /// OpenVINO CACHE_DIR for compiled blobs; "" disables caching.
    pub cache_dir: String,
    /// OpenVINO INFERENCE_PRECISION_HINT: f32, f16, bf16, or "" for the device default.
    pub inference_precision: String,
    /// Build static prefill/decode variants (required by the NPU; can be forced elsewhere).
    pub static_shapes: bool,
    /// Prompt chunk of the static prefill variant, in tokens.
    pub prefill_chunk: usize,
    /// KV-cache capacity per stream, in tokens.
    pub kv_capacity: usize,
    /// OpenVINO CPU threads (INFERENCE_NUM_THREADS); 0 = OpenVINO's choice.
    pub threads: usize,
    /// CPU cores the executive may run on, e.g. "0-3,8"; "" = any.
    pub cpu_cores: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardBSettings {
    /// burn backend: cpu, vulkan or auto.
    pub backend: String,
    /// Vulkan adapter: auto, integrated, discrete, or an index.
    pub adapter: String,
    /// How shard B holds and multiplies its weights: f32 or f16
    /// (dequantized at load), packed (as baked, exact), packed-q8 (as
    /// baked, int8 activations).
    pub weights_dtype: String,
    /// Threads of the CPU backend's pool; 0 = one per core it may use.
    pub threads: usize,
    /// CPU cores shard B's threads may run on, e.g. "4-7"; "" = any.
    pub cpu_cores: String,
    /// How a GPU with packed weights runs decode steps: replay (a captured
    /// launch plan), launch (the same plan, launched each step) or ops
    /// (burn's tensor ops).
    pub decode: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutiveSettings {
    /// The hybrid-executive program; "" = the one next to hybrid-tui.
    pub path: String,
    /// Seconds to wait for the executive's hello after starting it.
    pub handshake_timeout_s: f64,
    /// Seconds to wait for shard A to compile (an NPU can take minutes).
    pub compile_timeout_s: f64,
    /// Seconds without a heartbeat before a running executive counts as hung.
    pub heartbeat_timeout_s: f64,
    /// Seconds one shard A call may run before the executive counts as hung.
    pub call_timeout_s: f64,
    /// Restarts after a crash or hang before giving up.
    pub max_restarts: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingSettings {
    /// Slots of each shared-memory ring (messages in flight).
    pub slots: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSettings {
    /// Layers [0, k) run in shard A (0 = every layer on shard B, L = every
    /// layer on shard A); -1 means half of the model's layers.
    pub layers: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenVinoSettings {
    /// Folder holding libopenvino_c.so; "" searches (env OPENVINO_LIB_DIR,
    /// the project-local .openvino, /opt/intel/openvino, system paths).
    pub runtime_dir: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// tracing filter, e.g. "info" or "hybrid_tui=debug".
    pub level: String,
    /// Log file; "" means `$XDG_STATE_HOME/hybrid-tui/hybrid-tui.log`.
    pub file: String,
}

/// `hybrid-tui serve` and the workbench's server (`--serve`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Run the server inside the workbench too.
    pub enabled: bool,
    /// Address to bind; loopback unless you mean it (set an API key then).
    pub host: String,
    pub port: u16,
    /// A file holding the API key clients must send (`Authorization: Bearer KEY`); "" for none.
    pub api_key_file: String,
    /// Requests run as pipeline streams at once; 0 picks the measured default.
    pub parallel: usize,
    /// Requests that may wait for a free stream; more get 429.
    pub queue: usize,
    /// Largest request body, in KiB (413 above it).
    pub max_body_kib: usize,
    /// On SIGINT/SIGTERM, how long requests in flight may finish before they are cancelled.
    pub drain_s: f64,
}

/// The embedding model (retrieval: `index`, `search`, chat with an index,
/// `/v1/embeddings`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedSettings {
    /// A BERT-family embedding model: a Hub id (fetched and baked, INT8, on
    /// first use; offline, a model not in the Hugging Face cache is an error
    /// that says how to get it), a Hugging Face directory or a baked one.
    pub model: String,
    /// OpenVINO device of the encoder; "" = shard A's device (the NPU in
    /// the Core Ultra profiles).
    pub device: String,
    /// Texts per encoder call (the static batch on an NPU).
    pub batch: usize,
    /// Tokens per text, [CLS] and [SEP] included (longer texts are cut;
    /// the static length on an NPU).
    pub max_length: usize,
    /// Compile the encoder for a fixed [batch, max_length] (the NPU's way);
    /// false lets shapes follow the texts.
    pub static_shapes: bool,
    /// OpenVINO CACHE_DIR for the compiled encoder; "" disables caching.
    pub cache_dir: String,
    /// OpenVINO INFERENCE_PRECISION_HINT of the encoder: f32, f16, bf16, or "" for the device default.
    pub inference_precision: String,
    /// The prompt put before a search query: "auto" = the model's own
    /// (config_sentence_transformers.json, e.g. bge's "Represent this
    /// sentence for searching relevant passages: "), "" = none, else the text.
    pub query_instruction: String,
    /// Tokens per indexed chunk (the embedding model's tokens).
    pub chunk_tokens: usize,
    /// Tokens shared by neighbouring chunks.
    pub chunk_overlap: usize,
    /// Files larger than this (KiB) are not indexed.
    pub max_file_kib: u64,
    /// Chunks retrieved per question (search's -k default, chat with an index).
    pub top_k: usize,
    /// Niceness (0-19) of the embedding model's process: above 0 lets the
    /// chat model's threads go first where both share CPU cores (indexing
    /// then takes what decoding leaves; on the 2-core VM the 1B model's
    /// decode lost 25% beside indexing at 19, 39% at 10, 65% at 0).
    pub nice: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: ModelSettings {
                source: DEFAULT_MODEL.into(),
            },
            shard_a: ShardASettings {
                device: "CPU".into(),
                performance_hint: "LATENCY".into(),
                cache_dir: String::new(),
                inference_precision: String::new(),
                static_shapes: false,
                prefill_chunk: 64,
                kv_capacity: 1024,
                threads: 0,
                cpu_cores: String::new(),
            },
            shard_b: ShardBSettings {
                backend: "cpu".into(),
                adapter: "auto".into(),
                weights_dtype: "f32".into(),
                threads: 0,
                cpu_cores: String::new(),
                decode: "replay".into(),
            },
            split: SplitSettings { layers: -1 },
            executive: ExecutiveSettings {
                path: String::new(),
                handshake_timeout_s: 10.0,
                compile_timeout_s: 600.0,
                heartbeat_timeout_s: 10.0,
                call_timeout_s: 120.0,
                max_restarts: 3,
            },
            ring: RingSettings { slots: 8 },
            keys: KeySettings::default(),
            openvino: OpenVinoSettings {
                runtime_dir: String::new(),
            },
            log: LogSettings {
                level: "info".into(),
                file: String::new(),
            },
            server: ServerSettings {
                enabled: false,
                host: "127.0.0.1".into(),
                port: 8080,
                api_key_file: String::new(),
                parallel: 0,
                queue: 64,
                max_body_kib: 1024,
                drain_s: 10.0,
            },
            embed: EmbedSettings {
                model: DEFAULT_EMBED_MODEL.into(),
                device: String::new(),
                batch: 8,
                max_length: 512,
                static_shapes: false,
                cache_dir: String::new(),
                inference_precision: String::new(),
                query_instruction: "auto".into(),
                chunk_tokens: 400,
                chunk_overlap: 50,
                max_file_kib: 1024,
                top_k: 5,
                nice: 19,
            },
        }
    }
}
