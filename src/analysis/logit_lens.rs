//! The logit lens (nostalgebraist 2020; TransformerLens `accumulated_resid` + `apply_ln`): every
//! layer's residual stream at `resid_pre`, `resid_mid` and `resid_post`, decoded by the final norm and
//! the unembedding, at every answer-predicting position. The ARC-JSD paper's "decoded token heatmaps"
//! are the `mid` and `post` rows of this grid.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Progress, Subject};
use crate::engine::generate::top_k;
use crate::engine::{Capture, Engine, Hooks, Start};
use crate::{Error, Result};

/// One decoded token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LensToken {
    pub id: u32,
    pub token: String,
    pub prob: f64,
}

/// One cell: a residual stream at one answer-predicting position.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LensCell {
    pub top: Vec<LensToken>,
    /// Probability of the answer token this position actually predicts.
    pub answer_prob: f64,
    /// Vocabulary entries with a strictly larger lens logit (0 = the lens's top-1).
    pub answer_rank: usize,
}

/// One row of the grid: layer `layer` at `point` (`pre`, `mid` or `post`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LensRow {
    /// TransformerLens label: `{l}_pre`, `{l}_mid`, `{l}_post`.
    pub label: String,
    pub layer: usize,
    pub point: String,
    /// One cell per answer token.
    pub cells: Vec<LensCell>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogitLens {
    pub top_k: usize,
    /// The answer tokens (columns).
    pub answer_tokens: Vec<String>,
    /// Rows in layer order, `pre`, `mid`, `post` within a layer.
    pub rows: Vec<LensRow>,
}

/// Logit lens over every layer at the answer-predicting positions, one forward.
pub fn logit_lens(
    engine: &Engine,
    subject: &Subject,
    top: usize,
    progress: Progress,
) -> Result<LogitLens> {
    let answer = subject.answer_ids();
    let ids = subject.teacher_forced_ids();
    let rows = subject.answer_rows();
    let hooks = Hooks {
        capture: Capture {
            resid_pre: Some(rows.clone()),
            resid_mid: Some(rows.clone()),
            resid_post: Some(rows),
            ..Default::default()
        },
        ..Default::default()
    };
    let trace = engine.forward(Start::Tokens(&engine.ids_tensor(&ids)?), None, &hooks)?;
    let layers = engine.arch().num_layers;
    let mut out = Vec::with_capacity(3 * layers);
    let texts = |ids: &[u32]| engine.token_texts(ids);
    const POINTS: [(&str, &str); 3] = [
        ("pre", "hook_resid_pre"),
        ("mid", "hook_resid_mid"),
        ("post", "hook_resid_post"),
    ];
    for l in 0..layers {
        // The three points of a layer in one unembedding (3·A rows): wider products run faster.
        let resids = POINTS
            .iter()
            .map(|(_, hook)| Ok(trace.get(&format!("blocks.{l}.{hook}"))?.squeeze(0)?))
            .collect::<Result<Vec<Tensor>>>()?;
        let cells = decode_cells(engine, &Tensor::cat(&resids, 0)?, answer, top, &texts)?;
        for ((point, _), cells) in POINTS.iter().zip(cells.chunks(answer.len().max(1))) {
            out.push(LensRow {
                label: format!("{l}_{point}"),
                layer: l,
                point: point.to_string(),
                cells: cells.to_vec(),
            });
        }
        if !progress(l + 1, layers) {
            return Err(Error::Cancelled);
        }
    }
    Ok(LogitLens {
        top_k: top,
        answer_tokens: engine.token_texts(answer),
        rows: out,
    })
}

/// What a lens cell needs from one vocabulary row, computed without a log-probability row.
struct RowSummary {
    best: Vec<(u32, f32)>,
    /// `log Σ exp(logits)` in f64.
    lse: f64,
    answer_logit: f32,
    answer_rank: usize,
}

impl RowSummary {
    fn of(row: &[f32], answer_id: u32, top: usize) -> Self {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let sum: f64 = row.iter().map(|&x| (x as f64 - max).exp()).sum();
        let answer_logit = row[answer_id as usize];
        RowSummary {
            best: top_k(row, top),
            lse: max + sum.ln(),
            answer_logit,
            answer_rank: row.iter().filter(|&&x| x > answer_logit).count(),
        }
    }

    fn prob(&self, logit: f32) -> f64 {
        (logit as f64 - self.lse).exp()
    }
}

/// Decodes `[n·A, d]` residuals (n groups of the A answer-predicting positions): one cell per
/// row, row `i` predicting answer token `i mod A`.
fn decode_cells(
    engine: &Engine,
    resid: &Tensor,
    answer: &[u32],
    top: usize,
    texts: &dyn Fn(&[u32]) -> Vec<String>,
) -> Result<Vec<LensCell>> {
    let logits = engine
        .unembed(resid)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?;
    let summaries: Vec<RowSummary> = logits
        .par_iter()
        .enumerate()
        .map(|(i, row)| RowSummary::of(row, answer[i % answer.len()], top))
        .collect();
    Ok(summaries
        .into_iter()
        .map(|row| {
            let names = texts(&row.best.iter().map(|b| b.0).collect::<Vec<_>>());
            LensCell {
                top: row
                    .best
                    .iter()
                    .zip(names)
                    .map(|(&(id, logit), token)| LensToken {
                        id,
                        token,
                        prob: row.prob(logit),
                    })
                    .collect(),
                answer_prob: row.prob(row.answer_logit),
                answer_rank: row.answer_rank,
            }
        })
        .collect())
}
