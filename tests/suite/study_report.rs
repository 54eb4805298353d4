//! The study's report renderers on a small synthetic summary (2 models of different shapes,
//! 2 methods, 2 categories of which one is numerical, k ∈ {0, 10, 20}): the figures are written,
//! deterministic and say what they show; FINDINGS.md states the summary's numbers exactly and
//! calls an effect only on clear evidence.

use std::collections::BTreeMap;
use std::path::PathBuf;

use headscope::study::figures::write_figures;
use headscope::study::findings::findings_markdown;
use headscope::study::summary::{
    CurvePoint, Design, Detection, Estimate, Experiment, JaccardMatrix, ModelSummary, Overlaps,
    RandomEstimate, RankedHead, Summary,
};

const METHODS: [&str; 2] = ["retrieval", "qrhead"];
const CATEGORIES: [&str; 2] = ["employees", "state"];
const TEST_SAMPLES: usize = 40;

fn est(value: f64, half: f64) -> Estimate {
    Estimate {
        value,
        lo: value - half,
        hi: value + half,
        n: TEST_SAMPLES,
    }
}

/// The accuracies at k = 20 of one cell: top-k, random-k (pooled), their half-widths and p.
struct Final {
    top: f64,
    random: f64,
    half: f64,
    p: f64,
}

/// Per model × method × category: the alpha model's retrieval cells are the ones the tests read:
/// employees separates clearly (top 20 % vs random 70 %, p < 0.001), state does not (55 % vs 60 %,
/// overlapping intervals, p = 0.410).
fn final_point(model: usize, method: usize, category: usize) -> Final {
    match (model, method, category) {
        (0, 0, 0) => Final {
            top: 0.2,
            random: 0.7,
            half: 0.1,
            p: 0.0004,
        },
        (0, 0, 1) => Final {
            top: 0.55,
            random: 0.6,
            half: 0.1 / 2.0,
            p: 0.41,
        },
        (_, 1, _) => Final {
            top: 0.4,
            random: 0.625,
            half: 0.1,
            p: 0.03,
        },
        _ => Final {
            top: 0.5,
            random: 0.6,
            half: 0.125,
            p: 0.2,
        },
    }
}

fn clean(category: usize) -> Estimate {
    [est(0.75, 0.1), est(0.625, 0.125)][category]
}

fn point(k: usize, top: f64, random: f64, half: f64, p: f64) -> CurvePoint {
    CurvePoint {
        k,
        top: est(top, half),
        random: RandomEstimate {
            per_draw: vec![random - 0.05, random, random + 0.05, random, random],
            mean: random,
            sd: 0.05,
            pooled: est(random, half),
        },
        layer_matched: est((top + random) / 2.0 + 0.2, half),
        top_logprob: est(-1.5 - top, 0.25),
        random_logprob: est(-1.5, 0.25),
        p_top_vs_random: p,
        p_top_vs_layer_matched: 0.002,
    }
}

fn experiment(model: usize, method: usize, category: usize) -> Experiment {
    let f = final_point(model, method, category);
    let c = clean(category).value;
    let mid = |x: f64| (c + x) / 2.0;
    let start = point(0, c, c, 0.1, 1.0);
    Experiment {
        method: METHODS[method].into(),
        category: CATEGORIES[category].into(),
        test_samples: TEST_SAMPLES,
        points: vec![
            CurvePoint {
                layer_matched: est(c, 0.1),
                ..start
            },
            point(10, mid(f.top), mid(f.random), f.half, 0.05),
            point(20, f.top, f.random, f.half, f.p),
        ],
    }
}

fn detection(method: usize, category: usize, layers: usize, heads: usize) -> Detection {
    let top = (0..50)
        .map(|i| RankedHead {
            layer: (i * 7 + method) % layers,
            head: (i + category) % heads,
            mean: 0.9 - i as f64 * 0.01,
            sd: 0.1,
            n: 32,
        })
        .collect();
    Detection {
        method: METHODS[method].into(),
        category: CATEGORIES[category].into(),
        train_samples: 32,
        top,
        fraction_above_0_1: 0.125,
        depth_histogram: [2, 3, 4, 5, 6, 8, 9, 7, 4, 2],
        mean_relative_depth: 0.5 + 0.15 * method as f64,
        rank_stability: est(0.8, 0.05),
    }
}

fn model(index: usize, name: &str) -> ModelSummary {
    let (arch, layers, heads) = [("llama", 30, 9), ("qwen2", 24, 14)][index];
    let mut detect = Vec::new();
    let mut experiments = Vec::new();
    for method in 0..METHODS.len() {
        for category in 0..CATEGORIES.len() {
            detect.push(detection(method, category, layers, heads));
            experiments.push(experiment(index, method, category));
        }
    }
    ModelSummary {
        model: name.into(),
        arch: arch.into(),
        layers,
        heads,
        clean_accuracy: (0..2)
            .map(|c| (CATEGORIES[c].to_string(), clean(c)))
            .collect(),
        detect,
        experiments,
    }
}

fn jaccard(model: &str, within: &str, labels: [&str; 2], off: f64) -> JaccardMatrix {
    JaccardMatrix {
        model: model.into(),
        within: within.into(),
        labels: labels.iter().map(|l| l.to_string()).collect(),
        values: vec![vec![1.0, off], vec![off, 1.0]],
        random: 0.102,
    }
}

/// The synthetic study, with the two models' names.
fn summary(names: [&str; 2]) -> Summary {
    let samples = |n: usize| -> BTreeMap<String, usize> {
        CATEGORIES.iter().map(|c| (c.to_string(), n)).collect()
    };
    let mut overlaps = Overlaps {
        between_categories: Vec::new(),
        between_methods: Vec::new(),
        between_models: Vec::new(),
    };
    for name in names {
        for m in METHODS {
            overlaps
                .between_categories
                .push(jaccard(name, m, CATEGORIES, 0.45));
        }
        for c in CATEGORIES {
            overlaps
                .between_methods
                .push(jaccard(name, c, METHODS, 0.3));
        }
    }
    Summary {
        design: Design {
            models: names.iter().map(|n| n.to_string()).collect(),
            methods: METHODS.iter().map(|m| m.to_string()).collect(),
            categories: CATEGORIES.iter().map(|c| c.to_string()).collect(),
            numerical_categories: vec!["employees".into()],
            ks: vec![0, 10, 20],
            draws: 5,
            top_n: 50,
            ablation_mode: "zero".into(),
            positions: "all".into(),
            seed: 7,
            bootstrap: 1000,
            train_samples: samples(32),
            test_samples: samples(TEST_SAMPLES),
        },
        models: vec![model(0, names[0]), model(1, names[1])],
        overlaps,
    }
}

const MIXED: [&str; 2] = ["Alpha-135M-Instruct", "Beta-0.5B"];

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("headscope-report-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// An SVG file's text with XML's five escapes undone, after checking it is one `<svg>` element.
fn svg_text(path: &std::path::Path) -> String {
    let svg = read(path);
    assert!(svg.starts_with("<svg "), "{}", path.display());
    assert!(svg.trim_end().ends_with("</svg>"), "{}", path.display());
    let unescaped = [
        ("&lt;", "<"),
        ("&gt;", ">"),
        ("&quot;", "\""),
        ("&apos;", "'"),
    ]
    .iter()
    .fold(svg, |s, (from, to)| s.replace(from, to));
    unescaped.replace("&amp;", "&")
}

#[test]
fn figures_are_svg_and_png_with_titles_and_legends() {
    let dir = temp("figures");
    let written = write_figures(&summary(MIXED), &dir).unwrap();
    // Per model 4 curves and a depth histogram; 4 category and 4 method heatmaps; SVG + PNG each.
    assert_eq!(written.len(), (2 * 5 + 4 + 4) * 2);
    for p in &written {
        assert!(p.is_file(), "{} written", p.display());
        assert!(p.starts_with(dir.join("figures")));
    }
    let figures = dir.join("figures");
    let curve = svg_text(&figures.join("curve-alpha-135m-instruct-retrieval-employees.svg"));
    for text in [
        "Alpha-135M-Instruct · retrieval · employees",
        "ablation zero, positions all · n = 40 test samples · 5 random draws per k",
        "top-k heads (band: 95 % CI)",
        "random k heads, mean of 5 draws (band: pooled 95 % CI)",
        "layer-matched random k heads",
        "clean model 75.0 % (k = 0, 95 % CI)",
        "k (heads ablated)",
        "accuracy (%)",
    ] {
        assert!(curve.contains(text), "curve SVG lacks {text:?}");
    }
    let heat = svg_text(&figures.join("jaccard-categories-beta-0.5b-qrhead.svg"));
    for text in [
        "Jaccard of top-50 heads between categories · Beta-0.5B · method qrhead",
        "two random 50-sets of the model's heads give 0.10 on average",
        ">\n0.45\n<",
        ">\n1.00\n<",
        ">\nemployees\n<",
    ] {
        assert!(heat.contains(text), "heatmap SVG lacks {text:?}");
    }
    let methods = svg_text(&figures.join("jaccard-methods-alpha-135m-instruct-state.svg"));
    assert!(methods.contains("between methods · Alpha-135M-Instruct · category state"));
    assert!(methods.contains(">\n0.30\n<"));
    let depth = svg_text(&figures.join("depth-beta-0.5b.svg"));
    for text in [
        "Beta-0.5B · relative depth of each method's top-50 heads",
        "qwen2 (24 layers × 14 heads)",
        "employees (mean depth 0.50)",
        "employees (mean depth 0.65)",
        ">\nretrieval\n<",
    ] {
        assert!(depth.contains(text), "depth SVG lacks {text:?}");
    }
    let png = std::fs::read(figures.join("curve-beta-0.5b-qrhead-state.png")).unwrap();
    assert_eq!(png_size(&png), (960, 640));
    let png = std::fs::read(figures.join("depth-alpha-135m-instruct.png")).unwrap();
    assert_eq!(png_size(&png), (960, 64 + 2 * 300));
    let png = std::fs::read(figures.join("jaccard-methods-beta-0.5b-employees.png")).unwrap();
    let (w, h) = png_size(&png);
    assert!(
        (560..2000).contains(&w) && (200..1000).contains(&h),
        "{w} × {h}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn figures_are_byte_identical_when_written_twice() {
    let (a, b) = (temp("same-a"), temp("same-b"));
    let s = summary(MIXED);
    let first = write_figures(&s, &a).unwrap();
    let second = write_figures(&s, &b).unwrap();
    assert_eq!(first.len(), second.len());
    for (x, y) in first.iter().zip(&second) {
        assert_eq!(x.strip_prefix(&a).unwrap(), y.strip_prefix(&b).unwrap());
        let (bx, by) = (std::fs::read(x).unwrap(), std::fs::read(y).unwrap());
        assert!(bx == by, "{} differs between two writes", x.display());
    }
    // A different summary draws a different figure.
    let mut changed = s.clone();
    changed.models[0].experiments[0].points[2].top.value = 0.3;
    let c = temp("same-c");
    write_figures(&changed, &c).unwrap();
    let curve = "figures/curve-alpha-135m-instruct-retrieval-employees.svg";
    assert_ne!(read(&a.join(curve)), read(&c.join(curve)));
    for d in [a, b, c] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn figure_names_that_collide_are_an_error() {
    let dir = temp("collide");
    let s = summary(["Same Model", "same-model"]);
    let err = write_figures(&s, &dir).unwrap_err().to_string();
    assert!(err.contains("two figures have this file name"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The line of `text` that starts with `prefix`.
fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    let mut lines = text.lines();
    lines
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?} in\n{text}"))
}

#[test]
fn findings_state_the_design_and_the_matrix_numbers() {
    let md = findings_markdown(&summary(MIXED));
    assert!(md.starts_with("# Findings\n"));
    for text in [
        "- Models: `Alpha-135M-Instruct` (llama, 30 layers × 9 heads = 270 heads), `Beta-0.5B` (qwen2, 24 layers × 14 heads = 336 heads).",
        "- Head-finding methods: `retrieval`, `qrhead`.",
        "- Categories: `employees`, `state`; numerical: `employees`.",
        "- Ablation: mode `zero`, positions `all`; k ∈ {0, 10, 20} (k = 0 is the clean model); top lists of 50 heads; 5 random draws per k",
        "| employees | yes | 32 | 40 |",
        "| state | no | 32 | 40 |",
        "1000 bootstrap resamples per interval, seed 7",
    ] {
        assert!(md.contains(text), "FINDINGS.md lacks {text:?}");
    }
    let row = line(&md, "| Alpha-135M-Instruct | retrieval | employees |");
    assert_eq!(
        row,
        "| Alpha-135M-Instruct | retrieval | employees | 20 | 75.0 % [65.0, 85.0] | 20.0 % [10.0, 30.0] \
         | 70.0 % ± 5.0 pp | 70.0 % [60.0, 80.0] | +50.0 pp [+30.0, +70.0] | p < 0.001 \
         | 65.0 % [55.0, 75.0] | p = 0.002 \
         | [plot](figures/curve-alpha-135m-instruct-retrieval-employees.svg) \
         ([png](figures/curve-alpha-135m-instruct-retrieval-employees.png)) |"
    );
    let row = line(&md, "| Alpha-135M-Instruct | retrieval | state |");
    assert!(
        row.contains("| 62.5 % [50.0, 75.0] | 55.0 % [50.0, 60.0] | 60.0 % ± 5.0 pp | 60.0 % [55.0, 65.0] | +5.0 pp [-5.0, +15.0] | p = 0.410 |"),
        "{row}"
    );
    // 2 models × 2 methods × 2 categories.
    assert_eq!(
        md.lines()
            .filter(|l| l.contains("| [plot](figures/curve-"))
            .count(),
        8
    );
    // Detection highlights: ten heads each, with the share above 0.1 and the rank stability.
    let det = line(
        &md,
        "| retrieval | employees | 32 | L0H0 0.900 ± 0.100, L7H1 0.890 ± 0.100,",
    );
    assert!(
        det.ends_with("| 32 | 12.5 % | 0.80 [0.75, 0.85] | 0.50 |"),
        "{det}"
    );
    assert_eq!(det.matches(" ± ").count(), 10);
    // Overlaps with the random expectation and the heatmap.
    assert!(md.contains("| employees | 1.00 | 0.45 |"));
    assert!(md.contains(
        "Random expectation: 0.10. [Heatmap](figures/jaccard-categories-alpha-135m-instruct-retrieval.svg)"
    ));
    assert!(md.contains("![depth of the top heads, Beta-0.5B](figures/depth-beta-0.5b.svg)"));
}

#[test]
fn findings_call_clear_effects_and_say_where_evidence_is_too_weak() {
    let md = findings_markdown(&summary(MIXED));
    let clear = line(
        &md,
        "- **Alpha-135M-Instruct · retrieval · employees** (k = 20)",
    );
    assert!(
        clear.contains("top-k 20.0 % [10.0, 30.0] vs random-k 70.0 % [60.0, 80.0]: drop +50.0 pp [+30.0, +70.0] (p < 0.001; clean 75.0 % [65.0, 85.0])"),
        "{clear}"
    );
    assert!(clear.contains("Clear: ablating the top-k heads hurts more than random heads."));
    assert!(!clear.contains("too weak"), "{clear}");
    let weak = line(
        &md,
        "- **Alpha-135M-Instruct · retrieval · state** (k = 20)",
    );
    assert!(weak.contains("too weak to conclude"), "{weak}");
    assert!(
        weak.contains("p = 0.410 ≥ 0.05; the two intervals overlap"),
        "{weak}"
    );
    // The employees drop's interval [+30, +70] clears the state drop's [−5, +15].
    let differ = line(&md, "- **Alpha-135M-Instruct · retrieval** by category: ");
    assert!(
        differ.contains("more effective (larger drop, intervals apart) in: employees > state"),
        "{differ}"
    );
    let same = line(&md, "- **Beta-0.5B · retrieval** by category: ");
    assert!(
        same.contains(
            "every pair of categories' drop intervals overlaps: evidence is too weak to conclude"
        ),
        "{same}"
    );
    // Question 1: 0.45 against 0.10 by chance and a stability of at least 0.75.
    let q1 = line(
        &md,
        "- **Alpha-135M-Instruct · retrieval**: category pairs'",
    );
    assert!(q1.contains("Jaccard 0.45 on average (range 0.45–0.45, 1 pair) vs 0.10 for random sets (4.4× chance); the lists' rank stability is at least 0.75"), "{q1}");
    assert!(q1.contains("Partly the same heads"), "{q1}");
    // Question 2: one category per group, so no within-group pair.
    let q2 = line(&md, "- **Alpha-135M-Instruct · retrieval** heads:");
    assert!(
        q2.contains("within-group Jaccard – (0 pairs) vs across groups 0.45 (1 pair)"),
        "{q2}"
    );
    assert!(q2.contains("too weak to conclude"), "{q2}");
    let q2 = line(&md, "- **Alpha-135M-Instruct · retrieval** drops:");
    assert!(q2.contains("numerical employees +50.0 pp [+30.0, +70.0]; categorical state +5.0 pp [-5.0, +15.0]. Clear: the top-k ablation costs numerical questions more"), "{q2}");

    // Fewer than 10 test samples: too weak whatever the p-value.
    let mut small = summary(MIXED);
    small.models[0].experiments[0].test_samples = 8;
    let md = findings_markdown(&small);
    let few = line(
        &md,
        "- **Alpha-135M-Instruct · retrieval · employees** (k = 20)",
    );
    assert!(
        few.contains("too weak to conclude") && few.contains("n = 8 < 10"),
        "{few}"
    );

    // Random heads hurting more, clearly: said so, not called a top-k effect.
    let mut reversed = summary(MIXED);
    let last = &mut reversed.models[0].experiments[0].points[2];
    (last.top, last.random.pooled) = (last.random.pooled, last.top);
    let md = findings_markdown(&reversed);
    let rev = line(
        &md,
        "- **Alpha-135M-Instruct · retrieval · employees** (k = 20)",
    );
    assert!(rev.contains("drop -50.0 pp [-70.0, -30.0]"), "{rev}");
    assert!(
        rev.contains("Clear, and reversed: ablating random heads hurts more than the top-k heads."),
        "{rev}"
    );
}

#[test]
fn findings_say_when_the_models_are_not_an_instruct_base_pair() {
    let mixed = findings_markdown(&summary(MIXED));
    assert!(mixed.contains("Instruction-tuned: `Alpha-135M-Instruct`; other: `Beta-0.5B`."));
    assert!(!mixed.contains("cannot answer whether instruct and base models differ"));
    assert!(mixed.contains("#### Alpha-135M-Instruct vs Beta-0.5B"));
    assert!(
        mixed.contains("They also differ in architecture or shape (llama 30 × 9 vs qwen2 24 × 14)")
    );

    let both = findings_markdown(&summary(["Alpha-135M-Instruct", "Beta-0.5B-Instruct"]));
    assert!(both.contains(
        "All models are instruction-tuned (their names say `Instruct`), so this run cannot answer \
         whether instruct and base models differ. It compares the models with each other instead"
    ));
    assert!(both.contains("#### Alpha-135M-Instruct vs Beta-0.5B-Instruct"));
    // The comparison itself: clean accuracy, each cell's drop, and the depth of each method's heads.
    assert!(both.contains(
        "- Clean accuracy, state: 62.5 % [50.0, 75.0] vs 62.5 % [50.0, 75.0]: the intervals overlap."
    ));
    assert!(both.contains("- retrieval · employees: drop +50.0 pp [+30.0, +70.0] vs +10.0 pp [-15.0, +35.0]: the intervals overlap."));
    assert!(both.contains("No method × category separates the two models' drops (4 compared): evidence is too weak to conclude that their ablation effects differ."));
    assert!(both.contains("- Depth, qrhead: the top heads sit at a mean relative depth of 0.65 in Alpha-135M-Instruct and 0.65 in Beta-0.5B-Instruct (averaged over categories; difference +0.00)."));
    assert!(both.contains(
        "evidence is too weak to conclude that the models place their heads differently"
    ));
}

#[test]
fn degenerate_summaries_still_render() {
    let mut s = summary(MIXED);
    s.models.truncate(1);
    s.models[0].experiments[1].points.clear();
    s.models[0].detect.retain(|d| d.method == "retrieval");
    s.overlaps.between_categories.truncate(1);
    s.overlaps.between_categories[0].labels.clear();
    s.overlaps.between_categories[0].values.clear();
    s.overlaps.between_methods.clear();
    let md = findings_markdown(&s);
    assert!(md.contains("Fewer than two models were run, so this run cannot answer this question."));
    assert!(md.contains(
        "| Alpha-135M-Instruct | retrieval | state | – | 62.5 % [50.0, 75.0] | no ablation results | – | – | – | – | – | – | – |"
    ));
    assert_eq!(
        md.lines()
            .filter(|l| l.contains("| [plot](figures/curve-"))
            .count(),
        3
    );
    assert!(md.contains(
        "- **Alpha-135M-Instruct · retrieval**: fewer than two categories, nothing to compare."
    ));
    let dir = temp("degenerate");
    let written = write_figures(&s, &dir).unwrap();
    // 4 curves (one empty), the depth histogram, one heatmap without labels.
    assert_eq!(written.len(), (4 + 1 + 1) * 2);
    let empty = svg_text(&dir.join("figures/curve-alpha-135m-instruct-retrieval-state.svg"));
    assert!(empty.contains("Alpha-135M-Instruct · retrieval · state"));
    let depth = svg_text(&dir.join("figures/depth-alpha-135m-instruct.svg"));
    assert!(
        depth.contains(">\nqrhead\n<"),
        "the qrhead panel is drawn, without bars"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
