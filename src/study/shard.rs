//! Sharding a study over a cluster's scheduler (Slurm job arrays, Kubernetes indexed jobs): which
//! process does which units. A phase's units are dealt to shards by cost, deterministically, so
//! every process computes the same assignment from the same folder and no two shards ever write
//! the same file.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `shards.toml`: the shard count a prepared folder was set up for (`study prepare
/// --shard-count N`); every shard must agree with it.
pub const SHARDS_FILE: &str = "shards.toml";

/// Slurm's array task id (`sbatch --array=0-N`): the shard index when `--shard-index` is absent.
pub const SLURM_INDEX_ENV: &str = "SLURM_ARRAY_TASK_ID";
/// Slurm's array size: the shard count when neither `--shard-count` nor the folder says it.
pub const SLURM_COUNT_ENV: &str = "SLURM_ARRAY_TASK_COUNT";
/// Kubernetes' completion index of an Indexed Job's pod.
pub const K8S_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

/// One process's part of a study: shard `index` of `count`. The whole study is shard 0 of 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

/// The record of `shards.toml`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardsRecord {
    pub count: usize,
}

impl Shard {
    /// The whole study in one process.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn new(index: usize, count: usize) -> Result<Shard> {
        if count == 0 {
            return Err(Error::Study("--shard-count must be at least 1".into()));
        }
        if index >= count {
            return Err(Error::Study(format!(
                "shard index {index} is out of range for {count} shards (indices 0..{})",
                count - 1
            )));
        }
        Ok(Shard { index, count })
    }

    /// The shard this process runs: the flags, else the scheduler's environment
    /// (`SLURM_ARRAY_TASK_ID`, `JOB_COMPLETION_INDEX`); the count from the flag, else the prepared
    /// folder's `shards.toml`, else `SLURM_ARRAY_TASK_COUNT`. `None`: not sharded.
    ///
    /// The folder's count comes before Slurm's because a resubmitted single index
    /// (`sbatch --array=2 …`) sees an array of one task.
    pub fn resolve(
        index: Option<usize>,
        count: Option<usize>,
        prepared: Option<usize>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Shard>> {
        let from_env = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v
                    .trim()
                    .parse()
                    .map(Some)
                    .map_err(|_| Error::Study(format!("{name}={v:?} is not a shard index"))),
            }
        };
        let index = match index {
            Some(i) => Some(i),
            None => match from_env(SLURM_INDEX_ENV)? {
                Some(i) => Some(i),
                None => from_env(K8S_INDEX_ENV)?,
            },
        };
        let Some(index) = index else {
            if count.is_some_and(|c| c > 1) {
                return Err(Error::Study(
                    "--shard-count needs --shard-index (or SLURM_ARRAY_TASK_ID / \
                     JOB_COMPLETION_INDEX)"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let count = match count.or(prepared) {
            Some(c) => c,
            None => from_env(SLURM_COUNT_ENV)?.ok_or_else(|| {
                Error::Study(format!(
                    "shard {index} of how many? Give --shard-count (a Kubernetes indexed job \
                     needs it; Slurm sets {SLURM_COUNT_ENV})"
                ))
            })?,
        };
        Shard::new(index, count).map(Some)
    }

    pub fn is_whole(&self) -> bool {
        self.count == 1
    }

    /// Files every shard needs but one must write (the ablation plan, the detection statistics)
    /// are written by shard 0 only; the others compute them in memory.
    pub fn writes_shared_files(&self) -> bool {
        self.index == 0
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "shard {} of {}", self.index, self.count)
    }
}

/// Deals units to `count` shards by cost: the costliest first, each to the least loaded shard
/// (ties to the lower index) — the longest-processing-time rule, within 4/3 of the best makespan.
/// Equal costs keep their input order, so the result depends only on the unit list.
pub fn assign(costs: &[u64], count: usize) -> Vec<usize> {
    let count = count.max(1);
    let mut order: Vec<usize> = (0..costs.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(costs[i]), i));
    let mut load = vec![0u64; count];
    let mut shard_of = vec![0; costs.len()];
    for i in order {
        let lightest = (0..count).min_by_key(|&s| (load[s], s)).unwrap_or(0);
        load[lightest] += costs[i];
        shard_of[i] = lightest;
    }
    shard_of
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn flags_come_before_the_environment_and_the_folder_before_slurms_count() {
        let slurm = [(SLURM_INDEX_ENV, "2"), (SLURM_COUNT_ENV, "1")];
        // A resubmitted index sees an array of one task: the folder's count wins.
        assert_eq!(
            Shard::resolve(None, None, Some(4), env(&slurm)).unwrap(),
            Some(Shard { index: 2, count: 4 })
        );
        assert_eq!(
            Shard::resolve(Some(1), Some(3), None, env(&slurm)).unwrap(),
            Some(Shard { index: 1, count: 3 })
        );
        let k8s = [(K8S_INDEX_ENV, "0")];
        assert_eq!(
            Shard::resolve(None, Some(2), None, env(&k8s)).unwrap(),
            Some(Shard { index: 0, count: 2 })
        );
        assert_eq!(Shard::resolve(None, None, None, env(&[])).unwrap(), None);
        let first = [(SLURM_INDEX_ENV, "0"), (SLURM_COUNT_ENV, "4")];
        assert_eq!(
            Shard::resolve(None, None, None, env(&first)).unwrap(),
            Some(Shard { index: 0, count: 4 })
        );
    }

    #[test]
    fn bad_shards_are_refused_with_a_reason() {
        let msg = |r: Result<Option<Shard>>| r.unwrap_err().to_string();
        assert!(msg(Shard::resolve(Some(4), Some(4), None, env(&[]))).contains("out of range"));
        assert!(msg(Shard::resolve(Some(0), Some(0), None, env(&[]))).contains("at least 1"));
        assert!(msg(Shard::resolve(None, Some(3), None, env(&[]))).contains("needs --shard-index"));
        assert!(msg(Shard::resolve(Some(1), None, None, env(&[]))).contains("of how many"));
        let bad = [(K8S_INDEX_ENV, "x")];
        assert!(msg(Shard::resolve(None, Some(2), None, env(&bad))).contains("not a shard index"));
    }

    #[test]
    fn the_costliest_units_are_spread_and_loads_end_close() {
        let costs = [10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 1, 1];
        let shard_of = assign(&costs, 3);
        let mut load = [0u64; 3];
        for (c, s) in costs.iter().zip(&shard_of) {
            load[*s] += c;
        }
        // 57 in all: LPT gives 19/19/19 here.
        assert_eq!(load, [19, 19, 19]);
        // The three costliest go to three different shards.
        assert_ne!(shard_of[0], shard_of[1]);
        assert_ne!(shard_of[1], shard_of[2]);
        assert_ne!(shard_of[0], shard_of[2]);
        assert_eq!(assign(&costs, 3), shard_of, "deterministic");
        assert!(assign(&costs, 1).iter().all(|&s| s == 0));
        assert!(assign(&[], 4).is_empty());
    }
}
