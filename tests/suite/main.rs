//! The integration tests, as one test binary: each module was once a binary of its own, and each
//! linked the whole crate and its dependencies, so a change in `src/` cost fifteen links. One
//! binary links once; `cargo test --test suite MODULE` or a name filter picks a module.
//!
//! Every test that needs the real SmolLM2 model (fetched by `scripts/fetch-model.sh`) has
//! `smollm2` in its name, so `cargo test -- --skip smollm2` runs everything that needs only the
//! repository. Without the model those tests print a note and pass, unless
//! `HEADSCOPE_REQUIRE_MODEL=1` (as in CI), where a missing model fails them.
//! (`prompt::shipped_samples_are_well_formed` counts the shipped samples' tokens with SmolLM2's
//! tokenizer when the file is there and estimates from characters otherwise: it never needs it.)

mod common;

mod analysis_reference;
mod analyze;
mod atp;
mod bad_input;
mod context_cite;
mod dataset;
mod differentiable;
mod json_contract;
mod kv_cache;
mod live;
mod mirage;
mod parity;
mod prompt;
mod prompt_format;
mod prune;
mod pruning;
mod recorded_passes;
mod slurm;
mod smollm2;
mod study;
mod study_report;
mod study_shards;
mod tokenizer_parity;
mod tui_render_bench;
mod tui_snapshots;
mod tui_study;
mod tui_tmux;
mod tui_worker;
