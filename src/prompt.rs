//! RAG prompt assembly: samples in the MIRAGE format, prompt text, token spans.
