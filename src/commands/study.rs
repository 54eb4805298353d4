//! `headscope study`: the population study's phases.

use anyhow::{Context, Result};

use headscope::dataset::write_jsonl;
use headscope::prompt::{load_samples, Sample};
use headscope::study::split::stratified;

use crate::cli::{SplitArgs, StudyCommand};

pub fn study(cmd: StudyCommand) -> Result<()> {
    match cmd {
        StudyCommand::Split(args) => split(args),
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
