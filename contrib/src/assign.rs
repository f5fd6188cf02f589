//! Which annotators label which item: a selection nobody can steer.
//!
//! Each item goes to the `k` annotators of the pool with the highest score
//! `SHA-256("daofl/contrib/assign/v1" | seed | item digest | annotator address)`
//! (rendezvous, or highest-random-weight, hashing). The seed is public randomness fixed only
//! after the pool and the items are: the hash of a block mined after registration for the
//! epoch closed. Then:
//!
//! - nobody chooses who labels what: not the coordinator (the function is public and
//!   deterministic, anyone recomputes it from chain data), not a contributor (an item's address
//!   is fixed before the seed exists), not an annotator (addresses are staked before it too);
//! - each annotator gets about `k * items / pool` items, with the spread of a binomial;
//! - adding or removing one annotator moves only the items it gains or loses: every other
//!   pair keeps its relative order.
//!
//! Grinding is the one attack left: whoever can choose among many seeds (a block producer
//! withholding blocks) biases the draw a little; a later beacon (RANDAO) can replace the
//! block hash without changing anything here.

use std::collections::{BTreeMap, BTreeSet};

use fl_core::{Address, ContentHash, ContentHasher};

/// Fewest annotators an item may have: with three, one bad annotator never decides a label.
pub const MIN_ANNOTATORS_PER_ITEM: usize = 3;

/// Domain tag of the rendezvous score.
const ASSIGN_TAG: &[u8] = b"daofl/contrib/assign/v1";

/// Public randomness of one epoch (for example the hash of the block that closed its
/// registration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AssignmentSeed(pub [u8; 32]);

/// Why an assignment could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AssignError {
    /// Fewer annotators per item than [`MIN_ANNOTATORS_PER_ITEM`] were asked for.
    #[error("{asked} annotators per item asked; at least {MIN_ANNOTATORS_PER_ITEM} are required")]
    TooFewPerItem {
        /// The number asked for.
        asked: usize,
    },
    /// The pool is smaller than the number of annotators each item needs.
    #[error("{per_item} annotators per item need a pool of at least {per_item}, it has {pool}")]
    PoolTooSmall {
        /// Annotators per item.
        per_item: usize,
        /// Annotators in the pool.
        pool: usize,
    },
    /// An address appears twice in the pool (it would count as two annotators).
    #[error("annotator {0} appears twice in the pool")]
    DuplicateAnnotator(Address),
}

/// The rendezvous score of `annotator` for `item` under `seed`.
pub fn score(seed: &AssignmentSeed, item: &ContentHash, annotator: &Address) -> [u8; 32] {
    let mut h = ContentHasher::new();
    h.update(ASSIGN_TAG);
    h.update(&seed.0);
    h.update(item.as_bytes());
    h.update(annotator.as_slice());
    *h.finish().as_bytes()
}

/// The `k` annotators of `pool` assigned to `item`, highest score first. The pool's order
/// does not matter.
pub fn annotators_for(
    seed: &AssignmentSeed,
    item: &ContentHash,
    pool: &[Address],
    k: usize,
) -> Result<Vec<Address>, AssignError> {
    check_pool(pool, k)?;
    Ok(top_k(seed, item, pool, k))
}

fn check_pool(pool: &[Address], k: usize) -> Result<(), AssignError> {
    if k < MIN_ANNOTATORS_PER_ITEM {
        return Err(AssignError::TooFewPerItem { asked: k });
    }
    if pool.len() < k {
        return Err(AssignError::PoolTooSmall {
            per_item: k,
            pool: pool.len(),
        });
    }
    let mut seen = BTreeSet::new();
    for a in pool {
        if !seen.insert(a) {
            return Err(AssignError::DuplicateAnnotator(*a));
        }
    }
    Ok(())
}

fn top_k(seed: &AssignmentSeed, item: &ContentHash, pool: &[Address], k: usize) -> Vec<Address> {
    let mut scored: Vec<([u8; 32], Address)> =
        pool.iter().map(|a| (score(seed, item, a), *a)).collect();
    // Highest score first; equal scores (a SHA-256 collision) by address.
    scored.sort_unstable_by(|x, y| y.cmp(x));
    scored.into_iter().take(k).map(|(_, a)| a).collect()
}

/// One epoch's assignment: every item with its annotators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    seed: AssignmentSeed,
    per_item: usize,
    items: BTreeMap<ContentHash, Vec<Address>>,
}

impl Assignment {
    /// Assigns each of `items` to `per_item` annotators of `pool` (duplicate items count once).
    pub fn new(
        seed: AssignmentSeed,
        items: &[ContentHash],
        pool: &[Address],
        per_item: usize,
    ) -> Result<Self, AssignError> {
        check_pool(pool, per_item)?;
        let items = items
            .iter()
            .map(|item| (*item, top_k(&seed, item, pool, per_item)))
            .collect();
        Ok(Self {
            seed,
            per_item,
            items,
        })
    }

    /// The seed it was drawn from.
    pub fn seed(&self) -> &AssignmentSeed {
        &self.seed
    }

    /// Annotators per item.
    pub fn per_item(&self) -> usize {
        self.per_item
    }

    /// The annotators of `item`, highest score first; `None` for an item not in the epoch.
    pub fn annotators(&self, item: &ContentHash) -> Option<&[Address]> {
        self.items.get(item).map(Vec::as_slice)
    }

    /// Whether `annotator` is assigned `item`.
    pub fn is_assigned(&self, item: &ContentHash, annotator: &Address) -> bool {
        self.annotators(item)
            .is_some_and(|annotators| annotators.contains(annotator))
    }

    /// The items assigned to `annotator`, in content-address order.
    pub fn items_of(&self, annotator: &Address) -> Vec<ContentHash> {
        self.items
            .iter()
            .filter(|(_, a)| a.contains(annotator))
            .map(|(item, _)| *item)
            .collect()
    }

    /// Every item and its annotators, in content-address order.
    pub fn iter(&self) -> impl Iterator<Item = (&ContentHash, &[Address])> {
        self.items.iter().map(|(item, a)| (item, a.as_slice()))
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u32) -> Address {
        let mut b = [0u8; 20];
        b[16..].copy_from_slice(&n.to_be_bytes());
        Address::from(b)
    }

    fn item(n: u32) -> ContentHash {
        ContentHash::of(&n.to_be_bytes())
    }

    fn pool(n: u32) -> Vec<Address> {
        (0..n).map(addr).collect()
    }

    #[test]
    fn each_item_gets_k_distinct_annotators_deterministically() {
        let seed = AssignmentSeed([7; 32]);
        let items: Vec<_> = (0..200).map(item).collect();
        let a = Assignment::new(seed, &items, &pool(20), 3).unwrap();
        let b = Assignment::new(seed, &items, &pool(20), 3).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.len(), 200);
        for (_, annotators) in a.iter() {
            let distinct: BTreeSet<_> = annotators.iter().collect();
            assert_eq!(distinct.len(), 3);
        }
    }

    #[test]
    fn pool_order_does_not_matter() {
        let seed = AssignmentSeed([1; 32]);
        let mut reversed = pool(12);
        reversed.reverse();
        for n in 0..50 {
            assert_eq!(
                annotators_for(&seed, &item(n), &pool(12), 4).unwrap(),
                annotators_for(&seed, &item(n), &reversed, 4).unwrap()
            );
        }
    }

    #[test]
    fn another_seed_gives_another_assignment() {
        let items: Vec<_> = (0..100).map(item).collect();
        let a = Assignment::new(AssignmentSeed([1; 32]), &items, &pool(20), 3).unwrap();
        let b = Assignment::new(AssignmentSeed([2; 32]), &items, &pool(20), 3).unwrap();
        let same = items
            .iter()
            .filter(|i| a.annotators(i) == b.annotators(i))
            .count();
        // Same three of twenty in the same order by chance: about 1 in 6,840 per item.
        assert!(same <= 2, "{same}");
    }

    #[test]
    fn load_is_balanced() {
        let items: Vec<_> = (0..3000).map(item).collect();
        let a = Assignment::new(AssignmentSeed([9; 32]), &items, &pool(15), 3).unwrap();
        // Expected 600 each, binomial sd about 20.
        for annotator in pool(15) {
            let n = a.items_of(&annotator).len();
            assert!((500..=700).contains(&n), "{annotator}: {n}");
        }
    }

    #[test]
    fn joining_annotator_moves_only_items_it_takes() {
        let seed = AssignmentSeed([3; 32]);
        let items: Vec<_> = (0..500).map(item).collect();
        let before = Assignment::new(seed, &items, &pool(10), 3).unwrap();
        let after = Assignment::new(seed, &items, &pool(11), 3).unwrap();
        let newcomer = addr(10);
        let mut moved = 0;
        for i in &items {
            let (b, a) = (before.annotators(i).unwrap(), after.annotators(i).unwrap());
            if a.contains(&newcomer) {
                moved += 1;
                // The newcomer displaced exactly the lowest-ranked of the previous three.
                let kept: Vec<_> = a.iter().filter(|x| **x != newcomer).collect();
                assert_eq!(kept, b[..2].iter().collect::<Vec<_>>());
            } else {
                assert_eq!(a, b);
            }
        }
        assert!((100..=200).contains(&moved), "{moved}"); // 3/11 of 500 ~ 136
    }

    #[test]
    fn bad_requests_are_refused() {
        let seed = AssignmentSeed([0; 32]);
        assert_eq!(
            annotators_for(&seed, &item(0), &pool(10), 2),
            Err(AssignError::TooFewPerItem { asked: 2 })
        );
        assert_eq!(
            annotators_for(&seed, &item(0), &pool(2), 3),
            Err(AssignError::PoolTooSmall {
                per_item: 3,
                pool: 2
            })
        );
        let mut dup = pool(5);
        dup.push(addr(3));
        assert_eq!(
            Assignment::new(seed, &[item(0)], &dup, 3),
            Err(AssignError::DuplicateAnnotator(addr(3)))
        );
    }

    #[test]
    fn lookups() {
        let items: Vec<_> = (0..10).map(item).collect();
        let a = Assignment::new(AssignmentSeed([5; 32]), &items, &pool(5), 3).unwrap();
        let first = a.annotators(&item(0)).unwrap()[0];
        assert!(a.is_assigned(&item(0), &first));
        assert!(!a.is_assigned(&item(99), &first));
        assert!(a.annotators(&item(99)).is_none());
        let total: usize = pool(5).iter().map(|x| a.items_of(x).len()).sum();
        assert_eq!(total, 30);
    }
}
