//! A pruning run over its folder: the phases of [`super`], each unit written atomically and
//! skipped when it exists (a run killed at any moment resumes where it stopped and ends with the
//! same files), with progress and cancellation through the study's [`Monitor`].
//!
//! The folder:
//! * `config.json`: the [`PruneConfig`] (a folder holding another one is refused);
//! * `importance/<score>/<sample>.json`: raw per-sample scores ([`ScoreUnit`]); `mlp` and
//!   `patching` (the circuit) are scores too; `importance/<method>.json` the means;
//!   `importance/circuit.json` the protected heads;
//! * `pruning/<condition>.json`: every pruning, in `--prune`'s file form;
//! * `eval/clean/<sample>.json`, `eval/<method>/<sample>.json`: the test samples;
//! * `speed/<condition>.json`: measured throughput.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::data::{Keyed, StudyData};
use super::evaluate::{decoding, evaluate_sample, Condition, EvalUnit};
use super::importance::{
    from_study, magnitude, mean_importance, mlp_importance, prepare, sample_scores, Importance,
    ScoreUnit, MLP_SCORE,
};
use super::select::{circuit, pruning, random_importance, Head};
use super::speed::{SpeedSettings, SpeedUnit};
use super::{condition_name, PruneConfig, PruneMethod, Source};
use crate::analysis::ablated_decoding::clean_recording;
use crate::analysis::report::HeadScore;
use crate::analysis::{answer_is_correct, Subject};
use crate::engine::speed::measure_interleaved;
use crate::engine::{Engine, GenerationConfig, Pruning};
use crate::study::ablate::CleanUnit;
use crate::study::config::{model_label, AblatedPositions};
use crate::study::run::Monitor;
use crate::study::units::{pretty, UnitStore};
use crate::{Error, Result};

/// One planned pruning.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Planned {
    pub method: PruneMethod,
    pub sparsity: f64,
    pub draw: usize,
    pub pruning: Pruning,
}

impl Planned {
    pub fn name(&self) -> String {
        condition_name(self.method, self.sparsity, self.draw)
    }
}

/// A pruning run: its configuration, the study's data and the folder.
pub struct PruneRun {
    pub cfg: PruneConfig,
    pub data: StudyData,
    pub store: UnitStore,
    /// The model's label (as the study names it).
    pub label: String,
}

/// `importance/<score>/<sample>.json`.
pub fn score_unit(score: &str, key: &str) -> String {
    format!("importance/{score}/{key}.json")
}

/// `eval/<method or clean>/<sample>.json`.
pub fn eval_unit(what: &str, key: &str) -> String {
    format!("eval/{what}/{key}.json")
}

impl PruneRun {
    /// Checks the configuration, the study folder and (for the study scores) its detection of
    /// this model, all before any model runs; records the configuration.
    pub fn open(cfg: PruneConfig, dir: &Path) -> Result<PruneRun> {
        cfg.validate()?;
        let data = StudyData::open(&cfg.study, cfg.seed)?;
        let label = model_label(&cfg.model);
        for m in &cfg.methods {
            if let (Source::Study, PruneMethod::Score(h)) = (m.source(), m) {
                from_study(&cfg.study, &label, *h)?;
            }
        }
        let store = UnitStore::new(dir);
        let run = PruneRun {
            cfg,
            data,
            store,
            label,
        };
        run.check_config()?;
        Ok(run)
    }

    /// A folder holding another design is refused. The methods and the evaluation size may
    /// change (each method's units and each test sample's stand alone, and the evaluation
    /// samples are a prefix of one seeded order): a rerun with a method added computes only its
    /// units, and the report covers the methods and samples of the latest run.
    fn check_config(&self) -> Result<()> {
        if self.store.exists("config.json") {
            let old: PruneConfig = self.store.read("config.json")?;
            let same_design = PruneConfig {
                methods: self.cfg.methods.clone(),
                eval: self.cfg.eval,
                ..old.clone()
            } == self.cfg;
            if !same_design {
                return Err(Error::Pruning(format!(
                    "{} holds a pruning run with another configuration (only --methods and \
                     --eval may change); use a new --out folder (or delete it to start over)",
                    self.store.root().display()
                )));
            }
            if old == self.cfg {
                return Ok(());
            }
        }
        self.store.write_text("config.json", &pretty(&self.cfg)?)
    }

    /// Checks the model against the configuration (head counts) before its first forward.
    pub fn check_model(&self, engine: &Engine) -> Result<()> {
        let arch = engine.arch();
        let total = arch.num_layers * arch.num_heads;
        if self.cfg.protect_circuit && self.cfg.protect_top >= total {
            return Err(Error::Pruning(format!(
                "--protect-top {} leaves none of the model's {total} heads to prune",
                self.cfg.protect_top
            )));
        }
        Ok(())
    }

    fn max_new_tokens(&self) -> usize {
        self.data.study.max_new_tokens
    }

    /// The per-sample scores each calibration sample needs: the cheap ones (and the MLP
    /// ablation) on every calibration sample, the exact ones on the first `calibration_exact`.
    fn needed_scores(&self) -> (Vec<String>, Vec<String>) {
        let mut cheap = Vec::new();
        let mut exact = Vec::new();
        for m in &self.cfg.methods {
            match (m.source(), m) {
                (Source::Cheap, PruneMethod::Score(h)) => cheap.push(h.key().to_string()),
                (Source::Exact, PruneMethod::Score(h)) => exact.push(h.key().to_string()),
                _ => {}
            }
        }
        if self.cfg.protect_circuit {
            exact.push(HeadScore::Patching.key().to_string());
        }
        let interpretive = self
            .cfg
            .methods
            .iter()
            .any(|m| matches!(m, PruneMethod::Score(_)));
        if self.cfg.mlp && interpretive {
            cheap.push(MLP_SCORE.to_string());
        }
        (cheap, exact)
    }

    /// The calibration samples with the scores each still needs.
    fn calibration_work(&self) -> Vec<(&Keyed, Vec<String>)> {
        let (cheap, exact) = self.needed_scores();
        let n = match cheap.is_empty() {
            true => self.cfg.calibration_exact,
            false => self.cfg.calibration.max(self.cfg.calibration_exact),
        };
        let exact_keys: BTreeSet<&str> = self
            .data
            .calibration(self.cfg.calibration_exact)
            .into_iter()
            .map(|k| k.key.as_str())
            .collect();
        if cheap.is_empty() && exact.is_empty() {
            return Vec::new();
        }
        self.data
            .calibration(n)
            .into_iter()
            .map(|k| {
                let mut scores = cheap.clone();
                if exact_keys.contains(k.key.as_str()) {
                    scores.extend(exact.iter().cloned());
                }
                (k, scores)
            })
            .filter(|(_, s)| !s.is_empty())
            .collect()
    }

    /// Phase 1: the per-sample scores on the calibration samples.
    pub fn importance(&self, engine: &Engine, monitor: &mut dyn Monitor) -> Result<()> {
        let work = self.calibration_work();
        let missing = |k: &Keyed, scores: &[String]| -> Vec<String> {
            scores
                .iter()
                .filter(|s| !self.store.done::<ScoreUnit>(&score_unit(s, &k.key)))
                .cloned()
                .collect()
        };
        let total = work.len();
        let mut done = work
            .iter()
            .filter(|(k, s)| missing(k, s).is_empty())
            .count();
        monitor.phase(&format!("importance {}", self.label), done, total);
        for (k, scores) in &work {
            let todo = missing(k, scores);
            if todo.is_empty() {
                continue;
            }
            if monitor.cancelled() {
                return Err(Error::Cancelled);
            }
            crate::study::units::test_delay();
            self.score_sample(engine, k, &todo)?;
            done += 1;
            monitor.advance(done, total);
        }
        Ok(())
    }

    fn score_sample(&self, engine: &Engine, k: &Keyed, todo: &[String]) -> Result<()> {
        let unit = |answer: &str, scores: Vec<Vec<f64>>, skipped: Option<String>| ScoreUnit {
            sample: k.key.clone(),
            category: k.category().to_string(),
            answer: answer.to_string(),
            scores,
            skipped,
        };
        let subject = match prepare(engine, k, &self.data.format, self.max_new_tokens())? {
            Ok(s) => s,
            Err(reason) => {
                for s in todo {
                    let u = unit("", Vec::new(), Some(reason.clone()));
                    self.store.write(&score_unit(s, &k.key), &u)?;
                }
                return Ok(());
            }
        };
        let answer = engine.decode(subject.answer_ids())?;
        let heads: Vec<HeadScore> = PruneMethod::ALL
            .iter()
            .chain([&PruneMethod::Score(HeadScore::Patching)])
            .filter_map(|m| match m {
                PruneMethod::Score(h) if todo.iter().any(|t| t == h.key()) => Some(*h),
                _ => None,
            })
            .collect();
        let mut scores = sample_scores(engine, &subject, &heads)?;
        if todo.iter().any(|t| t == MLP_SCORE) {
            let deltas = super::importance::mlp_deltas(engine, &subject)?;
            scores.insert(MLP_SCORE.to_string(), vec![deltas]);
        }
        for s in todo {
            let matrix = scores.remove(s).ok_or_else(|| {
                Error::Pruning(format!("the `{s}` score was not computed for {}", k.key))
            })?;
            self.store
                .write(&score_unit(s, &k.key), &unit(&answer, matrix, None))?;
        }
        Ok(())
    }

    /// The score units of one score over its calibration samples (all must be done).
    fn score_units(&self, score: &str, n: usize) -> Result<Vec<ScoreUnit>> {
        self.data
            .calibration(n)
            .iter()
            .map(|k| self.store.read(&score_unit(score, &k.key)))
            .collect()
    }

    /// Every non-random method's importance, written as `importance/<method>.json`.
    pub fn importances(&self, engine: &Engine) -> Result<BTreeMap<PruneMethod, Importance>> {
        let arch = engine.arch();
        let mlp_units = match self.needed_scores().0.iter().any(|s| s == MLP_SCORE) {
            true => Some(mlp_importance(
                &self.score_units(MLP_SCORE, self.cfg.calibration)?,
            )?),
            false => None,
        };
        let mut out = BTreeMap::new();
        for &m in &self.cfg.methods {
            let (samples, heads, mlps) = match (m.source(), m) {
                (Source::Random, _) => continue,
                (Source::Weights, _) => {
                    let (h, mlp) = magnitude(engine)?;
                    (0, h, self.cfg.mlp.then_some(mlp))
                }
                (Source::Study, PruneMethod::Score(h)) => {
                    let (n, imp) = from_study(&self.cfg.study, &self.label, h)?;
                    (n, imp, mlp_units.clone())
                }
                (src, PruneMethod::Score(h)) => {
                    let n = match src {
                        Source::Exact => self.cfg.calibration_exact,
                        _ => self.cfg.calibration,
                    };
                    let units = self.score_units(h.key(), n)?;
                    let (n, imp) = mean_importance(&units, h.importance_sign())?;
                    (n, imp, mlp_units.clone())
                }
                _ => continue,
            };
            if heads.len() != arch.num_layers || heads.iter().any(|r| r.len() != arch.num_heads) {
                return Err(Error::Pruning(format!(
                    "`{m}` importance is not {} × {} (the model's layers × heads)",
                    arch.num_layers, arch.num_heads
                )));
            }
            let imp = Importance {
                method: m.key().to_string(),
                samples,
                heads,
                mlps,
            };
            self.store
                .write_text(&format!("importance/{}.json", m.key()), &pretty(&imp)?)?;
            out.insert(m, imp);
        }
        Ok(out)
    }

    /// The protected heads (`--protect-circuit`), written as `importance/circuit.json`.
    pub fn protected(&self) -> Result<BTreeSet<Head>> {
        if !self.cfg.protect_circuit {
            return Ok(BTreeSet::new());
        }
        let key = HeadScore::Patching.key();
        let units = self.score_units(key, self.cfg.calibration_exact)?;
        let (_, mean) = mean_importance(&units, HeadScore::Patching.importance_sign())?;
        let heads = circuit(&mean, self.cfg.protect_top);
        self.store
            .write_text("importance/circuit.json", &pretty(&heads)?)?;
        Ok(heads)
    }

    /// Phase 2: every pruning, written as `pruning/<condition>.json`.
    pub fn plan(&self, engine: &Engine) -> Result<Vec<Planned>> {
        let importances = self.importances(engine)?;
        let protected = self.protected()?;
        let (layers, heads) = (engine.arch().num_layers, engine.arch().num_heads);
        let mut plan = Vec::new();
        for &m in &self.cfg.methods {
            for s in self.cfg.sparsity_grid() {
                for draw in self.cfg.draws_of(m) {
                    let (h, mlp) = match importances.get(&m) {
                        Some(imp) => (imp.heads.clone(), imp.mlps.clone()),
                        None => {
                            let (h, mlp) = random_importance(self.cfg.seed, draw, layers, heads);
                            (h, self.cfg.mlp.then_some(mlp))
                        }
                    };
                    let p = pruning(&h, mlp.as_deref(), s, &protected, self.cfg.layer_adaptive)?;
                    let planned = Planned {
                        method: m,
                        sparsity: s,
                        draw,
                        pruning: p,
                    };
                    let rel = format!("pruning/{}.json", planned.name());
                    let path = self.store.path(&rel);
                    if let Some(dir) = path.parent() {
                        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
                    }
                    planned.pruning.write(&path)?;
                    plan.push(planned);
                }
            }
        }
        Ok(plan)
    }

    /// The test samples evaluated.
    pub fn eval_samples(&self) -> Vec<&Keyed> {
        self.data.evaluation(self.cfg.eval)
    }

    fn eval_done(&self, k: &Keyed) -> bool {
        match self.store.state::<CleanUnit>(&eval_unit("clean", &k.key)) {
            crate::study::units::UnitState::Done(c) if c.skipped.is_some() => true,
            crate::study::units::UnitState::Done(_) => self
                .cfg
                .methods
                .iter()
                .all(|m| self.store.done::<EvalUnit>(&eval_unit(m.key(), &k.key))),
            _ => false,
        }
    }

    /// Phase 3: every pruning on every evaluation sample.
    pub fn evaluate(
        &self,
        engine: &mut Engine,
        plan: &[Planned],
        monitor: &mut dyn Monitor,
    ) -> Result<()> {
        let samples = self.eval_samples();
        let total = samples.len();
        let mut done = samples.iter().filter(|k| self.eval_done(k)).count();
        monitor.phase(&format!("evaluate {}", self.label), done, total);
        for k in samples {
            if self.eval_done(k) {
                continue;
            }
            if monitor.cancelled() {
                return Err(Error::Cancelled);
            }
            crate::study::units::test_delay();
            self.evaluate_one(engine, plan, k, &*monitor)?;
            done += 1;
            monitor.advance(done, total);
        }
        Ok(())
    }

    fn evaluate_one(
        &self,
        engine: &mut Engine,
        plan: &[Planned],
        k: &Keyed,
        monitor: &dyn Monitor,
    ) -> Result<()> {
        let category = k.category().to_string();
        let clean_rel = eval_unit("clean", &k.key);
        let gen = GenerationConfig {
            max_new_tokens: self.max_new_tokens(),
            ..GenerationConfig::default()
        };
        let recording = |_: &crate::prompt::RagPrompt| Ok(clean_recording(AblatedPositions::All));
        let prepared = Subject::generate_recording(
            engine,
            k.sample.clone(),
            &self.data.format,
            &gen,
            recording,
            |_| true,
        );
        let (subject, recorded) = match prepared {
            Ok(s) => s,
            Err(Error::Analysis(reason)) => {
                let clean = CleanUnit::skipped(k.key.clone(), category, reason);
                return self.store.write(&clean_rel, &clean);
            }
            Err(e) => return Err(e),
        };
        if !self.store.done::<CleanUnit>(&clean_rel) {
            let answer = engine.decode(subject.answer_ids())?;
            let clean = CleanUnit {
                sample: k.key.clone(),
                category: category.clone(),
                correct: answer_is_correct(&k.sample, &answer) == Some(true),
                answer,
                answer_logprob: subject.answer.total_logprob(),
                skipped: None,
            };
            self.store.write(&clean_rel, &clean)?;
        }
        let cfg = decoding(self.max_new_tokens(), self.cfg.batch);
        for &m in &self.cfg.methods {
            let rel = eval_unit(m.key(), &k.key);
            if self.store.done::<EvalUnit>(&rel) {
                continue;
            }
            let conditions: Vec<Condition> = plan
                .iter()
                .filter(|p| p.method == m)
                .map(|p| (p.sparsity, p.draw, p.pruning.clone()))
                .collect();
            let mut keep_going = || !monitor.cancelled();
            let conditions = evaluate_sample(
                engine,
                &subject,
                &recorded,
                &conditions,
                &cfg,
                &mut keep_going,
            )?;
            let unit = EvalUnit {
                sample: k.key.clone(),
                category: category.clone(),
                method: m,
                conditions,
            };
            self.store.write(&rel, &unit)?;
        }
        Ok(())
    }

    /// Phase 4: each pruning (the first draw of random) loaded as a pruned model by `load`,
    /// against `engine` (the unpruned model), on the first evaluation sample's prompt.
    pub fn speed(
        &self,
        engine: &Engine,
        plan: &[Planned],
        settings: SpeedSettings,
        load: &dyn Fn(&Pruning) -> Result<Engine>,
        monitor: &mut dyn Monitor,
    ) -> Result<()> {
        let todo: Vec<&Planned> = plan.iter().filter(|p| p.draw == 0).collect();
        let total = todo.len();
        let rel = |p: &Planned| format!("speed/{}.json", p.name());
        let mut done = todo
            .iter()
            .filter(|p| self.store.done::<SpeedUnit>(&rel(p)))
            .count();
        monitor.phase(&format!("speed {}", self.label), done, total);
        if done == total {
            return Ok(());
        }
        let first = self
            .eval_samples()
            .into_iter()
            .next()
            .ok_or_else(|| Error::Pruning("no evaluation sample to time".into()))?;
        let prompt = crate::prompt::RagPrompt::build(
            &first.sample,
            &self.data.format,
            engine.template(),
            engine.tokenizer(),
        )?;
        for p in todo {
            if self.store.done::<SpeedUnit>(&rel(p)) {
                continue;
            }
            if monitor.cancelled() {
                return Err(Error::Cancelled);
            }
            let pruned = load(&p.pruning)?;
            let mut timed = measure_interleaved(
                &[engine, &pruned],
                &prompt.ids,
                settings.decode_steps.max(1),
                settings.repeats.max(1),
            )?;
            let (pruned_t, unpruned) = (timed.remove(1), timed.remove(0));
            let info = engine.info();
            let unit = SpeedUnit {
                condition: p.name(),
                prompt_tokens: prompt.ids.len(),
                settings,
                device: format!("{} {}", info.device, info.dtype),
                prefill_speedup: pruned_t.prefill_tokens_per_s / unpruned.prefill_tokens_per_s,
                decode_speedup: pruned_t.decode_tokens_per_s / unpruned.decode_tokens_per_s,
                unpruned,
                pruned: pruned_t,
            };
            self.store.write(&rel(p), &unit)?;
            done += 1;
            monitor.advance(done, total);
        }
        Ok(())
    }
}
