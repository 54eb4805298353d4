//! The study's fast paths give what the passes they replace give: detection's scores from the
//! attention rows the answer's generation recorded against a teacher-forced forward, and the
//! ablations that start at each set's earliest ablated layer from the clean residual stream (and
//! decode only where a row leaves the clean answer) against the full ablated passes.

use std::path::PathBuf;

use headscope::analysis::ablated_decoding::{run_conditions, run_conditions_reusing, Head};
use headscope::analysis::report::HeadScore;
use headscope::analysis::Subject;
use headscope::engine::generate::Recorded;
use headscope::engine::{Engine, GenerationConfig, Recording};
use headscope::prompt::{load_samples, PromptFormat, Sample};
use headscope::study::config::{AblatedPositions, StudyConfig};
use headscope::study::detect::{
    answer_needle, detect_with, detection_recording, DetectMethod, RowSource,
};

use crate::common::{fixture_with_context, load_offline, smollm2_path};

const METHODS: [DetectMethod; 4] = [
    DetectMethod::Score(HeadScore::SummedAttention),
    DetectMethod::SummedAttentionAnswer,
    DetectMethod::Score(HeadScore::Retrieval),
    DetectMethod::Score(HeadScore::QrHead),
];

fn fixture_sample() -> Sample {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    load_samples(&path).unwrap().remove(0)
}

fn filings_sample() -> Sample {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/filings.jsonl");
    load_samples(&path).unwrap().remove(0)
}

/// The study's prompt (its short-answer instruction).
fn format() -> PromptFormat {
    StudyConfig::default().format().unwrap()
}

/// The sample generated once, recording both what detection and what ablation read.
fn recorded(engine: &Engine, sample: Sample, max_new: usize) -> (Subject, Recorded) {
    let cfg = GenerationConfig {
        max_new_tokens: max_new,
        ..GenerationConfig::default()
    };
    let (subject, rec) = Subject::generate_recording(
        engine,
        sample.clone(),
        &format(),
        &cfg,
        |p| {
            Ok(Recording {
                resid_pre: true,
                ..detection_recording(p, &METHODS)?
            })
        },
        |_| true,
    )
    .unwrap();
    // Recording changes nothing about the answer.
    let plain = Subject::prepare(engine, sample, &format(), &cfg, true, |_| true).unwrap();
    assert_eq!(subject.answer_ids(), plain.answer_ids());
    (subject, rec)
}

fn detection_agrees(engine: &Engine, sample: Sample, max_new: usize) {
    let (subject, rec) = recorded(engine, sample, max_new);
    let gold = subject.sample.gold().unwrap_or(0);
    let needle = answer_needle(&subject, gold);
    let slow = detect_with(
        engine,
        &subject,
        gold,
        &needle,
        &METHODS,
        RowSource::TeacherForced,
    )
    .unwrap();
    let fast = detect_with(
        engine,
        &subject,
        gold,
        &needle,
        &METHODS,
        RowSource::Recorded(&rec),
    )
    .unwrap();
    assert_eq!(
        slow.keys().collect::<Vec<_>>(),
        fast.keys().collect::<Vec<_>>()
    );
    let mut worst = 0f64;
    for (key, a) in &slow {
        let b = &fast[key];
        assert_eq!((a.len(), a[0].len()), (b.len(), b[0].len()), "{key}");
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{key}: {x} vs {y}");
            worst = worst.max((x - y).abs());
        }
    }
    // The scores are not trivially zero: the comparison compares something.
    assert!(slow["summed_attention"].iter().flatten().any(|&v| v > 0.0));
    eprintln!(
        "detection: recorded vs teacher-forced max |Δ| {worst:.1e} over {} answer tokens",
        subject.answer_ids().len()
    );
}

#[test]
fn detection_from_the_recorded_generation_equals_the_teacher_forced_pass() {
    let engine = load_offline(&fixture_with_context("llama", 512));
    detection_agrees(&engine, fixture_sample(), 8);
}

#[test]
fn detection_from_the_recorded_generation_equals_the_teacher_forced_pass_smollm2() {
    let Some(path) = smollm2_path("the recorded-detection check") else {
        return;
    };
    detection_agrees(&load_offline(&path), filings_sample(), 24);
}

/// Head sets whose earliest layers differ (one starts at layer 0, one at the last layer), with a
/// duplicate, as the plan's top, random and layer-matched sets do.
fn head_sets(layers: usize, heads: usize) -> Vec<Vec<Head>> {
    let last = layers - 1;
    let mid = layers / 2;
    let mut sets = vec![
        vec![(0, 0), (mid, 1 % heads)],
        vec![(last, 0), (last, 1 % heads)],
        vec![(mid, 0)],
        (0..heads).map(|h| (mid, h)).collect(),
        vec![(1.min(last), heads - 1), (last, 0)],
        vec![(last, heads - 1)],
    ];
    sets.push(sets[2].clone());
    sets.push((0..heads).map(|h| (0, h)).collect());
    sets
}

fn ablation_agrees(engine: &Engine, sample: Sample, max_new: usize, modes: &[&str]) {
    let (subject, rec) = recorded(engine, sample, max_new);
    let arch = engine.arch();
    let sets = head_sets(arch.num_layers, arch.num_heads);
    let clean = subject.answer_ids().to_vec();
    for positions in [AblatedPositions::All, AblatedPositions::DecodeOnly] {
        for mode in modes {
            let cfg = StudyConfig {
                positions,
                ablation: mode.parse().unwrap(),
                max_new_tokens: max_new,
                ..StudyConfig::default()
            };
            let kind = cfg
                .ablation
                .resolve(|| headscope::analysis::ablation::subject_mean_z(engine, &subject))
                .unwrap();
            let d = cfg.decoding();
            let old = run_conditions(engine, &subject, &sets, &kind, &d, &mut || true).unwrap();
            let new =
                run_conditions_reusing(engine, &subject, &rec, &sets, &kind, &d, &mut || true)
                    .unwrap();
            assert_eq!(old.len(), new.len());
            let mut kept = 0;
            for (r, ((a, la), (b, lb))) in old.iter().zip(&new).enumerate() {
                assert_eq!(a, b, "{positions:?} {mode}: row {r}'s answer");
                assert!(
                    (la - lb).abs() < 1e-4 * la.abs().max(1.0),
                    "{positions:?} {mode}: row {r}'s log-prob {la} vs {lb}"
                );
                kept += usize::from(*a == clean);
            }
            eprintln!(
                "{positions:?} {mode}: {kept} of {} rows keep the clean answer",
                sets.len()
            );
        }
    }
}

#[test]
fn ablation_from_the_clean_run_equals_the_full_ablated_passes() {
    let engine = load_offline(&fixture_with_context("llama", 512));
    ablation_agrees(&engine, fixture_sample(), 6, &["zero", "uniform", "mean"]);
}

#[test]
fn ablation_from_the_clean_run_equals_the_full_ablated_passes_smollm2() {
    let Some(path) = smollm2_path("the clean-run ablation check") else {
        return;
    };
    ablation_agrees(&load_offline(&path), filings_sample(), 24, &["zero"]);
}

/// The ablation curve runs every head set of every k through the reusing path; each point's
/// log-probs and regenerated answers equal a full ablated pass and a generation from scratch of
/// the same sets (the curve's own seeded draws: per k, k heads chosen outside the top-k), and
/// k = 0 is the clean model. The answer here is the sample's given `output`, so regeneration
/// leaves it.
#[test]
fn the_ablation_curve_equals_full_ablated_passes_and_fresh_generation() {
    use headscope::analysis::ablation::{
        ablated_answer_logprobs, ablation_curve, head_set_ablation, CurveConfig,
    };
    use headscope::analysis::rng::SplitMix64;
    use headscope::analysis::{answer_is_correct, top_heads};
    use headscope::engine::AblationKind;

    let engine = load_offline(&fixture_with_context("llama", 512));
    let gen = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    let subject =
        Subject::prepare(&engine, fixture_sample(), &format(), &gen, false, |_| true).unwrap();
    let arch = engine.arch();
    let (layers, heads) = (arch.num_layers, arch.num_heads);
    let mut rng = SplitMix64::new(7);
    let importance: Vec<Vec<f64>> = (0..layers)
        .map(|_| (0..heads).map(|_| rng.next_f64()).collect())
        .collect();
    let cfg = CurveConfig {
        ks: vec![0, 2, 5],
        draws: 3,
        max_new_tokens: 6,
        ..CurveConfig::default()
    };
    let curve = ablation_curve(&engine, &subject, &importance, "test", &cfg, &mut |_, _| {
        true
    })
    .unwrap();
    let total = layers * heads;
    let ranked: Vec<Head> = top_heads(&importance, total)
        .into_iter()
        .map(|(l, h, _)| (l, h))
        .collect();
    let clean = engine
        .score(&subject.prompt.ids, subject.answer_ids(), 0)
        .unwrap()
        .total_logprob();
    let close = |a: f64, b: f64| (a - b).abs() < 1e-4 * a.abs().max(1.0);
    assert!(close(curve.clean_logprob, clean));
    let mut draws = SplitMix64::new(cfg.seed);
    assert_eq!(curve.points.len(), cfg.ks.len());
    for (point, &k) in curve.points.iter().zip(&cfg.ks) {
        assert_eq!(point.k, k);
        let mut sets = vec![ranked[..k].to_vec()];
        if k > 0 {
            sets.extend((0..cfg.draws).map(|_| draws.choose(&ranked[k..], k)));
        }
        let ablation = head_set_ablation(&engine, &sets, &AblationKind::Zero).unwrap();
        let lp = if k == 0 {
            vec![clean]
        } else {
            ablated_answer_logprobs(&engine, &subject, &ablation).unwrap()
        };
        let texts: Vec<String> = engine
            .generate_ablated(&subject.prompt.ids, cfg.max_new_tokens, &ablation, || true)
            .unwrap()
            .iter()
            .map(|ids| engine.decode(ids).unwrap())
            .collect();
        assert!(close(point.top_logprob, lp[0]), "k = {k}: top-k log-prob");
        assert_eq!(
            point.top_answer.as_deref(),
            Some(texts[0].as_str()),
            "k = {k}"
        );
        if k > 0 {
            assert_eq!(point.random_logprobs.len(), cfg.draws);
            for (d, (&a, &b)) in point.random_logprobs.iter().zip(&lp[1..]).enumerate() {
                assert!(close(a, b), "k = {k}, draw {d}: {a} vs {b}");
            }
            let correct = texts[1..]
                .iter()
                .filter(|t| answer_is_correct(&subject.sample, t) == Some(true))
                .count();
            assert_eq!(
                point.random_correct_rate,
                Some(correct as f64 / cfg.draws as f64),
                "k = {k}"
            );
        }
    }
    // Without random draws (the explorer's first pass): the same top-k line, and no random values
    // but at k = 0, where the random set is the (empty) top set.
    let line = CurveConfig {
        draws: 0,
        regenerate: false,
        ..cfg.clone()
    };
    let line = ablation_curve(
        &engine,
        &subject,
        &importance,
        "test",
        &line,
        &mut |_, _| true,
    )
    .unwrap();
    for (a, b) in line.points.iter().zip(&curve.points) {
        assert!(close(a.top_logprob, b.top_logprob), "k = {}", a.k);
        assert_eq!(a.top_answer, None);
        match a.k {
            0 => assert!(close(a.random_logprob_mean.unwrap(), clean)),
            k => {
                assert!(a.random_logprobs.is_empty(), "k = {k}");
                assert_eq!((a.random_logprob_mean, a.random_logprob_sd), (None, None));
                assert_eq!(a.random_correct_rate, None);
            }
        }
    }
}
