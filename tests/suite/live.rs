//! Live ablation re-runs (`analysis::live`) against from-scratch ablated runs from layer 0 on the
//! tiny fixture models: the teacher-forced log-prob of the original answer (1e-4) and the greedy
//! regeneration (identical ids), for zero, mean and uniform head ablation, MLP ablation and both,
//! with the earliest ablated layer at the bottom, in the middle and at the top; and the standing
//! ablation the explorer puts in force afterwards against the same sets as per-forward hooks.

use std::cell::Cell;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use headscope::analysis::ablation::{ablation_kind, head_set_ablation};
use headscope::analysis::live::{ablated_subject, rerun, LiveBase, LiveRun};
use headscope::analysis::Subject;
use headscope::engine::generate::{answer_logprob_per_row, top_k};
use headscope::engine::{
    AblationMode, AblationSet, Capture, Engine, Hooks, LoadOptions, Positions, Start,
};
use headscope::prompt::{load_samples, PromptStyle};
use headscope::Error;

use crate::common;

/// Longer than the subject's own answer may be (64 tokens, the default), so re-runs whose answer
/// repeats all of the original one still decode new tokens after it.
const MAX_NEW: usize = 96;

struct Case {
    engine: Engine,
    subject: Subject,
    base: LiveBase,
}

/// The fixture `family` with the analysis sample, its answer generated (greedy) or, with
/// `generate = false`, the sample's `output` (which greedy regeneration departs from).
fn case_with(family: &str, generate: bool) -> Case {
    let model = common::fixture_with_context(family, 512);
    let engine = Engine::load(&LoadOptions::new(model.to_string_lossy().to_string())).unwrap();
    let sample_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    let sample = load_samples(&sample_path).unwrap().remove(0);
    let cfg = headscope::engine::GenerationConfig::default();
    let subject = Subject::prepare(
        &engine,
        sample,
        &PromptStyle::Mirage.into(),
        &cfg,
        generate,
        |_| true,
    )
    .unwrap();
    let base = LiveBase::new(&engine, &subject).unwrap();
    Case {
        engine,
        subject,
        base,
    }
}

fn case(family: &str) -> Case {
    case_with(family, true)
}

fn set(heads: &[(usize, usize)], mlps: &[usize], mode: AblationMode) -> AblationSet {
    AblationSet {
        heads: heads.iter().copied().collect(),
        mlps: mlps.iter().copied().collect(),
        mode,
    }
}

/// The engine's interventions for `set`, for a forward from layer 0.
fn interventions(c: &Case, set: &AblationSet) -> Hooks {
    let e = &c.engine;
    let layers = e.arch().num_layers;
    let head_ablation = (!set.heads.is_empty()).then(|| {
        let kind = ablation_kind(e, &c.subject, set.mode).unwrap();
        head_set_ablation(e, &[set.heads.iter().copied().collect()], &kind).unwrap()
    });
    let mlp_mask = (!set.mlps.is_empty()).then(|| {
        let keep: Vec<f32> = (0..layers)
            .map(|l| if set.mlps.contains(&l) { 0.0 } else { 1.0 })
            .collect();
        Tensor::from_vec(keep, (1, layers), &Device::Cpu).unwrap()
    });
    Hooks {
        head_ablation,
        mlp_mask,
        ..Default::default()
    }
}

/// Teacher-forced `log p(answer)` under `hooks`, one forward from the token ids.
fn scratch_logprob(e: &Engine, subject: &Subject, hooks: &Hooks) -> f64 {
    let (prompt, answer) = (&subject.prompt.ids, subject.answer_ids());
    let p = prompt.len();
    let mut ids = prompt.clone();
    ids.extend_from_slice(&answer[..answer.len() - 1]);
    let input = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu).unwrap();
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::Range(p - 1..p - 1 + answer.len())),
            ..Default::default()
        },
        ..hooks.clone()
    };
    let trace = e.forward(Start::Tokens(&input), None, &hooks).unwrap();
    answer_logprob_per_row(trace.logits.as_ref().unwrap(), answer).unwrap()[0]
}

/// Greedy decoding under `hooks` from layer 0: prompt prefill, then KV-cached steps.
fn scratch_greedy(e: &Engine, subject: &Subject, hooks: &Hooks) -> Vec<u32> {
    let prompt = &subject.prompt.ids;
    let step = |ids: &[u32], past: Option<&headscope::engine::KvCache>| {
        let input = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
        let hooks = Hooks {
            capture: Capture {
                logits: Some(Positions::List(vec![ids.len() - 1])),
                kv_cache: true,
                ..Default::default()
            },
            ..hooks.clone()
        };
        let trace = e.forward(Start::Tokens(&input), past, &hooks).unwrap();
        let row = trace.logits.unwrap().flatten_all().unwrap();
        let row = row.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap();
        (top_k(&row, 1)[0].0, trace.kv_cache.unwrap())
    };
    let (mut next, mut cache) = step(prompt, None);
    let mut out = Vec::new();
    while !e.stop_ids().contains(&next) && out.len() < MAX_NEW {
        out.push(next);
        (next, cache) = step(&[next], Some(&cache));
    }
    out
}

#[track_caller]
fn check(c: &Case, set: &AblationSet) -> LiveRun {
    let run = rerun(&c.engine, &c.subject, &c.base, set, MAX_NEW, &|| false).unwrap();
    let what = format!("{set:?}");
    assert_eq!(run.recomputed_from_layer, set.earliest_layer(), "{what}");
    assert_eq!(&run.set, set);
    let hooks = interventions(c, set);
    let want = scratch_logprob(&c.engine, &c.subject, &hooks);
    let got = run.original_answer_logprob;
    assert!((got - want).abs() < 1e-4, "{what}: log p {got} vs {want}");
    let delta = want - c.base.clean_logprob();
    assert!((run.delta_logprob - delta).abs() < 1e-4, "{what}: Δ");
    assert_eq!(
        run.answer_ids,
        scratch_greedy(&c.engine, &c.subject, &hooks),
        "{what}: greedy ids"
    );
    if let (Some(ab), true) = (&hooks.head_ablation, set.mlps.is_empty()) {
        let e = &c.engine;
        let prompt = &c.subject.prompt.ids;
        let ids = e.generate_ablated(prompt, MAX_NEW, ab, || true).unwrap();
        assert_eq!(run.answer_ids, ids[0], "{what}: generate_ablated");
    }
    assert_eq!(run.answer_logprobs.len(), run.answer_ids.len());
    assert_eq!(run.answer_text, c.engine.decode(&run.answer_ids).unwrap());
    let original = c.subject.answer_ids();
    let same = run.answer_ids == original;
    assert_eq!(run.first_change.is_none(), same, "{what}: first change");
    if let Some(i) = run.first_change {
        assert_eq!(
            run.answer_ids[..i],
            original[..i],
            "{what}: before the change"
        );
    }
    run
}

fn heads_and_mlps_match_from_scratch(family: &str) {
    let (mut departed, mut decoded) = (0, 0);
    let mut tally = |run: LiveRun, c: &Case| {
        let a = c.subject.answer_ids().len();
        decoded += usize::from(run.forwards > 1);
        departed += usize::from(run.first_change.is_some_and(|i| i < a) && run.forwards > 1);
    };
    let c = case(family);
    let (layers, heads) = (c.engine.arch().num_layers, c.engine.arch().num_heads);
    let top = layers - 1;
    let head_sets = [
        vec![(0, 1), (top, 2)],
        vec![(1, 0), (1, 3), (top, 1)],
        vec![(top, 0), (top, heads - 1)],
        (0..heads).map(|h| (1, h)).collect(),
        (0..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .collect(),
    ];
    let kinds = [
        AblationMode::Zero,
        AblationMode::Mean,
        AblationMode::Uniform,
    ];
    for kind in kinds {
        for heads in &head_sets {
            tally(check(&c, &set(heads, &[], kind)), &c);
        }
    }
    for mlps in [vec![0], vec![1], vec![top], vec![1, top]] {
        tally(check(&c, &set(&[], &mlps, AblationMode::Zero)), &c);
    }
    tally(check(&c, &set(&[(2, 1)], &[1], AblationMode::Mean)), &c);
    tally(
        check(&c, &set(&[(1, 1)], &[top], AblationMode::Uniform)),
        &c,
    );
    // The sample's own output: greedy regeneration departs from it at once.
    let c = case_with(family, false);
    for kind in kinds {
        tally(check(&c, &set(&[(1, 2), (top, 0)], &[], kind)), &c);
    }
    tally(check(&c, &set(&[(top, 3)], &[top], AblationMode::Zero)), &c);
    // Decoding steps ran, also after a departure from the original answer.
    assert!(
        decoded > 0 && departed > 0,
        "{family}: {decoded} decoded, {departed} departed"
    );
}

#[test]
fn qwen2_matches_from_scratch() {
    heads_and_mlps_match_from_scratch("qwen2");
}

#[test]
fn gemma2_matches_from_scratch() {
    heads_and_mlps_match_from_scratch("gemma2");
}

#[test]
fn llama_matches_from_scratch() {
    heads_and_mlps_match_from_scratch("llama");
}

#[test]
fn empty_set_is_the_clean_answer_without_model_work() {
    let c = case("qwen2");
    let before = c.engine.forward_count();
    // The head ablation's kind does not matter when no head is ablated.
    for kind in [AblationMode::Zero, AblationMode::Mean] {
        let empty = set(&[], &[], kind);
        assert!(empty.is_empty() && empty.earliest_layer().is_none());
        let run = rerun(&c.engine, &c.subject, &c.base, &empty, MAX_NEW, &|| false).unwrap();
        assert_eq!(c.engine.forward_count(), before);
        assert_eq!(run.answer_ids, c.subject.answer_ids());
        assert_eq!(run.answer_logprobs, c.subject.answer.logprobs);
        assert_eq!(run.recomputed_from_layer, None);
        assert_eq!(
            (run.forwards, run.delta_logprob, run.first_change),
            (0, 0.0, None)
        );
        let total = c.subject.answer.total_logprob();
        assert!((run.original_answer_logprob - total).abs() < 1e-3);
    }
}

#[test]
fn the_rerun_starts_at_the_earliest_ablated_layer() {
    let c = case("gemma2");
    let top = c.engine.arch().num_layers - 1;
    for (s, l0) in [
        (set(&[(2, 0)], &[top], AblationMode::Zero), 2),
        (set(&[(top, 3)], &[1], AblationMode::Zero), 1),
        (set(&[(top, 3)], &[], AblationMode::Zero), top),
        (set(&[(0, 0), (top, 1)], &[2], AblationMode::Zero), 0),
    ] {
        assert_eq!(s.earliest_layer(), Some(l0));
        assert_eq!(check(&c, &s).recomputed_from_layer, Some(l0));
    }
}

#[test]
fn toggling_adds_and_removes() {
    let mut s = AblationSet::default();
    assert!(s.toggle_head(3, 1));
    assert!(s.toggle_mlp(2));
    assert_eq!(s.earliest_layer(), Some(2));
    assert!(!s.toggle_mlp(2));
    assert_eq!(s.earliest_layer(), Some(3));
    assert!(!s.toggle_head(3, 1));
    assert!(s.is_empty());
    let json = serde_json::to_string(&set(&[(1, 2)], &[0], AblationMode::Uniform)).unwrap();
    let back: AblationSet = serde_json::from_str(&json).unwrap();
    assert_eq!(back, set(&[(1, 2)], &[0], AblationMode::Uniform));
}

#[test]
fn bad_sets_and_bases_are_errors() {
    let c = case("qwen2");
    let (layers, heads) = (c.engine.arch().num_layers, c.engine.arch().num_heads);
    for bad in [
        set(&[(layers, 0)], &[], AblationMode::Zero),
        set(&[(0, heads)], &[], AblationMode::Mean),
        set(&[], &[layers], AblationMode::Zero),
    ] {
        let err = rerun(&c.engine, &c.subject, &c.base, &bad, MAX_NEW, &|| false).unwrap_err();
        assert!(matches!(err, Error::Analysis(_)), "{bad:?}: {err}");
    }
    let mut other = c.subject.clone();
    other.answer.answer_ids.push(other.answer.answer_ids[0]);
    let ok = set(&[(0, 0)], &[], AblationMode::Zero);
    let err = rerun(&c.engine, &other, &c.base, &ok, MAX_NEW, &|| false).unwrap_err();
    assert!(matches!(err, Error::Analysis(_)), "{err}");
}

#[test]
fn cancel_stops_a_rerun() {
    let c = case("qwen2");
    let s = set(&[(0, 0), (1, 2)], &[], AblationMode::Zero);
    let err = rerun(&c.engine, &c.subject, &c.base, &s, MAX_NEW, &|| true).unwrap_err();
    assert!(matches!(err, Error::Cancelled));
    // Cancelled between decoding steps: the run stops with the second poll.
    let polls = Cell::new(0);
    let cancel = || {
        polls.set(polls.get() + 1);
        polls.get() > 1
    };
    match rerun(&c.engine, &c.subject, &c.base, &s, MAX_NEW, &cancel) {
        Err(Error::Cancelled) => assert_eq!(polls.get(), 2),
        // No decoding step was needed (the answer stopped within the teacher-forced rows).
        Ok(run) => assert_eq!((run.forwards, polls.get()), (1, 1)),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_forward_from_a_later_layer_returns_the_cache_of_the_layers_it_ran() {
    let c = case("gemma2");
    let e = &c.engine;
    let layers = e.arch().num_layers;
    let ids = c.subject.full_ids();
    let input = Tensor::from_vec(ids.clone(), (1, ids.len()), &Device::Cpu).unwrap();
    let with = |capture: Capture| Hooks {
        capture,
        ..Default::default()
    };
    let clean = e
        .forward(
            Start::Tokens(&input),
            None,
            &with(Capture {
                resid_pre: Some(Positions::All),
                kv_cache: true,
                ..Default::default()
            }),
        )
        .unwrap();
    let full = clean.kv_cache.as_ref().unwrap();
    let l0 = 2;
    let resid = clean
        .get(&format!("blocks.{l0}.hook_resid_pre"))
        .unwrap()
        .clone();
    let cache_only = with(Capture {
        kv_cache: true,
        ..Default::default()
    });
    let upper = e
        .forward(
            Start::ResidPre {
                layer: l0,
                resid: resid.clone(),
            },
            None,
            &cache_only,
        )
        .unwrap()
        .kv_cache
        .unwrap();
    assert_eq!(upper.layers.len(), layers - l0);
    assert_eq!(upper.len(), ids.len());
    let merged = full.with_layers_from(l0, &upper).unwrap();
    assert_eq!(merged.layers.len(), layers);
    for (l, (x, y)) in merged.layers.iter().zip(&full.layers).enumerate() {
        for (a, b) in [(x.keys(), y.keys()), (x.values(), y.values())] {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "layer {l}");
        }
    }
    // A full-depth upper cache works too; mismatched depths or lengths are errors.
    assert_eq!(
        full.with_layers_from(l0, full).unwrap().layers.len(),
        layers
    );
    assert!(full.with_layers_from(l0 + 1, &upper).is_err());
    assert!(full
        .truncate(5)
        .unwrap()
        .with_layers_from(l0, &upper)
        .is_err());
    // A partial cache is no past for a forward, and a forward from inside a layer keeps none.
    let one = Tensor::from_vec(vec![ids[0]], (1, 1), &Device::Cpu).unwrap();
    assert!(e
        .forward(Start::Tokens(&one), Some(&upper), &cache_only)
        .is_err());
    let mid = Start::ResidMid { layer: l0, resid };
    assert!(matches!(
        e.forward(mid, None, &cache_only),
        Err(Error::Hook(_))
    ));
}

/// Sums `logprobs` in f64.
fn total(logprobs: &[f32]) -> f64 {
    logprobs.iter().map(|&x| x as f64).sum()
}

/// A standing ablation acts in every forward exactly as the same set passed as hooks does:
/// teacher-forced scoring, greedy decoding with a KV cache, the engine's own generation, the
/// prefix-reusing head sweep (which starts at `resid_pre`) and the ablated subject agree with
/// from-scratch hook ablation; clearing it gives the clean model back.
fn standing_matches_hooks(family: &str) {
    let mut c = case(family);
    let layers = c.engine.arch().num_layers;
    let top = layers - 1;
    let sets = [
        set(&[(0, 1), (top, 2)], &[], AblationMode::Zero),
        set(&[(1, 0), (top, 1)], &[], AblationMode::Mean),
        set(&[(1, 1), (top, 0)], &[1], AblationMode::Uniform),
        set(&[], &[0, top], AblationMode::Zero),
    ];
    let clean = c.base.clean_logprob();
    for s in &sets {
        let what = format!("{family} {s:?}");
        // The reference: the set as this forward's own hooks, on the unablated model.
        let hooks = interventions(&c, s);
        let want_logprob = scratch_logprob(&c.engine, &c.subject, &hooks);
        let want_ids = scratch_greedy(&c.engine, &c.subject, &hooks);
        let run = rerun(&c.engine, &c.subject, &c.base, s, MAX_NEW, &|| false).unwrap();

        let model = c.base.ablate(&mut c.engine, s).unwrap();
        let got = scratch_logprob(&model, &c.subject, &Hooks::default());
        assert!(
            (got - want_logprob).abs() < 1e-5,
            "{what}: {got} vs {want_logprob}"
        );
        assert_eq!(
            scratch_greedy(&model, &c.subject, &Hooks::default()),
            want_ids,
            "{what}: greedy"
        );
        let cfg = headscope::engine::GenerationConfig {
            max_new_tokens: MAX_NEW,
            ..Default::default()
        };
        let generated = model
            .generate(&c.subject.prompt.ids, &cfg, |_| true)
            .unwrap();
        assert_eq!(generated.answer_ids, want_ids, "{what}: Engine::generate");
        // Live re-runs refuse to start from an ablated model.
        assert!(matches!(
            rerun(&model, &c.subject, &c.base, s, MAX_NEW, &|| false),
            Err(Error::Analysis(_))
        ));
        // The ablated model's subject is the re-run's answer with the re-run's log-probs.
        let ablated = ablated_subject(&model, &c.subject, &run, 3).unwrap();
        if run.answer_ids.is_empty() {
            assert_eq!(ablated.answer_ids(), c.subject.answer_ids(), "{what}");
        } else {
            assert_eq!(ablated.answer_ids(), &run.answer_ids[..], "{what}");
            let (a, b) = (total(&ablated.answer.logprobs), total(&run.answer_logprobs));
            assert!((a - b).abs() < 1e-4, "{what}: answer log p {a} vs {b}");
        }
        assert!(ablated.state.is_some(), "{what}: re-scoring state");
        drop(model);
        let back = scratch_logprob(&c.engine, &c.subject, &Hooks::default());
        assert!(
            (back - clean).abs() < 1e-5,
            "{what}: cleared {back} vs {clean}"
        );
    }

    // A forward's own ablation composes with the standing one: zero A standing plus zero B as
    // hooks is zero A ∪ B.
    let a = set(&[(0, 0), (1, 2)], &[top], AblationMode::Zero);
    let b = set(&[(top, 1)], &[], AblationMode::Zero);
    let union = set(&[(0, 0), (1, 2), (top, 1)], &[top], AblationMode::Zero);
    let want = scratch_logprob(&c.engine, &c.subject, &interventions(&c, &union));
    let b_hooks = interventions(&c, &b);
    let model = c.base.ablate(&mut c.engine, &a).unwrap();
    let got = scratch_logprob(&model, &c.subject, &b_hooks);
    assert!(
        (got - want).abs() < 1e-5,
        "{family}: composed {got} vs {want}"
    );

    // The prefix-reusing sweep under the standing set: each head's Δ is the union's from scratch
    // minus the standing set's.
    let sweep = headscope::analysis::ablation::head_ablation_sweep(
        &model,
        &c.subject.prompt.ids,
        c.subject.answer_ids(),
        4,
        &mut |_, _| true,
    )
    .unwrap();
    let base_a = scratch_logprob(&model, &c.subject, &Hooks::default());
    assert!(
        (sweep.clean_logprob - base_a).abs() < 1e-4,
        "{family}: sweep base"
    );
    drop(model);
    for (l, h) in [(0, 1), (top, 1), (1, 2)] {
        let mut heads = a.heads.clone();
        heads.insert((l, h));
        let with = AblationSet { heads, ..a.clone() };
        let want = scratch_logprob(&c.engine, &c.subject, &interventions(&c, &with)) - base_a;
        let got = sweep.delta_logprob[l][h];
        assert!(
            (got - want).abs() < 1e-4,
            "{family} L{l}H{h}: Δ {got} vs {want}"
        );
    }
}

#[test]
fn qwen2_standing_ablation_matches_hooks() {
    standing_matches_hooks("qwen2");
}

#[test]
fn gemma2_standing_ablation_matches_hooks() {
    standing_matches_hooks("gemma2");
}

#[test]
fn llama_standing_ablation_matches_hooks() {
    standing_matches_hooks("llama");
}

#[test]
fn bad_standing_ablations_are_errors() {
    let mut c = case("qwen2");
    let (layers, heads) = (c.engine.arch().num_layers, c.engine.arch().num_heads);
    for bad in [
        set(&[(layers, 0)], &[], AblationMode::Zero),
        set(&[(0, heads)], &[], AblationMode::Zero),
        set(&[], &[layers], AblationMode::Zero),
    ] {
        let e = c.base.ablate(&mut c.engine, &bad).map(|_| ());
        assert!(matches!(e, Err(Error::Hook(_))), "{bad:?}: {e:?}");
        assert!(c.engine.ablation().is_none());
    }
    let empty = c
        .base
        .ablate(&mut c.engine, &AblationSet::default())
        .unwrap();
    assert!(empty.ablation().is_none());
    drop(empty);
    // The ablated subject needs the run's set in force.
    let s = set(&[(0, 1)], &[], AblationMode::Zero);
    let run = rerun(&c.engine, &c.subject, &c.base, &s, 8, &|| false).unwrap();
    assert!(matches!(
        ablated_subject(&c.engine, &c.subject, &run, 3),
        Err(Error::Analysis(_))
    ));
    let other = set(&[(0, 2)], &[], AblationMode::Zero);
    let model = c.base.ablate(&mut c.engine, &other).unwrap();
    assert!(matches!(
        ablated_subject(&model, &c.subject, &run, 3),
        Err(Error::Analysis(_))
    ));
    // The run's heads in another mode are another model.
    let mean = AblationSet {
        mode: AblationMode::Mean,
        ..s.clone()
    };
    drop(model);
    let mean_model = c.base.ablate(&mut c.engine, &mean).unwrap();
    assert!(matches!(
        ablated_subject(&mean_model, &c.subject, &run, 3),
        Err(Error::Analysis(_))
    ));
    drop(mean_model);
    let model = c.base.ablate(&mut c.engine, &other).unwrap();
    // Cached results and reports name the standing set, so they never mix with the clean ones.
    let label = model.ablation().unwrap().label();
    assert_eq!(label, "zero:L0H2|mlp:");
    let ablated_key =
        headscope::analysis::cache::CacheKey::new(&model, &c.subject, "x", ()).unwrap();
    drop(model);
    let clean_key =
        headscope::analysis::cache::CacheKey::new(&c.engine, &c.subject, "x", ()).unwrap();
    assert_eq!(ablated_key.ablation, label);
    assert_ne!(ablated_key, clean_key);
}

/// `headscope bench live` through the binary: three toggles, both ways agree (the command fails
/// otherwise), and the JSON says what was measured.
#[test]
fn bench_live_runs_and_agrees_with_from_scratch() {
    let model = common::fixture_with_context("qwen2", 512);
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    let json = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bench-live-{}.json", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(["bench", "live", "--model"])
        .arg(&model)
        .arg(&sample)
        .args(["--repeats", "2", "--max-new-tokens", "24", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("re-run") && stdout.contains("from scratch"),
        "{stdout}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let toggles = v["toggles"].as_array().unwrap();
    assert_eq!(toggles.len(), 3);
    for t in toggles {
        assert_eq!(t["same_answer_ids"], true, "{t}");
        assert!(
            t["max_abs_logprob_difference"].as_f64().unwrap() < 1e-4,
            "{t}"
        );
        assert_eq!(t["rerun_s"].as_array().unwrap().len(), 2);
        assert!(t["ratio"].as_f64().unwrap() > 0.0);
    }
    let _ = std::fs::remove_file(&json);
}
