//! Every deterministic analysis against the independent PyTorch/transformers implementation in
//! `scripts/make_analysis_fixtures.py` (definitions: ANALYSES.md), on the three tiny fixture
//! models. Expected values: `tests/fixtures/analysis/<family>.json`.
//!
//! Tolerance: 1e-4, relative to the value's size where it exceeds 1 (these random models give
//! `log p(answer)` ≈ −250 and gradient norms up to ~100, where float32 rounding alone moves the
//! reference by more than 1e-4 absolute; the generator records that drift per key).

use std::path::Path;

use serde_json::Value;

use headscope::analysis::ablation::{
    ablated_answer_logprobs, ablation_kind, head_ablation_sweep, head_set_ablation,
};
use headscope::analysis::attention::{attention_attribution, span_attention, summed_attention};
use headscope::analysis::context_cite::{ablations, fit};
use headscope::analysis::divergence::Divergence;
use headscope::analysis::faithfulness::{heldout_targets, lds, topk_logprob_drop};
use headscope::analysis::scoring::PrefixScorer;
use headscope::analysis::{
    arc_jsd, logit_lens, marginal, mirage, no_progress, patching, qrhead, retrieval, Subject,
};
use headscope::engine::AblationMode;
use headscope::engine::Engine;
use headscope::prompt::Granularity;

use crate::common;

const TOL: f64 = 1e-4;

fn close(got: f64, want: f64) -> bool {
    (got - want).abs() <= TOL * want.abs().max(1.0)
}

#[track_caller]
fn assert_close(what: &str, got: f64, want: f64) {
    assert!(close(got, want), "{what}: got {got}, expected {want}");
}

#[track_caller]
fn assert_vec(what: &str, got: &[f64], want: &Value) {
    let want: Vec<f64> = serde_json::from_value(want.clone()).expect(what);
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_close(&format!("{what}[{i}]"), *g, *w);
    }
}

#[track_caller]
fn assert_matrix(what: &str, got: &[Vec<f64>], want: &Value) {
    let rows = want.as_array().expect(what);
    assert_eq!(got.len(), rows.len(), "{what}: rows");
    for (i, (g, w)) in got.iter().zip(rows).enumerate() {
        assert_vec(&format!("{what}[{i}]"), g, w);
    }
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

fn masks(v: &Value) -> Vec<Vec<bool>> {
    let m: Vec<Vec<u8>> = serde_json::from_value(v.clone()).unwrap();
    m.into_iter()
        .map(|r| r.into_iter().map(|x| x == 1).collect())
        .collect()
}

struct Case {
    engine: Engine,
    subject: Subject,
    expected: Value,
    fixed: Value,
}

fn case(family: &str) -> Case {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis");
    let (engine, subject) = common::fixture_subject(family);
    let read = |name: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(root.join(name)).unwrap()).unwrap()
    };
    Case {
        engine,
        subject,
        expected: read(&format!("{family}.json")),
        fixed: read("sample.json"),
    }
}

fn check_family(family: &str) {
    let Case {
        engine,
        subject,
        expected: x,
        fixed,
    } = case(family);
    let s = &subject;
    let e = &engine;

    // Same prompt, answer and spans as the reference: every comparison below sees the same input.
    assert_eq!(
        s.prompt.text,
        x["prompt_text"].as_str().unwrap(),
        "prompt text"
    );
    assert_eq!(s.prompt.ids, ids(&x["prompt_ids"]), "prompt ids");
    assert_eq!(
        s.answer_ids(),
        ids(&x["answer_ids"]).as_slice(),
        "answer ids"
    );
    let doc_spans: Vec<[usize; 2]> = serde_json::from_value(x["doc_spans"].clone()).unwrap();
    for (d, w) in s.prompt.docs.iter().zip(&doc_spans) {
        assert_eq!([d.tokens.start, d.tokens.end], *w, "document span");
    }
    let lp: Vec<f64> = s.answer.logprobs.iter().map(|&v| v as f64).collect();
    assert_vec("answer_logprobs", &lp, &x["answer_logprobs"]);

    // Logit lens.
    let lens = logit_lens::logit_lens(e, s, 5, &mut no_progress).unwrap();
    let xl = &x["logit_lens"];
    for (r, row) in lens.rows.iter().enumerate() {
        assert_eq!(row.label, xl["labels"][r].as_str().unwrap());
        for (t, cell) in row.cells.iter().enumerate() {
            let top: Vec<u32> = cell.top.iter().map(|c| c.id).collect();
            assert_eq!(
                top,
                ids(&xl["top_ids"][r][t]),
                "lens top ids {} t={t}",
                row.label
            );
            let probs: Vec<f64> = cell.top.iter().map(|c| c.prob).collect();
            assert_vec("lens top probs", &probs, &xl["top_probs"][r][t]);
            assert_close(
                "lens answer prob",
                cell.answer_prob,
                xl["answer_prob"][r][t].as_f64().unwrap(),
            );
            assert_eq!(
                cell.answer_rank as u64,
                xl["answer_rank"][r][t].as_u64().unwrap(),
                "lens rank"
            );
        }
    }

    let g = Granularity::Document;
    let scorer = PrefixScorer::for_subject(e, s).unwrap();

    // ARC-JSD attribution (three divergences) and head / MLP localisation.
    let attr = |d| arc_jsd::attribution(e, s, g, d, &scorer, &mut no_progress).unwrap();
    let jsd = attr(Divergence::Jsd);
    assert_vec("attr.arc_jsd", &jsd.scores, &x["attr"]["arc_jsd"]);
    assert_vec(
        "attr.arc_jsd_arc_code",
        &attr(Divergence::JsdArcCode).scores,
        &x["attr"]["arc_jsd_arc_code"],
    );
    assert_vec(
        "attr.arc_jsd_kl",
        &attr(Divergence::Kl).scores,
        &x["attr"]["arc_jsd_kl"],
    );
    assert_eq!(
        jsd.top as u64,
        x["heads"]["arc_jsd_removed_doc"].as_u64().unwrap()
    );
    let heads = arc_jsd::heads(e, s, g, jsd.top, Divergence::Jsd, &mut no_progress).unwrap();
    assert_matrix("heads.arc_jsd", &heads.heads, &x["heads"]["arc_jsd"]);
    assert_vec("mlp.arc_jsd", &heads.mlp, &x["mlp"]["arc_jsd"]);

    // Attention mass: summed attention to the gold document and the attention attribution.
    let gold = s.sample.gold().unwrap();
    let spans: Vec<_> = s.prompt.docs.iter().map(|d| d.tokens.clone()).collect();
    let att = span_attention(e, s, &spans).unwrap();
    assert_matrix(
        "heads.summed_attention",
        &summed_attention(&att, gold, false),
        &x["heads"]["summed_attention"],
    );
    assert_matrix(
        "heads.summed_attention_from_answer",
        &summed_attention(&att, gold, true),
        &x["heads"]["summed_attention_from_answer"],
    );
    assert_vec(
        "attr.attention",
        &attention_attribution(&att, spans.len()),
        &x["attr"]["attention"],
    );

    // Retrieval and QRHead.
    let (needle, from) = retrieval::needle_span(s, gold);
    let r = retrieval::retrieval_scores(e, s, needle, from, &mut no_progress).unwrap();
    assert_matrix("heads.retrieval", &r.scores, &x["heads"]["retrieval"]);
    let q = qrhead::qrhead(e, s, gold, &mut no_progress).unwrap();
    assert_matrix("heads.qrhead", &q.scores, &x["heads"]["qrhead"]);
    assert_vec(
        "heads.qrhead_doc_totals",
        &q.document_totals,
        &x["heads"]["qrhead_doc_totals"],
    );

    // Zero-ablation sweep and activation patching.
    let sweep = head_ablation_sweep(e, &s.prompt.ids, s.answer_ids(), 4, &mut no_progress).unwrap();
    assert_matrix(
        "heads.ablation",
        &sweep.delta_logprob,
        &x["heads"]["ablation"],
    );
    let pt = patching::patching(e, s, gold, 4, &mut no_progress).unwrap();
    assert_matrix("heads.patching", &pt.effect, &x["heads"]["patching"]);
    assert_close(
        "patching clean",
        pt.clean_logprob,
        x["heads"]["patching_clean"].as_f64().unwrap(),
    );
    assert_close(
        "patching corrupted",
        pt.corrupted_logprob,
        x["heads"]["patching_corrupted"].as_f64().unwrap(),
    );
    assert_eq!(
        pt.patched_positions as u64,
        x["heads"]["patching_k"].as_u64().unwrap()
    );

    // ContextCite with the fixed masks: the model part, then the fit.
    let cc_masks = masks(&fixed["context_cite_masks"]);
    let abl = ablations(e, s, g, &cc_masks, &scorer, &mut no_progress).unwrap();
    assert_matrix(
        "context_cite_logit_probs",
        &abl.logit_probs,
        &x["attr"]["context_cite_logit_probs"],
    );
    let cc = fit(&abl, 0..s.answer_ids().len(), 0.01).unwrap();
    assert_vec("attr.context_cite", &cc.scores, &x["attr"]["context_cite"]);
    assert_close(
        "context_cite intercept",
        cc.intercept,
        x["attr"]["context_cite_intercept"].as_f64().unwrap(),
    );

    // MIRAGE: CTI, contrast tokens, selection, gradient saliency on document tokens, citations.
    let ms = mirage::scores(e, s, &mut no_progress).unwrap();
    assert_vec("mirage_cti", &ms.cti, &x["attr"]["mirage_cti"]);
    assert_eq!(
        ms.contrast_ids,
        ids(&x["attr"]["mirage_contrast_ids"]),
        "contrast ids"
    );
    let selected: Vec<usize> =
        serde_json::from_value(x["attr"]["mirage_selected"].clone()).unwrap();
    assert_eq!(ms.selected, selected, "selected tokens");
    assert_vec("mirage_f", &ms.objective, &x["attr"]["mirage_f"]);
    let doc_pos: Vec<usize> =
        serde_json::from_value(x["attr"]["mirage_doc_token_positions"].clone()).unwrap();
    for (k, row) in ms.cci.iter().enumerate() {
        let on_docs: Vec<f64> = doc_pos.iter().map(|&j| row[j]).collect();
        assert_vec(
            &format!("mirage_cci[{k}]"),
            &on_docs,
            &x["attr"]["mirage_cci"][k],
        );
    }
    let cited = mirage::cite(&ms, s, e, g, &mirage::MirageConfig::default()).unwrap();
    assert_vec("attr.mirage", &cited.scores, &x["attr"]["mirage"]);
    assert_eq!(
        cited.cited_answer,
        x["attr"]["mirage_cited_answer"].as_str().unwrap()
    );

    // Document-alone marginals.
    let m = marginal::marginal(e, s, g, &scorer, &mut no_progress).unwrap();
    assert_vec("attr.marginal", &m.posterior, &x["attr"]["marginal"]);
    assert_vec("marginal_loglik", &m.loglik, &x["attr"]["marginal_loglik"]);
    assert_close(
        "marginal_no_docs",
        m.loglik_no_documents,
        x["attr"]["marginal_no_docs"].as_f64().unwrap(),
    );

    // A fixed head set ablated together, three ways.
    let set: Vec<(usize, usize)> = serde_json::from_value(fixed["curve_heads"].clone()).unwrap();
    let xa = &x["ablation_fixed_heads"];
    for (kind, key) in [
        (AblationMode::Zero, "zero"),
        (AblationMode::Mean, "mean"),
        (AblationMode::Uniform, "uniform"),
    ] {
        let k = ablation_kind(e, s, kind).unwrap();
        let ab = head_set_ablation(e, &[set.clone(), vec![]], &k).unwrap();
        let lp = ablated_answer_logprobs(e, s, &ab).unwrap();
        assert_close(&format!("ablation {key}"), lp[0], xa[key].as_f64().unwrap());
        assert_close("no heads ablated", lp[1], xa["clean"].as_f64().unwrap());
    }

    // Faithfulness: top-k drop of ARC-JSD, LDS of ContextCite on the held-out masks.
    let drop = topk_logprob_drop(e, s, &jsd.scores, g, &scorer, 2).unwrap();
    assert_vec(
        "topk_drop.arc_jsd",
        &drop,
        &x["faithfulness"]["topk_drop"]["arc_jsd"],
    );
    let held = masks(&fixed["heldout_masks"]);
    let y = heldout_targets(
        e,
        s,
        g,
        &scorer,
        &held,
        0..s.answer_ids().len(),
        &mut no_progress,
    )
    .unwrap();
    assert_vec("lds_heldout_y", &y, &x["faithfulness"]["lds_heldout_y"]);
    let got = lds(&cc.scores, cc.intercept, &held, &y).unwrap();
    assert_close(
        "lds.context_cite",
        got,
        x["faithfulness"]["lds"]["context_cite"].as_f64().unwrap(),
    );
}

#[test]
fn qwen2_matches_the_reference() {
    check_family("qwen2");
}

#[test]
fn llama_matches_the_reference() {
    check_family("llama");
}

#[test]
fn gemma2_matches_the_reference() {
    check_family("gemma2");
}
