//! The study's phases over its folder: split, detect, ablate (per model), and the record of what
//! ran (`config.toml`). Every unit is written atomically by [`UnitStore`] and skipped when it
//! exists, so a run killed at any moment resumes where it stopped and ends with the same files.

use std::collections::BTreeMap;
use std::path::Path;

use super::ablate::{ablate_sample, clean_recording, AblateUnit, AblationPlan, CleanUnit};
use super::config::{
    model_label, sample_key, validate_samples, ConfigRecord, ModelRecord, Provenance, StudyConfig,
};
use super::detect::{
    answer_needle, detect_with, detection_recording, DetectMethod, DetectUnit, HeadStats, RowSource,
};
use super::shard::{assign, Shard, ShardsRecord, SHARDS_FILE};
use super::split::{stratified, Split};
use super::units::{pretty, sha256_file, sha256_hex, UnitState, UnitStore};
use crate::analysis::{answer_is_correct, Subject};
use crate::dataset::write_jsonl;
use crate::engine::generate::{GenerationConfig, Recorded};
use crate::engine::{Engine, Recording};
use crate::prompt::{load_samples, Document, PromptFormat, RagPrompt, Sample};
use crate::{Error, Result};

/// `detect/<model>/samples/<sample>.json`: one training sample's detection.
pub fn detect_unit(label: &str, key: &str) -> String {
    format!("detect/{label}/samples/{key}.json")
}

/// `ablate/<model>/clean/<sample>.json`: one test sample's unablated answer.
pub fn clean_unit(label: &str, key: &str) -> String {
    format!("ablate/{label}/clean/{key}.json")
}

/// `ablate/<model>/<method>/<sample>.json`: one test sample under one method's conditions.
pub fn ablate_unit(label: &str, method: DetectMethod, key: &str) -> String {
    format!("ablate/{label}/{}/{key}.json", method.key())
}

/// What a phase tells the one running it, and how it asks whether to stop.
pub trait Monitor {
    /// A phase (`detect <model>`, ...) with `total` units, `done` of them already on disk.
    fn phase(&mut self, name: &str, done: usize, total: usize);
    /// One more unit is done.
    fn advance(&mut self, done: usize, total: usize);
    /// Polled between units and forwards: `true` stops the run cleanly (Ctrl-C).
    fn cancelled(&self) -> bool;
    /// Something the one running should know (a corrupt unit found and recomputed).
    fn warn(&mut self, message: &str);
}

/// The phases that run models. Each is sharded on its own: ablation needs the plan, which needs
/// every training sample's detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    Detect,
    Ablate,
}

impl Phase {
    pub const ALL: [Phase; 2] = [Phase::Detect, Phase::Ablate];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Detect => "detect",
            Phase::Ablate => "ablate",
        }
    }
}

/// One unit of sharded work: a model's detection on one training sample (every method from one
/// forward), or its ablation of one test sample (the clean answer, then every method's
/// conditions, which share the clean prompt's pass).
pub struct WorkUnit<'a> {
    pub phase: Phase,
    pub model: String,
    pub sample: Chosen<'a>,
    /// The shard that computes it.
    pub shard: usize,
}

/// How far one phase of one model is, in one shard (or all of them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub model: String,
    pub shard: usize,
    pub done: usize,
    pub total: usize,
    /// `path: reason` of each unit file found corrupt (counted as not done).
    pub corrupt: Vec<String>,
}

/// A unit's files as found on disk.
enum WorkState {
    Done,
    Missing,
    Corrupt(Vec<String>),
}

/// A study over its folder: the configuration, the samples and their split.
pub struct Study {
    pub cfg: StudyConfig,
    /// How every sample is prompted (style, instruction, template).
    pub format: PromptFormat,
    pub store: UnitStore,
    samples: Vec<Sample>,
    split: Split,
    /// This process's part; [`Shard::WHOLE`] unless run as a shard of a prepared folder.
    shard: Shard,
}

/// A sample of one side of the split, with its file key.
pub struct Chosen<'a> {
    pub key: String,
    pub sample: &'a Sample,
}

impl Study {
    /// Checks the configuration and the data (before any model runs) and writes the split.
    pub fn open(cfg: StudyConfig, dir: &Path) -> Result<Study> {
        let study = Study::load(cfg, dir, Shard::WHOLE)?;
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        study.check_config()?;
        study.write_split()?;
        Ok(study)
    }

    /// Opens one shard of a folder that `study prepare` set up: the configuration must be the
    /// recorded one and the shard count the prepared one. A shard writes only its own units (and
    /// shard 0 the shared plan and statistics), never `config.toml` or the split, so shards can
    /// start together on a shared filesystem.
    pub fn open_shard(cfg: StudyConfig, dir: &Path, shard: Shard) -> Result<Study> {
        if shard.is_whole() {
            return Study::open(cfg, dir);
        }
        let study = Study::load(cfg, dir, shard)?;
        let prepared = Study::prepared_shards(dir)?;
        if prepared != Some(shard.count) {
            return Err(Error::Study(match prepared {
                None => format!(
                    "{} is not prepared for shards: run `headscope study prepare --out {} \
                     --shard-count {}` (with the same configuration) once before the shards",
                    dir.display(),
                    dir.display(),
                    shard.count
                ),
                Some(n) => format!(
                    "{} was prepared for {n} shards, not {}: every shard must use the same \
                     count (prepare again to change it)",
                    dir.display(),
                    shard.count
                ),
            }));
        }
        let recorded = study.read_record()?;
        if !same_design(&recorded.study, &study.cfg) {
            return Err(Error::Study(format!(
                "{} was prepared with another configuration; give the shards the prepared one",
                dir.display()
            )));
        }
        Ok(study)
    }

    fn load(cfg: StudyConfig, dir: &Path, shard: Shard) -> Result<Study> {
        cfg.validate()?;
        let samples = load_samples(&cfg.data)?;
        validate_samples(&samples)?;
        let split = stratified(&samples, cfg.test_fraction, cfg.seed)?;
        let format = cfg.format()?;
        Ok(Study {
            format,
            cfg,
            store: UnitStore::new(dir),
            samples,
            split,
            shard,
        })
    }

    /// Opens a folder to look at it (`study status`, the explorer): nothing is written; a
    /// recorded configuration must be this one.
    pub fn inspect(cfg: StudyConfig, dir: &Path) -> Result<Study> {
        let study = Study::load(cfg, dir, Shard::WHOLE)?;
        if let Ok(recorded) = study.read_record() {
            if !same_design(&recorded.study, &study.cfg) {
                return Err(Error::Study(format!(
                    "{} holds a study run with another configuration",
                    dir.display()
                )));
            }
        }
        Ok(study)
    }

    /// The shard count a folder was prepared for (`shards.toml`), if any.
    pub fn prepared_shards(dir: &Path) -> Result<Option<usize>> {
        let path = dir.join(SHARDS_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let record: ShardsRecord =
            toml::from_str(&text).map_err(|e| Error::Study(format!("{}: {e}", path.display())))?;
        Ok(Some(record.count))
    }

    /// Records the shard count for `study prepare --shard-count N`.
    pub fn write_shards(&self, count: usize) -> Result<()> {
        Shard::new(0, count)?;
        let text = toml::to_string(&ShardsRecord { count })
            .map_err(|e| Error::Study(format!("cannot write {SHARDS_FILE}: {e}")))?;
        self.store.write_text(SHARDS_FILE, &text)
    }

    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// `split/train.jsonl` and `split/test.jsonl`: the same bytes on every run of the same data,
    /// seed and fraction.
    fn write_split(&self) -> Result<()> {
        let dir = self.store.path("split");
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        for (name, side) in [("train", &self.split.train), ("test", &self.split.test)] {
            let samples: Vec<Sample> = side.iter().map(|&i| self.samples[i].clone()).collect();
            write_jsonl(&dir.join(format!("{name}.jsonl")), &samples)?;
        }
        Ok(())
    }

    /// One side of the split, at most `limit` per category (0: all), in dataset order.
    fn side(&self, indices: &[usize], limit: usize) -> Vec<Chosen<'_>> {
        let mut taken: BTreeMap<&str, usize> = BTreeMap::new();
        indices
            .iter()
            .filter(|&&i| {
                let n = taken
                    .entry(self.samples[i].category().unwrap_or(""))
                    .or_default();
                *n += 1;
                limit == 0 || *n <= limit
            })
            .map(|&i| Chosen {
                key: sample_key(&self.samples[i], i),
                sample: &self.samples[i],
            })
            .collect()
    }

    pub fn train(&self) -> Vec<Chosen<'_>> {
        self.side(&self.split.train, self.cfg.train_per_category)
    }

    pub fn test(&self) -> Vec<Chosen<'_>> {
        self.side(&self.split.test, self.cfg.test_per_category)
    }

    /// Every category, sorted.
    pub fn categories(&self) -> Vec<String> {
        let mut c: Vec<String> = self
            .samples
            .iter()
            .filter_map(|s| s.category().map(str::to_string))
            .collect();
        c.sort();
        c.dedup();
        c
    }

    fn generation(&self) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.cfg.max_new_tokens,
            ..GenerationConfig::default()
        }
    }

    /// The sample's prompt and greedy answer, keeping what `recording` asks for from the
    /// generation ([`Subject::generate_recording`]); `Err(reason)` for a sample the model cannot
    /// answer at all (an empty answer), which is recorded and left out of the statistics.
    fn prepare_recording(
        &self,
        engine: &Engine,
        sample: &Sample,
        recording: impl FnOnce(&RagPrompt) -> Result<Recording>,
    ) -> Result<std::result::Result<(Subject, Recorded), String>> {
        match Subject::generate_recording(
            engine,
            sample.clone(),
            &self.format,
            &self.generation(),
            recording,
            |_| true,
        ) {
            Ok(s) => Ok(Ok(s)),
            Err(Error::Analysis(reason)) => Ok(Err(reason)),
            Err(e) => Err(e),
        }
    }

    /// `config.toml` holds the resolved configuration and, as each model is loaded, its record.
    /// A folder holding another configuration is refused (its results would mix with these).
    fn check_config(&self) -> Result<()> {
        let record = match self.read_record() {
            Ok(old) => {
                // Models may be added or left out (each model's units and record stand alone);
                // any other difference would mix results of two designs.
                if !same_design(&old.study, &self.cfg) {
                    return Err(Error::Study(format!(
                        "{} holds a study run with another configuration; use a new --out \
                         folder (or delete it to start over)",
                        self.store.root().display()
                    )));
                }
                if old.study.models == self.cfg.models {
                    return Ok(());
                }
                ConfigRecord {
                    study: self.cfg.clone(),
                    ..old
                }
            }
            Err(_) if !self.store.path("config.toml").exists() => ConfigRecord {
                study: self.cfg.clone(),
                provenance: Provenance {
                    headscope_version: env!("CARGO_PKG_VERSION").to_string(),
                    prompt_template: self.format.template.as_ref().map(|t| t.source.clone()),
                    models: Vec::new(),
                },
            },
            Err(e) => return Err(e),
        };
        self.write_record(&record)
    }

    fn write_record(&self, record: &ConfigRecord) -> Result<()> {
        let text = toml::to_string(record)
            .map_err(|e| Error::Study(format!("cannot write config.toml: {e}")))?;
        self.store.write_text("config.toml", &text)
    }

    /// Adds a loaded model's record to `config.toml`, or checks it against the one there: other
    /// weights, tokenizer or prompt under the same label are refused.
    pub fn record_model(&self, label: &str, engine: &Engine) -> Result<()> {
        let arch = engine.arch();
        self.cfg
            .validate_for_heads(label, arch.num_layers * arch.num_heads)?;
        let rec = self.model_record(label, engine)?;
        let mut record = self.read_record()?;
        match record.provenance.models.iter().find(|m| m.label == label) {
            Some(old) if *old != rec => Err(Error::Study(format!(
                "{label} is not the model this study ran with (its weights, tokenizer or prompt \
                 differ from config.toml); use a new --out folder"
            ))),
            Some(_) => Ok(()),
            // Shards never write config.toml: `study prepare` records every model first.
            None if !self.shard.is_whole() => Err(Error::Study(format!(
                "config.toml has no record of {label}: run `headscope study prepare` with this \
                 model before the shards"
            ))),
            None => {
                record.provenance.models.push(rec);
                let order = self.model_labels();
                record
                    .provenance
                    .models
                    .sort_by_key(|m| order.iter().position(|l| *l == m.label));
                self.write_record(&record)
            }
        }
    }

    /// `config.toml` as written.
    pub fn read_record(&self) -> Result<ConfigRecord> {
        let path = self.store.path("config.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        toml::from_str(&text).map_err(|e| Error::Study(format!("{}: {e}", path.display())))
    }

    fn model_record(&self, label: &str, engine: &Engine) -> Result<ModelRecord> {
        let info = engine.info();
        let sha256 = if info.path.is_file() {
            sha256_file(&info.path)?
        } else {
            folder_digest(&info.path)?
        };
        let tokenizer_json = engine
            .tokenizer()
            .to_string(false)
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        let placeholder = Sample {
            question: "{question}".into(),
            docs: (1..=2)
                .map(|i| Document {
                    title: format!("{{title {i}}}"),
                    text: format!("{{document {i}}}"),
                    extra: Default::default(),
                })
                .collect(),
            output: None,
            extra: Default::default(),
        };
        let rendered = RagPrompt::build(
            &placeholder,
            &self.format,
            engine.template(),
            engine.tokenizer(),
        )?;
        Ok(ModelRecord {
            label: label.to_string(),
            path: info.path.display().to_string(),
            sha256,
            tokenizer_sha256: sha256_hex(tokenizer_json.as_bytes()),
            vocab_size: info.vocab_size,
            arch: info.arch.clone(),
            layers: info.layers,
            heads: info.heads,
            chat_template: engine.template().source().to_string(),
            rendered_prompt: rendered.text,
        })
    }

    /// Detection on the training samples of this process's shard:
    /// `detect/<model>/samples/<sample>.json`; then, once every shard's detection is on disk,
    /// the per-method statistics `detect/<model>/<method>/<category>.json` (shard 0 writes them).
    pub fn detect(&self, label: &str, engine: &Engine, monitor: &mut dyn Monitor) -> Result<()> {
        let mine = self.own_units(Phase::Detect, label);
        self.run_units(Phase::Detect, label, &mine, monitor, |c, _| {
            let unit = self.detect_one(engine, c)?;
            self.store.write(&detect_unit(label, &c.key), &unit)
        })?;
        self.write_shared(label, Phase::Detect)
    }

    /// Runs `compute` on every unit of `mine` that is not done, in order, with progress and
    /// cancellation; a corrupt unit is reported and computed again.
    fn run_units(
        &self,
        phase: Phase,
        label: &str,
        mine: &[WorkUnit],
        monitor: &mut dyn Monitor,
        mut compute: impl FnMut(&Chosen, &dyn Monitor) -> Result<()>,
    ) -> Result<()> {
        let states: Vec<WorkState> = mine.iter().map(|u| self.work_state(u)).collect();
        let total = mine.len();
        let mut count = states
            .iter()
            .filter(|s| matches!(s, WorkState::Done))
            .count();
        let name = match self.shard.is_whole() {
            true => format!("{} {label}", phase.name()),
            false => format!("{} {label} ({})", phase.name(), self.shard),
        };
        monitor.phase(&name, count, total);
        for (unit, state) in mine.iter().zip(states) {
            match state {
                WorkState::Done => continue,
                WorkState::Corrupt(files) => {
                    for f in files {
                        monitor.warn(&format!("corrupt unit, computing it again: {f}"));
                    }
                }
                WorkState::Missing => {}
            }
            if monitor.cancelled() {
                return Err(Error::Cancelled);
            }
            super::units::test_delay();
            compute(&unit.sample, &*monitor)?;
            count += 1;
            monitor.advance(count, total);
        }
        Ok(())
    }

    fn detect_one(&self, engine: &Engine, c: &Chosen) -> Result<DetectUnit> {
        let category = c.sample.category().unwrap_or("").to_string();
        let gold = c.sample.gold().unwrap_or(0);
        let methods = &self.cfg.methods;
        let recording = |p: &RagPrompt| detection_recording(p, methods);
        let (subject, recorded) = match self.prepare_recording(engine, c.sample, recording)? {
            Ok(s) => s,
            Err(reason) => {
                return Ok(DetectUnit {
                    sample: c.key.clone(),
                    category,
                    answer: String::new(),
                    correct: false,
                    needle: 0..0,
                    scores: BTreeMap::new(),
                    skipped: Some(reason),
                })
            }
        };
        let answer = engine.decode(subject.answer_ids())?;
        let needle = answer_needle(&subject, gold);
        let rows = RowSource::Recorded(&recorded);
        let scores = detect_with(engine, &subject, gold, &needle, methods, rows)?;
        Ok(DetectUnit {
            sample: c.key.clone(),
            category,
            correct: answer_is_correct(c.sample, &answer) == Some(true),
            answer,
            needle,
            scores,
            skipped: None,
        })
    }

    /// The training samples whose detection by `label` is not done (missing or corrupt), in any
    /// shard.
    fn missing_detection(&self, label: &str) -> Vec<Chosen<'_>> {
        let mut train = self.train();
        train.retain(|c| !self.store.done::<DetectUnit>(&detect_unit(label, &c.key)));
        train
    }

    /// The detection units of a model's training samples; an error names the missing ones.
    pub fn detect_units(&self, label: &str) -> Result<Vec<DetectUnit>> {
        let missing = self.missing_detection(label);
        if let Some(first) = missing.first() {
            return Err(Error::Study(format!(
                "detection of {label} is not complete: {} of {} training samples missing \
                 (first: {}); run `headscope study detect`{}",
                missing.len(),
                self.train().len(),
                first.key,
                self.missing_shards_hint(Phase::Detect, label)
            )));
        }
        self.train()
            .iter()
            .map(|c| self.store.read(&detect_unit(label, &c.key)))
            .collect()
    }

    /// Per method × category, every head's mean, sd and n over the training samples.
    pub fn head_stats(&self, label: &str, layers: usize, heads: usize) -> Result<Vec<HeadStats>> {
        let units = self.detect_units(label)?;
        let used: Vec<&DetectUnit> = units.iter().filter(|u| u.skipped.is_none()).collect();
        let mut out = Vec::new();
        for &m in &self.cfg.methods {
            for cat in self.categories() {
                out.push(HeadStats::over(m, &cat, &used, (layers, heads))?);
            }
        }
        Ok(out)
    }

    /// The model's layers and heads, from its record in `config.toml`.
    fn shape(&self, label: &str) -> Result<(usize, usize)> {
        let record = self.read_record()?;
        let rec = record
            .provenance
            .models
            .iter()
            .find(|m| m.label == label)
            .ok_or_else(|| Error::Study(format!("config.toml has no record of model {label}")))?;
        Ok((rec.layers, rec.heads))
    }

    /// `detect/<model>/<method>/<category>.json` from every training sample's detection.
    pub fn write_head_stats(&self, label: &str) -> Result<()> {
        let (layers, heads) = self.shape(label)?;
        for stats in self.head_stats(label, layers, heads)? {
            let rel = format!(
                "detect/{label}/{}/{}.json",
                stats.method.key(),
                stats.category
            );
            self.store.write_text(&rel, &pretty(&stats)?)?;
        }
        Ok(())
    }

    /// The ablation plan of a model, built from its detection. Shard 0 (and an unsharded run)
    /// keeps it in `ablate/<model>/plan.json`, with the detection statistics; a later run whose
    /// detection gives another plan is refused.
    pub fn plan(&self, label: &str) -> Result<AblationPlan> {
        let (layers, heads) = self.shape(label)?;
        let stats = self.head_stats(label, layers, heads)?;
        let plan = AblationPlan::build(&self.cfg, &stats, (layers, heads))?;
        let rel = format!("ablate/{label}/plan.json");
        if self.store.exists(&rel) {
            let old: AblationPlan = self.store.read(&rel)?;
            if old != plan {
                return Err(Error::Study(format!(
                    "{} was made from other detection results; delete ablate/{label} to \
                     ablate again",
                    self.store.path(&rel).display()
                )));
            }
        } else if self.shard.writes_shared_files() {
            self.write_head_stats(label)?;
            self.store.write_text(&rel, &pretty(&plan)?)?;
        }
        Ok(plan)
    }

    /// Ablation on the test samples of this process's shard: `ablate/<model>/clean/<sample>.json`
    /// and `ablate/<model>/<method>/<sample>.json`.
    pub fn ablate(&self, label: &str, engine: &Engine, monitor: &mut dyn Monitor) -> Result<()> {
        let plan = self.plan(label)?;
        let mine = self.own_units(Phase::Ablate, label);
        self.run_units(Phase::Ablate, label, &mine, monitor, |c, monitor| {
            self.ablate_one(label, engine, &plan, c, monitor)
        })
    }

    /// One test sample: its clean answer, then each method's conditions not yet done.
    fn ablate_one(
        &self,
        label: &str,
        engine: &Engine,
        plan: &AblationPlan,
        c: &Chosen,
        monitor: &dyn Monitor,
    ) -> Result<()> {
        let clean_rel = clean_unit(label, &c.key);
        let category = c.sample.category().unwrap_or("").to_string();
        let recording = |_: &RagPrompt| Ok(clean_recording(self.cfg.positions));
        let (subject, recorded) = match self.prepare_recording(engine, c.sample, recording)? {
            Ok(s) => s,
            Err(reason) => {
                // A sample the model cannot answer has no method units: the clean one says why.
                let clean = CleanUnit::skipped(c.key.clone(), category, reason);
                return self.store.write(&clean_rel, &clean);
            }
        };
        if !self.store.done::<CleanUnit>(&clean_rel) {
            let answer = engine.decode(subject.answer_ids())?;
            let clean = CleanUnit {
                sample: c.key.clone(),
                category: category.clone(),
                correct: answer_is_correct(c.sample, &answer) == Some(true),
                answer,
                answer_logprob: subject.answer.total_logprob(),
                skipped: None,
            };
            self.store.write(&clean_rel, &clean)?;
        }
        for &m in &self.cfg.methods {
            let rel = ablate_unit(label, m, &c.key);
            if self.store.done::<AblateUnit>(&rel) {
                continue;
            }
            let cell = plan.cell(m, &category).ok_or_else(|| {
                Error::Study(format!("the plan has no cell for {m} × {category}"))
            })?;
            let mut keep_going = || !monitor.cancelled();
            let conditions = ablate_sample(
                engine,
                &subject,
                Some(&recorded),
                cell,
                &self.cfg,
                &mut keep_going,
            )?;
            let unit = AblateUnit {
                sample: c.key.clone(),
                category: category.clone(),
                method: m,
                positions: self.cfg.positions,
                mode: self.cfg.ablation,
                conditions,
            };
            self.store.write(&rel, &unit)?;
        }
        Ok(())
    }

    /// What a phase leaves behind for every shard, written by shard 0 without a model: after
    /// detection (once every shard's is done) the statistics, before ablation the plan.
    pub fn write_shared(&self, label: &str, phase: Phase) -> Result<()> {
        match phase {
            Phase::Detect if !self.shard.writes_shared_files() => Ok(()),
            Phase::Detect if !self.missing_detection(label).is_empty() => Ok(()),
            Phase::Detect => self.write_head_stats(label),
            Phase::Ablate => self.plan(label).map(|_| ()),
        }
    }

    /// Labels of the configured models.
    pub fn model_labels(&self) -> Vec<String> {
        self.cfg.models.iter().map(|m| model_label(m)).collect()
    }

    /// Every unit of a phase for every model, in a fixed order, each with the shard that computes
    /// it. Units are dealt by cost (the prompt's characters × the model's layers × heads, from
    /// `config.toml`), so shards of a phase finish together.
    pub fn work(&self, phase: Phase) -> Vec<WorkUnit<'_>> {
        let shapes: BTreeMap<String, usize> = self
            .read_record()
            .map(|r| {
                r.provenance
                    .models
                    .iter()
                    .map(|m| (m.label.clone(), m.layers * m.heads))
                    .collect()
            })
            .unwrap_or_default();
        let mut units = Vec::new();
        for label in self.model_labels() {
            let samples = match phase {
                Phase::Detect => self.train(),
                Phase::Ablate => self.test(),
            };
            units.extend(samples.into_iter().map(|sample| WorkUnit {
                phase,
                model: label.clone(),
                sample,
                shard: 0,
            }));
        }
        let costs: Vec<u64> = units
            .iter()
            .map(|u| {
                let chars = u.sample.sample.question.len()
                    + u.sample
                        .sample
                        .docs
                        .iter()
                        .map(|d| d.text.len() + d.title.len())
                        .sum::<usize>();
                (chars as u64) * (*shapes.get(&u.model).unwrap_or(&1) as u64)
            })
            .collect();
        // An unsharded process still reports a prepared folder's units by shard.
        let count = match self.shard.is_whole() {
            true => self.shard_count_on_disk().unwrap_or(1),
            false => self.shard.count,
        };
        for (u, s) in units.iter_mut().zip(assign(&costs, count)) {
            u.shard = s;
        }
        units
    }

    /// This shard's units of a phase and model (all of them in an unsharded run).
    fn own_units(&self, phase: Phase, label: &str) -> Vec<WorkUnit<'_>> {
        let mut units = self.work(phase);
        let whole = self.shard.is_whole();
        units.retain(|u| u.model == label && (whole || u.shard == self.shard.index));
        units
    }

    /// Whether this shard has units of `label` left in `phase` (a shard with none needs no model).
    pub fn pending(&self, phase: Phase, label: &str) -> usize {
        self.own_units(phase, label)
            .iter()
            .filter(|u| !matches!(self.work_state(u), WorkState::Done))
            .count()
    }

    fn work_state(&self, unit: &WorkUnit) -> WorkState {
        let key = &unit.sample.key;
        let mut corrupt = Vec::new();
        let mut note = |rel: &str, why: String| {
            corrupt.push(format!("{}: {why}", self.store.path(rel).display()))
        };
        let mut missing = false;
        match unit.phase {
            Phase::Detect => {
                let rel = detect_unit(&unit.model, key);
                match self.store.state::<DetectUnit>(&rel) {
                    UnitState::Done(_) => {}
                    UnitState::Missing => missing = true,
                    UnitState::Corrupt(why) => note(&rel, why),
                }
            }
            Phase::Ablate => {
                let rel = clean_unit(&unit.model, key);
                match self.store.state::<CleanUnit>(&rel) {
                    UnitState::Done(clean) if clean.skipped.is_some() => return WorkState::Done,
                    UnitState::Done(_) => {}
                    UnitState::Missing => missing = true,
                    UnitState::Corrupt(why) => note(&rel, why),
                }
                for &m in &self.cfg.methods {
                    let rel = ablate_unit(&unit.model, m, key);
                    match self.store.state::<AblateUnit>(&rel) {
                        UnitState::Done(_) => {}
                        UnitState::Missing => missing = true,
                        UnitState::Corrupt(why) => note(&rel, why),
                    }
                }
            }
        }
        match (corrupt.is_empty(), missing) {
            (false, _) => WorkState::Corrupt(corrupt),
            (true, true) => WorkState::Missing,
            (true, false) => WorkState::Done,
        }
    }

    /// Progress per phase, model and shard (one shard when the folder is not sharded).
    pub fn progress(&self) -> Vec<Progress> {
        let mut out: BTreeMap<(Phase, usize, usize), Progress> = BTreeMap::new();
        let labels = self.model_labels();
        for phase in Phase::ALL {
            for unit in self.work(phase) {
                let model_ix = labels.iter().position(|l| *l == unit.model).unwrap_or(0);
                let p = out
                    .entry((phase, model_ix, unit.shard))
                    .or_insert_with(|| Progress {
                        phase,
                        model: unit.model.clone(),
                        shard: unit.shard,
                        done: 0,
                        total: 0,
                        corrupt: Vec::new(),
                    });
                p.total += 1;
                match self.work_state(&unit) {
                    WorkState::Done => p.done += 1,
                    WorkState::Missing => {}
                    WorkState::Corrupt(files) => p.corrupt.extend(files),
                }
            }
        }
        out.into_values().collect()
    }

    /// Units not done per phase and model, over all shards: `(phase, model, missing, total)`.
    pub fn missing(&self) -> Vec<(String, String, usize, usize)> {
        let mut out: Vec<(String, String, usize, usize)> = Vec::new();
        for p in self.progress() {
            match out.last_mut() {
                Some(last) if last.0 == p.phase.name() && last.1 == p.model => {
                    last.2 += p.total - p.done;
                    last.3 += p.total;
                }
                _ => out.push((p.phase.name().into(), p.model, p.total - p.done, p.total)),
            }
        }
        out
    }

    /// Refuses a report while any unit is missing or corrupt, saying which phase, model and
    /// shard, and naming every corrupt file.
    pub fn check_complete(&self) -> Result<()> {
        let progress = self.progress();
        let mut lines = Vec::new();
        for (phase, model, miss, total) in self.missing() {
            if miss == 0 {
                continue;
            }
            let shards: Vec<String> = progress
                .iter()
                .filter(|p| p.phase.name() == phase && p.model == model && p.done < p.total)
                .map(|p| format!("{} ({} of {})", p.shard, p.total - p.done, p.total))
                .collect();
            let by_shard = match self.shard_count_on_disk() {
                Some(n) if n > 1 => format!(", in shards {}", shards.join(", ")),
                _ => String::new(),
            };
            lines.push(format!(
                "{phase} {model}: {miss} of {total} units not done{by_shard}"
            ));
        }
        for p in &progress {
            for f in &p.corrupt {
                lines.push(format!(
                    "corrupt (never merged; rerun its shard to recompute): {f}"
                ));
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        Err(Error::Study(format!(
            "units are missing, so there is no report yet:\n  {}",
            lines.join("\n  ")
        )))
    }

    /// The shard count recorded in the folder, if it was prepared for shards.
    fn shard_count_on_disk(&self) -> Option<usize> {
        Study::prepared_shards(self.store.root()).ok().flatten()
    }

    /// ` (shards 1, 3 of 4)` when a sharded folder's phase is incomplete in some shards.
    fn missing_shards_hint(&self, phase: Phase, label: &str) -> String {
        if self.shard_count_on_disk().unwrap_or(1) <= 1 {
            return String::new();
        }
        let shards: Vec<String> = self
            .progress()
            .into_iter()
            .filter(|p| p.phase == phase && p.model == label && p.done < p.total)
            .map(|p| p.shard.to_string())
            .collect();
        format!(
            " (not done in shards {} of {})",
            shards.join(", "),
            self.shard_count_on_disk().unwrap_or(1)
        )
    }
}

/// Whether two configurations describe the same study: the models may differ (each model's units
/// and record stand alone); any other difference would mix results of two designs.
fn same_design(recorded: &StudyConfig, cfg: &StudyConfig) -> bool {
    StudyConfig {
        models: cfg.models.clone(),
        ..recorded.clone()
    } == *cfg
}

/// sha256 over a model folder's files (names and contents, in name order).
fn folder_digest(dir: &Path) -> Result<String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut all = String::new();
    for n in names {
        all.push_str(&format!("{n} {}\n", sha256_file(&dir.join(&n))?));
    }
    Ok(sha256_hex(all.as_bytes()))
}
