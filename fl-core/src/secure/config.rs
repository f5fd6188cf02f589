//! `[secure_aggregation]`: how a federation hides individual updates from its aggregator.

use serde::{Deserialize, Serialize};

/// Secure-aggregation settings of a federation (`[secure_aggregation]` in the federation
/// file). Without this section the aggregator sees every member's update.
///
/// With SecAgg+ each selected member trains, then sends its update *masked*: quantised to
/// integers modulo `2^modulus_bits` (the weight travels inside the masked vector), plus
/// pseudorandom masks that cancel only in the sum of the round's survivors. The aggregator
/// learns the sum and nothing about any one member's update, as long as fewer than
/// `threshold` of a member's neighbours collude with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecureAggregationConfig {
    /// The protocol (only `"secagg+"` so far).
    pub protocol: SecureProtocol,
    /// Bits of the modulus the masked sum lives in (at most 32). The codec refuses a
    /// configuration whose sum could wrap around it.
    pub modulus_bits: u32,
    /// L2 bound of each member's update (its difference from the global model), used when
    /// the federation has no `[privacy]` section; with one, the privacy clip norm applies.
    /// Larger bounds cost precision: the codec's resolution is about
    /// `clients × clip_norm / 2^(modulus_bits - 1)`.
    pub clip_norm: f64,
    /// Example counts above this are capped: a member's weight is `min(examples, max_weight)`
    /// and its update is scaled by `weight / max_weight` before encoding. Ignored with
    /// `[privacy]` (every member then weighs 1).
    pub max_weight: u64,
    /// Fraction of a round's members that may drop out at any stage while the round still
    /// completes; sets the neighbour-graph degree and the secret-sharing threshold.
    pub dropout_rate: f64,
    /// Fraction of members the aggregator may corrupt (collude with) without learning an
    /// individual update.
    pub corruption_rate: f64,
    /// Neighbours of each member (SecAgg+'s `k`); chosen from the rates when absent.
    pub degree: Option<usize>,
    /// Shares needed to recover a member's secrets; chosen from the rates when absent.
    pub threshold: Option<usize>,
    /// Rotate each update by a randomised Hadamard transform before quantising (spreads a
    /// large coordinate over all of them, so fewer bits lose less precision).
    pub rotate: bool,
    /// Seconds each key-exchange and unmasking step may take (training has the federation's
    /// fit timeout).
    pub step_timeout_s: f64,
    /// Homomorphic aggregation (`protocol = "he"`): the decryption committee.
    pub committee: Option<CommitteeConfig>,
    /// Homomorphic aggregation in a deployment: who holds the committee's key shares and where
    /// the key ceremony's messages are (simulations deal the key in process and ignore it).
    pub ceremony: Option<CeremonyConfig>,
}

/// `[secure_aggregation.ceremony]`: the committee's key ceremony (`fl-client committee ...`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CeremonyConfig {
    /// The holders' member addresses (`0x...`), in committee order: as many as
    /// `committee.members`, each in the federation's member list.
    pub holders: Vec<String>,
    /// Directory with the ceremony's public messages (`commit-NN.json`, `deal-NN.json`),
    /// relative to the federation file; the aggregator checks them and computes the joint
    /// public key from them.
    pub dir: std::path::PathBuf,
    /// Bump to generate a fresh key for the same committee (key rotation, or a new run: a
    /// committee member never decrypts a round twice under one key).
    #[serde(default)]
    pub key_epoch: u64,
}

/// `[secure_aggregation.committee]`: who decrypts the sum under `protocol = "he"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitteeConfig {
    /// Committee size `c` (2..=16): the federation's first `c` members hold key shares.
    pub members: u32,
    /// Members needed to decrypt, `t`; up to `c - t` may be absent.
    pub threshold: u32,
    /// A committee member decrypts only an aggregate of at least this many signed members.
    pub min_contributors: u32,
}

impl CommitteeConfig {
    /// The committee's parameters for `plaintext_bits`-bit values (`modulus_bits`) summed over
    /// at most `max_clients` members, with the vetted LWE set and automatic smudging.
    #[cfg(feature = "he")]
    pub fn params(
        &self,
        plaintext_bits: u32,
        max_clients: u32,
    ) -> Result<secure_agg::he::CommitteeParams, secure_agg::he::Error> {
        secure_agg::he::CommitteeParams::new(
            self.members,
            self.threshold,
            self.min_contributors,
            plaintext_bits,
            max_clients,
        )
    }
}

impl Default for SecureAggregationConfig {
    fn default() -> Self {
        Self {
            protocol: SecureProtocol::SecAggPlus,
            modulus_bits: 32,
            clip_norm: 10.0,
            max_weight: 1 << 16,
            dropout_rate: 0.1,
            corruption_rate: 0.1,
            degree: None,
            threshold: None,
            rotate: false,
            step_timeout_s: 60.0,
            committee: None,
            ceremony: None,
        }
    }
}

/// Which secure-aggregation protocol a federation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SecureProtocol {
    /// Pairwise masking with dropout recovery over a sparse neighbour graph (Bell et al.
    /// 2020).
    #[default]
    #[serde(rename = "secagg+")]
    SecAggPlus,
    /// Additive LWE encryption under a committee's joint key (tfhe `core_crypto`), decrypted
    /// by `t` of `c` committee members; needs `[secure_aggregation.committee]`.
    #[serde(rename = "he")]
    Homomorphic,
}

impl SecureAggregationConfig {
    /// Checks ranges; names the first bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(2..=32).contains(&self.modulus_bits) {
            return Err(format!(
                "secure_aggregation.modulus_bits must be in 2..=32, got {}",
                self.modulus_bits
            ));
        }
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(format!(
                "secure_aggregation.clip_norm must be positive, got {}",
                self.clip_norm
            ));
        }
        if self.max_weight == 0 || self.max_weight > 1 << 24 {
            return Err(format!(
                "secure_aggregation.max_weight must be in 1..=2^24, got {}",
                self.max_weight
            ));
        }
        for (name, v) in [
            ("dropout_rate", self.dropout_rate),
            ("corruption_rate", self.corruption_rate),
        ] {
            if !(0.0..0.5).contains(&v) {
                return Err(format!(
                    "secure_aggregation.{name} must be in [0, 0.5), got {v}"
                ));
            }
        }
        if let (Some(ceremony), Some(committee)) = (&self.ceremony, &self.committee)
            && ceremony.holders.len() != committee.members as usize
        {
            return Err(format!(
                "secure_aggregation.ceremony.holders lists {} addresses for a committee of {}",
                ceremony.holders.len(),
                committee.members
            ));
        }
        if self.protocol == SecureProtocol::Homomorphic && self.committee.is_none() {
            return Err(
                "secure_aggregation.protocol = \"he\" needs [secure_aggregation.committee]".into(),
            );
        }
        if !(self.step_timeout_s.is_finite()
            && self.step_timeout_s > 0.0
            && self.step_timeout_s < 1e7)
        {
            return Err(format!(
                "secure_aggregation.step_timeout_s must be a positive number of seconds, got {}",
                self.step_timeout_s
            ));
        }
        Ok(())
    }

    /// `step_timeout_s` as a duration.
    pub fn step_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.step_timeout_s)
    }
}
