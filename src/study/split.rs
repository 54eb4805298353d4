//! The study's split: a seeded train/test split, stratified by the samples' `category`, so each
//! category keeps the same share of test samples. Same samples, seed and fraction: the same split
//! on any machine (SplitMix64; the only floating point is one rounding per category).

use std::collections::BTreeMap;

use crate::analysis::rng::SplitMix64;
use crate::prompt::Sample;
use crate::{Error, Result};

/// A category needs at least this many samples to be split and studied.
pub const MIN_PER_CATEGORY: usize = 5;

/// Sample indices (into the dataset, ascending) of each side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

/// The samples' indices per category, in file order. A sample without a `category`, or a category
/// with fewer than [`MIN_PER_CATEGORY`] samples, is an error.
pub fn by_category(samples: &[Sample]) -> Result<BTreeMap<String, Vec<usize>>> {
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        let category = s
            .category()
            .ok_or_else(|| Error::Analysis(format!("sample {i} has no `category` (text) field")))?;
        groups.entry(category.to_string()).or_default().push(i);
    }
    if let Some((c, v)) = groups.iter().find(|(_, v)| v.len() < MIN_PER_CATEGORY) {
        return Err(Error::Analysis(format!(
            "category `{c}` has {} sample(s); a study needs at least {MIN_PER_CATEGORY} per category",
            v.len()
        )));
    }
    Ok(groups)
}

/// Splits `samples` so that each category puts `round(n · test_fraction)` of its `n` samples (at
/// least one, and at least one left for training) into `test`, chosen by a seeded shuffle.
pub fn stratified(samples: &[Sample], test_fraction: f64, seed: u64) -> Result<Split> {
    if !(test_fraction > 0.0 && test_fraction < 1.0) {
        return Err(Error::Analysis(format!(
            "the test fraction must be between 0 and 1 (exclusive), not {test_fraction}"
        )));
    }
    let mut rng = SplitMix64::new(seed);
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (_, mut members) in by_category(samples)? {
        let n = members.len();
        // Fisher–Yates.
        for i in (1..n).rev() {
            members.swap(i, rng.below(i + 1));
        }
        let n_test = ((n as f64 * test_fraction).round() as usize).clamp(1, n - 1);
        test.extend_from_slice(&members[..n_test]);
        train.extend_from_slice(&members[n_test..]);
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Split { train, test })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataset::filings;

    #[test]
    fn eighty_twenty_per_category_and_reproducible() {
        let samples = filings::generate(1, 25);
        let s = stratified(&samples, 0.2, 9).unwrap();
        assert_eq!(s, stratified(&samples, 0.2, 9).unwrap());
        assert_ne!(s, stratified(&samples, 0.2, 10).unwrap());
        assert_eq!(s.train.len() + s.test.len(), 100);
        let mut all: Vec<usize> = s.train.iter().chain(&s.test).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>(), "a partition");
        for c in filings::Category::ALL {
            let in_test = s
                .test
                .iter()
                .filter(|&&i| samples[i].category() == Some(c.key()))
                .count();
            assert_eq!(in_test, 5, "{}: 25 samples, 20 % test", c.key());
        }
    }

    #[test]
    fn bad_data_is_an_error() {
        let mut samples = filings::generate(1, 5);
        assert!(stratified(&samples, 0.0, 0).is_err());
        assert!(stratified(&samples, 1.0, 0).is_err());
        samples.pop();
        let err = stratified(&samples, 0.2, 0).unwrap_err().to_string();
        assert!(err.contains("has 4 sample(s)"), "{err}");
        samples[0].extra.remove("category");
        let err = stratified(&samples, 0.2, 0).unwrap_err().to_string();
        assert!(err.contains("sample 0 has no `category`"), "{err}");
    }
}
