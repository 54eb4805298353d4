//! headscope: a hooked inference engine and the analyses that show how a language model uses the
//! documents it was given. See ARCHITECTURE.md for the shape of the code.

pub mod analysis;
pub mod dataset;
pub mod engine;
pub mod error;
pub mod prompt;
pub mod prune;
pub mod study;
pub mod ui;

pub use error::{Error, Result};
