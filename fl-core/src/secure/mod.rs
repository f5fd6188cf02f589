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

#[cfg(feature = "he")]
pub mod ceremony;
mod config;
#[cfg(feature = "he")]
pub mod he;
pub mod member;
pub mod wire;

pub use config::{CeremonyConfig, CommitteeConfig, SecureAggregationConfig, SecureProtocol};
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
    /// The homomorphic backend refused or failed.
    #[error("homomorphic aggregation: {0}")]
    Homomorphic(String),
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
    let encoded = encode_vector(&fit.codec, fit.weighting, update, num_examples, rng)?;
    if encoded.len() != fit.params.vector_len {
        return Err(SecureError::Settings(format!(
            "the encoded update has {} values, the round expects {}",
            encoded.len(),
            fit.params.vector_len
        )));
    }
    Ok(encoded)
}

/// The integer vector of an update under `codec` and `weighting` (see the
/// [module docs](self)), for either protocol.
pub fn encode_vector<R: rand::CryptoRng + ?Sized>(
    codec: &secure_agg::CodecConfig,
    weighting: Weighting,
    update: &[f32],
    num_examples: u64,
    rng: &mut R,
) -> Result<Vec<u32>, SecureError> {
    let encoder = secure_agg::Codec::new(codec.clone(), update.len())?;
    let (weight, scaled);
    let input: &[f32] = match weighting {
        Weighting::Uniform => {
            weight = 1;
            update
        }
        Weighting::Examples { max_weight } => {
            weight = num_examples.clamp(1, max_weight);
            let mut v = update.to_vec();
            privacy::clip::clip_l2(&mut v, codec.clip_norm)
                .map_err(|e| SecureError::Settings(format!("clipping the update: {e}")))?;
            let factor = weight as f32 / max_weight as f32;
            v.iter_mut().for_each(|x| *x *= factor);
            scaled = v;
            &scaled
        }
    };
    let mut encoded = encoder.encode(input, rng)?;
    encoded.push(weight as u32);
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
    decode_vector_sum(&fit.codec, fit.weighting, sum, count, global, metric_sums)
}

/// [`decode_sum`] for either protocol: the codec and weighting the members encoded with.
pub fn decode_vector_sum(
    codec: &secure_agg::CodecConfig,
    weighting: Weighting,
    sum: &[u32],
    count: usize,
    global: &ParamVec,
    metric_sums: Metrics,
) -> Result<WeightedSum, SecureError> {
    let Some((&weight, values)) = sum.split_last() else {
        return Err(SecureError::Settings("empty sum".into()));
    };
    let dim = global.values().len();
    let codec = secure_agg::Codec::new(codec.clone(), dim)?;
    let decoded = codec.decode_sum(values, dim)?;
    let total_weight = u64::from(weight);
    let schema = global.schema().clone();
    let sum: Vec<f64> = match weighting {
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

/// A ChaCha20 generator seeded from the operating system's entropy, for the members'
/// protocol randomness (masks, encryption, key ceremony).
pub fn os_rng() -> Result<rand_chacha::ChaCha20Rng, SecureError> {
    privacy::noise::os_rng().map_err(|e| SecureError::Settings(format!("no randomness: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::{Schema, TensorSpec};

    fn fit(n: usize, weighting: Weighting, dim: usize) -> SecureFit {
        let codec = secure_agg::CodecConfig::for_clients(n as u32, 10.0, 32).unwrap();
        let params = secure_agg::SecAggParams::new(
            32,
            vector_len(&codec, dim).unwrap(),
            secure_agg::GraphParams::choose(n, 0.1, 0.0).unwrap(),
        );
        SecureFit {
            session: [1; 32],
            participants: (0..n as u32).collect(),
            params,
            codec,
            weighting,
        }
    }

    /// Sums encodings modulo 2^32, as unmasking leaves them.
    fn sum(vectors: &[Vec<u32>]) -> Vec<u32> {
        let mut out = vec![0u32; vectors[0].len()];
        for v in vectors {
            for (o, x) in out.iter_mut().zip(v) {
                *o = o.wrapping_add(*x);
            }
        }
        out
    }

    #[test]
    fn weights_travel_inside_the_vector_and_fedavg_comes_out() {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [3])]).unwrap());
        let global = ParamVec::new(schema, vec![1.0, -1.0, 0.5]).unwrap();
        let fit = fit(3, Weighting::Examples { max_weight: 1000 }, 3);
        let updates = [[0.5f32, 0.0, -0.5], [1.0, 1.0, 1.0], [-2.0, 0.25, 0.0]];
        let weights = [10u64, 30, 60];
        let mut rng = rand::rng();
        let encoded: Vec<Vec<u32>> = updates
            .iter()
            .zip(weights)
            .map(|(u, w)| encode_update(&fit, u, w, &mut rng).unwrap())
            .collect();
        assert_eq!(encoded[0].len(), fit.params.vector_len);
        let total = decode_sum(&fit, &sum(&encoded), 3, &global, Metrics::new()).unwrap();
        assert_eq!(total.total_weight(), 100);
        let mean = total.into_mean().unwrap();
        for (i, m) in mean.values().iter().enumerate() {
            let expected = global.values()[i]
                + (0..3)
                    .map(|c| updates[c][i] * weights[c] as f32)
                    .sum::<f32>()
                    / 100.0;
            assert!((m - expected).abs() < 1e-4, "{i}: {m} vs {expected}");
        }
    }

    #[test]
    fn uniform_weights_must_match_the_survivor_count() {
        let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [2])]).unwrap());
        let global = ParamVec::zeros(schema);
        let fit = fit(3, Weighting::Uniform, 2);
        let mut rng = rand::rng();
        let encoded: Vec<Vec<u32>> = (0..3)
            .map(|_| encode_update(&fit, &[0.1, 0.2], 1000, &mut rng).unwrap())
            .collect();
        let s = sum(&encoded);
        let total = decode_sum(&fit, &s, 3, &global, Metrics::new()).unwrap();
        assert_eq!(total.total_weight(), 3);
        let res = decode_sum(&fit, &s, 2, &global, Metrics::new());
        assert!(
            matches!(&res, Err(SecureError::Settings(m))
                if m == "the weights sum to 3, not the 2 survivors"),
            "{res:?}"
        );
        let res = decode_sum(&fit, &[], 2, &global, Metrics::new());
        assert!(
            matches!(&res, Err(SecureError::Settings(m)) if m == "empty sum"),
            "{res:?}"
        );
    }

    #[test]
    fn settings_survive_the_wire_and_bad_ones_are_refused() {
        let mut f = fit(5, Weighting::Examples { max_weight: 7 }, 10);
        f.codec = f.codec.clone().with_rotation([9; 32]);
        let back = wire::fit_from_pb(&wire::fit_to_pb(&f)).unwrap();
        assert_eq!(back, f);
        let refused = |bad: &crate::wire::pb::SecureFitSettings, why: &str| {
            assert_eq!(
                wire::fit_from_pb(bad),
                Err(crate::wire::WireError::Malformed {
                    field: "secure settings",
                    reason: why.into()
                })
            );
        };
        let mut bad = wire::fit_to_pb(&f);
        bad.session = vec![0; 31];
        refused(&bad, "session is 31 bytes, not 32");
        let mut bad = wire::fit_to_pb(&f);
        bad.prg = 99;
        refused(&bad, "unknown PRG code 99");
        let mut bad = wire::fit_to_pb(&f);
        bad.rotation_seed = vec![1; 5];
        refused(&bad, "rotation seed is 5 bytes, not 0 or 32");
    }
}
