//! The research questions, each answered from the summary's numbers with the rule the module
//! documentation states: an effect is called only on clear evidence, otherwise the answer says the
//! evidence is too weak to conclude and why.

use super::super::summary::{JaccardMatrix, ModelSummary};
use super::{
    code_list, count, is_instruct, jac, mean, pairs, pct_ci, Cell, Doc, Effect, CHANCE_FACTOR,
    MIN_SAMPLES, TOO_WEAK,
};
use crate::study::figures::depth_stem;

impl Doc<'_> {
    /// Question 1: category × category overlap against chance and against the lists' own noise.
    pub(super) fn same_heads(&mut self) {
        self.line("### 1. Do the same heads serve different question types?");
        self.line("");
        self.line(format!(
            "For each model × method, the Jaccard of the categories' top lists against two \
             references: chance (two random sets; an overlap within {CHANCE_FACTOR}× of it counts \
             as chance-level) and the lists' own rank stability (the overlap of one category's \
             list with itself over resampled training samples). Categories that overlap as much as \
             a list overlaps itself use the same heads, as far as this data can tell."
        ));
        self.line("");
        for m in &self.s.overlaps.between_categories {
            let text = self.same_heads_line(m);
            self.line(text);
        }
        self.line("");
    }

    fn same_heads_line(&self, m: &JaccardMatrix) -> String {
        let head = format!("- **{} · {}**: ", m.model, m.within);
        let ps = pairs(m);
        let Some(avg) = mean(ps.iter().map(|p| p.2)) else {
            return format!("{head}fewer than two categories, nothing to compare.");
        };
        let lo = ps.iter().map(|p| p.2).fold(f64::INFINITY, f64::min);
        let hi = ps.iter().map(|p| p.2).fold(f64::NEG_INFINITY, f64::max);
        let chance = m.random;
        let mut s = format!(
            "{head}category pairs' Jaccard {} on average (range {}–{}, {}) vs {} for random sets",
            jac(avg),
            jac(lo),
            jac(hi),
            count(ps.len(), "pair"),
            jac(chance)
        );
        if chance > 0.0 {
            s.push_str(&format!(" ({:.1}× chance)", avg / chance));
        }
        let floor = self.stability_floor(m);
        let Some(floor) = floor else {
            s.push_str(&format!(
                ". Without the lists' rank stability the overlap has no noise scale: evidence {TOO_WEAK}."
            ));
            return s;
        };
        s.push_str(&format!(
            "; the lists' rank stability is at least {} (lowest interval bound). ",
            jac(floor)
        ));
        s.push_str(&if floor <= CHANCE_FACTOR * chance {
            format!(
                "The top lists are not stable even within one category (≤ {CHANCE_FACTOR}× chance), \
                 so evidence is {TOO_WEAK} whether the categories share heads."
            )
        } else if avg >= floor {
            "Same heads: the categories overlap as much as resamples of one category do.".into()
        } else if avg > CHANCE_FACTOR * chance {
            "Partly the same heads: overlap above chance but below the lists' own stability, so \
             the categories share some heads and differ in others."
                .into()
        } else {
            "Different heads: the overlap is chance-level although each list is stable.".into()
        });
        s
    }

    /// The lowest rank-stability interval bound among a category matrix's top lists.
    fn stability_floor(&self, m: &JaccardMatrix) -> Option<f64> {
        let bounds: Vec<f64> = m
            .labels
            .iter()
            .filter_map(|c| self.detection(&m.model, &m.within, c))
            .map(|d| d.rank_stability.lo)
            .collect();
        (bounds.len() == m.labels.len() && !bounds.is_empty())
            .then(|| bounds.into_iter().fold(f64::INFINITY, f64::min))
    }

    /// Question 2: within-group vs between-group overlap, and the ablation effect per group.
    pub(super) fn numerical_vs_categorical(&mut self) {
        self.line("### 2. Do numerical and categorical questions use the same heads?");
        self.line("");
        let d = &self.s.design;
        let numerical = d.numerical_categories.clone();
        let n_num = d
            .categories
            .iter()
            .filter(|c| numerical.contains(c))
            .count();
        if n_num == 0 || n_num == d.categories.len() {
            self.line(
                "The design does not have both numerical and categorical categories, so this run \
                 cannot answer this question.",
            );
            self.line("");
            return;
        }
        self.line(format!(
            "Numerical: {}; categorical: the others. Heads: the Jaccard of category pairs within \
             a group against pairs across the groups. Effects: each cell's drop (random-k − top-k \
             at the largest k).",
            code_list(&numerical)
        ));
        self.line("");
        for m in &self.s.overlaps.between_categories {
            let text = group_overlap_line(m, &numerical);
            self.line(text);
        }
        for model in &self.s.models {
            for method in &self.s.design.methods {
                if let Some(text) = group_effect_line(model, method, &numerical) {
                    self.line(text);
                }
            }
        }
        self.line("");
    }

    /// Question 3: each cell's drop, then which categories' drops differ.
    pub(super) fn per_category_effects(&mut self) {
        self.line("### 3. Are ablations equally effective in every category?");
        self.line("");
        for cell in self.cells() {
            if let Some(text) = cell.drop_sentence() {
                self.line(text);
            }
        }
        self.line("");
        for model in &self.s.models {
            for method in &self.s.design.methods {
                if let Some(text) = category_differences(model, method) {
                    self.line(text);
                }
            }
        }
        self.line("");
    }

    /// Question 4: instruct vs other model, or what the run compares instead.
    pub(super) fn instruct_vs_other(&mut self) {
        self.line("### 4. Do instruct and other models differ?");
        self.line("");
        let models = &self.s.models;
        if models.len() < 2 {
            self.line("Fewer than two models were run, so this run cannot answer this question.");
            self.line("");
            return;
        }
        let (instruct, other): (Vec<&ModelSummary>, Vec<&ModelSummary>) =
            models.iter().partition(|m| is_instruct(&m.model));
        let mut compared = Vec::new();
        if instruct.is_empty() || other.is_empty() {
            let which = if other.is_empty() {
                "All models are instruction-tuned (their names say `Instruct`)"
            } else {
                "No model is instruction-tuned (no name says `Instruct`)"
            };
            self.line(format!(
                "{which}, so this run cannot answer whether instruct and base models differ. It \
                 compares the models with each other instead, and a difference between them may come \
                 from architecture, size or training as much as from instruction tuning."
            ));
            for (i, a) in models.iter().enumerate() {
                compared.extend(models[i + 1..].iter().map(|b| (a, b)));
            }
        } else {
            for a in &instruct {
                compared.extend(other.iter().map(|b| (*a, *b)));
            }
            self.line(format!(
                "Instruction-tuned: {}; other: {}.",
                names(&instruct),
                names(&other)
            ));
        }
        for (a, b) in compared {
            self.compare_models(a, b);
        }
        self.line("");
    }

    fn compare_models(&mut self, a: &ModelSummary, b: &ModelSummary) {
        self.line("");
        self.line(format!("#### {} vs {}", a.model, b.model));
        self.line("");
        if (a.arch.as_str(), a.layers, a.heads) != (b.arch.as_str(), b.layers, b.heads) {
            self.line(format!(
                "They also differ in architecture or shape ({} {} × {} vs {} {} × {}), so heads are \
                 compared by relative depth, and effects by accuracy.",
                a.arch, a.layers, a.heads, b.arch, b.layers, b.heads
            ));
            self.line("");
        }
        self.compare_clean(a, b);
        self.compare_drops(a, b);
        self.depth_comparison(a, b);
    }

    /// Each category's clean accuracy in the two models.
    fn compare_clean(&mut self, a: &ModelSummary, b: &ModelSummary) {
        for c in &self.s.design.categories {
            let (Some(x), Some(y)) = (a.clean_accuracy.get(c), b.clean_accuracy.get(c)) else {
                continue;
            };
            let apart = x.lo > y.hi || y.lo > x.hi;
            self.line(format!(
                "- Clean accuracy, {c}: {} vs {}: the intervals {}.",
                pct_ci(x),
                pct_ci(y),
                if apart { "separate" } else { "overlap" }
            ));
        }
    }

    /// Each method × category's drop in the two models, and how many separate.
    fn compare_drops(&mut self, a: &ModelSummary, b: &ModelSummary) {
        let (mut differ, mut total) = (0, 0);
        for ea in &a.experiments {
            let Some(eb) = b
                .experiments
                .iter()
                .find(|e| e.method == ea.method && e.category == ea.category)
            else {
                continue;
            };
            let (ca, cb) = (Cell { model: a, exp: ea }, Cell { model: b, exp: eb });
            let (Some(da), Some(db)) = (ca.drop(), cb.drop()) else {
                continue;
            };
            let split = da.differs_from(&db) && da.n.min(db.n) >= MIN_SAMPLES;
            total += 1;
            differ += split as usize;
            self.line(format!(
                "- {} · {}: drop {} vs {}: {}.",
                ea.method,
                ea.category,
                da.show(),
                db.show(),
                if split {
                    "the intervals separate"
                } else {
                    "the intervals overlap"
                }
            ));
        }
        self.line("");
        self.line(if differ == 0 {
            format!(
                "No method × category separates the two models' drops ({total} compared): evidence \
                 is {TOO_WEAK} that their ablation effects differ."
            )
        } else {
            format!("{differ} of {total} method × category cells separate the two models' drops.")
        });
        self.line("");
    }

    fn depth_comparison(&mut self, a: &ModelSummary, b: &ModelSummary) {
        for method in self.s.design.methods.clone() {
            let depth = |m: &ModelSummary| {
                let d = m.detect.iter().filter(|d| d.method == method);
                mean(d.map(|d| d.mean_relative_depth))
            };
            if let (Some(da), Some(db)) = (depth(a), depth(b)) {
                self.line(format!(
                    "- Depth, {method}: the top heads sit at a mean relative depth of {da:.2} in {} \
                     and {db:.2} in {} (averaged over categories; difference {:+.2}).",
                    a.model,
                    b.model,
                    da - db
                ));
            }
        }
        self.line("");
        self.line(format!(
            "The summary holds no interval on depth, so the depth difference is descriptive: \
             evidence is {TOO_WEAK} that the models place their heads differently. See \
             [{}]({}.svg) and [{}]({}.svg).",
            a.model,
            depth_stem(&a.model),
            b.model,
            depth_stem(&b.model)
        ));
    }
}

fn names(models: &[&ModelSummary]) -> String {
    let labels: Vec<String> = models.iter().map(|m| m.model.clone()).collect();
    code_list(&labels)
}

/// One matrix's within-group against between-group pairs.
fn group_overlap_line(m: &JaccardMatrix, numerical: &[String]) -> String {
    let is_num = |i: usize| numerical.contains(&m.labels[i]);
    let (within, across): (Vec<_>, Vec<_>) = pairs(m)
        .into_iter()
        .partition(|&(i, j, _)| is_num(i) == is_num(j));
    let values = |ps: &[(usize, usize, f64)]| ps.iter().map(|p| p.2).collect::<Vec<f64>>();
    let (w, x) = (values(&within), values(&across));
    let show = |v: &[f64]| mean(v.iter().copied()).map_or("–".to_string(), jac);
    let mut s = format!(
        "- **{} · {}** heads: within-group Jaccard {} ({}) vs across groups {} ({}), random {}. ",
        m.model,
        m.within,
        show(&w),
        count(w.len(), "pair"),
        show(&x),
        count(x.len(), "pair"),
        jac(m.random)
    );
    let n = w.len() + x.len();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    s.push_str(&if w.is_empty() || x.is_empty() {
        format!(
            "No group has two categories, so within-group overlap cannot be measured: evidence is {TOO_WEAK}."
        )
    } else if n < MIN_SAMPLES {
        format!(
            "With {n} pairs (< {MIN_SAMPLES}) and no interval on a Jaccard, evidence is {TOO_WEAK}."
        )
    } else if min(&w) > max(&x) {
        "Every within-group pair overlaps more than every pair across groups: numerical and \
         categorical questions use different heads."
            .to_string()
    } else {
        format!("Within-group and across-group pairs interleave: evidence is {TOO_WEAK}.")
    });
    s
}

/// The drops of one model × method's numerical and categorical cells, and whether they separate.
fn group_effect_line(model: &ModelSummary, method: &str, numerical: &[String]) -> Option<String> {
    let cells: Vec<(bool, String, Effect)> = model
        .experiments
        .iter()
        .filter(|e| e.method == method)
        .filter_map(|exp| {
            let d = Cell { model, exp }.drop()?;
            Some((numerical.contains(&exp.category), exp.category.clone(), d))
        })
        .collect();
    let group = |num: bool| -> Vec<(String, Effect)> {
        let mine = cells.iter().filter(|c| c.0 == num);
        mine.map(|c| (c.1.clone(), c.2)).collect()
    };
    let (num, cat) = (group(true), group(false));
    if num.is_empty() || cat.is_empty() {
        return None;
    }
    let list = |g: &[(String, Effect)]| {
        let items: Vec<String> = g.iter().map(|(c, d)| format!("{c} {}", d.show())).collect();
        items.join(", ")
    };
    let enough = cells.iter().all(|c| c.2.n >= MIN_SAMPLES);
    let above = num
        .iter()
        .all(|(_, a)| cat.iter().all(|(_, b)| a.lo > b.hi));
    let below = num
        .iter()
        .all(|(_, a)| cat.iter().all(|(_, b)| a.hi < b.lo));
    let verdict = match (enough, above, below) {
        (false, _, _) => format!(
            "A cell has fewer than {MIN_SAMPLES} test samples: evidence is {TOO_WEAK} that the \
             ablation acts differently on the two groups."
        ),
        (true, true, _) => "Clear: the top-k ablation costs numerical questions more than \
                            categorical ones (every interval apart)."
            .to_string(),
        (true, _, true) => "Clear: the top-k ablation costs categorical questions more than \
                            numerical ones (every interval apart)."
            .to_string(),
        _ => format!(
            "The groups' drop intervals overlap: evidence is {TOO_WEAK} that the ablation acts \
             differently on the two groups."
        ),
    };
    Some(format!(
        "- **{} · {method}** drops: numerical {}; categorical {}. {verdict}",
        model.model,
        list(&num),
        list(&cat)
    ))
}

/// Pairs of categories whose drops separate, for one model × method.
fn category_differences(model: &ModelSummary, method: &str) -> Option<String> {
    let drops: Vec<(String, Effect)> = model
        .experiments
        .iter()
        .filter(|e| e.method == method)
        .filter_map(|exp| Some((exp.category.clone(), Cell { model, exp }.drop()?)))
        .collect();
    if drops.len() < 2 {
        return None;
    }
    let mut differing = Vec::new();
    for (i, (a, da)) in drops.iter().enumerate() {
        for (b, db) in &drops[i + 1..] {
            if da.differs_from(db) && da.n.min(db.n) >= MIN_SAMPLES {
                let (big, small) = if da.value > db.value { (a, b) } else { (b, a) };
                differing.push(format!("{big} > {small}"));
            }
        }
    }
    let head = format!("- **{} · {method}** by category: ", model.model);
    Some(if differing.is_empty() {
        format!(
            "{head}every pair of categories' drop intervals overlaps: evidence is {TOO_WEAK} that \
             the ablation is more effective in one category than another."
        )
    } else {
        format!(
            "{head}the ablation is more effective (larger drop, intervals apart) in: {}.",
            differing.join("; ")
        )
    })
}
