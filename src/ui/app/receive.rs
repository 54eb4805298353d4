//! The worker's messages. Each names its job; messages of a job that is no longer in flight
//! (superseded or cancelled) are ignored.

use super::{AnswerView, App, Effect, JobSpec, LiveResult, Outcome, WorkerMsg};
use crate::analysis::report::AnalysisReport;
use crate::analysis::AnswerSource;

impl App {
    pub(super) fn receive(&mut self, msg: WorkerMsg) -> Vec<Effect> {
        match msg {
            WorkerMsg::Progress {
                id,
                step,
                done,
                total,
                elapsed_s,
            } => self.jobs.progress(id, step, done, total, elapsed_s),
            WorkerMsg::ModelLoaded { id, info, seconds } => {
                if self.jobs.is_current(id) {
                    self.info = Some(info);
                    self.jobs.last_job = Some(("load model".into(), seconds));
                }
            }
            WorkerMsg::Token { id, text } => {
                if self.jobs.is_current(id) {
                    self.view.push_token(text);
                }
            }
            WorkerMsg::Answer { id, answer } => {
                if self.jobs.is_current(id) {
                    self.view.answer = answer;
                    self.clamp_token();
                }
            }
            WorkerMsg::Report { id, report } => self.report_arrived(id, *report),
            WorkerMsg::Live { id, result } => {
                if self.jobs.is_current(id) {
                    self.live_arrived(*result);
                }
            }
            WorkerMsg::Finished {
                id,
                seconds,
                outcome,
            } => return self.finished(id, seconds, outcome),
        }
        vec![]
    }

    /// A stage's (or the sentences') results join those shown.
    fn report_arrived(&mut self, id: u64, report: AnalysisReport) {
        let Some(spec) = self.jobs.current(id) else {
            return;
        };
        let sentences = matches!(spec, JobSpec::Sentences { .. });
        self.view.merge(sentences, report);
        self.follow_top_source();
    }

    /// The re-run is for the set as it was when sent; a set emptied since then stays unablated.
    fn live_arrived(&mut self, result: LiveResult) {
        let answer = AnswerView {
            tokens: result.tokens.clone(),
            logprobs: result.run.answer_logprobs.clone(),
            text: result.run.answer_text.clone(),
            source: Some(AnswerSource::Generated),
            complete: true,
        };
        if !self.editor.set.is_empty() {
            self.enter_view(result.run.set.clone(), answer);
        }
        self.editor.live = Some(result);
    }

    fn finished(&mut self, id: u64, seconds: f64, outcome: Outcome) -> Vec<Effect> {
        let Some(r) = self.jobs.finish(id, seconds) else {
            return vec![];
        };
        match (&r.spec, outcome) {
            (JobSpec::Open, Outcome::Done) => {
                self.jobs.opened = true;
                self.view.answer.complete = true;
            }
            (JobSpec::Analyze { stage, .. }, Outcome::Done) => self.view.stage_done(*stage),
            (_, Outcome::Done) | (_, Outcome::Cancelled) => {}
            (spec, Outcome::Failed(msg)) => self.job_failed(spec, &msg),
        }
        self.schedule()
    }

    /// A failed job is reported on the status line and not retried.
    fn job_failed(&mut self, spec: &JobSpec, msg: &str) {
        self.set_error(format!("{} failed: {msg}", spec.label()));
        match spec {
            JobSpec::Open => self.jobs.open_failed = true,
            JobSpec::Analyze { stage, .. } => self.view.stage_failed(*stage),
            JobSpec::Sentences { .. } => self.view.sentences_failed = true,
            JobSpec::Live(_) => {}
        }
    }
}
