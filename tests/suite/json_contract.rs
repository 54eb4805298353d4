//! The JSON contract of `headscope analyze --json` (README) does not drift: the output on a
//! fixture model must match, line by line, what the binary wrote before the vocabulary and the
//! runner were reshaped. Keys, their order, strings, ids and every structural line must be
//! identical; numbers may differ by rounding only (1e-6 relative). The costs' values (`seconds`,
//! `forwards`, `cached`: measurements) and the model's path are not compared.
//!
//! The expected files were written by headscope at commit 2967bf9 with
//! `headscope analyze --model <qwen2 fixture, context 512> tests/fixtures/analysis/sample.json
//! --no-cache --json FILE` and the arguments below, the model path replaced by `<MODEL>`.
//!
//! Extensions: a method added later adds its lines and nothing else. `heads:atp` added
//! `head_scores.atp`, `details.atp`, `costs."heads:atp"`, `options.atp_ablation` and `HeadsAtp` at
//! the end of `options.methods` (so the line before it gained its comma); every other line is as
//! recorded at 2967bf9 (checked with a line diff when the lines were inserted).

use std::path::{Path, PathBuf};

use crate::common;

/// `(expected file, analyze arguments)`.
const CASES: [(&str, &[&str]); 2] = [
    ("analyze-all.json", &["--method", "all"]),
    (
        "analyze-ablated.json",
        &[
            "--method",
            "heads:arc-jsd,attr:marginal,logit-lens",
            "--ablate",
            "L1H0,L2H3",
            "--ablate-mlp",
            "1",
            "--ablation-kind",
            "mean",
        ],
    ),
];

fn run_analyze(model: &Path, args: &[&str]) -> String {
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(["analyze", "--model"])
        .arg(model)
        .arg(&sample)
        .args(args)
        .args(["--no-cache", "--json", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A line's key part and its scalar value (`"k": 1.5,` → (`"k": `, `1.5`)).
fn split_value(line: &str) -> (&str, &str) {
    let body = line.trim_end().trim_end_matches(',');
    match body.rfind(": ") {
        Some(i) if body[..i].trim_start().starts_with('"') && body[..i].ends_with('"') => {
            (&body[..i + 2], &body[i + 2..])
        }
        _ => ("", body.trim_start()),
    }
}

/// Why `got` does not match `want`, if it does not; `in_costs`: the line is inside `costs`.
fn mismatch(want: &str, got: &str, in_costs: bool) -> Option<String> {
    if want == got {
        return None;
    }
    let ((wk, wv), (gk, gv)) = (split_value(want), split_value(got));
    if wk != gk || want.ends_with(',') != got.ends_with(',') {
        return Some(format!("structure: `{want}` vs `{got}`"));
    }
    // What a step cost is measured, not promised: its keys are compared, not its values.
    let measured = ["\"seconds\"", "\"forwards\"", "\"cached\""];
    if in_costs && measured.iter().any(|k| wk.trim_start().starts_with(k)) {
        return None;
    }
    match (wv.parse::<f64>(), gv.parse::<f64>()) {
        (Ok(a), Ok(b)) if (a - b).abs() <= 1e-6 * a.abs().max(1.0) => None,
        _ => Some(format!("value: `{want}` vs `{got}`")),
    }
}

#[test]
fn analyze_json_matches_the_recorded_contract() {
    let model = common::fixture_with_context("qwen2", 512);
    let model_str = serde_json::to_string(&model.to_string_lossy()).unwrap();
    for (file, args) in CASES {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/contract")
            .join(file);
        let want = std::fs::read_to_string(&path).unwrap();
        let got = run_analyze(&model, args).replace(&model_str, "\"<MODEL>\"");
        let (want, got): (Vec<&str>, Vec<&str>) = (want.lines().collect(), got.lines().collect());
        let mut in_costs = false;
        let mut problems = Vec::new();
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            // The report is pretty-printed: `costs` opens and closes at two spaces.
            if *w == "  \"costs\": {" {
                in_costs = true;
            } else if in_costs && w.starts_with("  }") {
                in_costs = false;
            }
            if let Some(m) = mismatch(w, g, in_costs) {
                problems.push(format!("line {}: {m}", i + 1));
            }
        }
        assert!(
            problems.is_empty(),
            "{file}: {}",
            problems[..problems.len().min(10)].join("\n")
        );
        assert_eq!(want.len(), got.len(), "{file}: line count");
    }
}
