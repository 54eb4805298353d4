//! The explorer end to end without a terminal: the headless `screenshot` driver runs the real
//! worker (model load, answer, every analysis stage, a live ablation re-run) on the tiny fixture
//! model, plays keys, and exports. The panes must show what the analyses computed.

#[allow(dead_code)]
mod common;

use std::path::PathBuf;
use std::time::Duration;

use headscope::analysis::cache::ResultCache;
use headscope::analysis::report::AnalyzeOptions;
use headscope::engine::generate::GenerationConfig;
use headscope::engine::LoadOptions;
use headscope::prompt::{load_samples, PromptStyle};
use headscope::ui::event::Context;
use headscope::ui::export::ExportFormat;
use headscope::ui::keys::KeyMap;
use headscope::ui::screenshot::{screenshot, ScreenshotOptions};
use headscope::ui::theme::Theme;
use headscope::ui::worker::Session;

fn session(cache: &std::path::Path) -> Session {
    let model = common::fixture_with_context("qwen2", 512);
    let sample_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    Session {
        load: LoadOptions::new(model.to_string_lossy()),
        sample: load_samples(&sample_path).unwrap().remove(0),
        style: PromptStyle::Mirage,
        generation: GenerationConfig {
            max_new_tokens: 16,
            ..GenerationConfig::default()
        },
        force_generate: false,
        analyze: AnalyzeOptions::default(),
        cache: ResultCache::at(cache),
    }
}

#[test]
fn headless_screenshot_runs_every_stage_and_a_live_ablation() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tui-worker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("shot.txt");
    let written = screenshot(ScreenshotOptions {
        session: session(&dir.join("cache")),
        sample_label: "sample.json".into(),
        context: Context {
            theme: Theme::builtin_default(),
            keys: KeyMap::default(),
            export_dir: dir.join("exports"),
            export_formats: vec![ExportFormat::Svg, ExportFormat::Txt],
        },
        // Focus the heads, move to head 1, ablate it, force the re-run, next attribution, export.
        keys: "3 l space enter M e".into(),
        width: 160,
        height: 48,
        out: out.clone(),
        timeout: Duration::from_secs(300),
    })
    .unwrap();
    assert_eq!(written.len(), 3, "{written:?}");
    assert!(written.iter().all(|p| p.is_file()));
    let screen = std::fs::read_to_string(&out).unwrap();
    // The answer (the sample's output, scored), every stage done, the ablation listed.
    assert!(screen.contains("Brennholm"), "{screen}");
    assert!(screen.contains("✓ idle"), "{screen}");
    assert!(
        screen.contains("✕ L0H1"),
        "the ablation pane lists the head:\n{screen}"
    );
    assert!(screen.contains("Δ log p"), "{screen}");
    assert!(screen.contains("ContextCite"), "{screen}");
    assert!(
        screen.contains("L2 post"),
        "the lens shows every layer:\n{screen}"
    );
    assert!(!screen.contains("waiting for stage"), "{screen}");
    // The script's own `e` wrote the same screen, minus the status line it then changed.
    let exported = written
        .iter()
        .find(|p| p.starts_with(dir.join("exports")) && p.extension().unwrap() == "txt")
        .unwrap();
    let e = std::fs::read_to_string(exported).unwrap();
    assert!(e.contains("✕ L0H1") && e.contains("Brennholm"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_model_fails_clearly() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tui-worker-missing");
    let mut s = session(&dir);
    s.load = LoadOptions::new("/no/such/model.gguf");
    let err = screenshot(ScreenshotOptions {
        session: s,
        sample_label: "x".into(),
        context: Context {
            theme: Theme::builtin_default(),
            keys: KeyMap::default(),
            export_dir: dir.clone(),
            export_formats: vec![ExportFormat::Txt],
        },
        keys: String::new(),
        width: 120,
        height: 40,
        out: dir.join("never.txt"),
        timeout: Duration::from_secs(60),
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("/no/such/model.gguf"),
        "{err:#}"
    );
}
