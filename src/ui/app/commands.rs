//! The user's commands, each dispatched to a small method of the room it changes.

use super::{cycle, App, Attribution, Command, Effect, HeadScore, JobSpec, LensPoint, Pane};

impl App {
    pub(super) fn command(&mut self, c: Command) -> Vec<Effect> {
        use Command::*;
        if self.show_help && !matches!(c, Help | Cancel | Quit | Up | Down | PageUp | PageDown) {
            return vec![];
        }
        match c {
            Quit => self.quit(),
            Help => self.toggle_help(),
            NextPane => self.focus_on(self.focus.step(1)),
            PrevPane => self.focus_on(self.focus.step(-1)),
            FocusAnswer | FocusSample | FocusHeatmap | FocusLens | FocusAttribution
            | FocusAblation => match Pane::focused_by(c) {
                Some(p) => self.focus_on(p),
                None => vec![],
            },
            Left | Right if self.focus == Pane::Ablation && !self.show_help => {
                self.change_k(if c == Left { -1 } else { 1 })
            }
            Left | Right | Up | Down | PageUp | PageDown | Home | End => self.movement(c),
            PrevToken => self.move_token(-1),
            NextToken => self.move_token(1),
            CycleHeadScore => self.cycle_head_score(),
            CycleAttribution => self.cycle_attribution(),
            ToggleSentences => self.toggle_sentences(),
            CycleLensPoint => self.cycle_lens_point(),
            ToggleRank => self.toggle_rank(),
            ToggleAblation => self.toggle_ablation(),
            AblateTopK => self.set_top_k(self.panes.heatmap.score),
            AblateRandom => self.set_random(),
            ResetAblation => self.reset_ablation(),
            MoreK => self.change_k(1),
            FewerK => self.change_k(-1),
            CycleAblationKind => self.cycle_ablation_kind(),
            Rerun => self.rerun(),
            Cancel => self.cancel(),
            Export => vec![Effect::Export],
            CycleShared | NextShared | ToggleBroken => vec![],
        }
    }

    fn quit(&mut self) -> Vec<Effect> {
        self.quit = true;
        vec![Effect::Cancel, Effect::Quit]
    }

    fn toggle_help(&mut self) -> Vec<Effect> {
        self.show_help = !self.show_help;
        self.panes.help.scroll.home();
        vec![]
    }

    fn focus_on(&mut self, pane: Pane) -> Vec<Effect> {
        self.focus = pane;
        vec![]
    }

    fn cycle_head_score(&mut self) -> Vec<Effect> {
        let h = &mut self.panes.heatmap;
        h.score = cycle(&HeadScore::ALL, h.score);
        vec![]
    }

    fn cycle_attribution(&mut self) -> Vec<Effect> {
        let a = &mut self.panes.attribution;
        a.method = cycle(&Attribution::ALL, a.method);
        self.follow_top_source();
        vec![]
    }

    /// Documents ⇄ sentences. Sentences asked for now go before the remaining analysis stages.
    fn toggle_sentences(&mut self) -> Vec<Effect> {
        let sentences = self.panes.attribution.toggle_sentences();
        self.follow_top_source();
        self.panes.sample.follow = true;
        if !sentences || self.view.sentence_report.is_some() || !self.jobs.opened {
            return vec![];
        }
        if self
            .jobs
            .running_is(|s| matches!(s, JobSpec::Analyze { .. }))
        {
            let under = self.view.under.clone();
            return vec![self.submit(JobSpec::Sentences { under })];
        }
        self.schedule()
    }

    fn cycle_lens_point(&mut self) -> Vec<Effect> {
        self.panes.lens.point = cycle(&LensPoint::ALL, self.panes.lens.point);
        let rows = self.lens_rows();
        self.panes.lens.clamp_row(rows);
        vec![]
    }

    fn toggle_rank(&mut self) -> Vec<Effect> {
        self.panes.lens.rank = !self.panes.lens.rank;
        vec![]
    }

    /// Enter: resume after esc, and run a pending live re-run now.
    fn rerun(&mut self) -> Vec<Effect> {
        self.jobs.paused = false;
        if !self.editor.set.is_empty() {
            let e = self.run_live_now();
            if !e.is_empty() {
                return e;
            }
        }
        self.schedule()
    }

    /// Esc: close the help, go back to the study the sample was opened from, or stop the work
    /// until enter.
    fn cancel(&mut self) -> Vec<Effect> {
        if self.show_help {
            self.show_help = false;
            return vec![];
        }
        if self.returns_to_study {
            self.back = true;
            self.quit = true;
            return vec![Effect::Cancel, Effect::Quit];
        }
        match self.jobs.running.take() {
            Some(r) => {
                self.jobs.paused = true;
                self.editor.dirty = false;
                self.set_status(format!("cancelled {}; enter resumes", r.spec.label()));
                vec![Effect::Cancel]
            }
            None => vec![],
        }
    }
}
