//! How a prompt is written ([`PromptStyle`]) and what counts as one source ([`Granularity`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

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

#[cfg(test)]
mod tests {
    use super::*;

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
