//! QRHead (Zhang, Yin, Yen, Chen, Ye, "Query-Focused Retrieval Heads Improve Long-Context Reasoning
//! and Re-ranking", EMNLP 2025; ANALYSES.md `heads:qrhead`): attention from the query span to each
//! document, averaged over query tokens, calibrated by subtracting the same statistic for the null
//! query "N/A" (run from the cached prefix), with tokens below mean − 2·std dropped per document.
//!
//! Only the query rows' attention is materialised (`|q| × T` per head), as in the paper's code.
//! The query span runs from the question to the end of the prompt (QRHead includes the chat
//! template's suffix). Differences: no fixed head set — every head is scored, and the matrix is
//! each head's score for the target document (the per-head detection score on one sample).

use std::ops::Range;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use super::{Progress, Subject};
use crate::engine::{Capture, Engine, Hooks, KvCache, Positions, Start};
use crate::prompt::RagPrompt;
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QrHeadScores {
    /// `[layers][heads]`: each head's calibrated score for the target document.
    pub scores: Vec<Vec<f64>>,
    pub target_document: usize,
    /// Per document, the scores summed over every head (QRHead's `full_heads` retriever).
    pub document_totals: Vec<f64>,
    /// `[layers][heads][document]`.
    pub per_document: Vec<Vec<Vec<f64>>>,
}

/// Mean over captured rows `rows` (indices into the captured rows) of each head's attention,
/// keys `0..keys`: `[L][H][keys]`.
pub fn mean_query_attention(
    engine: &Engine,
    trace: &crate::engine::Trace,
    rows: Range<usize>,
    keys: usize,
) -> Result<Vec<Vec<Vec<f64>>>> {
    (0..engine.arch().num_layers)
        .map(|l| {
            let pattern: Tensor = trace
                .get(&format!("blocks.{l}.attn.hook_pattern"))?
                .squeeze(0)?;
            let mean = pattern
                .narrow(1, rows.start, rows.len())?
                .narrow(2, 0, keys)?
                .to_dtype(DType::F64)?
                .mean(1)?
                .to_device(&Device::Cpu)?;
            Ok(mean.to_vec2::<f64>()?)
        })
        .collect()
}

/// QRHead's per-document score: sum of the calibrated attention over the document's tokens,
/// dropping tokens below mean − 2·std (unbiased std, as `torch.std`).
pub fn qr_score(x: &[f64]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let std = if x.len() > 1 {
        (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    let tau = mean - 2.0 * std;
    x.iter().filter(|&&v| v > tau).sum()
}

pub fn qrhead(
    engine: &Engine,
    subject: &Subject,
    target_document: usize,
    progress: Progress,
) -> Result<QrHeadScores> {
    let prompt = &subject.prompt;
    let (q_start, p) = query_span(prompt)?;
    let null = null_query_prompt(engine, subject)?;
    let mut trace = engine.forward(
        Start::Tokens(&engine.ids_tensor(&prompt.ids)?),
        None,
        &Hooks {
            capture: Capture {
                attn_rows: Some(Positions::Range(q_start..p)),
                kv_cache: true,
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    progress(1, 2);
    let s = mean_query_attention(engine, &trace, 0..p - q_start, q_start)?;
    let cache = trace.take_kv_cache()?;
    let s_null = null_query_attention(engine, &null, &cache, q_start)?;
    if !progress(2, 2) {
        return Err(Error::Cancelled);
    }
    Ok(calibrated(prompt, &s, &s_null, target_document))
}

/// The query's token span `q_start..p`: from the question to the end of the prompt.
pub fn query_span(prompt: &RagPrompt) -> Result<(usize, usize)> {
    let q_start = prompt.question.tokens.start;
    let p = prompt.ids.len();
    if q_start == 0 || q_start >= p {
        return Err(Error::Analysis("the prompt has no question span".into()));
    }
    if prompt.docs.iter().any(|d| d.tokens.end > q_start) {
        return Err(Error::Analysis(
            "QRHead scores the question's attention to the documents before it, but this \
             prompt writes a document after the question (see its --prompt-template)"
                .into(),
        ));
    }
    Ok((q_start, p))
}

/// The null query: the same sample asking "N/A" in the same format (an instruction before the
/// question is part of the shared prefix); it must share every token before the question.
pub fn null_query_prompt(engine: &Engine, subject: &Subject) -> Result<RagPrompt> {
    let prompt = &subject.prompt;
    let (q_start, _) = query_span(prompt)?;
    let mut null_sample = subject.sample.clone();
    null_sample.question = "N/A".into();
    let null = RagPrompt::build(
        &null_sample,
        &prompt.format,
        engine.template(),
        engine.tokenizer(),
    )?;
    if null.question.tokens.start != q_start || null.ids[..q_start] != prompt.ids[..q_start] {
        return Err(Error::Analysis(
            "the null-query prompt does not share the tokens before the question \
             (QRHead's calibration needs an identical prefix)"
                .into(),
        ));
    }
    Ok(null)
}

/// The null query's mean attention `[L][H][q_start]`, run after the first `q_start` positions of
/// `cache` (the real prompt's keys and values: the prefix is shared).
pub fn null_query_attention(
    engine: &Engine,
    null: &RagPrompt,
    cache: &KvCache,
    q_start: usize,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let cache = cache.truncate(q_start)?;
    let tail = &null.ids[q_start..];
    let null_trace = engine.forward(
        Start::Tokens(&engine.ids_tensor(tail)?),
        Some(&cache),
        &Hooks {
            capture: Capture {
                attn_rows: Some(Positions::All),
                ..Default::default()
            },
            ..Default::default()
        },
    )?;
    mean_query_attention(engine, &null_trace, 0..tail.len(), q_start)
}

/// QRHead's scores from the real (`s`) and null (`s_null`) query means `[L][H][q_start]`.
pub fn calibrated(
    prompt: &RagPrompt,
    s: &[Vec<Vec<f64>>],
    s_null: &[Vec<Vec<f64>>],
    target_document: usize,
) -> QrHeadScores {
    let q_start = prompt.question.tokens.start;
    let docs: Vec<Range<usize>> = prompt.docs.iter().map(|d| d.tokens.clone()).collect();
    let per_document: Vec<Vec<Vec<f64>>> = s
        .iter()
        .zip(s_null)
        .map(|(layer, layer_null)| {
            layer
                .iter()
                .zip(layer_null)
                .map(|(head, head_null)| {
                    let cal: Vec<f64> = head.iter().zip(head_null).map(|(a, b)| a - b).collect();
                    docs.iter()
                        .map(|d| qr_score(&cal[d.start.min(q_start)..d.end.min(q_start)]))
                        .collect()
                })
                .collect()
        })
        .collect();
    let mut document_totals = vec![0.0; docs.len()];
    for head in per_document.iter().flatten() {
        for (t, v) in document_totals.iter_mut().zip(head) {
            *t += v;
        }
    }
    QrHeadScores {
        scores: per_document
            .iter()
            .map(|layer| layer.iter().map(|h| h[target_document]).collect())
            .collect(),
        target_document,
        document_totals,
        per_document,
    }
}

#[cfg(test)]
mod tests {
    use super::qr_score;

    #[test]
    fn outliers_below_two_sd_are_dropped() {
        // One strongly negative token falls below mean − 2·std and is left out.
        let x = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, -1.0];
        let kept: f64 = 0.9;
        assert!((qr_score(&x) - kept).abs() < 1e-12);
        assert_eq!(qr_score(&[]), 0.0);
        // Strict `>` as in QRHead: a token equal to τ (one token, or a flat document) adds nothing.
        assert_eq!(qr_score(&[0.3]), 0.0);
    }
}
