//! `headscope analyze`: the analysis methods on one sample (or every sample of a file), a
//! readable summary on stdout, JSON with `--json`.

use std::time::Instant;

use anyhow::Result;

use candle_core::Tensor;
use headscope::analysis::ablation::{subject_mean_z, AblationCurve, CurveConfig};
use headscope::analysis::cache::ResultCache;
use headscope::analysis::context_cite::ContextCiteConfig;
use headscope::analysis::faithfulness::{Faithfulness, LdsConfig};
use headscope::analysis::logit_lens::LogitLens;
use headscope::analysis::mirage::MirageConfig;
use headscope::analysis::report::{
    analyze as run_analysis, AnalysisReport, AnalyzeOptions, Attribution,
};
use headscope::analysis::{ranking, top_heads, Subject};
use headscope::engine::generate::GenerationConfig;
use headscope::engine::{AblationMode, AblationSet, Engine};
use headscope::prompt::{load_samples, Granularity, PromptFormat, Sample};

use super::{load_engine, median, sample_at, write_json, ProgressBar};
use crate::cli::{AnalyzeArgs, BenchAttributionArgs};

fn options(args: &AnalyzeArgs) -> AnalyzeOptions {
    AnalyzeOptions {
        methods: args.method.0.clone(),
        granularity: args.granularity,
        divergence: args.divergence,
        lens_top_k: args.lens_top_k,
        attention_from_answer: args.from_answer,
        context_cite: ContextCiteConfig {
            num_ablations: args.ablations,
            keep_prob: args.keep_prob,
            seed: args.seed,
            lasso_alpha: args.lasso_alpha,
            masks: None,
        },
        mirage: MirageConfig {
            cti: args.cti,
            cci: args.cci,
            ..MirageConfig::default()
        },
        curve: CurveConfig {
            ks: args.curve_k.0.clone(),
            draws: args.curve_draws,
            seed: args.seed,
            kind: args.curve_ablation,
            regenerate: !args.no_regenerate,
            ..CurveConfig::default()
        },
        curve_score: args.curve_score,
        faithfulness: !args.no_faithfulness,
        lds: LdsConfig {
            num_masks: args.lds_masks,
            ..LdsConfig::default()
        },
        batch: args.batch,
        answer_span: args.answer_span,
        atp_ablation: args.atp_ablation,
        ..AnalyzeOptions::default()
    }
}

/// `--ablate`, `--ablate-mlp` and `--ablation-kind` as one set (empty without them).
fn ablation_set(args: &AnalyzeArgs) -> AblationSet {
    AblationSet {
        heads: args
            .ablate
            .iter()
            .flat_map(|h| h.0.iter().copied())
            .collect(),
        mlps: args.ablate_mlp.iter().copied().collect(),
        mode: args.ablation_kind,
    }
}

/// The subject: the sample's prompt and the (possibly ablated) model's own answer.
fn prepare_subject(
    engine: &Engine,
    args: &AnalyzeArgs,
    format: &PromptFormat,
    sample: Sample,
    cfg: &GenerationConfig,
) -> Result<Subject> {
    Ok(Subject::prepare(
        engine,
        sample,
        format,
        cfg,
        args.generate,
        |_| true,
    )?)
}

/// What a mean ablation substitutes: the heads' mean outputs over the clean model's run on this
/// sample (one answer and one forward); `None` for the other modes, which need none.
fn mean_values(
    engine: &Engine,
    args: &AnalyzeArgs,
    format: &PromptFormat,
    set: &AblationSet,
    sample: &Sample,
    cfg: &GenerationConfig,
) -> Result<Option<Tensor>> {
    if set.mode != AblationMode::Mean || set.heads.is_empty() {
        return Ok(None);
    }
    let clean = prepare_subject(engine, args, format, sample.clone(), cfg)?;
    Ok(Some(subject_mean_z(engine, &clean)?))
}

pub fn analyze(args: AnalyzeArgs) -> Result<()> {
    let format = args.prompt.format.format()?;
    let (mut engine, _) = load_engine(&args.model)?;
    let samples = load_samples(&args.prompt.sample)?;
    let chosen: Vec<usize> = if args.all_samples {
        (0..samples.len()).collect()
    } else {
        sample_at(&samples, &args.prompt.sample, args.prompt.index)?;
        vec![args.prompt.index]
    };
    let cache = match (&args.no_cache, &args.cache_dir) {
        (true, _) => ResultCache::disabled(),
        (false, Some(dir)) => ResultCache::at(dir),
        (false, None) => ResultCache::at(ResultCache::default_dir()),
    };
    let opts = options(&args);
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        ..GenerationConfig::default()
    };
    let json_to_stdout = args.json.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let set = ablation_set(&args);
    let mut reports = Vec::with_capacity(chosen.len());
    for &i in &chosen {
        let sample = samples[i].clone();
        let name = sample.id().unwrap_or_else(|| format!("sample {i}"));
        eprintln!("── {name}");
        let t = Instant::now();
        let means = mean_values(&engine, &args, &format, &set, &sample, &cfg)?;
        // With `--ablate` the ablated model answers and is analysed, as in the explorer.
        let model = engine.ablate(&set, || {
            means.ok_or_else(|| headscope::Error::Analysis("no mean values".into()))
        })?;
        let subject = prepare_subject(&model, &args, &format, sample, &cfg)?;
        let answer_s = t.elapsed().as_secs_f64();
        let mut bar: Option<(String, ProgressBar)> = None;
        let report = run_analysis(
            &model,
            &subject,
            &opts,
            &cache,
            &mut |method, done, total| {
                match &mut bar {
                    Some((m, b)) if m == method => b.set(done, total),
                    _ => {
                        if let Some((_, b)) = &mut bar {
                            b.finish();
                        }
                        let mut b = ProgressBar::new(method.to_string(), total);
                        b.set(done, total);
                        bar = Some((method.to_string(), b));
                    }
                }
                true
            },
        )?;
        if let Some((_, b)) = &mut bar {
            b.finish();
        }
        if !json_to_stdout {
            print_summary(&report, answer_s);
        }
        reports.push(report);
    }
    if let Some(path) = &args.json {
        if args.all_samples {
            write_json(path, &reports)?;
        } else {
            write_json(path, &reports[0])?;
        }
    }
    if args.all_samples && !json_to_stdout {
        print_accuracy(&reports);
    }
    Ok(())
}

fn fmt_score(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e4) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn print_summary(r: &AnalysisReport, answer_s: f64) {
    print_answer(r, answer_s);
    if let Some(lens) = &r.logit_lens {
        print_logit_lens(lens);
    }
    print_head_scores(r);
    print_attributions(r);
    if let Some(m) = &r.details.mirage {
        println!("MIRAGE citations: {}", m.cited_answer);
    }
    if let Some(c) = &r.ablation_curve {
        print_ablation_curve(c);
    }
    print_costs(r);
}

/// The ablated model (if any), the answer and the target document.
fn print_answer(r: &AnalysisReport, answer_s: f64) {
    if let Some(a) = &r.ablation {
        println!("ablated model: {a}");
    }
    let correct = match r.answer_correct {
        Some(true) => " (correct)",
        Some(false) => " (not correct)",
        None => "",
    };
    println!(
        "answer ({:?}, {answer_s:.1}s): {:?}{correct}",
        r.answer_source, r.answer_text
    );
    if let Some(t) = &r.target_document {
        println!(
            "target document: D{} (chosen by {})",
            t.index + 1,
            t.chosen_by
        );
    }
}

/// The first layer output at which each answer token is the lens's top-1.
fn print_logit_lens(lens: &LogitLens) {
    let firsts: Vec<String> = (0..lens.answer_tokens.len())
        .map(|t| {
            lens.rows
                .iter()
                .find(|row| row.point == "post" && row.cells[t].answer_rank == 0)
                .map_or("-".to_string(), |row| row.layer.to_string())
        })
        .collect();
    println!(
        "logit lens: first layer where each answer token is top-1: {}",
        lens.answer_tokens
            .iter()
            .zip(&firsts)
            .map(|(tok, l)| format!("{tok:?}@{l}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Each head score's five best heads.
fn print_head_scores(r: &AnalysisReport) {
    for (name, m) in &r.head_scores {
        let top = top_heads(m, 5)
            .into_iter()
            .map(|(l, h, v)| format!("L{l}H{h} {}", fmt_score(v)))
            .collect::<Vec<_>>()
            .join(", ");
        println!("heads {:<17} top: {top}", name.key());
    }
}

/// Each attribution's sources, best first, with its faithfulness.
fn print_attributions(r: &AnalysisReport) {
    for (name, scores) in &r.attribution {
        let ranked = ranking(scores)
            .into_iter()
            .map(|i| format!("{} {}", r.sources[i].label, fmt_score(scores[i])))
            .collect::<Vec<_>>()
            .join(" > ");
        let extra = r
            .faithfulness
            .get(name)
            .map(faithfulness_note)
            .unwrap_or_default();
        println!("attr  {:<13} {ranked}{extra}", name.key());
    }
}

/// `   [top-1 gold ✓, LDS 0.52, top-1 drop 1.30]`, each part where known.
fn faithfulness_note(f: &Faithfulness) -> String {
    let top1 = match f.top1_correct {
        Some(true) => "top-1 gold ✓",
        Some(false) => "top-1 gold ✗",
        None => "",
    };
    let lds = f.lds.map(|v| format!(", LDS {v:.2}")).unwrap_or_default();
    let drop = f
        .topk_drop
        .first()
        .map(|v| format!(", top-1 drop {v:.2}"))
        .unwrap_or_default();
    format!("   [{top1}{lds}{drop}]")
}

/// The curve's header and one line per k.
fn print_ablation_curve(c: &AblationCurve) {
    println!(
        "ablation curve ({} ablation, heads by {}; clean log p = {:.2}):",
        serde_json::to_value(c.config.kind)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default(),
        c.score,
        c.clean_logprob
    );
    for p in &c.points {
        let ok = |b: Option<bool>| match b {
            Some(true) => "correct",
            Some(false) => "wrong",
            None => "",
        };
        let rate = p
            .random_correct_rate
            .map(|x| format!(", {:.0}% correct", 100.0 * x))
            .unwrap_or_default();
        let random = match (p.random_logprob_mean, p.random_logprob_sd) {
            (Some(m), Some(sd)) => format!("random {m:>8.2} ± {sd:.2}"),
            _ => "no random draws".to_string(),
        };
        println!(
            "  k={:<3} top-k {:>8.2} {:<8} {random}{rate}",
            p.k,
            p.top_logprob,
            ok(p.top_correct),
        );
    }
}

/// The total time and each method's, cached ones marked.
fn print_costs(r: &AnalysisReport) {
    let total: f64 = r.costs.values().map(|c| c.seconds).sum();
    let costs = r
        .costs
        .iter()
        .map(|(k, c)| {
            format!(
                "{k} {:.1}s{}",
                c.seconds,
                if c.cached { " (cached)" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    println!("time: {total:.1}s — {costs}");
}

/// Over several samples: per attribution, how often the top source is the gold document (on all
/// samples and on those the model answers correctly).
fn print_accuracy(reports: &[AnalysisReport]) {
    let mut names: Vec<Attribution> = reports
        .iter()
        .flat_map(|r| r.faithfulness.keys().copied())
        .collect();
    names.sort();
    names.dedup();
    println!(
        "\ntop-1 = gold, per attribution ({} samples):",
        reports.len()
    );
    for name in names {
        let mut all = (0, 0);
        let mut when_correct = (0, 0);
        for r in reports {
            if let Some(ok) = r.faithfulness.get(&name).and_then(|f| f.top1_correct) {
                all.1 += 1;
                all.0 += usize::from(ok);
                if r.answer_correct == Some(true) {
                    when_correct.1 += 1;
                    when_correct.0 += usize::from(ok);
                }
            }
        }
        println!(
            "  {:<13} {}/{} (answer correct: {}/{})",
            name.key(),
            all.0,
            all.1,
            when_correct.0,
            when_correct.1
        );
    }
}

#[derive(serde::Serialize, Default)]
struct AttributionTimes {
    /// n leave-one-out re-scores from the prefix kept by the answer pass (`PrefixScorer::for_subject`).
    prefix_reuse_s: Vec<f64>,
    /// n + 1 forwards from scratch, one by one, logits at every position (ARC-JSD's code).
    full_forwards_s: Vec<f64>,
    /// n + 1 forwards from scratch, logits only at the answer-predicting positions.
    full_forwards_answer_rows_s: Vec<f64>,
}

#[derive(serde::Serialize)]
struct AttributionBench {
    model: String,
    samples: usize,
    granularity: String,
    repeats: usize,
    /// Seconds per round, summed over samples.
    times: AttributionTimes,
    /// Median prefix reuse / median full forwards.
    ratio_vs_full_forwards: f64,
    ratio_vs_full_forwards_answer_rows: f64,
    /// Largest |Δ score| between the ways (they compute the same numbers).
    max_score_difference: f64,
    /// Token positions computed per round: with prefix reuse, and n + 1 forwards from scratch.
    tokens_prefix_reuse: usize,
    tokens_full_forwards: usize,
    prompt_tokens: Vec<usize>,
    sources: Vec<usize>,
}

/// ARC-JSD attribution of each sample three ways, interleaved round by round so machine drift
/// favours none: with prefix reuse (what `analyze` does), and as `n + 1` independent forwards.
pub fn bench_attribution(args: BenchAttributionArgs) -> Result<()> {
    let (engine, _) = load_engine(&args.model)?;
    let samples = load_samples(&args.samples)?;
    let cfg = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        ..GenerationConfig::default()
    };
    let g = args.granularity;
    let mut subjects = Vec::new();
    for s in samples {
        subjects.push(Subject::prepare(
            &engine,
            s,
            &headscope::prompt::PromptStyle::Mirage.into(),
            &cfg,
            true,
            |_| true,
        )?);
    }
    let mut times = AttributionTimes::default();
    let mut max_diff: f64 = 0.0;
    let (mut tokens_reuse, mut tokens_full) = (0, 0);
    let mut bar = ProgressBar::new("bench attribution", args.repeats);
    for round in 0..args.repeats {
        let mut t_reuse = 0.0;
        let mut t_full = 0.0;
        let mut t_rows = 0.0;
        for subject in &subjects {
            let r = time_attribution_ways(&engine, subject, g, round == 0)?;
            t_reuse += r.reuse_s;
            t_full += r.full_s;
            t_rows += r.rows_s;
            tokens_reuse += r.tokens_reuse;
            tokens_full += r.tokens_full;
            max_diff = max_diff.max(r.max_diff);
        }
        times.prefix_reuse_s.push(t_reuse);
        times.full_forwards_s.push(t_full);
        times.full_forwards_answer_rows_s.push(t_rows);
        bar.set(round + 1, args.repeats);
    }
    bar.finish();
    let out = AttributionBench {
        model: engine.info().model.clone(),
        samples: subjects.len(),
        granularity: g.name().into(),
        repeats: args.repeats,
        ratio_vs_full_forwards: median(&times.prefix_reuse_s) / median(&times.full_forwards_s),
        ratio_vs_full_forwards_answer_rows: median(&times.prefix_reuse_s)
            / median(&times.full_forwards_answer_rows_s),
        times,
        max_score_difference: max_diff,
        tokens_prefix_reuse: tokens_reuse,
        tokens_full_forwards: tokens_full,
        prompt_tokens: subjects.iter().map(|s| s.prompt.ids.len()).collect(),
        sources: subjects.iter().map(|s| s.sources(g).len()).collect(),
    };
    print_attribution_bench(&out);
    if let Some(path) = &args.json {
        write_json(path, &out)?;
    }
    Ok(())
}

/// One sample in one round of `bench attribution`.
struct AttributionRound {
    reuse_s: f64,
    full_s: f64,
    rows_s: f64,
    /// Largest |Δ score| between prefix reuse and either from-scratch way.
    max_diff: f64,
    /// Token positions computed each way; counted only when asked (in the first round).
    tokens_reuse: usize,
    tokens_full: usize,
}

/// ARC-JSD attribution of `subject` three ways, timed: with prefix reuse, and from scratch with
/// logits at every position or only at the answer rows.
fn time_attribution_ways(
    engine: &Engine,
    subject: &Subject,
    g: Granularity,
    count_tokens: bool,
) -> Result<AttributionRound> {
    use headscope::analysis::arc_jsd;
    use headscope::analysis::divergence::Divergence;
    use headscope::analysis::no_progress;
    use headscope::analysis::scoring::PrefixScorer;

    let t = Instant::now();
    let scorer = PrefixScorer::for_subject(engine, subject)?;
    let reuse = arc_jsd::attribution(
        engine,
        subject,
        g,
        Divergence::Jsd,
        &scorer,
        &mut no_progress,
    )?;
    let reuse_s = t.elapsed().as_secs_f64();
    let (tokens_reuse, tokens_full) = if count_tokens {
        (
            scorer.stats().tokens,
            full_forward_tokens(engine, subject, g)?,
        )
    } else {
        (0, 0)
    };
    let t = Instant::now();
    let full = leave_one_out_from_scratch(engine, subject, g, true)?;
    let full_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let rows = leave_one_out_from_scratch(engine, subject, g, false)?;
    let rows_s = t.elapsed().as_secs_f64();
    let mut max_diff: f64 = 0.0;
    for ((a, b), c) in reuse.scores.iter().zip(&full).zip(&rows) {
        max_diff = max_diff.max((a - b).abs()).max((a - c).abs());
    }
    Ok(AttributionRound {
        reuse_s,
        full_s,
        rows_s,
        max_diff,
        tokens_reuse,
        tokens_full,
    })
}

/// Token positions that `n + 1` from-scratch forwards of `prompt ++ answer[..-1]` compute.
fn full_forward_tokens(engine: &Engine, subject: &Subject, g: Granularity) -> Result<usize> {
    let n = subject.sources(g).len();
    let a = subject.answer_ids().len() - 1;
    let mut tokens = subject.prompt.ids.len() + a;
    for i in 0..n {
        let keep: Vec<bool> = (0..n).map(|j| j != i).collect();
        tokens += subject.leave_out(engine, &keep, g)?.ids.len() + a;
    }
    Ok(tokens)
}

/// ARC-JSD's source scores from `n + 1` independent forwards, one by one.
fn leave_one_out_from_scratch(
    engine: &Engine,
    subject: &Subject,
    g: Granularity,
    all_rows: bool,
) -> Result<Vec<f64>> {
    use headscope::analysis::divergence::{log_softmax, Divergence};

    let answer = subject.answer_ids();
    let base = full_forward(engine, &subject.prompt.ids, answer, all_rows)?;
    let base: Vec<Vec<f64>> = base.rows.iter().map(|r| log_softmax(r)).collect();
    let n = subject.sources(g).len();
    (0..n)
        .map(|i| {
            let keep: Vec<bool> = (0..n).map(|j| j != i).collect();
            let prompt = subject.leave_out(engine, &keep, g)?;
            let rows = full_forward(engine, &prompt.ids, answer, all_rows)?;
            Ok(rows
                .rows
                .iter()
                .zip(&base)
                .map(|(r, lp)| Divergence::Jsd.between_log_probs(lp, &log_softmax(r)))
                .sum())
        })
        .collect()
}

/// One from-scratch forward of `prompt ++ answer[..-1]`; `all_rows`: logits everywhere.
fn full_forward(
    engine: &Engine,
    prompt: &[u32],
    answer: &[u32],
    all_rows: bool,
) -> Result<headscope::analysis::scoring::AnswerLogits> {
    use headscope::analysis::scoring::AnswerLogits;
    use headscope::engine::{Capture, Hooks, Positions, Start};

    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&answer[..answer.len() - 1]);
    let p = prompt.len();
    let rows = p - 1..p - 1 + answer.len();
    let hooks = Hooks {
        capture: Capture {
            logits: Some(if all_rows {
                Positions::All
            } else {
                Positions::Range(rows.clone())
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let t = engine.ids_tensor(&ids)?;
    let mut trace = engine.forward(Start::Tokens(&t), None, &hooks)?;
    let logits = trace.take_logits()?;
    let logits = if all_rows {
        logits.narrow(1, rows.start, rows.len())?
    } else {
        logits
    };
    Ok(AnswerLogits::from_tensor(&logits)?)
}

fn print_attribution_bench(out: &AttributionBench) {
    println!(
        "ARC-JSD attribution, {} samples ({} sources each on average), median of {} rounds:\n  \
         prefix reuse {:.2}s, n+1 full forwards {:.2}s (ratio {:.2}), n+1 forwards with answer rows only {:.2}s (ratio {:.2}); max |Δ score| {:.1e}; tokens computed {} vs {}",
        out.samples,
        out.sources.iter().sum::<usize>() as f64 / out.samples.max(1) as f64,
        out.repeats,
        median(&out.times.prefix_reuse_s),
        median(&out.times.full_forwards_s),
        out.ratio_vs_full_forwards,
        median(&out.times.full_forwards_answer_rows_s),
        out.ratio_vs_full_forwards_answer_rows,
        out.max_score_difference,
        out.tokens_prefix_reuse,
        out.tokens_full_forwards
    );
}
