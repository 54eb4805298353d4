//! User-message templates (`--prompt-template`): a minijinja template over `question`, `docs` and
//! `instruction` that writes the user message in place of a built-in style.
//!
//! Spans still come from character offsets: the template is rendered once with a unique
//! placeholder for the question and for each document's title and text, the placeholders are
//! found and replaced by the real text while their byte ranges are recorded, and the result must
//! equal the template rendered with the real values (so a template that filters or tests the
//! text it is given is refused instead of getting wrong spans).

use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;

use minijinja::{context, AutoEscape, Environment, UndefinedBehavior, Value};
use serde::Serialize;

use super::compose::{written_instruction, Composed, DocPiece};
use crate::{Error, Result};

/// Placeholder delimiters: private-use characters that no template or sample needs.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// A user-message template, parsed and checked when made.
///
/// The template sees `question` (a string), `instruction` (a string, or none when not given) and
/// `docs`, the documents in the prompt in order, each with `title`, `text` and `index` (its
/// 1-based number in the sample, which leave-out prompts keep; `loop.index` counts only the
/// documents written). It must write `{{ question }}` once and each document's `{{ doc.text }}`
/// once, as they are (no filters); a document's span runs from its title, when the title is
/// written just before the text, to the end of its text. The rendered message is trimmed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserTemplate {
    /// Where it came from (the file name), for messages.
    pub name: String,
    /// The minijinja source.
    pub source: String,
}

/// Where a placeholder stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Slot {
    Question,
    /// The title of `pieces[i]`.
    Title(usize),
    /// The text of `pieces[i]`.
    Text(usize),
}

/// A placeholder found in the layout: its slot and the byte range of the real text that
/// replaced it.
struct Placed {
    slot: Slot,
    range: Range<usize>,
}

impl UserTemplate {
    /// Parses `source` and renders it on a small probe sample, so that a template that cannot be
    /// parsed, fails to render or leaves out the question or a document is refused here, before
    /// any model runs.
    pub fn new(name: impl Into<String>, source: impl Into<String>) -> Result<UserTemplate> {
        let t = UserTemplate {
            name: name.into(),
            source: source.into(),
        };
        t.environment()?;
        let probe = |n: usize, title: &'static str, body: &str| DocPiece {
            number: n,
            title,
            body: body.to_string(),
            // One sentence, the whole text.
            sentences: std::iter::once(0..body.len()).collect(),
            kept: true,
        };
        let pieces = [
            probe(1, "First title", "The first document."),
            probe(2, "Second title", "The second document."),
        ];
        t.compose(&pieces, "What is asked?", Some("Answer briefly."))?;
        Ok(t)
    }

    /// Reads and checks a template file ([`UserTemplate::new`]); errors name the path.
    pub fn load(path: &Path) -> Result<UserTemplate> {
        let source = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        UserTemplate::new(path.display().to_string(), source)
    }

    fn error(&self, message: impl Into<String>) -> Error {
        Error::PromptTemplate {
            name: self.name.clone(),
            message: message.into(),
        }
    }

    fn jinja_error(&self, e: minijinja::Error) -> Error {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let _ = write!(msg, ": {s}");
            source = s.source();
        }
        self.error(msg)
    }

    /// An environment holding the parsed template (under its name); block tags eat their line
    /// as in chat templates, an undefined name is an error rather than an empty string, and
    /// nothing is escaped (minijinja would HTML-escape a template named `*.html`).
    fn environment(&self) -> Result<Environment<'static>> {
        let mut env = Environment::new();
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.add_template_owned(self.name.clone(), self.source.clone())
            .map_err(|e| self.jinja_error(e))?;
        Ok(env)
    }

    fn render(
        &self,
        env: &Environment,
        question: &str,
        docs: Vec<Value>,
        instruction: Option<&str>,
    ) -> Result<String> {
        let template = env
            .get_template(&self.name)
            .map_err(|e| self.jinja_error(e))?;
        template
            .render(context! { question, docs, instruction })
            .map_err(|e| self.jinja_error(e))
    }

    /// Writes the user message for the kept `pieces`, with the byte ranges of its parts (removed
    /// documents and sentences: empty ranges where they would have been).
    pub(super) fn compose(
        &self,
        pieces: &[DocPiece],
        question: &str,
        instruction: Option<&str>,
    ) -> Result<Composed> {
        let env = self.environment()?;
        let instruction = written_instruction(instruction);
        let question = question.trim();
        let docs = |real: bool| -> Vec<Value> {
            pieces
                .iter()
                .enumerate()
                .filter(|(_, p)| p.kept)
                .map(|(i, p)| {
                    let title = slot_value(real, p.title, Slot::Title(i));
                    let text = slot_value(real, &p.body, Slot::Text(i));
                    context! { title, text, index => p.number }
                })
                .collect()
        };
        let layout = self.render(&env, &marker(Slot::Question), docs(false), instruction)?;
        let expected = self.render(&env, question, docs(true), instruction)?;
        let (message, placed) = self.fill(&layout, pieces, question)?;
        if message != expected {
            return Err(self.error(
                "its output depends on the text it is given beyond writing it (a filter or a test \
                 on `question`, `doc.title` or `doc.text`?); write them as `{{ question }}`, \
                 `{{ doc.title }}` and `{{ doc.text }}` so that their positions can be located",
            ));
        }
        let composed = self.locate(message, &placed, pieces)?;
        Ok(trimmed(composed))
    }

    /// Replaces each placeholder of `layout` by its text, recording where it went.
    fn fill(
        &self,
        layout: &str,
        pieces: &[DocPiece],
        question: &str,
    ) -> Result<(String, Vec<Placed>)> {
        let mut out = String::with_capacity(layout.len());
        let mut placed = Vec::new();
        let mut rest = layout;
        while let Some(open) = rest.find(OPEN) {
            out.push_str(&rest[..open]);
            let after = &rest[open + OPEN.len_utf8()..];
            let slot = after
                .find(CLOSE)
                .and_then(|close| parse_slot(&after[..close]).map(|s| (s, close)))
                .filter(|(s, _)| slot_in(*s, pieces));
            let Some((slot, close)) = slot else {
                return Err(self.error(
                    "it contains the private-use character U+E000, which headscope reserves for \
                     locating the question and documents",
                ));
            };
            let text = match slot {
                Slot::Question => question,
                Slot::Title(i) => pieces[i].title,
                Slot::Text(i) => pieces[i].body.as_str(),
            };
            let start = out.len();
            out.push_str(text);
            placed.push(Placed {
                slot,
                range: start..out.len(),
            });
            rest = &after[close + CLOSE.len_utf8()..];
        }
        out.push_str(rest);
        Ok((out, placed))
    }

    /// The spans of the question, each document and each sentence, from the placed texts.
    fn locate(&self, message: String, placed: &[Placed], pieces: &[DocPiece]) -> Result<Composed> {
        let question = self.once(placed, Slot::Question, "the question (`{{ question }}`)")?;
        let question = question
            .ok_or_else(|| self.error("it does not write the question (`{{ question }}`)"))?;
        let mut docs: Vec<Option<Range<usize>>> = Vec::with_capacity(pieces.len());
        let mut sentences: Vec<Option<Vec<Range<usize>>>> = Vec::with_capacity(pieces.len());
        for (i, p) in pieces.iter().enumerate() {
            let what = format!("document {}'s text (`{{{{ doc.text }}}}`)", p.number);
            let text = self.once(placed, Slot::Text(i), &what)?;
            if p.kept && !p.body.is_empty() && text.is_none() {
                return Err(self.error(format!(
                    "it does not write {what} for every document of `docs`"
                )));
            }
            let title = title_before(placed, i, text.as_ref());
            let (doc, at) = match (title, text) {
                (Some(t), Some(x)) => (Some(t.start..x.end), Some(x.start)),
                (None, Some(x)) => (Some(x.clone()), Some(x.start)),
                (Some(t), None) => (Some(t.clone()), Some(t.end)),
                (None, None) => (None, None),
            };
            docs.push(doc);
            sentences
                .push(at.map(|a| p.sentences.iter().map(|r| a + r.start..a + r.end).collect()));
        }
        let fallback = fallback_positions(&docs, question.start);
        Ok(Composed {
            message,
            sentences: sentences
                .into_iter()
                .zip(pieces)
                .zip(&fallback)
                .map(|((s, p), &at)| s.unwrap_or_else(|| vec![at..at; p.sentences.len()]))
                .collect(),
            docs: docs
                .into_iter()
                .zip(&fallback)
                .map(|(d, &at)| d.unwrap_or(at..at))
                .collect(),
            question,
        })
    }

    /// The range of `slot`'s text when it was written once, `None` when never; written more than
    /// once is an error (its span would be ambiguous).
    fn once(&self, placed: &[Placed], slot: Slot, what: &str) -> Result<Option<Range<usize>>> {
        let mut found = placed.iter().filter(|p| p.slot == slot);
        let first = found.next().map(|p| p.range.clone());
        if found.next().is_some() {
            return Err(self.error(format!(
                "it writes {what} more than once, so its position is ambiguous"
            )));
        }
        Ok(first)
    }
}

/// The placeholder of a slot, or (`real`) its text; an empty text stays empty, so that
/// `{% if doc.title %}` sees what it would see with the real values.
fn slot_value(real: bool, text: &str, slot: Slot) -> String {
    if real || text.is_empty() {
        text.to_string()
    } else {
        marker(slot)
    }
}

fn marker(slot: Slot) -> String {
    match slot {
        Slot::Question => format!("{OPEN}Q{CLOSE}"),
        Slot::Title(i) => format!("{OPEN}T{i}{CLOSE}"),
        Slot::Text(i) => format!("{OPEN}X{i}{CLOSE}"),
    }
}

fn parse_slot(s: &str) -> Option<Slot> {
    let mut chars = s.chars();
    let kind = chars.next()?;
    let n = chars.as_str();
    match kind {
        'Q' if n.is_empty() => Some(Slot::Question),
        'T' => n.parse().ok().map(Slot::Title),
        'X' => n.parse().ok().map(Slot::Text),
        _ => None,
    }
}

fn slot_in(slot: Slot, pieces: &[DocPiece]) -> bool {
    match slot {
        Slot::Question => true,
        Slot::Title(i) | Slot::Text(i) => i < pieces.len(),
    }
}

/// The range of document `i`'s title when it starts the document: its last placement before the
/// text with nothing else placed in between (any placement when the text was not written).
fn title_before(placed: &[Placed], i: usize, text: Option<&Range<usize>>) -> Option<Range<usize>> {
    let Some(text) = text else {
        return placed
            .iter()
            .rev()
            .find(|p| p.slot == Slot::Title(i))
            .map(|p| p.range.clone());
    };
    let before = placed.iter().rev().find(|p| p.range.end <= text.start)?;
    (before.slot == Slot::Title(i)).then(|| before.range.clone())
}

/// For each document, where its empty span goes when it was not written: the end of the previous
/// written document, else the start of the next one, else the question's start.
fn fallback_positions(docs: &[Option<Range<usize>>], question_start: usize) -> Vec<usize> {
    let mut previous = None;
    let mut out = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        let next = || docs[i..].iter().flatten().next().map(|r| r.start);
        out.push(match d {
            Some(r) => r.start,
            None => previous.or_else(next).unwrap_or(question_start),
        });
        if let Some(r) = d {
            previous = Some(r.end);
        }
    }
    out
}

/// The message without leading and trailing whitespace (chat templates may trim it, and it must
/// appear verbatim in the rendered prompt), ranges shifted to match.
fn trimmed(c: Composed) -> Composed {
    let lead = c.message.len() - c.message.trim_start().len();
    let message = c.message.trim().to_string();
    let len = message.len();
    let shift = |r: &Range<usize>| {
        let s = r.start.saturating_sub(lead).min(len);
        s..r.end.saturating_sub(lead).clamp(s, len)
    };
    Composed {
        docs: c.docs.iter().map(shift).collect(),
        sentences: c
            .sentences
            .iter()
            .map(|d| d.iter().map(shift).collect())
            .collect(),
        question: shift(&c.question),
        message,
    }
}
