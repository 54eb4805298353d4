//! `analyze` end to end through the library: every method on every fixture family, the result
//! cache, and the shipped samples on the real default model (SmolLM2) — where the model answers
//! correctly, ARC-JSD must attribute the answer to the gold document.

use crate::common;

use std::path::PathBuf;

use headscope::analysis::attention::span_attention;
use headscope::analysis::cache::ResultCache;
use headscope::analysis::divergence::Divergence;
use headscope::analysis::report::{analyze, AnalyzeOptions, Attribution, HeadScore, Method};
use headscope::analysis::scoring::PrefixScorer;
use headscope::analysis::{arc_jsd, logit_lens, no_progress, Subject};
use headscope::engine::{Capture, Engine, GenerationConfig, LoadOptions};
use headscope::prompt::{load_samples, Granularity, PromptStyle};

use common::fixture_subject;

fn all_methods_run(family: &str, granularity: Granularity) {
    let (engine, subject) = fixture_subject(family);
    let cache_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "analyze-cache-{family}-{granularity}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&cache_dir);
    let cache = ResultCache::at(&cache_dir);
    let opts = AnalyzeOptions {
        granularity,
        ..AnalyzeOptions::default()
    };
    let mut seen = Vec::new();
    let report = analyze(&engine, &subject, &opts, &cache, &mut |m, _, _| {
        if seen.last().map(String::as_str) != Some(m) {
            seen.push(m.to_string());
        }
        true
    })
    .unwrap();
    let arch = engine.arch();
    let n = subject.sources(granularity).len();
    for name in HeadScore::ALL {
        let m = &report.head_scores[&name];
        assert_eq!(m.len(), arch.num_layers, "{name}");
        assert!(
            m.iter()
                .all(|r| r.len() == arch.num_heads && r.iter().all(|v| v.is_finite())),
            "{name}"
        );
    }
    assert_eq!(report.mlp_scores[&HeadScore::ArcJsd].len(), arch.num_layers);
    for name in Attribution::ALL {
        let a = &report.attribution[&name];
        assert_eq!(a.len(), n, "{name}");
        assert!(a.iter().all(|v| v.is_finite()), "{name}");
        let f = &report.faithfulness[&name];
        assert_eq!(f.topk_drop.len(), opts.drop_max_k.min(n - 1), "{name}");
        assert!(
            f.top1_correct.is_some(),
            "the fixture sample has a gold document"
        );
    }
    let lens = report.logit_lens.as_ref().unwrap();
    assert_eq!(lens.rows.len(), 3 * arch.num_layers);
    let curve = report.ablation_curve.as_ref().unwrap();
    assert_eq!(curve.points.first().unwrap().k, 0);
    assert_eq!(
        curve.points.last().unwrap().k,
        arch.num_layers * arch.num_heads
    );
    // k = 0 ablates nothing: the clean log-prob.
    assert!((curve.points[0].top_logprob - curve.clean_logprob).abs() < 1e-3);
    assert!(
        seen.iter().any(|m| m == "attr:mirage"),
        "progress reported per method: {seen:?}"
    );
    serde_json::to_string(&report).unwrap();

    // A second run reads every method from the cache: no forwards, the same numbers.
    let again = analyze(&engine, &subject, &opts, &cache, &mut |_, _, _| true).unwrap();
    for (name, cost) in &again.costs {
        // The scorer's base forward and the faithfulness re-scores are not cached.
        if name != "scorer" && name != "faithfulness" {
            assert!(cost.cached, "{name} was recomputed");
        }
    }
    assert_eq!(again.head_scores, report.head_scores);
    assert_eq!(again.attribution, report.attribution);
    let _ = std::fs::remove_dir_all(&cache_dir);
}

#[test]
fn every_method_runs_on_qwen2() {
    all_methods_run("qwen2", Granularity::Document);
}

#[test]
fn every_method_runs_on_llama_by_sentence() {
    all_methods_run("llama", Granularity::Sentence);
}

#[test]
fn every_method_runs_on_gemma2() {
    all_methods_run("gemma2", Granularity::Document);
}

#[test]
fn unknown_methods_and_scores_are_clear_errors() {
    let err = "heads:nope".parse::<Method>().unwrap_err();
    assert!(
        err.contains("unknown method") && err.contains("heads:qrhead"),
        "{err}"
    );
    assert_eq!(Method::parse_list("all").unwrap().len(), Method::ALL.len());
    // An unknown curve score is refused where the name is read (the CLI), naming it.
    let err = "bogus".parse::<HeadScore>().unwrap_err();
    assert!(err.contains("bogus"), "{err}");
}

/// The logit lens, the attention on spans and ARC-JSD's head lens start from the keys and values
/// the answer's own pass left (only the answer-predicting positions, or those after the prefix a
/// leave-out prompt shares, are computed): they equal what one full teacher-forced forward gives.
fn answer_state_passes_agree(family: &str) {
    let (engine, subject) = fixture_subject(family);
    // The answer pass kept the keys and values of the whole teacher-forced input, so the
    // subject's passes below take the short path.
    let kept = subject.state.as_ref().map(|s| s.kv_cache.len());
    assert_eq!(kept, Some(subject.teacher_forced_ids().len()));
    let mut full = subject.clone();
    full.state = None;

    // The pass itself, on the subject's prompt and on a prompt without its first document.
    let keep: Vec<bool> = (0..subject.prompt.docs.len()).map(|d| d != 0).collect();
    let without_first = subject
        .leave_out(&engine, &keep, Granularity::Document)
        .unwrap();
    for prompt in [&subject.prompt.ids, &without_first.ids] {
        let capture = |rows| Capture {
            resid_post: Some(rows),
            ..Default::default()
        };
        let fast = subject
            .teacher_forced_pass(&engine, prompt, capture)
            .unwrap();
        let slow = full.teacher_forced_pass(&engine, prompt, capture).unwrap();
        for l in 0..engine.arch().num_layers {
            let name = format!("blocks.{l}.hook_resid_post");
            let (a, b) = (fast.get(&name).unwrap(), slow.get(&name).unwrap());
            assert_eq!(a.dims(), b.dims(), "{name}");
            assert_eq!(a.dims()[1], subject.answer_ids().len());
            let d = common::max_abs_diff(a, b);
            assert!(d <= 1e-5, "{family} {name}: {d}");
        }
    }

    // The analyses built on it.
    let lens = |s: &Subject| logit_lens::logit_lens(&engine, s, 5, &mut no_progress).unwrap();
    let (a, b) = (lens(&subject), lens(&full));
    assert_eq!(a.rows.len(), 3 * engine.arch().num_layers);
    for (x, y) in a.rows.iter().zip(&b.rows) {
        assert_eq!(x.label, y.label);
        for (p, q) in x.cells.iter().zip(&y.cells) {
            assert!((p.answer_prob - q.answer_prob).abs() < 1e-6, "{}", x.label);
            let ids = |c: &logit_lens::LensCell| c.top.iter().map(|t| t.id).collect::<Vec<_>>();
            assert_eq!(ids(p), ids(q), "{}", x.label);
        }
    }
    let spans: Vec<_> = subject
        .prompt
        .docs
        .iter()
        .map(|d| d.tokens.clone())
        .collect();
    let mass = |s: &Subject| span_attention(&engine, s, &spans).unwrap().mass;
    let (a, b) = (mass(&subject), mass(&full));
    let flat = |m: &Vec<Vec<Vec<Vec<f64>>>>| {
        m.iter()
            .flatten()
            .flatten()
            .flatten()
            .copied()
            .collect::<Vec<_>>()
    };
    let (a, b) = (flat(&a), flat(&b));
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|&v| v > 0.0));
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-6, "span attention {x} vs {y}");
    }
    let heads = |s: &Subject| {
        arc_jsd::heads(
            &engine,
            s,
            Granularity::Document,
            0,
            Divergence::Jsd,
            &mut no_progress,
        )
        .unwrap()
    };
    let (a, b) = (heads(&subject), heads(&full));
    for (x, y) in a
        .heads
        .iter()
        .flatten()
        .chain(&a.mlp)
        .zip(b.heads.iter().flatten().chain(&b.mlp))
    {
        assert!(
            (x - y).abs() <= 1e-6 * y.abs().max(1e-3),
            "head lens {x} vs {y}"
        );
    }
}

#[test]
fn analyses_from_the_answer_state_equal_full_passes() {
    for family in ["qwen2", "llama", "gemma2"] {
        answer_state_passes_agree(family);
    }
}

/// On the shipped samples, wherever SmolLM2 answers correctly, ARC-JSD's top document is gold.
#[test]
fn smollm2_arc_jsd_ranks_the_gold_document_first_when_correct() {
    let Some(path) = common::smollm2_path("the SmolLM2 ARC-JSD test") else {
        return;
    };
    let mut opts = LoadOptions::new(path.to_string_lossy());
    opts.offline = true;
    let engine = Engine::load(&opts).unwrap();
    let samples =
        load_samples(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/all.jsonl")).unwrap();
    let mut checked = 0;
    for sample in samples {
        let id = sample.id().unwrap_or_default();
        let gold = sample.gold().expect("shipped samples have gold");
        let subject = Subject::prepare(
            &engine,
            sample,
            &PromptStyle::Mirage.into(),
            &GenerationConfig::default(),
            true,
            |_| true,
        )
        .unwrap();
        let text = engine.decode(subject.answer_ids()).unwrap();
        if subject.is_correct(&text) != Some(true) {
            eprintln!("{id}: answer {text:?} is not correct; not checked");
            continue;
        }
        let scorer = PrefixScorer::new(&engine, &subject.prompt.ids, subject.answer_ids()).unwrap();
        let attr = arc_jsd::attribution(
            &engine,
            &subject,
            Granularity::Document,
            Divergence::Jsd,
            &scorer,
            &mut no_progress,
        )
        .unwrap();
        assert_eq!(attr.top, gold, "{id}: ARC-JSD scores {:?}", attr.scores);
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} samples answered correctly");
}

/// `analyze --ablate` through the binary: the report names the ablation, the answer is the
/// ablated model's, and the ablated heads and MLP carry nothing (their ARC-JSD lens scores are 0).
#[test]
fn analyze_ablate_examines_the_ablated_model() {
    let model = common::fixture_with_context("qwen2", 512);
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
            .args(["analyze", "--model"])
            .arg(&model)
            .arg(&sample)
            .args([
                "--method",
                "heads:arc-jsd",
                "--generate",
                "--no-cache",
                "--json",
                "-",
            ])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, clean, err) = run(&[]);
    assert_eq!(code, Some(0), "{err}");
    let clean: serde_json::Value = serde_json::from_str(&clean).unwrap();
    assert!(clean.get("ablation").is_none());
    let (code, ablated, err) = run(&["--ablate", "L1H0,l1h1", "--ablate-mlp", "1"]);
    assert_eq!(code, Some(0), "{err}");
    let ablated: serde_json::Value = serde_json::from_str(&ablated).unwrap();
    assert_eq!(ablated["ablation"], "zero:L1H0,L1H1|mlp:L1");
    let heads = &ablated["head_scores"]["arc_jsd"][1];
    let clean_heads = &clean["head_scores"]["arc_jsd"][1];
    for h in 0..2 {
        assert!(heads[h].as_f64().unwrap().abs() < 1e-6, "{heads}");
        assert!(clean_heads[h].as_f64().unwrap() > 1e-6, "{clean_heads}");
    }
    assert!(ablated["mlp_scores"]["arc_jsd"][1].as_f64().unwrap().abs() < 1e-6);
    // The other kinds run too, and name themselves.
    for (kind, label) in [("mean", "mean:L1H0|mlp:"), ("uniform", "uniform:L1H0|mlp:")] {
        let (code, out, err) = run(&["--ablate", "L1H0", "--ablation-kind", kind]);
        assert_eq!(code, Some(0), "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["ablation"], label);
    }
    // Heads outside the model and malformed heads are clear errors.
    let (code, _, err) = run(&["--ablate", "L99H0"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("L99H0 does not exist"), "{err}");
    let (code, _, err) = run(&["--ablate", "19.1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("write a head as L{layer}H{head}"), "{err}");
}
