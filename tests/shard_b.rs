//! Shard B on burn against the independent reference.
//!
//! Tolerances: logits within 1e-3 relative (max |Δ| / max |ref|) for a
//! prompt and 16 decode steps with shard B fed the reference's hidden states
//! at layer k; whole-model greedy decoding equal token for token for 64 steps.
//! Each test runs on Flex (CPU) and, when a Vulkan adapter exists (Mesa's
//! software driver in CI, where HYBRID_TUI_REQUIRE_VULKAN=1 makes its absence
//! a failure), on Vulkan too. Inputs are fresh random ids; seeds are printed.

mod common;

use burn::tensor::{DType, Tensor, TensorData};
use common::{baked_model, fresh_seed, on_a_telling_prompt, rel_err};
use hybrid_tui::bake::store::BakedModel;
use hybrid_tui::config::ShardBSettings;
use hybrid_tui::model::Arch;
use hybrid_tui::reference::{RefCache, Reference};
use hybrid_tui::shard_b::packed::AMX_MIN_TOKENS;
use hybrid_tui::shard_b::sampling::{Sampler, SamplingParams, StopCriteria, StopReason};
use hybrid_tui::shard_b::{
    DecodeMode, HiddenDtype, LoadOptions, QuantLinear, ShardB, ShardBError, WeightDtype,
    select_device,
};
use rand::{Rng, SeedableRng};

const LOGIT_TOL: f64 = 1e-3;

fn settings(backend: &str) -> ShardBSettings {
    ShardBSettings {
        backend: backend.into(),
        adapter: "auto".into(),
        weights_dtype: "f32".into(),
        threads: 0,
        cpu_cores: String::new(),
        decode: "replay".into(),
    }
}

/// The backends to test on: always the CPU; Vulkan when an adapter exists.
fn backends() -> Vec<&'static str> {
    let mut v = vec!["cpu"];
    let has_vulkan = !hybrid_tui::shard_b::device::vulkan_adapters().is_empty();
    if has_vulkan {
        v.push("vulkan");
    } else if std::env::var("HYBRID_TUI_REQUIRE_VULKAN").is_ok_and(|v| v == "1") {
        panic!(
            "HYBRID_TUI_REQUIRE_VULKAN=1 but no Vulkan adapter was found (is mesa-vulkan-drivers installed?)"
        );
    } else {
        eprintln!("no Vulkan adapter: Vulkan variants skipped");
    }
    v
}

fn load(model: &BakedModel, k: usize, backend: &str, dtype: WeightDtype) -> ShardB {
    let (device, info) = select_device(&settings(backend)).expect("device");
    ShardB::load(model, k, device, info, dtype).expect("load shard B")
}

fn random_tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

fn bytes_f32(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Shard B at split k, fed the reference's hidden states, against the reference's logits.
fn check_split(arch: Arch, weights: &str, backend: &str) {
    let dir = baked_model(arch, weights);
    let model = BakedModel::open(&dir).expect("open");
    let reference = Reference::from_baked(&model).expect("reference");
    let spec = model.spec().clone();
    let l = spec.num_layers;
    let seed = fresh_seed();
    let tokens = random_tokens(seed, 8 + 16, spec.vocab_size);
    for k in [l / 2, 1] {
        let b = load(&model, k, backend, WeightDtype::F32);
        let mut stream = b.new_stream(64);
        let (mut part_cache, mut full_cache) = (RefCache::default(), RefCache::default());
        let steps: Vec<&[u32]> = std::iter::once(&tokens[..8])
            .chain(tokens[8..].chunks(1))
            .collect();
        for (i, step) in steps.iter().enumerate() {
            let hidden = reference.forward(step, k, &mut part_cache).concat();
            let full = reference.forward(step, l, &mut full_cache);
            let want: Vec<f32> = full.iter().flat_map(|h| reference.logits(h)).collect();
            let logits = b
                .forward_bytes(
                    &bytes_f32(&hidden),
                    HiddenDtype::F32,
                    step.len(),
                    &mut stream,
                )
                .expect("forward");
            let got = logits.read().expect("read");
            let e = rel_err(&got, &want);
            assert!(
                e <= LOGIT_TOL,
                "{arch:?} {weights} {backend} k={k} step {i}: logits rel err {e:.3e} (seed {seed})"
            );
        }
    }
}

#[test]
fn split_logits_match_reference_llama() {
    for b in backends() {
        check_split(Arch::Llama, "int4_sym", b);
    }
}

#[test]
fn split_logits_match_reference_qwen2() {
    for b in backends() {
        check_split(Arch::Qwen2, "int4_sym", b);
    }
}

#[test]
fn split_logits_match_reference_mistral() {
    for b in backends() {
        check_split(Arch::Mistral, "int4_asym", b);
    }
}

fn argmax(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .expect("argmax of an empty vector")
}

/// Whole model (k = 0) greedy decoding: the same 64 tokens as the reference.
fn check_greedy(arch: Arch, backend: &str, seed: u64) -> Vec<u32> {
    let dir = baked_model(arch, "f16");
    let model = BakedModel::open(&dir).expect("open");
    let reference = Reference::from_baked(&model).expect("reference");
    let spec = model.spec().clone();
    let prompt = random_tokens(seed, 6, spec.vocab_size);
    let b = load(&model, 0, backend, WeightDtype::F32);
    let mut stream = b.new_stream(128);
    let mut sampler = Sampler::new(SamplingParams::greedy());
    let mut cache = RefCache::default();
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut logits = b.forward_tokens(&prompt, &mut stream).expect("prefill");
    let mut h = reference.forward(&prompt, spec.num_layers, &mut cache);
    for _ in 0..64 {
        let t = sampler.sample(logits).expect("sample");
        let r = reference.logits(h.last().expect("hidden"));
        let rt = argmax(&r);
        ours.push(t);
        theirs.push(rt);
        if t != rt {
            // A fork is only allowed at a near tie of the reference's two
            // best logits (f32 against f64 arithmetic): 1e-5 of the range.
            let (top, ours_logit) = (r[rt as usize], r[t as usize]);
            let range = r.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!(
                top - ours_logit <= 1e-5 * range,
                "{arch:?} {backend}: greedy tokens diverge at step {} with a logit gap of {:.3e} (seed {seed}): {ours:?} vs {theirs:?}",
                ours.len() - 1,
                top - ours_logit
            );
            break;
        }
        logits = b.forward_tokens(&[t], &mut stream).expect("decode");
        h = reference.forward(&[rt], spec.num_layers, &mut cache);
    }
    ours
}

#[test]
fn whole_model_greedy_matches_reference_llama() {
    for b in backends() {
        on_a_telling_prompt(&format!("Llama on {b}"), |seed| {
            check_greedy(Arch::Llama, b, seed)
        });
    }
}

#[test]
fn whole_model_greedy_matches_reference_qwen2() {
    for b in backends() {
        on_a_telling_prompt(&format!("Qwen2 on {b}"), |seed| {
            check_greedy(Arch::Qwen2, b, seed)
        });
    }
}

#[test]
fn whole_model_greedy_matches_reference_mistral() {
    for b in backends() {
        on_a_telling_prompt(&format!("Mistral on {b}"), |seed| {
            check_greedy(Arch::Mistral, b, seed)
        });
    }
}

/// The linear layer of each backend against a host matmul on the dequantized
/// weight (BURN_NOTES.md's transpose trap), for every weight of a layer, f32
/// and f16 on the device.
#[test]
fn quant_linear_matches_dequantized_matmul() {
    let seed = fresh_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for backend in backends() {
        let (device, _) = select_device(&settings(backend)).expect("device");
        for (arch, weights) in [(Arch::Qwen2, "int4_sym"), (Arch::Llama, "int4_asym")] {
            let model = BakedModel::open(&baked_model(arch, weights)).expect("open");
            for name in [
                "model.layers.1.self_attn.q_proj.weight",
                "model.layers.1.self_attn.k_proj.weight",
                "model.layers.1.mlp.down_proj.weight",
                model.lm_head_name(),
            ] {
                let st = model.tensor(name).expect("tensor");
                let (rows, cols) = (st.rows(), st.cols());
                let w = st.dequantize();
                let mut kinds = vec![(WeightDtype::F32, 1e-5), (WeightDtype::F16, 2e-3)];
                if backend == "cpu" {
                    kinds.push((WeightDtype::Packed, 1e-5));
                }
                for (dtype, tol) in kinds {
                    let lin = QuantLinear::load(&model, name, None, &device, dtype).expect("load");
                    let t = 3;
                    let x: Vec<f32> = (0..t * cols).map(|_| rng.random_range(-1.0..1.0)).collect();
                    let want: Vec<f32> = (0..t)
                        .flat_map(|i| {
                            let xi = &x[i * cols..(i + 1) * cols];
                            w.chunks(cols)
                                .map(|row| {
                                    row.iter()
                                        .zip(xi)
                                        .map(|(a, b)| (*a as f64) * (*b as f64))
                                        .sum::<f64>() as f32
                                })
                                .collect::<Vec<_>>()
                        })
                        .collect();
                    let xt = Tensor::<2>::from_data(
                        TensorData::new(x, [t, cols]),
                        (&device, DType::F32),
                    );
                    let got = ShardB::read_f32(lin.forward(xt).expect("forward")).expect("read");
                    assert_eq!(got.len(), t * rows);
                    let e = rel_err(&got, &want);
                    assert!(
                        e <= tol,
                        "{backend} {name} {dtype:?}: rel err {e:.3e} (seed {seed})"
                    );
                }
            }
        }
    }
}

#[test]
fn f16_hidden_bytes_and_stream_lifecycle() {
    let model = BakedModel::open(&baked_model(Arch::Llama, "int4_sym")).expect("open");
    let spec = model.spec().clone();
    let k = spec.num_layers / 2;
    let b = load(&model, k, "cpu", WeightDtype::F32);
    let seed = fresh_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let h: Vec<f32> = (0..3 * spec.hidden_size)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect();
    let h16: Vec<f32> = h.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect();
    let bytes16: Vec<u8> = h
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    let mut s1 = b.new_stream(8);
    let mut s2 = b.new_stream(8);
    let a = b
        .forward_bytes(&bytes16, HiddenDtype::F16, 3, &mut s1)
        .expect("f16")
        .read()
        .expect("read");
    let c = b
        .forward_bytes(&bytes_f32(&h16), HiddenDtype::F32, 3, &mut s2)
        .expect("f32")
        .read()
        .expect("read");
    assert!(
        rel_err(&a, &c) < 1e-6,
        "f16 bytes widen exactly (seed {seed})"
    );
    // Streams are independent, reset starts over.
    let next = bytes_f32(&h[..spec.hidden_size]);
    let x1 = b
        .forward_bytes(&next, HiddenDtype::F32, 1, &mut s1)
        .expect("s1")
        .read()
        .expect("read");
    s2.reset();
    let _ = b
        .forward_bytes(&bytes_f32(&h16), HiddenDtype::F32, 3, &mut s2)
        .expect("again");
    let x2 = b
        .forward_bytes(&next, HiddenDtype::F32, 1, &mut s2)
        .expect("s2")
        .read()
        .expect("read");
    assert!(rel_err(&x1, &x2) < 1e-6);
    assert_eq!(s1.len(), 4);
    // Errors, not panics.
    b.forward_bytes(&bytes_f32(&h[..]), HiddenDtype::F32, 3, &mut s1)
        .expect("7 of 8 slots");
    let over = b.forward_bytes(&bytes_f32(&h[..]), HiddenDtype::F32, 3, &mut s1);
    assert!(
        matches!(over, Err(ShardBError::CacheFull { capacity: 8, .. })),
        "{:?}",
        over.err()
    );
    let bad = b.forward_bytes(&[0u8; 10], HiddenDtype::F32, 1, &mut s2);
    assert!(matches!(bad, Err(ShardBError::BadInput { .. })));
    assert!(matches!(
        b.forward_tokens(&[1], &mut s2),
        Err(ShardBError::NoEmbeddings(_))
    ));
    let whole = load(&model, 0, "cpu", WeightDtype::F32);
    let mut s = whole.new_stream(4);
    let v = spec.vocab_size as u32;
    assert!(matches!(
        whole.forward_tokens(&[v], &mut s),
        Err(ShardBError::BadToken { .. })
    ));
    assert!(b.resident_weight_bytes() > 0);
}

#[test]
fn asking_for_a_missing_vulkan_adapter_lists_what_exists() {
    let mut s = settings("vulkan");
    s.adapter = "7".into();
    let Err(err) = select_device(&s) else {
        panic!("there is no Vulkan adapter 7 here");
    };
    let err = err.to_string();
    assert!(
        err.contains("Adapters found") && err.contains("shard_b.adapter"),
        "{err}"
    );
}

fn logits_of(values: &[f32]) -> Tensor<2> {
    let (device, _) = select_device(&settings("cpu")).expect("cpu");
    Tensor::<2>::from_data(
        TensorData::new(values.to_vec(), [1, values.len()]),
        (&device, DType::F32),
    )
}

#[test]
fn sampling_rules() {
    let seed = fresh_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let v: Vec<f32> = (0..50).map(|_| rng.random_range(-3.0..3.0)).collect();
    let argmax = v
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i as u32)
        .expect("max");
    let greedy = Sampler::new(SamplingParams::greedy())
        .sample(logits_of(&v))
        .expect("greedy");
    assert_eq!(greedy, argmax);
    for p in [
        SamplingParams {
            temperature: 1.0,
            top_k: 1,
            seed,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            top_p: 1e-6,
            seed,
            ..Default::default()
        },
        SamplingParams {
            temperature: 1.0,
            min_p: 1.0,
            seed,
            ..Default::default()
        },
    ] {
        for _ in 0..5 {
            assert_eq!(
                Sampler::new(p.clone()).sample(logits_of(&v)).expect("s"),
                argmax,
                "{p:?}"
            );
        }
    }
    // Same seed, same draws; top-k keeps draws inside the k best.
    let p = SamplingParams {
        temperature: 0.8,
        top_k: 5,
        seed,
        ..Default::default()
    };
    let (mut a, mut b) = (Sampler::new(p.clone()), Sampler::new(p));
    let mut top5: Vec<usize> = (0..v.len()).collect();
    top5.sort_by(|&i, &j| v[j].total_cmp(&v[i]));
    top5.truncate(5);
    for _ in 0..20 {
        let x = a.sample(logits_of(&v)).expect("a");
        assert_eq!(x, b.sample(logits_of(&v)).expect("b"));
        assert!(
            top5.contains(&(x as usize)),
            "{x} not in top-5 (seed {seed})"
        );
    }
    // Repetition penalty moves greedy off a seen token.
    let mut s = Sampler::new(SamplingParams {
        repetition_penalty: 100.0,
        ..Default::default()
    });
    s.observe(&[argmax]);
    assert_ne!(s.sample(logits_of(&v)).expect("pen"), argmax);
}

/// OpenAI's presence and frequency penalties against a host reference in
/// f64: greedy over one fresh random row, step after step, so each chosen
/// token is penalized by what came before (on every backend).
#[test]
fn presence_and_frequency_penalties_follow_a_host_reference() {
    let seed = fresh_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for backend in backends() {
        let (device, _) = select_device(&settings(backend)).expect("device");
        for _ in 0..3 {
            let v: Vec<f32> = (0..300).map(|_| rng.random_range(-3.0..3.0)).collect();
            let presence: f32 = rng.random_range(-0.5..2.0);
            let frequency: f32 = rng.random_range(0.05..2.0);
            let mut s = Sampler::new(SamplingParams {
                presence_penalty: presence,
                frequency_penalty: frequency,
                ..Default::default()
            });
            let mut counts = vec![0u32; v.len()];
            for step in 0..24 {
                let penalized: Vec<f64> = v
                    .iter()
                    .zip(&counts)
                    .map(|(&x, &n)| {
                        let x = x as f64;
                        if n == 0 {
                            x
                        } else {
                            x - presence as f64 - frequency as f64 * n as f64
                        }
                    })
                    .collect();
                let mut order: Vec<usize> = (0..v.len()).collect();
                order.sort_by(|&a, &b| penalized[b].total_cmp(&penalized[a]));
                if penalized[order[0]] - penalized[order[1]] < 1e-4 {
                    break; // a near tie: f32 on the device may pick either
                }
                let row = Tensor::<2>::from_data(
                    TensorData::new(v.clone(), [1, v.len()]),
                    (&device, DType::F32),
                );
                let got = s.sample(row).expect("sample");
                assert_eq!(
                    got as usize, order[0],
                    "{backend} step {step}: presence {presence} frequency {frequency} (seed {seed})"
                );
                counts[order[0]] += 1;
            }
            // The prompt does not count: observed tokens are not penalized.
            let mut fresh = Sampler::new(SamplingParams {
                presence_penalty: 2.0,
                frequency_penalty: 2.0,
                ..Default::default()
            });
            let best = (0..v.len())
                .max_by(|&a, &b| v[a].total_cmp(&v[b]))
                .expect("max");
            fresh.observe(&[best as u32]);
            let row = Tensor::<2>::from_data(
                TensorData::new(v.clone(), [1, v.len()]),
                (&device, DType::F32),
            );
            assert_eq!(fresh.sample(row).expect("sample") as usize, best);
        }
    }
}

#[test]
fn sampling_parameters_out_of_range_name_the_parameter() {
    assert_eq!(SamplingParams::default().validate(), Ok(()));
    let cases = [
        (
            SamplingParams {
                temperature: -0.1,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplingParams {
                top_p: 0.0,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                top_p: 1.5,
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplingParams {
                min_p: -1.0,
                ..Default::default()
            },
            "min_p",
        ),
        (
            SamplingParams {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            "repetition_penalty",
        ),
        (
            SamplingParams {
                presence_penalty: 2.5,
                ..Default::default()
            },
            "presence_penalty",
        ),
        (
            SamplingParams {
                frequency_penalty: -3.0,
                ..Default::default()
            },
            "frequency_penalty",
        ),
    ];
    for (p, param) in cases {
        let e = p.validate().expect_err(param);
        assert_eq!(e.param, param);
        assert!(e.to_string().starts_with(param), "{e}");
        assert!(e.to_string().contains("must be"), "{e}");
    }
}

/// A logit row with a NaN or an infinity ends in an error, on every path
/// (greedy, temperature, penalty) and backend; finite rows still sample.
#[test]
fn non_finite_logits_are_an_error_not_a_token() {
    let seed = fresh_seed();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for backend in backends() {
        let (device, _) = select_device(&settings(backend)).expect("device");
        let rows = |v: &[f32]| {
            // Two rows: the sampler reads the last; the first stays finite.
            let mut data: Vec<f32> = (0..v.len()).map(|i| i as f32 * 0.01).collect();
            data.extend_from_slice(v);
            Tensor::<2>::from_data(TensorData::new(data, [2, v.len()]), (&device, DType::F32))
        };
        let params = [
            SamplingParams::greedy(),
            SamplingParams {
                temperature: 0.8,
                top_p: 0.9,
                seed,
                ..Default::default()
            },
            SamplingParams {
                repetition_penalty: 1.3,
                ..Default::default()
            },
        ];
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for p in &params {
                let mut v: Vec<f32> = (0..300).map(|_| rng.random_range(-4.0..4.0)).collect();
                let at = rng.random_range(0..v.len());
                v[at] = bad;
                let mut s = Sampler::new(p.clone());
                s.observe(&[1, 2, 3]);
                let got = s.sample(rows(&v));
                assert!(
                    matches!(got, Err(ShardBError::NonFinite)),
                    "{backend} {p:?}: {bad} at {at} gave {got:?} (seed {seed})"
                );
                let msg = got.err().map(|e| e.to_string()).unwrap_or_default();
                assert!(msg.contains("NaN or infinite"), "{msg}");
                v[at] = 0.5;
                let ok = Sampler::new(p.clone()).sample(rows(&v));
                assert!(
                    ok.as_ref().is_ok_and(|&id| (id as usize) < v.len()),
                    "{backend} {p:?}: a finite row gave {ok:?} (seed {seed})"
                );
            }
        }
    }
}

#[test]
fn sampling_follows_the_softmax() {
    // 3 tokens with probabilities 0.6, 0.3, 0.1 at temperature 1; 3000 draws.
    let l: Vec<f32> = [0.6f32, 0.3, 0.1].iter().map(|p| p.ln()).collect();
    let mut s = Sampler::new(SamplingParams {
        temperature: 1.0,
        seed: fresh_seed(),
        ..Default::default()
    });
    let mut counts = [0usize; 3];
    let n = 3000;
    for _ in 0..n {
        counts[s.sample(logits_of(&l)).expect("draw") as usize] += 1;
    }
    for (i, p) in [0.6, 0.3, 0.1].iter().enumerate() {
        let f = counts[i] as f64 / n as f64;
        // 5 standard deviations of a binomial proportion.
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        assert!(
            (f - p).abs() < 5.0 * sd,
            "token {i}: {f:.3} vs {p} ({counts:?})"
        );
    }
}

#[test]
fn stop_on_eos_and_stop_strings() {
    let c = StopCriteria {
        eos: vec![5, 9],
        stop_strings: vec!["</answer>".into()],
        ignore_eos: false,
    };
    assert_eq!(c.check(9, "x"), Some(StopReason::Eos(9)));
    assert_eq!(
        c.check(1, "a </answer> b"),
        Some(StopReason::StopString("</answer>".into()))
    );
    assert_eq!(c.check(1, "a </ans"), None);
    let c = StopCriteria {
        ignore_eos: true,
        ..c
    };
    assert_eq!(c.check(9, "x"), None);
}

/// Greedy decoding of two whole shard Bs (k = 0) in lockstep for `n`
/// steps: the tokens must agree, except at a near tie of the first one's
/// two best logits (1e-5 of the range: summation order differs), where the
/// sequences may fork and the comparison ends. Returns the common tokens.
fn greedy_pair(a: &ShardB, b: &ShardB, prompt: &[u32], n: usize, what: &str) -> Vec<u32> {
    let (mut sa, mut sb) = (a.new_stream(128), b.new_stream(128));
    let mut pa = Sampler::new(SamplingParams::greedy());
    let mut pb = Sampler::new(SamplingParams::greedy());
    let mut la = a.forward_tokens(prompt, &mut sa).expect("prefill");
    let mut lb = b.forward_tokens(prompt, &mut sb).expect("prefill");
    let mut out = Vec::new();
    for step in 0..n {
        let ra = la.read_last().expect("read");
        let (ta, tb) = (
            pa.sample(la).expect("sample"),
            pb.sample(lb).expect("sample"),
        );
        if ta != tb {
            let range = ra.iter().fold(0f32, |m, v| m.max(v.abs()));
            let gap = ra[ta as usize] - ra[tb as usize];
            assert!(
                gap <= 1e-5 * range,
                "{what}: greedy tokens differ at step {step} with a logit gap of {gap:.3e}: {out:?} then {ta} vs {tb}"
            );
            break;
        }
        out.push(ta);
        la = a.forward_tokens(&[ta], &mut sa).expect("decode");
        lb = b.forward_tokens(&[tb], &mut sb).expect("decode");
    }
    out
}

/// Packed weights (the CPU kernel on Flex, the GPU kernels on Vulkan)
/// decode the same 64 greedy tokens as the dequantized f32 path of the same
/// backend, on each test model; and they keep no more than 1.15 × the
/// stored bytes of the integer weights (4 bits or 8 bits plus the scales
/// and zero points) resident.
#[test]
fn packed_weights_decode_like_the_dequantized_path() {
    for (backend, arch, weights) in backends().into_iter().flat_map(|b| {
        [
            (b, Arch::Llama, "int4_sym"),
            (b, Arch::Qwen2, "int4_sym"),
            (b, Arch::Mistral, "int4_asym"),
        ]
    }) {
        let model = BakedModel::open(&baked_model(arch, weights)).expect("open");
        let spec = model.spec().clone();
        let dense = load(&model, 0, backend, WeightDtype::F32);
        // burn's path with the GPU kernels (`cube`), not the decode plan
        // (tests/plan.rs): burn's ops on the device between a plan's
        // replays are a known hazard (`shard_b::plan`'s docs).
        let (device, info) = select_device(&settings(backend)).expect("device");
        let opts = LoadOptions {
            decode: DecodeMode::Ops,
            ..LoadOptions::new(WeightDtype::Packed)
        };
        let packed = ShardB::load_with(&model, 0, device, info, opts).expect("load packed");
        let what = format!("{arch:?} {weights} on {backend}: packed vs f32");
        // q/k/v and gate/up run as one stacked weight each when packed.
        let groups = 2 * (spec.num_layers);
        assert_eq!(packed.stacked_projections(), (groups, groups), "{what}");
        assert_eq!(dense.stacked_projections(), (0, groups), "{what}");
        on_a_telling_prompt(&what, |seed| {
            let prompt = random_tokens(seed, 6, spec.vocab_size);
            greedy_pair(
                &dense,
                &packed,
                &prompt,
                64,
                &format!("{what} (seed {seed})"),
            )
        });
        // Stored bytes of shard B's weights: integer parts as on disk, the
        // rest (norms, biases) as f32.
        let mut stored = 0usize;
        for (name, e) in &model.manifest.tensors {
            let in_b = name.starts_with("model.layers.")
                || name == model.lm_head_name()
                || name == "model.norm.weight"
                || (name == "model.embed_tokens.weight" && !spec.tie_word_embeddings);
            if !in_b {
                continue;
            }
            let t = model.tensor(name).expect("tensor");
            stored += if e.scheme.is_int() {
                t.data.len()
                    + t.scales.map_or(0, |x| x.len())
                    + t.zero_points.map_or(0, |x| x.len())
            } else {
                t.numel() * 4
            };
        }
        let resident = packed.resident_weight_bytes();
        let ratio = resident as f64 / stored as f64;
        assert!(
            ratio <= 1.15,
            "{what}: resident {resident} B is {ratio:.3}× the stored {stored} B"
        );
        assert!(
            resident * 3 < dense.resident_weight_bytes(),
            "{what}: packed is not smaller"
        );
    }
}

#[test]
fn int8_activations_on_burns_gpu_ops_are_refused_with_the_fix() {
    let Some(b) = backends().into_iter().find(|b| *b == "vulkan") else {
        return;
    };
    let model = BakedModel::open(&baked_model(Arch::Llama, "int4_sym")).expect("open");
    let (device, info) = select_device(&settings(b)).expect("device");
    let opts = LoadOptions {
        decode: DecodeMode::Ops,
        ..LoadOptions::new(WeightDtype::PackedQ8)
    };
    let e = ShardB::load_with(&model, 2, device, info, opts)
        .err()
        .expect("packed-q8 on burn's GPU ops must be refused");
    assert!(
        e.to_string()
            .contains("set shard_b.weights_dtype to packed (the GPU kernel"),
        "{e}"
    );
}

/// Packed weights with int8 activations (packed-q8, the CPU profile's
/// default: the CPU plan, with 4-bit weights in VNNI tiles where the CPU
/// has them) against the dequantized f32 path, on the three test models:
/// the last row's logits of a prompt and 64 decode steps fed the f32
/// path's greedy tokens within 1e-1 relative RMS error (the activations'
/// rounding per group, compounded through every layer of these
/// random-weight models; the exact paths agree within 1e-5), and the
/// greedy agreement (the steps whose int8 choice equals the f32 one)
/// measured and printed: at least 3/4 of the steps here. On Vulkan the
/// same runs through the decode plan's `dp4a` kernel (int8 blocks of 32
/// columns), against the CPU's f32 path.
#[test]
fn int8_activations_stay_close_to_the_dequantized_logits() {
    let seed = fresh_seed();
    let print = std::env::var("HYBRID_TEST_PRINT").is_ok();
    for (arch, weights, backend) in backends().into_iter().flat_map(|b| {
        [
            (Arch::Llama, "int4_sym", b),
            (Arch::Qwen2, "int4_sym", b),
            (Arch::Mistral, "int4_asym", b),
        ]
    }) {
        let model = BakedModel::open(&baked_model(arch, weights)).expect("open");
        // On the CPU, a chunk that goes through AMX where the CPU has it
        // (elsewhere, VNNI passes of 8 tokens and a remainder).
        let prompt_len = if backend == "cpu" {
            AMX_MIN_TOKENS + 2
        } else {
            6
        };
        let prompt = random_tokens(seed, prompt_len, model.spec().vocab_size);
        let dense = load(&model, 0, "cpu", WeightDtype::F32);
        let q8 = load(&model, 0, backend, WeightDtype::PackedQ8);
        let (mut sa, mut sb) = (dense.new_stream(128), q8.new_stream(128));
        let mut step: Vec<u32> = prompt.clone();
        let (mut agree, mut worst) = (0, 0f64);
        const STEPS: usize = 65;
        for i in 0..STEPS {
            // The last row (the CPU plan computes no others).
            let a = dense
                .forward_tokens(&step, &mut sa)
                .expect("f32")
                .read_last()
                .expect("read");
            let b = q8
                .forward_tokens(&step, &mut sb)
                .expect("q8")
                .read_last()
                .expect("read");
            // Relative RMS error (||Δ|| / ||ref||): the max-based measure
            // swings with single outlier logits of these random models.
            let num: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum();
            let den: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum();
            let e = (num / den.max(1e-30)).sqrt();
            worst = worst.max(e);
            assert!(
                e <= 1e-1,
                "{arch:?} on {backend}, step {i}: q8 logits rms rel err {e:.3e} (seed {seed})"
            );
            assert!(
                e > 0.0,
                "{arch:?} on {backend}: q8 gave the exact logits: it did not quantize"
            );
            agree += usize::from(argmax(&a) == argmax(&b));
            // Both continue with the f32 path's greedy token.
            step = vec![argmax(&a)];
        }
        if print {
            eprintln!(
                "{arch:?} {weights} on {backend}: int8 activations, worst logits rms rel err {worst:.3e}, greedy agreement {agree}/{STEPS} (seed {seed})"
            );
        }
        assert!(
            agree * 4 >= STEPS * 3,
            "{arch:?} on {backend}: int8 activations chose the f32 token at only {agree} of {STEPS} steps (seed {seed})"
        );
    }
}

/// A stream with no rows in a step is refused by name, on the CPU plan and
/// on burn's ops, and the stream does not advance.
#[test]
fn a_step_without_rows_is_refused() {
    let model = BakedModel::open(&baked_model(Arch::Llama, "int4_sym")).expect("open");
    for dtype in [WeightDtype::Packed, WeightDtype::F32] {
        let b = load(&model, 0, "cpu", dtype);
        let mut s = b.new_stream(16);
        let e = b.forward_tokens(&[], &mut s).err().expect("refused");
        assert!(
            e.to_string().contains("needs at least one token"),
            "{dtype:?}: {e}"
        );
        assert_eq!(s.len(), 0, "{dtype:?}");
        // The stream still works.
        b.forward_tokens(&[1, 2], &mut s).expect("a real step");
        assert_eq!(s.len(), 2, "{dtype:?}");
    }
}
