//! `headscope dataset` through the binary: the generator writes what the library generates and is
//! reproducible; `check` answers samples with a model and counts correct answers per category;
//! bad arguments are clear errors.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::args;
use crate::common::{self, headscope, succeeds};

/// The analysis fixture sample (it has `answers` but no `category`).
fn fixture_sample() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json")
}

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("dataset-{}-{name}", std::process::id()))
}

#[test]
fn filings_are_reproducible_and_checked_per_category() {
    let (a, b) = (tmp("a.jsonl"), tmp("b.jsonl"));
    for path in [&a, &b] {
        succeeds(&args![
            "dataset", "filings", "--seed", "5", "--count", "2", "--out", path
        ]);
    }
    let text = std::fs::read_to_string(&a).unwrap();
    assert_eq!(text, std::fs::read_to_string(&b).unwrap());
    assert_eq!(text.lines().count(), 8);

    // The fixture model's tokenizer spells the ~3,500-character prompts in many tokens.
    let model = common::fixture_with_context("qwen2", 8192);
    let json = tmp("check.json");
    succeeds(&args![
        "dataset",
        "check",
        "--model",
        model,
        a,
        "--every",
        "3",
        "--max-new-tokens",
        "4",
        "--json",
        json
    ]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let answers = report["answers"].as_array().unwrap();
    assert_eq!(answers.len(), 3, "samples 0, 3 and 6");
    let counted: u64 = report["per_category"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["total"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 3);
    // Every 3rd of 4 categories per filing: three different categories.
    assert_eq!(report["per_category"].as_object().unwrap().len(), 3);
    for f in [a, b, json] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn bad_dataset_arguments_are_clear_errors() {
    let out = headscope(&args![
        "dataset",
        "filings",
        "--count",
        "0",
        "--out",
        "/tmp/never.jsonl"
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--count must be at least 1"));
    // A file whose samples have no `answers` cannot be checked.
    let no_answers = tmp("no-answers.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture_sample()).unwrap()).unwrap();
    let first = if v.is_array() { &mut v[0] } else { &mut v };
    let obj = first.as_object_mut().unwrap();
    obj.remove("answers");
    obj.remove("answer");
    std::fs::write(&no_answers, serde_json::to_string(&v).unwrap()).unwrap();
    let out = headscope(&args![
        "dataset",
        "check",
        "--model",
        "/nonexistent",
        no_answers
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no `answers`"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_file(no_answers);
}

/// `study split`: 80/20 per category, the same files on a rerun, clear errors for bad data.
#[test]
fn study_split_is_stratified_and_reproducible() {
    let data = tmp("split-data.jsonl");
    succeeds(&args![
        "dataset", "filings", "--seed", "2", "--count", "10", "--out", data
    ]);
    let split = |dir: &PathBuf| {
        succeeds(&args!["study", "split", data, "--out", dir]);
        let read = |name: &str| std::fs::read_to_string(dir.join("split").join(name)).unwrap();
        (read("train.jsonl"), read("test.jsonl"))
    };
    let (a, b) = (tmp("split-a"), tmp("split-b"));
    let (train, test) = split(&a);
    assert_eq!((train.lines().count(), test.lines().count()), (32, 8));
    for category in ["incorporation_state", "employee_count"] {
        let n = test.lines().filter(|l| l.contains(category)).count();
        assert_eq!(n, 2, "{category}: 10 samples, 20 % test");
    }
    assert_eq!(split(&b), (train, test), "same seed, same split");
    // A dataset without categories is refused before anything is written.
    let c = tmp("split-c");
    let out = headscope(&args!["study", "split", fixture_sample(), "--out", c]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has no `category`"), "{err}");
    assert!(!c.join("split").exists());
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(data);
}

/// `dataset from-csv`: rows become samples with their gold document; empty answers and answers
/// the text lacks are skipped and counted; a missing column and a malformed question are errors.
#[test]
fn samples_from_a_csv_table() {
    let csv = tmp("table.csv");
    std::fs::write(
        &csv,
        "cik,text,state,employees\n\
         10,\"Brelix makes valves.\n\nBrelix was incorporated in Ohio in 1971.\n\nWe have 3,400 employees.\",Ohio,\"3,400\"\n\
         11,\"Corvo sells software.\",,120\n",
    )
    .unwrap();
    let out_path = tmp("table.jsonl");
    let run = |questions: &[&str]| {
        let mut args = args![
            "dataset",
            "from-csv",
            csv,
            "--text-column",
            "text",
            "--id-column",
            "cik",
            "--chunk-chars",
            "30",
            "--out",
            out_path
        ];
        args.extend(questions.iter().map(OsString::from));
        headscope(&args)
    };
    let out = run(&[
        "--question",
        "incorporation_state=In which state is the company incorporated?=state",
        "--question",
        "employee_count=How many employees does it have?=employees",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("skipped 1 incorporation_state row(s): empty answer"),
        "{err}"
    );
    assert!(
        err.contains("skipped 1 employee_count row(s): answer not in the text"),
        "{err}"
    );
    let samples = headscope::prompt::load_samples(&out_path).unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].docs.len(), 3);
    assert_eq!(samples[0].gold(), Some(1));
    assert_eq!(samples[1].gold(), Some(2));
    assert_eq!(samples[1].category(), Some("employee_count"));

    let out = run(&["--question", "x=Where?=nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no column `nope`"));
    let out = run(&["--question", "no-column-given"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CATEGORY=QUESTION=COLUMN"));
    let _ = std::fs::remove_file(csv);
    let _ = std::fs::remove_file(out_path);
}
