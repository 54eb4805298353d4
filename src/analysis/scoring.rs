//! The teacher-forced scoring core shared by every perturbation method (ANALYSES.md, "Common
//! ground"): the same answer ids re-scored after many prompt variants, each variant reusing the
//! keys and values of the full prompt up to the first token where it differs.

use std::cell::Cell;

use candle_core::{DType, Device, Tensor};

use super::divergence::{logit_prob, token_logprob};
use crate::engine::{Capture, Engine, Hooks, KvCache, Positions, Start};
use crate::{Error, Result};

/// Logits at the answer-predicting positions: row `t` predicts answer token `t`.
#[derive(Clone, Debug)]
pub struct AnswerLogits {
    pub rows: Vec<Vec<f32>>,
}

impl AnswerLogits {
    /// From a `[1, A, V]` (or `[A, V]`) logits tensor.
    pub fn from_tensor(t: &Tensor) -> Result<AnswerLogits> {
        let t = t.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
        let t = if t.rank() == 3 { t.squeeze(0)? } else { t };
        Ok(AnswerLogits {
            rows: t.to_vec2::<f32>()?,
        })
    }

    /// Log-prob of each answer token.
    pub fn token_logprobs(&self, answer: &[u32]) -> Vec<f64> {
        self.rows
            .iter()
            .zip(answer)
            .map(|(r, &id)| token_logprob(r, id))
            .collect()
    }

    /// ContextCite's logit-probability of each answer token.
    pub fn logit_probs(&self, answer: &[u32]) -> Vec<f64> {
        self.rows
            .iter()
            .zip(answer)
            .map(|(r, &id)| logit_prob(r, id))
            .collect()
    }
}

/// How much model work a scorer did (for the cost columns of reports).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ScoringStats {
    /// Forwards run (the base one included).
    pub forwards: usize,
    /// Token positions computed, summed over forwards (a full forward of the base counts its length).
    pub tokens: usize,
}

/// Re-scores a fixed answer after prompt variants, reusing the base prompt's KV cache.
pub struct PrefixScorer<'a> {
    engine: &'a Engine,
    /// Base prompt ids followed by every answer token but the last.
    base: Vec<u32>,
    answer: Vec<u32>,
    cache: KvCache,
    base_logits: AnswerLogits,
    stats: Cell<ScoringStats>,
}

impl<'a> PrefixScorer<'a> {
    /// One forward of `prompt ++ answer` keeping its keys and values.
    pub fn new(engine: &'a Engine, prompt: &[u32], answer: &[u32]) -> Result<PrefixScorer<'a>> {
        check_inputs(prompt, answer)?;
        let base = teacher_forced_input(prompt, answer);
        let hooks = Hooks {
            capture: Capture {
                logits: Some(answer_rows(prompt.len(), answer.len())),
                kv_cache: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut trace = engine.forward(Start::Tokens(&engine.ids_tensor(&base)?), None, &hooks)?;
        let base_logits = AnswerLogits::from_tensor(trace.logits()?)?;
        Ok(PrefixScorer {
            engine,
            cache: trace.take_kv_cache()?,
            stats: Cell::new(ScoringStats {
                forwards: 1,
                tokens: base.len(),
            }),
            base,
            answer: answer.to_vec(),
            base_logits,
        })
    }

    /// The scorer for a subject, from the state the answer's own pass left (no forward), or one
    /// forward when there is none.
    pub fn for_subject(engine: &'a Engine, subject: &super::Subject) -> Result<PrefixScorer<'a>> {
        let (prompt, answer) = (&subject.prompt.ids, subject.answer_ids());
        let Some(state) = &subject.state else {
            return PrefixScorer::new(engine, prompt, answer);
        };
        check_inputs(prompt, answer)?;
        let base = teacher_forced_input(prompt, answer);
        if state.kv_cache.len() != base.len() || state.logits.len() != answer.len() {
            return PrefixScorer::new(engine, prompt, answer);
        }
        Ok(PrefixScorer {
            engine,
            cache: state.kv_cache.clone(),
            stats: Cell::new(ScoringStats::default()),
            base,
            answer: answer.to_vec(),
            base_logits: AnswerLogits {
                rows: state.logits.clone(),
            },
        })
    }

    pub fn answer(&self) -> &[u32] {
        &self.answer
    }

    /// The answer's logits after the base prompt.
    pub fn base(&self) -> &AnswerLogits {
        &self.base_logits
    }

    pub fn stats(&self) -> ScoringStats {
        self.stats.get()
    }

    /// The answer's logits after `prompt`: only the tokens after the prefix `prompt` shares with
    /// the base prompt are computed.
    pub fn score(&self, prompt: &[u32]) -> Result<AnswerLogits> {
        check_inputs(prompt, &self.answer)?;
        let ids = teacher_forced_input(prompt, &self.answer);
        let shared = reusable_prefix(&ids, &self.base, prompt.len());
        let past = self.cache.truncate(shared)?;
        self.run(&ids[shared..], prompt.len() - 1 - shared, Some(&past))
    }

    /// The answer's logits after `prompt`, from scratch (no prefix reuse): the baseline the
    /// reuse is measured against.
    pub fn score_from_scratch(&self, prompt: &[u32]) -> Result<AnswerLogits> {
        check_inputs(prompt, &self.answer)?;
        let ids = teacher_forced_input(prompt, &self.answer);
        self.run(&ids, prompt.len() - 1, None)
    }

    fn run(&self, ids: &[u32], first_row: usize, past: Option<&KvCache>) -> Result<AnswerLogits> {
        let hooks = Hooks {
            capture: Capture {
                logits: Some(Positions::Range(first_row..first_row + self.answer.len())),
                ..Default::default()
            },
            ..Default::default()
        };
        let trace =
            self.engine
                .forward(Start::Tokens(&self.engine.ids_tensor(ids)?), past, &hooks)?;
        let mut s = self.stats.get();
        s.forwards += 1;
        s.tokens += ids.len();
        self.stats.set(s);
        AnswerLogits::from_tensor(trace.logits()?)
    }
}

fn check_inputs(prompt: &[u32], answer: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::Analysis("cannot score after an empty prompt".into()));
    }
    if answer.is_empty() {
        return Err(Error::Analysis(
            "the answer is empty: nothing to score".into(),
        ));
    }
    Ok(())
}

/// The teacher-forced input for scoring `answer` after `prompt`: `prompt ++ answer[..A−1]` (the last
/// answer token is never an input of a scored position).
pub fn teacher_forced_input(prompt: &[u32], answer: &[u32]) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    ids.extend_from_slice(&answer[..answer.len().saturating_sub(1)]);
    ids
}

/// How many leading positions of the teacher-forced input `ids` (after a prompt of `prompt_len`
/// tokens) can come from the keys and values of `base`: the prefix they share, but never the first
/// answer-predicting position, which must be computed.
pub fn reusable_prefix(ids: &[u32], base: &[u32], prompt_len: usize) -> usize {
    ids.iter()
        .zip(base)
        .take_while(|(a, b)| a == b)
        .count()
        .min(prompt_len.saturating_sub(1))
}

/// The answer-predicting positions of that input: `P−1 … P+A−2` (row `t` predicts answer token `t`).
pub fn answer_rows(prompt_len: usize, answer_len: usize) -> Positions {
    Positions::Range(prompt_len - 1..prompt_len - 1 + answer_len)
}
