//! The logit lens (nostalgebraist 2020; TransformerLens `accumulated_resid` + `apply_ln`): every
//! layer's residual stream at `resid_pre`, `resid_mid` and `resid_post`, decoded by the final norm and
//! the unembedding, at every answer-predicting position. The ARC-JSD paper's "decoded token heatmaps"
//! are the `mid` and `post` rows of this grid.

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::divergence::log_softmax;
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
    for l in 0..layers {
        for (point, hook) in [
            ("pre", "hook_resid_pre"),
            ("mid", "hook_resid_mid"),
            ("post", "hook_resid_post"),
        ] {
            let resid = trace.get(&format!("blocks.{l}.{hook}"))?;
            let cells = decode_cells(engine, resid, answer, top, &texts)?;
            out.push(LensRow {
                label: format!("{l}_{point}"),
                layer: l,
                point: point.to_string(),
                cells,
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

/// Decodes `[1, A, d]` residuals: one cell per answer token.
fn decode_cells(
    engine: &Engine,
    resid: &Tensor,
    answer: &[u32],
    top: usize,
    texts: &dyn Fn(&[u32]) -> Vec<String>,
) -> Result<Vec<LensCell>> {
    let logits = engine
        .unembed(resid)?
        .squeeze(0)?
        .to_device(&Device::Cpu)?
        .to_vec2::<f32>()?;
    Ok(logits
        .iter()
        .zip(answer)
        .map(|(row, &id)| {
            let lp = log_softmax(row);
            let best = top_k(row, top);
            let names = texts(&best.iter().map(|b| b.0).collect::<Vec<_>>());
            let target = row[id as usize];
            LensCell {
                top: best
                    .iter()
                    .zip(names)
                    .map(|(&(i, _), token)| LensToken {
                        id: i,
                        token,
                        prob: lp[i as usize].exp(),
                    })
                    .collect(),
                answer_prob: lp[id as usize].exp(),
                answer_rank: row.iter().filter(|&&x| x > target).count(),
            }
        })
        .collect())
}
