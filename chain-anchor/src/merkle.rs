//! Merkle trees in OpenZeppelin's convention, so that the contract's `MerkleProof` accepts them.
//!
//! The layout is that of `StandardMerkleTree` from `@openzeppelin/merkle-tree`: leaves are
//! double-hashed ABI encodings (`keccak256(keccak256(abi.encode(...)))`, which keeps a leaf from
//! ever being mistaken for an inner node), sorted by hash, stored at the end of an array of
//! `2n - 1` nodes in reverse order, and every inner node hashes its two children as a sorted pair.
//! A proof is the list of siblings from the leaf up to the root.
//!
//! Two kinds of leaves are used:
//! - a **participant**: `abi.encode(address member, bytes32 updateHash)` (the update hash is zero
//!   when the aggregator never saw the member's update, e.g. under secure aggregation);
//! - a **round** of a batch: `abi.encode(uint64 round, bytes32 paramsHash, keccak256(bytes(cid)),
//!   bytes32 participantsRoot, uint64 epsilonMicros)`.

use alloy::primitives::{Address, B256, keccak256};
use alloy::sol_types::SolValue;

use crate::Error;

/// A leaf of an OpenZeppelin standard tree: `keccak256(keccak256(encoded))`.
pub fn standard_leaf(abi_encoded: &[u8]) -> B256 {
    keccak256(keccak256(abi_encoded))
}

/// The leaf of a participant: `keccak256(keccak256(abi.encode(member, updateHash)))`.
pub fn participant_leaf(member: Address, update_hash: B256) -> B256 {
    standard_leaf(&(member, update_hash).abi_encode())
}

/// Hash of two nodes in sorted order, as `MerkleProof` computes it.
fn hash_pair(a: B256, b: B256) -> B256 {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(lo.as_slice());
    buf[32..].copy_from_slice(hi.as_slice());
    keccak256(buf)
}

/// Whether `proof` leads from `leaf` to `root` (what `MerkleProof.verify` checks on chain).
pub fn verify_proof(root: B256, leaf: B256, proof: &[B256]) -> bool {
    proof
        .iter()
        .fold(leaf, |node, sibling| hash_pair(node, *sibling))
        == root
}

/// A tree over leaf hashes, in `StandardMerkleTree` layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    /// `2n - 1` nodes: the root first, the sorted leaves last (in reverse order).
    nodes: Vec<B256>,
    /// Number of leaves.
    leaves: usize,
}

impl MerkleTree {
    /// Builds the tree over `leaves` (any order; they are sorted). No leaves gives the zero root.
    pub fn new(leaves: &[B256]) -> Self {
        let mut sorted = leaves.to_vec();
        sorted.sort();
        let n = sorted.len();
        if n == 0 {
            return Self {
                nodes: Vec::new(),
                leaves: 0,
            };
        }
        let len = 2 * n - 1;
        let mut nodes = vec![B256::ZERO; len];
        for (i, leaf) in sorted.into_iter().enumerate() {
            nodes[len - 1 - i] = leaf;
        }
        for i in (0..len - n).rev() {
            nodes[i] = hash_pair(nodes[2 * i + 1], nodes[2 * i + 2]);
        }
        Self { nodes, leaves: n }
    }

    /// The root; [`B256::ZERO`] for a tree without leaves.
    pub fn root(&self) -> B256 {
        self.nodes.first().copied().unwrap_or(B256::ZERO)
    }

    /// Number of leaves.
    pub fn len(&self) -> usize {
        self.leaves
    }

    /// Whether the tree has no leaves.
    pub fn is_empty(&self) -> bool {
        self.leaves == 0
    }

    /// The proof of `leaf`, or `None` if it is not a leaf of this tree.
    pub fn proof(&self, leaf: B256) -> Option<Vec<B256>> {
        let first_leaf = self.nodes.len() - self.leaves;
        let mut index = (first_leaf..self.nodes.len()).find(|&i| self.nodes[i] == leaf)?;
        let mut proof = Vec::new();
        while index > 0 {
            let sibling = if index % 2 == 1 { index + 1 } else { index - 1 };
            proof.push(self.nodes[sibling]);
            index = (index - 1) / 2;
        }
        Some(proof)
    }
}

/// The participants of one round as a Merkle tree of `(member address, update hash)` leaves.
///
/// Its root is what the registry records as `participantsRoot`; a member proves it took part
/// with [`ParticipantsTree::proof`], checked off chain with [`ParticipantsTree::verify`] or on
/// chain with the registry's `verifyParticipant`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantsTree {
    members: Vec<(Address, B256)>,
    tree: MerkleTree,
}

impl ParticipantsTree {
    /// The tree of `members`, each with the hash of its update (zero when unknown).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when an address appears twice.
    pub fn new(members: &[(Address, [u8; 32])]) -> Result<Self, Error> {
        let mut members: Vec<(Address, B256)> =
            members.iter().map(|(a, h)| (*a, B256::from(*h))).collect();
        members.sort_by_key(|(a, _)| *a);
        if let Some(w) = members.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(Error::InvalidInput(format!(
                "participant {} is listed twice",
                w[0].0
            )));
        }
        let leaves: Vec<B256> = members
            .iter()
            .map(|(a, h)| participant_leaf(*a, *h))
            .collect();
        Ok(Self {
            tree: MerkleTree::new(&leaves),
            members,
        })
    }

    /// The root anchored as `participantsRoot` ([`B256::ZERO`] for a round without participants).
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// The members with their update hashes, sorted by address.
    pub fn members(&self) -> &[(Address, B256)] {
        &self.members
    }

    /// The leaf of `member`, if it took part.
    pub fn leaf(&self, member: Address) -> Option<B256> {
        let i = self
            .members
            .binary_search_by_key(&member, |(a, _)| *a)
            .ok()?;
        let (a, h) = self.members[i];
        Some(participant_leaf(a, h))
    }

    /// The inclusion proof of `member`, or `None` if it did not take part.
    pub fn proof(&self, member: Address) -> Option<Vec<B256>> {
        self.tree.proof(self.leaf(member)?)
    }

    /// Whether `proof` shows `leaf` (see [`participant_leaf`]) under `root`.
    pub fn verify(root: B256, leaf: B256, proof: &[B256]) -> bool {
        verify_proof(root, leaf, proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> Address {
        Address::repeat_byte(i)
    }

    #[test]
    fn every_member_proves_inclusion() {
        for n in 1..=9u8 {
            let members: Vec<(Address, [u8; 32])> = (1..=n).map(|i| (addr(i), [i; 32])).collect();
            let tree = ParticipantsTree::new(&members).unwrap();
            for (a, _) in &members {
                let proof = tree.proof(*a).unwrap();
                assert!(ParticipantsTree::verify(
                    tree.root(),
                    tree.leaf(*a).unwrap(),
                    &proof
                ));
                let wrong = participant_leaf(*a, B256::repeat_byte(0xee));
                assert!(!ParticipantsTree::verify(tree.root(), wrong, &proof));
            }
            assert!(tree.proof(addr(200)).is_none());
        }
    }

    #[test]
    fn root_does_not_depend_on_input_order() {
        let a = [(addr(1), [1; 32]), (addr(2), [2; 32]), (addr(3), [3; 32])];
        let b = [a[2], a[0], a[1]];
        assert_eq!(
            ParticipantsTree::new(&a).unwrap().root(),
            ParticipantsTree::new(&b).unwrap().root()
        );
    }

    #[test]
    fn duplicates_and_empty() {
        assert!(ParticipantsTree::new(&[(addr(1), [0; 32]), (addr(1), [1; 32])]).is_err());
        let empty = ParticipantsTree::new(&[]).unwrap();
        assert_eq!(empty.root(), B256::ZERO);
        assert!(empty.proof(addr(1)).is_none());
    }

    #[test]
    fn single_leaf_is_its_own_root() {
        let tree = ParticipantsTree::new(&[(addr(7), [7; 32])]).unwrap();
        assert_eq!(tree.root(), participant_leaf(addr(7), B256::repeat_byte(7)));
        assert_eq!(tree.proof(addr(7)).unwrap(), Vec::<B256>::new());
    }

    /// Layout of `StandardMerkleTree` for three leaves `a < b < c`: nodes `[root, n1, c, b, a]`
    /// with `n1 = hash(b, a)` sorted and `root = hash(n1, c)` sorted.
    #[test]
    fn layout_matches_standard_merkle_tree() {
        let leaves = [
            B256::repeat_byte(3),
            B256::repeat_byte(1),
            B256::repeat_byte(2),
        ];
        let tree = MerkleTree::new(&leaves);
        let n1 = hash_pair(leaves[2], leaves[1]);
        assert_eq!(tree.root(), hash_pair(n1, leaves[0]));
        assert_eq!(tree.proof(leaves[0]).unwrap(), vec![n1]);
        assert_eq!(tree.proof(leaves[1]).unwrap(), vec![leaves[2], leaves[0]]);
    }
}
