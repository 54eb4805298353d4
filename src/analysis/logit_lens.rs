//! The logit lens (nostalgebraist 2020; TransformerLens `accumulated_resid` + `apply_ln`): every
//! layer's residual stream at `resid_pre`, `resid_mid` and `resid_post`, decoded by the final norm and
//! the unembedding, at every answer-predicting position. The ARC-JSD paper's "decoded token heatmaps"
//! are the `mid` and `post` rows of this grid.

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::{Progress, Subject};
use crate::engine::generate::top_k;
use crate::engine::{Capture, Engine};
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

/// Logit lens over every layer at the answer-predicting positions, from one teacher-forced pass
/// (only the answer-predicting positions, from the answer pass's keys and values, when the
/// subject kept them: [`Subject::teacher_forced_pass`]).
///
/// A layer's `pre` stream is the previous layer's `post` stream, so only `pre` of layer 0 and
/// every layer's `mid` and `post` are unembedded (a third fewer vocabulary products), several
/// layers per product (one packing of the unembedding serves them all).
pub fn logit_lens(
    engine: &Engine,
    subject: &Subject,
    top: usize,
    progress: Progress,
) -> Result<LogitLens> {
    let answer = subject.answer_ids();
    let trace = subject.teacher_forced_pass(engine, &subject.prompt.ids, |rows| Capture {
        resid_pre: Some(rows.clone()),
        resid_mid: Some(rows.clone()),
        resid_post: Some(rows),
        ..Default::default()
    })?;
    let layers = engine.arch().num_layers;
    let resid = |l: usize, hook: &str| -> Result<Tensor> {
        Ok(trace.get(&format!("blocks.{l}.{hook}"))?.squeeze(0)?)
    };
    let texts = |ids: &[u32]| engine.token_texts(ids);
    let a = answer.len().max(1);
    // Layers per vocabulary product: a logits block of at most LENS_BLOCK_FLOATS.
    let vocab = engine.arch().vocab_size.max(1);
    let per_product = (LENS_BLOCK_FLOATS / (2 * a * vocab)).clamp(1, layers.max(1));
    let mut out = Vec::with_capacity(3 * layers);
    let mut previous_post: Option<Vec<LensCell>> = None;
    for first in (0..layers).step_by(per_product) {
        let block = first..(first + per_product).min(layers);
        // `mid` and `post` of each layer in the block (2·A rows per layer), in one product.
        let mut streams = Vec::with_capacity(2 * block.len() + 1);
        if first == 0 {
            streams.push(resid(0, "hook_resid_pre")?);
        }
        for l in block.clone() {
            streams.push(resid(l, "hook_resid_mid")?);
            streams.push(resid(l, "hook_resid_post")?);
        }
        let cells = decode_cells(engine, &Tensor::cat(&streams, 0)?, answer, top, &texts)?;
        let mut groups = cells.chunks(a).map(<[LensCell]>::to_vec);
        if first == 0 {
            previous_post = groups.next();
        }
        for l in block {
            let pre = previous_post
                .take()
                .ok_or_else(|| Error::Analysis("logit lens: a missing row".into()))?;
            let mid = groups.next().unwrap_or_default();
            let post = groups.next().unwrap_or_default();
            for (point, cells) in [("pre", pre), ("mid", mid), ("post", post.clone())] {
                out.push(LensRow {
                    label: format!("{l}_{point}"),
                    layer: l,
                    point: point.to_string(),
                    cells,
                });
            }
            previous_post = Some(post);
            if !progress(l + 1, layers) {
                return Err(Error::Cancelled);
            }
        }
    }
    Ok(LogitLens {
        top_k: top,
        answer_tokens: engine.token_texts(answer),
        rows: out,
    })
}

/// The most logits one lens product computes at once (64 Mi floats, 256 MiB): 25 of SmolLM2's
/// layers per product on a 27-token answer, 6 of Qwen2-1.5B's (its vocabulary is 3× wider).
const LENS_BLOCK_FLOATS: usize = 1 << 26;

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
        .flatten_all()?
        .to_vec1::<f32>()?;
    let vocab = engine.arch().vocab_size;
    let summaries: Vec<RowSummary> = logits
        .par_chunks(vocab)
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
