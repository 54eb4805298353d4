//! Attention-mass analyses, from one forward that sums each head's attention over source spans
//! (never materialising `T × T` patterns for more than the captured query rows):
//!
//! * `heads:summed-attention` — the attention the last prompt token (or, optionally, each
//!   answer-predicting position) pays to the target document, per head: the study plan's first
//!   method, and the "attention weights" baseline of ContextCite and ARC-JSD;
//! * `attr:attention` — the mean attention from the answer-predicting positions to each source,
//!   over all layers and heads: the baseline every attribution paper compares with.

use std::ops::Range;

use candle_core::Device;
use serde::{Deserialize, Serialize};

use super::Subject;
use crate::engine::{Capture, Engine};
use crate::prompt::Granularity;
use crate::Result;

/// `[layers][heads][answer position][span]` attention mass.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SpanAttention {
    pub mass: Vec<Vec<Vec<Vec<f64>>>>,
}

/// Attention from every answer-predicting position to each key span, summed over the span.
pub fn span_attention(
    engine: &Engine,
    subject: &Subject,
    spans: &[Range<usize>],
) -> Result<SpanAttention> {
    let trace = subject.teacher_forced_pass(engine, &subject.prompt.ids, |rows| Capture {
        attn_span_sums: Some((rows, spans.to_vec())),
        ..Default::default()
    })?;
    let layers = engine.arch().num_layers;
    let mass = (0..layers)
        .map(|l| {
            // [1, H, A, S]
            let t = trace.get(&format!("blocks.{l}.attn.hook_pattern_span_sum"))?;
            let v = t
                .squeeze(0)?
                .to_dtype(candle_core::DType::F64)?
                .to_device(&Device::Cpu)?
                .to_vec3::<f64>()?;
            Ok(v)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(SpanAttention { mass })
}

/// `heads:summed-attention`: mass on span `target` from the last prompt token, or the mean over all
/// answer-predicting positions with `from_answer`.
pub fn summed_attention(att: &SpanAttention, target: usize, from_answer: bool) -> Vec<Vec<f64>> {
    att.mass
        .iter()
        .map(|layer| {
            layer
                .iter()
                .map(|head| {
                    if from_answer {
                        head.iter().map(|row| row[target]).sum::<f64>() / head.len() as f64
                    } else {
                        head[0][target]
                    }
                })
                .collect()
        })
        .collect()
}

/// `attr:attention`: per span, the mean over layers, heads and answer-predicting positions.
pub fn attention_attribution(att: &SpanAttention, n_spans: usize) -> Vec<f64> {
    let mut sums = vec![0.0; n_spans];
    let mut count = 0usize;
    for layer in &att.mass {
        for head in layer {
            for row in head {
                for (s, v) in sums.iter_mut().zip(row) {
                    *s += v;
                }
                count += 1;
            }
        }
    }
    sums.iter().map(|s| s / count.max(1) as f64).collect()
}

/// The document the head scores look at: the sample's `gold`, else the document the answer
/// attends to most (`attr:attention` at document granularity).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetDocument {
    pub index: usize,
    /// `gold` or `attention`.
    pub chosen_by: String,
}

pub fn target_document(subject: &Subject, doc_attention: &[f64]) -> TargetDocument {
    match subject.sample.gold() {
        Some(g) if g < subject.prompt.docs.len() => TargetDocument {
            index: g,
            chosen_by: "gold".into(),
        },
        _ => TargetDocument {
            index: super::ranking(doc_attention)[0],
            chosen_by: "attention".into(),
        },
    }
}

/// Token spans of the sources at a granularity.
pub fn source_token_spans(subject: &Subject, granularity: Granularity) -> Vec<Range<usize>> {
    subject
        .sources(granularity)
        .into_iter()
        .map(|s| s.tokens)
        .collect()
}
