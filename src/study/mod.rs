//! The population study (`headscope study`): which heads retrieve, across a dataset's samples and
//! question categories. Phases run alone and write their results under the study's folder:
//! [`split`], detect, ablate, report; [`summary`] holds every number the report states.

pub mod figures;
pub mod findings;
pub mod split;
pub mod stats;
pub mod summary;
