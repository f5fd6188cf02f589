//! Parameters: the vetted LWE set, the plaintext space, the committee and the noise budget.

use super::error::{Error, Result};

/// LWE parameters of the compact public-key encryption.
///
/// The default is tfhe-rs's vetted compact public-key set
/// `V1_x_PARAM_PKE_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128` (128-bit security): LWE dimension
/// 2048, noise drawn from `TUniform(17)` (uniform on `[-2^17, 2^17]`), native modulus `2^64`.
/// `HE.md` has the analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LweParams {
    /// LWE dimension `n` (a power of two): also the number of values sharing one mask.
    pub lwe_dimension: usize,
    /// Key and encryption noise is `TUniform(noise_bound_log2)`.
    pub noise_bound_log2: u32,
}

impl LweParams {
    /// tfhe-rs's vetted compact public-key encryption set (n = 2048, TUniform(17), q = 2^64).
    pub const TFHE_PKE_2048: Self = Self {
        lwe_dimension: 2048,
        noise_bound_log2: 17,
    };

    /// Variance of one `TUniform(b)` sample: `(2^(2b+1) + 1) / 6`.
    pub(crate) fn noise_variance(&self) -> f64 {
        t_uniform_variance(self.noise_bound_log2)
    }

    fn validate(&self) -> Result<()> {
        if !self.lwe_dimension.is_power_of_two() || !(256..=1 << 15).contains(&self.lwe_dimension) {
            return Err(Error::InvalidParams(format!(
                "lwe_dimension {} must be a power of two in 256..=32768",
                self.lwe_dimension
            )));
        }
        if self.noise_bound_log2 == 0 || self.noise_bound_log2 > 40 {
            return Err(Error::InvalidParams(
                "noise_bound_log2 must be in 1..=40".into(),
            ));
        }
        Ok(())
    }
}

impl Default for LweParams {
    fn default() -> Self {
        Self::TFHE_PKE_2048
    }
}

pub(crate) fn t_uniform_variance(bound_log2: u32) -> f64 {
    (2f64.powi(2 * bound_log2 as i32 + 1) + 1.0) / 6.0
}

/// Failure probability targeted per decrypted coefficient: `2^-64` (so `2^-40` for `2^24`
/// coefficients by a union bound).
pub const FAILURE_LOG2_PER_VALUE: f64 = -64.0;

/// Parameters every party of a round agrees on: encryption, plaintext space, chunking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeParams {
    /// The LWE set.
    pub lwe: LweParams,
    /// Plaintext values are integers mod `2^plaintext_bits` (1..=32); sums wrap mod `2^k` exactly
    /// as the codec expects.
    pub plaintext_bits: u32,
    /// Values per encrypted chunk: a multiple of the LWE dimension (the server adds a chunk as it
    /// arrives; one chunk is one tfhe compact ciphertext list).
    pub chunk_values: usize,
    /// Most clients whose ciphertexts may be summed; the noise budget is checked for this many.
    pub max_clients: u32,
}

impl HeParams {
    /// Parameters with the vetted LWE set, chunks of 16 masks (32,768 values, ≈ 512 KiB).
    pub fn new(plaintext_bits: u32, max_clients: u32) -> Result<Self> {
        let p = Self {
            lwe: LweParams::TFHE_PKE_2048,
            plaintext_bits,
            chunk_values: 16 * LweParams::TFHE_PKE_2048.lwe_dimension,
            max_clients,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the fields (not the noise budget, which depends on the key: see
    /// [`CommitteeParams::validate`] and [`NoiseReport`]).
    pub fn validate(&self) -> Result<()> {
        self.lwe.validate()?;
        if !(1..=32).contains(&self.plaintext_bits) {
            return Err(Error::InvalidParams(
                "plaintext_bits must be in 1..=32".into(),
            ));
        }
        if self.chunk_values == 0
            || !self.chunk_values.is_multiple_of(self.lwe.lwe_dimension)
            || self.chunk_values > 1 << 20
        {
            return Err(Error::InvalidParams(format!(
                "chunk_values {} must be a positive multiple of {} and at most 2^20",
                self.chunk_values, self.lwe.lwe_dimension
            )));
        }
        if self.max_clients == 0 {
            return Err(Error::InvalidParams(
                "max_clients must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The scaling `Δ = 2^(64 - plaintext_bits)` that places a value in the top bits.
    pub(crate) fn delta_log2(&self) -> u32 {
        64 - self.plaintext_bits
    }

    /// Number of chunks for `num_values` values.
    pub fn chunk_count(&self, num_values: usize) -> usize {
        num_values.div_ceil(self.chunk_values)
    }

    /// Number of values in chunk `index` of a vector of `num_values` values.
    pub(crate) fn chunk_len(&self, num_values: usize, index: usize) -> usize {
        let start = index * self.chunk_values;
        num_values.saturating_sub(start).min(self.chunk_values)
    }

    /// Masks (bins of `n` values) of a chunk of `len` values.
    pub(crate) fn bins(&self, len: usize) -> usize {
        len.div_ceil(self.lwe.lwe_dimension)
    }

    /// Variance of the decryption noise of one fresh ciphertext under a joint key that is the sum
    /// of `key_parts` binary keys (`key_parts = 1` in shared-key mode).
    ///
    /// Phase noise of a compact public-key encryption: `e·r + e2 − e1·s` (negacyclic products),
    /// with `e` the key noise (sum of `key_parts` TUniform), `r` binary, `e1, e2` TUniform, and
    /// `s` a sum of `key_parts` binary keys (`E[s_i²] = c/4 + c²/4`).
    pub(crate) fn client_noise_variance(&self, key_parts: u32) -> f64 {
        let n = self.lwe.lwe_dimension as f64;
        let c = key_parts as f64;
        let v = self.lwe.noise_variance();
        v * (n * c * 0.5 + n * (c + c * c) / 4.0 + 1.0)
    }

    /// Largest noise variance that still decodes with failure probability
    /// `2^FAILURE_LOG2_PER_VALUE` per value (sub-Gaussian tail `2·exp(−x²/2V)`, `x = Δ/2`).
    pub(crate) fn max_noise_variance(&self) -> f64 {
        let half_delta = 2f64.powi(self.delta_log2() as i32 - 1);
        let ln_fail = (-FAILURE_LOG2_PER_VALUE + 1.0) * std::f64::consts::LN_2;
        half_delta * half_delta / (2.0 * ln_fail)
    }
}

/// Committee (threshold) decryption parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CommitteeParams {
    /// Committee size `c` (2..=16).
    pub members: u32,
    /// Members needed to decrypt, `t` (1..=c). Up to `c − t` may be absent.
    pub threshold: u32,
    /// A member decrypts only an aggregate of at least this many distinct signed clients (≥ 2).
    pub min_contributors: u32,
    /// Encryption, plaintext space and chunking.
    pub he: HeParams,
    /// Each member adds Gaussian smudging noise of this standard deviation (log2) to its partial
    /// decryption. `None`: the largest the noise budget allows (see
    /// [`CommitteeParams::noise_report`]).
    pub smudging_std_log2: Option<f64>,
}

/// What the noise budget allows for a parameter set (all in log2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseReport {
    /// Standard deviation of one client's ciphertext noise.
    pub client_noise_std_log2: f64,
    /// Standard deviation of the aggregate noise at `max_clients` clients (before smudging).
    pub aggregate_noise_std_log2: f64,
    /// Standard deviation of one member's Gaussian smudging noise.
    pub smudging_std_log2: f64,
    /// Smudging minus aggregate noise standard deviation: the margin `m` that hides the
    /// key-dependent part of the decryption noise.
    pub smudging_margin_log2: f64,
    /// Upper bound on the probability that one value decodes wrongly.
    pub failure_log2_per_value: f64,
    /// Values that may be decrypted under one committee key, `2^(2m − 2)`: the order-2 Rényi
    /// divergence between the real partial decryptions and ones simulated from the sum alone
    /// stays below `e^(1/4)` (see `HE.md`). Rotate the key (run [`crate::he::keygen`] again)
    /// before.
    pub values_per_key_log2: f64,
}

/// The smallest smudging margin (bits) the validation accepts: `2^18` values per key.
pub const MIN_SMUDGING_MARGIN_LOG2: f64 = 10.0;

impl CommitteeParams {
    /// Committee parameters with the vetted LWE set and automatic smudging.
    pub fn new(
        members: u32,
        threshold: u32,
        min_contributors: u32,
        plaintext_bits: u32,
        max_clients: u32,
    ) -> Result<Self> {
        let p = Self {
            members,
            threshold,
            min_contributors,
            he: HeParams::new(plaintext_bits, max_clients)?,
            smudging_std_log2: None,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the committee shape and the noise budget.
    pub fn validate(&self) -> Result<()> {
        self.he.validate()?;
        if !(2..=16).contains(&self.members) {
            return Err(Error::InvalidParams("members must be in 2..=16".into()));
        }
        if !(1..=self.members).contains(&self.threshold) {
            return Err(Error::InvalidParams(
                "threshold must be in 1..=members".into(),
            ));
        }
        if self.min_contributors < 2 {
            return Err(Error::InvalidParams(
                "min_contributors must be at least 2: one client's ciphertext is never decrypted"
                    .into(),
            ));
        }
        if self.min_contributors > self.he.max_clients {
            return Err(Error::InvalidParams(
                "min_contributors exceeds max_clients".into(),
            ));
        }
        let r = self.noise_report();
        if r.failure_log2_per_value.is_nan()
            || r.failure_log2_per_value > FAILURE_LOG2_PER_VALUE + 1e-9
        {
            return Err(Error::InvalidParams(format!(
                "noise budget exceeded: failure 2^{:.1} per value; lower plaintext_bits or \
                 max_clients",
                r.failure_log2_per_value
            )));
        }
        if r.smudging_margin_log2.is_nan() || r.smudging_margin_log2 < MIN_SMUDGING_MARGIN_LOG2 {
            return Err(Error::InvalidParams(format!(
                "smudging margin {:.1} bits < {MIN_SMUDGING_MARGIN_LOG2}: lower plaintext_bits \
                 or max_clients",
                r.smudging_margin_log2
            )));
        }
        Ok(())
    }

    /// Number of replicated-secret-sharing sets (`C(c, t−1)`).
    pub(crate) fn share_sets(&self) -> Vec<Vec<u32>> {
        subsets(self.members, self.threshold - 1)
    }

    /// Indices of the share sets member `member` holds a share of (those not containing it).
    pub(crate) fn held_sets(&self, member: u32) -> Vec<u32> {
        self.share_sets()
            .iter()
            .enumerate()
            .filter(|(_, set)| !set.contains(&member))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// The noise analysis for these parameters.
    pub fn noise_report(&self) -> NoiseReport {
        let he = &self.he;
        let v_client = he.client_noise_variance(self.members);
        let v_agg = v_client * he.max_clients as f64;
        let v_max = he.max_noise_variance();
        let t = self.threshold as f64;
        let v_smudge = match self.smudging_std_log2 {
            Some(s) => 2f64.powf(2.0 * s),
            // The largest σ² with V_agg + t·σ² ≤ V_max.
            None => ((v_max - v_agg) / t).max(0.0),
        };
        let v_total = v_agg + t * v_smudge;
        let half_delta = 2f64.powi(he.delta_log2() as i32 - 1);
        // log2(2·exp(−x²/2V)).
        let failure = 1.0 - half_delta * half_delta / (2.0 * v_total) / std::f64::consts::LN_2;
        let margin = (v_smudge.log2() - v_agg.log2()) / 2.0;
        NoiseReport {
            client_noise_std_log2: v_client.log2() / 2.0,
            aggregate_noise_std_log2: v_agg.log2() / 2.0,
            smudging_std_log2: v_smudge.log2() / 2.0,
            smudging_margin_log2: margin,
            failure_log2_per_value: failure,
            values_per_key_log2: 2.0 * margin - 2.0,
        }
    }
}

/// All `k`-subsets of `0..c` in lexicographic order.
pub(crate) fn subsets(c: u32, k: u32) -> Vec<Vec<u32>> {
    fn rec(start: u32, c: u32, k: u32, cur: &mut Vec<u32>, out: &mut Vec<Vec<u32>>) {
        if cur.len() == k as usize {
            out.push(cur.clone());
            return;
        }
        for i in start..c {
            cur.push(i);
            rec(i + 1, c, k, cur, out);
            cur.pop();
        }
    }
    let mut out = Vec::new();
    rec(0, c, k, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_count() {
        assert_eq!(subsets(5, 2).len(), 10);
        assert_eq!(subsets(5, 0), vec![Vec::<u32>::new()]);
        assert_eq!(subsets(3, 2), vec![vec![0, 1], vec![0, 2], vec![1, 2]]);
    }

    #[test]
    fn default_committee_budget() {
        let p = CommitteeParams::new(5, 3, 2, 16, 1000).unwrap();
        let r = p.noise_report();
        assert!(r.failure_log2_per_value <= FAILURE_LOG2_PER_VALUE + 1e-9);
        assert!(r.smudging_margin_log2 >= MIN_SMUDGING_MARGIN_LOG2);
        let res = CommitteeParams::new(5, 3, 2, 32, 100_000);
        assert!(
            matches!(&res, Err(Error::InvalidParams(m)) if m.starts_with("noise budget exceeded")),
            "{res:?}"
        );
    }
}
