//! Samples in the MIRAGE format: the types, and reading them from JSON, a JSON list or JSONL with
//! errors that say where.

use std::ops::Range;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{split_sentences, Granularity};
use crate::{Error, Result};

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

    /// The `category` field (the question type a population study groups by), when it is text.
    pub fn category(&self) -> Option<&str> {
        self.extra.get("category").and_then(Value::as_str)
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
