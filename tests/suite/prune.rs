//! `headscope prune` through the binary on the tiny fixture model and the study's tiny dataset:
//! the phases end to end with consistent numbers (retention = pruned / unpruned accuracy, the
//! head counts a sparsity prunes, protected heads never pruned, equal shares per layer, seeded
//! random draws, magnitude importance equal to an independent computation from the weights), a
//! run killed after a few units resumes to the same bytes, and bad inputs are refused before any
//! model runs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::args;
use crate::common::{fixture_with_context, headscope, succeeds};
use crate::study::{files, study_args, tiny_dataset};

fn tmp(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("prune-{}-{name}", std::process::id()))
}

/// A finished tiny study (config.toml, split, detection) of the fixture model.
fn tiny_study(name: &str, model: &Path) -> PathBuf {
    let data = tmp(&format!("{name}.jsonl"));
    tiny_dataset(&data, |_, _| {});
    let dir = tmp(name);
    succeeds(&study_args("detect", &data, &dir, model));
    dir
}

fn prune_args(study: &Path, out: &Path, model: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut a = args![
        "prune",
        "--model",
        model,
        "--study",
        study,
        "--out",
        out,
        "--sparsity",
        "0.25,0.5",
        "--draws",
        "2",
        "--calibration",
        "2",
        "--calibration-exact",
        "1",
        "--eval",
        "1",
        "--bootstrap",
        "50",
        "--batch",
        "3"
    ];
    // An option given in `extra` replaces the default above instead of repeating it.
    let mut rest = extra.iter();
    while let Some(&opt) = rest.next() {
        match a.iter().position(|x| x == opt) {
            Some(i) if opt.starts_with("--") && opt != "--no-speed" => {
                a[i + 1] = OsString::from(rest.next().copied().unwrap_or_default());
            }
            _ => a.push(OsString::from(opt)),
        }
    }
    a
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn heads_of(pruning: &serde_json::Value) -> BTreeSet<(u64, u64)> {
    pruning["heads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_u64().unwrap(), h[1].as_u64().unwrap()))
        .collect()
}

/// sqrt(‖W_V rows of the head's KV group‖² + ‖W_O columns of the head‖²), straight from the
/// safetensors file.
fn magnitude_from_file(model: &Path) -> Vec<Vec<f64>> {
    let cfg = json(&model.join("config.json"));
    let n = |k: &str| cfg[k].as_u64().unwrap() as usize;
    let (layers, heads, kv, d) = (
        n("num_hidden_layers"),
        n("num_attention_heads"),
        n("num_key_value_heads"),
        n("head_dim"),
    );
    let t =
        candle_core::safetensors::load(model.join("model.safetensors"), &candle_core::Device::Cpu)
            .unwrap();
    let get = |name: String| -> Vec<Vec<f64>> {
        t[&name]
            .to_dtype(candle_core::DType::F64)
            .unwrap()
            .to_vec2::<f64>()
            .unwrap()
    };
    (0..layers)
        .map(|l| {
            let v = get(format!("model.layers.{l}.self_attn.v_proj.weight"));
            let o = get(format!("model.layers.{l}.self_attn.o_proj.weight"));
            (0..heads)
                .map(|h| {
                    let g = h / (heads / kv);
                    let v_sq: f64 = v[g * d..(g + 1) * d].iter().flatten().map(|x| x * x).sum();
                    let o_sq: f64 = o
                        .iter()
                        .flat_map(|row| row[h * d..(h + 1) * d].iter())
                        .map(|x| x * x)
                        .sum();
                    (v_sq + o_sq).sqrt()
                })
                .collect()
        })
        .collect()
}

#[test]
fn a_pruning_run_is_consistent_and_a_killed_run_resumes_to_the_same_files() {
    let model = fixture_with_context("llama", 2048);
    let study = tiny_study("study", &model);
    let methods = ["--methods", "atp,qrhead,magnitude,random", "--no-speed"];
    let (a, b) = (tmp("a"), tmp("b"));
    succeeds(&prune_args(&study, &a, &model, &methods));

    // Killed after 3 units, then resumed: the same files, byte for byte.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .args(prune_args(&study, &b, &model, &methods))
        .env("HEADSCOPE_STUDY_ABORT_AFTER", "3")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aborted after 3 units"));
    let resumed = succeeds(&prune_args(&study, &b, &model, &methods));
    assert!(String::from_utf8_lossy(&resumed.stderr).contains("already done, resuming"));
    let (fa, fb) = (files(&a), files(&b));
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    // The run's README quotes its command, whose --out differs; every other file is the same.
    for (name, bytes) in fa.iter().filter(|(k, _)| *k != "README.md") {
        assert!(fb[name] == *bytes, "{name} differs after the resume");
    }
    assert!(String::from_utf8_lossy(&fb["README.md"]).contains("headscope prune --model"));
    for f in [
        "config.json",
        "retention.md",
        "retention.json",
        "README.md",
        "figures/retention.svg",
        "figures/retention.png",
        "importance/atp.json",
        "importance/magnitude.json",
        "importance/qrhead.json",
    ] {
        assert!(fa.contains_key(f), "{f} missing: {:?}", fa.keys());
    }
    // 2 categories × 2 calibration samples of AtP; 2 test samples (1 per category).
    let units = |prefix: &str| fa.keys().filter(|k| k.starts_with(prefix)).count();
    assert_eq!(units("importance/atp/"), 4);
    assert_eq!(units("eval/clean/"), 2);
    assert_eq!(units("eval/random/"), 2);

    // Head counts: round(s · 12) per pruning; random draws differ; the files load with --prune.
    let (layers, heads) = (3u64, 4u64);
    for (s, k) in [("25", 3), ("50", 6)] {
        for m in [
            "atp",
            "qrhead",
            "magnitude",
            "random-{s}-d0",
            "random-{s}-d1",
        ] {
            let name = match m.starts_with("random") {
                true => m.replace("{s}", s),
                false => format!("{m}-{s}"),
            };
            let p = json(&a.join(format!("pruning/{name}.json")));
            assert_eq!(heads_of(&p).len(), k, "{name}");
            assert!(heads_of(&p).iter().all(|&(l, h)| l < layers && h < heads));
        }
        let d0 = heads_of(&json(&a.join(format!("pruning/random-{s}-d0.json"))));
        let d1 = heads_of(&json(&a.join(format!("pruning/random-{s}-d1.json"))));
        assert_ne!(d0, d1, "random draws at {s} % differ");
    }
    succeeds(&args![
        "run",
        study.join("split/test.jsonl"),
        "--model",
        &model,
        "--prune",
        a.join("pruning/atp-50.json"),
        "--max-new-tokens",
        "2"
    ]);
    // The pruned heads are the lowest-importance ones.
    let atp = json(&a.join("importance/atp.json"));
    let imp = |l: u64, h: u64| atp["heads"][l as usize][h as usize].as_f64().unwrap();
    let pruned = heads_of(&json(&a.join("pruning/atp-50.json")));
    let max_pruned = pruned
        .iter()
        .map(|&(l, h)| imp(l, h))
        .fold(f64::MIN, f64::max);
    for l in 0..layers {
        for h in (0..heads).filter(|&h| !pruned.contains(&(l, h))) {
            assert!(
                imp(l, h) >= max_pruned,
                "kept L{l}H{h} ranks below a pruned head"
            );
        }
    }

    // Magnitude importance equals the independent computation from the weights.
    let mag = json(&a.join("importance/magnitude.json"));
    for (l, row) in magnitude_from_file(&model).iter().enumerate() {
        for (h, want) in row.iter().enumerate() {
            let got = mag["heads"][l][h].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4 * want.max(1.0),
                "L{l}H{h}: {got} vs {want}"
            );
        }
    }

    // Retention = pruned / unpruned accuracy, for every row.
    let r = json(&a.join("retention.json"));
    let unpruned = r["unpruned_accuracy"]["value"].as_f64().unwrap();
    let rows = r["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4 * 2);
    for row in rows {
        let acc = row["accuracy"]["value"].as_f64().unwrap();
        match unpruned > 0.0 {
            true => {
                let ret = row["retention"]["value"].as_f64().unwrap();
                assert!((ret - acc / unpruned).abs() < 1e-12, "{row}");
            }
            false => assert!(row["retention"].is_null()),
        }
        let lo = row["answer_logprob"]["lo"].as_f64().unwrap();
        let hi = row["answer_logprob"]["hi"].as_f64().unwrap();
        let v = row["answer_logprob"]["value"].as_f64().unwrap();
        assert!(lo <= v + 1e-9 && v <= hi + 1e-9, "{row}");
        assert_eq!(
            row["draws"].as_u64(),
            Some(if row["method"] == "random" { 2 } else { 1 })
        );
    }
    let table = String::from_utf8_lossy(&fa["retention.md"]);
    assert!(
        table.contains("| atp | 50 % | 6 / 12 | accuracy |"),
        "{table}"
    );
    assert!(table.contains("not measured"), "{table}");

    // The speed phase on the same folder (its options are not part of the design): one unit per
    // pruning (draw 0 of random), and the table shows the measured ratios.
    let mut speed = prune_args(&study, &a, &model, &methods[..2]);
    speed.extend(args!["--speed-steps", "2", "--speed-repeats", "1"]);
    succeeds(&speed);
    let fa2 = files(&a);
    assert_eq!(
        fa2.keys().filter(|k| k.starts_with("speed/")).count(),
        4 * 2
    );
    let unit = json(&a.join("speed/random-50-d0.json"));
    let ratio = unit["pruned"]["decode_tokens_per_s"].as_f64().unwrap()
        / unit["unpruned"]["decode_tokens_per_s"].as_f64().unwrap();
    assert!((unit["decode_speedup"].as_f64().unwrap() - ratio).abs() < 1e-12);
    assert!(!String::from_utf8_lossy(&fa2["retention.md"]).contains("not measured"));

    // A method added to a finished run computes only its own units (here the exact sweep, on
    // the first calibration sample per category); the others stay as they were.
    let mut more = prune_args(&study, &a, &model, &["--no-speed"]);
    more.extend(args!["--methods", "atp,qrhead,magnitude,random,ablation"]);
    succeeds(&more);
    let fa3 = files(&a);
    assert_eq!(
        fa3.keys()
            .filter(|k| k.starts_with("importance/ablation/"))
            .count(),
        2
    );
    assert_eq!(
        fa3.keys()
            .filter(|k| k.starts_with("eval/ablation/"))
            .count(),
        2
    );
    for (name, bytes) in fa
        .iter()
        .filter(|(k, _)| k.starts_with("importance/atp/") || k.starts_with("eval/"))
    {
        assert!(fa3[name] == *bytes, "{name} was recomputed");
    }
    // --export writes one of the run's prunings as a Hugging Face folder: exactly the pruned
    // heads' o_proj input columns are zero.
    let exported = tmp("export");
    let mut export = more.clone();
    export.extend(args![
        "--export",
        &exported,
        "--export-pruning",
        "magnitude-50"
    ]);
    succeeds(&export);
    let pruned = heads_of(&json(&a.join("pruning/magnitude-50.json")));
    let cfg = json(&exported.join("config.json"));
    let d = cfg["head_dim"].as_u64().unwrap() as usize;
    let (layers, heads) = (
        cfg["num_hidden_layers"].as_u64().unwrap(),
        cfg["num_attention_heads"].as_u64().unwrap(),
    );
    let t = candle_core::safetensors::load(
        exported.join("model.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    for l in 0..layers {
        let o = t[&format!("model.layers.{l}.self_attn.o_proj.weight")]
            .to_vec2::<f32>()
            .unwrap();
        for h in 0..heads {
            let cols = (h as usize * d)..(h as usize + 1) * d;
            let zero = o
                .iter()
                .all(|row| row[cols.clone()].iter().all(|&x| x == 0.0));
            assert_eq!(zero, pruned.contains(&(l, h)), "L{l}H{h}");
        }
    }
    let _ = std::fs::remove_dir_all(&exported);

    assert_eq!(
        json(&a.join("retention.json"))["rows"]
            .as_array()
            .unwrap()
            .len(),
        5 * 2
    );

    // Another configuration in the same folder is refused.
    let out = headscope(&prune_args(
        &study,
        &a,
        &model,
        &["--seed", "3", "--no-speed"],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another configuration"));
    for d in [a, b, study] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn protected_heads_are_never_pruned_and_layer_adaptive_prunes_equal_shares() {
    let model = fixture_with_context("llama", 2048);
    let study = tiny_study("protect", &model);
    let out = tmp("protect-out");
    succeeds(&prune_args(
        &study,
        &out,
        &model,
        &[
            "--methods",
            "atp,random",
            "--protect-circuit",
            "--protect-top",
            "2",
            "--layer-adaptive",
            "--no-speed",
        ],
    ));
    let circuit: BTreeSet<(u64, u64)> = json(&out.join("importance/circuit.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h[0].as_u64().unwrap(), h[1].as_u64().unwrap()))
        .collect();
    assert!(!circuit.is_empty() && circuit.len() <= 2, "{circuit:?}");
    let mut seen = 0;
    for entry in std::fs::read_dir(out.join("pruning")).unwrap() {
        let path = entry.unwrap().path();
        let heads = heads_of(&json(&path));
        assert!(
            heads.is_disjoint(&circuit),
            "{} prunes a protected head",
            path.display()
        );
        let per_layer: BTreeMap<u64, usize> = heads.iter().fold(BTreeMap::new(), |mut m, h| {
            *m.entry(h.0).or_default() += 1;
            m
        });
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let share = if name.contains("-25") { 1 } else { 2 };
        assert_eq!(
            per_layer,
            (0..3).map(|l| (l, share)).collect(),
            "{}",
            path.display()
        );
        seen += 1;
    }
    assert_eq!(seen, 2 + 2 * 2);
    for d in [out, study] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn bad_prune_inputs_are_refused_before_any_model_runs() {
    let model = fixture_with_context("llama", 2048);
    let study = tiny_study("bad", &model);
    let out = tmp("bad-out");
    let refused = |extra: &[&str], study: &Path, model: &Path, want: &str| {
        let o = headscope(&prune_args(study, &out, model, extra));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} was accepted");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("loading"), "a model was loaded: {err}");
    };
    refused(&["--sparsity", "0.5,1.2"], &study, &model, "outside (0, 1)");
    refused(&["--sparsity", "0"], &study, &model, "outside (0, 1)");
    refused(
        &["--methods", "atp,size"],
        &study,
        &model,
        "unknown method `size`",
    );
    refused(
        &["--draws", "0"],
        &study,
        &model,
        "--draws must be at least 1",
    );
    refused(
        &["--export", "x", "--export-pruning", "atp-33"],
        &study,
        &model,
        "--export-pruning atp-33: no such pruning in this run",
    );
    let empty = tmp("no-split");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::copy(study.join("config.toml"), empty.join("config.toml")).unwrap();
    refused(&[], &empty, &model, "has no split");
    // A study score for a model the study did not detect.
    let other = fixture_with_context("qwen2", 2048);
    refused(
        &["--methods", "qrhead"],
        &study,
        &other,
        "has no `qrhead` detection",
    );
    assert!(!out.exists(), "nothing is written for a refused run");
    for d in [study, empty] {
        let _ = std::fs::remove_dir_all(d);
    }
}
