//! The retention report: per method × sparsity, the pruned model's accuracy, mean answer
//! log-prob and the Pearson correlation of per-sample log-probs with the unpruned model's, and
//! retention = pruned / unpruned accuracy, each with a 95 % percentile bootstrap interval over
//! test samples (seeded; one resample of samples serves numerator and denominator alike; random
//! pruning pools its draws: a sample's accuracy is the mean over draws, and the correlation runs
//! over every (sample, draw) pair). The measured speed-up joins it when `speed/` has it.
//!
//! Written as `retention.json` (every number), `retention.md` (the table) and
//! `figures/retention.{svg,png}` (retention against sparsity, one line per method, bands).

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use super::evaluate::EvalUnit;
use super::run::{eval_unit, PruneRun};
use super::select::head_count;
use super::speed::SpeedUnit;
use super::{condition_name, percent, PruneConfig, PruneMethod};
use crate::analysis::rng::{derive_seed, SplitMix64};
use crate::study::ablate::CleanUnit;
use crate::study::figures::{
    draw_titles, write_figure, Drawn, Figure, CLEAN, FONT, PALETTE, TITLE_H,
};
use crate::study::stats::{percentile_interval, Interval};
use crate::study::units::pretty;
use crate::{Error, Result};

/// A statistic with its interval (`None` where it is undefined, e.g. retention of an unpruned
/// accuracy of 0, or a correlation of constant log-probs).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub lo: f64,
    pub hi: f64,
}

/// One method × sparsity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetentionRow {
    pub method: PruneMethod,
    pub sparsity: f64,
    /// Heads pruned (per draw), MLP blocks pruned.
    pub heads_pruned: usize,
    pub mlps_pruned: usize,
    pub draws: usize,
    pub accuracy: Option<Estimate>,
    pub retention: Option<Estimate>,
    pub answer_logprob: Option<Estimate>,
    pub logprob_pearson: Option<Estimate>,
    /// Measured pruned / unpruned tokens/s (draw 0 of random), when measured.
    pub prefill_speedup: Option<f64>,
    pub decode_speedup: Option<f64>,
}

/// `retention.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Retention {
    pub model: String,
    pub config: PruneConfig,
    pub layers: usize,
    pub heads: usize,
    /// Test samples scored (the unpruned model answered them), and those left out.
    pub test_samples: usize,
    pub skipped_samples: usize,
    pub unpruned_accuracy: Option<Estimate>,
    pub unpruned_logprob: Option<Estimate>,
    pub rows: Vec<RetentionRow>,
}

/// Per (method, sparsity label), per test sample, the draws' `(correct, log-prob)`.
type PrunedOutcomes = BTreeMap<(PruneMethod, String), Vec<Vec<(f64, f64)>>>;

/// Per test sample: the clean outcome, and per condition (method, sparsity) the draws'
/// `(correct, log-prob)`.
struct Outcomes {
    clean: Vec<(f64, f64)>,
    pruned: PrunedOutcomes,
}

/// The statistic over all samples and its percentile bootstrap interval (resampling samples).
fn bootstrap(
    n: usize,
    resamples: usize,
    seed: u64,
    stat: impl Fn(&[usize]) -> Option<f64>,
) -> Option<Estimate> {
    let all: Vec<usize> = (0..n).collect();
    let value = stat(&all)?;
    let mut rng = SplitMix64::new(seed);
    let stats: Vec<f64> = (0..resamples)
        .filter_map(|_| {
            let idx: Vec<usize> = (0..n).map(|_| rng.below(n)).collect();
            stat(&idx)
        })
        .collect();
    if stats.is_empty() {
        return None;
    }
    let Interval { lo, hi, .. } = percentile_interval(&stats, 0.95);
    Some(Estimate { value, lo, hi })
}

fn mean(xs: impl Iterator<Item = f64>) -> Option<f64> {
    let (s, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    (n > 0).then(|| s / n as f64)
}

/// Pearson's r of pairs; `None` when either side is constant.
pub fn pearson(pairs: &[(f64, f64)]) -> Option<f64> {
    let mx = mean(pairs.iter().map(|p| p.0))?;
    let my = mean(pairs.iter().map(|p| p.1))?;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for &(x, y) in pairs {
        sxy += (x - mx) * (y - my);
        sxx += (x - mx) * (x - mx);
        syy += (y - my) * (y - my);
    }
    (sxx > 0.0 && syy > 0.0).then(|| sxy / (sxx * syy).sqrt())
}

impl PruneRun {
    fn outcomes(&self) -> Result<(Outcomes, usize)> {
        let mut clean = Vec::new();
        let mut pruned = PrunedOutcomes::new();
        let mut skipped = 0;
        for k in self.eval_samples() {
            let c: CleanUnit = self.store.read(&eval_unit("clean", &k.key))?;
            if c.skipped.is_some() {
                skipped += 1;
                continue;
            }
            let i = clean.len();
            clean.push((c.correct as u8 as f64, c.answer_logprob));
            for &m in &self.cfg.methods {
                let unit: EvalUnit = self.store.read(&eval_unit(m.key(), &k.key))?;
                for cond in unit.conditions {
                    let cell = pruned.entry((m, percent(cond.sparsity))).or_default();
                    cell.resize(i + 1, Vec::new());
                    cell[i].push((cond.correct as u8 as f64, cond.clean_answer_logprob));
                }
            }
        }
        Ok((Outcomes { clean, pruned }, skipped))
    }

    /// Every number of the report, from the units on disk (all must be done).
    pub fn retention(&self, layers: usize, heads: usize) -> Result<Retention> {
        let (o, skipped) = self.outcomes()?;
        let n = o.clean.len();
        let b = self.cfg.bootstrap;
        let seed = |parts: &[&str]| derive_seed(self.cfg.seed, parts);
        let clean_acc = |idx: &[usize]| mean(idx.iter().map(|&i| o.clean[i].0));
        let unpruned_accuracy = bootstrap(n, b, seed(&["accuracy", "unpruned"]), clean_acc);
        let unpruned_logprob = bootstrap(n, b, seed(&["logprob", "unpruned"]), |idx| {
            mean(idx.iter().map(|&i| o.clean[i].1))
        });
        let mut rows = Vec::new();
        for &m in &self.cfg.methods {
            for s in self.cfg.sparsity_grid() {
                let key = (m, percent(s));
                let cells = o.pruned.get(&key).ok_or_else(|| {
                    Error::Pruning(format!("no evaluation of {}", condition_name(m, s, 0)))
                })?;
                if cells.len() != n || cells.iter().any(|c| c.is_empty()) {
                    return Err(Error::Pruning(format!(
                        "the evaluation of {} is incomplete",
                        condition_name(m, s, 0)
                    )));
                }
                let name = condition_name(m, s, 0);
                let acc = |idx: &[usize]| {
                    mean(
                        idx.iter()
                            .map(|&i| mean(cells[i].iter().map(|d| d.0)).unwrap_or(0.0)),
                    )
                };
                let retention = |idx: &[usize]| {
                    let c = clean_acc(idx)?;
                    (c > 0.0).then(|| acc(idx).unwrap_or(0.0) / c)
                };
                let logprob = |idx: &[usize]| {
                    mean(
                        idx.iter()
                            .map(|&i| mean(cells[i].iter().map(|d| d.1)).unwrap_or(0.0)),
                    )
                };
                let clean = &o.clean;
                let corr = |idx: &[usize]| {
                    let pairs: Vec<(f64, f64)> = idx
                        .iter()
                        .flat_map(|&i| cells[i].iter().map(move |d| (d.1, clean[i].1)))
                        .collect();
                    pearson(&pairs)
                };
                let speed: Option<SpeedUnit> = self
                    .store
                    .done::<SpeedUnit>(&format!("speed/{name}.json"))
                    .then(|| self.store.read(&format!("speed/{name}.json")))
                    .transpose()?;
                let plan: crate::engine::Pruning = crate::engine::Pruning::from_file(
                    &self.store.path(&format!("pruning/{name}.json")),
                )?;
                debug_assert_eq!(
                    plan.heads.len(),
                    head_count(s, layers, heads, self.cfg.layer_adaptive)
                );
                rows.push(RetentionRow {
                    method: m,
                    sparsity: s,
                    heads_pruned: plan.heads.len(),
                    mlps_pruned: plan.mlps.len(),
                    draws: cells.first().map_or(0, Vec::len),
                    accuracy: bootstrap(n, b, seed(&["accuracy", &name]), acc),
                    retention: bootstrap(n, b, seed(&["retention", &name]), retention),
                    answer_logprob: bootstrap(n, b, seed(&["logprob", &name]), logprob),
                    logprob_pearson: bootstrap(n, b, seed(&["pearson", &name]), corr),
                    prefill_speedup: speed.as_ref().map(|u| u.prefill_speedup),
                    decode_speedup: speed.as_ref().map(|u| u.decode_speedup),
                });
            }
        }
        Ok(Retention {
            model: self.label.clone(),
            config: self.cfg.clone(),
            layers,
            heads,
            test_samples: n,
            skipped_samples: skipped,
            unpruned_accuracy,
            unpruned_logprob,
            rows,
        })
    }

    /// `retention.json`, `retention.md`, `figures/retention.{svg,png}` and `README.md`.
    pub fn write_report(&self, r: &Retention, command: &str) -> Result<Vec<std::path::PathBuf>> {
        self.store.write_text("retention.json", &pretty(r)?)?;
        self.store.write_text("retention.md", &markdown(r))?;
        self.store.write_text("README.md", &readme(r, command))?;
        let mut written = vec![
            self.store.path("retention.json"),
            self.store.path("retention.md"),
            self.store.path("README.md"),
        ];
        written.extend(write_figure(
            &RetentionFigure { r },
            self.store.root(),
            "figures/retention",
        )?);
        Ok(written)
    }
}

fn pct(e: &Option<Estimate>) -> String {
    match e {
        Some(e) => format!(
            "{:.1} % [{:.1}, {:.1}]",
            100.0 * e.value,
            100.0 * e.lo,
            100.0 * e.hi
        ),
        None => "—".into(),
    }
}

fn num(e: &Option<Estimate>, digits: usize) -> String {
    match e {
        Some(e) => format!("{:.d$} [{:.d$}, {:.d$}]", e.value, e.lo, e.hi, d = digits),
        None => "—".into(),
    }
}

fn speedup(s: Option<f64>) -> String {
    s.map_or("not measured".into(), |v| format!("×{v:.2}"))
}

/// The table: one row per method × sparsity × metric, the encoder work's shape (method, sparsity,
/// metric, value, retention, speed-up).
pub fn markdown(r: &Retention) -> String {
    let c = &r.config;
    let mut out = format!(
        "# Head pruning: {}\n\n\
         {} test samples ({} per category, {} left out: the unpruned model gave no answer); \
         unpruned accuracy {} and mean answer log-prob {}. Intervals: 95 % percentile bootstrap \
         over test samples ({} resamples, seed {}). Retention = pruned / unpruned accuracy. \
         Random: {} seeded draws, pooled. Speed-up: measured tokens/s of the pruned model \
         (loaded with `--prune`) over the unpruned one, same run (`speed/`).\n\n\
         | method | sparsity | heads pruned | metric | value [95 % CI] | retention [95 % CI] | \
         speed-up prefill | speed-up decode |\n\
         | --- | ---: | ---: | --- | --- | --- | ---: | ---: |\n",
        r.model,
        r.test_samples,
        c.eval,
        r.skipped_samples,
        pct(&r.unpruned_accuracy),
        num(&r.unpruned_logprob, 2),
        c.bootstrap,
        c.seed,
        c.draws
    );
    for row in &r.rows {
        let heads = match row.mlps_pruned {
            0 => format!("{} / {}", row.heads_pruned, r.layers * r.heads),
            m => format!("{} / {} (+{m} MLPs)", row.heads_pruned, r.layers * r.heads),
        };
        let lead = format!("| {} | {} % | {heads} |", row.method, percent(row.sparsity));
        out.push_str(&format!(
            "{lead} accuracy | {} | {} | {} | {} |\n",
            pct(&row.accuracy),
            pct(&row.retention),
            speedup(row.prefill_speedup),
            speedup(row.decode_speedup)
        ));
        out.push_str(&format!(
            "{lead} answer log-prob | {} | | | |\n",
            num(&row.answer_logprob, 2)
        ));
        out.push_str(&format!(
            "{lead} log-prob Pearson r | {} | | | |\n",
            num(&row.logprob_pearson, 3)
        ));
    }
    out.push_str("\n![retention against sparsity](figures/retention.svg)\n");
    out
}

fn readme(r: &Retention, command: &str) -> String {
    let c = &r.config;
    let methods: Vec<&str> = c.methods.iter().map(|m| m.key()).collect();
    let sparsities: Vec<String> = c.sparsity_grid().iter().map(|s| percent(*s)).collect();
    format!(
        "# Pruning run: {}\n\n\
         Made by:\n\n```\n{command}\n```\n\n\
         - study folder: `{}` (its split and prompt format);\n\
         - methods: {}; sparsities: {} % of the {} heads{}{}{};\n\
         - calibration: {} training samples per category ({} for the exact scores: ablation, \
         ARC-JSD, patching), seeded order (seed {}); the study scores come from the study's own \
         detection;\n\
         - evaluation: {} test samples per category; {} random draws; {} bootstrap resamples.\n\n\
         Outputs: `retention.md` (table), `retention.json` (every number), \
         `figures/retention.{{svg,png}}`, `pruning/<method>-<sparsity>[-d<draw>].json` (load with \
         `--prune FILE`), and the resumable units `importance/`, `eval/`, `speed/` (delete \
         `speed/` and rerun to measure the speed again).\n",
        r.model,
        c.study.display(),
        methods.join(", "),
        sparsities.join(", "),
        r.layers * r.heads,
        if c.mlp { ", MLP blocks too" } else { "" },
        if c.layer_adaptive {
            ", the same share per layer"
        } else {
            ""
        },
        if c.protect_circuit {
            format!(", the top {} patching heads protected", c.protect_top)
        } else {
            String::new()
        },
        c.calibration,
        c.calibration_exact,
        c.seed,
        c.eval,
        c.draws,
        c.bootstrap
    )
}

/// Retention (%) against sparsity (%), one line per method, its interval as a band.
struct RetentionFigure<'a> {
    r: &'a Retention,
}

impl Figure for RetentionFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (960, 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(TITLE_H);
        let subtitle = format!(
            "{} test samples · unpruned accuracy {} · bands: 95 % bootstrap CI",
            self.r.test_samples,
            pct(&self.r.unpruned_accuracy)
        );
        draw_titles(
            &head,
            &format!("{} · head pruning", self.r.model),
            &subtitle,
        )?;
        let top = self
            .r
            .rows
            .iter()
            .filter_map(|row| row.retention.map(|e| 100.0 * e.hi))
            .fold(100.0f64, f64::max)
            * 1.05;
        let mut chart = ChartBuilder::on(&body)
            .margin(16)
            .margin_right(28)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d(0f64..100f64, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("sparsity (% of heads pruned)")
            .y_desc("retention (% of unpruned accuracy)")
            .light_line_style(TRANSPARENT)
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()?;
        let style = ShapeStyle::from(CLEAN).stroke_width(1);
        chart.draw_series([PathElement::new(vec![(0.0, 100.0), (100.0, 100.0)], style)])?;
        for (i, m) in self.r.config.methods.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, Estimate)> = self
                .r
                .rows
                .iter()
                .filter(|row| row.method == *m)
                .filter_map(|row| row.retention.map(|e| (100.0 * row.sparsity, e)))
                .collect();
            if pts.is_empty() {
                continue;
            }
            let mut band: Vec<(f64, f64)> = pts.iter().map(|(x, e)| (*x, 100.0 * e.hi)).collect();
            band.extend(pts.iter().rev().map(|(x, e)| (*x, 100.0 * e.lo)));
            chart.draw_series([Polygon::new(band, colour.mix(0.12).filled())])?;
            let line: Vec<(f64, f64)> = pts.iter().map(|(x, e)| (*x, 100.0 * e.value)).collect();
            let stroke = colour.stroke_width(3);
            chart
                .draw_series(LineSeries::new(line.clone(), stroke))?
                .label(m.key())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], stroke));
            chart.draw_series(line.iter().map(|&c| Circle::new(c, 5, colour.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(CLEAN.mix(0.6))
            .draw()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_and_bootstrap_behave() {
        assert!((pearson(&[(1.0, 2.0), (2.0, 4.0), (3.0, 6.5)]).unwrap() - 0.9986).abs() < 1e-3);
        assert_eq!(pearson(&[(1.0, 1.0), (1.0, 2.0)]), None);
        let xs = [0.0, 1.0, 1.0, 0.0];
        let e = bootstrap(4, 200, 3, |idx| mean(idx.iter().map(|&i| xs[i]))).unwrap();
        assert_eq!(e.value, 0.5);
        assert!(e.lo <= 0.5 && e.hi >= 0.5);
        assert_eq!(
            e,
            bootstrap(4, 200, 3, |idx| mean(idx.iter().map(|&i| xs[i]))).unwrap()
        );
    }
}
