//! Shard B's decode plan (a GPU with packed weights: the project's own
//! kernels, captured and replayed steps, streams batched) and its CPU plan
//! (packed weights, the project's own loops) against burn's dequantized
//! f32 path on the CPU, on fresh random prompts.
//!
//! The GPU plan runs on Vulkan (Mesa's lavapipe in CI, where
//! HYBRID_TUI_REQUIRE_VULKAN=1 makes a missing adapter a failure). Greedy tokens must be identical for
//! 64 steps; a fork is allowed only at a near tie of the reference's two
//! best logits (1e-5 of the range: summation orders differ). Attention
//! chunks of 16 keys make a 64-step run cross four chunk boundaries.

mod common;

use common::{
    baked_model, baked_model_of, fresh_seed, greedy_request, greedy_tokens, on_a_telling_prompt,
};
use hybrid_tui::bake::store::BakedModel;
use hybrid_tui::config::{Settings, ShardBSettings};
use hybrid_tui::model::Arch;
use hybrid_tui::model::test_model::Preset;
use hybrid_tui::pipeline::{Event, Pipeline};
use hybrid_tui::shard_b::sampling::{Sampler, SamplingParams};
use hybrid_tui::shard_b::{
    BatchItem, DecodeMode, LoadOptions, Logits, ShardB, StepInput, Stream, WeightDtype,
    select_device,
};
use rand::{Rng, SeedableRng};

const STEPS: usize = 64;
const CHUNK: usize = 16;

fn settings(backend: &str) -> ShardBSettings {
    ShardBSettings {
        backend: backend.into(),
        adapter: "auto".into(),
        weights_dtype: "packed".into(),
        threads: 0,
        cpu_cores: String::new(),
        decode: "replay".into(),
    }
}

/// Whether a Vulkan adapter exists (required where
/// HYBRID_TUI_REQUIRE_VULKAN=1).
fn have_vulkan() -> bool {
    if !hybrid_tui::shard_b::device::vulkan_adapters().is_empty() {
        return true;
    }
    assert!(
        std::env::var("HYBRID_TUI_REQUIRE_VULKAN").as_deref() != Ok("1"),
        "HYBRID_TUI_REQUIRE_VULKAN=1 but no Vulkan adapter was found"
    );
    eprintln!("no Vulkan adapter: the decode plan's tests are skipped");
    false
}

/// The reference: burn's ops on the CPU with dequantized f32 weights.
fn reference(model: &BakedModel) -> ShardB {
    let (device, info) = select_device(&settings("cpu")).expect("cpu");
    let b = ShardB::load(model, 0, device, info, WeightDtype::F32).expect("load reference");
    assert_eq!(b.decode_mode(), DecodeMode::Ops);
    b
}

fn planned(model: &BakedModel, mode: DecodeMode) -> ShardB {
    planned_as(model, mode, WeightDtype::Packed)
}

/// The plan with `dtype`'s activations (`packed`: f32, exact;
/// `packed-q8`: int8).
fn planned_as(model: &BakedModel, mode: DecodeMode, dtype: WeightDtype) -> ShardB {
    let (device, info) = select_device(&settings("vulkan")).expect("vulkan");
    let opts = LoadOptions {
        decode: mode,
        ..LoadOptions::new(dtype)
    };
    let b = ShardB::load_with(model, 0, device, info, opts).expect("load the plan");
    assert_eq!(b.decode_mode(), mode, "the model did not take the plan");
    b.set_attention_chunk(CHUNK);
    b
}

fn random_tokens(seed: u64, n: usize, vocab: usize) -> Vec<u32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

/// The CPU plan with packed weights (`packed`: exact).
fn cpu_planned(model: &BakedModel, dtype: WeightDtype) -> ShardB {
    let (device, info) = select_device(&settings("cpu")).expect("cpu");
    let b = ShardB::load(model, 0, device, info, dtype).expect("load the CPU plan");
    assert_eq!(
        b.decode_mode(),
        DecodeMode::Launch,
        "the model did not take the CPU plan"
    );
    b
}

/// A fork of the exact paths is allowed where the reference's best two
/// logits are this close (relative to its largest logit): float sums in
/// another order.
const EXACT_TIE: f32 = 1e-5;
/// The same for int8 activations on both sides (the same kernels over
/// parts or in batches): a float sum in another order can round one
/// activation to the next int8 step (a change of 1/127 of its block's
/// largest value), which moves logits by ~1e-3 of their range; a wrong
/// kernel moves them by far more (a part written over another: 1.2).
const Q8_TIE: f32 = 1e-2;

/// One greedy step of a stream on both sides: the tokens, or None at an
/// allowed fork (a near tie of the reference's best two logits).
struct Pair {
    ours: Stream,
    theirs: Stream,
    sa: Sampler,
    sb: Sampler,
    tokens: Vec<u32>,
    forked: bool,
    /// [`EXACT_TIE`], or [`Q8_TIE`] for a plan with int8 activations.
    tie: f32,
}

impl Pair {
    fn new(plan: &ShardB, reference: &ShardB, capacity: usize) -> Pair {
        Pair {
            ours: plan.new_stream(capacity),
            theirs: reference.new_stream(capacity),
            sa: Sampler::new(SamplingParams::greedy()),
            sb: Sampler::new(SamplingParams::greedy()),
            tokens: Vec::new(),
            forked: false,
            tie: if plan.weights_dtype == WeightDtype::PackedQ8 {
                Q8_TIE
            } else {
                EXACT_TIE
            },
        }
    }

    /// Compare the two sides' next tokens; the common one, or None once
    /// they forked at a near tie.
    fn choose(&mut self, ours: Logits, theirs: Logits, what: &str) -> Option<u32> {
        let r = theirs.read_last().expect("read reference logits");
        let a = self.sa.sample(ours).expect("sample plan");
        let b = self.sb.sample(theirs).expect("sample reference");
        if a != b {
            let range = r.iter().fold(0f32, |m, v| m.max(v.abs()));
            let gap = r[b as usize] - r[a as usize];
            assert!(
                gap <= self.tie * range,
                "{what}: greedy tokens differ after {:?}: plan {a}, reference {b}, logit gap {gap:.3e}",
                self.tokens
            );
            self.forked = true;
            return None;
        }
        self.tokens.push(a);
        Some(a)
    }
}

/// Greedy decoding of one stream: prefill `prompt`, then 64 steps.
fn one_stream(plan: &ShardB, reference: &ShardB, seed: u64, what: &str) -> Vec<u32> {
    let vocab = plan.spec.vocab_size;
    let prompt = random_tokens(seed, 10, vocab);
    let mut p = Pair::new(plan, reference, 256);
    let mut ours = plan.forward_tokens(&prompt, &mut p.ours).expect("prefill");
    let mut theirs = reference
        .forward_tokens(&prompt, &mut p.theirs)
        .expect("prefill");
    for _ in 0..STEPS {
        let Some(t) = p.choose(ours, theirs, what) else {
            break;
        };
        ours = plan.forward_tokens(&[t], &mut p.ours).expect("decode");
        theirs = reference
            .forward_tokens(&[t], &mut p.theirs)
            .expect("decode");
    }
    p.tokens
}

/// Replayed and launched plans decode the reference's greedy tokens on
/// each test model (Llama; Qwen2 with q/k/v biases and tied embeddings;
/// Mistral, whose 16-token sliding window the run crosses), over four
/// attention-chunk boundaries; the replayed one captures a step and
/// replays it, the launched one never captures.
#[test]
fn the_plan_decodes_like_the_dequantized_path() {
    if !have_vulkan() {
        return;
    }
    for (arch, weights) in [
        (Arch::Llama, "int4_sym"),
        (Arch::Qwen2, "int4_sym"),
        (Arch::Mistral, "int4_asym"),
    ] {
        let model = BakedModel::open(&baked_model(arch, weights)).expect("open");
        let reference = reference(&model);
        for mode in [DecodeMode::Replay, DecodeMode::Launch] {
            let plan = planned(&model, mode);
            let what = format!("{arch:?} {weights}, {}", mode.name());
            // A step shape is captured once per plan: when a degenerate
            // prompt is replaced by another, the capture came in the
            // earlier attempt, so captures count from the first.
            let start = plan.plan_stats().expect("plan stats");
            on_a_telling_prompt(&what, |seed| {
                let before = plan.plan_stats().expect("plan stats");
                let tokens = one_stream(&plan, &reference, seed, &format!("{what} (seed {seed})"));
                let now = plan.plan_stats().expect("plan stats");
                let work = now.since(&before);
                let captured = now.since(&start).captures;
                let steps = tokens.len() as u64;
                match mode {
                    DecodeMode::Replay if steps >= 2 => {
                        assert!(captured >= 1, "{what}: nothing captured: {work:?}");
                        assert!(
                            work.replays + 2 >= steps,
                            "{what}: {steps} decode steps but {} replays: {work:?}",
                            work.replays
                        );
                    }
                    DecodeMode::Launch => {
                        assert_eq!((work.captures, work.replays), (0, 0), "{what}: {work:?}")
                    }
                    _ => {}
                }
                assert!(work.launches >= steps * 10, "{what}: {work:?}");
                tokens
            });
        }
    }
}

/// Heads of 64 dimensions, as the real models have (the tiny models' are
/// 32): each attention unit then takes two dimensions of the values. The
/// `small` preset, 2 query heads per KV head, replayed: the prompt's step
/// attends in one pass, and the 64 decode steps cross four boundaries of
/// 16-key chunks.
#[test]
fn wide_heads_decode_like_the_dequantized_path() {
    if !have_vulkan() {
        return;
    }
    let model =
        BakedModel::open(&baked_model_of(Arch::Llama, Preset::Small, "int4_sym")).expect("open");
    assert_eq!(model.spec().head_dim, 64, "the small preset's head width");
    let reference = reference(&model);
    let plan = planned(&model, DecodeMode::Replay);
    on_a_telling_prompt("small llama", |seed| {
        one_stream(
            &plan,
            &reference,
            seed,
            &format!("small llama (seed {seed})"),
        )
    });
}

/// The CPU plan (exact packed weights) decodes the reference's greedy
/// tokens on each test model (Llama; Qwen2 with q/k/v biases and tied
/// embeddings; Mistral, whose 16-token sliding window the run crosses),
/// and counts its steps and each part's time.
#[test]
fn the_cpu_plan_decodes_like_the_dequantized_path() {
    for (arch, weights) in [
        (Arch::Llama, "int4_sym"),
        (Arch::Qwen2, "int4_sym"),
        (Arch::Mistral, "int4_asym"),
    ] {
        let model = BakedModel::open(&baked_model(arch, weights)).expect("open");
        let reference = reference(&model);
        let plan = cpu_planned(&model, WeightDtype::Packed);
        let what = format!("{arch:?} {weights}, CPU plan");
        on_a_telling_prompt(&what, |seed| {
            let before = plan.plan_stats().expect("plan stats");
            let tokens = one_stream(&plan, &reference, seed, &format!("{what} (seed {seed})"));
            let work = plan.plan_stats().expect("plan stats").since(&before);
            assert!(work.steps > tokens.len() as u64, "{what}: {work:?}");
            assert!(
                work.parts_ns.iter().filter(|&&ns| ns > 0).count() >= 8,
                "{what}: parts not timed: {work:?}"
            );
            tokens
        });
    }
}

/// Weights cut into parts of 4 KiB (the 1B model's lm_head and tied
/// embedding table are two parts of ≤ 128 MiB; here every projection is
/// several): the plan still decodes the reference's tokens, with untied
/// (Llama) and tied (Qwen2) embeddings looked up part by part; with int8
/// activations, the tokens of the same plan with whole weights.
#[test]
fn weights_in_several_parts_decode_alike() {
    if !have_vulkan() {
        return;
    }
    for (arch, weights) in [(Arch::Llama, "int4_sym"), (Arch::Qwen2, "int4_sym")] {
        let model = BakedModel::open(&baked_model(arch, weights)).expect("open");
        let reference = reference(&model);
        let (device, info) = select_device(&settings("vulkan")).expect("vulkan");
        let opts = LoadOptions {
            max_part_bytes: 4096,
            ..LoadOptions::new(WeightDtype::Packed)
        };
        let plan = ShardB::load_with(&model, 0, device, info, opts).expect("load");
        assert_eq!(plan.decode_mode(), DecodeMode::Replay);
        plan.set_attention_chunk(CHUNK);
        let what = format!("{arch:?} {weights} in 4 KiB parts");
        on_a_telling_prompt(&what, |seed| {
            one_stream(&plan, &reference, seed, &format!("{what} (seed {seed})"))
        });
        // Int8 activations: each part's rows take the same blocks, so the
        // parts decode as the whole weights do on the same kernels.
        let whole = planned_as(&model, DecodeMode::Replay, WeightDtype::PackedQ8);
        let (device, info) = select_device(&settings("vulkan")).expect("vulkan");
        let opts = LoadOptions {
            max_part_bytes: 4096,
            ..LoadOptions::new(WeightDtype::PackedQ8)
        };
        let parts = ShardB::load_with(&model, 0, device, info, opts).expect("load");
        parts.set_attention_chunk(CHUNK);
        let what = format!("{arch:?} {weights} with int8 activations, in 4 KiB parts");
        on_a_telling_prompt(&what, |seed| {
            one_stream(&parts, &whole, seed, &format!("{what} (seed {seed})"))
        });
    }
}

/// Four streams of different lengths decoded in batches of changing
/// composition (all four, three, two, one, in shifting order): each
/// stream's tokens are those of its own reference run. Streams 2 and 3
/// join after 8 steps (on the plan their cache slots grow the pool while
/// the others' caches hold tokens; stream 3 asks for more positions, so
/// every slot is moved), stream 2 is reset and restarted on a new prompt
/// midway, and stream 1 is dropped and replaced by a new stream (which
/// takes its slot) at three quarters. On the plan (Vulkan) with the
/// caches in one bank and, with banks cut to 4 KiB, in a bank per stream;
/// on the CPU plan with packed weights; and on burn's ops on the CPU with
/// packed weights (batched the same way); with int8 activations on the
/// plan against the same plan's streams one at a time.
#[test]
fn batched_streams_decode_as_each_would_alone() {
    let model = BakedModel::open(&baked_model(Arch::Llama, "int4_sym")).expect("open");
    let reference = reference(&model);
    let cpu = cpu_planned(&model, WeightDtype::Packed);
    check_batched(&cpu, &reference, "batched on the CPU plan");
    let (device, info) = select_device(&settings("cpu")).expect("cpu");
    let opts = LoadOptions {
        decode: DecodeMode::Ops,
        ..LoadOptions::new(WeightDtype::Packed)
    };
    let ops = ShardB::load_with(&model, 0, device, info, opts).expect("load");
    assert_eq!(ops.decode_mode(), DecodeMode::Ops);
    check_batched(&ops, &reference, "batched on burn's ops on the CPU");
    // Nothing to build off the GPU plan.
    assert_eq!(cpu.warm_up().expect("warm up"), Vec::<usize>::new());
    if have_vulkan() {
        let plan = planned(&model, DecodeMode::Replay);
        // The kernels of 1-, 2-, 4- and 8-row steps built beforehand, over
        // throwaway caches whose slots the streams below then take.
        assert_eq!(plan.warm_up().expect("warm up"), vec![1, 2, 4, 8]);
        check_batched(&plan, &reference, "batched on the plan");
        let (device, info) = select_device(&settings("vulkan")).expect("vulkan");
        let opts = LoadOptions {
            max_part_bytes: 4096,
            ..LoadOptions::new(WeightDtype::Packed)
        };
        let banks = ShardB::load_with(&model, 0, device, info, opts).expect("load");
        banks.set_attention_chunk(CHUNK);
        check_batched(&banks, &reference, "batched on the plan, a bank per stream");
        // Int8 activations (packed-q8) quantize each row by itself: a
        // batch decodes as each stream would alone on the same kernels.
        let q8 = planned_as(&model, DecodeMode::Replay, WeightDtype::PackedQ8);
        let alone = planned_as(&model, DecodeMode::Launch, WeightDtype::PackedQ8);
        check_batched(&q8, &alone, "int8 activations batched, against each alone");
    }
}

fn check_batched(plan: &ShardB, reference: &ShardB, what: &str) {
    let vocab = plan.spec.vocab_size;
    let seed = fresh_seed();
    let what = format!("{what} (seed {seed})");
    let mut pairs: Vec<Pair> = Vec::new();
    let mut next: Vec<Option<u32>> = vec![None; 4];
    let prefill = |p: &mut Pair, prompt: &[u32], what: &str| -> Option<u32> {
        let ours = plan.forward_tokens(prompt, &mut p.ours).expect("prefill");
        let theirs = reference
            .forward_tokens(prompt, &mut p.theirs)
            .expect("prefill");
        p.choose(ours, theirs, what)
    };
    let join = |pairs: &mut Vec<Pair>, next: &mut Vec<Option<u32>>, capacity: usize| {
        let i = pairs.len();
        let mut p = Pair::new(plan, reference, capacity);
        let prompt = random_tokens(seed + i as u64, 5 + 5 * i, vocab);
        next[i] = prefill(&mut p, &prompt, &format!("{what} stream {i}"));
        pairs.push(p);
    };
    join(&mut pairs, &mut next, 256);
    join(&mut pairs, &mut next, 256);
    let before = plan.plan_stats();
    let mut batched_steps = 0u64;
    for step in 0..STEPS {
        if step == 8 {
            join(&mut pairs, &mut next, 256);
            join(&mut pairs, &mut next, 320);
        }
        if step == 3 * STEPS / 4 {
            // Stream 1 ends; a new one takes its place (and its slot).
            drop(pairs.remove(1));
            let mut p = Pair::new(plan, reference, 256);
            let prompt = random_tokens(seed + 200, 9, vocab);
            next[1] = prefill(&mut p, &prompt, &format!("{what} stream 1 replaced"));
            pairs.insert(1, p);
        }
        if step == STEPS / 2 {
            // Stream 2 starts over on a new prompt.
            let p = &mut pairs[2];
            p.ours.reset();
            p.theirs.reset();
            p.sa = Sampler::new(SamplingParams::greedy());
            p.sb = Sampler::new(SamplingParams::greedy());
            p.tokens.clear();
            p.forked = false;
            let prompt = random_tokens(seed + 100, 7, vocab);
            next[2] = prefill(p, &prompt, &format!("{what} stream 2 after its reset"));
        }
        // Which streams take part: all, then three, two, one, rotating.
        let size = 4 - step % 4;
        let mut chosen: Vec<usize> = (0..size)
            .map(|j| (step + j) % 4)
            .filter(|&i| next[i].is_some())
            .collect();
        chosen.sort_unstable();
        if chosen.is_empty() {
            continue;
        }
        let toks: Vec<[u32; 1]> = chosen
            .iter()
            .filter_map(|&i| next[i].map(|t| [t]))
            .collect();
        let mut items: Vec<BatchItem> = pairs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| chosen.contains(i))
            .zip(&toks)
            .map(|((_, p), t)| BatchItem {
                input: StepInput::Tokens(t),
                stream: &mut p.ours,
            })
            .collect();
        batched_steps += u64::from(items.len() > 1);
        let ours = plan.forward_batch(&mut items).expect("batched decode");
        drop(items);
        for ((&i, l), t) in chosen.iter().zip(ours).zip(&toks) {
            let p = &mut pairs[i];
            let theirs = reference
                .forward_tokens(t, &mut p.theirs)
                .expect("reference decode");
            next[i] = p.choose(l, theirs, &format!("{what} stream {i} step {step}"));
        }
    }
    assert!(batched_steps >= STEPS as u64 / 2, "{what}: {batched_steps}");
    if let (Some(after), Some(before)) = (plan.plan_stats(), before) {
        let work = after.since(&before);
        assert!(
            plan.decode_mode() != DecodeMode::Replay || work.replays > 0,
            "{what}: no step was replayed: {work:?}"
        );
        assert!(
            work.segments > work.steps,
            "{what}: nothing batched: {work:?}"
        );
    }
    for (i, p) in pairs.iter().enumerate() {
        assert!(
            p.forked || p.tokens.len() >= 8,
            "{what}: stream {i} decoded only {:?}",
            p.tokens
        );
    }
}

fn pipeline_settings(k: i64) -> Settings {
    let mut s = Settings::default();
    s.executive.path = env!("CARGO_BIN_EXE_hybrid-executive").into();
    s.shard_a.inference_precision = "f32".into();
    s.shard_a.prefill_chunk = 8;
    s.shard_a.kv_capacity = 128;
    s.split.layers = k;
    s.ring.slots = 4;
    s.shard_b = settings("vulkan");
    s
}

/// `got` follows the reference's tokens, or forks from them at a near tie.
fn follows(got: &[u32], want: &[u32], logits: &[Vec<f32>], what: &str) {
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        if a != b {
            let r = &logits[i];
            let range = r.iter().fold(0f32, |m, v| m.max(v.abs()));
            let gap = r[*b as usize] - r[*a as usize];
            assert!(
                gap <= EXACT_TIE * range,
                "{what}: token {i} is {a}, the reference's {b} (logit gap {gap:.3e}): {got:?} vs {want:?}"
            );
            return;
        }
    }
    assert_eq!(got.len(), want.len(), "{what}");
}

/// The pipeline with shard B on the plan (k = 1: shard A's OpenVINO runs
/// layer 0): three streams of different lengths, whose decode steps shard
/// B batches, each follow their reference run; and an executive killed
/// mid-stream is restarted without changing the tokens.
#[test]
fn the_pipeline_batches_streams_on_the_plan_and_survives_a_restart() {
    if !have_vulkan() {
        return;
    }
    let dir = baked_model(Arch::Llama, "int4_sym");
    let model = BakedModel::open(&dir).expect("open");
    let reference = reference(&model);
    let vocab = model.spec().vocab_size;
    let seed = fresh_seed();
    let prompts: Vec<Vec<u32>> = (0..3)
        .map(|i| random_tokens(seed + i, 6 + 5 * i as usize, vocab - 8))
        .collect();
    let mut p = Pipeline::new(&pipeline_settings(1), &dir, &mut |_| {}).expect("pipeline");
    assert_eq!(p.shard_b.decode_mode(), DecodeMode::Replay);
    let before = p.shard_b.plan_stats().expect("stats");
    let reports = p
        .run(
            prompts
                .iter()
                .map(|q| greedy_request(q.clone(), 32, false))
                .collect(),
            &mut |_| {},
        )
        .expect("run");
    let work = p.shard_b.plan_stats().expect("stats").since(&before);
    assert!(
        work.segments > work.steps,
        "no step of shard B took more than one stream: {work:?}"
    );
    for (i, (r, q)) in reports.iter().zip(&prompts).enumerate() {
        let (want, logits) = greedy_tokens(&reference, q, 32);
        follows(
            &r.tokens,
            &want,
            &logits,
            &format!("stream {i} (seed {seed})"),
        );
    }

    // The same prompt again, alone, with the executive killed after 10 tokens.
    let q = prompts[0].clone();
    let first = p.executive().expect("executive").pid;
    p.submit(greedy_request(q, 32, false)).expect("submit");
    let mut tokens = 0;
    let mut killed = false;
    while p.active() > 0 {
        p.poll(&mut |e| {
            if matches!(e, Event::Token { .. }) {
                tokens += 1;
            }
        })
        .expect("poll");
        if tokens >= 10 && !killed {
            unsafe { libc::kill(first as i32, libc::SIGKILL) };
            killed = true;
        }
    }
    let again = p.take_finished().pop().expect("report");
    assert_eq!(p.restarts(), 1);
    assert_eq!(
        again.tokens, reports[0].tokens,
        "the stream changed across the executive's restart (seed {seed})"
    );
    p.shutdown();
}
