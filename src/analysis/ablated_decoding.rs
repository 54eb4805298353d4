//! Answers and log-probs under head ablations, many head sets side by side: each row of a
//! batched forward ablates one set, and greedy decoding continues from the rows' caches. The
//! study's ablation phase, pruning's evaluation and the explorer's ablation curve (Wu et al.
//! 2024's top-k vs random masking, generalised) all run through here.
//!
//! Two paths with the same results up to rounding: [`run_conditions`] runs each row's
//! teacher-forced pass from the tokens and decodes from its cache; [`run_conditions_reusing`]
//! starts from the clean run's recorded residual stream at each row's earliest ablated layer and
//! decodes only where a row's greedy choice leaves the clean answer.

use std::collections::BTreeMap;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::ablation::head_set_ablation;
use super::Subject;
use crate::engine::decoder::Decoder;
use crate::engine::generate::{
    answer_logprob_per_row, log_softmax_row, top_k, AnswerState, Recorded,
};
use crate::engine::{
    AblationKind, Capture, Engine, Hooks, KvCache, LayerKv, Positions, Recording, Start,
};
use crate::{Error, Result};

/// A head as `(layer, head)`.
pub type Head = (usize, usize);

/// Where the ablation acts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AblatedPositions {
    /// Every position, prompt included (the default).
    #[default]
    All,
    /// Only the generated tokens; the prompt runs clean (as Wu et al.'s ablation code does).
    DecodeOnly,
}

impl AblatedPositions {
    pub fn label(self) -> &'static str {
        match self {
            AblatedPositions::All => "all",
            AblatedPositions::DecodeOnly => "decode-only",
        }
    }
}

impl std::str::FromStr for AblatedPositions {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "all" => Ok(AblatedPositions::All),
            "decode-only" | "decode" => Ok(AblatedPositions::DecodeOnly),
            _ => Err(format!("unknown positions `{s}` (use all or decode-only)")),
        }
    }
}

/// How the ablated rows decode: where the ablation acts and how many tokens a row may generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AblatedDecoding {
    pub positions: AblatedPositions,
    pub max_new_tokens: usize,
}

/// What the fast ablation path needs from a test sample's clean generation: with positions `all`
/// the residual stream entering every layer (an ablated forward starts at its earliest ablated
/// layer from it); with `decode-only`, nothing beyond the generation's cache.
pub fn clean_recording(positions: AblatedPositions) -> Recording {
    Recording {
        resid_pre: positions == AblatedPositions::All,
        ..Recording::default()
    }
}

/// Each row's greedy answer ids and the clean answer's log-prob, row `r` ablating `sets[r]`.
pub fn run_conditions(
    engine: &Engine,
    subject: &Subject,
    sets: &[Vec<Head>],
    kind: &AblationKind,
    cfg: &AblatedDecoding,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Vec<(Vec<u32>, f64)>> {
    let ablation = head_set_ablation(engine, sets, kind)?;
    let hooks = Hooks {
        head_ablation: Some(ablation),
        ..Default::default()
    };
    let rows = sets.len();
    let p = subject.prompt.ids.len();
    let answer = subject.answer_ids();
    let (cache, first_rows, logprobs) = match cfg.positions {
        AblatedPositions::All => {
            let ids = subject.teacher_forced_ids();
            let input = engine.ids_rows(&ids, rows)?;
            let mut trace = engine.forward(
                Start::Tokens(&input),
                None,
                &Hooks {
                    capture: Capture {
                        logits: Some(subject.answer_rows()),
                        kv_cache: true,
                        ..Default::default()
                    },
                    ..hooks.clone()
                },
            )?;
            let logits = trace.take_logits()?;
            let logprobs = answer_logprob_per_row(&logits, answer)?;
            let first = logits
                .narrow(1, 0, 1)?
                .squeeze(1)?
                .to_dtype(candle_core::DType::F32)?
                .to_device(&candle_core::Device::Cpu)?
                .to_vec2::<f32>()?;
            (trace.take_kv_cache()?.truncate(p)?, first, logprobs)
        }
        AblatedPositions::DecodeOnly => decode_only_start(engine, subject, &hooks, rows)?,
    };
    if !keep_going() {
        return Err(Error::Cancelled);
    }
    let mut decoder = Decoder::resume_rows(engine, &hooks, cache, rows, engine.stop_ids());
    let max_new = cfg
        .max_new_tokens
        .min(engine.info().context_length.saturating_sub(p));
    let answers = decoder.greedy_rows(Some(first_rows), max_new, keep_going)?;
    Ok(answers.into_iter().zip(logprobs).collect())
}

/// The decoding start of a batch: the rows' cache, each row's first-token logits, and each row's
/// clean-answer log-prob.
type DecodeStart = (crate::engine::KvCache, Vec<Vec<f32>>, Vec<f64>);

/// The keys, values and logits the clean run left (decode-only rows start from them).
fn clean_state(subject: &Subject) -> Result<&AnswerState> {
    subject
        .state
        .as_ref()
        .ok_or_else(|| Error::Analysis("the clean run left no cache to decode from".into()))
}

/// Decode-only: the clean prompt's cache for every row, its first-token logits, and the clean
/// answer's log-prob with the answer positions ablated (the first token is read from the clean
/// prompt, so its log-prob is the clean one).
fn decode_only_start(
    engine: &Engine,
    subject: &Subject,
    hooks: &Hooks,
    rows: usize,
) -> Result<DecodeStart> {
    let p = subject.prompt.ids.len();
    let answer = subject.answer_ids();
    let state = clean_state(subject)?;
    let cache = state.kv_cache.truncate(p)?.repeat_rows(rows)?;
    let first = state.logits[0].clone();
    let first_lp = log_softmax_row(&first)[answer[0] as usize] as f64;
    let mut logprobs = vec![first_lp; rows];
    if answer.len() > 1 {
        let tail = &answer[..answer.len() - 1];
        let input = engine.ids_rows(tail, rows)?;
        let mut trace = engine.forward(
            Start::Tokens(&input),
            Some(&cache),
            &Hooks {
                capture: Capture {
                    logits: Some(Positions::All),
                    ..Default::default()
                },
                ..hooks.clone()
            },
        )?;
        let rest = answer_logprob_per_row(&trace.take_logits()?, &answer[1..])?;
        for (lp, r) in logprobs.iter_mut().zip(rest) {
            *lp += r;
        }
    }
    Ok((cache, vec![first; rows], logprobs))
}

/// The rows' caches after one teacher-forced ablated pass: below layer `first` every row's keys
/// and values are the clean run's (`clean`, one row), from it on the pass's own (`upper`).
struct PassCaches<'a> {
    clean: &'a KvCache,
    first: usize,
    upper: KvCache,
}

impl PassCaches<'_> {
    /// Layer `l`'s keys and values of row `row`, first `len` positions, `[1, H_kv, len, d_h]`.
    fn row(&self, l: usize, row: usize, len: usize) -> Result<(Tensor, Tensor)> {
        let (kv, r) = match l.checked_sub(self.first) {
            None => (&self.clean.layers[l], 0),
            Some(u) => (&self.upper.layers[u], row),
        };
        Ok((
            kv.keys().narrow(0, r, 1)?.narrow(2, 0, len)?,
            kv.values().narrow(0, r, 1)?.narrow(2, 0, len)?,
        ))
    }
}

/// A row's place: (pass, row within it).
type RowRef = (usize, usize);

/// Every row's caches over `prompt ++ answer` and its logit rows `0..=A` (row `j` predicts the
/// token after `prompt ++ answer[..j]`), from teacher-forced ablated passes.
struct TeacherPasses<'a> {
    passes: Vec<PassCaches<'a>>,
    rows: Vec<RowRef>,
    /// `[rows][A + 1][vocab]`.
    logits: LogitRows,
    logprobs: Vec<f64>,
}

impl TeacherPasses<'_> {
    /// The caches of `rows` (indices into every row) over their first `len` positions.
    fn gather(&self, rows: &[usize], len: usize, layers: usize) -> Result<KvCache> {
        let layers = (0..layers)
            .map(|l| {
                let (ks, vs): (Vec<Tensor>, Vec<Tensor>) = rows
                    .iter()
                    .map(|&r| {
                        let (pass, i) = self.rows[r];
                        self.passes[pass].row(l, i, len)
                    })
                    .collect::<Result<Vec<_>>>()?
                    .into_iter()
                    .unzip();
                Ok(LayerKv::new(Tensor::cat(&ks, 0)?, Tensor::cat(&vs, 0)?))
            })
            .collect::<Result<_>>()?;
        Ok(KvCache { layers })
    }
}

/// [`run_conditions`] without redoing what the clean run or the teacher-forced pass already did
/// (same results up to rounding):
/// * positions `all`: the layers below a row's earliest ablated layer see exactly the clean
///   inputs, so each group of rows with the same earliest layer `L` starts there from the clean
///   residual stream that the generation recorded, with the clean keys and values below `L`;
/// * both settings: the teacher-forced pass runs over the whole clean answer (`prompt ++ answer`,
///   one position more than the log-prob needs), so while a row's greedy choice follows the clean
///   answer, its next logits are that pass's; decoding starts only where a row leaves the clean
///   answer (rows that leave it at the same token decode together, batched), and a row that
///   keeps it and then stops needs no decoding at all.
pub fn run_conditions_reusing(
    engine: &Engine,
    subject: &Subject,
    clean: &Recorded,
    sets: &[Vec<Head>],
    kind: &AblationKind,
    cfg: &AblatedDecoding,
    keep_going: &mut dyn FnMut() -> bool,
) -> Result<Vec<(Vec<u32>, f64)>> {
    let teacher = match cfg.positions {
        AblatedPositions::All => teacher_from_clean(engine, subject, clean, sets, kind)?,
        AblatedPositions::DecodeOnly => teacher_decode_only(engine, subject, clean, sets, kind)?,
    };
    if !keep_going() {
        return Err(Error::Cancelled);
    }
    let p = subject.prompt.ids.len();
    let answer = subject.answer_ids();
    let max_new = cfg
        .max_new_tokens
        .min(engine.info().context_length.saturating_sub(p));
    let stops = engine.stop_ids();
    let mut out: Vec<(Vec<u32>, f64)> = Vec::with_capacity(sets.len());
    // Rows that leave the clean answer after `j` of its tokens, by `j`.
    let mut leaving: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (r, rows) in teacher.logits.iter().enumerate() {
        let mut j = 0;
        let left = loop {
            if j == max_new {
                break false;
            }
            let id = top_k(&rows[j], 1)[0].0;
            if stops.contains(&id) {
                break false;
            }
            if j < answer.len() && id == answer[j] {
                j += 1;
                continue;
            }
            break true;
        };
        if left {
            leaving.entry(j).or_default().push(r);
        }
        out.push((answer[..j].to_vec(), teacher.logprobs[r]));
    }
    let layers = engine.arch().num_layers;
    for (j, rows) in leaving {
        let cache = teacher.gather(&rows, p + j, layers)?;
        let group: Vec<Vec<Head>> = rows.iter().map(|&r| sets[r].clone()).collect();
        let hooks = Hooks {
            head_ablation: Some(head_set_ablation(engine, &group, kind)?),
            ..Default::default()
        };
        let first: Vec<Vec<f32>> = rows.iter().map(|&r| teacher.logits[r][j].clone()).collect();
        let mut decoder = Decoder::resume_rows(engine, &hooks, cache, rows.len(), stops);
        let tails = decoder.greedy_rows(Some(first), max_new - j, keep_going)?;
        for (r, tail) in rows.into_iter().zip(tails) {
            out[r].0.extend(tail);
        }
    }
    Ok(out)
}

/// Per row, its logit rows on the host: `[rows][positions][vocab]`.
type LogitRows = Vec<Vec<Vec<f32>>>;

/// Logits `[b, A + 1, V]` as host rows, and the clean answer's log-prob per row from its first
/// `A` rows.
fn logit_rows_and_logprobs(logits: &Tensor, answer: &[u32]) -> Result<(LogitRows, Vec<f64>)> {
    let logprobs = answer_logprob_per_row(&logits.narrow(1, 0, answer.len())?, answer)?;
    let rows = logits
        .to_dtype(candle_core::DType::F32)?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec3::<f32>()?;
    Ok((rows, logprobs))
}

/// Positions `all`: per earliest ablated layer `L`, one pass of its rows from the clean residual
/// stream entering `L` over `prompt ++ answer`, every position ablated.
fn teacher_from_clean<'a>(
    engine: &Engine,
    subject: &Subject,
    clean: &'a Recorded,
    sets: &[Vec<Head>],
    kind: &AblationKind,
) -> Result<TeacherPasses<'a>> {
    let p = subject.prompt.ids.len();
    let answer = subject.answer_ids();
    let total = p + answer.len();
    if clean.cache.len() != total {
        return Err(Error::Analysis(format!(
            "the clean run covers {} positions, not the {total} of prompt and answer",
            clean.cache.len()
        )));
    }
    let mut by_layer: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (r, set) in sets.iter().enumerate() {
        let first = set.iter().map(|h| h.0).min().unwrap_or(0);
        by_layer.entry(first).or_default().push(r);
    }
    let mut t = TeacherPasses {
        passes: Vec::new(),
        rows: vec![(0, 0); sets.len()],
        logits: vec![Vec::new(); sets.len()],
        logprobs: vec![0.0; sets.len()],
    };
    for (first, rows) in by_layer {
        let group: Vec<Vec<Head>> = rows.iter().map(|&r| sets[r].clone()).collect();
        let resid = clean.resid_pre(first)?;
        let (_, _, d) = resid.dims3()?;
        let resid = resid.broadcast_as((rows.len(), total, d))?.contiguous()?;
        let mut trace = engine.forward(
            Start::ResidPre {
                layer: first,
                resid,
            },
            None,
            &Hooks {
                head_ablation: Some(head_set_ablation(engine, &group, kind)?),
                capture: Capture {
                    logits: Some(Positions::Range(p - 1..total)),
                    kv_cache: true,
                    ..Default::default()
                },
                ..Default::default()
            },
        )?;
        let (logits, logprobs) = logit_rows_and_logprobs(&trace.take_logits()?, answer)?;
        let pass = t.passes.len();
        t.passes.push(PassCaches {
            clean: &clean.cache,
            first,
            upper: trace.take_kv_cache()?,
        });
        for (i, ((r, l), lp)) in rows.into_iter().zip(logits).zip(logprobs).enumerate() {
            t.rows[r] = (pass, i);
            t.logits[r] = l;
            t.logprobs[r] = lp;
        }
    }
    Ok(t)
}

/// Decode-only: the clean prompt's cache for every row, the clean first-token logits, and one
/// pass over the whole answer with its positions ablated.
fn teacher_decode_only<'a>(
    engine: &Engine,
    subject: &Subject,
    clean: &'a Recorded,
    sets: &[Vec<Head>],
    kind: &AblationKind,
) -> Result<TeacherPasses<'a>> {
    let p = subject.prompt.ids.len();
    let answer = subject.answer_ids();
    let state = clean_state(subject)?;
    let rows = sets.len();
    let cache = clean.cache.truncate(p)?.repeat_rows(rows)?;
    let input = engine.ids_rows(answer, rows)?;
    let mut trace = engine.forward(
        Start::Tokens(&input),
        Some(&cache),
        &Hooks {
            head_ablation: Some(head_set_ablation(engine, sets, kind)?),
            capture: Capture {
                logits: Some(Positions::All),
                kv_cache: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    // As in `decode_only_start`: the first token is read from the clean prompt.
    let first = state.logits[0].clone();
    let first_lp = log_softmax_row(&first)[answer[0] as usize] as f64;
    let tail_logits = trace.take_logits()?;
    let rest = match answer.len() {
        1 => vec![0.0; rows],
        a => answer_logprob_per_row(&tail_logits.narrow(1, 0, a - 1)?, &answer[1..])?,
    };
    let tail = tail_logits
        .to_dtype(candle_core::DType::F32)?
        .to_device(&candle_core::Device::Cpu)?
        .to_vec3::<f32>()?;
    let logits = tail
        .into_iter()
        .map(|mut r| {
            r.insert(0, first.clone());
            r
        })
        .collect();
    Ok(TeacherPasses {
        passes: vec![PassCaches {
            clean: &clean.cache,
            first: 0,
            upper: trace.take_kv_cache()?,
        }],
        rows: (0..rows).map(|i| (0, i)).collect(),
        logits,
        logprobs: rest.into_iter().map(|r| first_lp + r).collect(),
    })
}
