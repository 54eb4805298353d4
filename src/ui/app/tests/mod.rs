//! `update`'s contract: which jobs start when, what the keys change, what the worker's messages do.

use std::collections::BTreeSet;

use super::*;
use crate::analysis::live::LiveRun;
use crate::analysis::top_heads;
use crate::ui::demo::demo_app;

fn cmd(app: &mut App, c: Command) -> Vec<Effect> {
    update(app, Action::Command(c))
}

fn submitted(effects: &[Effect]) -> Vec<JobSpec> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Submit(j) => Some(j.spec.clone()),
            _ => None,
        })
        .collect()
}

fn finish(app: &mut App, outcome: Outcome) -> Vec<Effect> {
    let id = app.jobs.running.as_ref().expect("a job runs").id;
    update(
        app,
        Action::Worker(WorkerMsg::Finished {
            id,
            seconds: 0.5,
            outcome,
        }),
    )
}

/// A stage on the unablated model.
fn analyze(stage: usize) -> JobSpec {
    JobSpec::Analyze {
        stage,
        under: AblationSet::default(),
    }
}

fn fresh() -> App {
    App::new("m", "s", crate::ui::default_sample().unwrap())
}

#[test]
fn start_opens_then_runs_the_stages_in_order() {
    let mut app = fresh();
    assert_eq!(
        submitted(&update(&mut app, Action::Start)),
        vec![JobSpec::Open]
    );
    assert!(!app.is_idle());
    let e = finish(&mut app, Outcome::Done);
    assert!(app.jobs.opened);
    assert_eq!(submitted(&e), vec![analyze(0)]);
    let e = finish(&mut app, Outcome::Done);
    assert_eq!(submitted(&e), vec![analyze(1)]);
    // A failed stage is reported and skipped.
    let e = finish(&mut app, Outcome::Failed("boom".into()));
    assert_eq!(submitted(&e), vec![analyze(2)]);
    assert!(app.status.as_ref().unwrap().error);
    assert_eq!(app.view.failed_stages, vec![1]);
    let e = finish(&mut app, Outcome::Done);
    assert_eq!(submitted(&e), vec![analyze(3)]);
    let e = finish(&mut app, Outcome::Done);
    assert!(e.is_empty());
    assert!(app.is_idle());
    assert_eq!(app.jobs.last_job.as_ref().unwrap().0, "stage 4/4");
}

#[test]
fn a_failed_open_stops_everything() {
    let mut app = fresh();
    update(&mut app, Action::Start);
    let e = finish(&mut app, Outcome::Failed("no such model".into()));
    assert!(e.is_empty());
    assert!(app.jobs.open_failed && app.is_idle());
    assert!(app.status.as_ref().unwrap().text.contains("no such model"));
}

#[test]
fn toggling_debounces_then_supersedes_the_running_stage() {
    let mut app = demo_app(4, 4, 10);
    app.editor.set = AblationSet::default();
    app.editor.live = None;
    app.view.next_stage = 1;
    let e = update(&mut app, Action::Start);
    assert_eq!(submitted(&e), vec![analyze(1)]);
    let stage_id = app.jobs.running.as_ref().unwrap().id;
    app.panes.heatmap.cursor = (2, 3);
    assert_eq!(
        cmd(&mut app, Command::ToggleAblation),
        vec![Effect::Debounce]
    );
    assert!(app.editor.set.heads.contains(&(2, 3)) && app.editor.dirty);
    // A second toggle inside the quiet time only restarts the timer.
    app.panes.heatmap.cursor = (0, 0);
    assert_eq!(
        cmd(&mut app, Command::ToggleAblation),
        vec![Effect::Debounce]
    );
    let e = update(&mut app, Action::DebounceElapsed);
    let want = AblationSet {
        heads: [(0, 0), (2, 3)].into_iter().collect(),
        ..AblationSet::default()
    };
    assert_eq!(submitted(&e), vec![JobSpec::Live(want.clone())]);
    assert!(!app.editor.dirty);
    // The superseded stage's end is stale and ignored.
    let e = update(
        &mut app,
        Action::Worker(WorkerMsg::Finished {
            id: stage_id,
            seconds: 1.0,
            outcome: Outcome::Cancelled,
        }),
    );
    assert!(e.is_empty());
    assert!(matches!(
        app.jobs.running.as_ref().unwrap().spec,
        JobSpec::Live(_)
    ));
    // The live result lands, then the interrupted stage runs again.
    let id = app.jobs.running.as_ref().unwrap().id;
    let result = LiveResult {
        run: LiveRun {
            set: want.clone(),
            answer_ids: vec![7],
            answer_text: "x".into(),
            answer_logprobs: vec![-1.0],
            original_answer_logprob: -2.5,
            delta_logprob: -0.5,
            first_change: Some(0),
            recomputed_from_layer: Some(0),
            forwards: 2,
            seconds: 0.1,
        },
        tokens: vec!["x".into()],
    };
    update(
        &mut app,
        Action::Worker(WorkerMsg::Live {
            id,
            result: Box::new(result),
        }),
    );
    assert_eq!(app.editor.live.as_ref().unwrap().run.delta_logprob, -0.5);
    // The panes now show the ablated model: its answer, and every analysis from the start.
    assert_eq!(app.view.under, want);
    assert_eq!(app.view.answer.text, "x");
    assert!(app.view.report.is_none() && app.view.next_stage == 0);
    let clean = app.clean.as_ref().expect("the clean results are kept");
    assert!(clean.report.is_some() && clean.next_stage == 1);
    let e = finish(&mut app, Outcome::Done);
    assert_eq!(
        submitted(&e),
        vec![JobSpec::Analyze {
            stage: 0,
            under: want.clone()
        }]
    );
    assert_eq!(
        app.jobs.running.as_ref().unwrap().spec.label(),
        "stage 1/4 (ablated)"
    );
    // Resetting brings the clean results back at once and drops the ablated model's work.
    let e = cmd(&mut app, Command::ResetAblation);
    assert_eq!(e[0], Effect::Cancel);
    assert_eq!(submitted(&e), vec![analyze(1)]);
    assert!(app.view.under.is_empty() && app.clean.is_none());
    assert!(app.view.report.is_some() && app.view.answer.text != "x");
}

#[test]
fn a_new_set_replaces_the_ablated_view_but_keeps_the_clean_one() {
    let mut app = demo_app(3, 3, 4);
    app.editor.set = AblationSet::default();
    app.editor.live = None;
    let clean_answer = app.view.answer.clone();
    let live = |app: &mut App, heads: &[(usize, usize)]| {
        let set = AblationSet {
            heads: heads.iter().copied().collect(),
            ..AblationSet::default()
        };
        app.editor.set = set.clone();
        let e = cmd(app, Command::Rerun);
        assert_eq!(submitted(&e), vec![JobSpec::Live(set.clone())]);
        let id = app.jobs.running.as_ref().unwrap().id;
        update(
            app,
            Action::Worker(WorkerMsg::Live {
                id,
                result: Box::new(LiveResult {
                    run: LiveRun {
                        set,
                        answer_ids: vec![8, 9],
                        answer_text: "y".into(),
                        answer_logprobs: vec![-0.1, -0.2],
                        original_answer_logprob: -1.3,
                        delta_logprob: -0.3,
                        first_change: Some(0),
                        recomputed_from_layer: Some(heads[0].0),
                        forwards: 2,
                        seconds: 0.01,
                    },
                    tokens: vec!["y".into(), "z".into()],
                }),
            }),
        );
        finish(app, Outcome::Done)
    };
    live(&mut app, &[(1, 1)]);
    let id = app.jobs.running.as_ref().unwrap().id;
    let mut r = app.clean_report().unwrap().clone();
    r.head_scores.clear();
    update(
        &mut app,
        Action::Worker(WorkerMsg::Report {
            id,
            report: Box::new(r),
        }),
    );
    assert!(app.view.report.as_ref().unwrap().head_scores.is_empty());
    let e = live(&mut app, &[(1, 1), (2, 0)]);
    assert!(matches!(
        &submitted(&e)[..],
        [JobSpec::Analyze { stage: 0, under }] if under.heads.len() == 2
    ));
    assert!(
        app.view.report.is_none(),
        "the first set's results are gone"
    );
    // The curve and top-k still come from the unablated model.
    assert!(app.clean_report().unwrap().ablation_curve.is_some());
    assert_eq!(app.clean_answer(), Some(&clean_answer));
    // Toggling the heads off one by one returns to the clean view with the last.
    app.panes.heatmap.cursor = (1, 1);
    cmd(&mut app, Command::ToggleAblation);
    assert!(!app.view.under.is_empty());
    app.panes.heatmap.cursor = (2, 0);
    cmd(&mut app, Command::ToggleAblation);
    assert!(app.view.under.is_empty());
    assert_eq!(app.view.answer, clean_answer);
    assert!(!app.view.report.as_ref().unwrap().head_scores.is_empty());
}

#[test]
fn mlp_column_toggles_the_layer_mlp() {
    let mut app = demo_app(3, 4, 5);
    app.editor.set = AblationSet::default();
    app.focus = Pane::Heatmap;
    app.panes.heatmap.cursor = (1, 0);
    cmd(&mut app, Command::End);
    assert_eq!(
        app.panes.heatmap.cursor,
        (1, 4),
        "the column after the heads is the MLP"
    );
    cmd(&mut app, Command::ToggleAblation);
    assert!(app.editor.set.mlps.contains(&1) && app.editor.set.heads.is_empty());
    assert_eq!(app.editor.set.item_labels(), vec!["L1 MLP"]);
    cmd(&mut app, Command::ToggleAblation);
    assert!(app.editor.set.is_empty() && !app.editor.dirty);
}

#[test]
fn top_k_random_k_and_reset() {
    let mut app = demo_app(4, 6, 5);
    app.editor.set = AblationSet::default();
    app.editor.live = None;
    app.editor.top_k = 3;
    let e = cmd(&mut app, Command::AblateTopK);
    assert_eq!(e, vec![Effect::Debounce]);
    let m = app.view.report.as_ref().unwrap().head_scores[&HeadScore::ArcJsd].clone();
    let want: BTreeSet<(usize, usize)> = top_heads(&m, 3)
        .into_iter()
        .map(|(l, h, _)| (l, h))
        .collect();
    assert_eq!(app.editor.set.heads, want);
    // `+` redoes the top-k with k + 1.
    cmd(&mut app, Command::MoreK);
    assert_eq!(app.editor.top_k, 4);
    assert_eq!(app.editor.set.heads.len(), 4);
    // The ablation Δ ranks the most negative heads first.
    app.panes.heatmap.score = HeadScore::Ablation;
    cmd(&mut app, Command::AblateTopK);
    let d = &app.view.report.as_ref().unwrap().head_scores[&HeadScore::Ablation];
    let worst = d
        .iter()
        .enumerate()
        .flat_map(|(l, r)| r.iter().enumerate().map(move |(h, v)| (l, h, *v)))
        .min_by(|a, b| a.2.total_cmp(&b.2))
        .unwrap();
    assert!(app.editor.set.heads.contains(&(worst.0, worst.1)));
    cmd(&mut app, Command::AblateRandom);
    assert_eq!(app.editor.set.heads.len(), 4);
    let first = app.editor.set.heads.clone();
    cmd(&mut app, Command::AblateRandom);
    assert_ne!(app.editor.set.heads, first, "each R draws anew");
    cmd(&mut app, Command::ResetAblation);
    assert!(app.editor.set.is_empty() && app.editor.live.is_none() && !app.editor.dirty);
    // k stays within 1..=layers×heads.
    for _ in 0..50 {
        cmd(&mut app, Command::FewerK);
    }
    assert_eq!(app.editor.top_k, 1);
}

#[test]
fn top_k_of_a_missing_score_is_an_error_message() {
    let mut app = demo_app(2, 2, 3);
    app.view
        .report
        .as_mut()
        .unwrap()
        .head_scores
        .remove(&HeadScore::QrHead);
    app.panes.heatmap.score = HeadScore::QrHead;
    assert!(cmd(&mut app, Command::AblateTopK).is_empty());
    assert!(app.status.as_ref().unwrap().error);
}

#[test]
fn methods_cycle_and_wrap() {
    let mut app = demo_app(2, 2, 3);
    let mut seen = vec![app.panes.heatmap.score];
    for _ in 0..HeadScore::ALL.len() {
        cmd(&mut app, Command::CycleHeadScore);
        seen.push(app.panes.heatmap.score);
    }
    let n = HeadScore::ALL.len();
    assert_eq!(seen[..n], HeadScore::ALL);
    assert_eq!(seen[n], HeadScore::ArcJsd);
    cmd(&mut app, Command::CycleAttribution);
    assert_eq!(app.panes.attribution.method, Attribution::ContextCite);
    for _ in 0..4 {
        cmd(&mut app, Command::CycleAttribution);
    }
    assert_eq!(app.panes.attribution.method, Attribution::ArcJsd);
    cmd(&mut app, Command::CycleLensPoint);
    assert_eq!(app.panes.lens.point, LensPoint::Mid);
}

#[test]
fn cursors_stay_in_bounds() {
    let mut app = demo_app(3, 4, 5);
    app.focus = Pane::Heatmap;
    app.panes.heatmap.cursor = (0, 0);
    for _ in 0..10 {
        cmd(&mut app, Command::Up);
        cmd(&mut app, Command::Left);
    }
    assert_eq!(app.panes.heatmap.cursor, (0, 0));
    for _ in 0..10 {
        cmd(&mut app, Command::Down);
        cmd(&mut app, Command::Right);
    }
    assert_eq!(app.panes.heatmap.cursor, (2, 4));
    app.focus = Pane::Answer;
    for _ in 0..10 {
        cmd(&mut app, Command::Right);
    }
    assert_eq!(app.token(), 4);
    cmd(&mut app, Command::Home);
    assert_eq!(app.token(), 0);
    cmd(&mut app, Command::PrevToken);
    assert_eq!(app.token(), 0);
    app.focus = Pane::Attribution;
    for _ in 0..10 {
        cmd(&mut app, Command::Down);
    }
    assert_eq!(app.panes.attribution.cursor, 2);
    app.focus = Pane::Lens;
    for _ in 0..100 {
        cmd(&mut app, Command::Down);
    }
    assert_eq!(app.panes.lens.row, 2, "three layers of post rows");
    // Panes cycle both ways.
    app.focus = Pane::Answer;
    cmd(&mut app, Command::PrevPane);
    assert_eq!(app.focus, Pane::Ablation);
    cmd(&mut app, Command::NextPane);
    assert_eq!(app.focus, Pane::Answer);
    // Nothing moves on an empty state.
    let mut empty = fresh();
    cmd(&mut empty, Command::Right);
    cmd(&mut empty, Command::ToggleAblation);
    assert_eq!(empty.token(), 0);
    assert!(empty.editor.set.is_empty());
}

#[test]
fn escape_pauses_and_enter_resumes() {
    let mut app = fresh();
    update(&mut app, Action::Start);
    finish(&mut app, Outcome::Done);
    assert!(matches!(
        app.jobs.running.as_ref().unwrap().spec,
        JobSpec::Analyze { stage: 0, .. }
    ));
    assert_eq!(cmd(&mut app, Command::Cancel), vec![Effect::Cancel]);
    assert!(app.jobs.paused && app.jobs.running.is_none() && app.is_idle());
    let e = cmd(&mut app, Command::Rerun);
    assert_eq!(submitted(&e), vec![analyze(0)]);
    // Help swallows other keys; esc closes it without cancelling.
    cmd(&mut app, Command::Help);
    assert!(cmd(&mut app, Command::AblateRandom).is_empty());
    assert!(cmd(&mut app, Command::Cancel).is_empty());
    assert!(!app.show_help && app.jobs.running.is_some());
    assert_eq!(
        cmd(&mut app, Command::Quit),
        vec![Effect::Cancel, Effect::Quit]
    );
    assert!(app.quit);
}

#[test]
fn enter_forces_a_live_rerun_and_sentences_jump_the_queue() {
    let mut app = demo_app(3, 3, 4);
    app.view.next_stage = 2;
    update(&mut app, Action::Start);
    let e = cmd(&mut app, Command::Rerun);
    assert!(matches!(submitted(&e)[..], [JobSpec::Live(_)]));
    finish(&mut app, Outcome::Done);
    assert!(matches!(
        app.jobs.running.as_ref().unwrap().spec,
        JobSpec::Analyze { stage: 2, .. }
    ));
    let e = cmd(&mut app, Command::ToggleSentences);
    assert_eq!(
        submitted(&e),
        vec![JobSpec::Sentences {
            under: AblationSet::default()
        }]
    );
    let id = app.jobs.running.as_ref().unwrap().id;
    let mut r = app.view.report.clone().unwrap();
    r.granularity = crate::prompt::Granularity::Sentence;
    update(
        &mut app,
        Action::Worker(WorkerMsg::Report {
            id,
            report: Box::new(r),
        }),
    );
    assert!(app.view.sentence_report.is_some());
    let e = finish(&mut app, Outcome::Done);
    assert_eq!(submitted(&e), vec![analyze(2)]);
}

#[test]
fn reports_merge_stage_by_stage() {
    let full = demo_app(2, 2, 3).view.report.unwrap();
    let mut a = full.clone();
    a.head_scores.retain(|k, _| *k == HeadScore::ArcJsd);
    a.ablation_curve = None;
    let mut b = full.clone();
    b.head_scores.retain(|k, _| *k == HeadScore::Ablation);
    b.logit_lens = None;
    a.merge(b);
    assert_eq!(a.head_scores.len(), 2);
    assert!(a.logit_lens.is_some() && a.ablation_curve.is_some());
}

#[test]
fn streamed_tokens_build_the_answer() {
    let mut app = fresh();
    update(&mut app, Action::Start);
    let id = app.jobs.running.as_ref().unwrap().id;
    for t in ["The", " answer"] {
        update(
            &mut app,
            Action::Worker(WorkerMsg::Token { id, text: t.into() }),
        );
    }
    assert_eq!(app.view.answer.text, "The answer");
    assert!(!app.view.answer.complete);
    // Messages of other jobs are ignored.
    update(
        &mut app,
        Action::Worker(WorkerMsg::Token {
            id: id + 7,
            text: "x".into(),
        }),
    );
    assert_eq!(app.view.answer.tokens.len(), 2);
}

#[test]
fn the_source_cursor_starts_on_the_top_source() {
    let mut app = fresh();
    update(&mut app, Action::Start);
    finish(&mut app, Outcome::Done);
    let id = app.jobs.running.as_ref().unwrap().id;
    let mut report = demo_app(2, 2, 3).view.report.unwrap();
    report
        .attribution
        .insert(Attribution::ArcJsd, vec![0.1, 0.2, 0.9]);
    update(
        &mut app,
        Action::Worker(WorkerMsg::Report {
            id,
            report: Box::new(report),
        }),
    );
    assert_eq!(app.panes.attribution.cursor, 2);
    app.focus = Pane::Attribution;
    cmd(&mut app, Command::Up);
    assert_eq!(app.panes.attribution.cursor, 1);
    cmd(&mut app, Command::CycleAttribution);
    assert_eq!(
        app.panes.attribution.cursor, 1,
        "a source chosen by hand stays"
    );
}

mod scroll;

/// The ablation map shows attribution patching's estimate until the exact sweep arrives, and
/// says which it shows.
#[test]
fn the_ablation_map_shows_the_atp_estimate_until_the_exact_sweep() {
    let mut app = demo_app(3, 3, 4);
    app.panes.heatmap.score = HeadScore::Ablation;
    let report = app.view.report.as_mut().unwrap();
    let exact = report.head_scores.remove(&HeadScore::Ablation).unwrap();
    let atp = report.head_scores[&HeadScore::Atp].clone();
    assert_ne!(exact, atp);
    assert_eq!(app.shown_head_score(), HeadScore::Atp);
    assert_eq!(app.ablation_map_kind(), Some("AtP estimate"));
    assert_eq!(app.head_matrix(), Some(&atp));

    let report = app.view.report.as_mut().unwrap();
    report
        .head_scores
        .insert(HeadScore::Ablation, exact.clone());
    assert_eq!(app.shown_head_score(), HeadScore::Ablation);
    assert_eq!(app.ablation_map_kind(), Some("exact"));
    assert_eq!(app.head_matrix(), Some(&exact));

    // Neither yet: nothing shown, nothing claimed.
    let report = app.view.report.as_mut().unwrap();
    report.head_scores.remove(&HeadScore::Ablation);
    report.head_scores.remove(&HeadScore::Atp);
    assert_eq!(app.head_matrix(), None);
    assert_eq!(app.ablation_map_kind(), None);
    // Other scores are never stood in for.
    app.panes.heatmap.score = HeadScore::QrHead;
    assert_eq!(app.shown_head_score(), HeadScore::QrHead);
    assert_eq!(app.ablation_map_kind(), None);
}
