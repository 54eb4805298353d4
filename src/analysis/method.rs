//! The vocabulary of `analyze`: every method, head score and source attribution has one name
//! here, and the CLI parser is the only place that reads one from a string.
//!
//! [`HeadScore`] and [`Attribution`] key the report's maps (`head_scores`, `mlp_scores`,
//! `attribution`, `faithfulness`); serde writes them as the JSON keys (`arc_jsd`, `qrhead`, ...)
//! and their order is the keys' alphabetical order, so the JSON reads as it always has.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A layers × heads score (`heads:*` methods), one matrix under `head_scores`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeadScore {
    /// ARC-JSD's head lens: JSD between the full and the top-source-removed runs, per head.
    ArcJsd,
    /// Attention mass on the target document, summed over the answer-predicting rows.
    SummedAttention,
    /// Wu et al.'s retrieval score (copy-paste from the needle).
    Retrieval,
    /// QRHead's query-focused score with null-query calibration.
    #[serde(rename = "qrhead")]
    QrHead,
    /// Δ answer log-prob when the head alone is zero-ablated.
    Ablation,
    /// Activation patching from the clean into the corrupted run.
    Patching,
    /// Attribution patching: [`HeadScore::Ablation`] to first order, from one backward pass.
    Atp,
}

impl HeadScore {
    /// In the explorer's `m` cycle order.
    pub const ALL: [HeadScore; 7] = [
        HeadScore::ArcJsd,
        HeadScore::SummedAttention,
        HeadScore::Retrieval,
        HeadScore::QrHead,
        HeadScore::Ablation,
        HeadScore::Atp,
        HeadScore::Patching,
    ];

    /// The key under `head_scores` in the report's JSON.
    pub fn key(self) -> &'static str {
        match self {
            HeadScore::ArcJsd => "arc_jsd",
            HeadScore::SummedAttention => "summed_attention",
            HeadScore::Retrieval => "retrieval",
            HeadScore::QrHead => "qrhead",
            HeadScore::Ablation => "ablation",
            HeadScore::Patching => "patching",
            HeadScore::Atp => "atp",
        }
    }

    /// The method's CLI name (`heads:arc-jsd`).
    pub fn name(self) -> &'static str {
        Method::Heads(self).name()
    }

    /// How the explorer titles it.
    pub fn label(self) -> &'static str {
        match self {
            HeadScore::ArcJsd => "ARC-JSD",
            HeadScore::SummedAttention => "summed attention",
            HeadScore::Retrieval => "retrieval",
            HeadScore::QrHead => "QRHead",
            HeadScore::Ablation => "ablation Δ",
            HeadScore::Patching => "patching",
            HeadScore::Atp => "AtP Δ",
        }
    }

    /// Scores with a meaningful sign (drawn on a diverging scale centred on zero).
    pub fn signed(self) -> bool {
        matches!(
            self,
            HeadScore::Ablation | HeadScore::Patching | HeadScore::Atp
        )
    }

    /// The sign that turns a score into importance (higher = the answer needs the head more): an
    /// ablation Δ (exact or AtP's estimate) is negative for the heads the answer needs, every other
    /// score is positive there.
    pub fn importance_sign(self) -> f64 {
        match self {
            HeadScore::Ablation | HeadScore::Atp => -1.0,
            _ => 1.0,
        }
    }

    /// `matrix` as importance (see [`Self::importance_sign`]): what top-k ablation ranks.
    pub fn importance(self, matrix: &[Vec<f64>]) -> Vec<Vec<f64>> {
        let sign = self.importance_sign();
        matrix
            .iter()
            .map(|row| row.iter().map(|v| sign * v).collect())
            .collect()
    }

    /// The explorer's stage that computes it (see [`Method::stage`]).
    pub fn stage(self) -> usize {
        Method::Heads(self).stage()
    }
}

/// A source attribution (`attr:*` methods), one score per source under `attribution`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attribution {
    /// ARC-JSD: JSD of the answer distribution when the source is left out.
    ArcJsd,
    /// ContextCite's random-mask Lasso surrogate.
    ContextCite,
    /// MIRAGE: CTI + CCI citations.
    Mirage,
    /// Document-alone RAG marginals.
    Marginal,
    /// Mean attention mass on the source.
    Attention,
}

impl Attribution {
    /// In the explorer's `M` cycle order.
    pub const ALL: [Attribution; 5] = [
        Attribution::ArcJsd,
        Attribution::ContextCite,
        Attribution::Mirage,
        Attribution::Marginal,
        Attribution::Attention,
    ];

    /// The key under `attribution` (and `faithfulness`) in the report's JSON.
    pub fn key(self) -> &'static str {
        match self {
            Attribution::ArcJsd => "arc_jsd",
            Attribution::ContextCite => "context_cite",
            Attribution::Mirage => "mirage",
            Attribution::Marginal => "marginal",
            Attribution::Attention => "attention",
        }
    }

    /// The method's CLI name (`attr:context-cite`).
    pub fn name(self) -> &'static str {
        Method::Attr(self).name()
    }

    /// How the explorer titles it.
    pub fn label(self) -> &'static str {
        match self {
            Attribution::ArcJsd => "ARC-JSD",
            Attribution::ContextCite => "ContextCite",
            Attribution::Mirage => "MIRAGE",
            Attribution::Marginal => "marginal",
            Attribution::Attention => "attention",
        }
    }

    /// The explorer's stage that computes it (see [`Method::stage`]).
    pub fn stage(self) -> usize {
        Method::Attr(self).stage()
    }
}

/// Map keys sort by their JSON key, so a report serialises its maps in the order it always had.
macro_rules! ord_by_key {
    ($t:ty) => {
        impl Ord for $t {
            fn cmp(&self, other: &Self) -> Ordering {
                self.key().cmp(other.key())
            }
        }
        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}
ord_by_key!(HeadScore);
ord_by_key!(Attribution);

/// One method of `analyze --method`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    LogitLens,
    Heads(HeadScore),
    Attr(Attribution),
    AblationCurve,
}

impl Method {
    /// Every method, in the order `analyze` lists (and runs) them. Methods added later go last, so
    /// `options.methods` in reports keeps its order.
    pub const ALL: [Method; 14] = [
        Method::LogitLens,
        Method::Heads(HeadScore::ArcJsd),
        Method::Heads(HeadScore::SummedAttention),
        Method::Heads(HeadScore::Retrieval),
        Method::Heads(HeadScore::QrHead),
        Method::Heads(HeadScore::Ablation),
        Method::Heads(HeadScore::Patching),
        Method::Attr(Attribution::ArcJsd),
        Method::Attr(Attribution::ContextCite),
        Method::Attr(Attribution::Mirage),
        Method::Attr(Attribution::Marginal),
        Method::Attr(Attribution::Attention),
        Method::AblationCurve,
        Method::Heads(HeadScore::Atp),
    ];

    /// The CLI name.
    pub fn name(self) -> &'static str {
        match self {
            Method::LogitLens => "logit-lens",
            Method::Heads(h) => match h {
                HeadScore::ArcJsd => "heads:arc-jsd",
                HeadScore::SummedAttention => "heads:summed-attention",
                HeadScore::Retrieval => "heads:retrieval",
                HeadScore::QrHead => "heads:qrhead",
                HeadScore::Ablation => "heads:ablation",
                HeadScore::Patching => "heads:patching",
                HeadScore::Atp => "heads:atp",
            },
            Method::Attr(a) => match a {
                Attribution::ArcJsd => "attr:arc-jsd",
                Attribution::ContextCite => "attr:context-cite",
                Attribution::Mirage => "attr:mirage",
                Attribution::Marginal => "attr:marginal",
                Attribution::Attention => "attr:attention",
            },
            Method::AblationCurve => "ablation-curve",
        }
    }

    /// The name serde has always written in `options.methods` (`HeadsArcJsd`, `AttrMirage`).
    fn serde_name(self) -> String {
        match self {
            Method::LogitLens => "LogitLens".into(),
            Method::Heads(h) => format!("Heads{h:?}"),
            Method::Attr(a) => format!("Attr{a:?}"),
            Method::AblationCurve => "AblationCurve".into(),
        }
    }

    fn index(self) -> usize {
        Method::ALL.iter().position(|&m| m == self).unwrap_or(0)
    }

    /// The explorer's stages, ordered by cost so that every pane the explorer opens on has
    /// something within its first stage: the logit lens, the attention and ARC-JSD (the heatmap's
    /// and the attribution pane's first methods), attribution patching (AtP, one forward and one
    /// backward), which the heatmap shows as the ablation map's first estimate, and the ablation
    /// curve ranked by ARC-JSD's head lens (a handful of batched forwards); AtP runs before the
    /// head lens and the curve, being the cheapest of the three. Then the cheap head scores; then
    /// the resampling attributions; last the exact sweeps over every head, which refine AtP.
    pub const STAGES: [&'static [Method]; 4] = [
        &[
            Method::LogitLens,
            Method::Attr(Attribution::Attention),
            Method::Heads(HeadScore::SummedAttention),
            Method::Attr(Attribution::ArcJsd),
            Method::Heads(HeadScore::Atp),
            Method::Heads(HeadScore::ArcJsd),
            Method::AblationCurve,
        ],
        &[
            Method::Heads(HeadScore::Retrieval),
            Method::Heads(HeadScore::QrHead),
            Method::Attr(Attribution::Marginal),
        ],
        &[
            Method::Attr(Attribution::ContextCite),
            Method::Attr(Attribution::Mirage),
        ],
        &[
            Method::Heads(HeadScore::Ablation),
            Method::Heads(HeadScore::Patching),
        ],
    ];

    /// The explorer's stage (1-based) that adds the ablation curve's random band: its own stage
    /// draws only the top-k line (one batched pass of as many rows as k values), so that the
    /// ablation pane has its curve seconds after the head lens, and this later stage redoes it
    /// with every random draw (five times the rows).
    pub const CURVE_BAND_STAGE: usize = 2;

    /// The explorer's stage (1-based) that computes it (see [`Method::STAGES`]).
    pub fn stage(self) -> usize {
        Method::STAGES
            .iter()
            .position(|s| s.contains(&self))
            .map_or(0, |i| i + 1)
    }

    /// Parses `a,b,c` (or `all`), sorted and without repeats.
    pub fn parse_list(s: &str) -> std::result::Result<Vec<Method>, String> {
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            if part == "all" {
                out.extend(Method::ALL);
            } else {
                out.push(part.parse()?);
            }
        }
        if out.is_empty() {
            return Err("no method given".into());
        }
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl Ord for Method {
    fn cmp(&self, other: &Self) -> Ordering {
        self.index().cmp(&other.index())
    }
}

impl PartialOrd for Method {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Method::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown method `{s}`; use one or more of: {}, or all",
                    Method::ALL.map(Method::name).join(", ")
                )
            })
    }
}

impl FromStr for HeadScore {
    type Err = String;
    /// `arc_jsd`, `arc-jsd` or `heads:arc-jsd`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bare = s.trim().to_ascii_lowercase().replace('-', "_");
        let bare = bare.strip_prefix("heads:").unwrap_or(&bare);
        HeadScore::ALL
            .into_iter()
            .find(|h| h.key() == bare)
            .ok_or_else(|| {
                format!(
                    "unknown head score `{}` (use one of {})",
                    s.trim(),
                    HeadScore::ALL.map(HeadScore::key).join(", ")
                )
            })
    }
}

impl Serialize for Method {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.serde_name())
    }
}

impl<'de> Deserialize<'de> for Method {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Method::ALL
            .into_iter()
            .find(|m| m.serde_name() == name)
            .ok_or_else(|| serde::de::Error::unknown_variant(&name, &[]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for m in Method::ALL {
            assert_eq!(m.name().parse::<Method>().unwrap(), m);
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<Method>(&json).unwrap(), m);
        }
        for h in HeadScore::ALL {
            assert_eq!(serde_json::to_value(h).unwrap(), h.key());
            assert_eq!(h.key().parse::<HeadScore>().unwrap(), h);
            assert_eq!(h.name().parse::<HeadScore>().unwrap(), h);
        }
        for a in Attribution::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.key());
        }
        assert!("bogus".parse::<HeadScore>().is_err());
    }

    #[test]
    fn serde_names_are_the_old_variant_names() {
        let names: Vec<String> = Method::ALL.iter().map(|m| m.serde_name()).collect();
        assert_eq!(names[4], "HeadsQrHead");
        assert_eq!(names[8], "AttrContextCite");
        assert_eq!(names[12], "AblationCurve");
    }

    #[test]
    fn every_method_has_one_stage() {
        for m in Method::ALL {
            let n = Method::STAGES.iter().filter(|s| s.contains(&m)).count();
            assert_eq!(n, 1, "{m}");
        }
        assert_eq!(HeadScore::Ablation.stage(), 4);
        assert!(HeadScore::Atp.stage() < HeadScore::Ablation.stage());
        assert_eq!(Method::AblationCurve.stage(), HeadScore::ArcJsd.stage());
        assert_eq!(Attribution::Attention.stage(), 1);
        // The ablation map's estimate comes first, before the costlier head lens and curve.
        let first = Method::STAGES[0];
        let at = |m: Method| first.iter().position(|&x| x == m).unwrap();
        assert!(at(Method::Heads(HeadScore::Atp)) < at(Method::Heads(HeadScore::ArcJsd)));
        assert!(at(Method::Heads(HeadScore::Atp)) < at(Method::AblationCurve));
        assert!(Method::CURVE_BAND_STAGE > Method::AblationCurve.stage());
        assert!(Method::CURVE_BAND_STAGE <= Method::STAGES.len());
    }

    #[test]
    fn maps_keep_alphabetical_key_order() {
        let mut keys: Vec<&str> = HeadScore::ALL.iter().map(|h| h.key()).collect();
        keys.sort();
        let mut sorted = HeadScore::ALL;
        sorted.sort();
        assert_eq!(sorted.map(HeadScore::key).to_vec(), keys);
    }
}
