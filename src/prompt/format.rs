//! Everything that decides how a sample is written as the user message ([`PromptFormat`]).

use serde::Serialize;

use super::{PromptStyle, UserTemplate};

/// The instruction a study asks with by default: the answer is compared with short gold answers.
/// Measured on the shipped filings (`dataset check --every 41`, 20 samples): SmolLM2 answers
/// 14/20 correctly with it and 13/20 with no instruction, while a longer "Answer with the exact
/// word, name or number only, without explanation." drops incorporation states from 13/20 to 6/20
/// (`--every 40`, `benches/results/instruction-{none,long}-every40.json`): a small model follows
/// a long instruction by answering less.
pub const SHORT_ANSWER_INSTRUCTION: &str = "Answer briefly.";

/// How a prompt is written: a built-in [`PromptStyle`], an optional instruction, and an optional
/// user template that replaces the style's writing.
///
/// * Without a template the style writes the message; an instruction goes on its own line(s)
///   right before the question: after the documents' block in Mirage style
///   (`…documents…\n\n{instruction}\n{question}`), before `Query: ` in context-query style
///   (`Context: …\n\n{instruction}\nQuery: {question}`). Without an instruction the message is
///   exactly the style's.
/// * With a template ([`UserTemplate`]) the template writes the message from `question`, `docs`
///   and `instruction`; the style is only recorded.
///
/// A blank instruction counts as none. Serialised as `style`, plus `instruction` and `template`
/// only when given.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PromptFormat {
    pub style: PromptStyle,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instruction: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<UserTemplate>,
}

impl From<PromptStyle> for PromptFormat {
    fn from(style: PromptStyle) -> Self {
        PromptFormat {
            style,
            ..PromptFormat::default()
        }
    }
}

impl PromptFormat {
    /// The style with an instruction.
    pub fn with_instruction(mut self, instruction: impl Into<String>) -> Self {
        self.instruction = Some(instruction.into());
        self
    }

    /// The style with a user template.
    pub fn with_template(mut self, template: UserTemplate) -> Self {
        self.template = Some(template);
        self
    }

    /// The instruction as written into prompts: trimmed, `None` when absent or blank.
    pub fn instruction(&self) -> Option<&str> {
        super::compose::written_instruction(self.instruction.as_deref())
    }

    /// True when the prompt is the style's alone (no instruction, no template): what outputs
    /// that record the format record as `prompt_style` only.
    pub fn is_plain(&self) -> bool {
        self.instruction().is_none() && self.template.is_none()
    }
}
