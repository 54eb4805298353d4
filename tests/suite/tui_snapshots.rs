//! Snapshot tests of the explorer's screen and of every pane, rendered with ratatui's
//! `TestBackend` from a deterministic hand-built state (`ui::demo`), so the pictures do not move
//! with floating-point noise. Colours are locked by the `_styles` snapshots (the buffer's Debug
//! form lists every style run).

use headscope::ui::app::{update, Action, App, Command, JobSpec, Pane, Running};
use headscope::ui::demo::{demo_ablated_app, demo_app};
use headscope::ui::keys::KeyMap;
use headscope::ui::panes::{render_pane, Screen, MIN_HEIGHT, MIN_WIDTH};
use headscope::ui::theme::Theme;
use ratatui::backend::TestBackend;
use ratatui::layout::Rect;
use ratatui::Terminal;

fn screen(app: &App, theme: &Theme, w: u16, h: u16) -> Terminal<TestBackend> {
    let keys = KeyMap::default();
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| f.render_widget(Screen::new(app, theme, &keys), f.area()))
        .unwrap();
    t
}

fn pane(p: Pane, app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let theme = Theme::builtin_default();
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| {
        let area = f.area();
        render_pane(p, app, &theme, area, f.buffer_mut());
    })
    .unwrap();
    t
}

fn text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let area: Rect = *buf.area();
    let mut out = String::new();
    for y in 0..area.height {
        for x in 0..area.width {
            out.push_str(buf.cell((x, y)).unwrap().symbol());
        }
        out.push('\n');
    }
    out
}

#[test]
fn whole_screen() {
    let app = demo_app(6, 8, 24);
    let t = screen(&app, &Theme::builtin_default(), 140, 40);
    insta::assert_snapshot!(t.backend());
}

#[test]
fn whole_screen_28_layers_64_tokens_light() {
    let app = demo_app(28, 12, 64);
    let t = screen(&app, &Theme::builtin("light").unwrap(), 160, 48);
    insta::assert_snapshot!(t.backend());
}

/// After a live re-run the panes show the ablated model: the header says which, the answer is
/// the ablated one with the clean one under it, the heatmap marks the ablated heads (which score
/// nothing there), and the ablation curve is still the clean model's.
#[test]
fn whole_screen_under_an_ablation() {
    let app = demo_ablated_app(6, 8, 24);
    let t = screen(&app, &Theme::builtin_default(), 160, 48);
    let shown = text(&t);
    assert!(
        shown.contains("ablated model: 3 heads, 1 MLP (zero)"),
        "{shown}"
    );
    assert!(shown.contains("clean ▸"), "{shown}");
    insta::assert_snapshot!(shown);
}

#[test]
fn every_pane() {
    let app = demo_app(6, 8, 24);
    for (p, w, h) in [
        (Pane::Answer, 100, 7),
        (Pane::Sample, 44, 20),
        (Pane::Heatmap, 40, 14),
        (Pane::Lens, 80, 14),
        (Pane::Attribution, 70, 8),
        (Pane::Ablation, 90, 10),
    ] {
        let t = pane(p, &app, w, h);
        insta::assert_snapshot!(format!("pane_{p:?}").to_lowercase(), t.backend());
    }
}

#[test]
fn pane_states() {
    // Sentence granularity before it is computed, the lens in rank mode, another head score.
    let mut app = demo_app(6, 8, 24);
    app.panes.attribution.sentences = true;
    app.panes.lens.rank = true;
    app.panes.heatmap.score = headscope::ui::app::HeadScore::Ablation;
    app.panes.attribution.method = headscope::ui::app::Attribution::Mirage;
    let attribution = pane(Pane::Attribution, &app, 70, 8);
    insta::assert_snapshot!("attribution_sentences_pending", attribution.backend());
    app.panes.attribution.sentences = false;
    let attribution = pane(Pane::Attribution, &app, 70, 8);
    insta::assert_snapshot!("attribution_mirage", attribution.backend());
    let lens = pane(Pane::Lens, &app, 80, 10);
    insta::assert_snapshot!("lens_rank", lens.backend());
    let heat = pane(Pane::Heatmap, &app, 40, 14);
    insta::assert_snapshot!("heatmap_ablation_delta", heat.backend());
}

#[test]
fn heatmap_styles() {
    let app = demo_app(3, 4, 6);
    let t = pane(Pane::Heatmap, &app, 30, 9);
    insta::assert_snapshot!(format!("{:?}", t.backend().buffer()));
}

#[test]
fn loading_screen() {
    let mut app = App::new(
        "/models/tiny.gguf",
        "built-in (island-capital)",
        headscope::ui::default_sample().unwrap(),
    );
    app.jobs.running = Some(Running {
        id: 1,
        spec: JobSpec::Open,
        step: "loading the model".into(),
        done: 0,
        total: 0,
        elapsed_s: 0.0,
    });
    let t = screen(&app, &Theme::builtin_default(), 120, 32);
    insta::assert_snapshot!(t.backend());
}

#[test]
fn help_overlay_lists_every_key() {
    let mut app = demo_app(4, 4, 8);
    update(&mut app, Action::Command(Command::Help));
    let t = screen(&app, &Theme::builtin_default(), 120, 40);
    let s = text(&t);
    for (keys, help) in KeyMap::default().help() {
        assert!(s.contains(help), "help lacks {help:?}");
        assert!(s.contains(&keys), "help lacks {keys:?}");
    }
    insta::assert_snapshot!(t.backend());
}

#[test]
fn too_small_terminal_says_so() {
    let app = demo_app(4, 4, 8);
    let t = screen(
        &app,
        &Theme::builtin_default(),
        MIN_WIDTH - 1,
        MIN_HEIGHT + 4,
    );
    let s = text(&t);
    assert!(s.contains("too small"), "{s}");
    assert!(s.contains(&format!("{MIN_WIDTH}×{MIN_HEIGHT}")), "{s}");
    insta::assert_snapshot!(t.backend());
    // The smallest size that fits draws every pane.
    let t = screen(&app, &Theme::builtin_default(), MIN_WIDTH, MIN_HEIGHT);
    let s = text(&t);
    for p in Pane::ALL {
        assert!(
            s.contains(p.title()),
            "{p:?} missing at the minimum size:\n{s}"
        );
    }
    // A 1×1 terminal does not panic.
    let _ = screen(&app, &Theme::builtin_default(), 1, 1);
}

#[test]
fn every_theme_renders_the_whole_screen() {
    let app = demo_app(6, 8, 24);
    for (name, _) in headscope::ui::theme::BUILTIN {
        let theme = Theme::builtin(name).unwrap();
        let t = screen(&app, &theme, 140, 40);
        assert!(text(&t).contains("L1H2"), "{name}");
    }
}

#[test]
fn the_cursor_head_and_ablated_heads_are_shown() {
    let mut app = demo_app(6, 8, 24);
    app.panes.heatmap.cursor = (3, 5);
    let t = pane(Pane::Heatmap, &app, 40, 14);
    let s = text(&t);
    assert!(s.contains("L3H5"), "{s}");
    assert!(s.contains('✕'), "ablated heads are marked:\n{s}");
    let t = pane(Pane::Ablation, &app, 90, 10);
    let s = text(&t);
    for label in app.editor.set.item_labels() {
        assert!(s.contains(&label), "{label} missing:\n{s}");
    }
}

#[test]
fn export_is_the_screen() {
    // `e` re-renders the state into a buffer: the same cells the terminal shows.
    use headscope::ui::event::{render_buffer, Context};
    let app = demo_app(6, 8, 24);
    let ctx = Context {
        theme: Theme::builtin_default(),
        keys: KeyMap::default(),
        export_dir: std::env::temp_dir(),
        export_formats: vec![],
    };
    let t = screen(&app, &ctx.theme, 140, 40);
    assert_eq!(*t.backend().buffer(), render_buffer(&app, &ctx, 140, 40));
}
