//! One greedy/sampled decoding loop's state: a KV cache, the last forward's logits, and a step
//! that feeds one token per batch row. [`super::generate`], batched ablated generation and the
//! explorer's live re-runs all decode through it.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Tensor};

use super::generate::{ids_rows, log_softmax_row, top_k};
use super::hooks::{Capture, Hooks, Positions, Trace};
use super::kv::KvCache;
use super::model::{Start, Transformer};
use crate::{Error, Result};

/// Something that runs hooked forwards: the bare [`Transformer`], or the [`super::Engine`], which
/// also counts them.
pub trait Forward {
    fn forward(&self, start: Start, past: Option<&KvCache>, hooks: &Hooks) -> Result<Trace>;
    /// The model the forwards run on (device, architecture).
    fn transformer(&self) -> &Transformer;
}

impl Forward for Transformer {
    fn forward(&self, start: Start, past: Option<&KvCache>, hooks: &Hooks) -> Result<Trace> {
        Transformer::forward(self, start, past, hooks)
    }
    fn transformer(&self) -> &Transformer {
        self
    }
}

/// What a decoder keeps from each of its forwards besides the logits and the cache, so that a
/// pass over the same tokens need not be run again (the study's detection reads attention rows
/// from the generation itself; its ablations start from the clean residual stream).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recording {
    /// Attention rows (`blocks.{l}.attn.hook_pattern`) of every absolute position from this one
    /// on: `|rows| × T` per head, never `T × T`.
    pub attn_from: Option<usize>,
    /// The residual stream entering every layer (`blocks.{l}.hook_resid_pre`), every position.
    pub resid_pre: bool,
}

impl Recording {
    pub fn is_empty(&self) -> bool {
        self.attn_from.is_none() && !self.resid_pre
    }

    /// The captures of one forward of `t` new tokens after `offset` cached ones.
    fn capture(&self, offset: usize, t: usize) -> Capture {
        let attn_rows = self
            .attn_from
            .map(|from| from.saturating_sub(offset).min(t)..t)
            .filter(|r| !r.is_empty())
            .map(Positions::Range);
        Capture {
            attn_rows,
            resid_pre: self.resid_pre.then_some(Positions::All),
            ..Default::default()
        }
    }
}

/// Decoding state for `rows` sequences side by side under the same interventions.
pub struct Decoder<'a, F: Forward + ?Sized> {
    runner: &'a F,
    /// The interventions of every forward, capturing the last position's logits and the cache.
    hooks: Hooks,
    stop_ids: &'a [u32],
    rows: usize,
    cache: Option<KvCache>,
    /// `[rows, vocab]` f32 of the last forward; `None` before the first.
    logits: Option<Tensor>,
    forwards: usize,
    recording: Recording,
    /// What [`Recording`] kept, one map of hook name → tensor per forward, oldest first.
    recorded: Vec<BTreeMap<String, Tensor>>,
}

impl<'a, F: Forward + ?Sized> Decoder<'a, F> {
    /// Runs `prompt` (copied into `rows` rows) under `interventions`: the first token's logits.
    pub fn prefill(
        runner: &'a F,
        interventions: &Hooks,
        prompt: &[u32],
        rows: usize,
        stop_ids: &'a [u32],
    ) -> Result<Self> {
        Decoder::prefill_recording(
            runner,
            interventions,
            prompt,
            rows,
            stop_ids,
            Recording::default(),
        )
    }

    /// [`Decoder::prefill`], keeping what `recording` asks for from the prefill and every later
    /// step ([`Decoder::take_recorded`]).
    pub fn prefill_recording(
        runner: &'a F,
        interventions: &Hooks,
        prompt: &[u32],
        rows: usize,
        stop_ids: &'a [u32],
        recording: Recording,
    ) -> Result<Self> {
        if prompt.is_empty() {
            return Err(Error::Hook("cannot generate from an empty prompt".into()));
        }
        let mut decoder = Decoder::new(runner, interventions, None, rows, stop_ids);
        decoder.recording = recording;
        let ids = ids_rows(prompt, rows, runner.transformer().device())?;
        decoder.run(&ids, prompt.len() - 1)?;
        Ok(decoder)
    }

    /// Continues one row after the keys and values in `cache`; [`Decoder::step`] must feed the
    /// next token before there are logits.
    pub fn resume(
        runner: &'a F,
        interventions: &Hooks,
        cache: KvCache,
        stop_ids: &'a [u32],
    ) -> Self {
        Decoder::new(runner, interventions, Some(cache), 1, stop_ids)
    }

    /// Continues `rows` rows after the keys and values in `cache` (whose batch has `rows` rows).
    pub fn resume_rows(
        runner: &'a F,
        interventions: &Hooks,
        cache: KvCache,
        rows: usize,
        stop_ids: &'a [u32],
    ) -> Self {
        Decoder::new(runner, interventions, Some(cache), rows, stop_ids)
    }

    fn new(
        runner: &'a F,
        interventions: &Hooks,
        cache: Option<KvCache>,
        rows: usize,
        stop_ids: &'a [u32],
    ) -> Self {
        let hooks = Hooks {
            capture: Capture::default(),
            ..interventions.clone()
        };
        Decoder {
            runner,
            hooks,
            stop_ids,
            rows,
            cache,
            logits: None,
            forwards: 0,
            recording: Recording::default(),
            recorded: Vec::new(),
        }
    }

    /// Feeds one token per row after everything decoded so far.
    pub fn step(&mut self, tokens: &[u32]) -> Result<()> {
        if tokens.len() != self.rows {
            return Err(Error::Hook(format!(
                "{} tokens for {} decoding rows",
                tokens.len(),
                self.rows
            )));
        }
        let device = self.runner.transformer().device();
        let ids = Tensor::from_vec(tokens.to_vec(), (self.rows, 1), device)?;
        self.run(&ids, 0)
    }

    /// One forward of `ids` `[rows, t]` after the cache, keeping position `logit_pos`'s logits.
    fn run(&mut self, ids: &Tensor, logit_pos: usize) -> Result<()> {
        let offset = self.cache.as_ref().map_or(0, KvCache::len);
        let hooks = Hooks {
            capture: Capture {
                logits: Some(Positions::List(vec![logit_pos])),
                kv_cache: true,
                ..self.recording.capture(offset, ids.dims()[1])
            },
            ..self.hooks.clone()
        };
        let mut trace = self
            .runner
            .forward(Start::Tokens(ids), self.cache.as_ref(), &hooks)?;
        self.forwards += 1;
        if !self.recording.is_empty() {
            self.recorded.push(std::mem::take(&mut trace.activations));
        }
        self.cache = Some(trace.take_kv_cache()?);
        self.logits = Some(
            trace
                .take_logits()?
                .to_dtype(DType::F32)?
                .reshape((self.rows, ()))?,
        );
        Ok(())
    }

    /// The last forward's logits `[rows, vocab]` (f32), on the model's device.
    pub fn logits(&self) -> Result<&Tensor> {
        self.logits
            .as_ref()
            .ok_or_else(|| Error::Hook("no logits yet: feed a token first".into()))
    }

    /// The last forward's logit rows, on the host.
    pub fn logit_rows(&self) -> Result<Vec<Vec<f32>>> {
        Ok(self.logits()?.to_device(&Device::Cpu)?.to_vec2::<f32>()?)
    }

    pub fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }

    /// The first stop id (fed to rows that have finished while others go on).
    pub fn filler(&self, fallback: u32) -> u32 {
        self.stop_ids.first().copied().unwrap_or(fallback)
    }

    /// Greedy single-row decoding: appends to `ids` (whose last token is fed first) the greedy
    /// token and its log-prob after every step until a stop token or `max_new` ids. `cancel` is
    /// polled before each forward.
    pub fn greedy(
        &mut self,
        ids: &mut Vec<u32>,
        logprobs: &mut Vec<f32>,
        max_new: usize,
        cancel: &dyn Fn() -> bool,
    ) -> Result<()> {
        while ids.len() < max_new {
            if cancel() {
                return Err(Error::Cancelled);
            }
            let last = *ids
                .last()
                .ok_or_else(|| Error::Hook("greedy decoding needs a first token".into()))?;
            self.step(&[last])?;
            let row = self.logits()?.flatten_all()?.to_device(&Device::Cpu)?;
            match greedy_pick(&row.to_vec1::<f32>()?, self.stop_ids) {
                Some((id, lp)) => {
                    ids.push(id);
                    logprobs.push(lp);
                }
                None => break,
            }
        }
        Ok(())
    }

    /// Greedy decoding of every row until each has produced a stop token or `max_new` ids:
    /// row `r`'s answer ids (stop token excluded). A finished row is fed the first stop id while the
    /// others go on. `first` are the first token's logit rows when another pass produced them (a
    /// teacher-forced forward); otherwise the last forward's. `keep_going` is polled before each
    /// forward.
    pub fn greedy_rows(
        &mut self,
        first: Option<Vec<Vec<f32>>>,
        max_new: usize,
        keep_going: &mut dyn FnMut() -> bool,
    ) -> Result<Vec<Vec<u32>>> {
        let mut logit_rows = match first {
            Some(rows) => rows,
            None => self.logit_rows()?,
        };
        let mut answers = vec![Vec::new(); self.rows];
        let mut done = vec![false; self.rows];
        for produced in 1..=max_new {
            let mut next = Vec::with_capacity(self.rows);
            for (r, row) in logit_rows.iter().enumerate() {
                let id = top_k(row, 1)[0].0;
                if !done[r] {
                    if self.is_stop(id) {
                        done[r] = true;
                    } else {
                        answers[r].push(id);
                    }
                }
                next.push(if done[r] { self.filler(id) } else { id });
            }
            if done.iter().all(|&d| d) || produced == max_new {
                break;
            }
            if !keep_going() {
                return Err(Error::Cancelled);
            }
            self.step(&next)?;
            logit_rows = self.logit_rows()?;
        }
        Ok(answers)
    }

    /// Forwards run so far.
    pub fn forwards(&self) -> usize {
        self.forwards
    }

    /// What the [`Recording`] kept so far, one map per forward (prefill first); taken out.
    pub fn take_recorded(&mut self) -> Vec<BTreeMap<String, Tensor>> {
        std::mem::take(&mut self.recorded)
    }

    /// The keys and values of everything fed so far.
    pub fn into_cache(self) -> Option<KvCache> {
        self.cache
    }
}

/// The greedy token of a logit row and its log-prob; `None` when it is a stop token.
pub fn greedy_pick(row: &[f32], stop_ids: &[u32]) -> Option<(u32, f32)> {
    let id = top_k(row, 1)[0].0;
    if stop_ids.contains(&id) {
        return None;
    }
    Some((id, log_softmax_row(row)[id as usize]))
}
