//! Chat templates (minijinja with Hugging Face semantics) and built-in fallbacks.
