//! The population study (`headscope study`): which heads retrieve, across a dataset's samples and
//! question categories. [`run::Study`] runs the phases over the study's folder ([`units`]):
//! [`split`], [`detect`] on the training samples, [`ablate`] on the test samples; [`report`]
//! computes the [`summary`] (every number the findings state) with [`stats`], and [`findings`] and
//! [`figures`] render it.

pub mod ablate;
pub mod config;
pub mod detect;
pub mod figures;
pub mod findings;
pub mod report;
pub mod run;
pub mod shard;
pub mod split;
pub mod stats;
pub mod summary;
pub mod units;
