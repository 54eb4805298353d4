//! The explorer from the command line: `headscope [--model M] [SAMPLE]`, `headscope screenshot`
//! and `headscope bench render`. Argument checks happen here, before the terminal changes mode,
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

use super::write_json;
use crate::cli::{BenchRenderArgs, ExploreArgs, ScreenshotArgs, TuiArgs};

fn session(args: &ExploreArgs) -> Result<(Session, String)> {
    let (sample, label) = match &args.sample {
        Some(path) => {
            let samples = load_samples(path)?;
            let Some(sample) = samples.get(args.index).cloned() else {
                bail!(
                    "{}: has {} sample(s); --index {} is out of range",
                    path.display(),
                    samples.len(),
                    args.index
                );
            };
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
    let cache = match (&args.tui.no_cache, &args.tui.cache_dir) {
        (true, _) => ResultCache::disabled(),
        (false, Some(dir)) => ResultCache::at(dir),
        (false, None) => ResultCache::at(ResultCache::default_dir()),
    };
    let session = Session {
        load: LoadOptions {
            model,
            offline: args.model.offline,
            device: args.model.device,
            dtype: args.model.dtype,
        },
        sample,
        style: args.prompt_style,
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

pub fn bench_render(args: BenchRenderArgs) -> Result<()> {
    let (w, h) = args.size;
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
    if r.median_ms > args.budget_ms {
        bail!(
            "the median frame took {:.3} ms, over the {} ms budget",
            r.median_ms,
            args.budget_ms
        );
    }
    Ok(())
}
