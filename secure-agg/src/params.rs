//! The parameters every client and the server of a round agree on.

use crate::error::{Error, Result};
use crate::graph::GraphParams;
use crate::prg::PrgKind;

/// What a SecAgg+ round masks and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecAggParams {
    /// The modulus `2^k` of the masked vectors, `k` in `1..=32`.
    pub modulus_bits: u32,
    /// Values per masked vector (the codec's encoded length plus anything appended).
    pub vector_len: usize,
    /// Neighbours per client (see [`GraphParams::degree`]).
    pub degree: usize,
    /// Shamir threshold (see [`GraphParams::threshold`]).
    pub threshold: usize,
    /// The mask PRG.
    pub prg: PrgKind,
}

impl SecAggParams {
    /// Parameters with the default PRG (ChaCha20).
    pub fn new(modulus_bits: u32, vector_len: usize, graph: GraphParams) -> Self {
        Self {
            modulus_bits,
            vector_len,
            degree: graph.degree,
            threshold: graph.threshold,
            prg: PrgKind::default(),
        }
    }

    /// Checks the ranges and the security condition `2 t > m`, `m` the number of shares per
    /// client (degree rounded up to even, plus one): with fewer, a server that tells half of
    /// a client's neighbours it dropped and the other half it survived could collect both of
    /// its secrets from honest clients alone.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the field.
    pub fn validate(&self) -> Result<()> {
        if !(1..=32).contains(&self.modulus_bits) {
            return Err(Error::param("modulus_bits", self.modulus_bits, "1..=32"));
        }
        if self.vector_len > 1 << 31 {
            return Err(Error::param("vector_len", self.vector_len, "at most 2^31"));
        }
        if self.degree == 0 || self.degree > 1 << 24 {
            return Err(Error::param("degree", self.degree, "1..=2^24"));
        }
        let shares = 2 * self.degree.div_ceil(2) + 1;
        if self.threshold == 0 || self.threshold > shares || 2 * self.threshold <= shares {
            return Err(Error::param(
                "threshold",
                self.threshold,
                format!("more than half of the {shares} shares per client and at most all of them"),
            ));
        }
        Ok(())
    }

    /// The number of shares per client when `clients` advertised: `min(degree rounded up to
    /// even, clients - 1) + 1`.
    pub fn shares_per_client(&self, clients: usize) -> usize {
        (2 * self.degree.div_ceil(2)).min(clients.saturating_sub(1)) + 1
    }
}
