//! `heads:atp` (attribution patching) on the three fixture families: its gradient against
//! central finite differences through the exact (fast, non-differentiable) engine, its ranking
//! against the exact zero-ablation sweep, and `analyze` end to end.

use crate::common;

use candle_core::Tensor;
use serde_json::Value;

use headscope::analysis::ablation::{ablated_answer_logprobs, head_ablation_sweep, subject_mean_z};
use headscope::analysis::atp::{attribution_patching, AtpScores};
use headscope::analysis::lasso::spearman;
use headscope::analysis::report::HeadScore;
use headscope::analysis::{no_progress, Subject};
use headscope::engine::{AblationKind, AblationMode, Engine, HeadAblation};
use headscope::study::detect::DetectMethod;

const FAMILIES: [&str; 3] = ["qwen2", "llama", "gemma2"];

fn atp(engine: &Engine, subject: &Subject, mode: AblationMode) -> AtpScores {
    attribution_patching(
        engine,
        &subject.prompt.ids,
        subject.answer_ids(),
        mode,
        &mut no_progress,
    )
    .unwrap()
}

/// The answer log-prob with every head, one per row, scaled by `keep`: the engine's head mask
/// computes `z·keep + r·(1 − keep)` (`r` = 0 for zero ablation, the head's mean for mean
/// ablation), which for `keep = 1 − s` is `z + s·(r − z)` exactly — a point on the straight line
/// from the clean `z` to the ablated one, through the fast forward AtP never uses.
fn scaled_logprobs(engine: &Engine, subject: &Subject, kind: &AblationKind, keep: f32) -> Vec<f64> {
    let arch = engine.arch();
    let (layers, heads) = (arch.num_layers, arch.num_heads);
    let n = layers * heads;
    let mut mask = vec![1f32; n * n];
    for r in 0..n {
        mask[r * n + r] = keep;
    }
    let ablation = HeadAblation {
        mask: Tensor::from_vec(mask, (n, layers, heads), engine.device()).unwrap(),
        kind: kind.clone(),
        // Named, not read back from the mask: the engine infers ablated layers from entries
        // below 1, which `keep > 1` has none of.
        layers: Some(vec![true; layers]),
    };
    ablated_answer_logprobs(engine, subject, &ablation).unwrap()
}

/// `(M(s) − M(−s)) / 2s` per head, `M(s)` the answer log-prob with `z → z + s·(z' − z)`.
fn central_differences(
    engine: &Engine,
    subject: &Subject,
    kind: &AblationKind,
    s: f64,
) -> Vec<f64> {
    let plus = scaled_logprobs(engine, subject, kind, (1.0 - s) as f32);
    let minus = scaled_logprobs(engine, subject, kind, (1.0 + s) as f32);
    plus.iter()
        .zip(&minus)
        .map(|(p, m)| (p - m) / (2.0 * s))
        .collect()
}

/// AtP is `d M(z + s·(z' − z)) / ds` at `s = 0`; the derivative estimated by central differences
/// in `s` through the exact engine must give the same number for every head, for zero and mean
/// ablation.
///
/// Step and tolerance. These random models are far from linear (`M ≈ −250`, single-head effects
/// up to ±25), so a plain central difference is truncation-bound (error `c·s²`: worst 2.4e-2 at
/// s = 1e-2, 6.7e-3 at 3e-3) until f32 rounding of `M` (~2e-5), divided by `2s`, takes over
/// (worst 1.2e-2 at 1e-3). Richardson extrapolation `(4·D(s) − D(2s)) / 3` removes the `s²` term:
/// worst error 1.5e-3 at s = 1e-2 over the three families (1.3e-2 at 2e-2, truncation; 4.6e-3
/// at 5e-3, rounding). The tolerance, 5e-3, is three times that and far below the effects, so a
/// wrong gradient (a missing path through the layers above, a sign, a layer's probe unused)
/// fails.
#[test]
fn atp_is_the_derivative_along_the_ablation() {
    const S: f64 = 1e-2;
    for family in FAMILIES {
        let (engine, subject) = common::fixture_subject(family);
        let means = subject_mean_z(&engine, &subject).unwrap();
        let heads = engine.arch().num_heads;
        for (mode, kind) in [
            (AblationMode::Zero, AblationKind::Zero),
            (AblationMode::Mean, AblationKind::Mean(means.clone())),
        ] {
            let a = atp(&engine, &subject, mode);
            let fd = central_differences(&engine, &subject, &kind, S);
            let fd2 = central_differences(&engine, &subject, &kind, 2.0 * S);
            let mut worst = 0f64;
            for (r, (d1, d2)) in fd.iter().zip(&fd2).enumerate() {
                let (l, h) = (r / heads, r % heads);
                // Richardson: the central difference's error is c·s² + O(s⁴).
                let fd = (4.0 * d1 - d2) / 3.0;
                let got = a.delta_logprob[l][h];
                let err = (fd - got).abs();
                worst = worst.max(err);
                assert!(
                    err <= 5e-3,
                    "{family} {mode:?} L{l}H{h}: AtP {got} vs finite difference {fd}"
                );
            }
            eprintln!("{family} {mode:?}: worst |AtP − finite difference| = {worst:.2e}");
        }
    }
}

/// AtP's clean log-prob is the exact engine's, and its ranking of heads follows the exact
/// zero-ablation sweep's (Spearman ρ printed). These random models are far from linear: their
/// layer-0 heads move the answer log-prob by up to ±20 nats through every later layer, where a
/// first-order estimate is known to fail (Kramár et al. 2024 find AtP's errors where effects are
/// large and saturating), and there AtP even gets signs wrong (qwen2 L0H2: +8.3 vs −10.9). So
/// the assertion is layered: over all heads ρ is moderate (measured 0.56 / 0.55 / 0.92 on
/// qwen2 / llama / gemma2; asserted > 0.3), above layer 0 it is high (measured 0.95 / 1.00 / 0.94; asserted
/// ≥ 0.8). The real model's agreement is measured in `benches/results/atp-smollm2.md`.
#[test]
fn atp_ranks_heads_like_the_exact_sweep() {
    for family in FAMILIES {
        let (engine, subject) = common::fixture_subject(family);
        let a = atp(&engine, &subject, AblationMode::Zero);
        let sweep = head_ablation_sweep(
            &engine,
            &subject.prompt.ids,
            subject.answer_ids(),
            16,
            &mut no_progress,
        )
        .unwrap();
        let clean = sweep.clean_logprob;
        assert!(
            (a.clean_logprob - clean).abs() <= 1e-4 * clean.abs().max(1.0),
            "{family}: clean log-prob {} vs {clean}",
            a.clean_logprob
        );
        let flat = |m: &[Vec<f64>]| m.concat();
        let (est, exact) = (flat(&a.delta_logprob), flat(&sweep.delta_logprob));
        let rho = spearman(&est, &exact);
        let above = |m: &[Vec<f64>]| m[1..].concat();
        let rho_above = spearman(&above(&a.delta_logprob), &above(&sweep.delta_logprob));
        eprintln!(
            "{family}: Spearman ρ(AtP, exact ablation) = {rho:.3} over all {} heads, \
             {rho_above:.3} above layer 0",
            est.len()
        );
        assert!(rho > 0.3, "{family}: ρ = {rho}");
        assert!(rho_above >= 0.8, "{family}: ρ above layer 0 = {rho_above}");
    }
}

fn analyze_json(model: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let sample = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/analysis/sample.json");
    std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(["analyze", "--model"])
        .arg(model)
        .arg(&sample)
        .args(["--method", "heads:atp", "--no-cache", "--json", "-"])
        .args(extra)
        .output()
        .unwrap()
}

/// `headscope analyze --method heads:atp` writes the matrix, its details and its cost (one
/// forward), with the library's numbers; `--atp-ablation mean` switches the estimate and
/// `uniform` is refused with a reason. The study and the explorer take the score by name.
#[test]
fn analyze_heads_atp_end_to_end() {
    let model = common::fixture_with_context("qwen2", 512);
    let (engine, subject) = common::fixture_subject("qwen2");
    for mode in [AblationMode::Zero, AblationMode::Mean] {
        let out = analyze_json(&model, &["--atp-ablation", mode.label()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let want = atp(&engine, &subject, mode);
        let got: Vec<Vec<f64>> =
            serde_json::from_value(report["head_scores"]["atp"].clone()).unwrap();
        assert_eq!(got.len(), engine.arch().num_layers);
        for (g, w) in got.concat().iter().zip(want.delta_logprob.concat()) {
            assert!(
                (g - w).abs() <= 1e-9 * w.abs().max(1.0),
                "{mode:?}: {g} vs {w}"
            );
        }
        let details = &report["details"]["atp"];
        assert_eq!(details["ablation"], mode.label());
        assert_eq!(details["delta_logprob"], report["head_scores"]["atp"]);
        assert_eq!(report["options"]["atp_ablation"], mode.label());
        assert_eq!(report["costs"]["heads:atp"]["forwards"], 1);
        assert_eq!(
            report["options"]["methods"],
            serde_json::json!(["HeadsAtp"])
        );
    }
    let out = analyze_json(&model, &["--atp-ablation", "uniform"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("zero or mean"), "{err}");

    assert_eq!("heads:atp".parse::<HeadScore>().unwrap(), HeadScore::Atp);
    assert_eq!(
        "atp".parse::<DetectMethod>().unwrap(),
        DetectMethod::Score(HeadScore::Atp)
    );
    assert!(HeadScore::ALL.contains(&HeadScore::Atp));
    assert_eq!(
        HeadScore::Atp.importance_sign(),
        HeadScore::Ablation.importance_sign()
    );
}
