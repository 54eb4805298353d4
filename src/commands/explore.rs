//! The explorer from the command line: `headscope [--model M] [SAMPLE]`, `headscope screenshot`,
//! `headscope bench render` and `headscope bench live`. Argument checks happen here, before the terminal changes mode,
//! so a bad theme, key file, sample or model path is a plain error message.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use headscope::analysis::cache::ResultCache;
use headscope::analysis::report::AnalyzeOptions;
use headscope::engine::generate::GenerationConfig;
use headscope::engine::{source, LoadOptions};
use headscope::prompt::load_samples;
use headscope::ui::event::Context as UiContext;
use headscope::ui::keys::KeyMap;
use headscope::ui::screenshot::ScreenshotOptions;
use headscope::ui::theme::Theme;
use headscope::ui::worker::Session;
use headscope::ui::{default_export_dir, default_sample, ExploreOptions};

use super::{load_engine, load_sample, median, peak_rss_mb, sample_at, write_json, ProgressBar};
use candle_core::DType;
use headscope::engine::DeviceChoice;
use headscope::ui::study::data::is_study_dir;
use headscope::ui::study::run::{SessionBase, StudyOptions};
use headscope::ui::study::screenshot::StudyScreenshotOptions;

use crate::cli::{
    BenchLiveArgs, BenchRenderArgs, BenchTuiArgs, ExploreArgs, ScreenshotArgs, StudyViewArgs,
    TuiArgs,
};

fn session(args: &ExploreArgs) -> Result<(Session, String)> {
    let (sample, label) = match &args.sample {
        Some(path) => {
            let samples = load_samples(path)?;
            let sample = sample_at(&samples, path, args.index)?.clone();
            let file = path.file_name().map_or(path.display().to_string(), |f| {
                f.to_string_lossy().into_owned()
            });
            let label = match sample.id() {
                Some(id) => format!("{file} ({id})"),
                None if samples.len() > 1 => format!("{file} #{}", args.index),
                None => file,
            };
            (sample, label)
        }
        None => {
            let s = default_sample()?;
            let label = format!("built-in ({})", s.id().unwrap_or_else(|| "question".into()));
            (s, label)
        }
    };
    let model = args.model.model_name();
    check_model(&model, args.model.offline)?;
    let cache = cache_of(&args.tui);
    let session = Session {
        load: LoadOptions {
            model,
            offline: args.model.offline,
            device: args.model.device,
            dtype: args.model.dtype,
            pruning: args
                .model
                .prune
                .as_deref()
                .map(headscope::engine::Pruning::from_file)
                .transpose()?,
        },
        sample,
        format: args.format.format()?,
        generation: GenerationConfig {
            max_new_tokens: args.tui.max_new_tokens,
            ..GenerationConfig::default()
        },
        force_generate: args.tui.generate,
        analyze: AnalyzeOptions::default(),
        cache,
    };
    Ok((session, label))
}

fn cache_of(tui: &TuiArgs) -> ResultCache {
    match (&tui.no_cache, &tui.cache_dir) {
        (true, _) => ResultCache::disabled(),
        (false, Some(dir)) => ResultCache::at(dir),
        (false, None) => ResultCache::at(ResultCache::default_dir()),
    }
}

/// Fails early on a model that cannot be found, instead of inside the TUI. A hub id that is not
/// cached yet passes: the worker downloads it.
fn check_model(model: &str, offline: bool) -> Result<()> {
    match source::resolve(model, true) {
        Ok(_) => Ok(()),
        Err(headscope::Error::ModelNotFound(_))
            if !offline
                && model.matches('/').count() == 1
                && !model.starts_with(['.', '/', '~']) =>
        {
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot load model `{model}`")),
    }
}

fn ui_context(args: &TuiArgs) -> Result<UiContext> {
    let theme = Theme::load(&args.theme)?;
    let keys = match &args.keys_config {
        Some(p) => KeyMap::load_file(p)?,
        None => KeyMap::load_user()?,
    };
    Ok(UiContext {
        theme,
        keys,
        export_dir: args.export_dir.clone().unwrap_or_else(default_export_dir),
        export_formats: args.export_format.0.clone(),
    })
}

pub fn explore(args: ExploreArgs) -> Result<()> {
    use std::io::IsTerminal;
    if let Some(dir) = args.sample.as_ref().filter(|d| is_study_dir(d)) {
        return study_view(StudyViewArgs {
            dir: dir.clone(),
            models: args.model.model.clone().into_iter().collect(),
            offline: args.model.offline,
            device: args.model.device,
            dtype: args.model.dtype,
            tui: args.tui,
        });
    }
    let context = ui_context(&args.tui)?;
    let (session, sample_label) = session(&args)?;
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "the explorer needs a terminal; for a headless picture use `headscope screenshot`, \
             for results `headscope analyze`"
        );
    }
    headscope::ui::explore(ExploreOptions {
        session,
        sample_label,
        context,
    })
}

pub fn screenshot(args: ScreenshotArgs) -> Result<()> {
    if let Some(dir) = args.explore.sample.as_ref().filter(|d| is_study_dir(d)) {
        return study_screenshot(&args, dir);
    }
    let context = ui_context(&args.explore.tui)?;
    let (session, sample_label) = session(&args.explore)?;
    let (width, height) = args.size;
    let written = headscope::ui::screenshot::screenshot(ScreenshotOptions {
        session,
        sample_label,
        context,
        keys: args.keys.clone(),
        width,
        height,
        out: args.out.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
    })?;
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// What a drilled sample's explorer takes from the command line.
fn session_base(
    offline: bool,
    device: DeviceChoice,
    dtype: Option<DType>,
    tui: &TuiArgs,
) -> SessionBase {
    SessionBase {
        offline,
        device,
        dtype,
        cache: cache_of(tui),
    }
}

/// `headscope study view DIR` (and `headscope DIR` on a study's folder).
pub fn study_view(args: StudyViewArgs) -> Result<()> {
    use std::io::IsTerminal;
    let context = ui_context(&args.tui)?;
    if !is_study_dir(&args.dir) {
        bail!(
            "{} is not a study's folder (it has no config.toml); `headscope study run` makes one",
            args.dir.display()
        );
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        bail!(
            "the study view needs a terminal; for a headless picture use `headscope screenshot {}`",
            args.dir.display()
        );
    }
    headscope::ui::study::run::view(StudyOptions {
        base: session_base(args.offline, args.device, args.dtype, &args.tui),
        dir: args.dir,
        context,
        model_overrides: args.models,
    })
}

/// `headscope screenshot DIR` on a study's folder.
fn study_screenshot(args: &ScreenshotArgs, dir: &std::path::Path) -> Result<()> {
    let e = &args.explore;
    let written = headscope::ui::study::screenshot::study_screenshot(StudyScreenshotOptions {
        dir: dir.to_path_buf(),
        context: ui_context(&e.tui)?,
        base: session_base(e.model.offline, e.model.device, e.model.dtype, &e.tui),
        model_overrides: e.model.model.clone().into_iter().collect(),
        keys: args.keys.clone(),
        size: args.size,
        out: args.out.clone(),
        timeout: Duration::from_secs(args.timeout.max(1)),
    })?;
    for p in written {
        eprintln!("wrote {}", p.display());
    }
    Ok(())
}

/// `bench tui`: the explorer's stages from a cold start, nothing cached.
pub fn bench_tui(args: BenchTuiArgs) -> Result<()> {
    use headscope::ui::bench_tui::{markdown, stage_timeline};
    let (mut session, label) = session(&args.explore)?;
    session.cache = ResultCache::disabled();
    let b = stage_timeline(session, &label, Duration::from_secs(args.timeout))?;
    let md = markdown(&b);
    print!("{md}");
    if let Some(path) = &args.md {
        std::fs::write(path, &md).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.json {
        write_json(path, &b)?;
    }
    Ok(())
}

pub fn bench_render(args: BenchRenderArgs) -> Result<()> {
    let (w, h) = args.size;
    if let Some(dir) = &args.study {
        return bench_study_render(&args, dir);
    }
    let r = headscope::ui::bench::render_benchmark(
        w,
        h,
        args.layers,
        args.heads,
        args.tokens,
        args.frames,
    )?;
    println!(
        "render {}×{}, {} layers × {} heads, {} answer tokens: median {:.3} ms, p95 {:.3} ms, max {:.3} ms over {} frames (budget {} ms)",
        r.width, r.height, r.layers, r.heads, r.answer_tokens, r.median_ms, r.p95_ms, r.max_ms, r.frames, args.budget_ms
    );
    if let Some(path) = &args.json {
        write_json(path, &r)?;
    }
    within_budget(r.median_ms, args.budget_ms)
}

/// `bench render` fails when the median frame is over its budget.
fn within_budget(median_ms: f64, budget_ms: f64) -> Result<()> {
    if median_ms > budget_ms {
        bail!("the median frame took {median_ms:.3} ms, over the {budget_ms} ms budget");
    }
    Ok(())
}

/// `bench render --study DIR`: the study view's frames.
fn bench_study_render(args: &BenchRenderArgs, dir: &std::path::Path) -> Result<()> {
    let (w, h) = args.size;
    let r = headscope::ui::bench::study_render_benchmark(dir, w, h, args.frames)?;
    println!(
        "study view {}×{}, {} models × {} methods × {} categories ({}): median {:.3} ms, p95 {:.3} ms, max {:.3} ms over {} frames (budget {} ms)",
        r.width, r.height, r.models, r.methods, r.categories, r.study, r.median_ms, r.p95_ms, r.max_ms, r.frames, args.budget_ms
    );
    if let Some(path) = &args.json {
        write_json(path, &r)?;
    }
    within_budget(r.median_ms, args.budget_ms)
}

/// One toggled head's timings in `bench live`.
#[derive(serde::Serialize)]
struct LiveToggleBench {
    head: (usize, usize),
    /// `rerun` from the cached clean prefix: the original answer's score plus the regeneration.
    rerun_s: Vec<f64>,
    /// The same from scratch under the ablation: a generation and a teacher-forced score.
    from_scratch_s: Vec<f64>,
    /// Median re-run / median from scratch.
    ratio: f64,
    /// Scoring the regenerated answer under the ablation, which the other panes then analyse.
    enter_s: Vec<f64>,
    forwards: usize,
    answer_tokens: usize,
    answer_changed: bool,
    same_answer_ids: bool,
    max_abs_logprob_difference: f64,
}

#[derive(serde::Serialize)]
struct LiveBench {
    model: String,
    device: String,
    dtype: String,
    sample: String,
    prompt_tokens: usize,
    answer_tokens: usize,
    /// Building the cached clean prefix (once per sample).
    base_s: f64,
    repeats: usize,
    toggles: Vec<LiveToggleBench>,
    peak_rss_mb: Option<f64>,
}

impl LiveToggleBench {
    fn new(head: (usize, usize)) -> Self {
        LiveToggleBench {
            head,
            rerun_s: Vec::new(),
            from_scratch_s: Vec::new(),
            ratio: f64::NAN,
            enter_s: Vec::new(),
            forwards: 0,
            answer_tokens: 0,
            answer_changed: false,
            same_answer_ids: true,
            max_abs_logprob_difference: 0.0,
        }
    }
}

/// `headscope bench live`: what one `space` in the explorer costs. For a head in the bottom,
/// middle and top layer (zero ablation), rounds interleave the live re-run from the cached clean
/// prefix with the same answer and score computed from layer 0, and check both agree.
pub fn bench_live(args: BenchLiveArgs) -> Result<()> {
    use headscope::analysis::live::LiveBase;
    use headscope::analysis::Subject;
    use std::time::Instant;

    let (mut engine, _) = load_engine(&args.model)?;
    let sample = load_sample(&args.prompt)?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        ..GenerationConfig::default()
    };
    let subject = Subject::prepare(
        &engine,
        sample,
        &args.prompt.format.format()?,
        &cfg,
        args.generate,
        |_| true,
    )?;
    let t = Instant::now();
    let base = LiveBase::new(&engine, &subject)?;
    let base_s = t.elapsed().as_secs_f64();
    let layers = engine.arch().num_layers;
    let mut heads = vec![(0, 0), (layers / 2, 0), (layers - 1, 0)];
    heads.dedup();
    let mut toggles: Vec<LiveToggleBench> = heads.into_iter().map(LiveToggleBench::new).collect();
    let mut bar = ProgressBar::new("bench live", args.repeats);
    for round in 0..args.repeats {
        for tb in &mut toggles {
            time_live_toggle(&mut engine, &subject, &base, &cfg, tb)?;
        }
        bar.set(round + 1, args.repeats);
    }
    bar.finish();
    for tb in &mut toggles {
        tb.ratio = median(&tb.rerun_s) / median(&tb.from_scratch_s);
    }
    let out = LiveBench {
        model: engine.info().model.clone(),
        device: engine.info().device.clone(),
        dtype: engine.info().dtype.clone(),
        sample: args.prompt.sample.display().to_string(),
        prompt_tokens: subject.prompt.ids.len(),
        answer_tokens: subject.answer_ids().len(),
        base_s,
        repeats: args.repeats,
        toggles,
        peak_rss_mb: peak_rss_mb(),
    };
    print_live_bench(&out);
    if out.toggles.iter().any(|t| !t.same_answer_ids) {
        bail!("the live re-run and the from-scratch run disagree on the regenerated answer");
    }
    if let Some(path) = &args.json {
        write_json(path, &out)?;
    }
    Ok(())
}

/// One round for one head: the live re-run, then the same ablation from scratch (generation and
/// the original answer's score), then scoring the ablated answer for the other panes.
fn time_live_toggle(
    engine: &mut headscope::engine::Engine,
    subject: &headscope::analysis::Subject,
    base: &headscope::analysis::live::LiveBase,
    cfg: &GenerationConfig,
    tb: &mut LiveToggleBench,
) -> Result<()> {
    use headscope::analysis::live::{ablated_subject, rerun};
    use headscope::engine::{AblationMode, AblationSet};
    use std::time::Instant;

    let set = AblationSet {
        heads: [tb.head].into_iter().collect(),
        ..AblationSet::default()
    };
    debug_assert_eq!(set.mode, AblationMode::Zero);
    let t = Instant::now();
    let run = rerun(engine, subject, base, &set, cfg.max_new_tokens, &|| false)?;
    tb.rerun_s.push(t.elapsed().as_secs_f64());

    let model = base.ablate(engine, &set)?;
    let t = Instant::now();
    let generated = model.generate(&subject.prompt.ids, cfg, |_| true)?;
    let scored = model.score(&subject.prompt.ids, subject.answer_ids(), 0)?;
    tb.from_scratch_s.push(t.elapsed().as_secs_f64());
    let t = Instant::now();
    ablated_subject(&model, subject, &run, cfg.top_k_alternatives)?;
    tb.enter_s.push(t.elapsed().as_secs_f64());
    drop(model);

    tb.forwards = run.forwards;
    tb.answer_tokens = run.answer_ids.len();
    tb.answer_changed = run.first_change.is_some();
    tb.same_answer_ids &= generated.answer_ids == run.answer_ids;
    tb.max_abs_logprob_difference = tb
        .max_abs_logprob_difference
        .max((scored.total_logprob() - run.original_answer_logprob).abs());
    Ok(())
}

/// The medians of `bench live`, one line per head.
fn print_live_bench(out: &LiveBench) {
    let ms = |v: &[f64]| median(v) * 1e3;
    println!(
        "live ablation toggle, {} prompt + {} answer tokens, {} ({}, {}); clean prefix cached once in {:.0} ms; medians of {} rounds:",
        out.prompt_tokens,
        out.answer_tokens,
        out.model,
        out.device,
        out.dtype,
        out.base_s * 1e3,
        out.repeats
    );
    for tb in &out.toggles {
        println!(
            "  L{}H{}: re-run {:.0} ms ({} forward{}, {} answer tokens{}) vs from scratch {:.0} ms = {:.2}×; \
             scoring the ablated answer for the other panes {:.0} ms; same ids: {}, max |Δ log p| {:.1e}",
            tb.head.0,
            tb.head.1,
            ms(&tb.rerun_s),
            tb.forwards,
            if tb.forwards == 1 { "" } else { "s" },
            tb.answer_tokens,
            if tb.answer_changed { ", changed" } else { "" },
            ms(&tb.from_scratch_s),
            tb.ratio,
            ms(&tb.enter_s),
            tb.same_answer_ids,
            tb.max_abs_logprob_difference
        );
    }
}
