//! MIRAGE on the tiny qwen2 fixture with a hand-written three-document sample: CTI against KL
//! computed from two independent teacher-forced runs, the CCI objective and gradients, and
//! citations re-thresholded from the same scores without a model call.

use std::path::PathBuf;
use std::sync::OnceLock;

use candle_core::Tensor;
use headscope::analysis::cache::ResultCache;
use headscope::analysis::divergence::{kl, log_softmax, token_logprob};
use headscope::analysis::mirage::{self, MirageConfig, MirageResult, MirageScores};
use headscope::analysis::Subject;
use headscope::engine::{Capture, Engine, GenerationConfig, Hooks, Positions, Start};
use headscope::prompt::{Document, Granularity, PromptStyle, RagPrompt, Sample};
use headscope::Error;

use crate::common;

const OUTPUT: &str = "Cats eat fish. Dogs like bones.";

/// The qwen2 fixture with a 512-token context instead of 128 (three `Document [i](Title: T): `
/// lines already take ~140 tokens of its 300-token vocabulary).
fn model_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::fixture_with_context("qwen2", 512))
}

fn engine() -> Engine {
    common::load_offline(model_dir())
}

fn subject(engine: &Engine) -> Subject {
    let mut sample = Sample::new(
        "What do cats eat?",
        vec![
            Document::new("A", "Cats eat fish."),
            Document::new("B", "Dogs like bones."),
            Document::new("C", "Birds can fly."),
        ],
    );
    sample.output = Some(OUTPUT.into());
    Subject::prepare(
        engine,
        sample,
        &PromptStyle::Mirage.into(),
        &GenerationConfig::default(),
        false,
        |_| true,
    )
    .unwrap()
}

/// Logit rows at the answer-predicting positions, one plain forward from scratch.
fn answer_rows(engine: &Engine, prompt: &[u32], answer: &[u32]) -> Vec<Vec<f32>> {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&answer[..answer.len() - 1]);
    let p = prompt.len();
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::Range(p - 1..p - 1 + answer.len())),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = Tensor::from_vec(ids.clone(), (1, ids.len()), engine.device()).unwrap();
    let logits = engine
        .forward(Start::Tokens(&t), None, &hooks)
        .unwrap()
        .logits
        .unwrap();
    logits.squeeze(0).unwrap().to_vec2::<f32>().unwrap()
}

fn scores(engine: &Engine, subject: &Subject) -> MirageScores {
    mirage::scores(engine, subject, &mut |_, _| true).unwrap()
}

#[test]
fn cti_is_kl_between_independent_runs() {
    let engine = engine();
    let subject = subject(&engine);
    let answer = subject.answer_ids();
    let s = scores(&engine, &subject);

    let noctx = RagPrompt::build_with_sources(
        &subject.sample,
        &PromptStyle::Mirage.into(),
        &engine.template(),
        &engine.tokenizer(),
        &[false; 3],
        Granularity::Document,
    )
    .unwrap();
    assert!(!noctx.text.contains("Document ["));
    let ctx_rows = answer_rows(&engine, &subject.prompt.ids, answer);
    let noctx_rows = answer_rows(&engine, &noctx.ids, answer);
    assert_eq!(s.cti.len(), answer.len());
    for t in 0..answer.len() {
        let want = kl(&log_softmax(&noctx_rows[t]), &log_softmax(&ctx_rows[t]));
        assert!(
            (s.cti[t] - want).abs() < 1e-5,
            "cti[{t}] {} vs {want}",
            s.cti[t]
        );
        let row = &noctx_rows[t];
        let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        assert_eq!(s.contrast_ids[t], best as u32);
    }
    let mean = s.cti.iter().sum::<f64>() / s.cti.len() as f64;
    let want: Vec<usize> = (0..answer.len()).filter(|&t| s.cti[t] >= mean).collect();
    assert_eq!(s.selected, want);
    assert!(!s.selected.is_empty());
    // The contextual run comes from the state the answer's scoring left; then the contextless
    // run and one differentiable forward per selected token.
    assert!(subject.state.is_some());
    assert_eq!(s.forwards, 1 + s.selected.len());
    assert_eq!(s.backwards, s.selected.len());

    // The objective is f_t of the contextual run; every input position gets a gradient score.
    let p = subject.prompt.len();
    for (i, &t) in s.selected.iter().enumerate() {
        let (a, c) = (answer[t], s.contrast_ids[t]);
        let mut want = token_logprob(&ctx_rows[t], a);
        if a != c {
            want -= token_logprob(&ctx_rows[t], c);
        }
        assert!(
            (s.objective[i] - want).abs() < 1e-4,
            "f[{t}] {} vs {want}",
            s.objective[i]
        );
        assert_eq!(s.cci[i].len(), p + t);
        assert!(s.cci[i].iter().all(|x| x.is_finite() && *x >= 0.0));
        for d in &subject.prompt.docs {
            assert!(!d.tokens.is_empty());
            assert!(
                d.tokens.clone().all(|j| s.cci[i][j] > 0.0),
                "token {t}, doc {d:?}"
            );
        }
    }
}

fn strip_markers(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('[') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        // `[n]` runs followed by one space.
        let mut j = 0;
        while after[j..].starts_with('[') {
            let close = after[j..].find(']').unwrap();
            assert!(after[j + 1..j + close].parse::<usize>().is_ok());
            j += close + 1;
        }
        assert!(after[j..].starts_with(' '));
        rest = &after[j + 1..];
    }
    out.push_str(rest);
    out
}

#[track_caller]
fn check_citations(r: &MirageResult, n_docs: usize) {
    assert_eq!(r.answer, OUTPUT);
    assert_eq!(strip_markers(&r.cited_answer), r.answer);
    assert_eq!(r.sentences.len(), 2);
    assert_eq!(r.sentences[0].text, "Cats eat fish.");
    assert_eq!(r.sentences[1].text, "Dogs like bones.");
    assert_eq!(r.sentences[0].tokens.start, 0);
    // Whitespace-only tokens between sentences belong to neither.
    assert!(r.sentences[0].tokens.end <= r.sentences[1].tokens.start);
    assert!(!r.sentences[0].tokens.is_empty() && !r.sentences[1].tokens.is_empty());
    assert_eq!(r.sentences[1].tokens.end, r.cti.len());
    for s in &r.sentences {
        assert!(s.cited.len() <= r.config.at_most_citations);
        assert!(s.cited.iter().all(|&d| d < n_docs && s.doc_scores[d] > 0.0));
        let marks: String = s.cited.iter().map(|d| format!("[{}]", d + 1)).collect();
        if !marks.is_empty() {
            assert!(r.cited_answer.contains(&format!("{marks} {}", s.text)));
        }
    }
    assert!(r.scores.iter().all(|x| x.is_finite() && *x >= 0.0));
}

#[test]
fn citations_are_rethresholded_from_cached_scores() {
    let engine = engine();
    let subject = subject(&engine);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("mirage-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cache = ResultCache::at(&dir);
    let g = Granularity::Document;

    // A cancelled run stores nothing.
    let cancelled = mirage::mirage(
        &engine,
        &subject,
        g,
        &MirageConfig::default(),
        &cache,
        &mut |_, _| false,
    );
    assert!(matches!(cancelled, Err(Error::Cancelled)));

    let mut calls = 0;
    let first = mirage::mirage(
        &engine,
        &subject,
        g,
        &MirageConfig::default(),
        &cache,
        &mut |_, _| {
            calls += 1;
            true
        },
    )
    .unwrap();
    assert!(!first.cached && first.backwards > 0 && calls > 0);
    check_citations(&first, 3);

    // Every selected token cites, each keeps its two best document tokens.
    let loose = MirageConfig {
        cti: 0.0,
        cci: 2.0,
        at_most_citations: 3,
    };
    let again = mirage::mirage(&engine, &subject, g, &loose, &cache, &mut |_, _| {
        panic!("no model call")
    })
    .unwrap();
    assert!(again.cached && again.forwards == 0 && again.backwards == 0);
    check_citations(&again, 3);
    let s = scores(&engine, &subject);
    let direct = mirage::cite(&s, &subject, &engine, g, &loose).unwrap();
    assert_eq!(direct.sentences, again.sentences);
    assert_eq!(direct.scores, again.scores);
    assert!(
        (again.cti_threshold - again.cti.iter().sum::<f64>() / again.cti.len() as f64).abs()
            < 1e-12
    );
    assert!(again.sentences.iter().any(|s| !s.cited.is_empty()));
    assert!(again.scores.iter().sum::<f64>() > 0.0);

    // Nothing passes an impossible CTI threshold: the answer comes back unchanged.
    let strict = MirageConfig {
        cti: 1e6,
        ..MirageConfig::default()
    };
    let none = mirage::cite(&s, &subject, &engine, g, &strict).unwrap();
    assert_eq!(none.cited_answer, OUTPUT);
    assert!(none.scores.iter().all(|&x| x == 0.0));

    // At most one citation per sentence.
    let one = MirageConfig {
        at_most_citations: 1,
        ..loose
    };
    let r = mirage::cite(&s, &subject, &engine, g, &one).unwrap();
    check_citations(&r, 3);
    for (a, b) in r.sentences.iter().zip(&direct.sentences) {
        assert_eq!(a.cited.first(), b.cited.first());
    }

    // Sentence sources lie inside documents (without the `Document [i](Title: T): ` header).
    let by_sentence = mirage::cite(&s, &subject, &engine, Granularity::Sentence, &loose).unwrap();
    assert_eq!(by_sentence.scores.len(), 3);
    for (sent, doc) in by_sentence.scores.iter().zip(&direct.scores) {
        assert!(*sent <= *doc + 1e-12);
    }
    assert_eq!(by_sentence.cited_answer, direct.cited_answer);
    let _ = std::fs::remove_dir_all(&dir);
}
