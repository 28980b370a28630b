//! The embedding model: its bake, its tokenization and its OpenVINO CPU
//! encoder against the independent reference (`reference::bert`).
//!
//! Tolerances (cosine of each OpenVINO vector with the reference's, f32
//! inference precision, dynamic quantization off):
//! - f16 weights against the source checkpoint's f32: ≥ 0.9999;
//! - INT8_ASYM weights against the store's own dequantized weights (the
//!   graph's arithmetic): ≥ 0.9999; against the source checkpoint (what
//!   INT8 costs): ≥ 0.999 on these random-weight models (0.99994 measured).
//!
//! Texts are fresh random word sequences of random lengths each run (the
//! seed is printed), in batches of mixed lengths, dynamic and static
//! (padded rows and tokens), CLS and mean pooling.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use common::{bert, exact_props, fixtures, fresh_seed};
use hybrid_tui::bake::encoder::BakedEncoder;
use hybrid_tui::bake::ir::encoder::{EncoderShape, build_encoder};
use hybrid_tui::bake::quant::Scheme;
use hybrid_tui::bake::{BakeOptions, bake};
use hybrid_tui::executive::encoder::EncoderSession;
use hybrid_tui::executive::session::new_core;
use hybrid_tui::model::Checkpoint;
use hybrid_tui::model::bert::{BertSpec, Pooling};
use hybrid_tui::model::bert_tokens::BertTokenizer;
use hybrid_tui::model::test_model::CORPUS;
use hybrid_tui::reference::bert::BertReference;
use rand::{Rng, SeedableRng};

const F16_COS: f64 = 0.9999;
const INT8_GRAPH_COS: f64 = 0.9999;
const INT8_SOURCE_COS: f64 = 0.999;

fn baked_bert(pooling: Pooling, weights: Scheme) -> PathBuf {
    static MADE: OnceLock<std::sync::Mutex<()>> = OnceLock::new();
    let src = bert(pooling);
    let _g = MADE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let out = fixtures().join(format!("baked-bert-{}-{}", pooling.name(), weights.name()));
    if !out.join("manifest.toml").exists() {
        let opts = BakeOptions {
            weights,
            ..Default::default()
        };
        bake(&src, &out, &opts, &mut |_| {}).expect("bake bert");
    }
    out
}

/// `n` texts of 1-40 random corpus words (some upper-cased, some with an
/// unknown character), from `seed`.
fn random_texts(seed: u64, n: usize) -> Vec<String> {
    let words: Vec<&str> = CORPUS.split_whitespace().collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(1..=40);
            let mut t: Vec<String> = (0..len)
                .map(|_| words[rng.random_range(0..words.len())].to_string())
                .collect();
            if rng.random_bool(0.3) {
                t[0] = t[0].to_uppercase();
            }
            if rng.random_bool(0.3) {
                t.push("§✓".into());
            }
            t.join(" ")
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * y).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb).max(1e-30)
}

fn source_reference(dir: &Path) -> BertReference {
    let spec = BertSpec::from_hf_dir(dir).expect("spec");
    let ckpt = Checkpoint::open(dir).expect("checkpoint");
    BertReference::new(&spec, |n| ckpt.f32(n)).expect("reference weights")
}

fn store_reference(model: &BakedEncoder) -> BertReference {
    BertReference::new(model.spec(), |n| model.f32(n)).expect("reference weights")
}

/// Every text's OpenVINO vector, in batches of `batch` (static: padded to
/// `[batch, length]`), checked against `judge` at `bound`; returns the
/// worst cosine.
fn check(
    model: &BakedEncoder,
    shape: EncoderShape,
    texts: &[String],
    judge: &BertReference,
    bound: f64,
    seed: u64,
) -> f64 {
    let spec = model.spec();
    let ir = build_encoder(model, shape, spec.pooling).expect("encoder IR");
    let mut core = new_core("").expect("runtime");
    let mut s = EncoderSession::compile(&mut core, &ir, spec.hidden_size, "CPU", &exact_props())
        .expect("compile the encoder");
    let max_length = match shape {
        EncoderShape::Static { length, .. } => length,
        EncoderShape::Dynamic => spec.max_seq_length,
    };
    let tok = BertTokenizer::from_dir(&model.dir, max_length).expect("tokenizer");
    let per = match shape {
        EncoderShape::Static { batch, .. } => batch,
        EncoderShape::Dynamic => 5,
    };
    let mut worst = 1.0f64;
    for chunk in texts.chunks(per) {
        let seqs: Vec<Vec<u32>> = chunk
            .iter()
            .map(|t| tok.encode(t).expect("encode"))
            .collect();
        let batch = tok.batch(&seqs, s.static_shape()).expect("batch");
        let out = s.run(&batch).expect("run the encoder");
        assert_eq!(out.len(), chunk.len() * spec.hidden_size);
        for (i, ids) in seqs.iter().enumerate() {
            let v = &out[i * spec.hidden_size..(i + 1) * spec.hidden_size];
            let norm: f64 = v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
            assert!(
                (norm - 1.0).abs() < 1e-4,
                "vector norm {norm} (seed {seed})"
            );
            let c = cosine(v, &judge.embed(ids, spec.pooling));
            assert!(
                c >= bound,
                "{shape:?} {:?} text {i} of {} tokens: cosine {c:.6} < {bound} (seed {seed})",
                spec.pooling,
                ids.len()
            );
            worst = worst.min(c);
        }
    }
    worst
}

#[test]
fn f16_encoder_matches_the_reference_dynamic_and_static_both_poolings() {
    let seed = fresh_seed();
    let texts = random_texts(seed, 11);
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let model = BakedEncoder::open(&baked_bert(pooling, Scheme::F16)).expect("open");
        assert_eq!(model.spec().pooling, pooling, "pooling from modules.json");
        let judge = source_reference(&bert(pooling));
        let dynamic = check(&model, EncoderShape::Dynamic, &texts, &judge, F16_COS, seed);
        let fixed = check(
            &model,
            EncoderShape::Static {
                batch: 4,
                length: 64,
            },
            &texts,
            &judge,
            F16_COS,
            seed,
        );
        eprintln!("f16 {pooling:?}: worst cosine dynamic {dynamic:.7}, static {fixed:.7}");
    }
}

#[test]
fn int8_encoder_matches_its_weights_and_stays_near_the_source() {
    let seed = fresh_seed();
    let texts = random_texts(seed, 9);
    for pooling in [Pooling::Cls, Pooling::Mean] {
        let model = BakedEncoder::open(&baked_bert(pooling, Scheme::Int8Asym)).expect("open");
        assert_eq!(model.manifest.weights, Scheme::Int8Asym);
        let graph = check(
            &model,
            EncoderShape::Dynamic,
            &texts,
            &store_reference(&model),
            INT8_GRAPH_COS,
            seed,
        );
        let source = check(
            &model,
            EncoderShape::Static {
                batch: 3,
                length: 48,
            },
            &texts,
            &source_reference(&bert(pooling)),
            INT8_SOURCE_COS,
            seed,
        );
        eprintln!(
            "int8 {pooling:?}: worst cosine against its weights {graph:.7}, against the source {source:.7}"
        );
    }
}

#[test]
fn padding_and_batching_do_not_change_a_vector() {
    // The same text alone, in a batch of longer texts, and padded into a
    // static shape gives the same vector (the mask hides the padding).
    let seed = fresh_seed();
    let texts = random_texts(seed, 4);
    let model = BakedEncoder::open(&baked_bert(Pooling::Mean, Scheme::F16)).expect("open");
    let spec = model.spec();
    let ir = build_encoder(&model, EncoderShape::Dynamic, spec.pooling).expect("IR");
    let mut core = new_core("").expect("runtime");
    let mut s = EncoderSession::compile(&mut core, &ir, spec.hidden_size, "CPU", &exact_props())
        .expect("compile");
    let tok = BertTokenizer::from_dir(&model.dir, 128).expect("tokenizer");
    let seqs: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tok.encode(t).expect("encode"))
        .collect();
    let together = s.run(&tok.batch(&seqs, None).expect("batch")).expect("run");
    let h = spec.hidden_size;
    for (i, q) in seqs.iter().enumerate() {
        let alone = s
            .run(&tok.batch(std::slice::from_ref(q), None).expect("batch"))
            .expect("run");
        let padded = s
            .run(
                &tok.batch(std::slice::from_ref(q), Some((3, 100)))
                    .expect("batch"),
            )
            .expect("run");
        for (what, v) in [("alone", &alone), ("padded", &padded)] {
            let d = v
                .iter()
                .zip(&together[i * h..(i + 1) * h])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(d < 1e-5, "text {i} {what}: max |Δ| {d} (seed {seed})");
        }
    }
}

#[test]
fn wordpiece_ids_match_a_bert_tokenizer_built_from_vocab_txt() {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    use tokenizers::processors::bert::BertProcessing;

    let dir = bert(Pooling::Cls);
    let vocab = dir.join("vocab.txt");
    let wp = WordPiece::from_file(&vocab.to_string_lossy())
        .unk_token("[UNK]".into())
        .build()
        .expect("WordPiece from vocab.txt");
    let mut judge = tokenizers::Tokenizer::new(wp);
    judge.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
    judge.with_pre_tokenizer(Some(BertPreTokenizer));
    let id = |t: &str| judge.token_to_id(t).expect("special in vocab.txt");
    let (cls, sep) = (id("[CLS]"), id("[SEP]"));
    judge.with_post_processor(Some(BertProcessing::new(
        ("[SEP]".into(), sep),
        ("[CLS]".into(), cls),
    )));
    let ours = BertTokenizer::from_dir(&dir, 32).expect("tokenizer");
    let seed = fresh_seed();
    let mut texts = random_texts(seed, 40);
    texts.push(String::new());
    texts.push("Ünïcode ACCENTS, punctuation!? and   spaces".into());
    for t in &texts {
        let want = judge
            .encode(t.as_str(), true)
            .expect("encode")
            .get_ids()
            .to_vec();
        let got = ours.encode(t).expect("encode");
        // Truncation keeps [CLS] … [SEP] within 32 tokens.
        if want.len() <= 32 {
            assert_eq!(got, want, "{t:?} (seed {seed})");
        } else {
            assert_eq!(got.len(), 32, "{t:?}");
            assert_eq!(got[..31], want[..31], "{t:?} (seed {seed})");
            assert_eq!(got[31], sep, "{t:?}");
        }
    }
    assert!(
        texts.iter().any(|t| judge
            .encode(t.as_str(), true)
            .map(|e| e.len() > 32)
            .unwrap_or(false)),
        "some text is truncated (seed {seed})"
    );
}

#[test]
fn a_bert_model_is_refused_as_a_chat_model_and_int4_is_refused_for_it() {
    let src = bert(Pooling::Cls);
    let e = hybrid_tui::model::ModelSpec::from_hf_dir(&src).expect_err("bert as a chat model");
    assert!(e.to_string().contains("embed.model"), "{e}");
    let baked = baked_bert(Pooling::Cls, Scheme::F16);
    let e = hybrid_tui::bake::store::BakedModel::open(&baked)
        .err()
        .expect("an encoder store opened as a chat model");
    assert!(e.to_string().contains("embedding model"), "{e}");
    let out = fixtures().join("bert-int4");
    let e = bake(
        &src,
        &out,
        &BakeOptions {
            weights: Scheme::Int4Sym,
            ..Default::default()
        },
        &mut |_| {},
    )
    .expect_err("int4 bert");
    assert!(e.to_string().contains("int8_asym"), "{e}");
    assert!(!out.exists());
}
