//! The explorer end to end without a terminal: the headless `screenshot` driver runs the real
//! worker (model load, answer, every analysis stage, a live ablation re-run) on the tiny fixture
//! model, plays keys, and exports. The panes must show what the analyses computed.

use crate::common;

use std::path::PathBuf;
use std::time::Duration;

use headscope::analysis::cache::ResultCache;
use headscope::analysis::report::AnalysisReport;
use headscope::analysis::report::AnalyzeOptions;
use headscope::analysis::report::HeadScore;
use headscope::engine::generate::GenerationConfig;
use headscope::engine::LoadOptions;
use headscope::prompt::{load_samples, PromptStyle};
use headscope::ui::app::{AblationSet, AnswerView, Job, JobSpec, Outcome, WorkerMsg};
use headscope::ui::event::Context;
use headscope::ui::export::ExportFormat;
use headscope::ui::keys::KeyMap;
use headscope::ui::screenshot::{screenshot, ScreenshotOptions};
use headscope::ui::theme::Theme;
use headscope::ui::worker::{Session, Worker};

fn session(cache: &std::path::Path) -> Session {
    let model = common::fixture_with_context("qwen2", 512);
    let sample_path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/analysis/sample.json");
    Session {
        load: LoadOptions::new(model.to_string_lossy()),
        sample: load_samples(&sample_path).unwrap().remove(0),
        format: PromptStyle::Mirage.into(),
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

/// Runs `spec` on the worker and returns its messages up to its end, which must be a success.
fn run_job(
    w: &mut Worker,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<WorkerMsg>,
    id: u64,
    spec: JobSpec,
) -> Vec<WorkerMsg> {
    w.submit(Job {
        id,
        spec: spec.clone(),
    });
    let mut got = Vec::new();
    loop {
        let msg = rx.blocking_recv().expect("the worker is alive");
        if let WorkerMsg::Finished {
            id: done, outcome, ..
        } = &msg
        {
            if *done == id {
                assert_eq!(*outcome, Outcome::Done, "{spec:?}");
                return got;
            }
        }
        got.push(msg);
    }
}

/// The job's reports merged in order, as the explorer merges them (a stage sends one after each
/// method, each holding everything so far).
fn report_of(msgs: &[WorkerMsg]) -> AnalysisReport {
    msgs.iter()
        .filter_map(|m| match m {
            WorkerMsg::Report { report, .. } => Some((**report).clone()),
            _ => None,
        })
        .reduce(|mut a, b| {
            a.merge(b);
            a
        })
        .expect("a report")
}

fn answer_of(msgs: &[WorkerMsg]) -> AnswerView {
    msgs.iter()
        .find_map(|m| match m {
            WorkerMsg::Answer { answer, .. } => Some(answer.clone()),
            _ => None,
        })
        .expect("an answer")
}

/// After a live re-run every analysis looks at the ablated model and its own answer; the empty
/// set gives the unablated results again, and a job for a set never re-run enters it itself.
#[test]
fn analyses_after_a_live_ablation_examine_the_ablated_model() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tui-worker-ablated-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut w = Worker::spawn(session(&dir.join("cache")), tx).unwrap();
    let clean_answer = answer_of(&run_job(&mut w, &mut rx, 1, JobSpec::Open));
    let stage0 = |under: &AblationSet| JobSpec::Analyze {
        stage: 0,
        under: under.clone(),
    };
    let none = AblationSet::default();
    let clean = report_of(&run_job(&mut w, &mut rx, 2, stage0(&none)));
    assert_eq!(clean.ablation, None);
    assert_eq!(clean.answer_tokens, clean_answer.tokens);

    // Knock out every head of the last layer and its MLP: the answer changes.
    let layers = clean.model.layers;
    let set = AblationSet {
        heads: (0..clean.model.heads).map(|h| (layers - 1, h)).collect(),
        mlps: [layers - 1].into_iter().collect(),
        ..AblationSet::default()
    };
    let msgs = run_job(&mut w, &mut rx, 3, JobSpec::Live(set.clone()));
    let live = msgs
        .iter()
        .find_map(|m| match m {
            WorkerMsg::Live { result, .. } => Some((**result).clone()),
            _ => None,
        })
        .expect("a live result");
    let ablated_answer = answer_of(&msgs);
    assert!(
        live.run.first_change.is_some(),
        "the ablation changes the answer"
    );
    assert_eq!(ablated_answer.tokens, live.tokens);
    let ablated = report_of(&run_job(&mut w, &mut rx, 4, stage0(&set)));
    let label = ablated
        .ablation
        .clone()
        .expect("the report names the ablation");
    assert!(label.starts_with("zero:") && label.ends_with(&format!("|mlp:L{}", layers - 1)));
    assert_eq!(ablated.answer_tokens, live.tokens);
    // The ablated heads carry nothing into the residual stream, so their direct-effect
    // ARC-JSD scores vanish; on the clean model they did not.
    let top = layers - 1;
    let (c, a) = (
        &clean.head_scores[&HeadScore::ArcJsd][top],
        &ablated.head_scores[&HeadScore::ArcJsd][top],
    );
    assert!(c.iter().any(|&v| v > 1e-6), "{c:?}");
    assert!(a.iter().all(|&v| v.abs() < 1e-6), "{a:?}");

    // Back to the unablated model: the same results as before.
    let again = report_of(&run_job(&mut w, &mut rx, 5, stage0(&none)));
    assert_eq!(again.ablation, None);
    assert_eq!(again.answer_ids, clean.answer_ids);
    assert_eq!(
        again.head_scores[&HeadScore::ArcJsd],
        clean.head_scores[&HeadScore::ArcJsd]
    );

    // A set no live job ran for is entered by the analysis job itself.
    let other = AblationSet {
        heads: [(0, 0)].into_iter().collect(),
        ..AblationSet::default()
    };
    let r = report_of(&run_job(&mut w, &mut rx, 6, stage0(&other)));
    assert_eq!(r.ablation.as_deref(), Some("zero:L0H0|mlp:"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The explorer's pipeline from a cold start (the `bench tui` driver): every pane it opens on is
/// filled by the first stage (the ablation map by its AtP estimate), each method's result arrives
/// before its stage ends, and the exact sweep refines the AtP estimate later.
#[test]
fn the_first_stage_fills_every_pane_and_atp_comes_before_the_exact_sweep() {
    use headscope::analysis::report::Method;
    use headscope::ui::bench_tui::stage_timeline;
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("tui-worker-stages-{}", std::process::id()));
    let mut s = session(&dir.join("cache"));
    s.cache = ResultCache::disabled();
    let b = stage_timeline(s, "sample.json", Duration::from_secs(300)).unwrap();
    assert!(b.total_s.is_some(), "every stage ran: {b:#?}");
    let stages = Method::STAGES.len();
    let label = |m: Method| format!("stage {}/{stages}", m.stage());
    let jobs: Vec<&str> = b.jobs.iter().map(|j| j.job.as_str()).collect();
    let mut want = vec!["load".to_string()];
    want.extend((1..=stages).map(|i| format!("stage {i}/{stages}")));
    assert_eq!(jobs, want, "{b:#?}");
    let by = |pane: &str| {
        let p = b.panes.iter().find(|p| p.pane.starts_with(pane)).unwrap();
        (p.filled_by.clone().unwrap_or_default(), p.filled_s.unwrap())
    };
    assert_eq!(by("answer").0, "load");
    let first = label(Method::LogitLens);
    let panes = [
        "logit lens",
        "heads",
        "attribution",
        "ablation map (first",
        "ablation curve",
    ];
    for pane in panes {
        assert_eq!(by(pane).0, first, "{pane}: {b:#?}");
    }
    let (atp_by, atp_s) = by("ablation map (first");
    let (exact_by, exact_s) = by("ablation map (exact)");
    assert_eq!(atp_by, label(Method::Heads(HeadScore::Atp)));
    assert_eq!(exact_by, label(Method::Heads(HeadScore::Ablation)));
    assert!(atp_s < exact_s, "{b:#?}");
    // Within the first stage the logit lens (its first method) arrives before the stage ends.
    let stage1_done = b.jobs[1].done_s;
    assert!(by("logit lens").1 < stage1_done, "{b:#?}");
    assert_eq!(b.all_panes_s, Some(atp_s.max(by("ablation curve").1)));
    // The curve's random band comes a stage after its top-k line.
    let (band_by, band_s) = by("ablation curve (random band)");
    assert_eq!(
        band_by,
        format!("stage {}/{stages}", Method::CURVE_BAND_STAGE)
    );
    assert!(band_s > by("ablation curve").1, "{b:#?}");
    // It ranks by the head lens of the first stage, not one computed again (no cache here).
    let band_job = &b.jobs[Method::CURVE_BAND_STAGE];
    assert!(
        !band_job
            .steps
            .iter()
            .any(|(step, _)| step == "heads:arc-jsd"),
        "{band_job:#?}"
    );
    assert!(band_job
        .steps
        .iter()
        .any(|(step, _)| step == "ablation-curve"));
    let _ = std::fs::remove_dir_all(&dir);
}
