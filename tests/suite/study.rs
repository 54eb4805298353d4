//! `headscope study` through the binary, on the tiny fixture model and a small dataset: the
//! phases end to end, a run killed after a few units and resumed ends with byte-identical files,
//! the report refuses while units are missing, and bad data is refused before any model runs.
//! The SmolLM2 test runs a small real study (a few samples, two k values).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::args;
use crate::common::{fixture_with_context, headscope, smollm2_path, succeeds};

pub(crate) fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("study-{}-{name}", std::process::id()))
}

/// Five short filings-like samples per category, two categories, the answer in `gold`.
pub(crate) fn tiny_dataset(path: &Path, edit: impl Fn(usize, &mut serde_json::Value)) {
    let states = ["Texas", "Ohio", "Utah", "Iowa", "Maine", "Idaho"];
    let mut lines = String::new();
    for i in 0..12 {
        let (category, question, answer, gold) = if i % 2 == 0 {
            (
                "state",
                "Where is the company incorporated?",
                states[i / 2],
                1,
            )
        } else {
            (
                "year",
                "When was the company incorporated?",
                ["1987", "2001", "1999", "1975", "2010", "1964"][i / 2],
                0,
            )
        };
        let docs = [
            format!(
                "The company was incorporated in {} and makes parts.",
                if gold == 0 { answer } else { "1990" }
            ),
            format!(
                "Its charter is filed in {}.",
                if gold == 1 { answer } else { "Nevada" }
            ),
        ];
        let mut v = serde_json::json!({
            "id": format!("s{i:02}"),
            "question": question,
            "docs": docs.iter().map(|t| serde_json::json!({"title": "", "text": t})).collect::<Vec<_>>(),
            "answers": [answer],
            "gold": gold,
            "category": category,
        });
        edit(i, &mut v);
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

/// A JSON file of a study's folder.
fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every file under `dir` with its bytes, by relative path.
pub(crate) fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

pub(crate) fn study_args(
    cmd: &str,
    data: &Path,
    out: &Path,
    model: &Path,
) -> Vec<std::ffi::OsString> {
    args![
        "study",
        cmd,
        data,
        "--out",
        out,
        "--model",
        model,
        "--ks",
        "0,1,2",
        "--draws",
        "2",
        "--top-n",
        "4",
        "--max-new-tokens",
        "3",
        "--bootstrap",
        "100",
        "--batch",
        "3",
        "--methods",
        "summed-attention,retrieval,qrhead,summed-attention-answer,retrieval-all"
    ]
}

#[test]
fn a_study_runs_end_to_end_and_a_killed_run_resumes_to_the_same_files() {
    let model = fixture_with_context("llama", 2048);
    let data = tmp("data.jsonl");
    tiny_dataset(&data, |_, _| {});
    let (a, b) = (tmp("a"), tmp("b"));
    succeeds(&study_args("run", &data, &a, &model));

    // Killed after 4 units (the hook exits with an error), the report refuses, then it resumes.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(study_args("run", &data, &b, &model))
        .env("HEADSCOPE_STUDY_ABORT_AFTER", "4")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborted after 4 units"));
    let out = headscope(&study_args("report", &data, &b, &model));
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("units are missing") && err.contains("detect"),
        "{err}"
    );
    let status = succeeds(&args!["study", "status", "--out", &b]);
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("4/10"),
        "two of ten detect units left after 4 of them: {status}"
    );
    let resumed = succeeds(&study_args("run", &data, &b, &model));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("already done, resuming"));
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(fb[name] == *bytes, "{name} differs after the resume");
    }

    // The layout and the summary: 10 training and 2 test samples, 5 methods × 2 categories.
    assert!(fa.contains_key("split/train.jsonl") && fa.contains_key("config.toml"));
    assert!(fa.contains_key("FINDINGS.md") && fa.contains_key("summary.json"));
    let figure = "figures/curve-llama-ctx2048-retrieval-state";
    assert!(fa.contains_key(&format!("{figure}.svg")) && fa.contains_key(&format!("{figure}.png")));
    let units = |prefix: &str| fa.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(units("detect/llama-ctx2048/samples/"), 10);
    assert_eq!(units("ablate/llama-ctx2048/clean/"), 2);
    assert_eq!(units("ablate/llama-ctx2048/qrhead/"), 2);
    let config = String::from_utf8_lossy(&fa["config.toml"]);
    assert!(
        config.contains("sha256 = \"") && config.contains("rendered_prompt"),
        "{config}"
    );
    let summary: serde_json::Value = serde_json::from_slice(&fa["summary.json"]).unwrap();
    assert_eq!(summary["design"]["ks"], serde_json::json!([0, 1, 2]));
    let m = &summary["models"][0];
    assert_eq!(
        (m["layers"].as_u64(), m["heads"].as_u64()),
        (Some(3), Some(4))
    );
    assert_eq!(m["experiments"].as_array().unwrap().len(), 10);
    assert_eq!(m["detect"][0]["top"].as_array().unwrap().len(), 4);
    for e in m["experiments"].as_array().unwrap() {
        let points = e["points"].as_array().unwrap();
        assert_eq!(points.len(), 3);
        // k = 0 is the clean model in every condition.
        let clean = m["clean_accuracy"][e["category"].as_str().unwrap()]["value"].as_f64();
        assert_eq!(points[0]["top"]["value"].as_f64(), clean);
        assert_eq!(points[0]["random"]["pooled"]["value"].as_f64(), clean);
        assert_eq!(points[2]["random"]["per_draw"].as_array().unwrap().len(), 2);
    }
    // Each ablation unit names its mode and positions, and has 2 ks × (top, 2 draws, matched).
    let (_, unit) = fa
        .iter()
        .find(|(k, _)| k.starts_with("ablate/llama-ctx2048/retrieval/"))
        .unwrap();
    let unit: serde_json::Value = serde_json::from_slice(unit).unwrap();
    assert_eq!(
        (unit["mode"].as_str(), unit["positions"].as_str()),
        (Some("zero"), Some("all"))
    );
    assert_eq!(unit["conditions"].as_array().unwrap().len(), 8);
    // Another configuration in the same folder is refused.
    let mut other = study_args("run", &data, &a, &model);
    other.extend(args!["--seed", "7"]);
    let out = headscope(&other);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another configuration"));
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bad_study_data_is_refused_before_any_model_runs() {
    let model = fixture_with_context("llama", 2048);
    let cases: Vec<(&str, Box<dyn Fn(usize, &mut serde_json::Value)>, &str)> = vec![
        (
            "no-category",
            Box::new(|i, v| {
                if i == 3 {
                    v.as_object_mut().unwrap().remove("category");
                }
            }),
            "sample 3: no `category`",
        ),
        (
            "few",
            Box::new(|i, v| {
                if i == 3 {
                    v["category"] = "rare".into();
                }
            }),
            "category `rare` has 1 sample",
        ),
        (
            "gold",
            Box::new(|i, v| {
                if i == 5 {
                    v["gold"] = 7.into();
                }
            }),
            "sample 5 (line 6): `gold` is 7 but there are only 2 documents",
        ),
    ];
    for (name, edit, message) in cases {
        let data = tmp(&format!("{name}.jsonl"));
        tiny_dataset(&data, edit);
        let out_dir = tmp(&format!("bad-{name}"));
        let out = headscope(&study_args(
            "run",
            &data,
            &out_dir,
            Path::new("/nonexistent/model"),
        ));
        assert_eq!(out.status.code(), Some(1), "{name}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{name}: {err}");
        assert!(
            !err.contains("loading") && !err.contains("panicked"),
            "{name}: {err}"
        );
        let _ = std::fs::remove_dir_all(out_dir);
    }
    let data = tmp("good.jsonl");
    tiny_dataset(&data, |_, _| {});
    let out_dir = tmp("bad-method");
    let out = headscope(&args![
        "study",
        "run",
        data,
        "--out",
        out_dir,
        "--model",
        model,
        "--methods",
        "attention"
    ]);
    assert_eq!(out.status.code(), Some(2), "clap refuses an unknown method");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown method `attention`"));
    // 12 heads, top 4: k = 9 leaves too few heads outside the top list to draw from.
    let out = headscope(&args![
        "study", "run", data, "--out", out_dir, "--model", model, "--ks", "0,9", "--top-n", "9"
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("k = 9 is above the 3 heads"), "{err}");
    assert!(!out_dir.join("detect").exists(), "nothing ran");
    let _ = std::fs::remove_dir_all(out_dir);
}

/// A small real study on SmolLM2, as CI runs it: one training and one test sample per category,
/// one method, k ∈ {0, 5}, one random draw (a debug build runs a forward several times slower than
/// a release build, so CI keeps it to a few dozen forwards).
#[test]
fn a_small_smollm2_study_finds_heads_and_ablates_them() {
    let Some(model) = smollm2_path("the SmolLM2 study") else {
        return;
    };
    let data = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("samples/filings.jsonl");
    let out_dir = tmp("smollm2");
    succeeds(&args![
        "study",
        "run",
        data,
        "--out",
        out_dir,
        "--model",
        model,
        "--ks",
        "0,5",
        "--draws",
        "1",
        "--top-n",
        "10",
        "--methods",
        "summed-attention",
        "--train-per-category",
        "1",
        "--test-per-category",
        "1",
        "--bootstrap",
        "200"
    ]);
    let summary = read_json(&out_dir.join("summary.json"));
    let m = &summary["models"][0];
    assert_eq!(
        (m["layers"].as_u64(), m["heads"].as_u64()),
        (Some(30), Some(9))
    );
    assert_eq!(m["experiments"].as_array().unwrap().len(), 4);
    for d in m["detect"].as_array().unwrap() {
        // Attention mass of the last prompt token on the gold document: a share of one, and the
        // best head gives the document a noticeable share.
        let top = d["top"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        let best = top[0]["mean"].as_f64().unwrap();
        assert!(best > 0.05 && best <= 1.0, "{best}");
    }
    // Every test answer was regenerated under each condition and judged against the answers.
    for unit in
        std::fs::read_dir(out_dir.join("ablate/SmolLM2-135M-Instruct.Q4_1/summed_attention"))
            .unwrap()
    {
        let unit = read_json(&unit.unwrap().path());
        let conditions = unit["conditions"].as_array().unwrap();
        assert_eq!(conditions.len(), 3, "top, one random draw, layer-matched");
        assert!(conditions
            .iter()
            .all(|c| c["clean_answer_logprob"].as_f64().unwrap() < 0.0));
    }
    let findings = std::fs::read_to_string(out_dir.join("FINDINGS.md")).unwrap();
    assert!(findings.contains("SmolLM2-135M-Instruct.Q4_1"));
    let _ = std::fs::remove_dir_all(out_dir);
}

/// Detection's shared forward gives exactly what `analyze`'s own functions give on the same
/// subject: QRHead, the retrieval score with the same needle, summed attention; and a head score
/// that goes through `analyze`'s runner (ARC-JSD) is `analyze`'s matrix.
#[test]
fn detection_from_one_forward_matches_the_analysis_functions() {
    use headscope::analysis::attention::{span_attention, summed_attention};
    use headscope::analysis::report::HeadScore;
    use headscope::analysis::{no_progress, qrhead, retrieval};
    use headscope::study::detect::{answer_needle, detect_sample, DetectMethod};

    let (engine, subject) = crate::common::fixture_subject("llama");
    let gold = subject.sample.gold().unwrap_or(0);
    let needle = answer_needle(&subject, gold);
    let methods = [
        DetectMethod::Score(HeadScore::SummedAttention),
        DetectMethod::SummedAttentionAnswer,
        DetectMethod::Score(HeadScore::Retrieval),
        DetectMethod::Score(HeadScore::QrHead),
        DetectMethod::Score(HeadScore::ArcJsd),
    ];
    let got = detect_sample(&engine, &subject, gold, &needle, &methods).unwrap();
    let close = |a: &[Vec<f64>], b: &[Vec<f64>], what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-5, "{what}: {x} vs {y}");
        }
    };
    let qr = qrhead::qrhead(&engine, &subject, gold, &mut no_progress).unwrap();
    close(&got["qrhead"], &qr.scores, "qrhead");
    let rs = retrieval::retrieval_scores(
        &engine,
        &subject,
        needle.clone(),
        "answer".into(),
        &mut no_progress,
    )
    .unwrap();
    close(&got["retrieval"], &rs.scores, "retrieval");
    let spans = [subject.prompt.docs[gold].tokens.clone(), needle];
    let att = span_attention(&engine, &subject, &spans).unwrap();
    close(
        &got["summed_attention"],
        &summed_attention(&att, 0, false),
        "summed attention",
    );
    close(
        &got["summed_attention_answer"],
        &summed_attention(&att, 1, false),
        "to the answer",
    );
    // Attention masses are shares of one.
    assert!(got["summed_attention"]
        .iter()
        .flatten()
        .all(|&v| (0.0..=1.0 + 1e-6).contains(&v)));
    let arc = &got["arc_jsd"];
    assert_eq!((arc.len(), arc[0].len()), (3, 4));
    assert!(
        arc.iter().flatten().any(|&v| v > 0.0),
        "ARC-JSD scores some head"
    );
}

/// Mean and uniform-pattern ablation, and decode-only positions: each named in every unit, and
/// each changes the clean answer's log-prob under some condition (the ablation acts).
#[test]
fn every_ablation_mode_and_position_setting_runs_and_is_named() {
    let model = fixture_with_context("llama", 2048);
    let data = tmp("modes.jsonl");
    tiny_dataset(&data, |_, _| {});
    for (mode, positions) in [
        ("mean", "all"),
        ("uniform", "decode-only"),
        ("zero", "decode-only"),
    ] {
        let out_dir = tmp(&format!("mode-{mode}-{positions}"));
        succeeds(&args![
            "study",
            "run",
            data,
            "--out",
            out_dir,
            "--model",
            model,
            "--ks",
            "0,2",
            "--draws",
            "1",
            "--top-n",
            "4",
            "--max-new-tokens",
            "3",
            "--bootstrap",
            "50",
            "--methods",
            "summed-attention",
            "--ablation",
            mode,
            "--positions",
            positions
        ]);
        let dir = out_dir.join("ablate/llama-ctx2048");
        let mut changed = false;
        for entry in std::fs::read_dir(dir.join("summed_attention")).unwrap() {
            let path = entry.unwrap().path();
            let unit = read_json(&path);
            assert_eq!(unit["mode"], mode);
            assert_eq!(unit["positions"], positions);
            let clean = read_json(&dir.join("clean").join(path.file_name().unwrap()));
            let base = clean["answer_logprob"].as_f64().unwrap();
            for c in unit["conditions"].as_array().unwrap() {
                changed |= (c["clean_answer_logprob"].as_f64().unwrap() - base).abs() > 1e-4;
            }
        }
        assert!(
            changed,
            "{mode}/{positions}: no condition changed the answer's log-prob"
        );
        let findings = std::fs::read_to_string(out_dir.join("FINDINGS.md")).unwrap();
        assert!(findings.contains(&format!("mode `{mode}`, positions `{positions}`")));
        let _ = std::fs::remove_dir_all(out_dir);
    }
}

/// Ctrl-C (SIGINT) stops a study between units with a clear message; the same command resumes it.
#[test]
fn an_interrupted_study_stops_cleanly_and_resumes() {
    let model = fixture_with_context("llama", 2048);
    let data = tmp("sigint.jsonl");
    tiny_dataset(&data, |_, _| {});
    let out_dir = tmp("sigint");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(study_args("run", &data, &out_dir, &model))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let samples = out_dir.join("detect/llama-ctx2048/samples");
    let t = std::time::Instant::now();
    while std::fs::read_dir(&samples).map_or(true, |d| d.count() == 0) {
        assert!(t.elapsed().as_secs() < 120, "no unit written");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: a plain kill(2) of our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        // The run finished before the signal landed: nothing to resume.
        return;
    }
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("stopped; every finished unit is kept"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    succeeds(&study_args("run", &data, &out_dir, &model));
    assert!(out_dir.join("FINDINGS.md").is_file());
    let _ = std::fs::remove_dir_all(out_dir);
}
