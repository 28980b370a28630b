//! The test-model maker and the bake: determinism, layouts, and bad input.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{baked_model, copy_model, hf_model};
use hybrid_tui::bake::quant::Scheme;
use hybrid_tui::bake::store::BakedModel;
use hybrid_tui::bake::{BakeError, BakeOptions, bake};
use hybrid_tui::model::test_model::{Preset, TestModelOptions, WeightDtype, make_test_model};
use hybrid_tui::model::{Arch, Checkpoint, ModelError, ModelSpec};
use sha2::{Digest, Sha256};

fn hashes(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let bytes = std::fs::read(&p).unwrap();
        out.insert(
            p.file_name().unwrap().to_string_lossy().into_owned(),
            format!("{:x}", Sha256::digest(&bytes)),
        );
    }
    out
}

fn opts(arch: Arch, seed: u64) -> TestModelOptions {
    TestModelOptions {
        arch,
        preset: Preset::Tiny,
        seed,
        dtype: WeightDtype::Bf16,
        max_shard_bytes: 2 << 30,
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_weights() {
    let d = tempfile::tempdir().unwrap();
    for arch in Arch::ALL {
        let a = d.path().join(format!("a-{}", arch.name()));
        let b = d.path().join(format!("b-{}", arch.name()));
        let c = d.path().join(format!("c-{}", arch.name()));
        make_test_model(&a, &opts(arch, 5)).unwrap();
        make_test_model(&b, &opts(arch, 5)).unwrap();
        make_test_model(&c, &opts(arch, 6)).unwrap();
        let (ha, hb, hc) = (hashes(&a), hashes(&b), hashes(&c));
        assert_eq!(ha, hb, "{arch:?}: same seed must give the same bytes");
        assert_ne!(ha["model.safetensors"], hc["model.safetensors"]);
        assert_eq!(ha["tokenizer.json"], hc["tokenizer.json"]);
    }
}

#[test]
fn configs_are_true_to_each_architecture() {
    let llama = ModelSpec::from_hf_dir(&hf_model(Arch::Llama)).unwrap();
    assert!(llama.rope_scaling.is_some() && !llama.qkv_bias && llama.sliding_window.is_none());
    assert!(llama.num_kv_heads < llama.num_heads, "GQA");
    let qwen = ModelSpec::from_hf_dir(&hf_model(Arch::Qwen2)).unwrap();
    assert!(qwen.qkv_bias && qwen.tie_word_embeddings && qwen.rope_scaling.is_none());
    let mistral = ModelSpec::from_hf_dir(&hf_model(Arch::Mistral)).unwrap();
    assert_eq!(mistral.sliding_window, Some(16));
    // The tokenizer is a real byte-level BPE that round-trips text.
    let tok =
        tokenizers::Tokenizer::from_file(hf_model(Arch::Qwen2).join("tokenizer.json")).unwrap();
    let text = "Hello! The quick brown fox, 2026-11-23. ünïcödé ✓";
    let enc = tok.encode(text, false).unwrap();
    assert!(enc.get_ids().len() < text.len(), "BPE merges something");
    assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
    let im_start = tok.token_to_id("<|im_start|>").unwrap();
    let enc = tok.encode("<|im_start|>user", false).unwrap();
    assert_eq!(
        enc.get_ids()[0],
        im_start,
        "special tokens are single tokens"
    );
}

#[test]
fn indexed_shards_bake_like_a_single_file() {
    let d = tempfile::tempdir().unwrap();
    let single = d.path().join("single");
    let sharded = d.path().join("sharded");
    make_test_model(&single, &opts(Arch::Llama, 9)).unwrap();
    let mut o = opts(Arch::Llama, 9);
    o.max_shard_bytes = 300_000;
    make_test_model(&sharded, &o).unwrap();
    assert!(sharded.join("model.safetensors.index.json").exists());
    let shards = std::fs::read_dir(&sharded)
        .unwrap()
        .filter(|e| {
            let n = e
                .as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .into_owned();
            n.starts_with("model-") && n.ends_with(".safetensors")
        })
        .count();
    assert!(shards > 1, "{shards} shards");
    let a = bake(
        &single,
        &d.path().join("a"),
        &BakeOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    let b = bake(
        &sharded,
        &d.path().join("b"),
        &BakeOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(a.params, b.params);
    let (ma, mb) = (
        BakedModel::open(&d.path().join("a")).unwrap(),
        BakedModel::open(&d.path().join("b")).unwrap(),
    );
    for name in ma.manifest.tensors.keys() {
        assert_eq!(ma.f32(name).unwrap(), mb.f32(name).unwrap(), "{name}");
    }
}

#[test]
fn f16_and_f32_sources_bake() {
    let d = tempfile::tempdir().unwrap();
    for (dt, name) in [(WeightDtype::F16, "f16"), (WeightDtype::F32, "f32")] {
        let src = d.path().join(name);
        let mut o = opts(Arch::Mistral, 1);
        o.dtype = dt;
        make_test_model(&src, &o).unwrap();
        let ckpt = Checkpoint::open(&src).unwrap();
        assert!(ckpt.contains("lm_head.weight"));
        bake(
            &src,
            &d.path().join(format!("{name}-out")),
            &BakeOptions::default(),
            &mut |_| {},
        )
        .unwrap();
    }
}

#[test]
fn manifest_describes_every_tensor() {
    let dir = baked_model(Arch::Llama, "int4_sym");
    let m = BakedModel::open(&dir).unwrap();
    let spec = m.spec().clone();
    assert_eq!(m.manifest.default_split, spec.num_layers / 2);
    for (name, shape) in spec.expected_tensors() {
        let e = &m.manifest.tensors[&name];
        assert_eq!(e.shape, shape, "{name}");
        let expect = if shape.len() == 1 {
            Scheme::F32
        } else if name.starts_with("model.layers.") {
            Scheme::Int4Sym
        } else {
            Scheme::Int8Asym
        };
        assert_eq!(e.scheme, expect, "{name}");
        assert_eq!(m.f32(&name).unwrap().len(), shape.iter().product::<usize>());
    }
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "chat_template.jinja",
        "config.json",
    ] {
        assert!(dir.join(f).exists(), "{f} copied");
    }
    assert_eq!(m.manifest.tokens.eos_token_ids.len(), 2);
    assert!(m.manifest.source.sha256.contains_key("model.safetensors"));
    // INT4 + INT8 is several times smaller than bf16.
    let src_bytes = std::fs::metadata(hf_model(Arch::Llama).join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        m.stored_bytes() * 3 < src_bytes,
        "{} vs {src_bytes}",
        m.stored_bytes()
    );
}

fn leftovers(parent: &Path) -> Vec<String> {
    std::fs::read_dir(parent)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial") || n == "out")
        .collect()
}

#[test]
fn truncated_safetensors_is_a_clear_error_with_no_output() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_model(&hf_model(Arch::Llama), &src);
    let f = src.join("model.safetensors");
    let len = std::fs::metadata(&f).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&f).unwrap();
    file.set_len(len - 1000).unwrap();
    let err = bake(
        &src,
        &d.path().join("out"),
        &BakeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, BakeError::Model(ModelError::BadFile { .. })),
        "{msg}"
    );
    assert!(
        msg.contains("model.safetensors") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(leftovers(d.path()).is_empty(), "{:?}", leftovers(d.path()));
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_model(&hf_model(Arch::Qwen2), &src);
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    let cfg = cfg.replace("\"intermediate_size\": 384", "\"intermediate_size\": 512");
    std::fs::write(src.join("config.json"), cfg).unwrap();
    let err = bake(
        &src,
        &d.path().join("out"),
        &BakeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("mlp.gate_proj.weight")
            && msg.contains("[384, 128]")
            && msg.contains("[512, 128]"),
        "{msg}"
    );
    assert!(leftovers(d.path()).is_empty());
}

#[test]
fn unknown_architecture_is_named() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_model(&hf_model(Arch::Llama), &src);
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        src.join("config.json"),
        cfg.replace("\"model_type\": \"llama\"", "\"model_type\": \"gpt2\""),
    )
    .unwrap();
    let msg = bake(
        &src,
        &d.path().join("out"),
        &BakeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("config.json")
            && msg.contains("gpt2")
            && msg.contains("llama, qwen2, mistral"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_and_missing_tokenizer() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_model(&hf_model(Arch::Llama), &src);
    std::fs::remove_file(src.join("tokenizer.json")).unwrap();
    let msg = bake(
        &src,
        &d.path().join("out"),
        &BakeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("tokenizer.json"), "{msg}");
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        src.join("config.json"),
        cfg.replace("\"num_hidden_layers\": 4", "\"num_hidden_layers\": 5"),
    )
    .unwrap();
    let msg = bake(
        &src,
        &d.path().join("out"),
        &BakeOptions::default(),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(msg.contains("model.layers.4"), "{msg}");
    assert!(leftovers(d.path()).is_empty());
}

#[test]
fn group_size_must_divide_and_output_is_not_clobbered() {
    let src = hf_model(Arch::Llama);
    let d = tempfile::tempdir().unwrap();
    let o = BakeOptions {
        group_size: 96,
        ..Default::default()
    };
    let msg = bake(&src, &d.path().join("out"), &o, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("--group-size 96") && msg.contains("-1"),
        "{msg}"
    );
    let out = d.path().join("out");
    bake(&src, &out, &BakeOptions::default(), &mut |_| {}).unwrap();
    let err = bake(&src, &out, &BakeOptions::default(), &mut |_| {}).unwrap_err();
    assert!(matches!(err, BakeError::Exists { .. }), "{err}");
    let o = BakeOptions {
        weights: Scheme::Int4Asym,
        force: true,
        ..Default::default()
    };
    bake(&src, &out, &o, &mut |_| {}).unwrap();
    let m = BakedModel::open(&out).unwrap();
    assert_eq!(m.manifest.quantization.weights, Scheme::Int4Asym);
    assert_eq!(leftovers(d.path()), vec!["out".to_string()]);
}

#[test]
fn ratio_keeps_the_most_sensitive_weights_in_backup() {
    let src = hf_model(Arch::Llama);
    let d = tempfile::tempdir().unwrap();
    let o = BakeOptions {
        ratio: 0.5,
        ..Default::default()
    };
    let r = bake(&src, &d.path().join("out"), &o, &mut |_| {}).unwrap();
    assert!(
        r.primary_share < 0.5 && r.primary_share > 0.3,
        "{}",
        r.primary_share
    );
    let m = BakedModel::open(&d.path().join("out")).unwrap();
    let n8 = m
        .manifest
        .tensors
        .iter()
        .filter(|(n, e)| n.starts_with("model.layers.") && e.scheme == Scheme::Int8Asym)
        .count();
    assert!(n8 > 0);
}

/// A copy of the `arch` test model to spoil, in a temporary directory.
fn spoilable(arch: Arch) -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    copy_model(&hf_model(arch), &src);
    (d, src)
}

/// Bake `src` with the defaults into `out` beside it: the error it gives.
fn bake_error(src: &Path) -> BakeError {
    let out = src.with_file_name("out");
    bake(src, &out, &BakeOptions::default(), &mut |_| {}).expect_err("the bake must fail")
}

/// A tokenizer.json that does not load (random bytes; JSON that is no
/// tokenizer) fails the bake with the file named, and leaves nothing.
#[test]
fn a_tokenizer_that_does_not_load_fails_the_bake() {
    use rand::Rng;
    let noise: Vec<u8> = (0..4096).map(|_| rand::rng().random()).collect();
    for (what, bytes) in [
        ("random bytes", noise),
        ("JSON that is no tokenizer", br#"{"hello": 1}"#.to_vec()),
    ] {
        let (d, src) = spoilable(Arch::Llama);
        std::fs::write(src.join("tokenizer.json"), bytes).unwrap();
        let msg = bake_error(&src).to_string();
        assert!(
            msg.contains(&src.join("tokenizer.json").display().to_string())
                && msg.contains("not a tokenizer"),
            "{what}: {msg}"
        );
        assert!(leftovers(d.path()).is_empty(), "{what}");
    }
}

/// A chat template that compiles but fails when run fails the bake too.
#[test]
fn a_chat_template_that_fails_to_run_fails_the_bake() {
    let (d, src) = spoilable(Arch::Qwen2);
    std::fs::write(
        src.join("chat_template.jinja"),
        "{{ raise_exception('this template refuses everything') }}",
    )
    .unwrap();
    let msg = bake_error(&src).to_string();
    assert!(
        msg.contains("chat_template.jinja") && msg.contains("refuses everything"),
        "{msg}"
    );
    assert!(leftovers(d.path()).is_empty());
}

/// NaN or infinite weights are refused, naming the tensor and the count,
/// unless allowed.
#[test]
fn non_finite_weights_are_refused_unless_allowed() {
    let (d, src) = spoilable(Arch::Llama);
    let name = "model.layers.2.mlp.down_proj.weight";
    let total = common::poison(&src, name, 3, f32::NAN);
    let err = bake_error(&src);
    let msg = err.to_string();
    assert!(
        matches!(&err, BakeError::NonFinite { name: n, count: 3, total: t, .. } if n == name && *t == total),
        "{msg}"
    );
    assert!(
        msg.contains(name)
            && msg.contains("3 NaN or infinite")
            && msg.contains("--allow-non-finite"),
        "{msg}"
    );
    assert!(leftovers(d.path()).is_empty());
    common::poison(&src, "model.norm.weight", 1, f32::INFINITY);
    let allowed = BakeOptions {
        allow_non_finite: true,
        ..Default::default()
    };
    bake(&src, &d.path().join("out"), &allowed, &mut |_| {}).expect("allowed");
}
