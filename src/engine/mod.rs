//! The hooked inference engine: load a model from a hub id, a folder or a GGUF file, run batched
//! forwards with interventions and captures, generate and score answers.

pub mod chat;
pub mod tokenizer;
