//! The UI's own head-score, attribution and ablation-set vocabulary. These are being replaced by
//! the analysis and engine types (`analysis::method`, `engine::hooks::AblationSet`); they live
//! alone here, re-exported from [`super`], so that the replacement deletes this file.

use std::collections::BTreeSet;

use super::{cycle, stage_of};
use crate::analysis::ablation::CurveAblation;
use crate::analysis::report::Method;

/// The head score shown in the heatmap (`m` cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HeadScore {
    ArcJsd,
    SummedAttention,
    Retrieval,
    QrHead,
    Ablation,
    Patching,
}

impl HeadScore {
    pub const ALL: [HeadScore; 6] = [
        HeadScore::ArcJsd,
        HeadScore::SummedAttention,
        HeadScore::Retrieval,
        HeadScore::QrHead,
        HeadScore::Ablation,
        HeadScore::Patching,
    ];

    /// The key under `head_scores` in the report.
    pub fn key(self) -> &'static str {
        match self {
            HeadScore::ArcJsd => "arc_jsd",
            HeadScore::SummedAttention => "summed_attention",
            HeadScore::Retrieval => "retrieval",
            HeadScore::QrHead => "qrhead",
            HeadScore::Ablation => "ablation",
            HeadScore::Patching => "patching",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            HeadScore::ArcJsd => "ARC-JSD",
            HeadScore::SummedAttention => "summed attention",
            HeadScore::Retrieval => "retrieval",
            HeadScore::QrHead => "QRHead",
            HeadScore::Ablation => "ablation Δ",
            HeadScore::Patching => "patching",
        }
    }

    /// Scores with a meaningful sign get a diverging scale centred on zero.
    pub fn signed(self) -> bool {
        matches!(self, HeadScore::Ablation | HeadScore::Patching)
    }

    /// The matrix ranked for `a` (top-k ablation): higher = more important. An ablation Δ is
    /// negative for heads the answer needs, so it is negated.
    pub fn importance(self, matrix: &[Vec<f64>]) -> Vec<Vec<f64>> {
        match self {
            HeadScore::Ablation => matrix
                .iter()
                .map(|r| r.iter().map(|v| -v).collect())
                .collect(),
            _ => matrix.to_vec(),
        }
    }

    /// The stage (1-based) that computes it.
    pub fn stage(self) -> usize {
        let m = match self {
            HeadScore::ArcJsd => Method::HeadsArcJsd,
            HeadScore::SummedAttention => Method::HeadsSummedAttention,
            HeadScore::Retrieval => Method::HeadsRetrieval,
            HeadScore::QrHead => Method::HeadsQrHead,
            HeadScore::Ablation => Method::HeadsAblation,
            HeadScore::Patching => Method::HeadsPatching,
        };
        stage_of(m)
    }

    pub(crate) fn next(self) -> HeadScore {
        cycle(&Self::ALL, self)
    }
}

/// The source attribution shown in the attribution pane (`M` cycles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttrMethod {
    ArcJsd,
    ContextCite,
    Mirage,
    Marginal,
    Attention,
}

impl AttrMethod {
    pub const ALL: [AttrMethod; 5] = [
        AttrMethod::ArcJsd,
        AttrMethod::ContextCite,
        AttrMethod::Mirage,
        AttrMethod::Marginal,
        AttrMethod::Attention,
    ];

    /// The key under `attribution` in the report.
    pub fn key(self) -> &'static str {
        match self {
            AttrMethod::ArcJsd => "arc_jsd",
            AttrMethod::ContextCite => "context_cite",
            AttrMethod::Mirage => "mirage",
            AttrMethod::Marginal => "marginal",
            AttrMethod::Attention => "attention",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            AttrMethod::ArcJsd => "ARC-JSD",
            AttrMethod::ContextCite => "ContextCite",
            AttrMethod::Mirage => "MIRAGE",
            AttrMethod::Marginal => "marginal",
            AttrMethod::Attention => "attention",
        }
    }

    pub fn stage(self) -> usize {
        let m = match self {
            AttrMethod::ArcJsd => Method::AttrArcJsd,
            AttrMethod::ContextCite => Method::AttrContextCite,
            AttrMethod::Mirage => Method::AttrMirage,
            AttrMethod::Marginal => Method::AttrMarginal,
            AttrMethod::Attention => Method::AttrAttention,
        };
        stage_of(m)
    }

    pub(crate) fn next(self) -> AttrMethod {
        cycle(&Self::ALL, self)
    }
}

/// The heads and MLPs knocked out for the live re-run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ablation {
    pub heads: BTreeSet<(usize, usize)>,
    pub mlps: BTreeSet<usize>,
    pub kind: CurveAblation,
}

impl Ablation {
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.mlps.is_empty()
    }

    pub fn len(&self) -> usize {
        self.heads.len() + self.mlps.len()
    }

    /// `L{l}H{h}` for heads, `L{l} MLP` for MLPs, in layer order.
    pub fn labels(&self) -> Vec<String> {
        let mut items: Vec<(usize, usize, String)> = self
            .heads
            .iter()
            .map(|&(l, h)| (l, h, format!("L{l}H{h}")))
            .chain(
                self.mlps
                    .iter()
                    .map(|&l| (l, usize::MAX, format!("L{l} MLP"))),
            )
            .collect();
        items.sort();
        items.into_iter().map(|x| x.2).collect()
    }

    pub fn kind_label(&self) -> &'static str {
        kind_label(self.kind)
    }
}

pub fn kind_label(kind: CurveAblation) -> &'static str {
    match kind {
        CurveAblation::Zero => "zero",
        CurveAblation::Mean => "mean",
        CurveAblation::Uniform => "uniform",
    }
}
