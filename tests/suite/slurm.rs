//! The sharded study on a real single-node Slurm: `scripts/slurm-study-test.sh` installs Slurm
//! when it is missing, starts its own daemons, runs the study unsharded and as 4-task job arrays,
//! kills and resubmits a task, and requires identical results (see the script's header).
//!
//! It needs root or sudo. Without them the test prints a note and passes, unless
//! `HEADSCOPE_REQUIRE_SLURM=1` (as in CI), where it fails.

use std::process::Command;

fn can_run_slurm() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    let sudo = Command::new("sudo")
        .args(["-n", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !root && !sudo {
        return Err("neither root nor password-less sudo".into());
    }
    let has = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    if !has("sbatch") && !has("apt-get") {
        return Err("no Slurm and no apt-get to install it".into());
    }
    Ok(())
}

#[test]
fn a_sharded_study_on_slurm_equals_the_unsharded_run_also_after_a_killed_task() {
    if let Err(why) = can_run_slurm() {
        if std::env::var("HEADSCOPE_REQUIRE_SLURM").as_deref() == Ok("1") {
            panic!("HEADSCOPE_REQUIRE_SLURM=1 but the Slurm test cannot run: {why}");
        }
        eprintln!("note: skipping the Slurm test ({why})");
        return;
    }
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/slurm-study-test.sh"
    ))
    .env("HEADSCOPE", env!("CARGO_BIN_EXE_headscope"))
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the Slurm test failed:\n{err}");
    assert!(
        err.contains("sharded run equals the unsharded one"),
        "{err}"
    );
    assert!(
        err.contains("also after a killed and resubmitted task"),
        "{err}"
    );
}
