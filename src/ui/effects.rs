//! The one interpreter of [`Effect`]s, shared by the terminal's event loop and the headless
//! screenshot driver so that the two cannot diverge. They differ only in how an effect reaches
//! the world (a [`Carrier`]): a wall-clock debounce timer or none, the terminal's size or a fixed
//! one. The order is the same for both: actions are applied first in, first out, and the action
//! an effect produces queues behind those already waiting.

use std::collections::VecDeque;
use std::path::PathBuf;

use anyhow::Result;

use super::app::{update, Action, App, Effect, Job};

/// Where effects go.
pub trait Carrier {
    /// Sends a job to the worker (it supersedes the one in flight).
    fn submit(&mut self, job: Job);
    /// Cancels the job in flight.
    fn cancel(&mut self);
    /// (Re)starts the quiet time before a live re-run. Returns the action to queue now where
    /// there is no clock to wait on.
    fn debounce(&mut self) -> Option<Action>;
    /// Writes the current screen: the files, or why not. `Err` when the loop cannot go on.
    fn export(&mut self, app: &App) -> Result<Result<Vec<PathBuf>, String>>;
}

/// Applies the queued actions in order, and the actions their effects produce after them, until
/// the queue is empty. Returns how many actions were applied.
pub fn drain(app: &mut App, queue: &mut VecDeque<Action>, to: &mut impl Carrier) -> Result<usize> {
    let mut applied = 0;
    while let Some(action) = queue.pop_front() {
        for effect in update(app, action) {
            match effect {
                Effect::Submit(job) => to.submit(job),
                Effect::Cancel => to.cancel(),
                Effect::Debounce => queue.extend(to.debounce()),
                Effect::Export => {
                    let written = to.export(app)?;
                    queue.push_back(Action::Exported(written));
                }
                Effect::Quit => {}
            }
        }
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ui::app::{Command, JobSpec};
    use crate::ui::demo::demo_app;

    /// Records what reaches the world, in order.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Carrier for Log {
        fn submit(&mut self, job: Job) {
            self.0.push(format!("submit {}", job.spec.label()));
        }
        fn cancel(&mut self) {
            self.0.push("cancel".into());
        }
        fn debounce(&mut self) -> Option<Action> {
            self.0.push("debounce".into());
            Some(Action::DebounceElapsed)
        }
        fn export(&mut self, _: &App) -> Result<Result<Vec<PathBuf>, String>> {
            self.0.push("export".into());
            Ok(Ok(vec![PathBuf::from("shot.svg")]))
        }
    }

    #[test]
    fn actions_and_their_follow_ups_run_first_in_first_out() {
        let mut app = demo_app(3, 3, 4);
        app.editor.set = Default::default();
        app.editor.live = None;
        app.panes.heatmap.cursor = (1, 1);
        let mut queue = VecDeque::from([
            Action::Command(Command::ToggleAblation),
            Action::Command(Command::Export),
        ]);
        let mut log = Log::default();
        let n = drain(&mut app, &mut queue, &mut log).unwrap();
        // The debounce's follow-up waits behind the export queued before it.
        assert_eq!(log.0, ["debounce", "export", "submit ablation (1)"]);
        assert_eq!(n, 4);
        assert!(app.status.as_ref().unwrap().text.contains("shot.svg"));
        assert!(matches!(
            app.jobs.running.as_ref().unwrap().spec,
            JobSpec::Live(_)
        ));
    }
}
