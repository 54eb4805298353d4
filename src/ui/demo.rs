//! A deterministic, hand-built explorer state: every pane filled with plausible numbers and no
//! model anywhere. The snapshot tests and the render benchmark use it, so neither depends on
//! floating-point results of a real run.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::app::{AblationSet, AnswerView, App, LiveResult, Pane, STAGES};
use crate::analysis::ablation::{AblationCurve, CurveConfig, CurvePoint};
use crate::analysis::arc_jsd::ArcJsdAttribution;
use crate::analysis::attention::TargetDocument;
use crate::analysis::context_cite::ContextCiteResult;
use crate::analysis::divergence::Divergence;
use crate::analysis::live::LiveRun;
use crate::analysis::logit_lens::{LensCell, LensRow, LensToken, LogitLens};
use crate::analysis::marginal::Marginal;
use crate::analysis::mirage::{MirageConfig, MirageResult, MirageSentence};
use crate::analysis::report::{
    AnalysisReport, AnalyzeOptions, Attribution, Details, HeadScore, SourceInfo,
};
use crate::analysis::scoring::ScoringStats;
use crate::analysis::AnswerSource;
use crate::engine::ModelInfo;
use crate::prompt::{Granularity, Sample};

const WORDS: [&str; 10] = [
    "The", " capital", " of", " Ves", "kar", " is", " Bren", "nh", "olm", ".",
];
const OTHER: [&str; 6] = [" the", " a", " island", " Hadding", ",", " and"];

/// A repeatable value in `[0, 1)` for `(a, b, c)`.
fn noise(a: usize, b: usize, c: usize) -> f64 {
    let mut z = (a as u64)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((b as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add((c as u64).wrapping_mul(0x94D0_49BB_1331_11EB));
    z ^= z >> 31;
    z = z.wrapping_mul(0xD6E8_FEB8_6659_FD93);
    z ^= z >> 29;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

fn sample() -> Sample {
    serde_json::from_str(super::DEFAULT_SAMPLE).expect("the built-in sample parses")
}

/// An explorer state for a `layers × heads` model with an answer of `answer_len` tokens,
/// everything computed, a live ablation of three heads and one MLP.
pub fn demo_app(layers: usize, heads: usize, answer_len: usize) -> App {
    let sample = sample();
    let info = model_info(layers, heads);
    let answer = answer(answer_len);
    let report = report(&sample, &info, &answer);
    let total = report.answer_logprob;
    let mut app = App::new("demo/tiny-model", "question.json (island-capital)", sample);
    app.info = Some(info);
    app.view.answer = answer;
    app.view.report = Some(report);
    app.jobs.opened = true;
    app.view.next_stage = STAGES.len();
    app.jobs.last_job = Some(("stage 3/3".into(), 1.25));
    app.focus = Pane::Heatmap;
    app.panes.answer.token = 6.min(answer_len.saturating_sub(1));
    app.panes.heatmap.cursor = (1.min(layers - 1), 2.min(heads - 1));
    app.panes.attribution.cursor = 1;
    let ablation = ablation(layers, heads);
    app.editor.live = Some(live_result(&ablation, total));
    app.editor.set = ablation;
    app
}

fn model_info(layers: usize, heads: usize) -> ModelInfo {
    ModelInfo {
        model: "demo/tiny-model".into(),
        path: PathBuf::from("/models/demo"),
        arch: "qwen2".into(),
        dtype: "f32".into(),
        device: "cpu".into(),
        layers,
        heads,
        kv_heads: heads.div_ceil(2).max(1),
        hidden_size: 64,
        vocab_size: 1000,
        context_length: 512,
    }
}

/// `answer_len` tokens cycling through [`WORDS`], with log-probs in a repeating pattern.
fn answer(answer_len: usize) -> AnswerView {
    let tokens: Vec<String> = (0..answer_len)
        .map(|i| WORDS[i % WORDS.len()].to_string())
        .collect();
    let logprobs: Vec<f32> = (0..answer_len)
        .map(|i| -(((i * 7) % 10) as f32) * 0.35 - 0.02)
        .collect();
    let text: String = tokens.concat();
    AnswerView {
        tokens,
        logprobs,
        text,
        source: Some(AnswerSource::Generated),
        complete: true,
    }
}

/// One source per document, each thirty tokens long.
fn sources(sample: &Sample) -> Vec<SourceInfo> {
    sample
        .docs
        .iter()
        .enumerate()
        .map(|(i, d)| SourceInfo {
            label: format!("D{}", i + 1),
            text: d.text.clone(),
            tokens: [10 + 30 * i, 10 + 30 * (i + 1)],
            document: i,
        })
        .collect()
}

/// Head score `k`'s `[layers][heads]` matrix: sparse and positive, or mostly negative (`signed`).
fn head_matrix(k: usize, signed: bool, layers: usize, heads: usize) -> Vec<Vec<f64>> {
    (0..layers)
        .map(|l| {
            (0..heads)
                .map(|h| {
                    let v = noise(k, l, h).powi(3);
                    if signed {
                        (v - 0.3 * noise(k + 10, l, h)) * -2.0
                    } else {
                        v * 0.6
                    }
                })
                .collect()
        })
        .collect()
}

fn head_scores(layers: usize, heads: usize) -> BTreeMap<HeadScore, Vec<Vec<f64>>> {
    let mut head_scores = BTreeMap::new();
    for (k, score) in HeadScore::ALL.into_iter().enumerate() {
        head_scores.insert(score, head_matrix(k, score.signed(), layers, heads));
    }
    head_scores
}

fn mlp_scores(layers: usize) -> BTreeMap<HeadScore, Vec<f64>> {
    let mut mlp_scores = BTreeMap::new();
    mlp_scores.insert(
        HeadScore::ArcJsd,
        (0..layers)
            .map(|l| noise(99, l, 0) * 0.4)
            .collect::<Vec<f64>>(),
    );
    mlp_scores
}

/// Scores of the `n_src` sources for method `k`: the second source well ahead.
fn doc_scores(k: usize, n_src: usize) -> Vec<f64> {
    (0..n_src)
        .map(|i| {
            if i == 1 {
                0.55 + 0.1 * noise(k, i, 7)
            } else {
                0.1 * noise(k, i, 7)
            }
        })
        .collect()
}

fn attribution(n_src: usize) -> BTreeMap<Attribution, Vec<f64>> {
    let mut attribution = BTreeMap::new();
    for (k, method) in Attribution::ALL.into_iter().enumerate() {
        attribution.insert(method, doc_scores(k, n_src));
    }
    attribution
}

/// Lens cell of layer `l` (at relative `depth`) and answer token `t`: the answer's token once
/// deep enough, another before.
fn lens_cell(l: usize, t: usize, depth: f64) -> LensCell {
    let right = depth > 0.5 + 0.4 * noise(l, t, 3);
    let p_top = (0.15 + 0.8 * depth * noise(t, l, 5)).min(0.99);
    let first = if right {
        WORDS[t % WORDS.len()]
    } else {
        OTHER[(l + t) % OTHER.len()]
    };
    LensCell {
        top: vec![
            LensToken {
                id: 1,
                token: first.into(),
                prob: p_top,
            },
            LensToken {
                id: 2,
                token: OTHER[(l + t + 1) % OTHER.len()].into(),
                prob: p_top * 0.3,
            },
            LensToken {
                id: 3,
                token: OTHER[(l + t + 2) % OTHER.len()].into(),
                prob: p_top * 0.1,
            },
        ],
        answer_prob: if right { p_top } else { p_top * 0.05 },
        answer_rank: if right { 0 } else { 1 + (l * 7 + t * 3) % 40 },
    }
}

fn lens_rows(layers: usize, answer_len: usize) -> Vec<LensRow> {
    (0..layers)
        .flat_map(|l| ["pre", "mid", "post"].into_iter().map(move |p| (l, p)))
        .map(|(l, point)| {
            let depth = (l as f64 + 1.0) / layers as f64;
            LensRow {
                label: format!("{l}_{point}"),
                layer: l,
                point: point.to_string(),
                cells: (0..answer_len).map(|t| lens_cell(l, t, depth)).collect(),
            }
        })
        .collect()
}

/// The top-k curve falls steeply from the clean log-prob `total`, the random one slowly.
fn curve_points(total: f64) -> Vec<CurvePoint> {
    [0usize, 10, 20, 30, 40, 50]
        .into_iter()
        .map(|k| {
            let r: Vec<f64> = (0..5)
                .map(|d| total - 0.02 * k as f64 * (1.0 + 0.3 * noise(k, d, 1)))
                .collect();
            let mean = r.iter().sum::<f64>() / r.len() as f64;
            CurvePoint {
                k,
                top_logprob: total - 0.25 * k as f64,
                top_answer: None,
                top_correct: None,
                random_logprobs: r,
                random_logprob_mean: Some(mean),
                random_logprob_sd: Some(0.1),
                random_correct_rate: None,
            }
        })
        .collect()
}

/// MIRAGE over the whole answer as one sentence, citing the second document.
fn mirage(text: &str, answer_len: usize, scores: Vec<f64>, n_src: usize) -> MirageResult {
    let cti: Vec<f64> = (0..answer_len).map(|t| noise(t, 1, 2)).collect();
    MirageResult {
        granularity: Granularity::Document,
        config: MirageConfig::default(),
        scores,
        answer: text.to_string(),
        cited_answer: format!("[2] {text}"),
        sentences: vec![MirageSentence {
            text: text.to_string(),
            chars: 0..text.len(),
            tokens: 0..answer_len,
            doc_scores: doc_scores(40, n_src),
            cited: vec![1],
        }],
        cti: cti.clone(),
        contrast_ids: vec![0; answer_len],
        selected: (0..answer_len).filter(|&t| cti[t] >= 0.5).collect(),
        cti_threshold: 0.8,
        forwards: 2,
        backwards: 3,
        cached: false,
    }
}

/// Each attribution method's details, as the attribution pane's footers show them.
fn details(
    attribution: &BTreeMap<Attribution, Vec<f64>>,
    n_src: usize,
    answer_len: usize,
    mirage: MirageResult,
) -> Details {
    Details {
        arc_jsd: Some(ArcJsdAttribution {
            divergence: Divergence::Jsd,
            scores: attribution[&Attribution::ArcJsd].clone(),
            per_token: (0..n_src)
                .map(|i| (0..answer_len).map(|t| noise(i, t, 11) * 0.1).collect())
                .collect(),
            top: 1,
            stats: ScoringStats {
                forwards: n_src + 1,
                tokens: 0,
            },
        }),
        mirage: Some(mirage),
        marginal: Some(Marginal {
            posterior: attribution[&Attribution::Marginal].clone(),
            loglik: vec![-9.0, -2.5, -8.0],
            loglik_no_documents: -11.25,
            prior: vec![1.0 / 3.0; 3],
        }),
        context_cite: Some(ContextCiteResult {
            scores: attribution[&Attribution::ContextCite].clone(),
            intercept: -3.5,
            span: 0..answer_len,
            alpha: 0.01,
            converged: true,
        }),
        ..Details::default()
    }
}

/// Every analysis of `answer`, computed.
fn report(sample: &Sample, info: &ModelInfo, answer: &AnswerView) -> AnalysisReport {
    let (layers, heads) = (info.layers, info.heads);
    let answer_len = answer.tokens.len();
    let text = answer.text.clone();
    let tokens = answer.tokens.clone();
    let n_src = sample.docs.len();
    let attribution = attribution(n_src);
    let total: f64 = answer.logprobs.iter().map(|&x| x as f64).sum();
    let mirage = mirage(
        &text,
        answer_len,
        attribution[&Attribution::Mirage].clone(),
        n_src,
    );
    AnalysisReport {
        model: info.clone(),
        sample_id: sample.id(),
        prompt_style: "mirage".into(),
        instruction: None,
        prompt_template: None,
        granularity: Granularity::Document,
        prompt_ids: Vec::new(),
        answer_ids: (0..answer_len as u32).collect(),
        answer_text: text.clone(),
        answer_tokens: tokens.clone(),
        answer_logprob: total,
        answer_source: AnswerSource::Generated,
        answer_correct: Some(true),
        ablation: None,
        gold: sample.gold(),
        sources: sources(sample),
        target_document: Some(TargetDocument {
            index: 1,
            chosen_by: "gold".into(),
        }),
        logit_lens: Some(LogitLens {
            top_k: 3,
            answer_tokens: tokens,
            rows: lens_rows(layers, answer_len),
        }),
        head_scores: head_scores(layers, heads),
        mlp_scores: mlp_scores(layers),
        details: details(&attribution, n_src, answer_len, mirage),
        attribution,
        ablation_curve: Some(AblationCurve {
            score: "arc_jsd".into(),
            config: CurveConfig::default(),
            clean_logprob: total,
            ranked_heads: Vec::new(),
            points: curve_points(total),
        }),
        faithfulness: BTreeMap::new(),
        costs: BTreeMap::new(),
        options: AnalyzeOptions::default(),
    }
}

/// Three heads and the first layer's MLP.
fn ablation(layers: usize, heads: usize) -> AblationSet {
    let mut ablation = AblationSet::default();
    ablation.heads.insert((0, 1.min(heads - 1)));
    ablation.heads.insert((1.min(layers - 1), 2.min(heads - 1)));
    ablation.heads.insert((layers - 1, 0));
    ablation.mlps.insert(0);
    ablation
}

/// The re-run under `ablation`: the answer departs at the third token.
fn live_result(ablation: &AblationSet, total: f64) -> LiveResult {
    let live_tokens: Vec<String> = ["The", " capital", " is", " Hadding", "."]
        .map(String::from)
        .to_vec();
    let delta_logprob = -2.375;
    LiveResult {
        run: LiveRun {
            set: ablation.clone(),
            answer_ids: (0..live_tokens.len() as u32).collect(),
            answer_text: live_tokens.concat(),
            answer_logprobs: vec![-0.7, -0.2, -1.6, -2.4, -0.3],
            original_answer_logprob: total + delta_logprob,
            delta_logprob,
            first_change: Some(2),
            recomputed_from_layer: Some(0),
            forwards: 3,
            seconds: 0.042,
        },
        tokens: live_tokens,
    }
}

/// [`demo_app`] after its live re-run came back: the panes show the ablated model (its answer
/// departs from the clean one at the third token, the ablated heads score nothing) with the clean
/// answer and results kept.
pub fn demo_ablated_app(layers: usize, heads: usize, answer_len: usize) -> App {
    let mut app = demo_app(layers, heads, answer_len);
    let live = app.editor.live.clone().expect("the demo has a live result");
    let mut answer = app.view.answer.clone();
    for (i, tok) in answer.tokens.iter_mut().enumerate().skip(2) {
        if let Some(t) = live.tokens.get(i) {
            *tok = t.clone();
        }
    }
    for lp in answer.logprobs.iter_mut().skip(2) {
        *lp -= 0.4;
    }
    answer.text = answer.tokens.concat();
    let mut report = app.view.report.clone().expect("the demo has a report");
    for matrix in report.head_scores.values_mut() {
        for &(l, h) in &live.run.set.heads {
            matrix[l][h] = 0.0;
        }
    }
    for scores in report.attribution.values_mut() {
        scores.rotate_left(1);
    }
    report.answer_tokens = answer.tokens.clone();
    report.answer_text = answer.text.clone();
    report.answer_logprob = answer.total_logprob();
    report.ablation_curve = None;
    report.ablation = Some("zero:…".into());
    app.enter_view(live.run.set.clone(), answer);
    app.view.report = Some(report);
    app.view.next_stage = STAGES.len();
    app
}
