//! The explorer as a user runs it: tmux starts `headscope` on the tiny fixture model in a
//! detached 160×48 session, keys go in with `send-keys`, the screen comes back with
//! `capture-pane`. Move, toggle a head, force the re-run, switch the attribution method, export,
//! quit; then the ablation pane must have listed the head, the export must exist and hold the
//! answer, the exit status must be 0, and the terminal must be back to normal (no alternate
//! screen, the same `stty` settings as before). The same holds after SIGTERM and after a panic
//! inside the terminal mode.
//!
//! Skips with a note when `tmux` is not installed (CI installs it).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    /// A detached session `hs` of `width × height` running `sh` with `env` (`NAME=value`), then
    /// types `script` into it.
    fn start(socket: &str, width: u16, height: u16, env: &[String], script: &str) -> Tmux {
        let tmux = Tmux {
            socket: socket.to_string(),
        };
        let (w, h) = (width.to_string(), height.to_string());
        let mut args = vec![
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "hs",
            "-x",
            &w,
            "-y",
            &h,
        ];
        for e in env {
            args.extend(["-e", e.as_str()]);
        }
        args.push("sh");
        let o = tmux.run(&args);
        assert!(o.status.success(), "tmux new-session: {o:?}");
        tmux.keys(&[script, "Enter"]);
        tmux
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-t", "hs"]).stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            let o = self.run(&["send-keys", "-t", "hs", k]);
            assert!(o.status.success(), "send-keys {k}: {o:?}");
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Polls the screen until `pred` holds.
    fn wait_for(&self, what: &str, secs: u64, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

fn tmux_available() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The alternate screen is left and `stty -g` after the run (written to `dir/stty.after` by the
/// script) equals the one before: raw mode is off again.
fn assert_terminal_restored(tmux: &Tmux, dir: &Path) {
    let alt = tmux.run(&["display", "-p", "-t", "hs", "#{alternate_on}"]);
    assert_eq!(
        String::from_utf8_lossy(&alt.stdout).trim(),
        "0",
        "the alternate screen is left"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !dir.join("stty.after").exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = std::fs::read_to_string(dir.join("stty.before")).unwrap();
    let after = std::fs::read_to_string(dir.join("stty.after")).unwrap();
    assert_eq!(before, after, "terminal settings restored");
}

/// The status the script's `echo EXIT=$?` printed (a line of its own, unlike the typed command,
/// whose wrapped text may also put `EXIT=$?; …` at the start of a line, depending on path lengths).
fn exit_status(screen: &str) -> Option<&str> {
    screen
        .lines()
        .filter_map(|l| l.trim().strip_prefix("EXIT="))
        .find(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()))
}

fn sh_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn explorer_in_tmux() {
    if !tmux_available() {
        eprintln!("note: tmux is not installed; the TUI end-to-end test is skipped");
        return;
    }
    let model = common::fixture_with_context("qwen2", 512);
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    let dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("tui-tmux-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let exports = dir.join("exports");
    std::fs::create_dir_all(&exports).unwrap();
    std::fs::create_dir_all(dir.join("config")).unwrap();

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_headscope"));
    let script = format!(
        "stty -g > {before}; {bin} --model {model} {sample} --max-new-tokens 16 \
         --export-dir {exports} --export-format svg,txt; echo EXIT=$?; stty -g > {after}",
        before = sh_quote(&dir.join("stty.before")),
        after = sh_quote(&dir.join("stty.after")),
        bin = sh_quote(&bin),
        model = sh_quote(&model),
        sample = sh_quote(&sample),
        exports = sh_quote(&exports),
    );
    let tmux = Tmux::start(
        &format!("headscope-test-{}", std::process::id()),
        160,
        48,
        &[
            format!("HEADSCOPE_CACHE={}", dir.join("cache").display()),
            format!("XDG_CONFIG_HOME={}", dir.join("config").display()),
        ],
        &script,
    );

    // The answer, then every stage done.
    tmux.wait_for("the answer and all analyses", 600, |s| {
        s.contains("Brennholm") && s.contains("✓ idle")
    });
    let alt = tmux.run(&["display", "-p", "-t", "hs", "#{alternate_on}"]);
    assert_eq!(
        String::from_utf8_lossy(&alt.stdout).trim(),
        "1",
        "the explorer is on the alternate screen"
    );

    // Focus the heads, move right, toggle L0H1, force the re-run.
    tmux.keys(&["3", "l", "Space", "Enter"]);
    let s = tmux.wait_for("the live re-run", 300, |s| {
        s.contains("✕ L0H1") && s.contains("Δ log p") && !s.contains("re-running")
    });
    assert!(s.contains("L0H1"), "{s}");
    // Then every pane follows the ablated model: its stages run again to the end.
    tmux.wait_for("the analyses of the ablated model", 600, |s| {
        s.contains("✕ ablated model: L0H1") && s.contains("clean ▸") && s.contains("✓ idle")
    });

    // Next attribution method, then export.
    tmux.keys(&["M"]);
    tmux.wait_for("ContextCite", 60, |s| s.contains("ContextCite"));
    tmux.keys(&["e"]);
    tmux.wait_for("the export", 60, |s| s.contains("screenshot written"));

    tmux.keys(&["q"]);
    let s = tmux.wait_for("the exit", 60, |s| exit_status(s).is_some());
    assert_eq!(exit_status(&s), Some("0"), "headscope did not exit 0:\n{s}");
    assert_terminal_restored(&tmux, &dir);

    let files: Vec<PathBuf> = std::fs::read_dir(&exports)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let txt = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "txt"))
        .unwrap_or_else(|| panic!("no .txt export in {files:?}"));
    assert!(
        files
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "svg")),
        "{files:?}"
    );
    let name = txt.file_name().unwrap().to_string_lossy().to_string();
    assert!(name.starts_with("headscope-"), "{name}");
    let text = std::fs::read_to_string(txt).unwrap();
    assert!(
        text.contains("Brennholm"),
        "the export holds the answer:\n{text}"
    );
    assert!(text.contains("✕ L0H1"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The study view (issue 13): open the committed fixture study, move to an experiment, open a
/// test sample (the explorer on that sample with the experiment's top-k heads as the live
/// ablation: the ablation pane and the header list exactly the plan's heads), come back with esc
/// to the same experiment, quit with the terminal restored.
#[test]
fn study_view_in_tmux() {
    if !tmux_available() {
        eprintln!("note: tmux is not installed; the study view end-to-end test is skipped");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let study = root.join("tests/fixtures/study/run");
    // llama × retrieval × employees at the largest k (3): the plan's heads.
    let plan: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(study.join("ablate/llama-ctx2048/plan.json")).unwrap(),
    )
    .unwrap();
    let cell = plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == "retrieval" && c["category"] == "employees")
        .unwrap();
    let top = cell["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["k"] == 3)
        .unwrap()["top"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| format!("L{}H{}", h[0], h[1]))
        .collect::<Vec<_>>();
    assert_eq!(top.len(), 3);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tui-tmux-study-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_headscope"));
    let script = format!(
        "stty -g > {before}; {bin} study view {study} --model {llama} --model {qwen}; \
         echo EXIT=$?; stty -g > {after}",
        before = sh_quote(&dir.join("stty.before")),
        after = sh_quote(&dir.join("stty.after")),
        bin = sh_quote(&bin),
        study = sh_quote(&study),
        llama = sh_quote(&common::fixture_with_context("llama", 2048)),
        qwen = sh_quote(&common::fixture_with_context("qwen2", 2048)),
    );
    let tmux = Tmux::start(
        &format!("headscope-study-{}", std::process::id()),
        160,
        48,
        &[
            format!("HEADSCOPE_CACHE={}", dir.join("cache").display()),
            format!("XDG_CONFIG_HOME={}", dir.join("config").display()),
        ],
        &script,
    );
    tmux.wait_for("the study view", 120, |s| {
        s.contains("1 Experiments") && s.contains("✓ complete")
    });
    // Down to retrieval, right to employees; then the samples and enter.
    tmux.keys(&["j", "l"]);
    tmux.wait_for("the experiment", 30, |s| {
        s.contains("llama-ctx2048 · retrieval · employees")
    });
    tmux.keys(&["5", "Enter"]);
    let s = tmux.wait_for("the sample with the study's heads ablated", 300, |s| {
        s.contains("6 Ablation") && s.contains("✕ ablated model") && s.contains("✓ idle")
    });
    for h in &top {
        assert!(s.contains(h.as_str()), "{h} is not listed:\n{s}");
    }
    assert!(
        s.contains("sample llama-ctx2048 · retrieval · employees"),
        "{s}"
    );
    // Esc: back to the study, the same experiment under the cursor.
    tmux.keys(&["Escape"]);
    tmux.wait_for("the study again", 60, |s| {
        s.contains("1 Experiments") && s.contains("llama-ctx2048 · retrieval · employees")
    });
    tmux.keys(&["q"]);
    let s = tmux.wait_for("the exit", 60, |s| exit_status(s).is_some());
    assert_eq!(exit_status(&s), Some("0"), "headscope did not exit 0:\n{s}");
    assert_terminal_restored(&tmux, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn signals_restore_the_terminal() {
    if !tmux_available() {
        eprintln!("note: tmux is not installed; the signal test is skipped");
        return;
    }
    let model = common::fixture_with_context("qwen2", 512);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tui-tmux-sig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_headscope"));
    let sample =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    // The inner `sh` writes its pid and `exec`s headscope, so the pid file names the explorer.
    let pid_file = dir.join("pid");
    let script = format!(
        "stty -g > {before}; sh -c 'echo $$ > \"$0\"; exec \"$@\"' {pid} {bin} --model {model} \
         {sample} --no-cache; echo EXIT=$?; stty -g > {after}",
        before = sh_quote(&dir.join("stty.before")),
        after = sh_quote(&dir.join("stty.after")),
        pid = sh_quote(&pid_file),
        bin = sh_quote(&bin),
        model = sh_quote(&model),
        sample = sh_quote(&sample),
    );
    let tmux = Tmux::start(
        &format!("headscope-sig-{}", std::process::id()),
        120,
        40,
        &[format!("XDG_CONFIG_HOME={}", dir.display())],
        &script,
    );
    tmux.wait_for("the explorer", 120, |s| s.contains("headscope │"));
    let pid: libc::pid_t = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: sending a signal to the child we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let s = tmux.wait_for("the exit after SIGTERM", 30, |s| exit_status(s).is_some());
    assert_eq!(exit_status(&s), Some("0"), "{s}");
    assert_terminal_restored(&tmux, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A panic on the UI thread: the hook leaves the alternate screen and raw mode before the message
/// is printed, so the message is readable and the shell's settings are back. `terminal_panic` is
/// this crate's example that panics inside `ui::terminal::enter` (cargo builds examples for tests).
#[test]
fn a_panic_restores_the_terminal() {
    if !tmux_available() {
        eprintln!("note: tmux is not installed; the panic test is skipped");
        return;
    }
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_headscope"));
    let example = bin
        .parent()
        .unwrap()
        .join("examples")
        .join("terminal_panic");
    assert!(
        example.is_file(),
        "{} was not built: `cargo test` builds examples, or `cargo build --example terminal_panic`",
        example.display()
    );
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tui-tmux-panic-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "stty -g > {before}; {example} 2>&1; echo EXIT=$?; stty -g > {after}",
        before = sh_quote(&dir.join("stty.before")),
        after = sh_quote(&dir.join("stty.after")),
        example = sh_quote(&example),
    );
    let tmux = Tmux::start(
        &format!("headscope-panic-{}", std::process::id()),
        120,
        40,
        &[],
        &script,
    );
    let s = tmux.wait_for("the exit after the panic", 60, |s| exit_status(s).is_some());
    assert_eq!(exit_status(&s), Some("101"), "a panic exits 101:\n{s}");
    assert!(
        s.contains("deliberate panic inside the explorer's terminal"),
        "the message is on the main screen:\n{s}"
    );
    assert_terminal_restored(&tmux, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
