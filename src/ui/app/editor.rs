//! The ablation editor's room: the set of heads and MLPs the user is building, how it was made
//! (so `+`/`-` can redo it with another k), and the live re-run of the answer under it.

use super::{AblationMode, AblationSet, HeadScore};
use crate::analysis::live::LiveRun;
use crate::analysis::rng::SplitMix64;
use crate::analysis::top_heads;

/// Quiet time after an ablation toggle before the live re-run starts.
pub const DEBOUNCE_MS: u64 = 300;

/// How the current ablation set was made, so `+`/`-` can redo it with a new k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AblationOrigin {
    ByHand,
    TopK(HeadScore),
    Random,
}

/// A live re-run as the panes show it: the run itself and its answer's token texts.
#[derive(Clone, Debug, PartialEq)]
pub struct LiveResult {
    pub run: LiveRun,
    pub tokens: Vec<String>,
}

impl LiveResult {
    /// The set the re-run was for.
    pub fn set(&self) -> &AblationSet {
        &self.run.set
    }

    /// The original answer's log-prob on the unablated model.
    pub fn clean_logprob(&self) -> f64 {
        self.run.original_answer_logprob - self.run.delta_logprob
    }
}

/// The set being edited and its live re-run.
#[derive(Clone, Debug)]
pub struct AblationEditor {
    /// The heads and MLPs knocked out for the live re-run.
    pub set: AblationSet,
    pub origin: AblationOrigin,
    /// The k of `a` (top-k) and `R` (k random).
    pub top_k: usize,
    random_draws: u64,
    pub live: Option<LiveResult>,
    /// The set changed since the last live run was sent.
    pub dirty: bool,
}

impl Default for AblationEditor {
    fn default() -> Self {
        AblationEditor {
            set: AblationSet::default(),
            origin: AblationOrigin::ByHand,
            top_k: 5,
            random_draws: 0,
            live: None,
            dirty: false,
        }
    }
}

impl AblationEditor {
    /// Toggles head `(l, h)`, or layer `l`'s MLP when `h` is past the last head.
    pub fn toggle(&mut self, (l, h): (usize, usize), heads: usize) {
        if h >= heads {
            if !self.set.mlps.remove(&l) {
                self.set.mlps.insert(l);
            }
        } else if !self.set.heads.remove(&(l, h)) {
            self.set.heads.insert((l, h));
        }
        self.origin = AblationOrigin::ByHand;
    }

    /// Ablates the k heads that rank highest in `importance` (`[layers][heads]`).
    pub fn take_top(&mut self, score: HeadScore, importance: &[Vec<f64>]) {
        let top = top_heads(importance, self.top_k);
        self.set.heads = top.iter().map(|&(l, h, _)| (l, h)).collect();
        self.set.mlps.clear();
        self.origin = AblationOrigin::TopK(score);
    }

    /// Ablates k heads drawn at random (each draw anew, yet repeatable from the start).
    pub fn take_random(&mut self, layers: usize, heads: usize) {
        let pool: Vec<(usize, usize)> = (0..layers)
            .flat_map(|l| (0..heads).map(move |h| (l, h)))
            .collect();
        let mut rng = SplitMix64::new(0x5eed_0000 + self.random_draws);
        self.random_draws += 1;
        self.set.heads = rng.choose(&pool, self.top_k).into_iter().collect();
        self.set.mlps.clear();
        self.origin = AblationOrigin::Random;
    }

    /// Moves k by `by` within `1..=max`.
    pub fn change_k(&mut self, by: isize, max: usize) {
        self.top_k = (self.top_k as isize + by).clamp(1, max.max(1) as isize) as usize;
    }

    /// Nothing ablated, by hand from here.
    pub fn reset(&mut self) {
        self.set.heads.clear();
        self.set.mlps.clear();
        self.origin = AblationOrigin::ByHand;
    }

    /// Zero → mean → uniform → zero.
    pub fn cycle_kind(&mut self) {
        self.set.mode = match self.set.mode {
            AblationMode::Zero => AblationMode::Mean,
            AblationMode::Mean => AblationMode::Uniform,
            AblationMode::Uniform => AblationMode::Zero,
        };
    }

    /// Drops the live result and any pending re-run.
    pub fn clear_live(&mut self) {
        self.live = None;
        self.dirty = false;
    }

    /// The set a pending re-run is for. A pending re-run of an emptied set is dropped instead.
    pub fn pending(&mut self) -> Option<AblationSet> {
        if !self.dirty {
            return None;
        }
        if self.set.is_empty() {
            self.clear_live();
            return None;
        }
        Some(self.set.clone())
    }
}
