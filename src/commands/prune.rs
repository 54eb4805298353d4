//! `headscope prune`: importance on the study's calibration samples, prunings at each sparsity,
//! evaluation on its test samples, measured speed, and the retention report.

use anyhow::{bail, Context, Result};

use std::path::Path;

use headscope::engine::export::write_hf_folder;
use headscope::engine::{Engine, LoadOptions, Pruning};
use headscope::prune::run::{Planned, PruneRun};
use headscope::prune::speed::SpeedSettings;
use headscope::prune::PruneConfig;

use super::load_engine;
use super::study::Bar;
use crate::cli::PruneArgs;

fn config(args: &PruneArgs) -> PruneConfig {
    PruneConfig {
        model: args.model.model_name(),
        study: args.study.clone(),
        methods: args.methods.clone(),
        sparsities: args.sparsity.clone(),
        mlp: args.mlp,
        draws: args.draws,
        protect_circuit: args.protect_circuit,
        protect_top: args.protect_top,
        layer_adaptive: args.layer_adaptive,
        calibration: args.calibration,
        calibration_exact: args.calibration_exact,
        eval: args.eval,
        seed: args.seed,
        batch: args.batch,
        bootstrap: args.bootstrap,
    }
}

/// The command line as run, for the run's README (the program name normalised).
fn command_line() -> String {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    args.insert(0, "headscope".into());
    args.join(" ")
}

pub fn prune(args: PruneArgs) -> Result<()> {
    if args.model.prune.is_some() {
        bail!("`headscope prune` starts from the unpruned model: drop --prune");
    }
    let cfg = config(&args);
    if let Some(name) = &args.export_pruning {
        let names = cfg.condition_names();
        if !names.contains(name) {
            bail!(
                "--export-pruning {name}: no such pruning in this run (its prunings: {})",
                names.join(", ")
            );
        }
    }
    let run = PruneRun::open(cfg, &args.out)
        .with_context(|| format!("cannot start the pruning run in {}", args.out.display()))?;
    headscope::ui::terminal::install_signal_handlers();
    let (mut engine, _) = load_engine(&args.model)?;
    run.check_model(&engine)?;
    let mut bar = Bar::new();
    let result = phases(&run, &args, &mut engine, &mut bar);
    drop(bar);
    match result {
        Err(e) if matches!(e.downcast_ref(), Some(headscope::Error::Cancelled)) => bail!(
            "stopped; every finished unit is kept in {} — run the same command again to resume",
            args.out.display()
        ),
        other => other,
    }
}

fn phases(run: &PruneRun, args: &PruneArgs, engine: &mut Engine, bar: &mut Bar) -> Result<()> {
    run.importance(engine, bar)?;
    let plan = run.plan(engine)?;
    run.evaluate(engine, &plan, bar)?;
    if !args.no_speed {
        let settings = SpeedSettings {
            decode_steps: args.speed_steps,
            repeats: args.speed_repeats,
        };
        let load = |p: &Pruning| Engine::load(&load_options(args, Some(p.clone())));
        run.speed(engine, &plan, settings, &load, bar)?;
    }
    if let (Some(dir), Some(name)) = (&args.export, &args.export_pruning) {
        export(args, &plan, name, dir)?;
    }
    let arch = engine.arch();
    let retention = run.retention(arch.num_layers, arch.num_heads)?;
    let written = run.write_report(&retention, &command_line())?;
    for path in written {
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// The model as `args` names it, with `pruning` applied at load time.
fn load_options(args: &PruneArgs, pruning: Option<Pruning>) -> LoadOptions {
    LoadOptions {
        model: args.model.model_name(),
        offline: args.model.offline,
        device: args.model.device,
        dtype: args.model.dtype,
        pruning,
    }
}

/// `--export DIR --export-pruning NAME [--physical]`: the named pruning as a Hugging Face folder.
fn export(args: &PruneArgs, plan: &[Planned], name: &str, dir: &Path) -> Result<()> {
    let planned = plan
        .iter()
        .find(|p| p.name() == name)
        .with_context(|| format!("--export-pruning {name}: not in this run's plan"))?;
    write_hf_folder(
        &load_options(args, None),
        &planned.pruning,
        args.physical,
        dir,
    )
    .with_context(|| format!("cannot export pruning {name} to {}", dir.display()))?;
    println!("exported {name} to {}", dir.display());
    Ok(())
}
