//! A model's view: the answer and the results the panes show for one model (the unablated one,
//! or the one under an ablation). The app keeps the one shown and, while an ablated model is
//! shown, the unablated one aside, and swaps them whole.

use super::jobs::{JobSpec, STAGES};
use super::AblationSet;
use crate::analysis::report::AnalysisReport;
use crate::analysis::AnswerSource;

/// The answer as the panes show it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnswerView {
    pub tokens: Vec<String>,
    pub logprobs: Vec<f32>,
    pub text: String,
    pub source: Option<AnswerSource>,
    /// False while tokens are still streaming in.
    pub complete: bool,
}

impl AnswerView {
    pub fn total_logprob(&self) -> f64 {
        self.logprobs.iter().map(|&x| x as f64).sum()
    }
}

/// Everything computed for one model, and how far its analyses got.
#[derive(Clone, Debug, Default)]
pub struct ModelView {
    /// The ablation the answer and every report are for (empty: the unablated model).
    pub under: AblationSet,
    pub answer: AnswerView,
    /// Document-granularity results, merged stage by stage.
    pub report: Option<AnalysisReport>,
    /// Sentence-granularity attributions, once asked for.
    pub sentence_report: Option<AnalysisReport>,
    /// The first stage of [`STAGES`] not yet run.
    pub next_stage: usize,
    pub failed_stages: Vec<usize>,
    pub sentences_failed: bool,
}

impl ModelView {
    /// A model under `under` whose answer is `answer` and whose analyses start over.
    pub fn new(under: AblationSet, answer: AnswerView) -> ModelView {
        ModelView {
            under,
            answer,
            ..ModelView::default()
        }
    }

    /// Is this the unablated model?
    pub fn is_clean(&self) -> bool {
        self.under.is_empty()
    }

    /// Every stage has run (or failed).
    pub fn stages_done(&self) -> bool {
        self.next_stage >= STAGES.len()
    }

    /// Sentence attributions neither computed nor failed.
    pub fn sentences_pending(&self) -> bool {
        self.sentence_report.is_none() && !self.sentences_failed
    }

    /// The next analysis for this model: sentence attributions when `sentences` asks and they
    /// are missing, then the remaining stages.
    pub fn next_job(&self, sentences: bool) -> Option<JobSpec> {
        let under = self.under.clone();
        if sentences && self.sentences_pending() {
            return Some(JobSpec::Sentences { under });
        }
        (!self.stages_done()).then_some(JobSpec::Analyze {
            stage: self.next_stage,
            under,
        })
    }

    /// Folds a stage's report in (a sentence-granularity one into `sentence_report`).
    pub fn merge(&mut self, sentences: bool, report: AnalysisReport) {
        let slot = if sentences {
            &mut self.sentence_report
        } else {
            &mut self.report
        };
        match slot {
            Some(existing) => existing.merge(report),
            None => *slot = Some(report),
        }
    }

    pub fn stage_done(&mut self, stage: usize) {
        self.next_stage = self.next_stage.max(stage + 1);
    }

    /// A failed stage is reported and skipped.
    pub fn stage_failed(&mut self, stage: usize) {
        self.failed_stages.push(stage);
        self.stage_done(stage);
    }

    /// Tokens streamed in while the answer is generated.
    pub fn push_token(&mut self, text: String) {
        self.answer.text.push_str(&text);
        self.answer.tokens.push(text);
        self.answer.complete = false;
    }
}
