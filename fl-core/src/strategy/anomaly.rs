//! Per-member anomaly scores of a round under a robust rule: each member's update norm, its
//! distance to the robust centre (the rule's aggregate) and its cosine similarity with it.
//! They are reported as round metrics (`qa.<client>.norm`, `qa.<client>.distance`,
//! `qa.<client>.cosine`, plus the round's median norm and distance), the raw material of a
//! later flag and reputation; no threshold is applied here.

use crate::round::{ClientId, Metrics};

use super::detection::{MemberFeatures, median};

/// One member's scores in one round (its update is the difference from the global model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MemberScore {
    /// The member.
    pub client: ClientId,
    /// `‖δ‖`.
    pub norm: f64,
    /// `‖δ - c‖` to the robust centre `c`.
    pub distance: f64,
    /// `cos(δ, c)`; 0 when either is zero.
    pub cosine: f64,
}

/// The scores of `deltas` (member `clients[i]` sent `deltas[i]`) against `centre`.
pub fn score_members(
    clients: &[ClientId],
    deltas: &[Vec<f32>],
    centre: &[f32],
) -> Vec<MemberScore> {
    clients
        .iter()
        .zip(deltas)
        .map(|(&client, d)| {
            let f = MemberFeatures::of(d, centre, None);
            MemberScore {
                client,
                norm: f.norm,
                distance: f.distance,
                cosine: f.direction,
            }
        })
        .collect()
}

/// `scores` as round metrics: `qa.<client>.{norm,distance,cosine}` and
/// `qa.median_norm`, `qa.median_distance`.
pub fn score_metrics(scores: &[MemberScore]) -> Metrics {
    let mut m = Metrics::new();
    for s in scores {
        let c = s.client.0;
        m.insert(format!("qa.{c}.norm"), s.norm);
        m.insert(format!("qa.{c}.distance"), s.distance);
        m.insert(format!("qa.{c}.cosine"), s.cosine);
    }
    m.insert(
        "qa.median_norm".into(),
        median(scores.iter().map(|s| s.norm).collect()),
    );
    m.insert(
        "qa.median_distance".into(),
        median(scores.iter().map(|s| s.distance).collect()),
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_by_hand() {
        let clients = [ClientId(3), ClientId(5), ClientId(8)];
        let deltas = vec![vec![3.0, 4.0], vec![-3.0, -4.0], vec![0.0, 0.0]];
        let s = score_members(&clients, &deltas, &[3.0, 0.0]);
        assert_eq!(s[0].norm, 5.0);
        assert_eq!(s[0].distance, 4.0);
        assert!((s[0].cosine - 0.6).abs() < 1e-12);
        assert!((s[1].cosine + 0.6).abs() < 1e-12);
        assert_eq!(s[2].cosine, 0.0, "a zero update has no direction");
        let m = score_metrics(&s);
        assert_eq!(m["qa.5.norm"], 5.0);
        assert_eq!(m["qa.8.distance"], 3.0);
        assert_eq!(m["qa.median_norm"], 5.0);
        assert_eq!(m["qa.median_distance"], 4.0);
    }
}
