//! Pre-aggregators, run in front of any robust rule to cut the spread of honest updates on
//! non-IID data:
//!
//! - **bucketing** (Karimireddy, He and Jaggi 2022, "Byzantine-Robust Learning on
//!   Heterogeneous Datasets via Bucketing"): shuffle the updates (seeded from the round seed, so
//!   reproducible) and average them in buckets of `s`; the rule sees `⌈n/s⌉` bucket means.
//! - **nearest-neighbour mixing**, NNM (Allouah et al. 2023, "Fixing by Mixing"): each update
//!   is replaced by the mean of its `n - f` nearest updates (itself included).
//!
//! ```toml
//! [strategy]
//! kind = "trimmed_mean"
//! [strategy.nnm]
//! byzantine = 4
//! [strategy.bucketing]
//! size = 2
//! ```
//! With both, NNM runs first.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::StrategyError;
use super::robust::{mean_of, pairwise_sq_dists};

/// `[strategy.bucketing]`: the bucket size `s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketingConfig {
    /// `s >= 1`: updates averaged per bucket.
    pub size: usize,
}

/// `[strategy.nnm]`: how many members may be Byzantine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NnmConfig {
    /// `f`: each update is mixed with its `n - f` nearest.
    pub byzantine: usize,
}

/// A step that maps the round's updates to the rule's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreAggregator {
    /// s-bucketing.
    Bucketing(BucketingConfig),
    /// Nearest-neighbour mixing.
    Nnm(NnmConfig),
}

impl PreAggregator {
    /// The name used in the federation file.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Bucketing(_) => "bucketing",
            Self::Nnm(_) => "nnm",
        }
    }

    /// Refuses `size = 0`.
    pub fn check(&self) -> Result<(), StrategyError> {
        match self {
            Self::Bucketing(b) if b.size == 0 => Err(StrategyError::Settings(
                "[strategy.bucketing] size must be at least 1".into(),
            )),
            _ => Ok(()),
        }
    }

    /// How many inputs the step leaves of `n`.
    pub fn outputs(&self, n: usize) -> usize {
        match self {
            Self::Bucketing(b) => n.div_ceil(b.size.max(1)),
            Self::Nnm(_) => n,
        }
    }

    /// Applies the step to `rows` (bucketing shuffles with `seed`).
    pub fn apply(&self, rows: Vec<Vec<f32>>, seed: u64) -> Result<Vec<Vec<f32>>, StrategyError> {
        self.check()?;
        let Some(first) = rows.first() else {
            return Err(StrategyError::NoResults);
        };
        let dim = first.len();
        match self {
            Self::Bucketing(b) => {
                let mut order: Vec<usize> = (0..rows.len()).collect();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ 0xb0c7_e71e));
                Ok(order
                    .chunks(b.size)
                    .map(|bucket| mean_of(dim, bucket.iter().map(|&i| rows[i].as_slice())))
                    .collect())
            }
            Self::Nnm(c) => {
                let n = rows.len();
                if c.byzantine >= n {
                    return Err(StrategyError::TooFewMembers {
                        rule: "nnm",
                        members: n,
                        needed: c.byzantine + 1,
                    });
                }
                let dists = pairwise_sq_dists(&rows);
                Ok((0..n)
                    .map(|i| {
                        let mut near: Vec<usize> = (0..n).collect();
                        near.sort_by(|&a, &b| dists[i][a].total_cmp(&dists[i][b]).then(a.cmp(&b)));
                        near.truncate(n - c.byzantine);
                        mean_of(dim, near.iter().map(|&j| rows[j].as_slice()))
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucketing_averages_a_seeded_shuffle_in_buckets_of_s() {
        let rows: Vec<Vec<f32>> = (0..5).map(|i| vec![i as f32]).collect();
        let b = PreAggregator::Bucketing(BucketingConfig { size: 2 });
        let out = b.apply(rows.clone(), 7).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(b.outputs(5), 3);
        // Every update lands in exactly one bucket: the sizes-weighted sum is preserved.
        let total: f32 = out[0][0] * 2.0 + out[1][0] * 2.0 + out[2][0];
        assert_eq!(total, 10.0);
        assert_eq!(
            out,
            b.apply(rows.clone(), 7).unwrap(),
            "same seed, same buckets"
        );
        let other = (0..20).any(|s| b.apply(rows.clone(), s).unwrap() != out);
        assert!(other, "the seed changes the buckets");
        let one = PreAggregator::Bucketing(BucketingConfig { size: 1 });
        let mut same = one.apply(rows.clone(), 3).unwrap();
        same.sort_by(|a, b| a[0].total_cmp(&b[0]));
        assert_eq!(same, rows);
        assert!(matches!(
            PreAggregator::Bucketing(BucketingConfig { size: 0 }).apply(rows, 1),
            Err(StrategyError::Settings(_))
        ));
    }

    #[test]
    fn one_bucket_of_all_the_updates_is_their_mean_whatever_the_shuffle() {
        // The shuffle (ChaCha8 through rand's Fisher-Yates) is not followed by hand; with
        // s >= n there is one bucket, whatever its order: the mean of (1, 2), (3, -2) and
        // (5, 6) is (9/3, 6/3) = (3, 2).
        let rows = vec![vec![1.0f32, 2.0], vec![3.0, -2.0], vec![5.0, 6.0]];
        for size in [3, 4, 100] {
            let b = PreAggregator::Bucketing(BucketingConfig { size });
            assert_eq!(b.outputs(3), 1);
            for seed in [0, 1, 7, u64::MAX] {
                assert_eq!(
                    b.apply(rows.clone(), seed).unwrap(),
                    vec![vec![3.0, 2.0]],
                    "s = {size}, seed {seed}"
                );
            }
        }
    }

    #[test]
    fn buckets_of_one_keep_every_update_and_identical_updates_give_identical_buckets() {
        // s = 1: each update is its own bucket, only the order may change; compared as
        // multisets (sorted), duplicates included.
        let rows = vec![
            vec![2.0f32, -1.0],
            vec![0.5, 3.0],
            vec![2.0, -1.0],
            vec![-4.0, 0.0],
        ];
        let sorted = |mut v: Vec<Vec<f32>>| {
            v.sort_by(|a, b| a[0].total_cmp(&b[0]).then(a[1].total_cmp(&b[1])));
            v
        };
        let one = PreAggregator::Bucketing(BucketingConfig { size: 1 });
        for seed in [0, 5, 99] {
            assert_eq!(
                sorted(one.apply(rows.clone(), seed).unwrap()),
                vec![
                    vec![-4.0, 0.0],
                    vec![0.5, 3.0],
                    vec![2.0, -1.0],
                    vec![2.0, -1.0]
                ]
            );
        }
        // Five copies of (2, -1) in buckets of 2: ⌈5/2⌉ = 3 buckets, each the mean of copies.
        let same = vec![vec![2.0f32, -1.0]; 5];
        let two = PreAggregator::Bucketing(BucketingConfig { size: 2 });
        assert_eq!(two.apply(same, 11).unwrap(), vec![vec![2.0, -1.0]; 3]);
    }

    #[test]
    fn nnm_with_n_3_and_f_1_mixes_each_row_with_its_nearest_other_by_hand() {
        // n - f = 2: each row and its nearest other. Squared distances between a = (0, 0),
        // b = (1, 0), c = (0, 3): ab = 1, ac = 9, bc = 10. a and b are each other's nearest:
        // both become (0.5, 0); c's nearest is a (9 < 10): (0, 1.5).
        let nnm = PreAggregator::Nnm(NnmConfig { byzantine: 1 });
        let rows = vec![vec![0.0f32, 0.0], vec![1.0, 0.0], vec![0.0, 3.0]];
        assert_eq!(
            nnm.apply(rows, 0).unwrap(),
            vec![vec![0.5, 0.0], vec![0.5, 0.0], vec![0.0, 1.5]]
        );
        // A tie: c = (1, 1) is 2 from both a = (0, 0) and b = (2, 0) (ab = 4); it goes to the
        // lower index, a: c -> (0.5, 0.5), not (1.5, 0.5). a's and b's nearest is c:
        // a -> (0.5, 0.5), b -> (1.5, 0.5).
        let rows = vec![vec![0.0f32, 0.0], vec![2.0, 0.0], vec![1.0, 1.0]];
        assert_eq!(
            nnm.apply(rows, 0).unwrap(),
            vec![vec![0.5, 0.5], vec![1.5, 0.5], vec![0.5, 0.5]]
        );
    }

    #[test]
    fn nnm_mixes_each_update_with_its_nearest() {
        // f = 1, n = 4: each row averages its 3 nearest (itself included).
        let rows: Vec<Vec<f32>> = [0.0, 1.0, 2.0, 99.0].iter().map(|v| vec![*v]).collect();
        let nnm = PreAggregator::Nnm(NnmConfig { byzantine: 1 });
        let out = nnm.apply(rows.clone(), 0).unwrap();
        assert_eq!(out, vec![vec![1.0], vec![1.0], vec![1.0], vec![34.0]]);
        assert_eq!(
            PreAggregator::Nnm(NnmConfig { byzantine: 4 }).apply(rows, 0),
            Err(StrategyError::TooFewMembers {
                rule: "nnm",
                members: 4,
                needed: 5
            })
        );
        assert_eq!(nnm.apply(Vec::new(), 0), Err(StrategyError::NoResults));
    }
}
