//! Key bindings: the defaults below, overridden per command by
//! `$XDG_CONFIG_HOME/headscope/keys.toml` (else `~/.config/headscope/keys.toml`):
//!
//! ```toml
//! [keys]
//! quit = ["q", "ctrl-q"]
//! toggle-ablation = "x"
//! ```
//!
//! A command named in the file gets exactly the keys given there; a key taken by a user binding
//! is removed from the defaults of other commands. `ctrl-c` always quits.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use serde::Deserialize;

use super::app::Command;

/// `(command, config name, default keys, help text)`, in the order `?` lists them.
pub const BINDINGS: &[(Command, &str, &[&str], &str)] = &[
    (Command::Help, "help", &["?", "f1"], "show / hide this help"),
    (Command::Quit, "quit", &["q"], "quit (ctrl-c always quits)"),
    (
        Command::NextPane,
        "next-pane",
        &["tab"],
        "focus the next pane",
    ),
    (
        Command::PrevPane,
        "prev-pane",
        &["backtab"],
        "focus the previous pane",
    ),
    (
        Command::FocusAnswer,
        "focus-answer",
        &["1"],
        "focus the answer",
    ),
    (
        Command::FocusSample,
        "focus-sample",
        &["2"],
        "focus the sample",
    ),
    (
        Command::FocusHeatmap,
        "focus-heads",
        &["3"],
        "focus the head heatmap",
    ),
    (
        Command::FocusLens,
        "focus-lens",
        &["4"],
        "focus the logit lens",
    ),
    (
        Command::FocusAttribution,
        "focus-attribution",
        &["5"],
        "focus the attribution",
    ),
    (
        Command::FocusAblation,
        "focus-ablation",
        &["6"],
        "focus the ablation",
    ),
    (
        Command::Left,
        "left",
        &["h", "left"],
        "move left (token, head)",
    ),
    (
        Command::Right,
        "right",
        &["l", "right"],
        "move right (token, head)",
    ),
    (
        Command::Up,
        "up",
        &["k", "up"],
        "move up (layer, source, scroll)",
    ),
    (
        Command::Down,
        "down",
        &["j", "down"],
        "move down (layer, source, scroll)",
    ),
    (Command::PageUp, "page-up", &["pageup"], "move up a page"),
    (
        Command::PageDown,
        "page-down",
        &["pagedown"],
        "move down a page",
    ),
    (Command::Home, "home", &["home", "g"], "first token / head"),
    (Command::End, "end", &["end", "G"], "last token / head"),
    (
        Command::PrevToken,
        "prev-token",
        &["["],
        "previous answer token (any pane)",
    ),
    (
        Command::NextToken,
        "next-token",
        &["]"],
        "next answer token (any pane)",
    ),
    (
        Command::CycleHeadScore,
        "cycle-head-score",
        &["m"],
        "next head score",
    ),
    (
        Command::CycleAttribution,
        "cycle-attribution",
        &["M"],
        "next attribution method",
    ),
    (
        Command::ToggleSentences,
        "toggle-sentences",
        &["s"],
        "documents / sentences",
    ),
    (
        Command::CycleLensPoint,
        "cycle-lens-point",
        &["p"],
        "logit lens: post / mid / pre / all",
    ),
    (
        Command::ToggleRank,
        "toggle-rank",
        &["n"],
        "logit lens: top token / answer rank",
    ),
    (
        Command::ToggleAblation,
        "toggle-ablation",
        &["space"],
        "ablate the head (or MLP) under the cursor",
    ),
    (
        Command::AblateTopK,
        "ablate-top-k",
        &["a"],
        "ablate the top-k heads of the score",
    ),
    (
        Command::AblateRandom,
        "ablate-random",
        &["R"],
        "ablate k random heads",
    ),
    (
        Command::ResetAblation,
        "reset-ablation",
        &["r"],
        "ablate nothing",
    ),
    (Command::MoreK, "more-k", &["+", "="], "k + 1"),
    (Command::FewerK, "fewer-k", &["-"], "k − 1"),
    (
        Command::CycleAblationKind,
        "cycle-ablation-kind",
        &["t"],
        "ablation: zero / mean / uniform",
    ),
    (
        Command::Rerun,
        "rerun",
        &["enter"],
        "re-run now (and resume after esc)",
    ),
    (
        Command::Cancel,
        "cancel",
        &["esc"],
        "cancel the job (from a study: back to it)",
    ),
    (Command::Export, "export", &["e"], "export a screenshot"),
    (
        Command::CycleShared,
        "cycle-shared",
        &["o"],
        "study: heads shared with another category / method / model",
    ),
    (
        Command::NextShared,
        "next-shared",
        &["O"],
        "study: compare with the next one",
    ),
    (
        Command::ToggleBroken,
        "toggle-broken",
        &["b"],
        "study: samples broken by the top-k, not by random",
    ),
];

/// A key with its modifiers, normalised so `M` and `shift-m` are the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeyCombo {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl KeyCombo {
    pub fn new(code: KeyCode, mods: KeyModifiers) -> KeyCombo {
        let mut mods = mods & (KeyModifiers::CONTROL | KeyModifiers::ALT | KeyModifiers::SHIFT);
        let code = match code {
            // Shift is already in the character (and terminals differ in reporting it).
            KeyCode::Char(c) => {
                mods.remove(KeyModifiers::SHIFT);
                if mods.contains(KeyModifiers::CONTROL) {
                    KeyCode::Char(c.to_ascii_lowercase())
                } else {
                    KeyCode::Char(c)
                }
            }
            KeyCode::BackTab => {
                mods.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            KeyCode::Tab if mods.contains(KeyModifiers::SHIFT) => {
                mods.remove(KeyModifiers::SHIFT);
                KeyCode::BackTab
            }
            other => other,
        };
        KeyCombo { code, mods }
    }

    pub fn from_event(ev: &KeyEvent) -> KeyCombo {
        KeyCombo::new(ev.code, ev.modifiers)
    }

    /// Parses `q`, `M`, `space`, `enter`, `ctrl-x`, `alt-left`, `shift-tab`, `f5`, `+`, `-`.
    pub fn parse(s: &str) -> Result<KeyCombo> {
        let mut rest = s;
        let mut mods = KeyModifiers::NONE;
        loop {
            let lower = rest.to_ascii_lowercase();
            let prefix = ["ctrl-", "alt-", "shift-"]
                .into_iter()
                .find(|p| lower.starts_with(p) && rest.len() > p.len());
            match prefix {
                Some("ctrl-") => mods |= KeyModifiers::CONTROL,
                Some("alt-") => mods |= KeyModifiers::ALT,
                Some("shift-") => mods |= KeyModifiers::SHIFT,
                _ => break,
            }
            rest = &rest[prefix.map_or(0, str::len)..];
        }
        let mut chars = rest.chars();
        let code = match (chars.next(), chars.next()) {
            (Some(c), None) => KeyCode::Char(c),
            _ => match rest.to_ascii_lowercase().as_str() {
                "space" => KeyCode::Char(' '),
                "enter" | "return" => KeyCode::Enter,
                "esc" | "escape" => KeyCode::Esc,
                "tab" => KeyCode::Tab,
                "backtab" => KeyCode::BackTab,
                "backspace" => KeyCode::Backspace,
                "delete" | "del" => KeyCode::Delete,
                "insert" | "ins" => KeyCode::Insert,
                "up" => KeyCode::Up,
                "down" => KeyCode::Down,
                "left" => KeyCode::Left,
                "right" => KeyCode::Right,
                "pageup" | "pgup" => KeyCode::PageUp,
                "pagedown" | "pgdn" => KeyCode::PageDown,
                "home" => KeyCode::Home,
                "end" => KeyCode::End,
                f if f.starts_with('f')
                    && f[1..].parse::<u8>().is_ok_and(|n| (1..=24).contains(&n)) =>
                {
                    KeyCode::F(f[1..].parse().unwrap_or(1))
                }
                _ => bail!(
                    "`{s}` is not a key (a character, or space, enter, esc, tab, backtab, \
                     backspace, delete, insert, up, down, left, right, pageup, pagedown, home, \
                     end, f1…f24, with ctrl-, alt- or shift- before it)"
                ),
            },
        };
        Ok(KeyCombo::new(code, mods))
    }

    /// The way `?` shows it.
    pub fn display(&self) -> String {
        let mut out = String::new();
        if self.mods.contains(KeyModifiers::CONTROL) {
            out.push_str("ctrl-");
        }
        if self.mods.contains(KeyModifiers::ALT) {
            out.push_str("alt-");
        }
        if self.mods.contains(KeyModifiers::SHIFT) {
            out.push_str("shift-");
        }
        match self.code {
            KeyCode::Char(' ') => out.push_str("space"),
            KeyCode::Char(c) => out.push(c),
            KeyCode::Enter => out.push_str("enter"),
            KeyCode::Esc => out.push_str("esc"),
            KeyCode::Tab => out.push_str("tab"),
            KeyCode::BackTab => out.push_str("shift-tab"),
            KeyCode::Backspace => out.push_str("backspace"),
            KeyCode::Delete => out.push_str("delete"),
            KeyCode::Insert => out.push_str("insert"),
            KeyCode::Up => out.push('↑'),
            KeyCode::Down => out.push('↓'),
            KeyCode::Left => out.push('←'),
            KeyCode::Right => out.push('→'),
            KeyCode::PageUp => out.push_str("pgup"),
            KeyCode::PageDown => out.push_str("pgdn"),
            KeyCode::Home => out.push_str("home"),
            KeyCode::End => out.push_str("end"),
            KeyCode::F(n) => out.push_str(&format!("f{n}")),
            other => out.push_str(&format!("{other:?}")),
        }
        out
    }
}

/// Keys → commands, and commands → keys for the help.
#[derive(Clone, Debug)]
pub struct KeyMap {
    map: HashMap<KeyCombo, Command>,
    keys: Vec<(Command, Vec<KeyCombo>)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default)]
    keys: HashMap<String, OneOrMany>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl Default for KeyMap {
    fn default() -> Self {
        KeyMap::with_overrides(Vec::new())
    }
}

impl KeyMap {
    fn with_overrides(overrides: Vec<(Command, Vec<KeyCombo>)>) -> KeyMap {
        let taken: Vec<KeyCombo> = overrides.iter().flat_map(|(_, k)| k.clone()).collect();
        let mut keys = Vec::with_capacity(BINDINGS.len());
        for (cmd, _, defaults, _) in BINDINGS {
            let list = match overrides.iter().find(|(c, _)| c == cmd) {
                Some((_, k)) => k.clone(),
                None => defaults
                    .iter()
                    .filter_map(|d| KeyCombo::parse(d).ok())
                    .filter(|k| !taken.contains(k))
                    .collect(),
            };
            keys.push((*cmd, list));
        }
        let mut map = HashMap::new();
        for (cmd, list) in &keys {
            for k in list {
                map.entry(*k).or_insert(*cmd);
            }
        }
        KeyMap { map, keys }
    }

    /// The default bindings with the overrides of a `keys.toml` text.
    pub fn from_toml(text: &str, origin: &str) -> Result<KeyMap> {
        let file: KeysFile =
            toml::from_str(text).with_context(|| format!("{origin}: invalid key config"))?;
        let mut overrides = Vec::new();
        let mut names: Vec<(&String, &OneOrMany)> = file.keys.iter().collect();
        names.sort_by(|a, b| a.0.cmp(b.0));
        for (name, value) in names {
            let cmd = BINDINGS
                .iter()
                .find(|b| b.1 == name.as_str())
                .map(|b| b.0)
                .ok_or_else(|| {
                    anyhow!(
                        "{origin}: unknown command `{name}` (commands: {})",
                        BINDINGS.iter().map(|b| b.1).collect::<Vec<_>>().join(", ")
                    )
                })?;
            let list = match value {
                OneOrMany::One(s) => vec![s.clone()],
                OneOrMany::Many(v) => v.clone(),
            };
            let combos = list
                .iter()
                .map(|k| KeyCombo::parse(k).with_context(|| format!("{origin}: `{name}`")))
                .collect::<Result<Vec<_>>>()?;
            overrides.push((cmd, combos));
        }
        // Two commands on one key is a mistake worth saying.
        for (i, (c1, k1)) in overrides.iter().enumerate() {
            for (c2, k2) in &overrides[i + 1..] {
                if let Some(k) = k1.iter().find(|k| k2.contains(k)) {
                    bail!(
                        "{origin}: key `{}` is bound to both `{}` and `{}`",
                        k.display(),
                        command_name(*c1),
                        command_name(*c2)
                    );
                }
            }
        }
        Ok(KeyMap::with_overrides(overrides))
    }

    /// The user's key config when there is one, else the defaults.
    pub fn load_user() -> Result<KeyMap> {
        match user_keys_path() {
            Some(p) if p.is_file() => KeyMap::load_file(&p),
            _ => Ok(KeyMap::default()),
        }
    }

    pub fn load_file(path: &Path) -> Result<KeyMap> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        KeyMap::from_toml(&text, &path.display().to_string())
    }

    /// The command of a key press; `ctrl-c` always quits.
    pub fn command(&self, ev: &KeyEvent) -> Option<Command> {
        if ev.kind == KeyEventKind::Release {
            return None;
        }
        let combo = KeyCombo::from_event(ev);
        if combo == KeyCombo::new(KeyCode::Char('c'), KeyModifiers::CONTROL) {
            return Some(Command::Quit);
        }
        self.map.get(&combo).copied()
    }

    /// The command of a parsed key (the headless screenshot's key script).
    pub fn command_of(&self, combo: &KeyCombo) -> Option<Command> {
        if *combo == KeyCombo::new(KeyCode::Char('c'), KeyModifiers::CONTROL) {
            return Some(Command::Quit);
        }
        self.map.get(combo).copied()
    }

    /// The keys of a command, as `?` shows them (`h/←`).
    pub fn keys_of(&self, cmd: Command) -> String {
        self.keys
            .iter()
            .find(|(c, _)| *c == cmd)
            .map(|(_, k)| {
                k.iter()
                    .map(KeyCombo::display)
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default()
    }

    /// Every command with its keys and help text, in help order.
    pub fn help(&self) -> Vec<(String, &'static str)> {
        BINDINGS
            .iter()
            .filter(|(cmd, ..)| !Command::STUDY_ONLY.contains(cmd))
            .map(|(cmd, _, _, help)| (self.keys_of(*cmd), *help))
            .collect()
    }

    /// `(command, help)` pairs with their keys, in the order given (the study view's `?`, whose
    /// commands mean other things there).
    pub fn help_of(&self, entries: &[(Command, &'static str)]) -> Vec<(String, &'static str)> {
        entries
            .iter()
            .map(|&(cmd, help)| (self.keys_of(cmd), help))
            .collect()
    }
}

pub fn command_name(cmd: Command) -> &'static str {
    BINDINGS.iter().find(|b| b.0 == cmd).map_or("?", |b| b.1)
}

/// `$XDG_CONFIG_HOME/headscope/keys.toml`, else `~/.config/headscope/keys.toml`.
pub fn user_keys_path() -> Option<PathBuf> {
    super::theme::config_dir().map(|d| d.join("keys.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn press(code: KeyCode, mods: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, mods)
    }

    #[test]
    fn defaults_cover_every_command_once() {
        let km = KeyMap::default();
        assert_eq!(
            km.command(&press(KeyCode::Char('M'), KeyModifiers::SHIFT)),
            Some(Command::CycleAttribution)
        );
        assert_eq!(
            km.command(&press(KeyCode::Char('m'), KeyModifiers::NONE)),
            Some(Command::CycleHeadScore)
        );
        assert_eq!(
            km.command(&press(KeyCode::Char(' '), KeyModifiers::NONE)),
            Some(Command::ToggleAblation)
        );
        assert_eq!(
            km.command(&press(KeyCode::Tab, KeyModifiers::SHIFT)),
            Some(Command::PrevPane)
        );
        assert_eq!(
            km.command(&press(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Some(Command::Quit)
        );
        // No default key is bound twice.
        let mut seen = std::collections::HashSet::new();
        for (_, _, keys, _) in BINDINGS {
            for k in *keys {
                assert!(seen.insert(KeyCombo::parse(k).unwrap()), "{k} bound twice");
            }
        }
    }

    #[test]
    fn overrides_replace_a_command_and_free_the_key_elsewhere() {
        let km = KeyMap::from_toml(
            "[keys]\ntoggle-ablation = \"x\"\nquit = [\"Q\", \"m\"]\n",
            "k",
        )
        .unwrap();
        assert_eq!(
            km.command(&press(KeyCode::Char('x'), KeyModifiers::NONE)),
            Some(Command::ToggleAblation)
        );
        assert_eq!(
            km.command(&press(KeyCode::Char(' '), KeyModifiers::NONE)),
            None
        );
        assert_eq!(
            km.command(&press(KeyCode::Char('m'), KeyModifiers::NONE)),
            Some(Command::Quit)
        );
        assert_eq!(km.keys_of(Command::CycleHeadScore), "");
    }

    #[test]
    fn bad_configs_are_clear_errors() {
        let e = KeyMap::from_toml("[keys]\nfly = \"f\"\n", "keys.toml").unwrap_err();
        assert!(format!("{e:#}").contains("unknown command `fly`"), "{e:#}");
        let e = KeyMap::from_toml("[keys]\nquit = \"ctrl-nope\"\n", "keys.toml").unwrap_err();
        assert!(
            format!("{e:#}").contains("`ctrl-nope` is not a key"),
            "{e:#}"
        );
        let e =
            KeyMap::from_toml("[keys]\nquit = \"x\"\nexport = \"x\"\n", "keys.toml").unwrap_err();
        assert!(format!("{e:#}").contains("bound to both"), "{e:#}");
        let e = KeyMap::from_toml("keys = 3\n", "keys.toml").unwrap_err();
        assert!(
            format!("{e:#}").contains("keys.toml: invalid key config"),
            "{e:#}"
        );
    }

    #[test]
    fn parses_named_and_modified_keys() {
        assert_eq!(KeyCombo::parse("-").unwrap().code, KeyCode::Char('-'));
        assert_eq!(
            KeyCombo::parse("ctrl-x").unwrap(),
            KeyCombo::new(KeyCode::Char('x'), KeyModifiers::CONTROL)
        );
        assert_eq!(KeyCombo::parse("shift-tab").unwrap().code, KeyCode::BackTab);
        assert_eq!(KeyCombo::parse("F5").unwrap().code, KeyCode::F(5));
        assert_eq!(KeyCombo::parse("space").unwrap().display(), "space");
    }
}
