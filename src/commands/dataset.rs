//! `headscope dataset`: generate the shipped filings dataset, and check how often a model answers
//! a dataset's questions correctly, per category.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{bail, Result};
use serde::Serialize;

use headscope::analysis::{answer_is_correct, Subject};
use headscope::dataset::{csv, filings, write_jsonl};
use headscope::engine::generate::GenerationConfig;
use headscope::prompt::{load_samples, PromptFormat};

use super::{load_engine, write_json, ProgressBar};
use crate::cli::{CheckArgs, DatasetCommand, FilingsArgs, FromCsvArgs};

pub fn dataset(cmd: DatasetCommand) -> Result<()> {
    match cmd {
        DatasetCommand::Filings(args) => generate_filings(args),
        DatasetCommand::Check(args) => check(args),
        DatasetCommand::FromCsv(args) => from_csv(args),
    }
}

fn from_csv(args: FromCsvArgs) -> Result<()> {
    let text = std::fs::read_to_string(&args.csv)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.csv.display()))?;
    let rows = csv::parse_csv(&text)?;
    let (samples, skipped) = csv::samples_from_table(
        &rows,
        &args.text_column,
        args.id_column.as_deref(),
        &args.questions,
        args.chunk_chars.max(1),
    )?;
    write_jsonl(&args.out, &samples)?;
    eprintln!(
        "wrote {} samples from {} rows to {}",
        samples.len(),
        rows.len().saturating_sub(1),
        args.out.display()
    );
    for (what, counts) in [
        ("empty answer", &skipped.empty),
        ("answer not in the text", &skipped.not_in_text),
    ] {
        for (category, n) in counts {
            eprintln!("  skipped {n} {category} row(s): {what}");
        }
    }
    Ok(())
}

fn generate_filings(args: FilingsArgs) -> Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let samples = filings::generate(args.seed, args.count);
    write_jsonl(&args.out, &samples)?;
    eprintln!(
        "wrote {} samples ({} filings × {} categories) to {}",
        samples.len(),
        args.count,
        filings::Category::ALL.len(),
        args.out.display()
    );
    Ok(())
}

/// One sample's answer.
#[derive(Serialize)]
struct Checked {
    id: Option<String>,
    category: String,
    prompt_tokens: usize,
    answer: String,
    correct: bool,
}

/// Correct answers of one category.
#[derive(Serialize, Default)]
struct Tally {
    correct: usize,
    total: usize,
}

#[derive(Serialize)]
struct CheckReport {
    model: String,
    samples: String,
    every: usize,
    /// `--instruction`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    instruction: Option<String>,
    /// The source of `--prompt-template`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_template: Option<String>,
    per_category: BTreeMap<String, Tally>,
    prompt_tokens_min: usize,
    prompt_tokens_max: usize,
    seconds: f64,
    answers: Vec<Checked>,
}

fn check(args: CheckArgs) -> Result<()> {
    let samples = load_samples(&args.samples)?;
    if args.every == 0 {
        bail!("--every must be at least 1");
    }
    if let Some(i) = samples.iter().position(|s| s.answers().is_empty()) {
        bail!("{}: sample {i} has no `answers`", args.samples.display());
    }
    let format = args.format.format()?;
    let (engine, _) = load_engine(&args.model)?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        ..GenerationConfig::default()
    };
    let chosen: Vec<usize> = (0..samples.len()).step_by(args.every).collect();
    let started = Instant::now();
    let mut bar = ProgressBar::new("answering", chosen.len());
    let mut answers = Vec::with_capacity(chosen.len());
    for (n, &i) in chosen.iter().enumerate() {
        let sample = samples[i].clone();
        let subject = Subject::prepare(&engine, sample, &format, &cfg, true, |_| true)?;
        let answer = engine.decode(subject.answer_ids())?;
        answers.push(Checked {
            id: subject.sample.id(),
            category: subject.sample.category().unwrap_or("(none)").to_string(),
            prompt_tokens: subject.prompt.ids.len(),
            correct: answer_is_correct(&subject.sample, &answer) == Some(true),
            answer,
        });
        bar.set(n + 1, chosen.len());
    }
    bar.finish();
    let model = engine.info().model.clone();
    let report = summarize(&args, &format, model, answers, started);
    print_check(&report);
    if let Some(path) = &args.json {
        write_json(path, &report)?;
    }
    Ok(())
}

fn summarize(
    args: &CheckArgs,
    format: &PromptFormat,
    model: String,
    answers: Vec<Checked>,
    t: Instant,
) -> CheckReport {
    let mut per_category: BTreeMap<String, Tally> = BTreeMap::new();
    for a in &answers {
        let tally = per_category.entry(a.category.clone()).or_default();
        tally.total += 1;
        tally.correct += usize::from(a.correct);
    }
    let tokens = answers.iter().map(|a| a.prompt_tokens);
    CheckReport {
        model,
        samples: args.samples.display().to_string(),
        every: args.every,
        instruction: format.instruction().map(str::to_string),
        prompt_template: format.template.as_ref().map(|t| t.source.clone()),
        per_category,
        prompt_tokens_min: tokens.clone().min().unwrap_or(0),
        prompt_tokens_max: tokens.max().unwrap_or(0),
        seconds: t.elapsed().as_secs_f64(),
        answers,
    }
}

fn print_check(r: &CheckReport) {
    println!(
        "{} on {} (prompts of {}–{} tokens, {:.0} s):",
        r.model, r.samples, r.prompt_tokens_min, r.prompt_tokens_max, r.seconds
    );
    for (category, t) in &r.per_category {
        let pct = 100.0 * t.correct as f64 / t.total.max(1) as f64;
        println!(
            "  {category:<22} {:>4}/{:<4} correct ({pct:.1} %)",
            t.correct, t.total
        );
    }
}
