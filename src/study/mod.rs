//! The population study (`headscope study`): which heads retrieve, across a dataset's samples and
//! question categories. Phases run alone and write their results under the study's folder; the
//! first is [`split`].

pub mod split;
pub mod stats;
