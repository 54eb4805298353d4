//! The study as the view reads it from its folder, finished or still running: the record
//! (`config.toml`), the test split, each model's ablation plan, detection statistics and unit
//! files, and `summary.json` once every unit is there. Loading only reads; the view reloads while
//! units are missing, so a running study fills in as its unit files land.
//!
//! Curves come from `summary.json` when the study is complete (the report's numbers, with their
//! bootstrap intervals); until then they are the plain means over the units on disk, marked
//! partial, without intervals.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::engine::{AblationMode, AblationSet};
use crate::prompt::{load_samples, Sample};
use crate::study::ablate::{AblateUnit, AblationPlan, CleanUnit, Control, Head};
use crate::study::config::{sample_key, AblatedPositions, ConfigRecord};
use crate::study::detect::{DetectMethod, HeadStats};
use crate::study::run::{ablate_unit, clean_unit, detect_unit};
use crate::study::stats::{jaccard, random_jaccard};
use crate::study::summary::{Estimate, Summary};
use crate::study::units::UnitStore;
use crate::{Error, Result};

/// Does `dir` hold a study (its `config.toml` record)?
pub fn is_study_dir(dir: &Path) -> bool {
    dir.is_dir() && dir.join("config.toml").is_file()
}

/// When anything in the folder last changed: the latest modification time of its directories
/// (units are written to a temporary sibling and renamed into place, which touches the
/// directory), so the view reads the folder again only after a unit landed.
pub fn stamp(dir: &Path) -> Option<std::time::SystemTime> {
    fn walk(dir: &Path, depth: usize, latest: &mut Option<std::time::SystemTime>) {
        if let Ok(t) = std::fs::metadata(dir).and_then(|m| m.modified()) {
            *latest = (*latest).max(Some(t));
        }
        if depth == 0 {
            return;
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&e.path(), depth - 1, latest);
            }
        }
    }
    let mut latest = None;
    walk(dir, 3, &mut latest);
    latest
}

/// One model of the study and what is on disk for it.
#[derive(Clone, Debug, Default)]
pub struct ModelData {
    pub label: String,
    /// The model as configured (a path or hub id).
    pub configured: String,
    /// The path recorded when the model was loaded, once it was.
    pub recorded: Option<String>,
    /// `(layers, heads)`, once the model was loaded.
    pub shape: Option<(usize, usize)>,
    pub plan: Option<AblationPlan>,
    /// Per method × category: every head's mean score over the training samples.
    pub stats: BTreeMap<(DetectMethod, String), HeadStats>,
    /// Per test sample key.
    pub clean: BTreeMap<String, CleanUnit>,
    /// Per method × test sample key.
    pub ablated: BTreeMap<(DetectMethod, String), AblateUnit>,
}

impl ModelData {
    /// The method's top list for the category, best first: the plan's (the heads the ablation
    /// used), else the detection statistics'.
    pub fn top_list(&self, method: DetectMethod, category: &str, top_n: usize) -> Vec<Head> {
        if let Some(cell) = self.plan.as_ref().and_then(|p| p.cell(method, category)) {
            return cell.top_list.clone();
        }
        self.stats
            .get(&(method, category.to_string()))
            .map(|s| s.top(top_n).iter().map(|h| (h.layer, h.head)).collect())
            .unwrap_or_default()
    }

    /// The plan's top-k heads of method × category (nothing at k = 0 or before the plan).
    pub fn top_k(&self, method: DetectMethod, category: &str, k: usize) -> Option<Vec<Head>> {
        let cell = self.plan.as_ref()?.cell(method, category)?;
        cell.points.iter().find(|p| p.k == k).map(|p| p.top.clone())
    }
}

/// A test sample of the study, with the key its unit files are named by.
#[derive(Clone, Debug)]
pub struct TestSample {
    pub key: String,
    pub category: String,
    pub sample: Sample,
}

/// Units done of one phase of one model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: &'static str,
    pub model: String,
    pub done: usize,
    pub total: usize,
}

/// Accuracy at one k under the three conditions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CurvePoint {
    pub k: usize,
    pub top: Estimate,
    /// The pooled random-k accuracy.
    pub random: Estimate,
    /// The lowest and highest accuracy of a single random draw.
    pub band: (f64, f64),
    pub layer_matched: Estimate,
}

/// One experiment's curve.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub points: Vec<CurvePoint>,
    /// Test samples the accuracies are over.
    pub n: usize,
    /// From `summary.json`, with bootstrap intervals; otherwise the partial means so far.
    pub complete: bool,
}

/// Top-k minus random-k accuracy at one k, with the conservative interval of the two
/// intervals (`top.lo − random.hi`, `top.hi − random.lo`, as FINDINGS.md states effects).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effect {
    pub k: usize,
    pub value: f64,
    /// `None` for partial results.
    pub interval: Option<(f64, f64)>,
    pub n: usize,
}

impl Curve {
    pub fn at(&self, k: usize) -> Option<&CurvePoint> {
        self.points.iter().find(|p| p.k == k)
    }

    /// The effect at the largest k.
    pub fn effect(&self) -> Option<Effect> {
        let p = self.points.iter().rev().find(|p| p.k > 0)?;
        Some(Effect {
            k: p.k,
            value: p.top.value - p.random.value,
            interval: self
                .complete
                .then_some((p.top.lo - p.random.hi, p.top.hi - p.random.lo)),
            n: self.n,
        })
    }
}

/// Model × method × category, as indices into the study's lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cell {
    pub model: usize,
    pub method: usize,
    pub category: usize,
}

/// A test sample's answers in one experiment at one k.
#[derive(Clone, Debug, PartialEq)]
pub struct SampleOutcome {
    pub clean: Option<(String, bool)>,
    /// The answer with the top-k heads ablated and whether it is correct.
    pub top: Option<(String, bool)>,
    /// Random draws that left the answer correct, of all draws.
    pub random_correct: (usize, usize),
    pub skipped: Option<String>,
}

impl SampleOutcome {
    /// Correct on the clean model, wrong with the top-k ablated, and right under every random
    /// draw: the method's heads, not just any heads, broke it.
    pub fn broken_by_top_only(&self) -> bool {
        let (right, draws) = self.random_correct;
        matches!(self.clean, Some((_, true)))
            && matches!(self.top, Some((_, false)))
            && draws > 0
            && right == draws
    }
}

/// Everything the view shows of a study.
#[derive(Clone, Debug)]
pub struct StudyData {
    pub dir: PathBuf,
    pub record: ConfigRecord,
    pub models: Vec<ModelData>,
    pub methods: Vec<DetectMethod>,
    pub categories: Vec<String>,
    /// The k grid, ascending, with 0.
    pub ks: Vec<usize>,
    pub samples: Vec<TestSample>,
    pub progress: Vec<Progress>,
    /// The report's numbers, when the study is complete and reported.
    pub summary: Option<Summary>,
    /// Each experiment's curve, computed once per load (the panes draw them every frame).
    curves: BTreeMap<Cell, Curve>,
}

impl StudyData {
    /// Reads the study in `dir`.
    pub fn load(dir: &Path) -> Result<StudyData> {
        let store = UnitStore::new(dir);
        let text = std::fs::read_to_string(store.path("config.toml"))
            .map_err(|e| Error::io(store.path("config.toml"), e))?;
        let record: ConfigRecord = toml::from_str(&text).map_err(|e| {
            Error::Study(format!(
                "{} is not a study record: {e}",
                store.path("config.toml").display()
            ))
        })?;
        let cfg = &record.study;
        let test = side(&read_split(&store, "test")?, cfg.test_per_category);
        let train = side(&read_split(&store, "train")?, cfg.train_per_category);
        let mut categories: Vec<String> = test
            .iter()
            .chain(&train)
            .map(|s| s.category.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        categories.retain(|c| !c.is_empty());
        let mut data = StudyData {
            dir: dir.to_path_buf(),
            methods: cfg.methods.clone(),
            ks: cfg.k_grid(),
            categories,
            samples: test,
            progress: Vec::new(),
            summary: None,
            models: Vec::new(),
            record: record.clone(),
            curves: BTreeMap::new(),
        };
        for configured in &cfg.models {
            let m = data.load_model(&store, configured, &train)?;
            data.models.push(m);
        }
        let complete = data.progress.iter().all(|p| p.done == p.total);
        if complete && store.exists("summary.json") {
            data.summary = store.read::<Summary>("summary.json").ok();
        }
        for row in 0..data.rows() {
            for col in 0..data.categories.len() {
                let cell = data.cell(row, col);
                if let Some(c) = data.compute_curve(cell) {
                    data.curves.insert(cell, c);
                }
            }
        }
        Ok(data)
    }

    fn load_model(
        &mut self,
        store: &UnitStore,
        configured: &str,
        train: &[TestSample],
    ) -> Result<ModelData> {
        let label = crate::study::config::model_label(configured);
        let rec = self
            .record
            .provenance
            .models
            .iter()
            .find(|m| m.label == label);
        let mut m = ModelData {
            label: label.clone(),
            configured: configured.to_string(),
            recorded: rec.map(|r| r.path.clone()),
            shape: rec.map(|r| (r.layers, r.heads)),
            ..ModelData::default()
        };
        let plan = format!("ablate/{label}/plan.json");
        if store.exists(&plan) {
            m.plan = Some(store.read(&plan)?);
        }
        for &method in &self.methods {
            for cat in &self.categories {
                let rel = format!("detect/{label}/{}/{cat}.json", method.key());
                if store.exists(&rel) {
                    m.stats.insert((method, cat.clone()), store.read(&rel)?);
                }
            }
        }
        let detected = train
            .iter()
            .filter(|s| store.exists(&detect_unit(&label, &s.key)))
            .count();
        self.progress.push(Progress {
            phase: "detect",
            model: label.clone(),
            done: detected,
            total: train.len(),
        });
        let per_sample = 1 + self.methods.len();
        let mut done = 0;
        for s in &self.samples {
            let rel = clean_unit(&label, &s.key);
            if !store.exists(&rel) {
                continue;
            }
            let clean: CleanUnit = store.read(&rel)?;
            if clean.skipped.is_some() {
                // A skipped sample has no method units: they count as done.
                done += per_sample;
                m.clean.insert(s.key.clone(), clean);
                continue;
            }
            m.clean.insert(s.key.clone(), clean);
            done += 1;
            for &method in &self.methods {
                let rel = ablate_unit(&label, method, &s.key);
                if store.exists(&rel) {
                    m.ablated.insert((method, s.key.clone()), store.read(&rel)?);
                    done += 1;
                }
            }
        }
        self.progress.push(Progress {
            phase: "ablate",
            model: label,
            done,
            total: self.samples.len() * per_sample,
        });
        Ok(m)
    }

    /// Every unit of every phase is on disk.
    pub fn is_complete(&self) -> bool {
        self.progress.iter().all(|p| p.done == p.total)
    }

    /// Nothing more will land: every unit is there and so is the report.
    pub fn is_final(&self) -> bool {
        self.is_complete() && self.summary.is_some()
    }

    /// The configured ablation mode and positions.
    pub fn ablation(&self) -> (AblationMode, AblatedPositions) {
        (self.record.study.ablation, self.record.study.positions)
    }

    /// Rows of the matrix: model × method, models outermost.
    pub fn rows(&self) -> usize {
        self.models.len() * self.methods.len()
    }

    /// The cell at matrix `row` and category `col`.
    pub fn cell(&self, row: usize, col: usize) -> Cell {
        let methods = self.methods.len().max(1);
        Cell {
            model: row / methods,
            method: row % methods,
            category: col,
        }
    }

    pub fn method(&self, cell: Cell) -> Option<DetectMethod> {
        self.methods.get(cell.method).copied()
    }

    pub fn category(&self, cell: Cell) -> Option<&str> {
        self.categories.get(cell.category).map(String::as_str)
    }

    pub fn model(&self, cell: Cell) -> Option<&ModelData> {
        self.models.get(cell.model)
    }

    /// The test samples of the cell's category.
    pub fn samples_of(&self, cell: Cell) -> Vec<&TestSample> {
        let cat = self.category(cell).unwrap_or("");
        self.samples.iter().filter(|s| s.category == cat).collect()
    }

    /// The experiment's curve: the report's when the study is complete, else the partial means
    /// (`None` before any of its units).
    pub fn curve(&self, cell: Cell) -> Option<&Curve> {
        self.curves.get(&cell)
    }

    fn compute_curve(&self, cell: Cell) -> Option<Curve> {
        let (model, method, cat) = (self.model(cell)?, self.method(cell)?, self.category(cell)?);
        if let Some(summary) = &self.summary {
            let exp = summary
                .models
                .iter()
                .find(|m| m.model == model.label)?
                .experiments
                .iter()
                .find(|e| e.method == method.key() && e.category == cat)?;
            let points = exp
                .points
                .iter()
                .map(|p| CurvePoint {
                    k: p.k,
                    top: p.top,
                    random: p.random.pooled,
                    band: band(&p.random.per_draw, p.random.mean),
                    layer_matched: p.layer_matched,
                })
                .collect();
            return Some(Curve {
                points,
                n: exp.test_samples,
                complete: true,
            });
        }
        self.partial_curve(model, method, cat)
    }

    /// Plain means over the samples whose units are all on disk.
    fn partial_curve(&self, model: &ModelData, method: DetectMethod, cat: &str) -> Option<Curve> {
        let units: Vec<(&CleanUnit, &AblateUnit)> = self
            .samples
            .iter()
            .filter(|s| s.category == cat)
            .filter_map(|s| {
                let clean = model.clean.get(&s.key).filter(|c| c.skipped.is_none())?;
                Some((clean, model.ablated.get(&(method, s.key.clone()))?))
            })
            .collect();
        if units.is_empty() {
            return None;
        }
        let n = units.len();
        let draws = self.record.study.draws;
        let mean = |xs: &[bool]| xs.iter().filter(|&&x| x).count() as f64 / xs.len().max(1) as f64;
        let points = self
            .ks
            .iter()
            .map(|&k| {
                let pick = |u: &(&CleanUnit, &AblateUnit), c: Control, draw: usize| -> bool {
                    if k == 0 {
                        return u.0.correct;
                    }
                    u.1.conditions
                        .iter()
                        .any(|r| r.k == k && r.control == c && r.draw == draw && r.correct)
                };
                let top: Vec<bool> = units.iter().map(|u| pick(u, Control::Top, 0)).collect();
                let matched: Vec<bool> = units
                    .iter()
                    .map(|u| pick(u, Control::LayerMatched, 0))
                    .collect();
                let per_draw: Vec<f64> = (0..draws.max(1))
                    .map(|d| {
                        let xs: Vec<bool> =
                            units.iter().map(|u| pick(u, Control::Random, d)).collect();
                        mean(&xs)
                    })
                    .collect();
                let random = per_draw.iter().sum::<f64>() / per_draw.len() as f64;
                CurvePoint {
                    k,
                    top: point(mean(&top), n),
                    random: point(random, n),
                    band: band(&per_draw, random),
                    layer_matched: point(mean(&matched), n),
                }
            })
            .collect();
        Some(Curve {
            points,
            n,
            complete: false,
        })
    }

    /// A test sample's answers in the cell's experiment at `k`.
    pub fn outcome(&self, cell: Cell, key: &str, k: usize) -> SampleOutcome {
        let mut out = SampleOutcome {
            clean: None,
            top: None,
            random_correct: (0, 0),
            skipped: None,
        };
        let (Some(model), Some(method)) = (self.model(cell), self.method(cell)) else {
            return out;
        };
        if let Some(c) = model.clean.get(key) {
            out.skipped = c.skipped.clone();
            out.clean = c.skipped.is_none().then(|| (c.answer.clone(), c.correct));
        }
        if k == 0 {
            out.top = out.clean.clone();
            return out;
        }
        let Some(unit) = model.ablated.get(&(method, key.to_string())) else {
            return out;
        };
        for r in unit.conditions.iter().filter(|r| r.k == k) {
            match r.control {
                Control::Top => out.top = Some((r.answer.clone(), r.correct)),
                Control::Random => {
                    out.random_correct.0 += usize::from(r.correct);
                    out.random_correct.1 += 1;
                }
                Control::LayerMatched => {}
            }
        }
        out
    }

    /// The heads the explorer ablates for the cell at `k`: the plan's top-k, in the study's mode.
    pub fn ablation_set(&self, cell: Cell, k: usize) -> Option<AblationSet> {
        let heads = self
            .model(cell)?
            .top_k(self.method(cell)?, self.category(cell)?, k)?;
        Some(AblationSet {
            heads: heads.into_iter().collect(),
            mlps: BTreeSet::new(),
            mode: self.record.study.ablation,
        })
    }

    /// The cell's top list as a set.
    pub fn top_set(&self, cell: Cell) -> BTreeSet<Head> {
        match (self.model(cell), self.method(cell), self.category(cell)) {
            (Some(m), Some(method), Some(cat)) => m
                .top_list(method, cat, self.record.study.top_n)
                .into_iter()
                .collect(),
            _ => BTreeSet::new(),
        }
    }

    /// Jaccard of the top lists of `a` and `b` (`None` while either is missing, or for models
    /// of other shapes), with what two random lists of the same sizes give.
    pub fn jaccard(&self, a: Cell, b: Cell) -> Option<(f64, f64)> {
        let shape = self.model(a)?.shape?;
        if self.model(b)?.shape? != shape {
            return None;
        }
        let (x, y) = (self.top_set(a), self.top_set(b));
        if x.is_empty() || y.is_empty() {
            return None;
        }
        Some((
            jaccard(&x, &y),
            random_jaccard(shape.0 * shape.1, x.len(), y.len()),
        ))
    }

    /// Where the explorer finds the cell's model: the recorded path while it exists, else the
    /// configured one.
    pub fn model_path(&self, model: usize) -> Option<String> {
        let m = self.models.get(model)?;
        match &m.recorded {
            Some(p) if Path::new(p).exists() => Some(p.clone()),
            _ => Some(m.configured.clone()),
        }
    }
}

/// An estimate without an interval (a partial mean).
fn point(value: f64, n: usize) -> Estimate {
    Estimate {
        value,
        lo: value,
        hi: value,
        n,
    }
}

fn band(per_draw: &[f64], mean: f64) -> (f64, f64) {
    let lo = per_draw.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = per_draw.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if lo.is_finite() {
        (lo, hi)
    } else {
        (mean, mean)
    }
}

/// `split/<name>.jsonl` (written by the study's first run).
fn read_split(store: &UnitStore, name: &str) -> Result<Vec<Sample>> {
    let path = store.path(&format!("split/{name}.jsonl"));
    if !path.is_file() {
        return Ok(Vec::new());
    }
    load_samples(&path)
}

/// One side of the split as the study uses it: at most `limit` per category (0: all), in split
/// order. Samples are keyed by their `id` (the split files do not keep the dataset index that
/// an id-less sample's key uses; those show no units).
fn side(samples: &[Sample], limit: usize) -> Vec<TestSample> {
    let mut taken: BTreeMap<String, usize> = BTreeMap::new();
    samples
        .iter()
        .filter(|s| {
            let n = taken
                .entry(s.category().unwrap_or("").to_string())
                .or_default();
            *n += 1;
            limit == 0 || *n <= limit
        })
        .map(|s| TestSample {
            key: sample_key(s, usize::MAX),
            category: s.category().unwrap_or("").to_string(),
            sample: s.clone(),
        })
        .collect()
}
