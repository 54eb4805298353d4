//! `headscope study`: the population study's phases.

use anyhow::{bail, Context, Result};

use headscope::dataset::write_jsonl;
use headscope::prompt::{load_samples, Sample};
use headscope::study::config::{ConfigRecord, StudyConfig};
use headscope::study::figures::write_figures;
use headscope::study::findings::findings_markdown;
use headscope::study::report::summarize;
use headscope::study::run::{Monitor, Study};
use headscope::study::split::stratified;
use headscope::study::units::pretty;

use super::{load_engine, ProgressBar};
use crate::cli::{ModelArgs, SplitArgs, StudyArgs, StudyCommand};

pub fn study(cmd: StudyCommand) -> Result<()> {
    match cmd {
        StudyCommand::Split(args) => split(args),
        StudyCommand::Run(args) => phase("run", args),
        StudyCommand::Detect(args) => phase("detect", args),
        StudyCommand::Ablate(args) => phase("ablate", args),
        StudyCommand::Report(args) => phase("report", args),
        StudyCommand::Status(args) => phase("status", args),
        StudyCommand::View(args) => super::explore::study_view(args),
    }
}

/// Writes `OUT/split/train.jsonl` and `OUT/split/test.jsonl` and prints the counts per category.
fn split(args: SplitArgs) -> Result<()> {
    let samples = load_samples(&args.data)?;
    let split = stratified(&samples, args.test_fraction, args.seed)
        .with_context(|| format!("cannot split {}", args.data.display()))?;
    let dir = args.out.join("split");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let pick = |ix: &[usize]| -> Vec<Sample> { ix.iter().map(|&i| samples[i].clone()).collect() };
    write_jsonl(&dir.join("train.jsonl"), &pick(&split.train))?;
    write_jsonl(&dir.join("test.jsonl"), &pick(&split.test))?;
    let mut counts: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for &i in &split.train {
        counts
            .entry(samples[i].category().unwrap_or(""))
            .or_default()
            .0 += 1;
    }
    for &i in &split.test {
        counts
            .entry(samples[i].category().unwrap_or(""))
            .or_default()
            .1 += 1;
    }
    println!(
        "split {} (seed {}, {:.0} % test) into {}:",
        args.data.display(),
        args.seed,
        100.0 * args.test_fraction,
        dir.display()
    );
    for (category, (train, test)) in counts {
        println!("  {category:<22} train {train:>4}  test {test:>4}");
    }
    Ok(())
}

/// The configuration: `--config`, else the folder's own `config.toml`, else the defaults; then
/// every flag given.
fn resolve(args: &StudyArgs) -> Result<StudyConfig> {
    let own = args.out.join("config.toml");
    let mut cfg = match &args.config {
        Some(path) => StudyConfig::from_toml_file(path)?,
        None if own.is_file() => {
            let text = std::fs::read_to_string(&own)
                .with_context(|| format!("cannot read {}", own.display()))?;
            let record: ConfigRecord = toml::from_str(&text)
                .with_context(|| format!("{} is not a study record", own.display()))?;
            record.study
        }
        None => StudyConfig::default(),
    };
    let a = args.clone();
    if let Some(d) = a.data {
        cfg.data = d;
    }
    if !a.model.is_empty() {
        cfg.models = a.model;
    }
    macro_rules! set {
        ($($field:ident),*) => { $( if let Some(v) = a.$field { cfg.$field = v; } )* };
    }
    set!(
        methods,
        ks,
        draws,
        top_n,
        ablation,
        positions,
        seed,
        test_fraction
    );
    set!(
        train_per_category,
        test_per_category,
        max_new_tokens,
        batch,
        bootstrap,
        prompt_style
    );
    if let Some(i) = a.instruction {
        cfg.instruction = (!i.trim().is_empty()).then_some(i);
    }
    if a.prompt_template.is_some() {
        cfg.prompt_template = a.prompt_template;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// A progress bar per phase; Ctrl-C (SIGINT/SIGTERM) stops between units.
struct Bar {
    bar: Option<ProgressBar>,
    resumed: usize,
}

impl Monitor for Bar {
    fn phase(&mut self, name: &str, done: usize, total: usize) {
        if let Some(b) = self.bar.as_mut() {
            b.finish();
        }
        if done > 0 {
            eprintln!("{name}: {done} of {total} units already done, resuming");
        }
        self.bar = Some(ProgressBar::new(name.to_string(), total));
        self.resumed = done;
    }
    fn advance(&mut self, done: usize, total: usize) {
        if let Some(b) = self.bar.as_mut() {
            b.set(done - self.resumed, total - self.resumed);
        }
    }
    fn cancelled(&self) -> bool {
        headscope::ui::terminal::signalled()
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.bar.as_mut() {
            b.finish();
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Phases {
    Detect,
    Ablate,
    Both,
}

/// Runs the model phases, each model loaded once; a Ctrl-C leaves every finished unit in place.
fn run_models(study: &Study, args: &StudyArgs, phases: Phases) -> Result<()> {
    headscope::ui::terminal::install_signal_handlers();
    let mut bar = Bar {
        bar: None,
        resumed: 0,
    };
    for (model, label) in study.cfg.models.iter().zip(study.model_labels()) {
        let (engine, _) = load_engine(&ModelArgs {
            model: Some(model.clone()),
            offline: args.offline,
            device: Default::default(),
            dtype: None,
        })?;
        study.record_model(&label, &engine)?;
        let result = (|| {
            if phases != Phases::Ablate {
                study.detect(&label, &engine, &mut bar)?;
            }
            if phases != Phases::Detect {
                study.ablate(&label, &engine, &mut bar)?;
            }
            Ok::<_, headscope::Error>(())
        })();
        match result {
            Err(headscope::Error::Cancelled) => {
                drop(bar);
                bail!(
                    "stopped; every finished unit is kept in {} — run the same command again \
                     to resume",
                    study.store.root().display()
                );
            }
            other => other?,
        }
    }
    Ok(())
}

/// summary.json, FINDINGS.md and the figures, all from the one summary.
fn report(study: &Study) -> Result<()> {
    let summary = summarize(study)?;
    study.store.write_text("summary.json", &pretty(&summary)?)?;
    study
        .store
        .write_text("FINDINGS.md", &findings_markdown(&summary))?;
    let figures = write_figures(&summary, study.store.root())?;
    println!(
        "wrote {}, {} and {} figures in {}",
        study.store.path("summary.json").display(),
        study.store.path("FINDINGS.md").display(),
        figures.len(),
        study.store.path("figures").display()
    );
    Ok(())
}

fn status(study: &Study) -> Result<()> {
    println!("study {}:", study.store.root().display());
    for (phase, model, missing, total) in study.missing() {
        let done = total - missing;
        println!("  {phase:<7} {model:<40} {done:>6}/{total:<6} units done");
    }
    Ok(())
}

fn phase(cmd: &str, args: StudyArgs) -> Result<()> {
    let cfg = resolve(&args)?;
    let study = Study::open(cfg, &args.out)
        .with_context(|| format!("cannot open the study in {}", args.out.display()))?;
    match cmd {
        "run" => {
            run_models(&study, &args, Phases::Both)?;
            report(&study)
        }
        "detect" => run_models(&study, &args, Phases::Detect),
        "ablate" => run_models(&study, &args, Phases::Ablate),
        "report" => report(&study),
        _ => status(&study),
    }
}
