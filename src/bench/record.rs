//! What a bench run produced, the machine it ran on, the results file
//! (`$XDG_DATA_HOME/hybrid-tui/bench/results.jsonl`, one run per line) and
//! the comparison of two saved runs.
//!
//! A record holds the plan, the rows (samples, tokens per rep, mean ± sd,
//! ttft, stages, J/token, ratios to the half split and both baselines), the
//! model (parameters from the manifest's shapes, bytes of the weight files),
//! the machine (CPU, memory, kernel, OpenVINO build and devices from the
//! probe, burn's version from Cargo.lock via build.rs, shard B's adapter,
//! the CPU plan's kernels, NVIDIA GPUs), the settings as JSON and the auto-split's probes. An id
//! taken twice in a second gets a suffix; `--compare` matches rows by test,
//! streams and split and lists what differs in machine and settings.

use super::BenchError;
pub use super::work::StepWork;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Kind, Plan, Splits};
use crate::bake::store::BakedModel;
use crate::config::Settings;
use crate::pipeline::StageSample;

/// A split's place: both shards, or one of the single-device baselines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Hybrid,
    /// k = L: every layer on shard A's device (shard B keeps the final norm,
    /// lm_head and sampling).
    AOnly,
    /// k = 0: every layer on shard B's backend (shard A only looks up the
    /// embeddings).
    BOnly,
}

impl Role {
    pub fn for_split(k: usize, layers: usize) -> Role {
        if k == layers {
            Role::AOnly
        } else if k == 0 {
            Role::BOnly
        } else {
            Role::Hybrid
        }
    }
}

/// Mean stage times of a run's messages (decode steps for tg, prefill
/// chunks for pp), in ms.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Stages {
    pub a_ms: f64,
    pub a_to_b_wait_ms: f64,
    pub b_ms: f64,
    pub b_to_a_wait_ms: f64,
}

impl Stages {
    pub fn of(s: &StageSample) -> Stages {
        Stages {
            a_ms: s.a_ms,
            a_to_b_wait_ms: s.a_to_b_wait_ms,
            b_ms: s.b_ms,
            b_to_a_wait_ms: s.b_to_a_wait_ms,
        }
    }

    /// The mean of each stage (zeros for none).
    pub fn mean(v: impl IntoIterator<Item = Stages>) -> Stages {
        let (mut sum, mut n) = (Stages::default(), 0usize);
        for s in v {
            sum.a_ms += s.a_ms;
            sum.a_to_b_wait_ms += s.a_to_b_wait_ms;
            sum.b_ms += s.b_ms;
            sum.b_to_a_wait_ms += s.b_to_a_wait_ms;
            n += 1;
        }
        let n = n.max(1) as f64;
        Stages {
            a_ms: sum.a_ms / n,
            a_to_b_wait_ms: sum.a_to_b_wait_ms / n,
            b_ms: sum.b_ms / n,
            b_to_a_wait_ms: sum.b_to_a_wait_ms / n,
        }
    }
}

/// One line of the results table: a test at a concurrency on a split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub split: usize,
    pub layers: usize,
    pub role: Role,
    /// "pp512", "tg128".
    pub test: String,
    pub kind: Kind,
    pub n: usize,
    pub streams: usize,
    pub reps: usize,
    /// t/s of each repetition.
    pub samples: Vec<f64>,
    /// Tokens each repetition counted (= streams × n).
    pub tokens: Vec<usize>,
    /// Mean and sample standard deviation of `samples`.
    pub tok_s: f64,
    pub tok_s_sd: f64,
    /// Time to first token (mean over streams, then over repetitions).
    pub ttft_ms: f64,
    pub ttft_ms_sd: f64,
    pub stages: Stages,
    /// Joules per counted token, where energy can be read.
    pub joules_per_token: Option<f64>,
    /// t/s over the half split's (k = L/2), the A-only (k = L) and the
    /// B-only (k = 0) rows of the same test and concurrency.
    pub vs_half: Option<f64>,
    pub vs_a_only: Option<f64>,
    pub vs_b_only: Option<f64>,
    /// Shard B's work per step on the decode plan (None on burn's ops or
    /// when shard B has no layers).
    #[serde(default)]
    pub shard_b_work: Option<StepWork>,
}

impl Row {
    /// "8/16", "16/16 (A only)", "0/16 (B only)".
    pub fn split_label(&self) -> String {
        match self.role {
            Role::Hybrid => format!("{}/{}", self.split, self.layers),
            Role::AOnly => format!("{}/{} A only", self.split, self.layers),
            Role::BOnly => format!("{}/{} B only", self.split, self.layers),
        }
    }
}

/// Fill each row's ratios to the half split and the baselines of the same
/// test and concurrency.
pub fn add_ratios(rows: &mut [Row], layers: usize) {
    let find = |rows: &[Row], r: &Row, k: usize| {
        rows.iter()
            .find(|o| o.split == k && o.test == r.test && o.streams == r.streams)
            .map(|o| o.tok_s)
    };
    let snapshot = rows.to_vec();
    for r in rows.iter_mut() {
        let ratio = |base: Option<f64>| base.filter(|b| *b > 0.0).map(|b| r.tok_s / b);
        r.vs_half = ratio(find(&snapshot, r, layers / 2));
        r.vs_a_only = ratio(find(&snapshot, r, layers));
        r.vs_b_only = ratio(find(&snapshot, r, 0));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    pub k: usize,
    pub tok_s: f64,
}

/// The auto-split search and its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoReport {
    pub streams: usize,
    pub objective: String,
    pub probe_tokens: usize,
    pub budget_s: f64,
    pub spent_s: f64,
    pub out_of_time: bool,
    pub probes: Vec<Probe>,
    pub best: usize,
    pub half: usize,
    /// best's probe t/s over the half split's, minus 1.
    pub gain_over_half: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelDesc {
    pub path: String,
    /// Directory name.
    pub name: String,
    pub arch: String,
    pub layers: usize,
    pub hidden: usize,
    /// Parameters of the source model (every tensor in the manifest).
    pub params: u64,
    /// Bytes of the baked weights on disk.
    pub size_bytes: u64,
    /// "int4_sym g128 (backup int8_asym)".
    pub weights: String,
}

impl ModelDesc {
    pub fn of(m: &BakedModel) -> ModelDesc {
        let spec = m.spec();
        let params = m
            .manifest
            .tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>() as u64)
            .sum();
        let size_bytes = walkdir(&m.dir.join("weights"));
        let q = &m.manifest.quantization;
        ModelDesc {
            path: m.dir.display().to_string(),
            name: m
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            arch: format!("{:?}", spec.arch).to_lowercase(),
            layers: spec.num_layers,
            hidden: spec.hidden_size,
            params,
            size_bytes,
            weights: format!(
                "{} g{} (backup {})",
                q.weights.name(),
                q.group_size,
                q.backup
            ),
        }
    }
}

fn walkdir(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The machine a run was made on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpu: String,
    pub cpu_summary: String,
    pub memory_bytes: u64,
    pub kernel: String,
    pub openvino: String,
    pub openvino_devices: Vec<String>,
    pub burn: String,
    /// What shard B ran on (adapter name, or the CPU backend).
    pub shard_b_adapter: String,
    /// The CPU plan's inner loops on this CPU (AVX-512, VNNI, AMX: what
    /// the build detected, after `HYBRID_TUI_AMX`); empty in runs saved
    /// before it was recorded.
    #[serde(default)]
    pub cpu_kernels: String,
    pub nvidia: Vec<String>,
    pub hybrid_tui: String,
}

impl Machine {
    pub fn describe(settings: &Settings, adapter: String) -> Machine {
        use crate::hw::Root;
        let root = Root::live();
        let cpu = crate::hw::cpu::info(&root);
        let mem = crate::hw::memory::read(&root);
        let probe = crate::hw::openvino::probe(settings, std::time::Duration::from_secs(20));
        let nvidia = crate::hw::nvidia::NvidiaReader::new(&root).sample();
        Machine {
            cpu: cpu.ok().map(|c| c.model.clone()).unwrap_or_default(),
            cpu_summary: cpu.ok().map(|c| c.summary()).unwrap_or_default(),
            memory_bytes: mem.ok().map(|m| m.total).unwrap_or(0),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            openvino: probe
                .ok()
                .map(|p| p.build.clone())
                .unwrap_or_else(|| probe.reason().unwrap_or("unknown").to_string()),
            openvino_devices: probe
                .ok()
                .map(|p| {
                    p.devices
                        .iter()
                        .map(|d| match &d.full_name {
                            Some(f) => format!("{} ({f})", d.name),
                            None => d.name.clone(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            burn: env!("HYBRID_BURN_VERSION").to_string(),
            shard_b_adapter: adapter,
            cpu_kernels: crate::shard_b::packed::best_kernel_name().to_string(),
            nvidia: nvidia
                .ok()
                .map(|v| v.iter().map(|g| g.name.clone()).collect())
                .unwrap_or_default(),
            hybrid_tui: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The plan as it was asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanDesc {
    pub tests: Vec<String>,
    pub reps: usize,
    pub warmup: usize,
    pub streams: Vec<usize>,
    pub split: String,
    pub baselines: bool,
    pub tg_prompt: usize,
}

/// One bench run: what ran, where, and the rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRecord {
    /// "20261123-141503" (UTC start of writing); unique in the results file.
    pub id: String,
    /// RFC 3339, UTC.
    pub time: String,
    pub profile: String,
    pub model: ModelDesc,
    pub shard_a_device: String,
    pub shard_b_backend: String,
    pub machine: Machine,
    pub settings: serde_json::Value,
    pub plan: PlanDesc,
    pub auto: Option<AutoReport>,
    /// Where joules come from, or "not available: why".
    pub energy: String,
    pub rows: Vec<Row>,
    /// False when the run stopped early (the rows so far are kept).
    pub complete: bool,
    pub error: Option<String>,
}

impl BenchRecord {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: &Settings,
        profile: &str,
        model: ModelDesc,
        adapter: String,
        plan: &Plan,
        auto: Option<AutoReport>,
        energy: String,
        rows: Vec<Row>,
        complete: bool,
        error: Option<String>,
    ) -> BenchRecord {
        let now = std::time::SystemTime::now();
        let time = humantime::format_rfc3339_seconds(now).to_string();
        let id: String = time
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect::<String>()
            .replace('T', "-");
        BenchRecord {
            id,
            time,
            profile: profile.to_string(),
            model,
            shard_a_device: settings.shard_a.device.clone(),
            shard_b_backend: settings.shard_b.backend.clone(),
            machine: Machine::describe(settings, adapter),
            settings: serde_json::to_value(settings).unwrap_or(serde_json::Value::Null),
            plan: PlanDesc {
                tests: plan.tests.iter().map(|t| t.name()).collect(),
                reps: plan.reps,
                warmup: plan.warmup,
                streams: plan.streams.clone(),
                split: match &plan.splits {
                    Splits::Configured => "configured".into(),
                    Splits::Auto => "auto".into(),
                    Splits::List(v) => v
                        .iter()
                        .map(|k| k.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                },
                baselines: plan.baselines,
                tg_prompt: plan.tg_prompt,
            },
            auto,
            energy,
            rows,
            complete,
            error,
        }
    }

    /// For each test and concurrency: the fastest hybrid split and its
    /// ratio to the half split and to each baseline.
    pub fn winners(&self) -> Vec<String> {
        let mut keys: Vec<(String, usize)> = Vec::new();
        for r in &self.rows {
            if !keys.contains(&(r.test.clone(), r.streams)) {
                keys.push((r.test.clone(), r.streams));
            }
        }
        let x = |v: Option<f64>, what: &str| match v {
            Some(v) => format!("{v:.2}× {what}"),
            None => format!("{what} not run"),
        };
        keys.iter()
            .filter_map(|(test, streams)| {
                let best = self
                    .rows
                    .iter()
                    .filter(|r| &r.test == test && r.streams == *streams && r.role == Role::Hybrid)
                    .max_by(|a, b| a.tok_s.total_cmp(&b.tok_s))?;
                Some(format!(
                    "{test} × {streams} stream(s): best split k={} at {:.2} t/s: {}, {}, {}",
                    best.split,
                    best.tok_s,
                    x(best.vs_half, "the half split"),
                    x(best.vs_a_only, "A only"),
                    x(best.vs_b_only, "B only"),
                ))
            })
            .collect()
    }
}

/// `$XDG_DATA_HOME/hybrid-tui/bench/results.jsonl`.
pub fn results_file() -> Option<PathBuf> {
    crate::paths::data_dir().map(|d| d.join("bench").join("results.jsonl"))
}

/// Append a run to the results file (one JSON line). A run whose id is
/// taken already (two runs in one second) gets "-2", "-3", ... added.
pub fn append(path: &Path, rec: &mut BenchRecord) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let taken: std::collections::HashSet<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v.get("id").and_then(|i| i.as_str()).map(String::from))
        .collect();
    let base = rec.id.clone();
    let mut n = 2;
    while taken.contains(&rec.id) {
        rec.id = format!("{base}-{n}");
        n += 1;
    }
    let mut line = serde_json::to_string(rec).map_err(std::io::Error::other)?;
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())
}

/// Every run in the results file; a line that does not parse is named and skipped.
pub fn load(path: &Path) -> Result<(Vec<BenchRecord>, Vec<String>), BenchError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BenchError::Saved(format!(
            "{}: {e} (no bench results saved yet? run hybrid-tui bench first)",
            path.display()
        ))
    })?;
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<BenchRecord>(line) {
            Ok(r) => out.push(r),
            Err(e) => skipped.push(format!("{}:{}: {e}", path.display(), i + 1)),
        }
    }
    Ok((out, skipped))
}

/// Find a run by id, unique id prefix, "last" or "last~N".
pub fn find<'a>(runs: &'a [BenchRecord], key: &str) -> Result<&'a BenchRecord, BenchError> {
    let back = if key == "last" {
        Some(0)
    } else {
        key.strip_prefix("last~")
            .and_then(|n| n.parse::<usize>().ok())
    };
    if let Some(n) = back {
        return runs
            .len()
            .checked_sub(n + 1)
            .map(|i| &runs[i])
            .ok_or_else(|| {
                BenchError::Saved(format!("'{key}': only {} run(s) saved", runs.len()))
            });
    }
    let hits: Vec<&BenchRecord> = runs.iter().filter(|r| r.id.starts_with(key)).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(BenchError::Saved(format!(
            "no saved run '{key}'; saved: {} (or use last, last~1)",
            runs.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        many => Err(BenchError::Saved(format!(
            "'{key}' matches {} runs ({}): give more of the id",
            many.len(),
            many.iter()
                .map(|r| r.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// A row of a comparison: the same test, concurrency and split in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    pub test: String,
    pub streams: usize,
    pub split: String,
    pub a_tok_s: f64,
    pub a_sd: f64,
    pub b_tok_s: f64,
    pub b_sd: f64,
    /// b / a - 1.
    pub change: f64,
    /// The difference is larger than both runs' standard deviations added.
    pub significant: bool,
}

/// Rows present in both runs, and what else differs between them.
pub fn compare(a: &BenchRecord, b: &BenchRecord) -> (Vec<Change>, Vec<String>) {
    let mut out = Vec::new();
    for ra in &a.rows {
        let Some(rb) = b
            .rows
            .iter()
            .find(|r| r.test == ra.test && r.streams == ra.streams && r.split == ra.split)
        else {
            continue;
        };
        let diff = rb.tok_s - ra.tok_s;
        out.push(Change {
            test: ra.test.clone(),
            streams: ra.streams,
            split: ra.split_label(),
            a_tok_s: ra.tok_s,
            a_sd: ra.tok_s_sd,
            b_tok_s: rb.tok_s,
            b_sd: rb.tok_s_sd,
            change: rb.tok_s / ra.tok_s.max(1e-12) - 1.0,
            significant: diff.abs() > ra.tok_s_sd + rb.tok_s_sd,
        });
    }
    let mut notes = Vec::new();
    let mut differ = |what: &str, x: String, y: String| {
        if x != y {
            notes.push(format!("{what}: {x} → {y}"));
        }
    };
    differ("model", a.model.name.clone(), b.model.name.clone());
    differ("cpu", a.machine.cpu.clone(), b.machine.cpu.clone());
    differ(
        "shard A device",
        a.shard_a_device.clone(),
        b.shard_a_device.clone(),
    );
    differ(
        "shard B",
        format!("{} ({})", a.shard_b_backend, a.machine.shard_b_adapter),
        format!("{} ({})", b.shard_b_backend, b.machine.shard_b_adapter),
    );
    differ(
        "OpenVINO",
        a.machine.openvino.clone(),
        b.machine.openvino.clone(),
    );
    differ("burn", a.machine.burn.clone(), b.machine.burn.clone());
    differ(
        "CPU kernels",
        a.machine.cpu_kernels.clone(),
        b.machine.cpu_kernels.clone(),
    );
    differ(
        "hybrid-tui",
        a.machine.hybrid_tui.clone(),
        b.machine.hybrid_tui.clone(),
    );
    if let (Some(sa), Some(sb)) = (a.settings.as_object(), b.settings.as_object()) {
        for (section, va) in sa {
            let (Some(oa), Some(ob)) =
                (va.as_object(), sb.get(section).and_then(|v| v.as_object()))
            else {
                continue;
            };
            for (key, x) in oa {
                if section == "split" {
                    continue;
                }
                if let Some(y) = ob.get(key)
                    && x != y
                {
                    differ(&format!("{section}.{key}"), x.to_string(), y.to_string());
                }
            }
        }
    }
    (out, notes)
}
