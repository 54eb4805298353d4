//! The study view (issue 13) on a small committed study, `tests/fixtures/study/run`: made by the
//! real `headscope study run` on the tiny llama and qwen2 fixtures (context raised to 2048) and a
//! 4-category dataset (`tests/fixtures/study/data.jsonl`). Remake both with
//! `cargo test --test suite remake_study_fixture -- --ignored`.
//!
//! Snapshots of each pane and of the whole screen, `update` on navigation, the filter and the
//! drill-down (the sample opened with the experiment's top-k heads as the live ablation, and esc
//! coming back with the cursors kept), and the numbers the view derives checked against the
//! report's own.

use std::path::{Path, PathBuf};

use headscope::ui::app::{Command, Pane};
use headscope::ui::keys::KeyMap;
use headscope::ui::study::data::{stamp, Cell, StudyData};
use headscope::ui::study::panes::{render_pane, StudyScreen};
use headscope::ui::study::{update, StudyAction, StudyApp, StudyEffect, StudyPane};
use headscope::ui::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::args;
use crate::common::fixture_with_context;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/study")
}

/// The committed study, by its path from the repository root (where cargo runs the tests), so
/// the header's path is the same on every machine.
const STUDY: &str = "tests/fixtures/study/run";

fn study() -> StudyApp {
    StudyApp::new(StudyData::load(Path::new(STUDY)).unwrap())
}

fn press(app: &mut StudyApp, c: Command) -> Vec<StudyEffect> {
    update(app, StudyAction::Command(c))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn draw(w: u16, h: u16, f: impl FnOnce(&mut ratatui::Frame)) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(f).unwrap();
    t
}

fn pane(p: StudyPane, app: &StudyApp, w: u16, h: u16) -> Terminal<TestBackend> {
    let theme = Theme::builtin_default();
    draw(w, h, |f| {
        let area = f.area();
        render_pane(p, app, &theme, area, f.buffer_mut())
    })
}

fn screen(app: &StudyApp, theme: &Theme, w: u16, h: u16) -> Terminal<TestBackend> {
    let keys = KeyMap::default();
    draw(w, h, |f| {
        f.render_widget(
            StudyScreen {
                app,
                theme,
                keys: &keys,
            },
            f.area(),
        )
    })
}

/// A copy of the committed study in a scratch folder (to take units away).
fn scratch_copy(name: &str) -> PathBuf {
    let dst = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("study-view-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dst);
    let mut stack = vec![PathBuf::from(STUDY)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(STUDY).unwrap();
            if p.is_dir() {
                std::fs::create_dir_all(dst.join(rel)).unwrap();
                stack.push(p);
            } else {
                std::fs::create_dir_all(dst.join(rel).parent().unwrap()).unwrap();
                std::fs::copy(&p, dst.join(rel)).unwrap();
            }
        }
    }
    dst
}

#[test]
fn whole_study_screen() {
    let app = study();
    let t = screen(&app, &Theme::builtin_default(), 140, 44);
    insta::assert_snapshot!(t.backend());
}

#[test]
fn study_screen_light_with_help() {
    let mut app = study();
    press(&mut app, Command::Help);
    let t = screen(&app, &Theme::builtin("light").unwrap(), 140, 44);
    let text = format!("{}", t.backend());
    // Every command of the study's `?`, with its key.
    for (c, help) in headscope::ui::study::HELP {
        assert!(text.contains(help), "{help} is not listed");
        let keys = KeyMap::default().keys_of(*c);
        assert!(text.contains(&keys), "{keys} is not listed");
    }
    insta::assert_snapshot!(t.backend());
}

#[test]
fn study_pane_matrix() {
    let mut app = study();
    press(&mut app, Command::Down);
    press(&mut app, Command::Right);
    insta::assert_snapshot!(pane(StudyPane::Matrix, &app, 90, 14).backend());
}

#[test]
fn study_pane_matrix_styles() {
    let app = study();
    let t = pane(StudyPane::Matrix, &app, 90, 14);
    insta::assert_debug_snapshot!(t.backend().buffer());
}

#[test]
fn study_pane_curve() {
    let mut app = study();
    press(&mut app, Command::FocusSample);
    press(&mut app, Command::Left);
    insta::assert_snapshot!(pane(StudyPane::Curve, &app, 80, 16).backend());
}

#[test]
fn study_pane_heads_shared_with_the_next_category() {
    let mut app = study();
    press(&mut app, Command::FocusHeatmap);
    press(&mut app, Command::CycleShared);
    press(&mut app, Command::Down);
    press(&mut app, Command::Right);
    insta::assert_snapshot!(pane(StudyPane::Heads, &app, 70, 12).backend());
}

#[test]
fn study_pane_overlap() {
    let app = study();
    insta::assert_snapshot!(pane(StudyPane::Overlap, &app, 80, 18).backend());
}

#[test]
fn study_pane_samples() {
    let mut app = study();
    press(&mut app, Command::FocusAttribution);
    press(&mut app, Command::Down);
    insta::assert_snapshot!(pane(StudyPane::Samples, &app, 130, 8).backend());
}

/// Six samples in each of four categories, the answer in one of two short documents. A
/// random-weight model never says "Dayton", so each sample also accepts three letters: some of its
/// answers are then right, and ablations turn some of them wrong (the view has something to show).
fn write_dataset(path: &Path) {
    let states = ["Texas", "Ohio", "Utah", "Iowa", "Maine", "Idaho"];
    let years = ["1987", "2001", "1999", "1975", "2010", "1964"];
    let cities = ["Austin", "Dayton", "Provo", "Ames", "Bangor", "Boise"];
    let counts = ["120", "4500", "980", "37", "2600", "15"];
    let mut lines = String::new();
    for i in 0..24 {
        let j = i / 4;
        let (category, question, answer) = match i % 4 {
            0 => ("state", "Where is the company incorporated?", states[j]),
            1 => ("year", "When was the company founded?", years[j]),
            2 => ("city", "Which city is the head office in?", cities[j]),
            _ => ("employees", "How many people work there?", counts[j]),
        };
        let gold = i % 2;
        let letters = [
            ["a", "e", "o"],
            ["t", "i", "n"],
            ["e", "s", "r"],
            ["o", "a", "l"],
        ][j % 4];
        let fact = format!("The answer to \"{question}\" is {answer}.");
        let filler = "The company makes parts and sells them.".to_string();
        let docs = if gold == 0 {
            [fact, filler]
        } else {
            [filler, fact]
        };
        let v = serde_json::json!({
            "id": format!("{category}-{j}"),
            "question": question,
            "docs": docs.iter().map(|t| serde_json::json!({"title": "", "text": t})).collect::<Vec<_>>(),
            "answers": [answer, letters[0], letters[1], letters[2]],
            "gold": gold,
            "category": category,
        });
        lines.push_str(&v.to_string());
        lines.push('\n');
    }
    std::fs::write(path, lines).unwrap();
}

/// Remakes `tests/fixtures/study/` with the real study command (run from the repository root so
/// the recorded data path is relative).
#[test]
#[ignore = "remakes the committed fixture study"]
fn remake_study_fixture() {
    let dir = fixture_dir();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    write_dataset(&dir.join("data.jsonl"));
    let llama = fixture_with_context("llama", 2048);
    let qwen = fixture_with_context("qwen2", 2048);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headscope"))
        .current_dir(&root)
        .args(args![
            "study",
            "run",
            "tests/fixtures/study/data.jsonl",
            "--out",
            "tests/fixtures/study/run",
            "--model",
            &llama,
            "--model",
            &qwen,
            "--methods",
            "summed-attention,retrieval,qrhead",
            "--ks",
            "0,1,3",
            "--draws",
            "2",
            "--top-n",
            "4",
            "--test-fraction",
            "0.34",
            "--max-new-tokens",
            "12",
            "--bootstrap",
            "200",
            "--batch",
            "4"
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The view needs neither the figures nor the findings (and they are most of the bytes).
    for extra in ["figures", "FINDINGS.md"] {
        let p = dir.join("run").join(extra);
        let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
    }
}

#[test]
fn arrows_move_each_panes_own_cursor_within_bounds() {
    let mut app = study();
    let d = &app.data;
    let (rows, cats, ks) = (d.rows(), d.categories.len(), d.ks.len());
    assert_eq!(
        (rows, cats, ks),
        (6, 4, 3),
        "2 models × 3 methods, 4 categories, k 0/1/3"
    );
    // The matrix: rows are model × method, columns categories.
    assert_eq!(app.cell(), Cell::default());
    press(&mut app, Command::Down);
    assert_eq!(
        app.cell(),
        Cell {
            model: 0,
            method: 1,
            category: 0
        }
    );
    for _ in 0..10 {
        press(&mut app, Command::Down);
    }
    assert_eq!(
        app.cell(),
        Cell {
            model: 1,
            method: 2,
            category: 0
        }
    );
    press(&mut app, Command::End);
    assert_eq!(
        app.cell().category,
        cats - 1,
        "end: the last category, same row"
    );
    assert_eq!(app.cell().model, 1);
    press(&mut app, Command::Left);
    assert_eq!(app.cell().category, cats - 2);
    // The curve: k starts at the largest; the arrows and -/+ step through the grid.
    assert_eq!(app.k(), 3);
    press(&mut app, Command::NextPane);
    assert_eq!(app.focus, StudyPane::Curve);
    press(&mut app, Command::Left);
    assert_eq!(app.k(), 1);
    press(&mut app, Command::FewerK);
    press(&mut app, Command::FewerK);
    assert_eq!(app.k(), 0);
    press(&mut app, Command::MoreK);
    assert_eq!(app.k(), 1);
    // The heads: within the model's 3 layers × 4 heads.
    press(&mut app, Command::FocusHeatmap);
    assert_eq!(app.focus, StudyPane::Heads);
    for _ in 0..9 {
        press(&mut app, Command::Down);
        press(&mut app, Command::Right);
    }
    assert_eq!(app.panes.heads.cursor, (2, 3));
    // The shared-heads comparison walks the axes, never onto the experiment itself.
    press(&mut app, Command::CycleShared);
    let here = app.cell();
    let other = app.other().unwrap();
    assert_eq!((other.model, other.method), (here.model, here.method));
    assert_ne!(other.category, here.category);
    press(&mut app, Command::CycleShared);
    assert_ne!(app.other().unwrap().method, here.method);
    press(&mut app, Command::CycleShared);
    assert_ne!(app.other().unwrap().model, here.model);
    press(&mut app, Command::CycleShared);
    assert_eq!(app.other(), None);
    // Focus by number and back round with tab; the help swallows other keys.
    press(&mut app, Command::FocusLens);
    assert_eq!(app.focus, StudyPane::Overlap);
    press(&mut app, Command::Help);
    press(&mut app, Command::FocusAnswer);
    assert_eq!(app.focus, StudyPane::Overlap);
    press(&mut app, Command::Cancel);
    assert!(!app.show_help);
    press(&mut app, Command::PrevPane);
    assert_eq!(app.focus, StudyPane::Heads);
    assert_eq!(press(&mut app, Command::Export), vec![StudyEffect::Export]);
    assert_eq!(press(&mut app, Command::Quit), vec![StudyEffect::Quit]);
}

/// The plan's top-k heads of `model`'s method × category, read from plan.json itself.
fn plan_top_k(model: &str, method: &str, category: &str, k: usize) -> Vec<(usize, usize)> {
    let plan = json(&Path::new(STUDY).join(format!("ablate/{model}/plan.json")));
    let cell = plan["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["method"] == method && c["category"] == category)
        .unwrap();
    let point = cell["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["k"] == k)
        .unwrap();
    serde_json::from_value(point["top"].clone()).unwrap()
}

#[test]
fn enter_opens_the_sample_with_the_experiments_top_k_heads_and_esc_comes_back() {
    let mut app = study();
    app.model_overrides = vec!["/models/a".into(), "/models/b".into()];
    // qwen2 × retrieval × employees, k = 1, the second test sample.
    for _ in 0..4 {
        press(&mut app, Command::Down);
    }
    press(&mut app, Command::Right);
    press(&mut app, Command::FewerK);
    press(&mut app, Command::FocusAttribution);
    press(&mut app, Command::Down);
    let before = (
        app.panes.matrix.cursor,
        app.k(),
        app.panes.samples.cursor,
        app.focus,
    );
    let cell = app.cell();
    assert_eq!(app.data.model(cell).unwrap().label, "qwen2-ctx2048");
    assert_eq!(app.data.category(cell), Some("employees"));
    let effects = press(&mut app, Command::Rerun);
    let [StudyEffect::Open(drill)] = &effects[..] else {
        panic!("enter opened nothing: {effects:?}");
    };
    let want = plan_top_k("qwen2-ctx2048", "retrieval", "employees", 1);
    assert_eq!(want.len(), 1);
    assert_eq!(drill.set.heads.iter().copied().collect::<Vec<_>>(), want);
    assert!(drill.set.mlps.is_empty());
    assert_eq!(drill.set.mode, headscope::engine::AblationMode::Zero);
    assert_eq!(drill.model_path, "/models/b", "the second model's override");
    let samples = app.data.samples_of(cell);
    assert_eq!(drill.sample, samples[1].sample);
    assert!(drill.label.contains("employees") && drill.label.contains("top-1"));

    // The explorer opens with the set as the live ablation: after the model is open, the first
    // job is the live re-run of exactly those heads.
    let mut explorer = drill.explorer();
    assert_eq!(explorer.editor.set, drill.set);
    assert_eq!(explorer.focus, Pane::Ablation);
    use headscope::ui::app::{update as explore, Action, Effect, JobSpec, Outcome, WorkerMsg};
    let e = explore(&mut explorer, Action::Start);
    let open = match &e[..] {
        [Effect::Submit(j)] if j.spec == JobSpec::Open => j.id,
        other => panic!("{other:?}"),
    };
    let e = explore(
        &mut explorer,
        Action::Worker(WorkerMsg::Finished {
            id: open,
            seconds: 0.1,
            outcome: Outcome::Done,
        }),
    );
    assert!(
        matches!(&e[..], [Effect::Submit(j)] if j.spec == JobSpec::Live(drill.set.clone())),
        "{e:?}"
    );
    // Esc goes back (and stops the work), q would quit.
    let e = explore(&mut explorer, Action::Command(Command::Cancel));
    assert_eq!(e, vec![Effect::Cancel, Effect::Quit]);
    assert!(explorer.back && explorer.quit);

    update(&mut app, StudyAction::Returned);
    let after = (
        app.panes.matrix.cursor,
        app.k(),
        app.panes.samples.cursor,
        app.focus,
    );
    assert_eq!(before, after, "the study's cursors are where they were");
}

#[test]
fn the_broken_filter_keeps_exactly_the_samples_the_top_k_broke_and_random_spared() {
    let mut app = study();
    let mut seen = 0;
    let cells = (0..app.data.rows()).flat_map(|r| (0..4).map(move |c| (r, c)));
    for ((row, col), k) in cells.flat_map(|rc| (1..3).map(move |k| (rc, k))) {
        {
            app.panes.matrix.cursor = (row, col);
            app.panes.curve.k = k;
            app.panes.samples.broken_only = false;
            let all = app.sample_rows();
            press(&mut app, Command::ToggleBroken);
            let broken = app.sample_rows();
            // Independently, from the unit files.
            let cell = app.cell();
            let model = &app.data.models[cell.model].label;
            let method = app.data.method(cell).unwrap().key();
            let want: Vec<usize> = all
                .iter()
                .copied()
                .filter(|&i| {
                    let key = &app.data.samples[i].key;
                    let clean =
                        json(&Path::new(STUDY).join(format!("ablate/{model}/clean/{key}.json")));
                    let unit =
                        json(&Path::new(STUDY).join(format!("ablate/{model}/{method}/{key}.json")));
                    let at = |control: &str| -> Vec<bool> {
                        unit["conditions"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .filter(|c| c["k"] == app.k() && c["control"] == control)
                            .map(|c| c["correct"].as_bool().unwrap())
                            .collect()
                    };
                    clean["correct"] == true
                        && at("top") == [false]
                        && at("random").iter().all(|&c| c)
                })
                .collect();
            assert_eq!(broken, want, "row {row}, category {col}, k index {k}");
            seen += broken.len();
        }
    }
    assert!(seen > 0, "the fixture has samples the top-k broke");
}

#[test]
fn partial_means_and_overlaps_agree_with_the_report() {
    // Without summary.json the view computes the curves from the units; on a complete study
    // they must be the report's point estimates.
    let dir = scratch_copy("partial");
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    let partial = StudyData::load(&dir).unwrap();
    let full = StudyData::load(Path::new(STUDY)).unwrap();
    assert!(partial.summary.is_none() && full.summary.is_some());
    assert!(partial.is_complete() && !partial.is_final() && full.is_final());
    for row in 0..full.rows() {
        for col in 0..full.categories.len() {
            let cell = full.cell(row, col);
            let (a, b) = (partial.curve(cell).unwrap(), full.curve(cell).unwrap());
            assert!(!a.complete && b.complete);
            assert_eq!(a.n, b.n);
            for (p, q) in a.points.iter().zip(&b.points) {
                assert_eq!(p.k, q.k);
                for (x, y) in [
                    (p.top.value, q.top.value),
                    (p.random.value, q.random.value),
                    (p.layer_matched.value, q.layer_matched.value),
                    (p.band.0, q.band.0),
                    (p.band.1, q.band.1),
                ] {
                    assert!((x - y).abs() < 1e-12, "{row} {col} k={}: {x} vs {y}", p.k);
                }
            }
            assert_eq!(a.effect().unwrap().interval, None);
            let e = b.effect().unwrap();
            let (lo, hi) = e.interval.unwrap();
            assert!(lo <= e.value && e.value <= hi);
        }
    }
    // The category overlaps are the report's.
    let summary = json(&Path::new(STUDY).join("summary.json"));
    for m in summary["overlaps"]["between_categories"]
        .as_array()
        .unwrap()
    {
        let model = full
            .models
            .iter()
            .position(|x| x.label == m["model"])
            .unwrap();
        let method = full
            .methods
            .iter()
            .position(|x| x.key() == m["within"])
            .unwrap();
        let labels: Vec<String> = serde_json::from_value(m["labels"].clone()).unwrap();
        for (i, a) in labels.iter().enumerate() {
            for (j, b) in labels.iter().enumerate() {
                let cell = |c: &String| Cell {
                    model,
                    method,
                    category: full.categories.iter().position(|x| x == c).unwrap(),
                };
                let (jac, random) = full.jaccard(cell(a), cell(b)).unwrap();
                assert!((jac - m["values"][i][j].as_f64().unwrap()).abs() < 1e-12);
                assert!((random - m["random"].as_f64().unwrap()).abs() < 1e-12);
            }
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_running_study_shows_its_progress_and_fills_in_on_reload() {
    let dir = scratch_copy("running");
    std::fs::remove_file(dir.join("summary.json")).unwrap();
    // The second model's ablation has not started: its clean and method units are missing.
    let ablate = dir.join("ablate/qwen2-ctx2048");
    let held = dir.join("held");
    std::fs::rename(&ablate, &held).unwrap();
    let mut app = StudyApp::new(StudyData::load(&dir).unwrap());
    assert!(!app.data.is_complete());
    let progress: Vec<(&str, &str, usize, usize)> = app
        .data
        .progress
        .iter()
        .map(|p| (p.phase, p.model.as_str(), p.done, p.total))
        .collect();
    assert_eq!(
        progress,
        [
            ("detect", "llama-ctx2048", 16, 16),
            ("ablate", "llama-ctx2048", 32, 32),
            ("detect", "qwen2-ctx2048", 16, 16),
            ("ablate", "qwen2-ctx2048", 0, 32),
        ]
    );
    let text = format!(
        "{}",
        screen(&app, &Theme::builtin_default(), 140, 44).backend()
    );
    assert!(
        text.contains("⟳ running") && text.contains("ablate qwen2-ctx2048 0/32"),
        "{text}"
    );
    // qwen2's experiments have no curve yet; opening a sample says why.
    for _ in 0..3 {
        press(&mut app, Command::Down);
    }
    assert!(app.data.curve(app.cell()).is_none());
    press(&mut app, Command::FocusAttribution);
    assert!(press(&mut app, Command::Rerun).is_empty());
    assert!(app.status.as_ref().unwrap().error);
    // The units land (the loop sees the folder's stamp change); the reload fills the view in,
    // the cursor stays.
    let before = stamp(&dir);
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::rename(&held, &ablate).unwrap();
    assert_ne!(stamp(&dir), before);
    let cursor = app.panes.matrix.cursor;
    update(
        &mut app,
        StudyAction::Loaded(Box::new(StudyData::load(&dir).unwrap())),
    );
    assert!(app.data.is_complete());
    assert_eq!(app.panes.matrix.cursor, cursor);
    assert!(app.data.curve(app.cell()).is_some());
    let _ = std::fs::remove_dir_all(dir);
}

/// `headscope screenshot DIR` drives the study view, and a key that opens a sample drives the
/// explorer on it (here with `--model` in place of the recorded path of the first model).
#[test]
fn the_screenshot_command_drives_the_study_view_and_its_samples() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("study-view-shot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let llama = fixture_with_context("llama", 2048);
    let shot = |keys: &str, out: &str| -> String {
        let out = dir.join(out);
        let cmd = args![
            "screenshot",
            STUDY,
            "--model",
            &llama,
            "--keys",
            keys,
            "--size",
            "140x40",
            "--no-cache",
            "--out",
            &out
        ];
        crate::common::succeeds(&cmd);
        std::fs::read_to_string(out).unwrap()
    };
    // llama × retrieval × city, k = 3, the first test sample: the plan's heads are in force.
    let s = shot("j 5 enter", "sample.txt");
    assert!(s.contains("✕ ablated model"), "{s}");
    assert!(s.contains("sample llama-ctx2048 · retrieval · city"), "{s}");
    for (l, h) in plan_top_k("llama-ctx2048", "retrieval", "city", 3) {
        assert!(s.contains(&format!("L{l}H{h}")), "L{l}H{h}:\n{s}");
    }
    // Esc comes back to the study, on the same experiment.
    let s = shot("j 5 enter esc", "back.txt");
    assert!(s.contains("1 Experiments"), "{s}");
    assert!(s.contains("llama-ctx2048 · retrieval · city"), "{s}");
    let _ = std::fs::remove_dir_all(dir);
}
