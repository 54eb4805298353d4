//! RAG prompt assembly: samples in the MIRAGE format, prompt text, token spans.
//!
//! A [`Sample`] (question + documents) becomes a [`RagPrompt`]: the user message written in one of
//! two [`PromptStyle`]s, rendered with the model's chat template as one user turn followed by the
//! generation prompt, tokenised once, and annotated with the byte and token ranges of every
//! document, every sentence of every document, and the question.
//!
//! Spans are computed from the positions where the builder *wrote* each piece of text (never by
//! searching token strings), and mapped to tokens with one rule, documented on [`RagPrompt`].
//!
//! Leave-out prompts (for attribution: ContextCite, ARC-JSD, MIRAGE's contextless input) are built
//! by [`build_with_sources`]: the same sample with some documents or sentences removed. Their span
//! vectors keep the shape of the full prompt (one entry per original document / sentence); removed
//! sources get empty ranges, so indices line up across variants.

use std::fmt;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokenizers::Tokenizer;

use crate::engine::chat::{ChatMessage, ChatTemplate};
use crate::engine::tokenizer::encode_with_offsets;
use crate::{Error, Result};

// ---------------------------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------------------------

/// One retrieved document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Document {
    #[serde(default)]
    pub title: String,
    pub text: String,
    /// Every other field of the document, kept as it was.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Document {
    pub fn new(title: impl Into<String>, text: impl Into<String>) -> Self {
        Document {
            title: title.into(),
            text: text.into(),
            extra: Map::new(),
        }
    }
}

/// One sample in the MIRAGE format: `{"question", "docs": [{"title", "text"}], "output"?}`.
/// Every other field (`id`, `gold`, `answers`, `needle`, ...) is kept in `extra` and written back
/// when the sample is serialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub question: String,
    pub docs: Vec<Document>,
    /// A fixed answer to analyse (teacher-forced) instead of generating one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Sample {
    pub fn new(question: impl Into<String>, docs: Vec<Document>) -> Self {
        Sample {
            question: question.into(),
            docs,
            output: None,
            extra: Map::new(),
        }
    }

    /// The `gold` field: the 0-based index of the document that holds the answer, when it is a
    /// non-negative integer (other values give `None`; [`load_samples`] rejects them).
    pub fn gold(&self) -> Option<usize> {
        self.extra
            .get("gold")
            .and_then(Value::as_u64)
            .map(|g| g as usize)
    }

    /// Acceptable short answers: the `answers` field (a list, or one string), else `answer`.
    /// Numbers are written as text; other values are skipped.
    pub fn answers(&self) -> Vec<String> {
        let field = self
            .extra
            .get("answers")
            .or_else(|| self.extra.get("answer"));
        let as_text = |v: &Value| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        };
        match field {
            Some(Value::Array(items)) => items.iter().filter_map(as_text).collect(),
            Some(v) => as_text(v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// The `id` field, as text (a string, or a number written out).
    pub fn id(&self) -> Option<String> {
        match self.extra.get("id")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The sentences of each document's text, as byte ranges into the **trimmed** text
    /// (`doc.text.trim()`), which is what the prompt shows. See [`split_sentences`].
    pub fn sentences(&self) -> Vec<Vec<Range<usize>>> {
        self.docs
            .iter()
            .map(|d| split_sentences(d.text.trim()))
            .collect()
    }

    /// The number of sources at a granularity (documents, or sentences over all documents).
    pub fn source_count(&self, granularity: Granularity) -> usize {
        match granularity {
            Granularity::Document => self.docs.len(),
            Granularity::Sentence => self.sentences().iter().map(Vec::len).sum(),
        }
    }
}

/// Read samples from a file: a JSON list of samples, one sample object, or JSONL (one object per
/// non-empty line). A UTF-8 byte-order mark is ignored.
///
/// Every problem is an [`Error::Sample`] naming the file and what is wrong: a missing path or a
/// directory, bytes that are not UTF-8 (with their byte offset), malformed JSON (line and column;
/// for JSONL, the line of the bad record), an empty file or list, a sample without a non-empty
/// `question` or without documents, a document without a string `text`, a `gold` that is not a
/// document index (with the sample index, and its line for JSONL).
pub fn load_samples(path: &Path) -> Result<Vec<Sample>> {
    let fail = |m: String| Error::sample(path, m);
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail("no such file".into()),
        _ => fail(format!("cannot read: {e}")),
    })?;
    if meta.is_dir() {
        return Err(fail(
            "is a directory, not a sample file (give a .json or .jsonl file)".into(),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let text = match std::str::from_utf8(&bytes) {
        Ok(t) => t,
        Err(e) => {
            let at = e.valid_up_to();
            let (line, col) = line_col(&bytes[..at]);
            return Err(fail(format!(
                "not valid UTF-8: byte 0x{:02X} at byte offset {at} (line {line}, column {col}); \
                 save the file as UTF-8",
                bytes[at]
            )));
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.trim().is_empty() {
        return Err(fail("the file is empty: no samples".into()));
    }
    let records = parse_records(text).map_err(fail)?;
    if records.is_empty() {
        return Err(fail("no samples: the list is empty".into()));
    }
    records
        .into_iter()
        .enumerate()
        .map(|(i, (value, line))| {
            let what = match line {
                Some(l) => format!("sample {i} (line {l})"),
                None => format!("sample {i}"),
            };
            sample_from_value(value).map_err(|m| fail(format!("{what}: {m}")))
        })
        .collect()
}

/// 1-based line and column (in characters) of the position just after `prefix`.
fn line_col(prefix: &[u8]) -> (usize, usize) {
    let line = 1 + prefix.iter().filter(|&&b| b == b'\n').count();
    let line_start = prefix
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    // `prefix` is valid UTF-8 up to here (it is what came before the first bad byte).
    let col = 1 + String::from_utf8_lossy(&prefix[line_start..])
        .chars()
        .count();
    (line, col)
}

/// serde_json's message without its trailing " at line L column C".
fn json_message(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.rfind(" at line ") {
        Some(p) => s[..p].to_string(),
        None => s,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

/// The file's samples as JSON values, each with its line when the file is JSONL.
#[allow(clippy::type_complexity)]
fn parse_records(text: &str) -> std::result::Result<Vec<(Value, Option<usize>)>, String> {
    let whole_err = match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(items)) => return Ok(items.into_iter().map(|v| (v, None)).collect()),
        Ok(v @ Value::Object(_)) => return Ok(vec![(v, None)]),
        Ok(other) => {
            return Err(format!(
                "expected a JSON list of samples, one sample object, or JSONL (one object per \
                 line); found {}",
                kind_of(&other)
            ))
        }
        Err(e) => e,
    };
    // Not one JSON value. JSONL if the first non-empty line is a JSON object on its own.
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let first_is_object = lines
        .next()
        .is_some_and(|(_, l)| matches!(serde_json::from_str::<Value>(l), Ok(Value::Object(_))));
    if !first_is_object {
        return Err(format!(
            "invalid JSON at line {}, column {}: {} (expected a JSON list of samples, one sample \
             object, or JSONL with one object per line)",
            whole_err.line(),
            whole_err.column(),
            json_message(&whole_err)
        ));
    }
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let lineno = i + 1;
        match serde_json::from_str::<Value>(line) {
            Ok(v @ Value::Object(_)) => out.push((v, Some(lineno))),
            Ok(other) => {
                return Err(format!(
                    "JSONL line {lineno}: expected one sample object per line, found {}",
                    kind_of(&other)
                ))
            }
            Err(e) => {
                return Err(format!(
                    "invalid JSON on JSONL line {lineno}, column {}: {}",
                    e.column(),
                    json_message(&e)
                ))
            }
        }
    }
    Ok(out)
}

/// Check one sample's shape and build it. The message says what is wrong (the caller adds where).
fn sample_from_value(value: Value) -> std::result::Result<Sample, String> {
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "expected an object with `question` and `docs`, found {}",
            kind_of(&value)
        ));
    };
    let question = match obj.remove("question") {
        None => return Err("missing `question`".into()),
        Some(Value::String(q)) if q.trim().is_empty() => return Err("`question` is empty".into()),
        Some(Value::String(q)) => q,
        Some(v) => return Err(format!("`question` must be a string, not {}", kind_of(&v))),
    };
    let docs = match obj.remove("docs") {
        None => return Err("missing `docs` (a list of {\"title\", \"text\"} documents)".into()),
        Some(Value::Array(d)) if d.is_empty() => {
            return Err("`docs` is empty: a sample needs at least one document".into())
        }
        Some(Value::Array(d)) => d,
        Some(v) => {
            return Err(format!(
                "`docs` must be a list of documents, not {}",
                kind_of(&v)
            ))
        }
    };
    let n_docs = docs.len();
    let docs = docs
        .into_iter()
        .enumerate()
        .map(|(j, d)| document_from_value(d).map_err(|m| format!("docs[{j}]: {m}")))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    let output = match obj.remove("output") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(v) => return Err(format!("`output` must be a string, not {}", kind_of(&v))),
    };
    match obj.get("gold") {
        None | Some(Value::Null) => {}
        Some(Value::Number(n)) => match n.as_u64() {
            Some(g) if (g as usize) < n_docs => {}
            Some(g) => {
                return Err(format!(
                    "`gold` is {g} but there are only {n_docs} documents (it is a 0-based index)"
                ))
            }
            None => {
                return Err(format!(
                    "`gold` must be a 0-based document index (a non-negative integer), not {n}"
                ))
            }
        },
        Some(v) => {
            return Err(format!(
                "`gold` must be a 0-based document index (an integer), not {}",
                kind_of(v)
            ))
        }
    }
    Ok(Sample {
        question,
        docs,
        output,
        extra: obj,
    })
}

fn document_from_value(value: Value) -> std::result::Result<Document, String> {
    let Value::Object(mut obj) = value else {
        return Err(format!(
            "expected an object with `title` and `text`, found {}",
            kind_of(&value)
        ));
    };
    let text = match obj.remove("text") {
        None => return Err("missing `text`".into()),
        Some(Value::String(t)) => t,
        Some(v) => return Err(format!("`text` must be a string, not {}", kind_of(&v))),
    };
    let title = match obj.remove("title") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(t)) => t,
        Some(v) => return Err(format!("`title` must be a string, not {}", kind_of(&v))),
    };
    Ok(Document {
        title,
        text,
        extra: obj,
    })
}

// ---------------------------------------------------------------------------------------------
// Prompt styles and granularity
// ---------------------------------------------------------------------------------------------

/// How the documents and the question are written into the user message.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PromptStyle {
    /// MIRAGE's document prompt: one line per document, `Document [i](Title: T): text` (i 1-based),
    /// lines joined by `"\n"`, then `"\n\n"`, then the question.
    #[default]
    Mirage,
    /// ContextCite / ARC-JSD: `Context: {context}\n\nQuery: {question}`, where the context is the
    /// documents joined by `"\n\n"`, each written `{title}\n{text}` (just `{text}` when the title
    /// is empty).
    ContextQuery,
}

impl PromptStyle {
    pub const ALL: [PromptStyle; 2] = [PromptStyle::Mirage, PromptStyle::ContextQuery];

    pub fn name(self) -> &'static str {
        match self {
            PromptStyle::Mirage => "mirage",
            PromptStyle::ContextQuery => "context-query",
        }
    }
}

impl fmt::Display for PromptStyle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PromptStyle {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('_', "-").as_str() {
            "mirage" => Ok(PromptStyle::Mirage),
            "context-query" | "contextquery" | "context" => Ok(PromptStyle::ContextQuery),
            _ => Err(format!(
                "unknown prompt style `{s}` (expected `mirage` or `context-query`)"
            )),
        }
    }
}

/// What counts as one source for attribution and leave-out prompts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Granularity {
    #[default]
    Document,
    Sentence,
}

impl Granularity {
    pub fn name(self) -> &'static str {
        match self {
            Granularity::Document => "document",
            Granularity::Sentence => "sentence",
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Granularity {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "document" | "documents" | "doc" | "docs" => Ok(Granularity::Document),
            "sentence" | "sentences" | "sent" => Ok(Granularity::Sentence),
            _ => Err(format!(
                "unknown granularity `{s}` (expected `document` or `sentence`)"
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sentence splitting
// ---------------------------------------------------------------------------------------------

/// Words that end in a period without ending a sentence (compared lower-cased, without the period).
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "messrs", "dr", "prof", "sr", "jr", "st", "mt", "ft", "vs", "etc", "cf",
    "ca", "approx", "al", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct",
    "nov", "dec", "inc", "ltd", "co", "corp", "bros", "gen", "col", "lt", "sgt", "capt", "cmdr",
    "adm", "gov", "sen", "rep", "pres", "rev", "hon", "dept", "univ", "assn", "ave", "blvd", "rd",
    "eds", "esp", "viz",
];

/// Abbreviations that precede a number ("No. 5", "p. 12"); only abbreviations when a digit
/// follows, since some are also words ("no").
const NUMBER_ABBREVIATIONS: &[&str] = &[
    "no", "nos", "p", "pp", "fig", "figs", "vol", "vols", "ch", "op", "art", "sec", "para", "nr",
];

fn is_terminator(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '…' | '‽')
}

fn is_closer(c: char) -> bool {
    matches!(c, '"' | '\'' | '”' | '’' | ')' | ']' | '}' | '»' | '›')
}

fn is_opener(c: char) -> bool {
    matches!(
        c,
        '"' | '\'' | '“' | '‘' | '(' | '[' | '{' | '«' | '‹' | '¿' | '¡'
    )
}

/// A character that may begin a new sentence: an upper-case (or uncased) letter, a digit, or an
/// opening quote or bracket.
fn starts_sentence(c: char) -> bool {
    (c.is_alphabetic() && !c.is_lowercase()) || c.is_numeric() || is_opener(c)
}

/// Line breaks as in Python's `str.splitlines` (`\r\n` counts as one).
fn is_line_break(c: char) -> bool {
    matches!(
        c,
        '\n' | '\r'
            | '\u{0b}'
            | '\u{0c}'
            | '\u{1c}'
            | '\u{1d}'
            | '\u{1e}'
            | '\u{85}'
            | '\u{2028}'
            | '\u{2029}'
    )
}

/// Is the period at byte `dot` of `line` the end of an abbreviation, given what follows (`next`,
/// the first character after the whitespace)?
fn is_abbreviation(line: &str, dot: usize, next: char) -> bool {
    let before = &line[..dot];
    let word_start = before
        .char_indices()
        .rev()
        .find(|&(_, c)| c.is_whitespace())
        .map_or(0, |(p, c)| p + c.len_utf8());
    let word = before[word_start..].trim_start_matches(is_opener);
    if word.is_empty() {
        return false;
    }
    let lower = word.to_lowercase();
    if ABBREVIATIONS.contains(&lower.as_str()) {
        return true;
    }
    if NUMBER_ABBREVIATIONS.contains(&lower.as_str()) && next.is_ascii_digit() {
        return true;
    }
    let mut chars = word.chars();
    // A single letter: an initial ("J. R. R. Tolkien").
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return c.is_alphabetic();
    }
    // Dotted letters: "U.S", "e.g", "i.e", "a.m", "Ph.D".
    word.contains('.')
        && word.split('.').all(|seg| {
            !seg.is_empty() && seg.chars().count() <= 3 && seg.chars().all(char::is_alphabetic)
        })
}

/// Split text into sentences; returns byte ranges into `text`, trimmed (no leading or trailing
/// whitespace), in order, never empty.
///
/// A rule-based stand-in for NLTK's punkt as used by ContextCite / ARC-JSD (METHODS §0.7): the
/// text is first cut into lines (every line break ends a sentence; blank lines yield nothing),
/// then each line is cut after `.`, `!`, `?` or `…` (a run of them, plus any closing quotes or
/// brackets) when whitespace follows and the next word starts with an upper-case or uncased
/// letter, a digit or an opening quote/bracket. A period does not end a sentence after a common
/// abbreviation (Mr. Dr. St. etc. Jan. Inc. ...), after "No."/"p."/"Fig."... before a number,
/// after a single-letter initial ("J."), or after dotted letters ("U.S.", "e.g.", "Ph.D.").
/// Decimals ("3.14") never split since no whitespace follows their point.
pub fn split_sentences(text: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut line_start = 0;
    let mut iter = text.char_indices().peekable();
    while let Some((i, c)) = iter.next() {
        if is_line_break(c) {
            split_line(text, line_start..i, &mut out);
            let mut next = i + c.len_utf8();
            if c == '\r' {
                if let Some(&(j, '\n')) = iter.peek() {
                    iter.next();
                    next = j + 1;
                }
            }
            line_start = next;
        }
    }
    split_line(text, line_start..text.len(), &mut out);
    out
}

fn push_trimmed(text: &str, r: Range<usize>, out: &mut Vec<Range<usize>>) {
    let s = &text[r.clone()];
    let lead = s.len() - s.trim_start().len();
    let trail = s.len() - s.trim_end().len();
    if lead + trail < s.len() {
        out.push(r.start + lead..r.end - trail);
    }
}

fn split_line(text: &str, range: Range<usize>, out: &mut Vec<Range<usize>>) {
    let base = range.start;
    let line = &text[range];
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let n = chars.len();
    let mut seg_start = 0;
    let mut i = 0;
    while i < n {
        let (pos, c) = chars[i];
        if !is_terminator(c) {
            i += 1;
            continue;
        }
        // The run of terminators and closing quotes/brackets.
        let mut j = i + 1;
        while j < n && (is_terminator(chars[j].1) || is_closer(chars[j].1)) {
            j += 1;
        }
        let mut k = j;
        while k < n && chars[k].1.is_whitespace() {
            k += 1;
        }
        if k > j && k < n && starts_sentence(chars[k].1) {
            let lone_period = c == '.' && !chars[i + 1..j].iter().any(|&(_, d)| is_terminator(d));
            if !(lone_period && is_abbreviation(line, pos, chars[k].1)) {
                push_trimmed(text, base + seg_start..base + chars[j].0, out);
                seg_start = chars[k].0;
                i = k;
                continue;
            }
        }
        i = j;
    }
    push_trimmed(text, base + seg_start..base + line.len(), out);
}

/// The text of a document with only the kept sentences, following ContextCite's reconstruction
/// (METHODS §0.7): kept sentences in order, each preceded by the original text between it and the
/// sentence before it (the first kept one by nothing). Returns the text and each sentence's byte
/// range in it (removed sentences: an empty range where they would have been).
fn compose_sentences(
    text: &str,
    sentences: &[Range<usize>],
    keep: &[bool],
) -> (String, Vec<Range<usize>>) {
    let mut out = String::new();
    let mut spans = Vec::with_capacity(sentences.len());
    let mut any = false;
    for (k, s) in sentences.iter().enumerate() {
        if !keep[k] {
            spans.push(out.len()..out.len());
            continue;
        }
        if any {
            let prev_end = sentences[k - 1].end;
            out.push_str(&text[prev_end..s.start]);
        }
        any = true;
        let start = out.len();
        out.push_str(&text[s.clone()]);
        spans.push(start..out.len());
    }
    (out, spans)
}

// ---------------------------------------------------------------------------------------------
// The prompt
// ---------------------------------------------------------------------------------------------

/// A piece of the prompt: a byte range in [`RagPrompt::text`] and the token range that covers it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span {
    /// Byte range in the prompt text.
    pub chars: Range<usize>,
    /// Token index range in the prompt ids.
    pub tokens: Range<usize>,
}

impl Span {
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A RAG prompt, rendered and tokenised, with the spans of its parts.
///
/// **Token rule.** Each token has an *anchor*: the byte offset of its first non-whitespace byte in
/// the prompt text, or its first byte when the token is all whitespace (or empty). A token belongs
/// to the span that contains its anchor; a span `[start, end)` of bytes covers the tokens
/// `[first token with anchor >= start, first token with anchor >= end)`. So
/// * a token that merges a document's last character with the separator after it (Qwen's `".\n"`
///   or `".\n\n"`) belongs to the document;
/// * a token that carries the space before a word (`" The"`) belongs to the span of that word,
///   so a sentence's first word belongs to the sentence, not to the gap before it;
/// * whitespace-only tokens between spans (`"\n"`, `"\n\n"`) belong to no span;
/// * spans never share a token, and an empty byte range gives an empty token range at the
///   position where the text would have been.
///
/// Spans of documents and sentences are indexed like the sample's documents and sentences, also in
/// leave-out prompts (removed sources have empty spans).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RagPrompt {
    pub style: PromptStyle,
    /// The rendered chat prompt (the model's input text), ending with the generation prompt.
    pub text: String,
    /// Its token ids (encoded once, without adding special tokens).
    pub ids: Vec<u32>,
    /// Per token, its byte range in `text` (see `engine::tokenizer::encode_with_offsets`).
    pub token_offsets: Vec<(usize, usize)>,
    /// One span per document of the sample. In Mirage style a document's span covers its whole
    /// line, `Document [i](Title: T): text`; in context-query style `T\ntext` (or `text`).
    pub docs: Vec<Span>,
    /// Per document, one span per sentence of its text (see [`split_sentences`]).
    pub sentences: Vec<Vec<Span>>,
    /// The question's text (without the `Query: ` label).
    pub question: Span,
    /// The user message as written, before the chat template.
    pub user_message: String,
    /// Byte offset of the user message inside `text`.
    pub user_message_start: usize,
}

/// What the user message contains, with byte ranges relative to the message.
struct Composed {
    message: String,
    docs: Vec<Range<usize>>,
    sentences: Vec<Vec<Range<usize>>>,
    question: Range<usize>,
}

/// Write the user message for `sample` with the kept documents and sentences.
/// Document texts, titles and the question are trimmed (chat templates such as Llama 3's and
/// Gemma's trim the message, and the message must appear verbatim in the rendered prompt).
fn compose(
    sample: &Sample,
    style: PromptStyle,
    keep_docs: &[bool],
    keep_sents: &[Vec<bool>],
) -> Composed {
    let mut msg = String::new();
    let mut docs = Vec::with_capacity(sample.docs.len());
    let mut sentences = Vec::with_capacity(sample.docs.len());
    let mut wrote_doc = false;
    if style == PromptStyle::ContextQuery {
        msg.push_str("Context: ");
    }
    for (i, doc) in sample.docs.iter().enumerate() {
        let text = doc.text.trim();
        let title = doc.title.trim();
        let sents = split_sentences(text);
        if !keep_docs[i] {
            let at = msg.len();
            docs.push(at..at);
            sentences.push(vec![at..at; sents.len()]);
            continue;
        }
        let (body, rel) = compose_sentences(text, &sents, &keep_sents[i]);
        // The document's own text: header/title, then the body at offset `body_at`.
        let mut piece = String::new();
        match style {
            PromptStyle::Mirage => {
                let _ = write!(piece, "Document [{}](Title: {title}): ", i + 1);
            }
            PromptStyle::ContextQuery => {
                if !title.is_empty() {
                    piece.push_str(title);
                    if !body.is_empty() {
                        piece.push('\n');
                    }
                }
            }
        }
        let body_at = piece.len();
        piece.push_str(&body);
        if piece.is_empty() {
            // Context-query document with no title and no kept sentence: nothing to write.
            let at = msg.len();
            docs.push(at..at);
            sentences.push(vec![at..at; sents.len()]);
            continue;
        }
        if wrote_doc {
            msg.push_str(match style {
                PromptStyle::Mirage => "\n",
                PromptStyle::ContextQuery => "\n\n",
            });
        }
        wrote_doc = true;
        let start = msg.len();
        msg.push_str(&piece);
        docs.push(start..msg.len());
        sentences.push(
            rel.into_iter()
                .map(|r| start + body_at + r.start..start + body_at + r.end)
                .collect(),
        );
    }
    match style {
        PromptStyle::Mirage => {
            if wrote_doc {
                msg.push_str("\n\n");
            }
        }
        PromptStyle::ContextQuery => msg.push_str("\n\nQuery: "),
    }
    let q = msg.len();
    msg.push_str(sample.question.trim());
    let question = q..msg.len();
    Composed {
        message: msg,
        docs,
        sentences,
        question,
    }
}

/// Per token, the anchor byte of the token rule (see [`RagPrompt`]); non-decreasing.
fn token_anchors(text: &str, offsets: &[(usize, usize)]) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut prev = 0;
    offsets
        .iter()
        .map(|&(s, e)| {
            let (s, e) = (s.min(bytes.len()), e.min(bytes.len()));
            let slice = text.get(s..e.max(s)).unwrap_or("");
            let anchor = match slice.find(|c: char| !c.is_whitespace()) {
                Some(p) => s + p,
                None => s,
            };
            prev = anchor.max(prev);
            prev
        })
        .collect()
}

fn to_span(anchors: &[usize], chars: Range<usize>) -> Span {
    let start = anchors.partition_point(|&a| a < chars.start);
    let end = anchors.partition_point(|&a| a < chars.end).max(start);
    Span {
        chars,
        tokens: start..end,
    }
}

/// Build the prompt for a sample with every document and sentence.
pub fn build(
    sample: &Sample,
    style: PromptStyle,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
) -> Result<RagPrompt> {
    let keep_docs = vec![true; sample.docs.len()];
    let keep_sents: Vec<Vec<bool>> = sample
        .sentences()
        .iter()
        .map(|s| vec![true; s.len()])
        .collect();
    assemble(sample, style, template, tokenizer, &keep_docs, &keep_sents)
}

/// Build a leave-out prompt: the sample with only the sources where `keep` is true.
///
/// * `Granularity::Document`: `keep` has one entry per document. Removed documents are dropped
///   from the message. The remaining documents **keep their original 1-based numbers** in Mirage
///   style (`Document [1]`, `Document [3]`, ...), so the model sees the same labels as in the full
///   prompt and a citation "[3]" means the same document in every variant.
/// * `Granularity::Sentence`: `keep` has one entry per sentence, over all documents in order
///   (document 0's sentences first). Removed sentences are cut from their document's text; kept
///   ones are joined with the original separators between them (ContextCite's reconstruction,
///   METHODS §0.7). Document headers and titles stay, even when all their sentences are removed
///   (in context-query style a document with no title and no sentence left disappears).
///
/// With all documents removed the Mirage message is the question alone; the context-query message
/// is `Context: \n\nQuery: {question}` (ContextCite's empty context).
///
/// Removed sources have empty spans at the position where they would have been.
pub fn build_with_sources(
    sample: &Sample,
    style: PromptStyle,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    keep: &[bool],
    granularity: Granularity,
) -> Result<RagPrompt> {
    let sents = sample.sentences();
    let n = match granularity {
        Granularity::Document => sample.docs.len(),
        Granularity::Sentence => sents.iter().map(Vec::len).sum(),
    };
    if keep.len() != n {
        return Err(Error::Hook(format!(
            "leave-out mask has {} entries but the sample has {n} {}s",
            keep.len(),
            granularity
        )));
    }
    let (keep_docs, keep_sents) = match granularity {
        Granularity::Document => (
            keep.to_vec(),
            sents
                .iter()
                .map(|s| vec![true; s.len()])
                .collect::<Vec<_>>(),
        ),
        Granularity::Sentence => {
            let mut rest = keep;
            let per_doc = sents
                .iter()
                .map(|s| {
                    let (mine, tail) = rest.split_at(s.len());
                    rest = tail;
                    mine.to_vec()
                })
                .collect();
            (vec![true; sample.docs.len()], per_doc)
        }
    };
    assemble(sample, style, template, tokenizer, &keep_docs, &keep_sents)
}

fn assemble(
    sample: &Sample,
    style: PromptStyle,
    template: &ChatTemplate,
    tokenizer: &Tokenizer,
    keep_docs: &[bool],
    keep_sents: &[Vec<bool>],
) -> Result<RagPrompt> {
    let c = compose(sample, style, keep_docs, keep_sents);
    let text = template.render(&[ChatMessage::user(c.message.clone())], true)?;
    let Some(at) = text.find(&c.message) else {
        return Err(Error::Template(format!(
            "the chat template changed the user message (it does not appear verbatim in the \
             rendered prompt), so document and question positions cannot be located; rendered \
             prompt starts: {:?}",
            text.chars().take(200).collect::<String>()
        )));
    };
    let (ids, offsets) = encode_with_offsets(tokenizer, &text)?;
    let anchors = token_anchors(&text, &offsets);
    let shift = |r: &Range<usize>| at + r.start..at + r.end;
    let docs = c.docs.iter().map(|r| to_span(&anchors, shift(r))).collect();
    let sentences = c
        .sentences
        .iter()
        .map(|doc| doc.iter().map(|r| to_span(&anchors, shift(r))).collect())
        .collect();
    let question = to_span(&anchors, shift(&c.question));
    Ok(RagPrompt {
        style,
        text,
        ids,
        token_offsets: offsets,
        docs,
        sentences,
        question,
        user_message: c.message,
        user_message_start: at,
    })
}

impl RagPrompt {
    /// See [`build`].
    pub fn build(
        sample: &Sample,
        style: PromptStyle,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
    ) -> Result<RagPrompt> {
        build(sample, style, template, tokenizer)
    }

    /// See [`build_with_sources`].
    pub fn build_with_sources(
        sample: &Sample,
        style: PromptStyle,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        keep: &[bool],
        granularity: Granularity,
    ) -> Result<RagPrompt> {
        build_with_sources(sample, style, template, tokenizer, keep, granularity)
    }

    /// The same sample in this prompt's style with only the sources where `keep` is true
    /// ([`build_with_sources`]). `sample` must be the one this prompt was built from.
    pub fn without_sources(
        &self,
        sample: &Sample,
        template: &ChatTemplate,
        tokenizer: &Tokenizer,
        keep: &[bool],
        granularity: Granularity,
    ) -> Result<RagPrompt> {
        build_with_sources(sample, self.style, template, tokenizer, keep, granularity)
    }

    /// Number of prompt tokens.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Positions of the answer's tokens in the concatenated ids `prompt ++ answer`:
    /// `prompt_len .. prompt_len + answer_len`.
    pub fn answer_span(&self, answer_len: usize) -> Range<usize> {
        self.ids.len()..self.ids.len() + answer_len
    }

    /// The sources at a granularity: the documents, or all sentences flattened in order
    /// (document 0's sentences first), matching the `keep` masks of [`build_with_sources`].
    pub fn sources(&self, granularity: Granularity) -> Vec<Span> {
        match granularity {
            Granularity::Document => self.docs.clone(),
            Granularity::Sentence => self.sentences.iter().flatten().cloned().collect(),
        }
    }

    /// Short labels for the sources, in the order of [`RagPrompt::sources`]: `D1`, `D2`, ... or
    /// `D1.S1`, `D1.S2`, ... (1-based, as the prompt numbers documents).
    pub fn source_labels(&self, granularity: Granularity) -> Vec<String> {
        match granularity {
            Granularity::Document => (1..=self.docs.len()).map(|i| format!("D{i}")).collect(),
            Granularity::Sentence => self
                .sentences
                .iter()
                .enumerate()
                .flat_map(|(d, s)| (1..=s.len()).map(move |k| format!("D{}.S{k}", d + 1)))
                .collect(),
        }
    }

    /// The span of a byte range of the prompt text, by the token rule above.
    pub fn span_of(&self, chars: Range<usize>) -> Span {
        to_span(&token_anchors(&self.text, &self.token_offsets), chars)
    }

    /// The prompt text of a span.
    pub fn span_text(&self, span: &Span) -> &str {
        self.text.get(span.chars.clone()).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sents(text: &str) -> Vec<&str> {
        split_sentences(text)
            .into_iter()
            .map(|r| &text[r])
            .collect()
    }

    #[test]
    fn splits_plain_sentences() {
        assert_eq!(
            sents("The cat sat. The dog ran! Did it? Yes."),
            ["The cat sat.", "The dog ran!", "Did it?", "Yes."]
        );
        assert!(sents("").is_empty());
        assert!(sents("   \n\n  ").is_empty());
        assert_eq!(sents("  No terminator here  "), ["No terminator here"]);
    }

    #[test]
    fn abbreviations_and_initials_do_not_split() {
        assert_eq!(
            sents("Dr. Smith met Mr. and Mrs. Jones on Main St. Tuesday. They talked."),
            [
                "Dr. Smith met Mr. and Mrs. Jones on Main St. Tuesday.",
                "They talked."
            ]
        );
        assert_eq!(
            sents("J. R. R. Tolkien wrote it. Fans loved it."),
            ["J. R. R. Tolkien wrote it.", "Fans loved it."]
        );
        assert_eq!(
            sents("The U.S. Army was founded in 1775. It is the oldest branch."),
            [
                "The U.S. Army was founded in 1775.",
                "It is the oldest branch."
            ]
        );
        assert_eq!(
            sents("Some fruits, e.g. Apples, are red. Others, i.e. Limes, are not."),
            [
                "Some fruits, e.g. Apples, are red.",
                "Others, i.e. Limes, are not."
            ]
        );
        assert_eq!(
            sents("It opened on Jan. 5, 1901. Trade grew, etc. Then it closed."),
            [
                "It opened on Jan. 5, 1901.",
                "Trade grew, etc. Then it closed."
            ]
        );
        assert_eq!(
            sents("Smith vs. Jones was decided. Appeals followed."),
            ["Smith vs. Jones was decided.", "Appeals followed."]
        );
    }

    #[test]
    fn number_abbreviations_only_before_numbers() {
        assert_eq!(
            sents("See No. 5 for details. Then go."),
            ["See No. 5 for details.", "Then go."]
        );
        assert_eq!(
            sents("He said no. Then he left."),
            ["He said no.", "Then he left."]
        );
        assert_eq!(
            sents("It is on p. 12 of the book. Read it."),
            ["It is on p. 12 of the book.", "Read it."]
        );
    }

    #[test]
    fn decimals_numbers_and_lowercase() {
        assert_eq!(
            sents("Pi is about 3.14. That is all."),
            ["Pi is about 3.14.", "That is all."]
        );
        assert_eq!(
            sents("Version 2.0 shipped. 300 people came."),
            ["Version 2.0 shipped.", "300 people came."]
        );
        assert_eq!(
            sents("It ended. then it resumed."),
            ["It ended. then it resumed."]
        );
        assert_eq!(sents("It costs $5.99 today."), ["It costs $5.99 today."]);
    }

    #[test]
    fn quotes_brackets_and_ellipses() {
        assert_eq!(
            sents("She asked, \"Is it true?\" He nodded. \"Yes,\" she said."),
            [
                "She asked, \"Is it true?\"",
                "He nodded.",
                "\"Yes,\" she said."
            ]
        );
        assert_eq!(
            sents("(See below.) The next part."),
            ["(See below.)", "The next part."]
        );
        assert_eq!(
            sents("Wait... What happened?! Nothing."),
            ["Wait...", "What happened?!", "Nothing."]
        );
        assert_eq!(
            sents("He wrote “Done.” Then he slept."),
            ["He wrote “Done.”", "Then he slept."]
        );
    }

    #[test]
    fn newlines_always_split_and_ranges_are_trimmed() {
        let text = "  Line one\nLine two. Three.\r\n\r\n  Last line  \n";
        let r = split_sentences(text);
        let got: Vec<&str> = r.iter().map(|x| &text[x.clone()]).collect();
        assert_eq!(got, ["Line one", "Line two.", "Three.", "Last line"]);
        for x in &r {
            let s = &text[x.clone()];
            assert_eq!(s, s.trim());
        }
        assert_eq!(sents("a\u{2028}b"), ["a", "b"]);
    }

    #[test]
    fn unicode_byte_ranges() {
        let text = "Café au lait is sweet. Übermensch is a word. Ελλάδα είναι χώρα. Ναι.";
        assert_eq!(
            sents(text),
            [
                "Café au lait is sweet.",
                "Übermensch is a word.",
                "Ελλάδα είναι χώρα.",
                "Ναι."
            ]
        );
    }

    #[test]
    fn reconstruction_with_all_kept_is_identity() {
        let text = "One. Two!  Three?\nFour.\n\nFive";
        let s = split_sentences(text);
        let (all, spans) = compose_sentences(text, &s, &vec![true; s.len()]);
        assert_eq!(all, text);
        assert_eq!(spans, s);
        let (some, spans) = compose_sentences(text, &s, &[false, true, false, true, true]);
        assert_eq!(some, "Two!\nFour.\n\nFive");
        assert_eq!(spans[0], 0..0);
        assert_eq!(&some[spans[1].clone()], "Two!");
        assert_eq!(spans[2], 4..4);
        assert_eq!(&some[spans[4].clone()], "Five");
    }

    #[test]
    fn anchors_skip_leading_whitespace() {
        let text = "a. The\n\nb";
        // Tokens "a", ".", " The", "\n\n", "b".
        let offsets = [(0, 1), (1, 2), (2, 6), (6, 8), (8, 9)];
        let anchors = token_anchors(text, &offsets);
        assert_eq!(anchors, [0, 1, 3, 6, 8]);
        assert_eq!(to_span(&anchors, 3..6).tokens, 2..3);
        assert_eq!(to_span(&anchors, 0..2).tokens, 0..2);
        assert_eq!(to_span(&anchors, 8..9).tokens, 4..5);
        assert_eq!(to_span(&anchors, 6..6).tokens, 3..3);
        assert_eq!(to_span(&[], 0..5).tokens, 0..0);
    }

    #[test]
    fn styles_parse_and_print() {
        for s in PromptStyle::ALL {
            assert_eq!(s.to_string().parse::<PromptStyle>().unwrap(), s);
        }
        assert_eq!(
            "context_query".parse::<PromptStyle>().unwrap(),
            PromptStyle::ContextQuery
        );
        assert!("nope"
            .parse::<PromptStyle>()
            .unwrap_err()
            .contains("mirage"));
        assert_eq!(
            "sentence".parse::<Granularity>().unwrap(),
            Granularity::Sentence
        );
        assert_eq!(Granularity::Document.to_string(), "document");
    }
}
