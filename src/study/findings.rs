//! FINDINGS.md, generated from the [`Summary`] alone: the design, the experiment matrix, what
//! detection found, the overlaps, and a data-driven answer to each research question. Every
//! number is one of the summary's, formatted one way (accuracies as percentages with one decimal,
//! Jaccard with two, p-values with three), or the difference of two of them.
//!
//! Where the answer rests on a difference of two accuracies, the summary holds each accuracy's
//! 95 % interval but not the paired difference's, so the difference gets the conservative
//! interval `[lo₁ − hi₂, hi₁ − lo₂]`, wider than a paired interval would usually be: a cautious
//! choice, so a difference it clears is not an artefact of the missing pairing. An effect is
//! called only when the evidence is clear: a p-value below 0.05, at least [`MIN_SAMPLES`]
//! samples, and intervals that do not overlap; otherwise the text says the evidence is too weak
//! to conclude, and why.

mod questions;

use super::figures::{category_jaccard_stem, curve_stem, depth_stem, method_jaccard_stem};
use super::summary::{
    CurvePoint, Detection, Estimate, Experiment, JaccardMatrix, ModelSummary, Summary,
};

/// Below this many test samples an effect is too weak to conclude, whatever its p-value.
pub const MIN_SAMPLES: usize = 10;
/// The significance level of the p-values.
pub const ALPHA: f64 = 0.05;
/// The words every inconclusive answer uses, so a reader (and a test) can find them.
pub const TOO_WEAK: &str = "too weak to conclude";
/// Heads listed per method × category in the detection highlights.
const HIGHLIGHT_HEADS: usize = 10;
/// A Jaccard at most this many times the random expectation is read as chance-level overlap.
const CHANCE_FACTOR: f64 = 2.0;

/// The whole FINDINGS.md for `summary`.
pub fn findings_markdown(summary: &Summary) -> String {
    let mut doc = Doc {
        s: summary,
        out: String::new(),
    };
    doc.header();
    doc.design();
    doc.matrix();
    doc.detection_section();
    doc.overlaps();
    doc.questions();
    doc.out
}

/// `0.625` → `62.5 %`.
fn pct(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// `62.5 % [50.0, 75.0]`.
fn pct_ci(e: &Estimate) -> String {
    format!(
        "{} [{:.1}, {:.1}]",
        pct(e.value),
        100.0 * e.lo,
        100.0 * e.hi
    )
}

/// A difference of accuracies in percentage points, signed: `+12.5 pp`.
fn pp(x: f64) -> String {
    format!("{:+.1} pp", 100.0 * x)
}

/// `p = 0.042`, or `p < 0.001`.
fn p_value(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".to_string()
    } else {
        format!("p = {p:.3}")
    }
}

/// A Jaccard index: `0.43`.
fn jac(x: f64) -> String {
    format!("{x:.2}")
}

/// A Markdown link to a figure's SVG (and PNG), relative to FINDINGS.md.
fn figure_link(text: &str, stem: &str) -> String {
    format!("[{text}]({stem}.svg) ([png]({stem}.png))")
}

fn is_instruct(model: &str) -> bool {
    model.to_lowercase().contains("instruct")
}

/// A difference of two accuracies (`a − b`) with its conservative interval and the test behind it.
#[derive(Clone, Copy, Debug)]
struct Effect {
    value: f64,
    lo: f64,
    hi: f64,
    /// The two accuracies' own intervals overlap.
    overlap: bool,
    p: f64,
    n: usize,
}

impl Effect {
    /// `a − b`, tested with `p` on `n` samples.
    fn between(a: &Estimate, b: &Estimate, p: f64, n: usize) -> Effect {
        Effect {
            value: a.value - b.value,
            lo: a.lo - b.hi,
            hi: a.hi - b.lo,
            overlap: a.lo <= b.hi && b.lo <= a.hi,
            p,
            n,
        }
    }

    /// Why this effect cannot be called, or nothing when it can.
    fn weaknesses(&self) -> Vec<String> {
        let mut why = Vec::new();
        if self.n < MIN_SAMPLES {
            why.push(format!("n = {} < {MIN_SAMPLES}", self.n));
        }
        if self.p.is_nan() || self.p >= ALPHA {
            why.push(format!("{} ≥ {ALPHA}", p_value(self.p)));
        }
        if self.overlap {
            why.push("the two intervals overlap".to_string());
        }
        why
    }

    /// `+12.5 pp [+3.0, +22.0]`.
    fn show(&self) -> String {
        format!(
            "{} [{:+.1}, {:+.1}]",
            pp(self.value),
            100.0 * self.lo,
            100.0 * self.hi
        )
    }

    /// Two effects' conservative intervals do not overlap: they differ.
    fn differs_from(&self, other: &Effect) -> bool {
        self.lo > other.hi || other.lo > self.hi
    }
}

/// One experiment with what the report derives from its largest k.
struct Cell<'a> {
    model: &'a ModelSummary,
    exp: &'a Experiment,
}

impl<'a> Cell<'a> {
    fn last(&self) -> Option<&'a CurvePoint> {
        self.exp.points.last()
    }

    fn clean(&self) -> Option<&'a Estimate> {
        self.model.clean_accuracy.get(&self.exp.category)
    }

    /// The drop top-k vs random-k at the largest k: random pooled − top accuracy.
    fn drop(&self) -> Option<Effect> {
        let p = self.last()?;
        Some(Effect::between(
            &p.random.pooled,
            &p.top,
            p.p_top_vs_random,
            self.exp.test_samples,
        ))
    }

    fn label(&self) -> String {
        format!(
            "{} · {} · {}",
            self.model.model, self.exp.method, self.exp.category
        )
    }

    /// `- **m · method · cat** (k = 20): top 20.0 % [..] vs random 70.0 % [..]: drop …; verdict.`
    fn drop_sentence(&self) -> Option<String> {
        let (p, d) = (self.last()?, self.drop()?);
        let mut s = format!(
            "- **{}** (k = {}): top-k {} vs random-k {}: drop {} ({}",
            self.label(),
            p.k,
            pct_ci(&p.top),
            pct_ci(&p.random.pooled),
            d.show(),
            p_value(d.p),
        );
        s.push_str(&match self.clean() {
            Some(c) => format!("; clean {}). ", pct_ci(c)),
            None => "). ".to_string(),
        });
        s.push_str(&drop_verdict(&d));
        Some(s)
    }
}

/// Whether a cell's drop is clear, reversed (random heads hurt more), or too weak to conclude.
fn drop_verdict(d: &Effect) -> String {
    let claim = "ablating the top-k heads hurts more than random heads";
    let why = d.weaknesses();
    if !why.is_empty() {
        format!("Evidence is {TOO_WEAK} that {claim} ({}).", why.join("; "))
    } else if d.value > 0.0 {
        format!("Clear: {claim}.")
    } else {
        "Clear, and reversed: ablating random heads hurts more than the top-k heads.".to_string()
    }
}

/// The report being written.
struct Doc<'a> {
    s: &'a Summary,
    out: String,
}

impl<'a> Doc<'a> {
    fn line(&mut self, text: impl AsRef<str>) {
        self.out.push_str(text.as_ref());
        self.out.push('\n');
    }

    fn cells(&self) -> Vec<Cell<'a>> {
        let models = self.s.models.iter();
        models
            .flat_map(|model| model.experiments.iter().map(move |exp| Cell { model, exp }))
            .collect()
    }

    fn model(&self, name: &str) -> Option<&'a ModelSummary> {
        self.s.models.iter().find(|m| m.model == name)
    }

    fn detection(&self, model: &str, method: &str, category: &str) -> Option<&'a Detection> {
        let m = self.model(model)?;
        m.detect
            .iter()
            .find(|d| d.method == method && d.category == category)
    }

    fn header(&mut self) {
        self.line("# Findings");
        self.line("");
        self.line(
            "Generated by `headscope study report` from `summary.json`: every number below is \
             one of its numbers, or the difference of two. Accuracies are percentages of test \
             samples answered correctly, with 95 % bootstrap intervals in brackets.",
        );
        self.line("");
    }

    fn design(&mut self) {
        let d = &self.s.design;
        self.line("## Design");
        self.line("");
        let models: Vec<String> = self
            .s
            .models
            .iter()
            .map(|m| {
                format!(
                    "`{}` ({}, {} layers × {} heads = {} heads)",
                    m.model,
                    m.arch,
                    m.layers,
                    m.heads,
                    m.layers * m.heads
                )
            })
            .collect();
        self.line(format!("- Models: {}.", models.join(", ")));
        self.line(format!(
            "- Head-finding methods: {}.",
            code_list(&d.methods)
        ));
        self.line(format!(
            "- Categories: {}; numerical: {}.",
            code_list(&d.categories),
            if d.numerical_categories.is_empty() {
                "none".to_string()
            } else {
                code_list(&d.numerical_categories)
            }
        ));
        let ks: Vec<String> = d.ks.iter().map(|k| k.to_string()).collect();
        self.line(format!(
            "- Ablation: mode `{}`, positions `{}`; k ∈ {{{}}} (k = 0 is the clean model); top lists of {} heads; \
             {} random draws per k from heads outside the method's top list, and a layer-matched random control.",
            d.ablation_mode,
            d.positions,
            ks.join(", "),
            d.top_n,
            d.draws
        ));
        self.line(format!(
            "- Statistics: {} bootstrap resamples per interval, seed {}; top-k vs random-k by a paired \
             permutation test, top-k vs layer-matched by an exact McNemar test (two-sided).",
            d.bootstrap, d.seed
        ));
        self.line("");
        self.line("| category | numerical | train samples | test samples |");
        self.line("| --- | --- | ---: | ---: |");
        for c in &d.categories {
            let count = |m: &std::collections::BTreeMap<String, usize>| {
                m.get(c).map_or("–".to_string(), |n| n.to_string())
            };
            let numerical = if d.numerical_categories.contains(c) {
                "yes"
            } else {
                "no"
            };
            let row = format!(
                "| {c} | {numerical} | {} | {} |",
                count(&d.train_samples),
                count(&d.test_samples)
            );
            self.line(row);
        }
        self.line("");
    }

    fn matrix(&mut self) {
        self.line("## Experiment matrix");
        self.line("");
        self.line(
            "Each row is one model × method × category at its largest k. The drop is random-k \
             (pooled) minus top-k accuracy, with the conservative interval of a difference; p is \
             the paired permutation test of top-k vs random-k, p (LM) the exact McNemar test of \
             top-k vs layer-matched.",
        );
        self.line("");
        self.line(
            "| model | method | category | k | clean | top-k | random-k (mean ± sd of draws) | random-k pooled | drop | p | layer-matched | p (LM) | figure |",
        );
        self.line(
            "| --- | --- | --- | ---: | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        );
        for cell in self.cells() {
            self.line(matrix_row(&cell));
        }
        self.line("");
    }

    fn detection_section(&mut self) {
        self.line("## Detection");
        self.line("");
        self.line(format!(
            "The {HIGHLIGHT_HEADS} best heads of each method × category (`L<layer>H<head>` mean ± sd of \
             the score over the training samples), the share of all heads scoring above 0.1, the top \
             list's rank stability (its Jaccard with the top lists of bootstrap resamples of the \
             training samples) and its mean relative depth (0 = first layer, 1 = last)."
        ));
        for model in &self.s.models {
            self.line("");
            self.line(format!("### {}", model.model));
            self.line("");
            self.line("| method | category | train samples | top heads (mean ± sd) | scored samples | heads > 0.1 | rank stability | mean depth |");
            self.line("| --- | --- | ---: | --- | --- | ---: | --- | ---: |");
            for d in &model.detect {
                self.line(detection_row(d));
            }
            self.line("");
            let stem = depth_stem(&model.model);
            self.line(format!(
                "![depth of the top heads, {}]({stem}.svg)",
                model.model
            ));
        }
        self.line("");
    }

    fn overlaps(&mut self) {
        self.line("## Overlap of top lists");
        self.line("");
        self.line(format!(
            "Jaccard index of two top-{} lists, beside the value two random sets of that size among \
             the model's heads give on average.",
            self.s.design.top_n
        ));
        for m in &self.s.overlaps.between_categories {
            self.line("");
            self.line(format!(
                "### Between categories: {} · {}",
                m.model, m.within
            ));
            self.jaccard_table(m, &category_jaccard_stem(&m.model, &m.within));
        }
        for m in &self.s.overlaps.between_methods {
            self.line("");
            self.line(format!("### Between methods: {} · {}", m.model, m.within));
            self.jaccard_table(m, &method_jaccard_stem(&m.model, &m.within));
        }
        self.between_models();
        self.line("");
    }

    fn jaccard_table(&mut self, m: &JaccardMatrix, stem: &str) {
        self.line("");
        self.line(format!("| | {} |", m.labels.join(" | ")));
        self.line(format!("| --- |{}", " ---: |".repeat(m.labels.len())));
        for (label, row) in m.labels.iter().zip(&m.values) {
            let cells: Vec<String> = row.iter().map(|&v| jac(v)).collect();
            self.line(format!("| {label} | {} |", cells.join(" | ")));
        }
        self.line("");
        self.line(format!(
            "Random expectation: {}. {}",
            jac(m.random),
            figure_link("Heatmap", stem)
        ));
    }

    fn between_models(&mut self) {
        let pairs = &self.s.overlaps.between_models;
        self.line("");
        self.line("### Between models");
        self.line("");
        if pairs.is_empty() {
            self.line(
                "No two models have the same shape (layers × heads), so their heads cannot be \
                 matched one to one; they are compared by relative depth instead (question 4).",
            );
            return;
        }
        self.line("| models | method | category | Jaccard | random expectation |");
        self.line("| --- | --- | --- | ---: | ---: |");
        for p in pairs {
            self.line(format!(
                "| {} vs {} | {} | {} | {} | {} |",
                p.models[0],
                p.models[1],
                p.method,
                p.category,
                jac(p.jaccard),
                jac(p.random)
            ));
        }
    }

    fn questions(&mut self) {
        self.line("## Research questions");
        self.line("");
        self.same_heads();
        self.numerical_vs_categorical();
        self.per_category_effects();
        self.instruct_vs_other();
    }
}

/// `a`, `b` → "`a`, `b`".
fn code_list(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("`{i}`")).collect();
    quoted.join(", ")
}

/// One row of the matrix; an experiment without ablation results keeps its row, marked so.
fn matrix_row(cell: &Cell) -> String {
    let clean = cell.clean().map_or("–".to_string(), pct_ci);
    let stem = curve_stem(&cell.model.model, &cell.exp.method, &cell.exp.category);
    let head = format!(
        "| {} | {} | {} |",
        cell.model.model, cell.exp.method, cell.exp.category
    );
    let (Some(p), Some(d)) = (cell.last(), cell.drop()) else {
        return format!(
            "{head} – | {clean} | no ablation results |{}",
            " – |".repeat(7)
        );
    };
    format!(
        "{head} {} | {clean} | {} | {} ± {:.1} pp | {} | {} | {} | {} | {} | {} |",
        p.k,
        pct_ci(&p.top),
        pct(p.random.mean),
        100.0 * p.random.sd,
        pct_ci(&p.random.pooled),
        d.show(),
        p_value(p.p_top_vs_random),
        pct_ci(&p.layer_matched),
        p_value(p.p_top_vs_layer_matched),
        figure_link("plot", &stem),
    )
}

fn detection_row(d: &Detection) -> String {
    let heads: Vec<String> = d
        .top
        .iter()
        .take(HIGHLIGHT_HEADS)
        .map(|h| format!("L{}H{} {:.3} ± {:.3}", h.layer, h.head, h.mean, h.sd))
        .collect();
    let ns = d.top.iter().take(HIGHLIGHT_HEADS).map(|h| h.n);
    let scored = match (ns.clone().min(), ns.max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (Some(a), Some(b)) => format!("{a}–{b}"),
        _ => "–".to_string(),
    };
    let r = &d.rank_stability;
    format!(
        "| {} | {} | {} | {} | {scored} | {} | {} [{}, {}] | {:.2} |",
        d.method,
        d.category,
        d.train_samples,
        heads.join(", "),
        pct(d.fraction_above_0_1),
        jac(r.value),
        jac(r.lo),
        jac(r.hi),
        d.mean_relative_depth
    )
}

/// The off-diagonal pairs of a Jaccard matrix: `(i, j, value)` with `i < j`.
fn pairs(m: &JaccardMatrix) -> Vec<(usize, usize, f64)> {
    let mut out = Vec::new();
    for (i, row) in m.values.iter().enumerate() {
        for (j, &v) in row.iter().enumerate().skip(i + 1) {
            out.push((i, j, v));
        }
    }
    out
}

/// `1 pair`, `3 pairs`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn mean(values: impl IntoIterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .into_iter()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}
