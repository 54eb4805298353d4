//! RAG prompt assembly: samples in the MIRAGE format, prompt text, token spans.
//!
//! A [`Sample`] (question + documents) becomes a [`RagPrompt`]: the user message written as its
//! [`PromptFormat`] says (one of two [`PromptStyle`]s, optionally with an instruction before the
//! question, or a user's minijinja [`UserTemplate`]), rendered with the model's chat template as one user turn followed by the
//! generation prompt, tokenised once, and annotated with the byte and token ranges of every
//! document, every sentence of every document, and the question.
//!
//! Spans are computed from the positions where the builder *wrote* each piece of text (never by
//! searching token strings), and mapped to tokens with one rule, documented on [`RagPrompt`].
//!
//! Leave-out prompts (for attribution: ContextCite, ARC-JSD, MIRAGE's contextless input) are built
//! by [`RagPrompt::build_with_sources`]: the same sample with some documents or sentences removed. Their span
//! vectors keep the shape of the full prompt (one entry per original document / sentence); removed
//! sources get empty ranges, so indices line up across variants.

mod compose;
mod format;
mod rag_prompt;
mod samples;
mod sentences;
mod style;
mod template;

pub use format::{PromptFormat, SHORT_ANSWER_INSTRUCTION};
pub use rag_prompt::{RagPrompt, Span};
pub use samples::{load_samples, Document, Sample};
pub use sentences::split_sentences;
pub use style::{Granularity, PromptStyle};
pub use template::UserTemplate;
