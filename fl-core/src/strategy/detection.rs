//! Poisoning detection under a robust rule: per member and round, four anomaly features
//! against the round's robust centre, each turned into a robust z-score over the round's
//! members, a flag with a stated threshold, and a reputation that decides exclusion.
//!
//! # The score
//!
//! The centre `c` is the robust rule's aggregate step of the round (before any server
//! optimiser). For member `i` with update `δᵢ` (its model minus the global one):
//!
//! | feature | value | suspicious when | catches |
//! |---|---|---|---|
//! | `distance` | `‖δᵢ - c‖` | large | Gaussian noise, scaling, ALIE's shifted mean |
//! | `norm` | `‖δᵢ‖` | large | scaling / model replacement, Gaussian noise |
//! | `direction` | `cos(δᵢ, c)` | small | sign flip, IPM |
//! | `neighbour` | `minⱼ ‖δᵢ - δⱼ‖` | small | colluders and sybils sending one vector (ALIE, IPM, min-max) |
//!
//! Each feature's value becomes a z-score against the round's members: `(v - median)/scale`
//! (`(median - v)/scale` where small is suspicious), with `scale = max(1.4826·MAD,
//! 0.05·|median|, 1e-12)` (the MAD of a normal sample estimates its standard deviation; the
//! floors keep a round of near-identical honest updates from turning rounding noise into
//! flags). A member's score is its largest z-score, and it is **flagged** when the score
//! exceeds [`DetectionConfig::threshold`]. The medians and scales of the round
//! ([`Reference`]) are published with the round, so a flag can be re-checked from the flagged
//! update, the global model and the centre alone ([`MemberFeatures::of`] and
//! [`Reference::score`] are the same code for the aggregator and the verifier).
//!
//! # Reputation and exclusion
//!
//! In the manner of FLDetector (Zhang et al. 2022), which judges a member by its consistency
//! over rounds rather than by one round, every member carries a reputation: an exponential
//! moving average of "not flagged" (1 for a clean round, 0 for a flagged one) with rate
//! [`DetectionConfig::reputation_rate`], starting at 1. A member whose reputation falls below
//! [`DetectionConfig::exclude_below`] is left out of later rounds' selection, and stays out
//! (it sends nothing more that could restore it). Exclusion is off by default: on non-IID data
//! an honest member with an unusual label mix can be flagged now and then, and with rate 0.3
//! and bound 0.5 (two flags in a row: 1 → 0.7 → 0.49) the digits benchmark excluded up to 2
//! honest members of 20 in 20 rounds without any attack (`benches/RESULTS.md`, "Poisoning
//! detection"); rate 0.2 and bound 0.3 need about six flags in a row. The reputation is written
//! into every checkpoint and restored on resume ([`ResumeState::reputation`](super::ResumeState)).
//!
//! # What this cannot do
//!
//! It needs every member's update, so it cannot run under secure aggregation or homomorphic
//! aggregation; there, only a bound on each update's norm survives (see the README's
//! "Robustness" section). An attacker that stays within the threshold on every feature is not
//! flagged: detection bounds how far a poisoned update can stray, it does not prove honesty.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::hash::ContentHash;
use crate::round::{ClientId, Metrics};

use super::MemberUpdate;
use super::robust::{norm, pairwise_sq_dists, sq_dist};

/// `[strategy.detection]`: flag threshold, reputation rate and exclusion bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectionConfig {
    /// A member is flagged in a round when its largest robust z-score exceeds this (default
    /// 3.5, the threshold Iglewicz and Hoaglin recommend for modified z-scores).
    pub threshold: f64,
    /// Weight of the newest round in the reputation's moving average, in (0, 1] (default 0.3).
    pub reputation_rate: f64,
    /// Members whose reputation falls below this are left out of later rounds (default 0:
    /// nobody is excluded; see the module docs before turning it on).
    pub exclude_below: f64,
    /// Rounds of FLDetector-style consistency to average (`qa.<client>.consistency`, see
    /// [`consistency`](super::consistency)); 0, the default, turns it off (it keeps every
    /// member's last update). At most [`MAX_CONSISTENCY_WINDOW`].
    pub consistency_window: usize,
}

/// The largest [`DetectionConfig::consistency_window`].
pub const MAX_CONSISTENCY_WINDOW: usize = 50;

impl Default for DetectionConfig {
    fn default() -> Self {
        Self {
            threshold: 3.5,
            reputation_rate: 0.3,
            exclude_below: 0.0,
            consistency_window: 0,
        }
    }
}

/// Why detection settings cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DetectionConfigError {
    /// The threshold is not a positive finite number.
    #[error("[strategy.detection] threshold must be a positive number, not {0}")]
    Threshold(f64),
    /// The reputation rate is outside (0, 1].
    #[error("[strategy.detection] reputation_rate must be in (0, 1], not {0}")]
    Rate(f64),
    /// The exclusion bound is outside [0, 1).
    #[error("[strategy.detection] exclude_below must be in [0, 1), not {0}")]
    Exclusion(f64),
    /// The consistency window is too long.
    #[error(
        "[strategy.detection] consistency_window must be at most {MAX_CONSISTENCY_WINDOW} \
         rounds, not {0}"
    )]
    Window(usize),
}

impl DetectionConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// The first setting out of range.
    pub fn validate(&self) -> Result<(), DetectionConfigError> {
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return Err(DetectionConfigError::Threshold(self.threshold));
        }
        if !(self.reputation_rate > 0.0 && self.reputation_rate <= 1.0) {
            return Err(DetectionConfigError::Rate(self.reputation_rate));
        }
        if !(self.exclude_below >= 0.0 && self.exclude_below < 1.0) {
            return Err(DetectionConfigError::Exclusion(self.exclude_below));
        }
        if self.consistency_window > MAX_CONSISTENCY_WINDOW {
            return Err(DetectionConfigError::Window(self.consistency_window));
        }
        Ok(())
    }
}

/// One of the anomaly features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Feature {
    /// `‖δ - c‖`, large is suspicious.
    Distance,
    /// `‖δ‖`, large is suspicious.
    Norm,
    /// `cos(δ, c)`, small is suspicious.
    Direction,
    /// Distance to the nearest other member's update, small is suspicious.
    Neighbour,
}

impl Feature {
    /// Every feature, in the order scores break ties.
    pub const ALL: [Feature; 4] = [
        Feature::Distance,
        Feature::Norm,
        Feature::Direction,
        Feature::Neighbour,
    ];

    /// The name used in metrics and evidence.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Distance => "distance",
            Self::Norm => "norm",
            Self::Direction => "direction",
            Self::Neighbour => "neighbour",
        }
    }

    /// Whether a small value is the suspicious one.
    const fn low_is_suspicious(self) -> bool {
        matches!(self, Self::Direction | Self::Neighbour)
    }
}

/// A member's feature values in one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemberFeatures {
    /// `‖δ - c‖`.
    pub distance: f64,
    /// `‖δ‖`.
    pub norm: f64,
    /// `cos(δ, c)`, 0 when either is zero.
    pub direction: f64,
    /// `‖δ - δⱼ‖` to the nearest other member `j`; `None` for a member alone in its round.
    pub neighbour: Option<f64>,
}

impl MemberFeatures {
    /// The features of `delta` against `centre`, with `neighbour` the nearest other member's
    /// update (if any). The aggregator and the evidence verifier both compute them here.
    pub fn of(delta: &[f32], centre: &[f32], neighbour: Option<&[f32]>) -> Self {
        let n = norm(delta);
        let c = norm(centre);
        let dot: f64 = delta
            .iter()
            .zip(centre)
            .map(|(a, b)| f64::from(*a) * f64::from(*b))
            .sum();
        let direction = if n > 0.0 && c > 0.0 {
            dot / (n * c)
        } else {
            0.0
        };
        Self {
            distance: sq_dist(delta, centre).sqrt(),
            norm: n,
            direction,
            neighbour: neighbour.map(|o| sq_dist(delta, o).sqrt()),
        }
    }

    /// The value of `feature`.
    pub fn get(&self, feature: Feature) -> Option<f64> {
        match feature {
            Feature::Distance => Some(self.distance),
            Feature::Norm => Some(self.norm),
            Feature::Direction => Some(self.direction),
            Feature::Neighbour => self.neighbour,
        }
    }
}

/// A feature's location and spread over a round's members.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// The median.
    pub median: f64,
    /// `max(1.4826·MAD, 0.05·|median|, 1e-12)`.
    pub scale: f64,
}

impl Spread {
    /// The spread of `values` (non-empty, finite).
    pub fn of(values: &[f64]) -> Self {
        let m = median(values.to_vec());
        let mad: f64 = median(values.iter().map(|v| (v - m).abs()).collect());
        Self {
            median: m,
            scale: (1.4826 * mad).max(0.05 * m.abs()).max(1e-12),
        }
    }
}

/// The median of `v` (the mean of the middle two for an even count; NaN when empty).
pub(crate) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The round's reference for z-scores: each feature's [`Spread`] over its members.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    /// Of the distances to the centre.
    pub distance: Spread,
    /// Of the norms.
    pub norm: Spread,
    /// Of the cosines with the centre.
    pub direction: Spread,
    /// Of the nearest-neighbour distances (absent in a round of one member).
    pub neighbour: Option<Spread>,
}

impl Reference {
    /// The spread of `feature`.
    pub fn spread(&self, feature: Feature) -> Option<Spread> {
        match feature {
            Feature::Distance => Some(self.distance),
            Feature::Norm => Some(self.norm),
            Feature::Direction => Some(self.direction),
            Feature::Neighbour => self.neighbour,
        }
    }

    /// The z-score of `features` on `feature` (signed so that large is suspicious).
    pub fn z(&self, features: &MemberFeatures, feature: Feature) -> Option<f64> {
        let v = features.get(feature)?;
        let s = self.spread(feature)?;
        Some(if feature.low_is_suspicious() {
            (s.median - v) / s.scale
        } else {
            (v - s.median) / s.scale
        })
    }

    /// The score of `features`: the largest z-score and the feature it came from (ties go to
    /// the first in [`Feature::ALL`]).
    pub fn score(&self, features: &MemberFeatures) -> (f64, Feature) {
        let mut best = (f64::NEG_INFINITY, Feature::Distance);
        for f in Feature::ALL {
            if let Some(z) = self.z(features, f)
                && z > best.0
            {
                best = (z, f);
            }
        }
        best
    }

    /// The reference as round metrics (`qa.ref.<feature>.median`, `qa.ref.<feature>.scale`).
    pub fn metrics(&self) -> Metrics {
        let mut m = Metrics::new();
        for f in Feature::ALL {
            if let Some(s) = self.spread(f) {
                m.insert(format!("qa.ref.{}.median", f.name()), s.median);
                m.insert(format!("qa.ref.{}.scale", f.name()), s.scale);
            }
        }
        m
    }
}

/// One member's anomaly score in one round.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnomalyScore {
    /// The member.
    pub client: ClientId,
    /// Its feature values.
    pub features: MemberFeatures,
    /// Its nearest other member (whose update the `neighbour` feature was measured to).
    pub nearest: Option<ClientId>,
    /// Its largest z-score.
    pub score: f64,
    /// The feature that score came from.
    pub reason: Feature,
    /// Whether `score` exceeds the threshold.
    pub flagged: bool,
}

/// Scores every member of a round: `deltas[i]` is `clients[i]`'s update, `centre` the robust
/// step. Returns the round's reference and one score per member, in input order.
///
/// # Panics
/// Never on finite input of equal lengths (what [`super::member_deltas`] hands a rule); an
/// empty round gives an empty list and a reference of NaN medians.
pub fn score_round(
    clients: &[ClientId],
    deltas: &[Vec<f32>],
    centre: &[f32],
    threshold: f64,
) -> (Reference, Vec<AnomalyScore>) {
    let n = deltas.len();
    let dists = pairwise_sq_dists(deltas);
    let nearest: Vec<Option<usize>> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| j != i)
                .min_by(|&a, &b| dists[i][a].total_cmp(&dists[i][b]).then(a.cmp(&b)))
        })
        .collect();
    let features: Vec<MemberFeatures> = (0..n)
        .map(|i| MemberFeatures::of(&deltas[i], centre, nearest[i].map(|j| deltas[j].as_slice())))
        .collect();
    let spread = |f: Feature| {
        let v: Vec<f64> = features.iter().filter_map(|m| m.get(f)).collect();
        (!v.is_empty()).then(|| Spread::of(&v))
    };
    let nan = Spread {
        median: f64::NAN,
        scale: f64::NAN,
    };
    let reference = Reference {
        distance: spread(Feature::Distance).unwrap_or(nan),
        norm: spread(Feature::Norm).unwrap_or(nan),
        direction: spread(Feature::Direction).unwrap_or(nan),
        neighbour: spread(Feature::Neighbour),
    };
    let scores = (0..n)
        .map(|i| {
            let (score, reason) = reference.score(&features[i]);
            AnomalyScore {
                client: clients[i],
                features: features[i],
                nearest: nearest[i].map(|j| clients[j]),
                score,
                reason,
                flagged: score > threshold,
            }
        })
        .collect();
    (reference, scores)
}

/// A flagged member's update, kept for its evidence.
#[derive(Debug, Clone, PartialEq)]
pub struct FlaggedUpdate {
    /// The score that flagged it.
    pub score: AnomalyScore,
    /// The update as the member sent it (with its signed statement when it came signed).
    pub update: MemberUpdate,
    /// The nearest other member's update, kept only when the `neighbour` feature is what
    /// flagged it (a flag for colluding needs the colluder's update to be re-checked).
    pub neighbour: Option<MemberUpdate>,
}

/// What detection found in one round, for the aggregator to turn into evidence
/// ([`Strategy::take_findings`](super::Strategy::take_findings)).
#[derive(Debug, Clone, PartialEq)]
pub struct QaFindings {
    /// The round.
    pub round: u64,
    /// The robust rule's name.
    pub rule: String,
    /// The settings that flagged.
    pub config: DetectionConfig,
    /// The robust centre: the rule's aggregate step.
    pub centre: Arc<Vec<f32>>,
    /// Whether a server optimiser stepped from the centre (then the next global model is not
    /// `global + centre`, and a verifier cannot check the centre against the checkpoints).
    pub server_optimizer: bool,
    /// The round's z-score reference.
    pub reference: Reference,
    /// Every member's score, in the order the updates arrived.
    pub scores: Vec<AnomalyScore>,
    /// The flagged members' updates.
    pub flagged: Vec<FlaggedUpdate>,
    /// Each member's signed update digest (the `update_hash` its signature covers), for the
    /// members whose update came signed.
    pub signed_digests: BTreeMap<ClientId, ContentHash>,
    /// Every known member's reputation after this round.
    pub reputation: BTreeMap<ClientId, f64>,
}

/// Flags, reputation and exclusion across rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    config: DetectionConfig,
    reputation: BTreeMap<ClientId, f64>,
}

impl Detector {
    /// A detector with no history.
    pub fn new(config: DetectionConfig) -> Self {
        Self {
            config,
            reputation: BTreeMap::new(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &DetectionConfig {
        &self.config
    }

    /// Restores reputations recorded in a checkpoint (values outside [0, 1] or non-finite
    /// are clamped to the range, NaN to 0).
    pub fn restore(&mut self, reputation: &BTreeMap<ClientId, f64>) {
        self.reputation = reputation
            .iter()
            .map(|(&c, &r)| (c, if r.is_nan() { 0.0 } else { r.clamp(0.0, 1.0) }))
            .collect();
    }

    /// Every member's reputation so far (members never scored are absent: they count as 1).
    pub fn reputation(&self) -> &BTreeMap<ClientId, f64> {
        &self.reputation
    }

    /// The reputation of `client` (1 if never scored).
    pub fn reputation_of(&self, client: ClientId) -> f64 {
        self.reputation.get(&client).copied().unwrap_or(1.0)
    }

    /// The members currently excluded.
    pub fn excluded(&self) -> BTreeSet<ClientId> {
        self.reputation
            .iter()
            .filter(|(_, r)| **r < self.config.exclude_below)
            .map(|(c, _)| *c)
            .collect()
    }

    /// `available` without the excluded members.
    pub fn admit(&self, available: &[ClientId]) -> Vec<ClientId> {
        let excluded = self.excluded();
        available
            .iter()
            .copied()
            .filter(|c| !excluded.contains(c))
            .collect()
    }

    /// Scores a round and updates the reputations of its members; see [`score_round`].
    pub fn observe(
        &mut self,
        clients: &[ClientId],
        deltas: &[Vec<f32>],
        centre: &[f32],
    ) -> (Reference, Vec<AnomalyScore>) {
        let (reference, scores) = score_round(clients, deltas, centre, self.config.threshold);
        let rate = self.config.reputation_rate;
        for s in &scores {
            let clean = if s.flagged { 0.0 } else { 1.0 };
            let r = self.reputation.entry(s.client).or_insert(1.0);
            *r = (1.0 - rate) * *r + rate * clean;
        }
        (reference, scores)
    }

    /// The round metrics of `scores`: `qa.<client>.score`, `qa.<client>.flagged` (0 or 1),
    /// `qa.<client>.reputation`, `qa.flagged` (how many), `qa.excluded` (how many now) and
    /// the reference.
    pub fn metrics(&self, reference: &Reference, scores: &[AnomalyScore]) -> Metrics {
        let mut m = reference.metrics();
        for s in scores {
            let c = s.client.0;
            m.insert(format!("qa.{c}.score"), s.score);
            m.insert(format!("qa.{c}.flagged"), f64::from(u8::from(s.flagged)));
        }
        for (c, r) in &self.reputation {
            m.insert(format!("qa.{}.reputation", c.0), *r);
        }
        m.insert(
            "qa.flagged".into(),
            scores.iter().filter(|s| s.flagged).count() as f64,
        );
        m.insert("qa.excluded".into(), self.excluded().len() as f64);
        m
    }
}

/// Reads `qa.<client>.reputation` entries back from a manifest's metrics (what
/// [`Detector::metrics`] wrote), for [`ResumeState::with_reputation`](super::ResumeState::with_reputation).
pub fn reputation_in(metrics: &Metrics) -> BTreeMap<ClientId, f64> {
    per_member_in(metrics, "reputation")
}

/// Every `qa.<client>.<name>` entry of `metrics` by client (`name` e.g. `reputation`,
/// `consistency`, `score`).
pub fn per_member_in(metrics: &Metrics, name: &str) -> BTreeMap<ClientId, f64> {
    metrics
        .iter()
        .filter_map(|(k, v)| {
            let id = k
                .strip_prefix("qa.")?
                .strip_suffix(name)?
                .strip_suffix('.')?;
            Some((ClientId(id.parse().ok()?), *v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: u64) -> Vec<ClientId> {
        (0..n).map(ClientId).collect()
    }

    #[test]
    fn spread_by_hand_with_floors() {
        // median 3, deviations 2 1 0 1 7 → MAD 1 → scale 1.4826.
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0, 10.0]);
        assert_eq!(s.median, 3.0);
        assert!((s.scale - 1.4826).abs() < 1e-12);
        // Identical values: MAD 0, the relative floor holds.
        let s = Spread::of(&[2.0, 2.0, 2.0]);
        assert_eq!((s.median, s.scale), (2.0, 0.1));
        // All zero: the absolute floor.
        assert_eq!(Spread::of(&[0.0, 0.0]).scale, 1e-12);
        // Even count: mean of the middle two.
        assert_eq!(Spread::of(&[1.0, 2.0, 4.0, 8.0]).median, 3.0);
    }

    #[test]
    fn features_by_hand() {
        let f = MemberFeatures::of(&[3.0, 4.0], &[3.0, 0.0], Some(&[0.0, 0.0]));
        assert_eq!(f.norm, 5.0);
        assert_eq!(f.distance, 4.0);
        assert!((f.direction - 0.6).abs() < 1e-12);
        assert_eq!(f.neighbour, Some(5.0));
        let z = MemberFeatures::of(&[0.0, 0.0], &[3.0, 0.0], None);
        assert_eq!(z.direction, 0.0, "a zero update has no direction");
        assert_eq!(z.neighbour, None);
    }

    /// Honest updates spread around (1, 1, 1, 1) and four kinds of attacker: each is flagged,
    /// by the feature that describes it, and no honest member is.
    #[test]
    fn each_attack_is_flagged_by_its_feature() {
        let honest: Vec<Vec<f32>> = (0..8)
            .map(|i| {
                let e = (i as f32 - 3.5) * 0.05;
                vec![1.0 + e, 1.0 - e, 1.0 + e / 2.0, 1.0]
            })
            .collect();
        let centre = vec![1.0f32; 4];
        let cases: [Vec<f32>; 3] = [
            vec![-1.0, -1.0, -1.0, -1.0], // sign flip: far and opposite
            vec![20.0, 20.0, 20.0, 20.0], // scaling
            vec![1.0, 1.0, 1.0, -1.5],    // off in one coordinate
        ];
        for bad in &cases {
            let mut deltas = honest.clone();
            deltas.push(bad.clone());
            let (reference, scores) = score_round(&ids(9), &deltas, &centre, 3.5);
            assert!(scores[8].flagged, "{bad:?}: {:?}", scores[8]);
            assert!(
                scores[..8].iter().all(|s| !s.flagged),
                "{bad:?}: an honest member was flagged: {scores:?}"
            );
            assert_eq!(
                scores[8].score,
                reference.z(&scores[8].features, scores[8].reason).unwrap()
            );
        }
        // Sign flip: the cosine of -1 is the most extreme feature after the distance; check
        // its z by hand: cosines of honest ≈ 1 (median 1 - tiny), scale floor 0.05.
        let mut deltas = honest.clone();
        deltas.push(vec![-1.0, -1.0, -1.0, -1.0]);
        let (reference, scores) = score_round(&ids(9), &deltas, &centre, 3.5);
        let zc = reference
            .z(&scores[8].features, Feature::Direction)
            .unwrap();
        let med = reference.direction.median;
        assert!((zc - (med + 1.0) / reference.direction.scale).abs() < 1e-12);
        // Two colluders sending one vector close to the centre: only the neighbour feature
        // sees them, and each names the other as its nearest.
        let mut deltas = honest.clone();
        deltas.push(vec![1.1, 0.9, 1.05, 1.0]);
        deltas.push(vec![1.1, 0.9, 1.05, 1.0]);
        let (_, scores) = score_round(&ids(10), &deltas, &centre, 3.5);
        for (i, other) in [(8, 9), (9, 8)] {
            assert!(scores[i].flagged, "{:?}", scores[i]);
            assert_eq!(scores[i].reason, Feature::Neighbour);
            assert_eq!(scores[i].nearest, Some(ClientId(other)));
            assert_eq!(scores[i].features.neighbour, Some(0.0));
        }
    }

    #[test]
    fn the_threshold_is_strict_and_ties_go_to_the_first_feature() {
        let r = Reference {
            distance: Spread {
                median: 0.0,
                scale: 1.0,
            },
            norm: Spread {
                median: 0.0,
                scale: 1.0,
            },
            direction: Spread {
                median: 1.0,
                scale: 1.0,
            },
            neighbour: None,
        };
        let f = MemberFeatures {
            distance: 2.0,
            norm: 2.0,
            direction: 1.0,
            neighbour: None,
        };
        assert_eq!(r.score(&f), (2.0, Feature::Distance));
        let (_, scores) = score_round(&ids(1), &[vec![1.0]], &[1.0], 3.5);
        assert_eq!(scores[0].features.neighbour, None, "alone in its round");
        assert!(!scores[0].flagged);
    }

    #[test]
    fn reputation_decays_excludes_and_round_trips() {
        let config = DetectionConfig {
            exclude_below: 0.5,
            ..DetectionConfig::default()
        };
        assert!(
            Detector::new(DetectionConfig::default())
                .excluded()
                .is_empty()
        );
        let mut d = Detector::new(config);
        let centre = vec![1.0f32, 1.0];
        let mut deltas: Vec<Vec<f32>> = (0..6)
            .map(|i| vec![1.0 + i as f32 * 0.01, 1.0 - i as f32 * 0.01])
            .collect();
        deltas.push(vec![50.0, -50.0]);
        d.observe(&ids(7), &deltas, &centre);
        assert!((d.reputation_of(ClientId(6)) - 0.7).abs() < 1e-12);
        assert_eq!(d.reputation_of(ClientId(0)), 1.0);
        assert!(d.excluded().is_empty(), "one flag does not exclude");
        let (reference, scores) = d.observe(&ids(7), &deltas, &centre);
        assert!((d.reputation_of(ClientId(6)) - 0.49).abs() < 1e-12);
        assert_eq!(d.excluded(), BTreeSet::from([ClientId(6)]));
        assert_eq!(d.admit(&ids(7)), ids(6));
        let m = d.metrics(&reference, &scores);
        assert_eq!(m["qa.flagged"], 1.0);
        assert_eq!(m["qa.6.flagged"], 1.0);
        assert_eq!(m["qa.excluded"], 1.0);
        let restored = reputation_in(&m);
        assert_eq!(&restored, d.reputation());
        let mut again = Detector::new(config);
        again.restore(&restored);
        assert_eq!(again.excluded(), BTreeSet::from([ClientId(6)]));
        // Hostile values in a checkpoint are clamped, never trusted as they are.
        again.restore(&BTreeMap::from([
            (ClientId(1), f64::NAN),
            (ClientId(2), 7.0),
            (ClientId(3), -1.0),
        ]));
        assert_eq!(again.reputation_of(ClientId(1)), 0.0);
        assert_eq!(again.reputation_of(ClientId(2)), 1.0);
        assert_eq!(again.reputation_of(ClientId(3)), 0.0);
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        assert!(DetectionConfig::default().validate().is_ok());
        let bad = |f: fn(&mut DetectionConfig)| {
            let mut c = DetectionConfig::default();
            f(&mut c);
            c.validate().unwrap_err().to_string()
        };
        assert!(bad(|c| c.threshold = 0.0).contains("threshold"));
        assert!(bad(|c| c.threshold = f64::NAN).contains("threshold"));
        assert!(bad(|c| c.reputation_rate = 0.0).contains("reputation_rate"));
        assert!(bad(|c| c.reputation_rate = 1.5).contains("reputation_rate"));
        assert!(bad(|c| c.exclude_below = 1.0).contains("exclude_below"));
        assert!(bad(|c| c.exclude_below = -0.1).contains("exclude_below"));
        let c: DetectionConfig = toml::from_str("threshold = 4.0").unwrap();
        assert_eq!(c.threshold, 4.0);
        assert_eq!(c.exclude_below, 0.0, "exclusion is opt-in");
        assert!(toml::from_str::<DetectionConfig>("treshold = 4.0").is_err());
    }
}
