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
use super::split::{stratified, Split};
use super::units::{pretty, sha256_file, sha256_hex, UnitStore};
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
}

/// A study over its folder: the configuration, the samples and their split.
pub struct Study {
    pub cfg: StudyConfig,
    /// How every sample is prompted (style, instruction, template).
    pub format: PromptFormat,
    pub store: UnitStore,
    samples: Vec<Sample>,
    split: Split,
}

/// A sample of one side of the split, with its file key.
pub struct Chosen<'a> {
    pub key: String,
    pub sample: &'a Sample,
}

impl Study {
    /// Checks the configuration and the data (before any model runs) and writes the split.
    pub fn open(cfg: StudyConfig, dir: &Path) -> Result<Study> {
        cfg.validate()?;
        let samples = load_samples(&cfg.data)?;
        validate_samples(&samples)?;
        let split = stratified(&samples, cfg.test_fraction, cfg.seed)?;
        let format = cfg.format()?;
        let study = Study {
            format,
            cfg,
            store: UnitStore::new(dir),
            samples,
            split,
        };
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        study.check_config()?;
        study.write_split()?;
        Ok(study)
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
                let same_design = StudyConfig {
                    models: self.cfg.models.clone(),
                    ..old.study.clone()
                } == self.cfg;
                if !same_design {
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

    /// Detection on the training samples: `detect/<model>/<sample>.json`, then the per-method
    /// statistics `detect/<model>/<method>.json`.
    pub fn detect(&self, label: &str, engine: &Engine, monitor: &mut dyn Monitor) -> Result<()> {
        let train = self.train();
        let rel = |c: &Chosen| detect_unit(label, &c.key);
        let done = train.iter().filter(|c| self.store.exists(&rel(c))).count();
        monitor.phase(&format!("detect {label}"), done, train.len());
        let mut count = done;
        for c in &train {
            if self.store.exists(&rel(c)) {
                continue;
            }
            if monitor.cancelled() {
                return Err(Error::Cancelled);
            }
            let unit = self.detect_one(engine, c)?;
            self.store.write(&rel(c), &unit)?;
            count += 1;
            monitor.advance(count, train.len());
        }
        for stats in self.head_stats(label, engine.arch().num_layers, engine.arch().num_heads)? {
            let rel = format!(
                "detect/{label}/{}/{}.json",
                stats.method.key(),
                stats.category
            );
            self.store.write_text(&rel, &pretty(&stats)?)?;
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

    /// The training samples whose detection by `label` is not on disk yet.
    fn missing_detection(&self, label: &str) -> Vec<Chosen<'_>> {
        let mut train = self.train();
        train.retain(|c| !self.store.exists(&detect_unit(label, &c.key)));
        train
    }

    /// The detection units of a model's training samples; an error names the missing ones.
    pub fn detect_units(&self, label: &str) -> Result<Vec<DetectUnit>> {
        let missing = self.missing_detection(label);
        if let Some(first) = missing.first() {
            return Err(Error::Study(format!(
                "detection of {label} is not complete: {} of {} training samples missing \
                 (first: {}); run `headscope study detect`",
                missing.len(),
                self.train().len(),
                first.key
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

    /// The ablation plan of a model: built from detection on the first ablation run and kept in
    /// `ablate/<model>/plan.json`; a later run whose detection gives another plan is refused.
    pub fn plan(&self, label: &str, layers: usize, heads: usize) -> Result<AblationPlan> {
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
        } else {
            self.store.write_text(&rel, &pretty(&plan)?)?;
        }
        Ok(plan)
    }

    /// Ablation on the test samples: `ablate/<model>/clean/<sample>.json` and
    /// `ablate/<model>/<method>/<sample>.json`.
    pub fn ablate(&self, label: &str, engine: &Engine, monitor: &mut dyn Monitor) -> Result<()> {
        let arch = engine.arch();
        let plan = self.plan(label, arch.num_layers, arch.num_heads)?;
        let test = self.test();
        let units_of = |c: &Chosen| -> Vec<String> {
            std::iter::once(clean_unit(label, &c.key))
                .chain(
                    self.cfg
                        .methods
                        .iter()
                        .map(|&m| ablate_unit(label, m, &c.key)),
                )
                .collect()
        };
        let total = test.len() * (1 + self.cfg.methods.len());
        let mut count = test
            .iter()
            .flat_map(&units_of)
            .filter(|r| self.store.exists(r))
            .count();
        monitor.phase(&format!("ablate {label}"), count, total);
        for c in &test {
            let rels = units_of(c);
            if rels.iter().all(|r| self.store.exists(r)) {
                continue;
            }
            if monitor.cancelled() {
                return Err(Error::Cancelled);
            }
            let category = c.sample.category().unwrap_or("").to_string();
            let recording = |_: &RagPrompt| Ok(clean_recording(self.cfg.positions));
            let (subject, recorded) = match self.prepare_recording(engine, c.sample, recording)? {
                Ok(s) => s,
                Err(reason) => {
                    let clean = CleanUnit {
                        sample: c.key.clone(),
                        category,
                        answer: String::new(),
                        correct: false,
                        answer_logprob: 0.0,
                        skipped: Some(reason),
                    };
                    // A skipped sample has no method units: they count as done.
                    count += rels.iter().filter(|r| !self.store.exists(r)).count();
                    if !self.store.exists(&rels[0]) {
                        self.store.write(&rels[0], &clean)?;
                    }
                    monitor.advance(count, total);
                    continue;
                }
            };
            if !self.store.exists(&rels[0]) {
                let answer = engine.decode(subject.answer_ids())?;
                let clean = CleanUnit {
                    sample: c.key.clone(),
                    category: category.clone(),
                    correct: answer_is_correct(c.sample, &answer) == Some(true),
                    answer,
                    answer_logprob: subject.answer.total_logprob(),
                    skipped: None,
                };
                self.store.write(&rels[0], &clean)?;
                count += 1;
                monitor.advance(count, total);
            }
            for (m, rel) in self.cfg.methods.iter().zip(&rels[1..]) {
                if self.store.exists(rel) {
                    continue;
                }
                let cell = plan.cell(*m, &category).ok_or_else(|| {
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
                    method: *m,
                    positions: self.cfg.positions,
                    mode: self.cfg.ablation,
                    conditions,
                };
                self.store.write(rel, &unit)?;
                count += 1;
                monitor.advance(count, total);
            }
        }
        Ok(())
    }

    /// Labels of the configured models.
    pub fn model_labels(&self) -> Vec<String> {
        self.cfg.models.iter().map(|m| model_label(m)).collect()
    }

    /// Units still missing per phase and model: `(phase, model, missing, total)`.
    pub fn missing(&self) -> Vec<(String, String, usize, usize)> {
        let mut out = Vec::new();
        let (train, test) = (self.train(), self.test());
        for label in self.model_labels() {
            let miss = self.missing_detection(&label).len();
            out.push(("detect".to_string(), label.clone(), miss, train.len()));
            let mut miss = 0;
            let mut total = 0;
            for c in &test {
                let clean = clean_unit(&label, &c.key);
                total += 1 + self.cfg.methods.len();
                if !self.store.exists(&clean) {
                    miss += 1 + self.cfg.methods.len();
                    continue;
                }
                let skipped = self
                    .store
                    .read::<CleanUnit>(&clean)
                    .map(|u| u.skipped.is_some())
                    .unwrap_or(false);
                if skipped {
                    continue;
                }
                miss += self
                    .cfg
                    .methods
                    .iter()
                    .filter(|&&m| !self.store.exists(&ablate_unit(&label, m, &c.key)))
                    .count();
            }
            out.push(("ablate".to_string(), label, miss, total));
        }
        out
    }
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
