//! Batches of contributed records (proposals, annotations) as the Merkle trees the
//! `DataRegistry` contract registers.
//!
//! A record is content-addressed by a CIDv1 (raw codec, SHA-256: `contrib`'s records); a batch is
//! the OpenZeppelin `StandardMerkleTree` over the leaves
//! `keccak256(keccak256(abi.encode(bytes32 sha256Digest)))`, sorted and deduplicated, so that the
//! root names the set of records whatever order they were listed in, and a record's inclusion is
//! proven with [`RecordBatch::proof`] (checked by [`RecordBatch::verify`] or on chain by
//! OpenZeppelin's `MerkleProof`).

use alloy::primitives::B256;
use alloy::sol_types::SolValue;
use chain_anchor::merkle::{MerkleTree, standard_leaf, verify_proof};

use crate::{Error, Result};

/// The leaf of a record whose CID's SHA-256 digest is `digest`.
pub fn record_leaf(digest: B256) -> B256 {
    standard_leaf(&digest.abi_encode())
}

/// A batch of records and its Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    digests: Vec<B256>,
    tree: MerkleTree,
}

impl RecordBatch {
    /// The batch of the records whose CID digests are `digests` (any order; duplicates count
    /// once).
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for an empty batch.
    pub fn new(digests: &[B256]) -> Result<Self> {
        let mut digests = digests.to_vec();
        digests.sort_unstable();
        digests.dedup();
        if digests.is_empty() {
            return Err(Error::InvalidInput(
                "a batch needs at least one record".into(),
            ));
        }
        let leaves: Vec<B256> = digests.iter().map(|d| record_leaf(*d)).collect();
        Ok(Self {
            tree: MerkleTree::new(&leaves),
            digests,
        })
    }

    /// The root the registry records.
    pub fn root(&self) -> B256 {
        self.tree.root()
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// Whether the batch is empty (never, once built).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The records' digests, ascending.
    pub fn digests(&self) -> &[B256] {
        &self.digests
    }

    /// The inclusion proof of `digest`, if it is in the batch.
    pub fn proof(&self, digest: B256) -> Option<Vec<B256>> {
        self.tree.proof(record_leaf(digest))
    }

    /// Whether `proof` shows `digest` under `root`.
    pub fn verify(root: B256, digest: B256, proof: &[B256]) -> bool {
        verify_proof(root, record_leaf(digest), proof)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(i: u8) -> B256 {
        B256::repeat_byte(i)
    }

    #[test]
    fn the_root_names_the_set_and_proofs_verify() {
        let a = RecordBatch::new(&[d(3), d(1), d(2)]).unwrap();
        let b = RecordBatch::new(&[d(1), d(2), d(3), d(2)]).unwrap();
        assert_eq!(a.root(), b.root(), "order and duplicates do not matter");
        assert_eq!(a.len(), 3);
        for x in [d(1), d(2), d(3)] {
            let p = a.proof(x).unwrap();
            assert!(RecordBatch::verify(a.root(), x, &p));
            assert!(!RecordBatch::verify(a.root(), d(9), &p));
        }
        assert_eq!(a.proof(d(9)), None);
        assert_ne!(RecordBatch::new(&[d(1)]).unwrap().root(), a.root());
        assert!(RecordBatch::new(&[]).is_err());
    }
}
