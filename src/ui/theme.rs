//! Colour themes (`themes/*.toml`). The shipped themes are compiled into the binary; `--theme`
//! takes a built-in name, a name found as `<config dir>/headscope/themes/NAME.toml` (which then
//! overrides the built-in of that name), or a path. A theme file may set only some fields: the
//! rest come from the theme it `extends` (default: `default`).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ratatui::style::{Color, Modifier, Style};
use serde::Deserialize;

/// The shipped themes, `(name, TOML)`.
pub const BUILTIN: [(&str, &str); 4] = [
    ("default", include_str!("../../themes/default.toml")),
    ("light", include_str!("../../themes/light.toml")),
    (
        "high-contrast",
        include_str!("../../themes/high-contrast.toml"),
    ),
    ("colorblind", include_str!("../../themes/colorblind.toml")),
];

/// Named colour scales, low to high.
pub const SCALES: [(&str, &[&str]); 9] = [
    (
        "viridis",
        &[
            "#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
            "#b5de2b", "#fde725",
        ],
    ),
    (
        "cividis",
        &[
            "#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8779", "#a69d75", "#c4b56c",
            "#e4cf5b", "#fee838",
        ],
    ),
    (
        "magma",
        &[
            "#000004", "#180f3d", "#440f76", "#721f81", "#9e2f7f", "#cd4071", "#f1605d", "#fd9668",
            "#feca8d", "#fcfdbf",
        ],
    ),
    (
        "inferno",
        &[
            "#000004", "#1b0c41", "#4a0c6b", "#781c6d", "#a52c60", "#cf4446", "#ed6925", "#fb9b06",
            "#f7d13d", "#fcffa4",
        ],
    ),
    ("gray", &["#101010", "#f0f0f0"]),
    (
        "blue-red",
        &[
            "#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b",
        ],
    ),
    (
        "purple-orange",
        &[
            "#542788", "#998ec3", "#d8daeb", "#f7f7f7", "#fee0b6", "#f1a340", "#b35806",
        ],
    ),
    (
        "red-green",
        &[
            "#d73027", "#fc8d59", "#fee08b", "#d9ef8b", "#91cf60", "#1a9850",
        ],
    ),
    (
        "red-yellow-blue",
        &[
            "#d73027", "#fc8d59", "#fee090", "#e0f3f8", "#91bfdb", "#4575b4",
        ],
    ),
];

/// A continuous colour scale: RGB stops, interpolated linearly.
#[derive(Clone, Debug, PartialEq)]
pub struct Scale {
    pub name: String,
    stops: Vec<(u8, u8, u8)>,
}

impl Scale {
    pub fn named(name: &str) -> Option<Scale> {
        let (_, stops) = SCALES.iter().find(|(n, _)| *n == name)?;
        let stops = stops.iter().filter_map(|s| hex(s)).collect();
        Some(Scale {
            name: name.to_string(),
            stops,
        })
    }

    fn from_spec(spec: &ScaleSpec, what: &str) -> Result<Scale> {
        match spec {
            ScaleSpec::Name(n) => Scale::named(n).ok_or_else(|| {
                anyhow!(
                    "`{what}`: unknown scale `{n}` (use one of {}, or a list of \"#rrggbb\" colours)",
                    SCALES.map(|s| s.0).join(", ")
                )
            }),
            ScaleSpec::Stops(list) => {
                if list.len() < 2 {
                    bail!("`{what}`: a scale needs at least two colours");
                }
                let stops = list
                    .iter()
                    .map(|s| {
                        hex(s).ok_or_else(|| {
                            anyhow!("`{what}`: `{s}` is not a \"#rrggbb\" colour")
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Scale {
                    name: "custom".into(),
                    stops,
                })
            }
        }
    }

    /// The colour at `t` in `[0, 1]` (clamped).
    pub fn at(&self, t: f64) -> Color {
        let n = self.stops.len();
        if n == 0 {
            return Color::Reset;
        }
        let t = if t.is_finite() {
            t.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let x = t * (n - 1) as f64;
        let i = (x.floor() as usize).min(n - 1);
        let j = (i + 1).min(n - 1);
        let f = x - i as f64;
        let (a, b) = (self.stops[i], self.stops[j]);
        let mix = |p: u8, q: u8| (p as f64 + (q as f64 - p as f64) * f).round() as u8;
        Color::Rgb(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

fn hex(s: &str) -> Option<(u8, u8, u8)> {
    match s.parse::<Color>().ok()? {
        Color::Rgb(r, g, b) => Some((r, g, b)),
        _ => None,
    }
}

/// Black or white, whichever reads better on `bg`.
pub fn contrast_fg(bg: Color) -> Color {
    match bg {
        Color::Rgb(r, g, b) => {
            let lum = 0.299 * r as f64 + 0.587 * g as f64 + 0.114 * b as f64;
            if lum > 140.0 {
                Color::Rgb(0, 0, 0)
            } else {
                Color::Rgb(255, 255, 255)
            }
        }
        _ => Color::Reset,
    }
}

/// Every style the panes use, resolved from one theme file.
#[derive(Clone, Debug)]
pub struct Theme {
    pub name: String,
    pub dark: bool,
    pub fg: Color,
    pub bg: Color,
    pub muted: Color,
    pub accent: Color,
    pub border: Color,
    pub focus: Color,
    pub title: Color,
    pub header_fg: Color,
    pub header_bg: Color,
    pub selection: Color,
    pub cursor: Color,
    pub ablated: Color,
    pub error: Color,
    pub warning: Color,
    pub ok: Color,
    pub bar: Color,
    pub bar_negative: Color,
    pub curve_top: Color,
    pub curve_random: Color,
    pub heatmap: Scale,
    pub diverging: Scale,
    pub probability: Scale,
}

impl Theme {
    pub fn base(&self) -> Style {
        Style::new().fg(self.fg).bg(self.bg)
    }
    pub fn muted(&self) -> Style {
        Style::new().fg(self.muted)
    }
    pub fn accent(&self) -> Style {
        Style::new().fg(self.accent)
    }
    pub fn title(&self, focused: bool) -> Style {
        let s = Style::new().fg(if focused { self.focus } else { self.title });
        if focused {
            s.add_modifier(Modifier::BOLD)
        } else {
            s
        }
    }
    pub fn border(&self, focused: bool) -> Style {
        Style::new().fg(if focused { self.focus } else { self.border })
    }
    pub fn selected(&self) -> Style {
        Style::new().bg(self.selection)
    }
    pub fn header(&self) -> Style {
        Style::new().fg(self.header_fg).bg(self.header_bg)
    }
    pub fn error(&self) -> Style {
        Style::new().fg(self.error).add_modifier(Modifier::BOLD)
    }
    pub fn key(&self) -> Style {
        Style::new().fg(self.accent).add_modifier(Modifier::BOLD)
    }
    /// A cell of a value on a scale: the colour as background, a readable foreground.
    pub fn cell(&self, bg: Color) -> Style {
        Style::new().bg(bg).fg(contrast_fg(bg))
    }

    /// The built-in `default` theme (cannot fail: it is tested).
    pub fn builtin_default() -> Theme {
        Theme::builtin("default").expect("the built-in default theme parses")
    }

    pub fn builtin(name: &str) -> Result<Theme> {
        let text = BUILTIN
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| anyhow!("no built-in theme `{name}`"))?;
        Theme::from_toml(text, &format!("built-in theme `{name}`"))
    }

    /// Parses a theme file, filling what it leaves out from the theme it extends.
    pub fn from_toml(text: &str, origin: &str) -> Result<Theme> {
        let file: ThemeFile =
            toml::from_str(text).with_context(|| format!("{origin}: invalid theme"))?;
        // The built-in default is complete on its own; everything else builds on it.
        let chain = if text == BUILTIN[0].1 {
            vec![file]
        } else {
            resolve_chain(file, origin, 0)?
        };
        let mut merged = ThemeFile::default();
        for f in chain.into_iter().rev() {
            merged.overlay(f);
        }
        merged.finish(origin)
    }

    /// `--theme NAME|PATH`.
    pub fn load(spec: &str) -> Result<Theme> {
        let as_path = Path::new(spec);
        let looks_like_path = spec.contains('/') || spec.ends_with(".toml");
        if looks_like_path || (as_path.is_file() && !is_builtin(spec)) {
            let text = std::fs::read_to_string(as_path)
                .with_context(|| format!("--theme {spec}: cannot read the theme file"))?;
            return Theme::from_toml(&text, &as_path.display().to_string());
        }
        if let Some(dir) = user_theme_dir() {
            let user = dir.join(format!("{spec}.toml"));
            if user.is_file() {
                let text = std::fs::read_to_string(&user)
                    .with_context(|| format!("cannot read {}", user.display()))?;
                return Theme::from_toml(&text, &user.display().to_string());
            }
        }
        if is_builtin(spec) {
            return Theme::builtin(spec);
        }
        bail!(
            "unknown theme `{spec}`: use one of {} or a path to a .toml file",
            BUILTIN.map(|b| b.0).join(", ")
        )
    }
}

fn is_builtin(name: &str) -> bool {
    BUILTIN.iter().any(|(n, _)| *n == name)
}

/// `$XDG_CONFIG_HOME/headscope`, else `~/.config/headscope`.
pub fn config_dir() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("headscope"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".config").join("headscope"))
}

fn user_theme_dir() -> Option<PathBuf> {
    config_dir().map(|d| d.join("themes"))
}

/// The file and the files it extends, nearest first; the built-in `default` (complete) is the root.
fn resolve_chain(file: ThemeFile, origin: &str, depth: usize) -> Result<Vec<ThemeFile>> {
    if depth > 8 {
        bail!("{origin}: `extends` goes round in a circle");
    }
    let parent = file
        .extends
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let text = BUILTIN
        .iter()
        .find(|(n, _)| *n == parent)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            anyhow!(
                "{origin}: `extends = \"{parent}\"`: no built-in theme of that name (use one of {})",
                BUILTIN.map(|b| b.0).join(", ")
            )
        })?;
    let parent_file: ThemeFile = toml::from_str(text)
        .with_context(|| format!("built-in theme `{parent}`: invalid theme"))?;
    let mut chain = vec![file];
    if parent == "default" {
        chain.push(parent_file);
    } else {
        chain.extend(resolve_chain(parent_file, origin, depth + 1)?);
    }
    Ok(chain)
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum ScaleSpec {
    Name(String),
    Stops(Vec<String>),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThemeFile {
    name: Option<String>,
    extends: Option<String>,
    dark: Option<bool>,
    heatmap: Option<ScaleSpec>,
    diverging: Option<ScaleSpec>,
    probability: Option<ScaleSpec>,
    #[serde(default)]
    colors: ColorsFile,
}

macro_rules! colors_file {
    ($($field:ident),* $(,)?) => {
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct ColorsFile {
            $($field: Option<String>,)*
        }
        impl ColorsFile {
            fn overlay(&mut self, other: ColorsFile) {
                $(if other.$field.is_some() { self.$field = other.$field; })*
            }
        }
        /// Parsed colours, every field required.
        struct Colors {
            $($field: Color,)*
        }
        impl ColorsFile {
            fn finish(&self, origin: &str) -> Result<Colors> {
                Ok(Colors {
                    $($field: parse_color(self.$field.as_deref(), stringify!($field), origin)?,)*
                })
            }
        }
    };
}

colors_file!(
    fg,
    bg,
    muted,
    accent,
    border,
    focus,
    title,
    header_fg,
    header_bg,
    selection,
    cursor,
    ablated,
    error,
    warning,
    ok,
    bar,
    bar_negative,
    curve_top,
    curve_random,
);

fn parse_color(value: Option<&str>, field: &str, origin: &str) -> Result<Color> {
    let v = value.ok_or_else(|| anyhow!("{origin}: `colors.{field}` is missing"))?;
    v.parse::<Color>().map_err(|_| {
        anyhow!("{origin}: `colors.{field} = \"{v}\"` is not a colour (use \"#rrggbb\", a name such as \"red\", or 0-255)")
    })
}

impl ThemeFile {
    fn overlay(&mut self, other: ThemeFile) {
        if other.name.is_some() {
            self.name = other.name;
        }
        if other.dark.is_some() {
            self.dark = other.dark;
        }
        if other.heatmap.is_some() {
            self.heatmap = other.heatmap;
        }
        if other.diverging.is_some() {
            self.diverging = other.diverging;
        }
        if other.probability.is_some() {
            self.probability = other.probability;
        }
        self.colors.overlay(other.colors);
    }

    fn finish(self, origin: &str) -> Result<Theme> {
        let c = self.colors.finish(origin)?;
        let scale = |s: &Option<ScaleSpec>, what: &str| -> Result<Scale> {
            let spec = s
                .as_ref()
                .ok_or_else(|| anyhow!("{origin}: `{what}` is missing"))?;
            Scale::from_spec(spec, what).with_context(|| origin.to_string())
        };
        Ok(Theme {
            name: self.name.clone().unwrap_or_else(|| "custom".into()),
            dark: self.dark.unwrap_or(true),
            heatmap: scale(&self.heatmap, "heatmap")?,
            diverging: scale(&self.diverging, "diverging")?,
            probability: scale(&self.probability, "probability")?,
            fg: c.fg,
            bg: c.bg,
            muted: c.muted,
            accent: c.accent,
            border: c.border,
            focus: c.focus,
            title: c.title,
            header_fg: c.header_fg,
            header_bg: c.header_bg,
            selection: c.selection,
            cursor: c.cursor,
            ablated: c.ablated,
            error: c.error,
            warning: c.warning,
            ok: c.ok,
            bar: c.bar,
            bar_negative: c.bar_negative,
            curve_top: c.curve_top,
            curve_random: c.curve_random,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_theme_parses() {
        for (name, _) in BUILTIN {
            let t = Theme::builtin(name).unwrap();
            assert_eq!(t.name, name);
        }
        assert!(!Theme::builtin("light").unwrap().dark);
        assert_eq!(
            Theme::builtin("colorblind").unwrap().heatmap.name,
            "cividis"
        );
    }

    #[test]
    fn partial_user_theme_extends_a_builtin() {
        let t = Theme::from_toml(
            "extends = \"light\"\nheatmap = \"magma\"\n[colors]\naccent = \"red\"\n",
            "test",
        )
        .unwrap();
        assert!(!t.dark);
        assert_eq!(t.heatmap.name, "magma");
        assert_eq!(t.accent, Color::Red);
        assert_eq!(t.bg, Theme::builtin("light").unwrap().bg);
    }

    #[test]
    fn bad_themes_are_clear_errors() {
        let e = Theme::from_toml("[colors]\nfg = \"nope\"\n", "mine.toml").unwrap_err();
        assert!(format!("{e:#}").contains("colors.fg"), "{e:#}");
        let e = Theme::from_toml("heatmap = \"rainbow\"\n", "mine.toml").unwrap_err();
        assert!(
            format!("{e:#}").contains("unknown scale `rainbow`"),
            "{e:#}"
        );
        let e = Theme::from_toml("colour = 1\n", "mine.toml").unwrap_err();
        assert!(format!("{e:#}").contains("mine.toml"), "{e:#}");
        let e = Theme::load("no-such-theme").unwrap_err();
        assert!(format!("{e:#}").contains("unknown theme"), "{e:#}");
    }

    #[test]
    fn scales_interpolate_and_clamp() {
        let s = Scale::named("gray").unwrap();
        assert_eq!(s.at(0.0), Color::Rgb(16, 16, 16));
        assert_eq!(s.at(1.0), Color::Rgb(240, 240, 240));
        assert_eq!(s.at(2.0), Color::Rgb(240, 240, 240));
        assert_eq!(s.at(0.5), Color::Rgb(128, 128, 128));
        assert_eq!(s.at(f64::NAN), Color::Rgb(16, 16, 16));
    }
}
