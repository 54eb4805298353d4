//! Commands on the ablation set, and the swap between the unablated model's view and an ablated
//! model's once a live re-run comes back.

use super::{AblationOrigin, AblationSet, AnswerView, App, Effect, HeadScore, JobSpec, ModelView};

impl App {
    /// Space: the head (or MLP) under the heatmap cursor in or out of the set.
    pub(super) fn toggle_ablation(&mut self) -> Vec<Effect> {
        let (layers, heads) = self.dims();
        if layers == 0 {
            return vec![];
        }
        self.editor.toggle(self.panes.heatmap.cursor, heads);
        self.ablation_changed()
    }

    /// Ablates the top k heads of `score` on the unablated model (so `+`/`-` grow and shrink one
    /// ranking, whatever is ablated now).
    pub(super) fn set_top_k(&mut self, score: HeadScore) -> Vec<Effect> {
        let Some(matrix) = self.clean_report().and_then(|r| r.head_scores.get(&score)) else {
            self.set_error(format!(
                "{} is not computed yet (stage {}): cannot pick its top heads",
                score.label(),
                score.stage()
            ));
            return vec![];
        };
        let importance = score.importance(matrix);
        self.editor.take_top(score, &importance);
        self.set_status(format!(
            "ablating the top {} heads by {}",
            self.editor.set.heads.len(),
            score.label()
        ));
        self.ablation_changed()
    }

    pub(super) fn set_random(&mut self) -> Vec<Effect> {
        let (layers, heads) = self.dims();
        if layers * heads == 0 {
            return vec![];
        }
        self.editor.take_random(layers, heads);
        self.set_status(format!(
            "ablating {} random heads",
            self.editor.set.heads.len()
        ));
        self.ablation_changed()
    }

    /// `+`/`-`: a new k, and the top-k or random set redone with it.
    pub(super) fn change_k(&mut self, by: isize) -> Vec<Effect> {
        let (layers, heads) = self.dims();
        self.editor.change_k(by, layers * heads);
        let empty = self.editor.set.is_empty();
        match self.editor.origin {
            AblationOrigin::TopK(score) if !empty => self.set_top_k(score),
            AblationOrigin::Random if !empty => self.set_random(),
            _ => {
                self.set_status(format!("k = {}", self.editor.top_k));
                vec![]
            }
        }
    }

    pub(super) fn reset_ablation(&mut self) -> Vec<Effect> {
        self.editor.reset();
        self.set_status("ablation reset");
        self.ablation_changed()
    }

    pub(super) fn cycle_ablation_kind(&mut self) -> Vec<Effect> {
        self.editor.cycle_kind();
        if self.editor.set.is_empty() {
            vec![]
        } else {
            self.ablation_changed()
        }
    }

    /// After the ablation set changed: debounce a re-run, or, when nothing is ablated any more,
    /// drop the result, return to the unablated model and stop work for an ablated one.
    fn ablation_changed(&mut self) -> Vec<Effect> {
        if !self.editor.set.is_empty() {
            self.editor.dirty = true;
            return vec![Effect::Debounce];
        }
        self.editor.clear_live();
        self.leave_view();
        if self.jobs.drop_ablated_work() {
            let mut e = vec![Effect::Cancel];
            e.extend(self.schedule());
            return e;
        }
        self.schedule()
    }

    /// Starts the live re-run now (superseding whatever analysis runs), if it can run.
    pub(super) fn run_live_now(&mut self) -> Vec<Effect> {
        if !self.jobs.opened || self.editor.set.is_empty() {
            return vec![];
        }
        if self.jobs.running_is(|s| matches!(s, JobSpec::Open)) {
            self.editor.dirty = true;
            return vec![];
        }
        let set = self.editor.set.clone();
        vec![self.submit(JobSpec::Live(set))]
    }

    /// The panes now show the model with `set` ablated: keep the unablated view aside (when
    /// leaving it) and start the analyses over. The answer is the re-run's until the worker sends
    /// the ablated model's own scores for it.
    pub(crate) fn enter_view(&mut self, set: AblationSet, answer: AnswerView) {
        if set == self.view.under {
            return;
        }
        let previous = std::mem::replace(&mut self.view, ModelView::new(set, answer));
        if previous.is_clean() {
            self.clean = Some(Box::new(previous));
        }
        self.clamp_token();
        self.follow_top_source();
    }

    /// Back to the unablated model's view.
    fn leave_view(&mut self) {
        let Some(clean) = self.clean.take() else {
            return;
        };
        self.view = *clean;
        self.clamp_token();
        self.follow_top_source();
    }
}
