//! The study's figures, drawn from the [`Summary`] alone (so a figure cannot disagree with
//! FINDINGS.md), each as SVG and PNG under `DIR/figures/`:
//! - per experiment (model × method × category), accuracy against k: top-k, random-k and the
//!   layer-matched control beside the clean model, like Figure 8 of Wu et al. (retrieval heads);
//! - per model × method a category × category, and per model × category a method × method,
//!   Jaccard heatmap of the top lists;
//! - per model a histogram of the top heads' relative depth, one panel per method.
//!
//! Text is drawn with the bundled DejaVu Sans subset (assets/fonts) through plotters' `ab_glyph`
//! feature, so no system font is needed, and the PNG is rendered into a buffer and encoded with
//! the `png` crate, so plotters needs no `image` crate. Both outputs are deterministic: the same
//! summary gives byte-identical SVG and PNG files.

use std::collections::BTreeSet;
use std::error::Error as StdError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::combinators::WithKeyPoints;
use plotters::coord::types::{RangedCoordf64, RangedCoordi32};
use plotters::coord::Shift;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::summary::{Design, Detection, Experiment, JaccardMatrix, ModelSummary, Summary};
use crate::{Error, Result};

/// The figures' folder inside the study folder; FINDINGS.md links `figures/<stem>.svg`.
pub const FIGURES_DIR: &str = "figures";

const FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans-subset.ttf");
pub(crate) const FONT: &str = "sans-serif";
/// Height of the title band (a title and a subtitle line) above every figure.
pub(crate) const TITLE_H: u32 = 64;

const TOP: RGBColor = RGBColor(31, 119, 180);
const RANDOM: RGBColor = RGBColor(230, 120, 20);
const LAYER_MATCHED: RGBColor = RGBColor(44, 150, 44);
pub(crate) const CLEAN: RGBColor = RGBColor(90, 90, 90);
/// Bar colours of the depth histogram, one per category (cycled).
pub(crate) const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 120, 20),
    RGBColor(44, 150, 44),
    RGBColor(200, 40, 40),
    RGBColor(140, 90, 190),
    RGBColor(130, 85, 75),
];

/// What plotters' drawing calls return, for either backend.
pub(crate) type Drawn = std::result::Result<(), Box<dyn StdError>>;

/// A file-name-safe form of a label: lower case, `[a-z0-9._-]` kept, every other run of
/// characters one `-`, no leading or trailing `-`/`.` (`Qwen2.5 Coder/0.5B` → `qwen2.5-coder-0.5b`).
pub fn slug(label: &str) -> String {
    let mut out = String::new();
    for c in label.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    let out = out.trim_matches(|c| c == '-' || c == '.');
    if out.is_empty() {
        "x".to_string()
    } else {
        out.to_string()
    }
}

/// `figures/curve-<model>-<method>-<category>`: an experiment's accuracy-vs-k plot.
pub fn curve_stem(model: &str, method: &str, category: &str) -> String {
    format!(
        "{FIGURES_DIR}/curve-{}-{}-{}",
        slug(model),
        slug(method),
        slug(category)
    )
}

/// `figures/jaccard-categories-<model>-<method>`: a model × method's category heatmap.
pub fn category_jaccard_stem(model: &str, method: &str) -> String {
    format!(
        "{FIGURES_DIR}/jaccard-categories-{}-{}",
        slug(model),
        slug(method)
    )
}

/// `figures/jaccard-methods-<model>-<category>`: a model × category's method heatmap.
pub fn method_jaccard_stem(model: &str, category: &str) -> String {
    format!(
        "{FIGURES_DIR}/jaccard-methods-{}-{}",
        slug(model),
        slug(category)
    )
}

/// `figures/depth-<model>`: a model's depth histogram of every method's top heads.
pub fn depth_stem(model: &str) -> String {
    format!("{FIGURES_DIR}/depth-{}", slug(model))
}

/// Writes every figure of `summary` under `dir/figures/` (`dir` is the study folder, beside
/// FINDINGS.md) as `<stem>.svg` and `<stem>.png`, and returns the paths written, SVG before PNG,
/// in the order: per model its curves (experiment order) then its depth histogram, then the
/// category heatmaps, then the method heatmaps. Two labels that slug to the same file name are an
/// error rather than one figure silently overwriting another.
pub fn write_figures(summary: &Summary, dir: &Path) -> Result<Vec<PathBuf>> {
    register_font()?;
    let folder = dir.join(FIGURES_DIR);
    std::fs::create_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    let mut out = Output {
        dir,
        stems: BTreeSet::new(),
        written: Vec::new(),
    };
    let design = &summary.design;
    for model in &summary.models {
        for exp in &model.experiments {
            let stem = curve_stem(&model.model, &exp.method, &exp.category);
            out.write(&Curve { design, model, exp }, stem)?;
        }
        out.write(&Depth { design, model }, depth_stem(&model.model))?;
    }
    for m in &summary.overlaps.between_categories {
        let stem = category_jaccard_stem(&m.model, &m.within);
        out.write(&Heatmap::new(m, design, Axis::Categories), stem)?;
    }
    for m in &summary.overlaps.between_methods {
        let stem = method_jaccard_stem(&m.model, &m.within);
        out.write(&Heatmap::new(m, design, Axis::Methods), stem)?;
    }
    Ok(out.written)
}

/// Writes one figure as `dir/<stem>.svg` and `dir/<stem>.png` (for other commands' figures, e.g.
/// `headscope prune`'s retention curves), returning the two paths.
pub(crate) fn write_figure(fig: &impl Figure, dir: &Path, stem: &str) -> Result<Vec<PathBuf>> {
    register_font()?;
    let mut out = Output {
        dir,
        stems: BTreeSet::new(),
        written: Vec::new(),
    };
    if let Some(parent) = dir.join(stem).parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    out.write(fig, stem.to_string())?;
    Ok(out.written)
}

/// Registers the bundled font as plotters' `sans-serif` (once per process).
pub(crate) fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Figure {
            path: PathBuf::from("assets/fonts/DejaVuSans-subset.ttf"),
            message: "the bundled font cannot be read".into(),
        })
    }
}

/// A figure that can draw itself on any plotters backend.
pub(crate) trait Figure {
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static;
}

/// Where figures go, and what has been written.
struct Output<'a> {
    dir: &'a Path,
    stems: BTreeSet<String>,
    written: Vec<PathBuf>,
}

impl Output<'_> {
    fn write(&mut self, fig: &impl Figure, stem: String) -> Result<()> {
        let svg_path = self.dir.join(format!("{stem}.svg"));
        if !self.stems.insert(stem.clone()) {
            return Err(figure_error(
                &svg_path,
                "two figures have this file name (labels that differ only in case or punctuation)",
            ));
        }
        let svg = render_svg(fig).map_err(|e| figure_error(&svg_path, e))?;
        write_atomic(&svg_path, svg.as_bytes())?;
        let png_path = self.dir.join(format!("{stem}.png"));
        let png = render_png(fig).map_err(|e| figure_error(&png_path, e))?;
        write_atomic(&png_path, &png)?;
        self.written.extend([svg_path, png_path]);
        Ok(())
    }
}

fn figure_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Figure {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn render_svg(fig: &impl Figure) -> std::result::Result<String, Box<dyn StdError>> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, fig.size()).into_drawing_area();
        fig.draw(&root)?;
        root.present()?;
    }
    Ok(svg)
}

fn render_png(fig: &impl Figure) -> std::result::Result<Vec<u8>, Box<dyn StdError>> {
    let (w, h) = fig.size();
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        fig.draw(&root)?;
        root.present()?;
    }
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgb)?;
    writer.finish()?;
    Ok(out)
}

/// Writes through a temporary file and a rename, so a reader never sees half a figure.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// The title band: a title and a smaller subtitle, centred.
pub(crate) fn draw_titles<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    subtitle: &str,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    let centre = area.dim_in_pixel().0 as i32 / 2;
    let top = Pos::new(HPos::Center, VPos::Top);
    area.draw(&Text::new(
        title.to_string(),
        (centre, 10),
        (FONT, 22).into_font().color(&BLACK).pos(top),
    ))?;
    area.draw(&Text::new(
        subtitle.to_string(),
        (centre, 38),
        (FONT, 15).into_font().color(&CLEAN).pos(top),
    ))?;
    Ok(())
}

/// Accuracy (%) against k for one experiment.
struct Curve<'a> {
    design: &'a Design,
    model: &'a ModelSummary,
    exp: &'a Experiment,
}

impl Curve<'_> {
    fn title(&self) -> String {
        format!(
            "{} · {} · {}",
            self.model.model, self.exp.method, self.exp.category
        )
    }

    fn subtitle(&self) -> String {
        format!(
            "ablation {}, positions {} · n = {} test samples · {} random draws per k",
            self.design.ablation_mode,
            self.design.positions,
            self.exp.test_samples,
            self.design.draws
        )
    }

    /// `(k, value)` in percent for one condition.
    fn series(&self, pick: impl Fn(&super::summary::CurvePoint) -> f64) -> Vec<(i32, f64)> {
        let points = self.exp.points.iter();
        points.map(|p| (p.k as i32, 100.0 * pick(p))).collect()
    }

    /// A closed band between `lo` and `hi` (percent), along k.
    fn band(
        &self,
        lo: impl Fn(&super::summary::CurvePoint) -> f64,
        hi: impl Fn(&super::summary::CurvePoint) -> f64,
    ) -> Vec<(i32, f64)> {
        let mut outline = self.series(hi);
        outline.extend(self.series(lo).into_iter().rev());
        outline
    }
}

impl Figure for Curve<'_> {
    fn size(&self) -> (u32, u32) {
        (960, 640)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(TITLE_H);
        draw_titles(&head, &self.title(), &self.subtitle())?;
        let ks: Vec<i32> = self.exp.points.iter().map(|p| p.k as i32).collect();
        let k_max = ks.iter().copied().fold(1, i32::max);
        let pad = (k_max / 30).max(1);
        let mut chart = ChartBuilder::on(&body)
            .margin(16)
            .margin_right(28)
            .x_label_area_size(50)
            .y_label_area_size(64)
            .build_cartesian_2d((-pad..k_max + pad).with_key_points(ks), 0f64..100f64)?;
        chart
            .configure_mesh()
            .x_desc("k (heads ablated)")
            .y_desc("accuracy (%)")
            .light_line_style(TRANSPARENT)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 17))
            .draw()?;
        self.draw_clean(&mut chart, k_max + pad)?;
        let random_band = self.band(|p| p.random.pooled.lo, |p| p.random.pooled.hi);
        chart.draw_series([Polygon::new(random_band, RANDOM.mix(0.18).filled())])?;
        let top_band = self.band(|p| p.top.lo, |p| p.top.hi);
        chart.draw_series([Polygon::new(top_band, TOP.mix(0.18).filled())])?;
        self.draw_lines(&mut chart)?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerLeft)
            .margin(12)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(CLEAN.mix(0.6))
            .draw()?;
        Ok(())
    }
}

type CurveChart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<WithKeyPoints<RangedCoordi32>, RangedCoordf64>>;

impl Curve<'_> {
    /// The clean model's accuracy: a grey reference line, and its interval at k = 0.
    fn draw_clean<DB: DrawingBackend>(&self, chart: &mut CurveChart<DB>, x_end: i32) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let Some(clean) = self.model.clean_accuracy.get(&self.exp.category) else {
            return Ok(());
        };
        let (v, lo, hi) = (100.0 * clean.value, 100.0 * clean.lo, 100.0 * clean.hi);
        let style = ShapeStyle::from(CLEAN).stroke_width(1);
        chart
            .draw_series([PathElement::new(vec![(0, v), (x_end, v)], style)])?
            .label(format!("clean model {v:.1} % (k = 0, 95 % CI)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        chart.draw_series([PathElement::new(
            vec![(0, lo), (0, hi)],
            style.stroke_width(2),
        )])?;
        chart.draw_series([Circle::new((0, v), 4, CLEAN.filled())])?;
        Ok(())
    }

    /// Top-k solid with dots, random-k dashed with triangles, layer-matched dotted with crosses.
    fn draw_lines<DB: DrawingBackend>(&self, chart: &mut CurveChart<DB>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let top = self.series(|p| p.top.value);
        let solid = TOP.stroke_width(3);
        chart
            .draw_series(LineSeries::new(top.clone(), solid))?
            .label("top-k heads (band: 95 % CI)")
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], solid));
        chart.draw_series(top.iter().map(|&c| Circle::new(c, 5, TOP.filled())))?;

        let random = self.series(|p| p.random.mean);
        let dashed = RANDOM.stroke_width(3);
        chart
            .draw_series(DashedLineSeries::new(random.clone(), 10, 6, dashed))?
            .label(format!(
                "random k heads, mean of {} draws (band: pooled 95 % CI)",
                self.design.draws
            ))
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 7, 4, dashed));
        chart.draw_series(
            random
                .iter()
                .map(|&c| TriangleMarker::new(c, 6, RANDOM.filled())),
        )?;

        let matched = self.series(|p| p.layer_matched.value);
        let dotted = LAYER_MATCHED.stroke_width(2);
        chart
            .draw_series(DashedLineSeries::new(matched.clone(), 2, 5, dotted))?
            .label("layer-matched random k heads")
            .legend(move |(x, y)| DashedPathElement::new(vec![(x, y), (x + 24, y)], 2, 4, dotted));
        chart.draw_series(matched.iter().map(|&c| Cross::new(c, 5, dotted)))?;
        Ok(())
    }
}

/// Which labels a Jaccard matrix compares.
#[derive(Clone, Copy)]
enum Axis {
    Categories,
    Methods,
}

/// Pairwise Jaccard of top lists as coloured cells with their values printed.
struct Heatmap<'a> {
    matrix: &'a JaccardMatrix,
    design: &'a Design,
    axis: Axis,
    /// Width of the row-label column and side of a cell, from the labels' widths.
    label_w: u32,
    cell: u32,
}

const LABEL_FONT: u32 = 15;

impl<'a> Heatmap<'a> {
    fn new(matrix: &'a JaccardMatrix, design: &'a Design, axis: Axis) -> Self {
        let font = (FONT, LABEL_FONT).into_font();
        let widest = matrix
            .labels
            .iter()
            .map(|l| {
                font.box_size(l)
                    .map(|(w, _)| w)
                    .unwrap_or(8 * l.len() as u32)
            })
            .max()
            .unwrap_or(0);
        Heatmap {
            matrix,
            design,
            axis,
            label_w: widest + 24,
            cell: (widest + 16).max(84),
        }
    }

    fn title(&self) -> String {
        let (what, within) = match self.axis {
            Axis::Categories => ("categories", "method"),
            Axis::Methods => ("methods", "category"),
        };
        format!(
            "Jaccard of top-{} heads between {what} · {} · {within} {}",
            self.design.top_n, self.matrix.model, self.matrix.within
        )
    }

    fn subtitle(&self) -> String {
        format!(
            "two random {}-sets of the model's heads give {:.2} on average",
            self.design.top_n, self.matrix.random
        )
    }

    fn n(&self) -> u32 {
        self.matrix.labels.len() as u32
    }
}

impl Figure for Heatmap<'_> {
    fn size(&self) -> (u32, u32) {
        let grid = self.n() * self.cell;
        let title_w = (FONT, 22)
            .into_font()
            .box_size(&self.title())
            .map(|(w, _)| w + 64)
            .unwrap_or(0);
        let w = (self.label_w + grid + 40).max(title_w).max(560);
        (w, TITLE_H + 24 + grid + 48)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(TITLE_H);
        draw_titles(&head, &self.title(), &self.subtitle())?;
        let grid_w = (self.n() * self.cell) as i32;
        let left = (body.dim_in_pixel().0 as i32 - grid_w + self.label_w as i32) / 2;
        let top = 24;
        let label = (FONT, LABEL_FONT).into_font().color(&BLACK);
        for (i, name) in self.matrix.labels.iter().enumerate() {
            let at = (i as u32 * self.cell + self.cell / 2) as i32;
            let row = label.pos(Pos::new(HPos::Right, VPos::Center));
            body.draw(&Text::new(name.clone(), (left - 10, top + at), row))?;
            let col = label.pos(Pos::new(HPos::Center, VPos::Top));
            body.draw(&Text::new(name.clone(), (left + at, top + grid_w + 8), col))?;
        }
        for (i, row) in self.matrix.values.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                let x = left + (j as u32 * self.cell) as i32;
                let y = top + (i as u32 * self.cell) as i32;
                self.draw_cell(&body, (x, y), v)?;
            }
        }
        Ok(())
    }
}

impl Heatmap<'_> {
    /// One cell: white (0) to deep blue (1), with its value in a colour that stays readable.
    fn draw_cell<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        (x, y): (i32, i32),
        v: f64,
    ) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let t = v.clamp(0.0, 1.0);
        let mix = |white: f64, full: f64| (white + (full - white) * t).round() as u8;
        let fill = RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0));
        let c = self.cell as i32;
        area.draw(&Rectangle::new([(x, y), (x + c, y + c)], fill.filled()))?;
        area.draw(&Rectangle::new(
            [(x, y), (x + c, y + c)],
            WHITE.stroke_width(2),
        ))?;
        let ink = if t > 0.55 { WHITE } else { BLACK };
        let centre = Pos::new(HPos::Center, VPos::Center);
        let text = (FONT, 17).into_font().color(&ink).pos(centre);
        area.draw(&Text::new(format!("{v:.2}"), (x + c / 2, y + c / 2), text))?;
        Ok(())
    }
}

/// A model's top heads per tenth of relative depth: one panel per method, a bar per category.
struct Depth<'a> {
    design: &'a Design,
    model: &'a ModelSummary,
}

const PANEL_H: u32 = 300;

impl Depth<'_> {
    fn detections(&self, method: &str) -> Vec<&Detection> {
        let categories = self.design.categories.iter();
        categories
            .filter_map(|c| {
                let mut d = self.model.detect.iter();
                d.find(|d| d.method == method && &d.category == c)
            })
            .collect()
    }

    fn draw_panel<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>, method: &str) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        let detections = self.detections(method);
        let y_max = detections
            .iter()
            .flat_map(|d| d.depth_histogram)
            .max()
            .unwrap_or(0)
            .max(1) as f64
            * 1.15;
        let mut chart = ChartBuilder::on(area)
            .caption(method, (FONT, 17))
            .margin(10)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..y_max)?;
        chart
            .configure_mesh()
            .x_labels(11)
            .x_desc("relative depth (layer / (layers − 1))")
            .y_desc("top heads")
            .light_line_style(TRANSPARENT)
            .x_label_formatter(&|x| format!("{x:.1}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style((FONT, 14))
            .axis_desc_style((FONT, 15))
            .draw()?;
        let width = 0.08 / detections.len().max(1) as f64;
        for (c, d) in detections.iter().enumerate() {
            let color = PALETTE[c % PALETTE.len()];
            let bars = d.depth_histogram.iter().enumerate().map(move |(bin, &n)| {
                let x0 = bin as f64 / 10.0 + 0.01 + c as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, n as f64)], color.filled())
            });
            chart
                .draw_series(bars)?
                .label(format!(
                    "{} (mean depth {:.2})",
                    d.category, d.mean_relative_depth
                ))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(CLEAN.mix(0.6))
            .draw()?;
        Ok(())
    }
}

impl Figure for Depth<'_> {
    fn size(&self) -> (u32, u32) {
        let panels = self.design.methods.len().max(1) as u32;
        (960, TITLE_H + panels * PANEL_H)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (head, body) = root.split_vertically(TITLE_H);
        let title = format!(
            "{} · relative depth of each method's top-{} heads",
            self.model.model, self.design.top_n
        );
        let subtitle = format!(
            "{} ({} layers × {} heads) · counts per tenth of depth, one bar per category",
            self.model.arch, self.model.layers, self.model.heads
        );
        draw_titles(&head, &title, &subtitle)?;
        let panels = body.split_evenly((self.design.methods.len().max(1), 1));
        for (panel, method) in panels.iter().zip(&self.design.methods) {
            self.draw_panel(panel, method)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_file_name_safe() {
        assert_eq!(slug("Qwen2.5 Coder/0.5B"), "qwen2.5-coder-0.5b");
        assert_eq!(slug("SmolLM2-135M-Instruct"), "smollm2-135m-instruct");
        assert_eq!(slug("../etc/passwd"), "etc-passwd");
        assert_eq!(slug("état: «x»"), "tat-x");
        assert_eq!(slug("///"), "x");
        assert_eq!(
            curve_stem("M A", "retrieval", "inc_state"),
            "figures/curve-m-a-retrieval-inc_state"
        );
    }
}
