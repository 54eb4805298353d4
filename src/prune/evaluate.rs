//! Evaluation of the prunings on test samples by masked zero ablation: the study's batched
//! ablated decoding ([`run_conditions_reusing`]), each pruning one row, every position ablated
//! (the pruned model never sees the heads). Zeroing a head's `z` equals removing it from the model
//! (the engine's sliced fast path is held to the masked model within 1e-5 by its tests), so these
//! are the pruned model's answers and log-probs.
//!
//! A pruning that removes MLP blocks too cannot be a row of a head-masked batch: it runs alone,
//! with the whole pruning as the engine's standing ablation ([`Engine::ablate`]).

use serde::{Deserialize, Serialize};

use super::PruneMethod;
use crate::analysis::ablated_decoding::{run_conditions, run_conditions_reusing, Head};
use crate::analysis::{answer_is_correct, Subject};
use crate::engine::generate::Recorded;
use crate::engine::{AblationKind, AblationMode, Engine, Pruning};
use crate::study::config::{AblatedPositions, StudyConfig};
use crate::{Error, Result};

/// One pruning on one test sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalCondition {
    pub sparsity: f64,
    pub draw: usize,
    /// The pruned model's greedy answer.
    pub answer: String,
    pub correct: bool,
    /// Log-prob of the unpruned model's answer under the pruning (teacher-forced).
    pub clean_answer_logprob: f64,
}

/// One test sample under every pruning of one method: `eval/<method>/<sample>.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalUnit {
    pub sample: String,
    pub category: String,
    pub method: PruneMethod,
    pub conditions: Vec<EvalCondition>,
}

/// A pruning to evaluate: its sparsity, draw and the pruning.
pub type Condition = (f64, usize, Pruning);

/// The settings of the study's ablated decoding that evaluation uses.
pub fn decoding(max_new_tokens: usize, batch: usize) -> StudyConfig {
    StudyConfig {
        positions: AblatedPositions::All,
        ablation: AblationMode::Zero,
        max_new_tokens,
        batch,
        ..StudyConfig::default()
    }
}

/// Every condition on one prepared test sample (`clean`: its generation, recorded with
/// [`crate::analysis::ablated_decoding::clean_recording`]).
pub fn evaluate_sample(
    engine: &mut Engine,
    subject: &Subject,
    clean: &Recorded,
    conditions: &[Condition],
    cfg: &StudyConfig,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Vec<EvalCondition>> {
    let mut runs: Vec<Option<(Vec<u32>, f64)>> = vec![None; conditions.len()];
    let heads_only: Vec<usize> = (0..conditions.len())
        .filter(|&i| conditions[i].2.mlps.is_empty())
        .collect();
    for chunk in heads_only.chunks(cfg.batch) {
        let sets: Vec<Vec<Head>> = chunk
            .iter()
            .map(|&i| conditions[i].2.heads.iter().copied().collect())
            .collect();
        let out = run_conditions_reusing(
            engine,
            subject,
            clean,
            &sets,
            &AblationKind::Zero,
            &cfg.decoding(),
            keep_going,
        )?;
        for (&i, r) in chunk.iter().zip(out) {
            runs[i] = Some(r);
        }
    }
    for (i, (_, _, pruning)) in conditions.iter().enumerate() {
        if pruning.mlps.is_empty() {
            continue;
        }
        let ablated = engine.ablate(&pruning.as_ablation(), || {
            Err(Error::Pruning("zero ablation needs no means".into()))
        })?;
        let out = run_conditions(
            &ablated,
            subject,
            &[Vec::new()],
            &AblationKind::Zero,
            &cfg.decoding(),
            keep_going,
        )?;
        runs[i] = out.into_iter().next();
    }
    conditions
        .iter()
        .zip(runs)
        .map(|((sparsity, draw, _), run)| {
            let (ids, logprob) =
                run.ok_or_else(|| Error::Pruning("a condition was not evaluated".into()))?;
            let answer = engine.decode(&ids)?;
            Ok(EvalCondition {
                sparsity: *sparsity,
                draw: *draw,
                correct: answer_is_correct(&subject.sample, &answer) == Some(true),
                answer,
                clean_answer_logprob: logprob,
            })
        })
        .collect()
}
