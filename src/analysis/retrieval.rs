//! Retrieval heads (Wu, Wang, Xiao, Peng, Fu, "Retrieval Head Mechanistically Explains Long-Context
//! Factuality", arXiv 2404.15574; ANALYSES.md `heads:retrieval`): a head earns `1/|needle|` at each answer
//! step where its most-attended key lies inside the needle and holds the very token being produced
//! (copy-paste behaviour).
//!
//! Differences from the released detector: the answer is scored teacher-forced in one forward
//! (identical attention rows to greedy decoding of the same answer); one sample, so there is no
//! ROUGE > 50 gate over many needle tests (the report states whether the answer is correct);
//! the needle is located by character offsets (the target document, or the sample's `needle`
//! text), never by Llama-2 token-id constants.

use std::ops::Range;

use candle_core::{DType, Device};
use serde::{Deserialize, Serialize};

use super::{Progress, Subject};
use crate::engine::{Capture, Engine, Hooks, Start};
use crate::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RetrievalScores {
    /// Token range of the needle in the prompt.
    pub needle: Range<usize>,
    /// `needle` (the sample's field) or `target_document`.
    pub needle_from: String,
    /// `[layers][heads]`.
    pub scores: Vec<Vec<f64>>,
}

/// The needle's token span: the sample's `needle` text where it occurs in the prompt, else the
/// target document's span.
pub fn needle_span(subject: &Subject, target_doc: usize) -> (Range<usize>, String) {
    if let Some(needle) = subject.sample.extra.get("needle").and_then(|v| v.as_str()) {
        let needle = needle.trim();
        if !needle.is_empty() {
            let start = subject.prompt.user_message_start;
            if let Some(at) = subject.prompt.text[start..].find(needle) {
                let span = subject
                    .prompt
                    .span_of(start + at..start + at + needle.len());
                if !span.is_empty() {
                    return (span.tokens, "needle".into());
                }
            }
        }
    }
    (
        subject.prompt.docs[target_doc].tokens.clone(),
        "target_document".into(),
    )
}

pub fn retrieval_scores(
    engine: &Engine,
    subject: &Subject,
    needle: Range<usize>,
    needle_from: String,
    progress: Progress,
) -> Result<RetrievalScores> {
    if needle.is_empty() {
        return Err(Error::Analysis("the needle span is empty".into()));
    }
    let answer = subject.answer_ids();
    let ids = subject.teacher_forced_ids();
    let hooks = Hooks {
        capture: Capture {
            attn_rows: Some(subject.answer_rows()),
            ..Default::default()
        },
        ..Default::default()
    };
    let trace = engine.forward(Start::Tokens(&engine.ids_tensor(&ids)?), None, &hooks)?;
    let layers = engine.arch().num_layers;
    let mut scores = Vec::with_capacity(layers);
    for l in 0..layers {
        // [1, H, A, T]
        let rows = trace
            .get(&format!("blocks.{l}.attn.hook_pattern"))?
            .squeeze(0)?
            .to_dtype(DType::F32)?
            .to_device(&Device::Cpu)?
            .to_vec3::<f32>()?;
        scores.push(copy_paste_scores(&rows, &ids, answer, &needle));
        if !progress(l + 1, layers) {
            return Err(Error::Cancelled);
        }
    }
    Ok(RetrievalScores {
        needle,
        needle_from,
        scores,
    })
}

/// One layer's retrieval scores from its heads' attention rows `[H][A][T]` at the answer-predicting
/// positions of `ids` (the teacher-forced input): each head earns `1/|needle|` per answer token
/// whose most-attended key (first index on ties) lies in the needle and holds that very token.
pub fn copy_paste_scores(
    rows: &[Vec<Vec<f32>>],
    ids: &[u32],
    answer: &[u32],
    needle: &Range<usize>,
) -> Vec<f64> {
    let gain = 1.0 / needle.len().max(1) as f64;
    rows.iter()
        .map(|head| {
            head.iter()
                .zip(answer)
                .filter(|(row, &tok)| {
                    let j = argmax_first(row);
                    needle.contains(&j) && ids[j] == tok
                })
                .count() as f64
                * gain
        })
        .collect()
}

fn argmax_first(row: &[f32]) -> usize {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best
}
