//! `headscope export` (a model, pruned or not, as a Hugging Face folder) and `headscope bench
//! prune` (the measured speed of models loaded pruned).

use anyhow::{bail, Context, Result};
use serde::Serialize;

use headscope::analysis::rng::SplitMix64;
use headscope::engine::export::write_hf_folder;
use headscope::engine::speed::{measure_interleaved, Throughput};
use headscope::engine::{Engine, LoadOptions, Pruning};

use crate::cli::{BenchPruneArgs, ExportArgs, ModelArgs};

fn load_options(model: &ModelArgs, pruning: Option<Pruning>) -> LoadOptions {
    LoadOptions {
        model: model.model_name(),
        offline: model.offline,
        device: model.device,
        dtype: model.dtype,
        pruning,
    }
}

pub fn export(args: ExportArgs) -> Result<()> {
    let pruning = match &args.model.prune {
        Some(path) => Pruning::from_file(path)?,
        None => Pruning::default(),
    };
    let opts = load_options(&args.model, None);
    write_hf_folder(&opts, &pruning, args.physical, &args.out)
        .with_context(|| format!("cannot export `{}`", opts.model))?;
    println!(
        "wrote {} ({} heads and {} MLPs removed, {})",
        args.out.display(),
        pruning.heads.len(),
        pruning.mlps.len(),
        if args.physical {
            "sliced"
        } else {
            "zeroed, same shapes"
        }
    );
    Ok(())
}

/// One pruned model's measured speed against the unpruned model's.
#[derive(Serialize)]
struct PrunedSpeed {
    sparsity: f64,
    heads_pruned: usize,
    /// KV heads left (of layers × KV heads).
    kv_heads_kept: usize,
    throughput: Throughput,
    prefill_speedup: f64,
    decode_speedup: f64,
}

#[derive(Serialize)]
struct BenchPruneJson {
    model: String,
    arch: String,
    dtype: String,
    device: String,
    cpu: String,
    threads: usize,
    seed: u64,
    heads: usize,
    kv_heads: usize,
    unpruned: Throughput,
    pruned: Vec<PrunedSpeed>,
}

/// `sparsity` of all heads, chosen uniformly at random with `seed`.
fn random_pruning(engine: &Engine, sparsity: f64, seed: u64) -> Pruning {
    let arch = engine.arch();
    let all: Vec<(usize, usize)> = (0..arch.num_layers)
        .flat_map(|l| (0..arch.num_heads).map(move |h| (l, h)))
        .collect();
    let n = (sparsity * all.len() as f64).round() as usize;
    Pruning {
        heads: SplitMix64::new(seed).choose(&all, n).into_iter().collect(),
        mlps: Default::default(),
    }
}

/// The CPU's model name (`/proc/cpuinfo`), or the device.
fn cpu_name(engine: &Engine) -> String {
    if !engine.device().is_cpu() {
        return engine.info().device.clone();
    }
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn bench_prune(args: BenchPruneArgs) -> Result<()> {
    if args.model.prune.is_some() {
        bail!("bench prune draws its own prunings (--sparsity, --seed); leave out --prune");
    }
    if let Some(s) = args.sparsity.iter().find(|s| !(**s > 0.0 && **s < 1.0)) {
        bail!("--sparsity {s} is outside (0, 1)");
    }
    if args.tokens == 0 || args.repeats == 0 {
        bail!("--tokens and --repeats must be positive");
    }
    let (full, _) = super::load_engine(&args.model)?;
    let ids = super::spread_ids(full.info().vocab_size, args.tokens);
    let prunings: Vec<Pruning> = args
        .sparsity
        .iter()
        .map(|&s| random_pruning(&full, s, args.seed))
        .collect();
    let engines = prunings
        .iter()
        .map(|p| Engine::load(&load_options(&args.model, Some(p.clone()))))
        .collect::<headscope::Result<Vec<_>>>()
        .context("cannot load a pruned model")?;
    let all: Vec<&Engine> = std::iter::once(&full).chain(&engines).collect();
    let mut measured = measure_interleaved(&all, &ids, args.decode, args.repeats)?;
    let unpruned = measured.remove(0);
    report("unpruned", &unpruned, None);
    let arch = full.arch();
    let mut pruned = Vec::new();
    for ((&sparsity, pruning), throughput) in args.sparsity.iter().zip(&prunings).zip(measured) {
        report(
            &format!("{:.0}% pruned", sparsity * 100.0),
            &throughput,
            Some(&unpruned),
        );
        pruned.push(PrunedSpeed {
            sparsity,
            heads_pruned: pruning.heads.len(),
            kv_heads_kept: (0..arch.num_layers)
                .map(|l| pruning.layer_heads(arch, l).kv.len())
                .sum(),
            prefill_speedup: throughput.prefill_tokens_per_s / unpruned.prefill_tokens_per_s,
            decode_speedup: throughput.decode_tokens_per_s / unpruned.decode_tokens_per_s,
            throughput,
        });
    }
    if let Some(path) = &args.json {
        let info = full.info();
        let out = BenchPruneJson {
            model: info.model.clone(),
            arch: info.arch.clone(),
            dtype: info.dtype.clone(),
            device: info.device.clone(),
            cpu: cpu_name(&full),
            threads: candle_core::utils::get_num_threads(),
            seed: args.seed,
            heads: info.layers * info.heads,
            kv_heads: info.layers * info.kv_heads,
            unpruned,
            pruned,
        };
        super::write_json(path, &out)?;
    }
    Ok(())
}

fn report(label: &str, t: &Throughput, base: Option<&Throughput>) {
    let speedup = |x: f64, b: f64| format!(" (×{:.2})", x / b);
    println!(
        "{label:>12}: prefill {:.0} tokens/s{}, decode {:.1} tokens/s{}",
        t.prefill_tokens_per_s,
        base.map_or(String::new(), |b| speedup(
            t.prefill_tokens_per_s,
            b.prefill_tokens_per_s
        )),
        t.decode_tokens_per_s,
        base.map_or(String::new(), |b| speedup(
            t.decode_tokens_per_s,
            b.decode_tokens_per_s
        )),
    );
}
