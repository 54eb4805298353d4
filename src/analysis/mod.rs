//! Analyses over the engine: each a plain function over `Engine` + `RagPrompt` returning a serde
//! result. The TUI and the CLI call the same functions.

pub mod ablation;
