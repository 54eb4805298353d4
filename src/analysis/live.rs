//! Live ablation re-runs for the explorer: toggling a head or an MLP re-scores the subject's answer
//! and regenerates it under the new ablation set, paying only for the layers from the earliest
//! ablated one up.
//!
//! Why a re-run is both cheap and exact:
//! * an ablation at layer `l0` changes nothing below `l0`, so [`LiveBase`] keeps one clean
//!   forward's `resid_pre` at every layer and its keys/values, and a re-run starts at
//!   `resid_pre[l0]`;
//! * the teacher-forced score of the original answer and the prefill of the regeneration are one
//!   forward of `prompt ++ answer[..A−1]` (attention is causal): its logit rows give the greedy
//!   tokens for as long as the regeneration repeats the original answer, and its keys/values
//!   (layers ≥ `l0`, the clean ones below) let decoding continue from the first token where it
//!   departs;
//! * only tokens the original answer does not contain run as decoding steps, through every layer
//!   since they are new.
//!
//! The rest of the explorer's panes then look at the ablated model: [`LiveBase::ablate`]
//! puts the set in force on the engine for every forward and [`ablated_subject`] makes the
//! regenerated answer the subject every analysis explains.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::ablation::mean_z;
use super::{AnswerSource, Subject};
use crate::engine::decoder::greedy_pick;
use crate::engine::generate::answer_logprob_per_row;
use crate::engine::hooks::hook_name;
use crate::engine::{Ablated, AblationSet, Capture, Engine, Hooks, KvCache, Positions, Start};
use crate::{Error, Result};

/// The answer under one ablation set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LiveRun {
    /// The set this run is for (re-runs may finish after the set has changed again).
    pub set: AblationSet,
    /// The greedy regeneration under the ablation (stop token excluded).
    pub answer_ids: Vec<u32>,
    pub answer_text: String,
    /// Log-prob of each token of the new answer.
    pub answer_logprobs: Vec<f32>,
    /// Teacher-forced `log p` of the subject's original answer under the ablation.
    pub original_answer_logprob: f64,
    /// `original_answer_logprob` minus the clean one.
    pub delta_logprob: f64,
    /// The first answer position where the new answer differs from the original (a token, or its
    /// end); `None` when they are equal.
    pub first_change: Option<usize>,
    /// The lowest layer recomputed (`None`: nothing was, the set is empty).
    pub recomputed_from_layer: Option<usize>,
    /// Forwards run: one from `recomputed_from_layer`, then one per decoding step.
    pub forwards: usize,
    pub seconds: f64,
}

/// What re-runs reuse from one clean forward of `prompt ++ answer[..A−1]` (`T` positions):
/// `L × T × d` residual floats plus the clean KV cache.
#[derive(Clone, Debug)]
pub struct LiveBase {
    /// `prompt ++ answer[..A−1]`.
    ids: Vec<u32>,
    prompt_len: usize,
    answer: Vec<u32>,
    /// `blocks.{l}.hook_resid_pre` of the clean run, `[1, T, d]`, per layer.
    resid_pre: Vec<Tensor>,
    /// The clean run's keys and values, every layer, `T` positions.
    kv_cache: KvCache,
    /// Each head's `z` averaged over the `T` positions, `[L, H, d_head]`: mean ablation's value,
    /// so a mean re-run needs no extra forward.
    mean_z: Tensor,
    /// The subject's answer with its clean teacher-forced log-prob: the empty set's result.
    clean: LiveRun,
}

impl LiveBase {
    /// One clean forward of the subject's `prompt ++ answer[..A−1]`, keeping every layer's
    /// `resid_pre`, the KV cache, the mean `z` of every head and the answer's log-prob.
    pub fn new(engine: &Engine, subject: &Subject) -> Result<LiveBase> {
        require_unablated(engine)?;
        let answer = subject.answer_ids().to_vec();
        if answer.is_empty() {
            return Err(Error::Analysis(
                "the answer is empty: nothing to re-run".into(),
            ));
        }
        let ids = subject.teacher_forced_ids();
        let hooks = Hooks {
            capture: Capture {
                resid_pre: Some(Positions::All),
                z: Some(Positions::All),
                logits: Some(subject.answer_rows()),
                kv_cache: true,
                ..Default::default()
            },
            ..Default::default()
        };
        let mut trace = engine.forward(Start::Tokens(&engine.ids_tensor(&ids)?), None, &hooks)?;
        let logits = trace.take_logits()?;
        let clean_logprob = answer_logprob_per_row(&logits, &answer)?[0];
        let layers = engine.arch().num_layers;
        let resid_pre = (0..layers)
            .map(|l| Ok(trace.get(&hook_name(l, "hook_resid_pre"))?.clone()))
            .collect::<Result<Vec<_>>>()?;
        let clean = LiveRun {
            set: AblationSet::default(),
            answer_text: engine.decode(&answer)?,
            answer_ids: answer.clone(),
            answer_logprobs: subject.answer.logprobs.clone(),
            original_answer_logprob: clean_logprob,
            delta_logprob: 0.0,
            first_change: None,
            recomputed_from_layer: None,
            forwards: 0,
            seconds: 0.0,
        };
        Ok(LiveBase {
            mean_z: mean_z(layers, &trace)?,
            kv_cache: trace.take_kv_cache()?,
            ids,
            prompt_len: subject.prompt.ids.len(),
            answer,
            resid_pre,
            clean,
        })
    }

    /// `engine` with `set` in force for every forward while the guard lives (mean ablation
    /// substitutes this clean run's mean `z`); the empty set leaves the model unablated.
    pub fn ablate<'e>(&self, engine: &'e mut Engine, set: &AblationSet) -> Result<Ablated<'e>> {
        engine.ablate(set, || Ok(self.mean_z.clone()))
    }

    /// `set` resolved for `engine` as one forward's hooks, with this clean run's mean `z`.
    fn hooks_for(&self, engine: &Engine, set: &AblationSet) -> Result<Hooks> {
        set.resolve(engine.arch(), engine.device(), || Ok(self.mean_z.clone()))
            .and_then(|r| r.as_hooks(engine.device()))
            // A bad set is the caller's analysis request, not a hook the engine was given.
            .map_err(|e| match e {
                Error::Hook(m) => Error::Analysis(m),
                other => other,
            })
    }

    /// Teacher-forced `log p(answer)` of the clean run.
    pub fn clean_logprob(&self) -> f64 {
        self.clean.original_answer_logprob
    }

    /// The subject's own answer, as the empty set's run.
    pub fn clean(&self) -> &LiveRun {
        &self.clean
    }

    fn check(&self, engine: &Engine, subject: &Subject) -> Result<()> {
        let same = subject.answer_ids() == self.answer
            && subject.prompt.ids.len() == self.prompt_len
            && subject.prompt.ids == self.ids[..self.prompt_len]
            && self.resid_pre.len() == engine.arch().num_layers;
        if same {
            Ok(())
        } else {
            Err(Error::Analysis(
                "the live base was built for another prompt, answer or model".into(),
            ))
        }
    }
}

/// The subject's answer under `set`: the original answer's teacher-forced log-prob and a greedy
/// regeneration of at most `max_new_tokens` (stopping on the engine's stop ids). The prompt and the
/// original answer's tokens are computed from `resid_pre` of the set's earliest layer only; tokens
/// after the regeneration departs from the original answer run every layer. `cancel` is polled
/// before the first forward and between decoding steps (`Error::Cancelled`). The empty set returns
/// the clean answer at once. Heads or MLPs outside the model are an `Error::Analysis`.
pub fn rerun(
    engine: &Engine,
    subject: &Subject,
    base: &LiveBase,
    set: &AblationSet,
    max_new_tokens: usize,
    cancel: &dyn Fn() -> bool,
) -> Result<LiveRun> {
    let started = Instant::now();
    require_unablated(engine)?;
    base.check(engine, subject)?;
    let interventions = base.hooks_for(engine, set)?;
    let Some(l0) = set.earliest_layer() else {
        return Ok(LiveRun {
            set: set.clone(),
            ..base.clean.clone()
        });
    };
    if cancel() {
        return Err(Error::Cancelled);
    }

    // (1) The original answer, teacher-forced from layer l0; the same forward prefills (2).
    let (p, a) = (base.prompt_len, base.answer.len());
    let hooks = Hooks {
        capture: Capture {
            logits: Some(subject.answer_rows()),
            kv_cache: true,
            ..Default::default()
        },
        ..interventions.clone()
    };
    let start = Start::ResidPre {
        layer: l0,
        resid: base.resid_pre[l0].clone(),
    };
    let mut trace = engine.forward(start, None, &hooks)?;
    let logits = trace.take_logits()?;
    let original = answer_logprob_per_row(&logits, &base.answer)?[0];
    let rows = logits
        .squeeze(0)?
        .to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?;
    let upper = trace.take_kv_cache()?;

    // (2) The greedy regeneration.
    let context = engine.arch().max_position_embeddings;
    let max_new = max_new_tokens.min(context.saturating_sub(p));
    let (mut ids, mut logprobs, going) =
        follow_original(&rows, &base.answer, max_new, engine.stop_ids());
    let mut forwards = 1;
    if going {
        // Keys and values of every position before the last chosen token: the ablated run's from
        // layer l0, the clean run's below (they agree there, and the prefix is the original's).
        let past = p + ids.len() - 1;
        let cache = base
            .kv_cache
            .truncate(past)?
            .with_layers_from(l0, &upper.truncate(past)?)?;
        let mut decoder = engine.resume_decoder(&interventions, cache);
        decoder.greedy(&mut ids, &mut logprobs, max_new, cancel)?;
        forwards += decoder.forwards();
    }

    let first_change = ids
        .iter()
        .zip(&base.answer)
        .position(|(x, y)| x != y)
        .or_else(|| (ids.len() != a).then(|| ids.len().min(a)));
    Ok(LiveRun {
        set: set.clone(),
        answer_text: engine.decode(&ids)?,
        answer_ids: ids,
        answer_logprobs: logprobs,
        original_answer_logprob: original,
        delta_logprob: original - base.clean_logprob(),
        first_change,
        recomputed_from_layer: Some(l0),
        forwards,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The greedy tokens (and their log-probs) the teacher-forced `rows` give while the regeneration
/// repeats the original `answer`: they are its rows for as long. Returns whether decoding goes on
/// after them (no stop token was chosen and fewer than `max_new` tokens are chosen).
fn follow_original(
    rows: &[Vec<f32>],
    answer: &[u32],
    max_new: usize,
    stop_ids: &[u32],
) -> (Vec<u32>, Vec<f32>, bool) {
    let (mut ids, mut logprobs) = (Vec::new(), Vec::new());
    for (row, &original_id) in rows.iter().zip(answer) {
        let pick = (ids.len() < max_new)
            .then(|| greedy_pick(row, stop_ids))
            .flatten();
        let Some((id, lp)) = pick else {
            return (ids, logprobs, false);
        };
        ids.push(id);
        logprobs.push(lp);
        if id != original_id {
            break;
        }
    }
    let going = ids.len() < max_new;
    (ids, logprobs, going)
}

/// Live re-runs compare with the clean model: an ablation in force would be counted twice.
fn require_unablated(engine: &Engine) -> Result<()> {
    match engine.ablation() {
        None => Ok(()),
        Some(a) => Err(Error::Analysis(format!(
            "live re-runs start from the unablated model, but `{}` is in force",
            a.label()
        ))),
    }
}

/// The subject of the model under `run.set`: `run`'s regenerated answer (the original one if the
/// regeneration is empty, which no analysis could explain), teacher-forced under the engine's
/// ablation, which must be `run.set` ([`LiveBase::ablate`]). Analyses of it
/// on that engine explain the ablated model's own answer. One forward.
pub fn ablated_subject(
    engine: &Engine,
    subject: &Subject,
    run: &LiveRun,
    top_k_alternatives: usize,
) -> Result<Subject> {
    let in_force = engine.ablation();
    // The whole set, mode included: a mean-ablated model is not the zero-ablated one.
    if in_force != Some(&run.set) || run.set.is_empty() {
        return Err(Error::Analysis(format!(
            "the engine's ablation ({}) is not the re-run's set",
            in_force.map_or("none".into(), |a| a.label())
        )));
    }
    let (ids, source) = if run.answer_ids.is_empty() {
        (subject.answer_ids().to_vec(), subject.answer_source)
    } else {
        (run.answer_ids.clone(), AnswerSource::Generated)
    };
    let (answer, state) = engine.score_with_state(&subject.prompt.ids, &ids, top_k_alternatives)?;
    Ok(Subject {
        sample: subject.sample.clone(),
        prompt: subject.prompt.clone(),
        answer,
        answer_source: source,
        state,
    })
}
