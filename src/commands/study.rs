//! `headscope study`: the population study's phases.

use anyhow::{bail, Context, Result};

use headscope::dataset::write_jsonl;
use headscope::prompt::{load_samples, Sample};
use headscope::study::config::{ConfigRecord, StudyConfig};
use headscope::study::figures::write_figures;
use headscope::study::findings::findings_markdown;
use headscope::study::report::summarize;
use headscope::study::run::{Monitor, Phase, Study};
use headscope::study::shard::Shard;
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
        StudyCommand::Prepare(args) => prepare(args),
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
pub(crate) struct Bar {
    bar: Option<ProgressBar>,
    resumed: usize,
}

impl Bar {
    /// No phase yet (`headscope prune` reuses it).
    pub(crate) fn new() -> Bar {
        Bar {
            bar: None,
            resumed: 0,
        }
    }
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
    fn warn(&mut self, message: &str) {
        match self.bar.as_mut() {
            Some(b) => b.println(message),
            None => eprintln!("{message}"),
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        if let Some(b) = self.bar.as_mut() {
            b.finish();
        }
    }
}

/// Loads a model as the study names it.
fn load_model(model: &str, args: &StudyArgs) -> Result<headscope::engine::Engine> {
    let (engine, _) = load_engine(&ModelArgs {
        model: Some(model.to_string()),
        offline: args.offline,
        device: args.device,
        dtype: Some(candle_core::DType::F32),
        prune: None,
    })?;
    Ok(engine)
}

/// Runs the model phases, each model loaded once (and not at all when this shard has nothing
/// left for it); a Ctrl-C leaves every finished unit in place.
fn run_models(study: &Study, args: &StudyArgs, phases: &[Phase]) -> Result<()> {
    headscope::ui::terminal::install_signal_handlers();
    let mut bar = Bar {
        bar: None,
        resumed: 0,
    };
    let recorded = study.read_record()?;
    for (model, label) in study.cfg.models.iter().zip(study.model_labels()) {
        let pending: usize = phases.iter().map(|&p| study.pending(p, &label)).sum();
        let known = recorded.provenance.models.iter().any(|m| m.label == label);
        let result = if pending == 0 && known {
            phases
                .iter()
                .try_for_each(|&p| study.write_shared(&label, p))
        } else {
            let engine = load_model(model, args)?;
            study.record_model(&label, &engine)?;
            phases.iter().try_for_each(|&p| match p {
                Phase::Detect => study.detect(&label, &engine, &mut bar),
                Phase::Ablate => study.ablate(&label, &engine, &mut bar),
            })
        };
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

/// `study prepare`: config.toml with every model's record, the split, and the shard count.
fn prepare(args: StudyArgs) -> Result<()> {
    if args.shard_index.is_some() {
        bail!("`study prepare` runs once for all shards: drop --shard-index");
    }
    let cfg = resolve(&args)?;
    let study = Study::open(cfg, &args.out)
        .with_context(|| format!("cannot prepare the study in {}", args.out.display()))?;
    for (model, label) in study.cfg.models.iter().zip(study.model_labels()) {
        let engine = load_model(model, &args)?;
        study.record_model(&label, &engine)?;
    }
    if let Some(count) = args.shard_count {
        study.write_shards(count)?;
    }
    println!("prepared {}", args.out.display());
    status(&study)
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
    let shards = Study::prepared_shards(study.store.root())?.unwrap_or(1);
    match shards {
        1 => println!("study {}:", study.store.root().display()),
        n => println!(
            "study {} (prepared for {n} shards):",
            study.store.root().display()
        ),
    }
    let progress = study.progress();
    for (phase, model, missing, total) in study.missing() {
        let done = total - missing;
        println!("  {phase:<7} {model:<40} {done:>6}/{total:<6} units done");
        if shards > 1 {
            let line: Vec<String> = progress
                .iter()
                .filter(|p| p.phase.name() == phase && p.model == model)
                .map(|p| format!("shard {} {}/{}", p.shard, p.done, p.total))
                .collect();
            println!("          {}", line.join("  "));
        }
    }
    let corrupt: Vec<&String> = progress.iter().flat_map(|p| &p.corrupt).collect();
    if !corrupt.is_empty() {
        println!("corrupt units (their shard's next run computes them again; never merged):");
        for f in corrupt {
            println!("  {f}");
        }
    }
    Ok(())
}

/// The shard this process runs, from the flags, the scheduler's environment and the folder.
fn shard_of(args: &StudyArgs) -> Result<Option<Shard>> {
    let prepared = Study::prepared_shards(&args.out)?;
    Ok(Shard::resolve(
        args.shard_index,
        args.shard_count,
        prepared,
        |name| std::env::var(name).ok(),
    )?)
}

fn phase(cmd: &str, args: StudyArgs) -> Result<()> {
    let cfg = resolve(&args)?;
    let open = |shard: Option<Shard>| -> Result<Study> {
        let study = match shard {
            Some(s) => Study::open_shard(cfg.clone(), &args.out, s),
            None if cmd == "status" => Study::inspect(cfg.clone(), &args.out),
            None => Study::open(cfg.clone(), &args.out),
        };
        study.with_context(|| format!("cannot open the study in {}", args.out.display()))
    };
    match cmd {
        "run" => {
            let study = open(shard_of(&args)?)?;
            if study.shard().is_whole() {
                run_models(&study, &args, &Phase::ALL)?;
                return report(&study);
            }
            run_models(&study, &args, &[Phase::Detect])?;
            if study.missing().iter().any(|m| m.0 == "detect" && m.2 > 0) {
                eprintln!(
                    "{}: detection done; ablation needs every shard's detection, so run \
                     `headscope study ablate` for this shard when the others are done (see \
                     `headscope study status`)",
                    study.shard()
                );
                return Ok(());
            }
            run_models(&study, &args, &[Phase::Ablate])
        }
        "detect" => run_models(&open(shard_of(&args)?)?, &args, &[Phase::Detect]),
        "ablate" => run_models(&open(shard_of(&args)?)?, &args, &[Phase::Ablate]),
        "report" => report(&open(None)?),
        _ => status(&open(None)?),
    }
}
