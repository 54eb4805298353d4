//! A study split into shards (`study prepare --shard-count N`, then one process per shard, as a
//! Slurm array or a Kubernetes indexed job would start them) ends with the unsharded run's
//! results; shards never write the same file; a corrupt unit is reported, never merged, and
//! recomputed by its shard. The same on a real Slurm: `scripts/slurm-study-test.sh` (slurm.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Output};

use crate::args;
use crate::common::{fixture_with_context, headscope, succeeds};
use crate::study::{files, study_args, tiny_dataset, tmp};

/// `headscope study PHASE --out DIR` plus `extra`, with the environment `env`.
fn shard_cmd(phase: &str, dir: &Path, extra: &[OsString], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_headscope"));
    cmd.args(args!["study", phase, "--out", dir]).args(extra);
    for var in [
        "SLURM_ARRAY_TASK_ID",
        "SLURM_ARRAY_TASK_COUNT",
        "JOB_COMPLETION_INDEX",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().unwrap()
}

fn ok(out: Output, what: &str) -> Output {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails_with(out: Output, message: &str) {
    assert_eq!(out.status.code(), Some(1), "should fail with {message:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(message), "{message:?} not in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The unit files (detect/…/samples, ablate/…) present in a study folder.
fn unit_files(dir: &Path) -> BTreeSet<String> {
    files(dir)
        .into_keys()
        .filter(|k| {
            (k.contains("/samples/") || k.starts_with("ablate/"))
                && !k.ends_with("plan.json")
                && !k.contains("/.")
        })
        .collect()
}

/// The report's outputs: summary, findings, figures.
fn report_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    files(dir)
        .into_iter()
        .filter(|(k, _)| k == "summary.json" || k == "FINDINGS.md" || k.starts_with("figures/"))
        .collect()
}

#[test]
fn shards_give_the_unsharded_results_and_corrupt_units_are_recomputed_never_merged() {
    let model = fixture_with_context("llama", 2048);
    let data = tmp("shards-data.jsonl");
    tiny_dataset(&data, |_, _| {});
    let (whole, sharded) = (tmp("shards-whole"), tmp("shards-three"));
    succeeds(&study_args("run", &data, &whole, &model));

    // Shards need a prepared folder, with the same count.
    let mut unprepared = study_args("detect", &data, &sharded, &model);
    unprepared.extend(args!["--shard-index", "0", "--shard-count", "3"]);
    fails_with(headscope(&unprepared), "is not prepared for shards");
    let mut prepare = study_args("prepare", &data, &sharded, &model);
    prepare.extend(args!["--shard-count", "3"]);
    let prepared = succeeds(&prepare);
    assert!(String::from_utf8_lossy(&prepared.stdout).contains("prepared for 3 shards"));
    fails_with(
        shard_cmd(
            "detect",
            &sharded,
            &args!["--shard-index", "0", "--shard-count", "2"],
            &[],
        ),
        "prepared for 3 shards, not 2",
    );
    fails_with(
        shard_cmd("detect", &sharded, &args!["--shard-index", "3"], &[]),
        "out of range",
    );

    // Detection by three shards (the index from flags, Slurm's and Kubernetes' variables), each
    // writing only its own units.
    let mut owner: BTreeMap<String, usize> = BTreeMap::new();
    let launch = |phase: &str, index: usize| -> Output {
        let i = index.to_string();
        match index {
            0 => shard_cmd(phase, &sharded, &args!["--shard-index", "0"], &[]),
            1 => shard_cmd(phase, &sharded, &[], &[("SLURM_ARRAY_TASK_ID", &i)]),
            _ => shard_cmd(phase, &sharded, &[], &[("JOB_COMPLETION_INDEX", &i)]),
        }
    };
    for index in [2, 0, 1] {
        let before = unit_files(&sharded);
        ok(launch("detect", index), "detect shard");
        for f in unit_files(&sharded).difference(&before) {
            assert!(
                owner.insert(f.clone(), index).is_none(),
                "{f} written twice"
            );
        }
        if index == 2 {
            // Ablation needs every shard's detection, and says which shards are behind.
            fails_with(launch("ablate", 2), "not done in shards");
        }
    }
    let per_shard = |phase: &str| -> Vec<usize> {
        (0..3)
            .map(|s| {
                owner
                    .iter()
                    .filter(|(f, &o)| o == s && f.starts_with(phase))
                    .count()
            })
            .collect()
    };
    let detect = per_shard("detect/");
    assert_eq!(detect.iter().sum::<usize>(), 10, "{detect:?}");
    assert!(
        detect.iter().all(|&n| (3..=4).contains(&n)),
        "balanced: {detect:?}"
    );

    // Ablation: shards 1 and 2 compute the plan in memory, shard 0 writes it.
    let plan = sharded.join("ablate/llama-ctx2048/plan.json");
    for index in [1, 2, 0] {
        let before = unit_files(&sharded);
        ok(launch("ablate", index), "ablate shard");
        for f in unit_files(&sharded).difference(&before) {
            assert!(
                owner.insert(f.clone(), index).is_none(),
                "{f} written twice"
            );
        }
        assert_eq!(plan.is_file(), index == 0, "only shard 0 writes the plan");
    }
    let status = ok(shard_cmd("status", &sharded, &[], &[]), "status");
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    assert!(
        status.contains("shard 0 ") && status.contains("shard 2 "),
        "{status}"
    );
    ok(shard_cmd("report", &sharded, &[], &[]), "report");
    assert_eq!(report_files(&whole), report_files(&sharded));
    assert_eq!(unit_files(&whole), unit_files(&sharded));
    let (fw, fs) = (files(&whole), files(&sharded));
    for f in unit_files(&whole) {
        assert!(
            fw[&f] == fs[&f],
            "{f} differs between the sharded and unsharded runs"
        );
    }

    // A unit cut short is reported by status and report, never merged, then recomputed by the
    // shard that owns it (the others leave it alone).
    let (victim, &victim_shard) = owner
        .iter()
        .find(|(f, _)| f.starts_with("ablate/llama-ctx2048/qrhead/"))
        .unwrap();
    let path = sharded.join(victim);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let status = ok(shard_cmd("status", &sharded, &[], &[]), "status");
    assert!(String::from_utf8_lossy(&status.stdout).contains("corrupt units"));
    fails_with(shard_cmd("report", &sharded, &[], &[]), victim.as_str());
    for index in (0..3).filter(|&i| i != victim_shard) {
        ok(launch("ablate", index), "another shard");
        assert_eq!(std::fs::read(&path).unwrap().len(), bytes.len() / 2);
    }
    let redo = ok(launch("ablate", victim_shard), "the owner");
    assert!(String::from_utf8_lossy(&redo.stderr).contains("corrupt unit, computing it again"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    ok(shard_cmd("report", &sharded, &[], &[]), "report again");
    assert_eq!(report_files(&whole), report_files(&sharded));

    // An unsharded run's folder also detects a corrupt unit and recomputes it.
    let detect_unit = whole.join("detect/llama-ctx2048/samples").join(
        std::fs::read_dir(whole.join("detect/llama-ctx2048/samples"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    let good = std::fs::read(&detect_unit).unwrap();
    std::fs::write(&detect_unit, b"{\"sample\": ").unwrap();
    let out = headscope(&study_args("run", &data, &whole, &model));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&detect_unit).unwrap(), good);
    for d in [whole, sharded] {
        let _ = std::fs::remove_dir_all(d);
    }
}
