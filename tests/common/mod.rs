//! Shared fixtures: test models made once per test binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hybrid_tui::bake::{BakeOptions, bake};
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};

pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// A tiny Hugging Face model of `arch` (seed fixed per arch), made once.
pub fn hf_model(arch: Arch) -> PathBuf {
    hf_model_of(arch, Preset::Tiny)
}

/// A Hugging Face model of `arch` and `preset` (seed fixed), made once.
pub fn hf_model_of(arch: Arch, preset: Preset) -> PathBuf {
    static MADE: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _g = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = fixtures().join(match preset {
        Preset::Tiny => format!("hf-{}", arch.name()),
        _ => format!("hf-{}-{}", arch.name(), preset.name()),
    });
    if !dir.join("config.json").exists() {
        make_test_model(
            &dir,
            &TestModelOptions {
                arch,
                preset,
                seed: 7,
                dtype: WeightDtype::Bf16,
                max_shard_bytes: 2 << 30,
            },
        )
        .expect("make test model");
    }
    dir
}

/// `hf_model(arch)` baked with `weights` (made once per pair).
pub fn baked_model(arch: Arch, weights: &str) -> PathBuf {
    baked_model_of(arch, Preset::Tiny, weights)
}

/// `hf_model_of(arch, preset)` baked with `weights` (made once each).
pub fn baked_model_of(arch: Arch, preset: Preset, weights: &str) -> PathBuf {
    static MADE: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let src = hf_model_of(arch, preset);
    let _g = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let out = fixtures().join(match preset {
        Preset::Tiny => format!("baked-{}-{weights}", arch.name()),
        _ => format!("baked-{}-{}-{weights}", arch.name(), preset.name()),
    });
    if !out.join("manifest.toml").exists() {
        let opts = BakeOptions {
            weights: hybrid_tui::bake::quant::Scheme::parse(weights).expect("scheme"),
            ..Default::default()
        };
        bake(&src, &out, &opts, &mut |_| {}).expect("bake");
    }
    out
}

/// max |a - b| / max |b|
pub fn rel_err(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num = a
        .iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max);
    let den = b.iter().map(|y| (*y as f64).abs()).fold(0.0, f64::max);
    num / den.max(1e-30)
}

pub fn fresh_seed() -> u64 {
    use rand::Rng;
    rand::rng().random()
}

/// Pids whose parent is `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let after = stat.rsplit(')').next().unwrap_or("");
            let ppid = after.split_whitespace().nth(1).and_then(|x| x.parse().ok());
            if ppid == Some(parent) {
                v.push(pid);
            }
        }
    }
    v
}

/// A binary of this crate with its own XDG directories under `home`, so
/// nothing of the user's is read or written.
pub fn cmd(bin: &str, home: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::cargo_bin(bin).expect("binary built by cargo");
    c.env("XDG_CONFIG_HOME", home.join("config"))
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_STATE_HOME", home.join("state"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env_remove("HYBRID_TUI_PROFILE");
    c
}

/// [`cmd`] for `hybrid-tui`.
pub fn app(home: &Path) -> assert_cmd::Command {
    cmd("hybrid-tui", home)
}

/// The recorded sysfs/procfs trees of tests/fixtures/hw (see generate.py there).
#[allow(dead_code)]
pub fn hw_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hw")
        .join(name)
}

/// Our pid in every recorded tree, and the executive's.
pub const HW_PID: u32 = 4242;
#[allow(dead_code)]
pub const HW_EXEC_PID: u32 = 4243;

/// Copy the files of `from` (flat) into `to`.
pub fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
    }
}

/// Overwrite `count` elements of `tensor` (spread through it) in the
/// single-file checkpoint `dir/model.safetensors` with `value` (BF16, F16
/// or F32 tensors). Returns the tensor's element count.
pub fn poison(dir: &Path, tensor: &str, count: usize, value: f32) -> usize {
    use safetensors::{Dtype, SafeTensors};
    let path = dir.join("model.safetensors");
    let mut bytes = std::fs::read(&path).expect("read checkpoint");
    let (header, meta) = SafeTensors::read_metadata(&bytes).expect("safetensors header");
    let info = meta.info(tensor).expect("tensor in the checkpoint");
    let elem: Vec<u8> = match info.dtype {
        Dtype::BF16 => half::bf16::from_f32(value).to_le_bytes().to_vec(),
        Dtype::F16 => half::f16::from_f32(value).to_le_bytes().to_vec(),
        Dtype::F32 => value.to_le_bytes().to_vec(),
        d => panic!("cannot poison a {d:?} tensor"),
    };
    let start = 8 + header + info.data_offsets.0;
    let n = (info.data_offsets.1 - info.data_offsets.0) / elem.len();
    assert!(count <= n);
    for i in 0..count {
        let at = start + (i * n / count) * elem.len();
        bytes[at..at + elem.len()].copy_from_slice(&elem);
    }
    std::fs::write(&path, bytes).expect("write checkpoint");
    n
}

/// Runs `check` (which asserts, and returns the tokens it compared) on
/// fresh prompts until one gives a sequence that is not degenerate: every
/// run must pass, and within 5 prompts one must say something.
#[allow(dead_code)]
pub fn on_a_telling_prompt(what: &str, mut check: impl FnMut(u64) -> Vec<u32>) {
    for _ in 0..5 {
        let seed = fresh_seed();
        let tokens = check(seed);
        if !degenerate(&tokens) {
            return;
        }
        eprintln!("{what}: degenerate greedy output from seed {seed} ({tokens:?}); another prompt");
    }
    panic!("{what}: 5 prompts in a row gave degenerate greedy output");
}

/// Whether a greedy sequence says little (a random-weight model can fall
/// into repeating one or two tokens from some prompts): at least 16 tokens
/// and at most 4 distinct ones.
#[allow(dead_code)]
pub fn degenerate(tokens: &[u32]) -> bool {
    tokens.len() >= 16
        && tokens
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len()
            <= 4
}

/// A greedy request for `steps` tokens, eos ignored.
pub fn greedy_request(
    prompt: Vec<u32>,
    steps: usize,
    record_logits: bool,
) -> hybrid_tui::pipeline::GenRequest {
    use hybrid_tui::shard_b::sampling::{SamplingParams, StopCriteria};
    hybrid_tui::pipeline::GenRequest {
        prompt,
        max_new_tokens: steps,
        sampling: SamplingParams::greedy(),
        stop: StopCriteria {
            ignore_eos: true,
            ..Default::default()
        },
        record_logits,
    }
}

/// Greedy decoding of `prompt` on a whole shard B (k = 0): the tokens and
/// each step's logits.
pub fn greedy_tokens(
    b: &hybrid_tui::shard_b::ShardB,
    prompt: &[u32],
    steps: usize,
) -> (Vec<u32>, Vec<Vec<f32>>) {
    use hybrid_tui::shard_b::sampling::{Sampler, SamplingParams};
    let mut stream = b.new_stream(128);
    let mut sampler = Sampler::new(SamplingParams::greedy());
    let mut logits = b.forward_tokens(prompt, &mut stream).expect("prefill");
    let (mut toks, mut all) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        all.push(logits.read_last().expect("read"));
        let id = sampler.sample(logits).expect("sample");
        toks.push(id);
        logits = b.forward_tokens(&[id], &mut stream).expect("decode");
    }
    (toks, all)
}

/// A tiny random-weight BERT embedding model (Hugging Face layout, mean
/// pooling), made once per test binary.
pub fn test_bert() -> PathBuf {
    bert(hybrid_tui::model::bert::Pooling::Mean)
}

/// A tiny random-weight BERT with `pooling` (seed fixed per pooling),
/// made once per test binary.
pub fn bert(pooling: hybrid_tui::model::bert::Pooling) -> PathBuf {
    use hybrid_tui::model::test_bert::{BertPreset, TestBertOptions, make_test_bert};
    static MADE: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let _g = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let dir = fixtures().join(format!("bert-{}", pooling.name()));
    if !dir.join("config.json").exists() {
        make_test_bert(
            &dir,
            &TestBertOptions {
                preset: BertPreset::Tiny,
                pooling,
                seed: 11,
                dtype: WeightDtype::F32,
            },
        )
        .expect("make test bert");
    }
    dir
}

/// OpenVINO CPU properties for exact comparisons: f32 inference, no
/// dynamic quantization.
pub fn exact_props() -> hybrid_tui::executive::session::DeviceProps {
    hybrid_tui::executive::session::DeviceProps {
        performance_hint: "LATENCY".into(),
        inference_precision: "f32".into(),
        cache_dir: String::new(),
        exact: true,
        num_threads: 0,
        pin_threads: false,
    }
}
