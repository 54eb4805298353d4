//! The data a pruning run uses, all from the study folder: its recorded configuration (prompt
//! style, instruction, template, answer length), its split (`split/train.jsonl` for calibration,
//! `split/test.jsonl` for evaluation) and, for the study scores, its detection statistics.

use std::collections::BTreeMap;
use std::path::Path;

use crate::analysis::rng::{derive_seed, SplitMix64};
use crate::prompt::{load_samples, PromptFormat, Sample};
use crate::study::config::{sample_key, ConfigRecord, StudyConfig};
use crate::{Error, Result};

/// A sample with its file key.
#[derive(Clone, Debug)]
pub struct Keyed {
    pub key: String,
    pub sample: Sample,
}

impl Keyed {
    pub fn category(&self) -> &str {
        self.sample.category().unwrap_or("")
    }
}

/// The study folder as a pruning run reads it.
pub struct StudyData {
    pub study: StudyConfig,
    pub format: PromptFormat,
    /// Per category, the training samples in a seeded order (calibration takes a prefix).
    pub train: BTreeMap<String, Vec<Keyed>>,
    /// Per category, the test samples in a seeded order (evaluation takes a prefix).
    pub test: BTreeMap<String, Vec<Keyed>>,
}

impl StudyData {
    /// Reads `dir/config.toml` and `dir/split/{train,test}.jsonl`; a folder without either is an
    /// error that says how to make one.
    pub fn open(dir: &Path, seed: u64) -> Result<StudyData> {
        let config = dir.join("config.toml");
        if !config.is_file() {
            return Err(Error::Pruning(format!(
                "{} has no config.toml: give a study folder (`headscope study run --out DIR` \
                 makes one)",
                dir.display()
            )));
        }
        let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
        let record: ConfigRecord = toml::from_str(&text)
            .map_err(|e| Error::Pruning(format!("{}: {e}", config.display())))?;
        let side = |name: &str| -> Result<BTreeMap<String, Vec<Keyed>>> {
            let path = dir.join("split").join(format!("{name}.jsonl"));
            if !path.is_file() {
                return Err(Error::Pruning(format!(
                    "{} has no split ({} is missing): run `headscope study split` or \
                     `headscope study run` on it first",
                    dir.display(),
                    path.display()
                )));
            }
            Ok(shuffled_by_category(&load_samples(&path)?, seed, name))
        };
        let train = side("train")?;
        let test = side("test")?;
        let format = record.study.format()?;
        Ok(StudyData {
            study: record.study,
            format,
            train,
            test,
        })
    }

    /// The first `n` per category of the training side, category by category.
    pub fn calibration(&self, n: usize) -> Vec<&Keyed> {
        prefix(&self.train, n)
    }

    /// The first `n` per category of the test side.
    pub fn evaluation(&self, n: usize) -> Vec<&Keyed> {
        prefix(&self.test, n)
    }
}

fn prefix(side: &BTreeMap<String, Vec<Keyed>>, n: usize) -> Vec<&Keyed> {
    side.values().flat_map(|v| v.iter().take(n)).collect()
}

/// The samples per category, each category in its own seeded order (Fisher–Yates with
/// `derive_seed(seed, ["prune", side, category])`), so a smaller subset is a prefix of a larger
/// one and adding a category changes no other category's order.
fn shuffled_by_category(samples: &[Sample], seed: u64, side: &str) -> BTreeMap<String, Vec<Keyed>> {
    let mut groups: BTreeMap<String, Vec<Keyed>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        groups
            .entry(s.category().unwrap_or("").to_string())
            .or_default()
            .push(Keyed {
                key: sample_key(s, i),
                sample: s.clone(),
            });
    }
    for (category, members) in groups.iter_mut() {
        let mut rng = SplitMix64::new(derive_seed(seed, &["prune", side, category]));
        for i in (1..members.len()).rev() {
            members.swap(i, rng.below(i + 1));
        }
    }
    groups
}
