//! Seeded ways to split one dataset among simulated clients.
//!
//! Each partitioner returns one list of example indices per client: every index in `0..n`
//! appears in exactly one list, each list is sorted and non-empty, and the same arguments and
//! seed always give the same partition (randomness comes from `ChaCha8Rng::seed_from_u64`).
//! [`Dataset::split_by`](crate::data::Dataset::split_by) turns the lists into client datasets.
//!
//! - [`iid`]: a uniform random split into near-equal parts.
//! - [`dirichlet`]: label skew controlled by a concentration `alpha` (Hsu et al., 2019): small
//!   `alpha` gives each client few classes, large `alpha` approaches the IID split.
//! - [`shards`]: the pathological non-IID split of McMahan et al. (2017): sort by label, cut
//!   into equal shards, give each client a few shards.
//! - [`classes_per_client`]: "#C = k" of NIID-Bench (Li et al. 2022): each client holds
//!   exactly `k` labels, and each label's examples are shared evenly among its holders.
//!
//! - [`by_field`]: a natural split by a field of each example (its community, author, ...):
//!   each client holds exactly the examples of one value.
//!
//! [`label_skew`] measures how far a partition is from IID.

use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::multi::{Dirichlet, MultiDistribution};

/// Indices of the examples each client holds.
pub type Partition = Vec<Vec<usize>>;

/// How many times [`dirichlet`] redraws all class proportions before it repairs empty clients.
pub const DIRICHLET_REDRAWS: usize = 10;

/// Splits `0..n` uniformly at random into `clients` parts whose sizes differ by at most one.
pub fn iid(n: usize, clients: usize, seed: u64) -> Result<Partition, PartitionError> {
    check_counts(n, clients)?;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let (base, extra) = (n / clients, n % clients);
    let mut rest = &order[..];
    let mut parts = Vec::with_capacity(clients);
    for c in 0..clients {
        let (part, tail) = rest.split_at(base + usize::from(c < extra));
        parts.push(sorted(part.to_vec()));
        rest = tail;
    }
    Ok(parts)
}

/// Label-skewed split: for each class, client shares are drawn from a symmetric
/// Dirichlet(`alpha`) and the class's shuffled examples are cut at the cumulative shares.
///
/// Every client gets at least one example, by this rule: if some client is empty, all class
/// shares are drawn again, up to [`DIRICHLET_REDRAWS`] times in all; if a client is still
/// empty after that, each empty client in turn takes one random example from the currently
/// largest client. `labels` must all be below `num_classes`, and there must be at least as
/// many examples as clients.
pub fn dirichlet(
    labels: &[u8],
    num_classes: usize,
    clients: usize,
    alpha: f64,
    seed: u64,
) -> Result<Partition, PartitionError> {
    check_counts(labels.len(), clients)?;
    check_labels(labels, num_classes)?;
    if !(alpha.is_finite() && alpha > 0.0) {
        return Err(PartitionError::InvalidAlpha(alpha));
    }
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[usize::from(l)].push(i);
    }
    if clients == 1 {
        return Ok(vec![(0..labels.len()).collect()]);
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let shares =
        Dirichlet::new(&vec![alpha; clients]).map_err(|_| PartitionError::InvalidAlpha(alpha))?;
    let mut parts = vec![Vec::new(); clients];
    let mut proportions = vec![0.0; clients];
    for _ in 0..DIRICHLET_REDRAWS {
        parts.iter_mut().for_each(Vec::clear);
        for members in &by_class {
            let mut members = members.clone();
            members.shuffle(&mut rng);
            shares.sample_to_slice(&mut rng, &mut proportions);
            cut_by_shares(&members, &mut proportions, &mut parts, &mut rng);
        }
        if parts.iter().all(|p| !p.is_empty()) {
            break;
        }
    }
    // Repair: empty clients take one example each from the largest.
    while let Some(empty) = parts.iter().position(Vec::is_empty) {
        let largest = (0..clients)
            .max_by_key(|&c| (parts[c].len(), std::cmp::Reverse(c)))
            .expect("at least one client");
        let pick = rng.random_range(0..parts[largest].len());
        let moved = parts[largest].swap_remove(pick);
        parts[empty].push(moved);
    }
    Ok(parts.into_iter().map(sorted).collect())
}

/// Gives `members` to clients in order, client `c` taking the examples between the cumulative
/// shares before and after it. Non-finite shares count as zero; if none is positive the whole
/// class goes to one random client.
fn cut_by_shares(
    members: &[usize],
    shares: &mut [f64],
    parts: &mut [Vec<usize>],
    rng: &mut ChaCha8Rng,
) {
    shares
        .iter_mut()
        .filter(|s| !s.is_finite() || **s < 0.0)
        .for_each(|s| *s = 0.0);
    let total: f64 = shares.iter().sum();
    if total <= 0.0 {
        let c = rng.random_range(0..parts.len());
        parts[c].extend_from_slice(members);
        return;
    }
    let n = members.len() as f64;
    let mut cumulative = 0.0;
    let mut start = 0;
    for (c, share) in shares.iter().enumerate() {
        cumulative += share / total;
        let end = if c + 1 == shares.len() {
            members.len()
        } else {
            ((cumulative * n).round() as usize).clamp(start, members.len())
        };
        parts[c].extend_from_slice(&members[start..end]);
        start = end;
    }
}

/// McMahan et al.'s pathological non-IID split: examples sorted by label (ties by index) are cut
/// into `clients * shards_per_client` contiguous shards of near-equal size, which are dealt to
/// the clients in a seeded random order, `shards_per_client` each.
pub fn shards(
    labels: &[u8],
    clients: usize,
    shards_per_client: usize,
    seed: u64,
) -> Result<Partition, PartitionError> {
    check_counts(labels.len(), clients)?;
    if shards_per_client == 0 {
        return Err(PartitionError::NoShards);
    }
    let num_shards = clients
        .checked_mul(shards_per_client)
        .filter(|&s| s <= labels.len())
        .ok_or(PartitionError::TooFewSamples {
            samples: labels.len(),
            needed: clients.saturating_mul(shards_per_client),
        })?;
    let mut order: Vec<usize> = (0..labels.len()).collect();
    order.sort_by_key(|&i| labels[i]);
    let (base, extra) = (labels.len() / num_shards, labels.len() % num_shards);
    let mut bounds = Vec::with_capacity(num_shards + 1);
    bounds.push(0);
    for s in 0..num_shards {
        bounds.push(bounds[s] + base + usize::from(s < extra));
    }
    let mut deck: Vec<usize> = (0..num_shards).collect();
    deck.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    Ok(deck
        .chunks(shards_per_client)
        .map(|hand| {
            let part = hand
                .iter()
                .flat_map(|&s| order[bounds[s]..bounds[s + 1]].iter().copied())
                .collect();
            sorted(part)
        })
        .collect())
}

/// Label-quantity skew ("#C = k", Li, Diao, Chen and He 2022, "Federated Learning on Non-IID
/// Data Silos: An Experimental Study"): each client holds exactly `k` distinct labels, and
/// each label's examples are shuffled and cut into near-equal parts, one per client holding it.
///
/// Labels are dealt client by client: each takes the `k` labels held by the fewest clients so
/// far, ties broken by a seeded shuffle, so every label present is held (when
/// `clients · k ≥` labels present) and the numbers of holders of two labels differ by at most
/// one. Labels without examples are never dealt. Refused: `k` of 0 or above the labels present,
/// too few clients to hold every label, a label with fewer examples than holders, labels not
/// below `num_classes`.
pub fn classes_per_client(
    labels: &[u8],
    num_classes: usize,
    clients: usize,
    k: usize,
    seed: u64,
) -> Result<Partition, PartitionError> {
    check_counts(labels.len(), clients)?;
    check_labels(labels, num_classes)?;
    let mut by_class = vec![Vec::new(); num_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[usize::from(l)].push(i);
    }
    let present: Vec<usize> = (0..num_classes)
        .filter(|&c| !by_class[c].is_empty())
        .collect();
    if k == 0 || k > present.len() {
        return Err(PartitionError::InvalidClassesPerClient {
            per_client: k,
            classes: present.len(),
        });
    }
    if clients
        .checked_mul(k)
        .is_none_or(|slots| slots < present.len())
    {
        return Err(PartitionError::UncoveredClasses {
            classes: present.len(),
            clients,
            per_client: k,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    let mut order = present.clone();
    for client in 0..clients {
        order.shuffle(&mut rng);
        order.sort_by_key(|&c| holders[c].len()); // stable: the shuffle breaks ties
        for &c in &order[..k] {
            holders[c].push(client);
        }
    }
    let mut parts = vec![Vec::new(); clients];
    for &c in &present {
        let (mut members, who) = (std::mem::take(&mut by_class[c]), &holders[c]);
        if members.len() < who.len() {
            return Err(PartitionError::ClassTooSmall {
                label: c as u8,
                examples: members.len(),
                holders: who.len(),
            });
        }
        members.shuffle(&mut rng);
        let (base, extra) = (members.len() / who.len(), members.len() % who.len());
        let mut rest = &members[..];
        for (j, &client) in who.iter().enumerate() {
            let (mine, tail) = rest.split_at(base + usize::from(j < extra));
            parts[client].extend_from_slice(mine);
            rest = tail;
        }
    }
    Ok(parts.into_iter().map(sorted).collect())
}

/// The natural split by a field: one client per distinct value of `keys` (in sorted order),
/// holding exactly the indices whose key is that value. Returns the values and the partition;
/// empty `keys` give no clients.
pub fn by_field<K: Ord + Clone>(keys: &[K]) -> (Vec<K>, Partition) {
    let mut groups: std::collections::BTreeMap<&K, Vec<usize>> = Default::default();
    for (i, k) in keys.iter().enumerate() {
        groups.entry(k).or_default().push(i);
    }
    groups.into_iter().map(|(k, v)| (k.clone(), v)).unzip()
}

/// Mean over clients of the total-variation distance between the client's label distribution
/// and the distribution over all assigned examples: 0 for a perfectly IID split, close to 1
/// when every client holds a single class of many. Empty clients are skipped; labels not below
/// `num_classes` and indices past `labels` are ignored.
pub fn label_skew(labels: &[u8], num_classes: usize, partition: &[Vec<usize>]) -> f64 {
    let histogram = |indices: &mut dyn Iterator<Item = &usize>| {
        let mut h = vec![0.0f64; num_classes];
        let mut n = 0.0f64;
        for &i in indices {
            if let Some(&l) = labels.get(i)
                && usize::from(l) < num_classes
            {
                h[usize::from(l)] += 1.0;
                n += 1.0;
            }
        }
        (h, n)
    };
    let (global, total) = histogram(&mut partition.iter().flatten());
    let mut sum = 0.0;
    let mut counted = 0;
    for part in partition {
        let (local, n) = histogram(&mut part.iter());
        if n == 0.0 {
            continue;
        }
        let tv: f64 = local
            .iter()
            .zip(&global)
            .map(|(l, g)| (l / n - g / total).abs())
            .sum();
        sum += tv / 2.0;
        counted += 1;
    }
    if counted == 0 {
        0.0
    } else {
        sum / counted as f64
    }
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

fn check_counts(samples: usize, clients: usize) -> Result<(), PartitionError> {
    if clients == 0 {
        return Err(PartitionError::NoClients);
    }
    if samples < clients {
        return Err(PartitionError::TooFewSamples {
            samples,
            needed: clients,
        });
    }
    Ok(())
}

fn check_labels(labels: &[u8], num_classes: usize) -> Result<(), PartitionError> {
    match labels.iter().position(|&l| usize::from(l) >= num_classes) {
        Some(index) => Err(PartitionError::LabelOutOfRange {
            index,
            label: labels[index],
            num_classes,
        }),
        None => Ok(()),
    }
}

/// Why a partition could not be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// Zero clients were asked for.
    #[error("cannot partition among zero clients")]
    NoClients,
    /// There are fewer examples than clients (or shards) to give one to each.
    #[error("{samples} examples cannot give each of {needed} clients or shards at least one")]
    TooFewSamples {
        /// Examples available.
        samples: usize,
        /// Clients or shards that each need one.
        needed: usize,
    },
    /// The Dirichlet concentration is not a positive finite number.
    #[error("Dirichlet alpha must be positive and finite, got {0}")]
    InvalidAlpha(f64),
    /// Zero shards per client were asked for.
    #[error("shards_per_client must be at least 1")]
    NoShards,
    /// The number of classes per client is 0 or more than the labels the data holds.
    #[error(
        "classes_per_member = {per_client} must be between 1 and the {classes} labels the data \
         holds"
    )]
    InvalidClassesPerClient {
        /// Classes per client asked for.
        per_client: usize,
        /// Distinct labels with at least one example.
        classes: usize,
    },
    /// Too few clients to hold every label with the given number of classes each.
    #[error(
        "{clients} clients with {per_client} classes each cannot hold all {classes} labels: \
         raise classes_per_member to at least {classes}/{clients} or add clients"
    )]
    UncoveredClasses {
        /// Distinct labels with at least one example.
        classes: usize,
        /// Clients.
        clients: usize,
        /// Classes per client asked for.
        per_client: usize,
    },
    /// A label has fewer examples than clients holding it, so one would get none of it.
    #[error(
        "label {label} has {examples} examples for {holders} clients that hold it: lower \
         classes_per_member or use fewer clients"
    )]
    ClassTooSmall {
        /// The label.
        label: u8,
        /// Its examples.
        examples: usize,
        /// Clients dealt it.
        holders: usize,
    },
    /// A label is not below the number of classes.
    #[error("example {index} has label {label}, but there are only {num_classes} classes")]
    LabelOutOfRange {
        /// Index of the example.
        index: usize,
        /// Its label.
        label: u8,
        /// Number of classes.
        num_classes: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Labels 0..10, unbalanced: class `c` has `30 + 7 * c` examples, interleaved.
    fn labels() -> Vec<u8> {
        let mut v: Vec<u8> = (0..10u8)
            .flat_map(|c| std::iter::repeat_n(c, 30 + 7 * usize::from(c)))
            .collect();
        v.shuffle(&mut ChaCha8Rng::seed_from_u64(99));
        v
    }

    fn assert_exact_cover(parts: &Partition, n: usize, clients: usize) {
        assert_eq!(parts.len(), clients);
        assert!(parts.iter().all(|p| !p.is_empty()), "an empty client");
        assert!(parts.iter().all(|p| p.is_sorted()));
        let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..n).collect::<Vec<_>>());
    }

    #[test]
    fn every_example_goes_to_exactly_one_client() {
        let labels = labels();
        let n = labels.len();
        for seed in [0, 1, 42] {
            for clients in [1, 2, 7, 20, 100] {
                assert_exact_cover(&iid(n, clients, seed).unwrap(), n, clients);
                for alpha in [0.01, 0.1, 0.5, 1.0, 100.0] {
                    let p = dirichlet(&labels, 10, clients, alpha, seed).unwrap();
                    assert_exact_cover(&p, n, clients);
                }
                for spc in [1, 2, 3] {
                    let p = shards(&labels, clients, spc, seed).unwrap();
                    assert_exact_cover(&p, n, clients);
                }
            }
        }
        // As many clients as examples: one each.
        let tiny = [0u8, 1, 1, 0, 2];
        assert_exact_cover(&dirichlet(&tiny, 3, 5, 0.05, 3).unwrap(), 5, 5);
        assert_exact_cover(&shards(&tiny, 5, 1, 3).unwrap(), 5, 5);
        assert_exact_cover(&iid(5, 5, 3).unwrap(), 5, 5);
    }

    #[test]
    fn same_seed_same_partition() {
        let labels = labels();
        let n = labels.len();
        assert_eq!(iid(n, 9, 5).unwrap(), iid(n, 9, 5).unwrap());
        assert_ne!(iid(n, 9, 5).unwrap(), iid(n, 9, 6).unwrap());
        let d = |seed| dirichlet(&labels, 10, 9, 0.5, seed).unwrap();
        assert_eq!(d(5), d(5));
        assert_ne!(d(5), d(6));
        let s = |seed| shards(&labels, 9, 2, seed).unwrap();
        assert_eq!(s(5), s(5));
        assert_ne!(s(5), s(6));
    }

    /// The distinct labels of each part.
    fn labels_held(labels: &[u8], parts: &Partition) -> Vec<Vec<u8>> {
        parts
            .iter()
            .map(|p| {
                let mut held: Vec<u8> = p.iter().map(|&i| labels[i]).collect();
                held.sort_unstable();
                held.dedup();
                held
            })
            .collect()
    }

    #[test]
    fn classes_per_client_gives_each_client_exactly_k_labels() {
        let labels = labels();
        let n = labels.len();
        for seed in [0, 1, 42] {
            for (clients, k) in [(1, 10), (5, 2), (10, 1), (20, 2), (7, 3), (50, 2), (3, 10)] {
                let p = classes_per_client(&labels, 10, clients, k, seed).unwrap();
                assert_exact_cover(&p, n, clients);
                let held = labels_held(&labels, &p);
                assert!(
                    held.iter().all(|h| h.len() == k),
                    "{clients} x {k}: {held:?}"
                );
                // Every label is dealt to ⌊ck/10⌋ or ⌈ck/10⌉ clients.
                let mut holders = [0usize; 10];
                held.iter()
                    .flatten()
                    .for_each(|&l| holders[usize::from(l)] += 1);
                let (lo, hi) = (clients * k / 10, (clients * k).div_ceil(10));
                assert!(holders.iter().all(|h| (lo..=hi).contains(h)), "{holders:?}");
                // A label's examples are shared evenly by its holders.
                for label in 0..10u8 {
                    let sizes: Vec<usize> = p
                        .iter()
                        .map(|part| part.iter().filter(|&&i| labels[i] == label).count())
                        .filter(|&s| s > 0)
                        .collect();
                    let (min, max) = (sizes.iter().min(), sizes.iter().max());
                    assert!(max.unwrap() - min.unwrap() <= 1, "{label}: {sizes:?}");
                }
            }
        }
        // Labels without examples are never dealt.
        let sparse = [0u8, 3, 7, 3, 0, 7, 7, 0, 3, 3];
        let p = classes_per_client(&sparse, 10, 3, 2, 5).unwrap();
        assert_exact_cover(&p, sparse.len(), 3);
        let held = labels_held(&sparse, &p);
        assert!(
            held.iter()
                .all(|h| h.len() == 2 && h.iter().all(|l| [0, 3, 7].contains(l)))
        );
        let one = label_skew(
            &labels,
            10,
            &classes_per_client(&labels, 10, 20, 1, 0).unwrap(),
        );
        assert!(one > 0.85, "one class each is almost fully skewed: {one}");
    }

    #[test]
    fn classes_per_client_is_seeded() {
        let labels = labels();
        let p = |seed| classes_per_client(&labels, 10, 20, 2, seed).unwrap();
        assert_eq!(p(5), p(5));
        assert_ne!(p(5), p(6));
        assert_ne!(
            labels_held(&labels, &p(5)),
            labels_held(&labels, &p(6)),
            "the labels dealt, not only the examples, depend on the seed"
        );
    }

    #[test]
    fn bad_classes_per_client_are_refused() {
        let labels = labels();
        for k in [0, 11, usize::MAX] {
            assert_eq!(
                classes_per_client(&labels, 10, 20, k, 0),
                Err(PartitionError::InvalidClassesPerClient {
                    per_client: k,
                    classes: 10
                })
            );
        }
        let e = classes_per_client(&labels, 10, 4, 2, 0).unwrap_err();
        assert_eq!(
            e,
            PartitionError::UncoveredClasses {
                classes: 10,
                clients: 4,
                per_client: 2
            }
        );
        assert!(e.to_string().contains("classes_per_member"), "{e}");
        assert!(matches!(
            classes_per_client(&labels, 10, 2, 6, 0),
            Ok(ref p) if p.len() == 2
        ));
        // Six clients with one label each: each of the two labels goes to three clients, but
        // label 2 has only two examples.
        let tiny = [2u8, 5, 2, 5, 5, 5];
        assert!(matches!(
            classes_per_client(&tiny, 6, 6, 1, 0),
            Err(PartitionError::ClassTooSmall {
                label: 2,
                examples: 2,
                holders: 3
            })
        ));
        assert_eq!(
            classes_per_client(&labels, 10, 0, 2, 0),
            Err(PartitionError::NoClients)
        );
        assert!(matches!(
            classes_per_client(&labels, 5, 3, 2, 0),
            Err(PartitionError::LabelOutOfRange { num_classes: 5, .. })
        ));
    }

    #[test]
    fn by_field_groups_exactly() {
        let keys = ["b", "a", "b", "c", "a"];
        let (names, parts) = by_field(&keys);
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(parts, vec![vec![1, 4], vec![0, 2], vec![3]]);
        assert_exact_cover(&parts, 5, 3);
        let (names, parts) = by_field::<u8>(&[]);
        assert!(names.is_empty() && parts.is_empty());
    }

    #[test]
    fn iid_sizes_are_balanced() {
        let p = iid(103, 10, 0).unwrap();
        assert!(p.iter().all(|c| c.len() == 10 || c.len() == 11));
    }

    #[test]
    fn skew_grows_as_alpha_falls() {
        let labels = labels();
        let skew = |alpha| {
            let mean: f64 = (0..5)
                .map(|seed| {
                    let p = dirichlet(&labels, 10, 20, alpha, seed).unwrap();
                    label_skew(&labels, 10, &p)
                })
                .sum::<f64>();
            mean / 5.0
        };
        let (high, mid, low) = (skew(100.0), skew(1.0), skew(0.1));
        assert!(high < mid && mid < low, "{high} {mid} {low}");
        assert!(high < 0.2 && low > 0.6, "{high} {mid} {low}");
        let iid_skew = label_skew(&labels, 10, &iid(labels.len(), 20, 0).unwrap());
        let shard_skew = label_skew(&labels, 10, &shards(&labels, 20, 2, 0).unwrap());
        assert!(
            iid_skew < 0.25 && shard_skew > 0.7,
            "{iid_skew} {shard_skew}"
        );
    }

    #[test]
    fn bad_arguments_are_errors() {
        let labels = labels();
        assert_eq!(iid(10, 0, 0), Err(PartitionError::NoClients));
        assert!(matches!(
            iid(3, 4, 0),
            Err(PartitionError::TooFewSamples {
                samples: 3,
                needed: 4
            })
        ));
        for alpha in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-320] {
            assert!(
                matches!(
                    dirichlet(&labels, 10, 3, alpha, 0),
                    Err(PartitionError::InvalidAlpha(_))
                ),
                "{alpha}"
            );
        }
        assert!(matches!(
            dirichlet(&labels, 5, 3, 1.0, 0),
            Err(PartitionError::LabelOutOfRange { num_classes: 5, .. })
        ));
        assert_eq!(shards(&labels, 3, 0, 0), Err(PartitionError::NoShards));
        assert!(matches!(
            shards(&[0, 1, 2], 2, 2, 0),
            Err(PartitionError::TooFewSamples { needed: 4, .. })
        ));
        assert!(matches!(
            shards(&[0, 1, 2], usize::MAX, 2, 0),
            Err(PartitionError::TooFewSamples { .. })
        ));
    }
}
