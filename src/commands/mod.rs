//! The headless commands. Each loads the engine, calls library functions and writes text or JSON.

pub mod analyze;
pub mod dataset;
pub mod explore;
pub mod export;
pub mod prune;
pub mod study;

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use headscope::analysis::ablation::head_ablation_sweep;
use headscope::analysis::AnswerSource;
use headscope::engine::generate::{GenerationConfig, ScoredAnswer};
use headscope::engine::{Capture, Engine, Hooks, LoadOptions, ModelInfo, Positions, Start};
use headscope::prompt::{load_samples, PromptFormat, RagPrompt, Sample};

use crate::cli::{BenchCommand, BenchForwardArgs, BenchSweepArgs, ModelArgs, PromptArgs, RunArgs};

pub(crate) fn load_engine(args: &ModelArgs) -> Result<(Engine, f64)> {
    let name = args.model_name();
    let opts = LoadOptions {
        model: name.clone(),
        offline: args.offline,
        device: args.device,
        dtype: args.dtype,
        pruning: args
            .prune
            .as_deref()
            .map(headscope::engine::Pruning::from_file)
            .transpose()?,
    };
    let t = Instant::now();
    eprint!("loading {name} … ");
    let engine = Engine::load(&opts).with_context(|| format!("cannot load model `{name}`"))?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{} ({} layers × {} heads, {}, {}) in {secs:.1}s",
        engine.info().arch,
        engine.info().layers,
        engine.info().heads,
        engine.info().dtype,
        engine.info().device
    );
    Ok((engine, secs))
}

/// Sample `--index` of the sample file.
pub(crate) fn load_sample(args: &PromptArgs) -> Result<Sample> {
    let samples = load_samples(&args.sample)?;
    Ok(sample_at(&samples, &args.sample, args.index)?.clone())
}

/// Sample `index` of `samples` (read from `path`), or the error that names the file, how many
/// samples it has and the `--index` that is out of range.
pub(crate) fn sample_at<'a>(
    samples: &'a [Sample],
    path: &Path,
    index: usize,
) -> Result<&'a Sample> {
    match samples.get(index) {
        Some(sample) => Ok(sample),
        None => bail!(
            "{}: has {} sample(s); --index {index} is out of range",
            path.display(),
            samples.len()
        ),
    }
}

fn load_prompt(
    engine: &Engine,
    args: &PromptArgs,
    format: &PromptFormat,
) -> Result<(Sample, RagPrompt)> {
    let sample = load_sample(args)?;
    let prompt = RagPrompt::build(&sample, format, &engine.template(), &engine.tokenizer())?;
    let context = engine.info().context_length;
    if prompt.ids.len() >= context {
        return Err(headscope::Error::PromptTooLong {
            tokens: prompt.ids.len(),
            context,
        }
        .into());
    }
    Ok((sample, prompt))
}

/// The answer to analyse: the sample's `output` scored teacher-forced, or a greedy generation.
fn obtain_answer(
    engine: &Engine,
    sample: &Sample,
    prompt: &RagPrompt,
    cfg: &GenerationConfig,
    force_generate: bool,
    mut on_token: impl FnMut(&str),
) -> Result<(ScoredAnswer, &'static str)> {
    let (answer, source) =
        headscope::analysis::obtain_answer(engine, sample, prompt, cfg, force_generate, |id| {
            on_token(&engine.token_texts(&[id])[0]);
            true
        })?;
    Ok((
        answer,
        match source {
            AnswerSource::Given => "scored",
            AnswerSource::Generated => "generated",
        },
    ))
}

pub(crate) fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    if path.as_os_str() == "-" {
        println!("{text}");
        return Ok(());
    }
    // Write to a temporary name and rename, so a reader never sees half a file.
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text + "\n").with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[derive(Serialize)]
struct TokenAlternative {
    id: u32,
    token: String,
    logprob: f32,
}

#[derive(Serialize)]
struct Timings {
    load_s: f64,
    answer_s: f64,
    total_s: f64,
}

#[derive(Serialize)]
struct SpanJson {
    chars: [usize; 2],
    tokens: [usize; 2],
}

/// `headscope run --json`: a public contract, documented in the README.
#[derive(Serialize)]
struct RunJson {
    model: String,
    arch: String,
    dtype: String,
    device: String,
    model_info: ModelInfo,
    sample_id: Option<String>,
    prompt_style: String,
    /// `--instruction`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    instruction: Option<String>,
    /// The source of `--prompt-template`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_template: Option<String>,
    mode: &'static str,
    prompt_text: String,
    prompt_ids: Vec<u32>,
    answer_ids: Vec<u32>,
    answer_text: String,
    answer_tokens: Vec<String>,
    answer_logprobs: Vec<f32>,
    answer_logprob_total: f64,
    top_alternatives: Vec<Vec<TokenAlternative>>,
    stop_id: Option<u32>,
    doc_spans: Vec<SpanJson>,
    question_span: SpanJson,
    timings: Timings,
}

fn span_json(s: &headscope::prompt::Span) -> SpanJson {
    SpanJson {
        chars: [s.chars.start, s.chars.end],
        tokens: [s.tokens.start, s.tokens.end],
    }
}

pub fn run(args: RunArgs) -> Result<()> {
    let start = Instant::now();
    let format = args.prompt.format.format()?;
    let (engine, load_s) = load_engine(&args.model)?;
    let (sample, prompt) = load_prompt(&engine, &args.prompt, &format)?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        top_k_alternatives: 5,
    };
    let quiet = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    eprintln!(
        "prompt: {} tokens, {} documents",
        prompt.ids.len(),
        prompt.docs.len()
    );
    let t = Instant::now();
    let (answer, mode) = obtain_answer(&engine, &sample, &prompt, &cfg, args.generate, |tok| {
        if !quiet {
            eprint!("{tok}");
            let _ = std::io::stderr().flush();
        }
    })?;
    let answer_s = t.elapsed().as_secs_f64();
    if !quiet && mode == "generated" {
        eprintln!();
    }
    let answer_text = engine.decode(&answer.answer_ids)?;
    let tokens = engine.token_texts(&answer.answer_ids);

    if !quiet {
        println!("question: {}", sample.question);
        println!(
            "answer ({mode}, {} tokens, {answer_s:.2}s): {answer_text}",
            answer.answer_ids.len()
        );
        println!("{:>4}  {:<18} {:>7}  top alternatives", "pos", "token", "p");
        for (i, (tok, lp)) in tokens.iter().zip(&answer.logprobs).enumerate() {
            let alts: Vec<String> = answer.top_alternatives[i]
                .iter()
                .take(3)
                .map(|a| {
                    format!(
                        "{:?} {:.3}",
                        engine.token_texts(&[a.id])[0],
                        a.logprob.exp()
                    )
                })
                .collect();
            println!(
                "{i:>4}  {:<18} {:>7.4}  {}",
                format!("{tok:?}"),
                lp.exp(),
                alts.join(", ")
            );
        }
        println!("total log-prob {:.4}", answer.total_logprob());
    }

    if let Some(path) = &args.json {
        let top_alternatives = answer
            .top_alternatives
            .iter()
            .map(|alts| {
                alts.iter()
                    .map(|a| TokenAlternative {
                        id: a.id,
                        token: engine.token_texts(&[a.id])[0].clone(),
                        logprob: a.logprob,
                    })
                    .collect()
            })
            .collect();
        let out = RunJson {
            model: engine.info().model.clone(),
            arch: engine.info().arch.clone(),
            dtype: engine.info().dtype.clone(),
            device: engine.info().device.clone(),
            model_info: engine.info().clone(),
            sample_id: sample.id(),
            prompt_style: format.style.to_string(),
            instruction: format.instruction().map(str::to_string),
            prompt_template: format.template.as_ref().map(|t| t.source.clone()),
            mode,
            prompt_text: prompt.text.clone(),
            prompt_ids: prompt.ids.clone(),
            answer_ids: answer.answer_ids.clone(),
            answer_text,
            answer_tokens: tokens,
            answer_logprobs: answer.logprobs.clone(),
            answer_logprob_total: answer.total_logprob(),
            top_alternatives,
            stop_id: answer.stop_id,
            doc_spans: prompt.docs.iter().map(span_json).collect(),
            question_span: span_json(&prompt.question),
            timings: Timings {
                load_s,
                answer_s,
                total_s: start.elapsed().as_secs_f64(),
            },
        };
        write_json(path, &out)?;
    }
    Ok(())
}

pub fn bench(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Forward(args) => bench_forward(args),
        BenchCommand::Sweep(args) => bench_sweep(args),
        BenchCommand::Attribution(args) => analyze::bench_attribution(args),
        BenchCommand::Render(args) => explore::bench_render(args),
        BenchCommand::Live(args) => explore::bench_live(args),
        BenchCommand::Prune(args) => export::bench_prune(args),
        BenchCommand::Tui(args) => explore::bench_tui(args),
    }
}

#[derive(Serialize)]
struct BenchForwardJson {
    model: String,
    arch: String,
    dtype: String,
    device: String,
    tokens: usize,
    repeats: usize,
    median_s: f64,
    all_s: Vec<f64>,
    tokens_per_s: f64,
    threads: usize,
}

/// The median (NaN for none).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `n` deterministic ids spread over a vocabulary of `vocab` (a fixed LCG: no RNG dependency),
/// the input of the throughput benches.
pub(crate) fn spread_ids(vocab: usize, n: usize) -> Vec<u32> {
    let vocab = vocab as u64;
    let mut state = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) % vocab) as u32
        })
        .collect()
}

fn bench_forward(args: BenchForwardArgs) -> Result<()> {
    if args.tokens == 0 || args.repeats == 0 {
        bail!("--tokens and --repeats must be positive");
    }
    let (engine, _) = load_engine(&args.model)?;
    if args.tokens > engine.info().context_length {
        bail!(
            "--tokens {} exceeds the model's context of {}",
            args.tokens,
            engine.info().context_length
        );
    }
    let ids = spread_ids(engine.info().vocab_size, args.tokens);
    let ids_t = engine.ids_tensor(&ids)?;
    let hooks = Hooks {
        capture: Capture {
            logits: Some(Positions::All),
            ..Default::default()
        },
        ..Default::default()
    };
    let run_once = || -> Result<f64> {
        let t = Instant::now();
        let mut trace = engine.forward(Start::Tokens(&ids_t), None, &hooks)?;
        // Make sure the work is done (and synchronised on a GPU) before stopping the clock.
        let logits = trace.take_logits()?;
        let _ = logits
            .narrow(1, args.tokens - 1, 1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(t.elapsed().as_secs_f64())
    };
    run_once()?; // warm-up
    let mut all = Vec::new();
    for i in 0..args.repeats {
        let s = run_once()?;
        eprintln!("forward {}/{}: {s:.3}s", i + 1, args.repeats);
        all.push(s);
    }
    let median_s = median(&all);
    println!(
        "median forward over {} tokens: {median_s:.3}s ({:.0} tokens/s)",
        args.tokens,
        args.tokens as f64 / median_s
    );
    if let Some(path) = &args.json {
        let out = BenchForwardJson {
            model: engine.info().model.clone(),
            arch: engine.info().arch.clone(),
            dtype: engine.info().dtype.clone(),
            device: engine.info().device.clone(),
            tokens: args.tokens,
            repeats: args.repeats,
            median_s,
            all_s: all,
            tokens_per_s: args.tokens as f64 / median_s,
            threads: candle_core::utils::get_num_threads(),
        };
        write_json(path, &out)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct BenchSweepJson {
    model: String,
    arch: String,
    dtype: String,
    device: String,
    sample: String,
    prompt_ids: Vec<u32>,
    answer_ids: Vec<u32>,
    answer_text: String,
    clean_logprob: f64,
    delta_logprob: Vec<Vec<f64>>,
    seconds: f64,
    heads: usize,
    batch: usize,
    peak_rss_mb: Option<f64>,
}

/// Peak resident memory of this process (Linux), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn bench_sweep(args: BenchSweepArgs) -> Result<()> {
    let format = args.prompt.format.format()?;
    let (engine, _) = load_engine(&args.model)?;
    let (sample, prompt) = load_prompt(&engine, &args.prompt, &format)?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        ..Default::default()
    };
    let (answer, mode) = obtain_answer(&engine, &sample, &prompt, &cfg, false, |_| {})?;
    let answer_text = engine.decode(&answer.answer_ids)?;
    eprintln!(
        "answer ({mode}, {} tokens): {answer_text}",
        answer.answer_ids.len()
    );
    let heads = engine.info().layers * engine.info().heads;
    let mut bar = ProgressBar::new("sweep", heads);
    let t = Instant::now();
    let sweep = head_ablation_sweep(
        &engine,
        &prompt.ids,
        &answer.answer_ids,
        args.batch,
        &mut |done, total| {
            bar.set(done, total);
            true
        },
    )?;
    let seconds = t.elapsed().as_secs_f64();
    bar.finish();
    let mut ranked: Vec<(usize, usize, f64)> = sweep
        .delta_logprob
        .iter()
        .enumerate()
        .flat_map(|(l, row)| row.iter().enumerate().map(move |(h, &d)| (l, h, d)))
        .collect();
    ranked.sort_by(|a, b| a.2.total_cmp(&b.2));
    println!(
        "{heads} heads in {seconds:.2}s; clean answer log-prob {:.4}",
        sweep.clean_logprob
    );
    println!("heads whose ablation hurts the answer most:");
    for (l, h, d) in ranked.iter().take(10) {
        println!("  L{l}H{h}  Δ log-prob {d:+.4}");
    }
    if let Some(path) = &args.json {
        let out = BenchSweepJson {
            model: engine.info().model.clone(),
            arch: engine.info().arch.clone(),
            dtype: engine.info().dtype.clone(),
            device: engine.info().device.clone(),
            sample: args.prompt.sample.display().to_string(),
            prompt_ids: prompt.ids.clone(),
            answer_ids: answer.answer_ids.clone(),
            answer_text,
            clean_logprob: sweep.clean_logprob,
            delta_logprob: sweep.delta_logprob,
            seconds,
            heads,
            batch: args.batch,
            peak_rss_mb: peak_rss_mb(),
        };
        write_json(path, &out)?;
    }
    Ok(())
}

/// A one-line progress bar on stderr (redrawn in place when stderr is a terminal).
/// A progress bar on stderr that appears only once a job has run for a second.
pub(crate) struct ProgressBar {
    label: String,
    start: Instant,
    last_draw: Option<Instant>,
    tty: bool,
}

impl ProgressBar {
    pub(crate) fn new(label: impl Into<String>, _total: usize) -> Self {
        use std::io::IsTerminal;
        ProgressBar {
            label: label.into(),
            start: Instant::now(),
            last_draw: None,
            tty: std::io::stderr().is_terminal(),
        }
    }
    pub(crate) fn set(&mut self, done: usize, total: usize) {
        let now = Instant::now();
        if now.duration_since(self.start).as_secs_f64() < 1.0 {
            return;
        }
        let due = self.last_draw.map_or(true, |t| {
            now.duration_since(t).as_millis() >= if self.tty { 100 } else { 5000 }
        });
        if !due && done < total {
            return;
        }
        self.last_draw = Some(now);
        let frac = done as f64 / total.max(1) as f64;
        let width = 30;
        let filled = (frac * width as f64).round() as usize;
        let elapsed = self.start.elapsed().as_secs_f64();
        let eta = if done > 0 {
            elapsed / done as f64 * (total - done) as f64
        } else {
            0.0
        };
        let line = format!(
            "{} [{}{}] {done}/{total} {:.0}s elapsed, ~{eta:.0}s left",
            self.label,
            "█".repeat(filled),
            "·".repeat(width - filled),
            elapsed
        );
        if self.tty {
            eprint!("\r{line}\x1b[K");
        } else {
            eprintln!("{line}");
        }
    }
    pub(crate) fn finish(&mut self) {
        if self.tty && self.last_draw.is_some() {
            eprintln!();
        }
    }
    /// A message on its own line; the bar is drawn again below it at the next update.
    pub(crate) fn println(&mut self, message: &str) {
        if self.tty && self.last_draw.is_some() {
            eprint!("\r\x1b[K");
            self.last_draw = None;
        }
        eprintln!("{message}");
    }
}
