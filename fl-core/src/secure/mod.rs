//! Secure aggregation in the round: what the aggregator asks of a member ([`SecureFit`]), how a
//! member's update becomes the integer vector it masks ([`encode_update`]) and how the
//! aggregator turns the unmasked sum back into a [`WeightedSum`] ([`decode_sum`]), with the
//! member identities of the federation signing every protocol message
//! ([`MemberSigner`], [`MemberVerifier`]).
//!
//! The protocol itself (SecAgg+ key agreement, secret sharing, masking, unmasking) is the
//! `secure-agg` crate's; this module binds it to rounds, members and parameters.
//!
//! ## What travels inside the masked vector
//!
//! A member sends `local - global`, clipped to L2 norm `C`. Without differential privacy it
//! is scaled by `w / W` (its example count `w`, capped at `W = max_weight`), so the L2 bound
//! still holds, and `w` itself is appended as one exact integer coordinate. The aggregator
//! decodes `S = Σ (wᵢ/W)·Δᵢ` and `Σ wᵢ`, and FedAvg gets `Σ wᵢ·(g + Δᵢ) = (Σ wᵢ)·g + W·S`: the
//! example-weighted mean, without ever seeing one member's weight. With differential privacy
//! every member weighs 1 and the decoded sum is the sum of clipped (and, for the distributed
//! mechanism, noised) updates, as DP-FedAvg expects.

mod config;
pub mod member;
pub mod wire;

pub use config::{SecureAggregationConfig, SecureProtocol};
pub use member::SecureMember;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregateError, WeightedSum};
use crate::identity::{Address, MemberKey, MemberSignature};
use crate::params::ParamVec;
use crate::round::Metrics;

/// Why secure aggregation failed for a member or a round.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecureError {
    /// The protocol refused a message or could not complete.
    #[error("secure aggregation: {0}")]
    Protocol(#[from] secure_agg::Error),
    /// The instruction's settings are unusable (names the setting).
    #[error("secure aggregation settings: {0}")]
    Settings(String),
    /// The decoded sum could not be turned into an aggregate.
    #[error("secure aggregation sum: {0}")]
    Aggregate(#[from] AggregateError),
    /// A message arrived for a step this member is not at.
    #[error("unexpected secure-aggregation message: {0}")]
    Unexpected(String),
}

/// How members weigh in a secure round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Weighting {
    /// By example count, capped at `max_weight` (FedAvg).
    Examples {
        /// The cap `W`.
        max_weight: u64,
    },
    /// Every member weighs 1 (DP-FedAvg).
    Uniform,
}

/// What the aggregator tells each selected member about a secure fit stage (on the wire:
/// [`wire::fit_to_pb`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SecureFit {
    /// Binds every signed message to this federation run and round.
    pub session: [u8; 32],
    /// The round's participants (client ids: positions in the federation's member list).
    pub participants: Vec<u32>,
    /// SecAgg+ parameters (modulus, degree, threshold, vector length).
    pub params: secure_agg::SecAggParams,
    /// The fixed-point codec every participant encodes with.
    pub codec: secure_agg::CodecConfig,
    /// How members weigh.
    pub weighting: Weighting,
}

impl SecureFit {
    /// Decoding bounds for this stage's messages: its participants, secp256k1 signatures, its
    /// vector length.
    pub fn limits(&self) -> secure_agg::Limits {
        secure_agg::Limits {
            max_clients: self.participants.len().max(1),
            max_signature_len: 65,
            max_vector_len: self.params.vector_len,
        }
    }

    /// The binding of round `round`.
    pub fn binding(&self, round: u64) -> secure_agg::RoundBinding {
        secure_agg::RoundBinding {
            session: self.session,
            round,
        }
    }
}

/// The fewest survivors a round of `n` members unmasks with when up to `dropout_rate` of
/// them may drop: `n - floor(dropout_rate · n)`. Distributed noise is calibrated to it, and a
/// round with fewer survivors aborts before unmasking.
pub fn min_survivors(n: usize, dropout_rate: f64) -> usize {
    let dropped = (dropout_rate.clamp(0.0, 1.0) * n as f64).floor() as usize;
    n.saturating_sub(dropped).max(1)
}

/// The codec of a round of `n` members under the distributed discrete Gaussian: clip norm
/// `clip_norm`, noise multiplier `noise_multiplier` carried by any `min_survivors` shares, the
/// largest scale whose noised sum cannot wrap modulo `2^bits` for a model of `dim` values.
pub fn distributed_codec(
    n: usize,
    clip_norm: f64,
    noise_multiplier: f64,
    min_survivors: usize,
    bits: u32,
    dim: usize,
) -> Result<secure_agg::CodecConfig, SecureError> {
    let n32 = u32::try_from(n).map_err(|_| SecureError::Settings(format!("{n} members")))?;
    Ok(secure_agg::CodecConfig::for_clients(n32, clip_norm, bits)?
        .with_noise(secure_agg::NoiseShare {
            noise_multiplier,
            min_surviving_clients: min_survivors as u32,
        })
        .fit_scale(dim)?)
}

/// Turns a member's update (`local - global`, `update.len()` values) and example count into
/// the integer vector it masks: the codec's encoding of the (weighted) update, then the
/// weight as one exact coordinate.
pub fn encode_update<R: rand::CryptoRng + ?Sized>(
    fit: &SecureFit,
    update: &[f32],
    num_examples: u64,
    rng: &mut R,
) -> Result<Vec<u32>, SecureError> {
    let codec = secure_agg::Codec::new(fit.codec.clone(), update.len())?;
    let (weight, scaled);
    let input: &[f32] = match fit.weighting {
        Weighting::Uniform => {
            weight = 1;
            update
        }
        Weighting::Examples { max_weight } => {
            weight = num_examples.clamp(1, max_weight);
            let mut v = update.to_vec();
            privacy::clip::clip_l2(&mut v, fit.codec.clip_norm)
                .map_err(|e| SecureError::Settings(format!("clipping the update: {e}")))?;
            let factor = weight as f32 / max_weight as f32;
            v.iter_mut().for_each(|x| *x *= factor);
            scaled = v;
            &scaled
        }
    };
    let mut encoded = codec.encode(input, rng)?;
    encoded.push(weight as u32);
    if encoded.len() != fit.params.vector_len {
        return Err(SecureError::Settings(format!(
            "the encoded update has {} values, the round expects {}",
            encoded.len(),
            fit.params.vector_len
        )));
    }
    Ok(encoded)
}

/// The masked vector's length for a model of `dim` values under `codec`.
pub fn vector_len(codec: &secure_agg::CodecConfig, dim: usize) -> Result<usize, SecureError> {
    Ok(secure_agg::Codec::new(codec.clone(), dim)?.encoded_len() + 1)
}

/// Turns the unmasked sum of `count` members into the [`WeightedSum`] the strategy
/// aggregates: for [`Weighting::Examples`] the sum of weighted *parameters* `Σ wᵢ·(g + Δᵢ)`
/// (`global` is `g`), for [`Weighting::Uniform`] the sum of updates `Σ Δᵢ` with weight 1
/// each. `metric_sums` are the members' metrics summed with the same weights.
pub fn decode_sum(
    fit: &SecureFit,
    sum: &[u32],
    count: usize,
    global: &ParamVec,
    metric_sums: Metrics,
) -> Result<WeightedSum, SecureError> {
    let Some((&weight, values)) = sum.split_last() else {
        return Err(SecureError::Settings("empty sum".into()));
    };
    let dim = global.values().len();
    let codec = secure_agg::Codec::new(fit.codec.clone(), dim)?;
    let decoded = codec.decode_sum(values, dim)?;
    let total_weight = u64::from(weight);
    let schema = global.schema().clone();
    let sum: Vec<f64> = match fit.weighting {
        Weighting::Uniform => {
            if total_weight != count as u64 {
                return Err(SecureError::Settings(format!(
                    "the weights sum to {total_weight}, not the {count} survivors"
                )));
            }
            decoded
        }
        Weighting::Examples { max_weight } => {
            let w = total_weight as f64;
            let big_w = max_weight as f64;
            decoded
                .iter()
                .zip(global.values())
                .map(|(s, &g)| w * f64::from(g) + big_w * s)
                .collect()
        }
    };
    Ok(WeightedSum::from_sum(
        schema,
        &sum,
        total_weight,
        count,
        metric_sums,
    )?)
}

/// Signs secure-aggregation messages with a member's identity key (EIP-191).
#[derive(Clone)]
pub struct MemberSigner(pub Arc<MemberKey>);

impl secure_agg::MessageSigner for MemberSigner {
    fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.0.sign_message(message).to_bytes().to_vec()
    }
}

/// Checks that a secure-aggregation message was signed by the member at the claimed
/// position of the federation's member list.
#[derive(Debug, Clone)]
pub struct MemberVerifier(pub Arc<Vec<Address>>);

impl secure_agg::SignatureVerifier for MemberVerifier {
    fn verify(&self, client: u32, message: &[u8], signature: &[u8]) -> bool {
        let Some(expected) = self.0.get(client as usize) else {
            return false;
        };
        MemberSignature::from_bytes(signature)
            .and_then(|s| s.recover(message))
            .is_ok_and(|a| a == *expected)
    }
}
