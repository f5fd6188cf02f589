//! # secure-agg
//!
//! Secure aggregation for daofl: the aggregator learns only the sum of the participating
//! clients' updates, never one client's, while clients drop out at any stage.
//!
//! - [`codec`]: the fixed-point codec. Clip (L2, `privacy`'s clip), optionally rotate with a
//!   randomized Hadamard transform, scale, round (unbiased), add a distributed discrete
//!   Gaussian noise share, reduce mod `2^k`; decode the sum. [`CodecConfig::for_clients`]
//!   picks the largest scale for which the sum of `n` updates cannot wrap in `k` bits,
//!   [`CodecConfig::with_scale`] the fewest bits for a scale, and [`Codec::new`] refuses
//!   configurations that could wrap.
//! - SecAgg+ (Bonawitz et al. 2017, Bell et al. 2020) as two state machines without IO:
//!   [`ClientRound`] and [`ServerRound`]. Pairwise masks with a `k`-regular neighbour graph
//!   ([`GraphParams::choose`]), self-masks, Shamir shares of both secrets (over
//!   `GF(2^127 - 1)`) encrypted with ChaCha20-Poly1305 under X25519 + HKDF-SHA256 keys, masks
//!   expanded by ChaCha20 (or ChaCha12/8, AES-256-CTR, see [`PrgKind`]) and added in one fused
//!   pass. Every client message is signed with the member's identity key through
//!   [`MessageSigner`] / [`SignatureVerifier`] and bound to a [`RoundBinding`] (session and
//!   round); every message has a canonical bounded byte encoding (`to_bytes` /
//!   `from_bytes`).
//! - [`sim`]: a driver that steps `n` clients and the server in one process, with drops.
//!
//! It does **not** do IO, keep time, pick clients, or know about models and rounds beyond
//! the binding: the engine moves the bytes, closes stages at its deadlines, chunks masked
//! vectors and decides what to do with the sum. Its security rests on a threshold of honest
//! clients (`2t > degree + 1` is enforced, [`GraphParams::choose`] sizes `t` for a corruption
//! rate) and on the signatures: a malicious server colluding with fewer clients than that can
//! make the round abort but not learn an individual update (see [`graph`] for how far it can
//! influence the neighbour graph). It does not prevent a malicious
//! *client* from sending a bad (but bounded) input: that is what clipping and the decoded
//! average's robustness are for.
//!
//! Randomness (keys, self-mask seeds, rounding, noise) comes from the caller's CSPRNG (the
//! OS's in production); nothing here is seeded from a run seed.
//!
//! ## Feature flags
//! - `he`: the additive LWE homomorphic backend (module `he`).
//!
//! ## Example: a round of 5 clients, one of which drops after sharing keys
//!
//! ```
//! use std::collections::BTreeMap;
//! use rand::SeedableRng;
//! use secure_agg::sim::{Sim, SimStage};
//! use secure_agg::{Codec, CodecConfig, GraphParams, MessageSigner, RoundBinding, SecAggParams,
//!     SignatureVerifier};
//!
//! // Toy identities (daofl uses secp256k1 signatures): a signature is the client's id.
//! struct Id(u32);
//! impl MessageSigner for Id {
//!     fn sign(&self, _: &[u8]) -> Vec<u8> { self.0.to_le_bytes().to_vec() }
//! }
//! struct Ids;
//! impl SignatureVerifier for Ids {
//!     fn verify(&self, c: u32, _: &[u8], s: &[u8]) -> bool { s == c.to_le_bytes() }
//! }
//!
//! let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1); // the OS CSPRNG in production
//! let codec = Codec::new(CodecConfig::for_clients(5, 1.0, 20)?, 3)?;
//! let graph = GraphParams::choose(5, 0.2, 0.0)?;
//! let params = SecAggParams::new(20, codec.encoded_len(), graph);
//! let signers: BTreeMap<u32, Box<dyn MessageSigner>> =
//!     (0..5).map(|i| (i, Box::new(Id(i)) as Box<dyn MessageSigner>)).collect();
//! let inputs = (0..5)
//!     .map(|i| Ok((i, codec.encode(&[0.1, 0.2, -0.3], &mut rng)?)))
//!     .collect::<Result<BTreeMap<_, _>, secure_agg::Error>>()?;
//! let binding = RoundBinding { session: [7; 32], round: 1 };
//! let mut sim = Sim::new(binding, params, &signers, &Ids, &mut rng)?;
//! sim.drop_at(4, SimStage::MaskedInput);
//! let out = sim.run(&inputs)?;
//! assert_eq!(out.survivors, vec![0, 1, 2, 3]);
//! let mean: Vec<f64> = codec.decode_sum(&out.sum, 3)?.iter().map(|v| v / 4.0).collect();
//! assert!((mean[0] - 0.1).abs() < 1e-4 && (mean[2] + 0.3).abs() < 1e-4);
//! # Ok::<(), secure_agg::Error>(())
//! ```

#![forbid(unsafe_code)]

pub mod client;
pub mod codec;
mod error;
pub mod graph;
mod keys;
pub mod messages;
pub mod params;
pub mod prg;
mod rotation;
pub mod server;
mod shamir;
pub mod sign;
pub mod sim;
mod wire;

#[cfg(feature = "he")]
pub mod he;

pub use client::{ClientRound, Revealed};
pub use codec::{Codec, CodecConfig, NoiseShare};
pub use error::{Error, Result};
pub use graph::GraphParams;
pub use messages::{
    InboundShare, InboundShares, KeyDirectory, MaskedInputHeader, RoundBinding,
    SHARE_CIPHERTEXT_LEN, SharePacket, SharePackets, SignedAdvertisement, UnmaskRequest,
    UnmaskResponse, masked_digest,
};
pub use params::SecAggParams;
pub use prg::PrgKind;
pub use server::{AggregateOutput, PendingAggregate, ServerRound, Unmasker};
pub use shamir::Share;
pub use sign::{MessageSigner, SignatureVerifier};
pub use wire::{Limits, pack_values, unpack_values};

#[cfg(test)]
mod tests {
    /// The engine keeps rounds across await points and threads.
    #[test]
    fn state_machines_are_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::ClientRound>();
        check::<crate::ServerRound>();
        check::<crate::Codec>();
        check::<crate::Unmasker>();
    }
}
