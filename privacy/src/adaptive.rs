//! Adaptive clipping: Andrew, Thakkar, McMahan and Ramaswamy 2021, "Differentially Private
//! Learning with Adaptive Clipping".
//!
//! Each round every sampled client reports one bit, `b_i = 1` if its update norm was at most
//! the current clip norm `C` (the update was *unclipped*). The server sums the bits, adds
//! Gaussian noise `N(0, sigma_b^2)`, divides by the expected number of clients and updates
//! `C` geometrically:
//!
//! ```text
//! C <- C * exp(-lr * (b_noisy - target_quantile))
//! ```
//!
//! so `C` settles where a `target_quantile` fraction of updates are unclipped. (Flower's
//! `AdaptiveClipping` strategies use the *clipped* fraction here; that drives `C` the wrong
//! way for a given quantile.)
//!
//! The bit query and the update query run on the same sample. Centring the bits (`b_i - 1/2`)
//! gives the count sensitivity `1/2`, so its noise multiplier is `2 sigma_b`; the update's
//! multiplier is chosen so that the pair is one Gaussian with the total multiplier `z`
//! (Mironov et al. 2019, Section 3; the paper's Theorem 1):
//! `z_update = (z^-2 - (2 sigma_b)^-2)^(-1/2)` ([`split_noise_multiplier`]). Account for each
//! round as `DpEvent::poisson_gaussian(q, z)`.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::noise::{DiscreteGaussian, Lattice};

/// The update's noise multiplier when a total multiplier `total` is shared with a count query
/// of noise standard deviation `count_stddev` (and sensitivity 1/2):
/// `(total^-2 - (2 count_stddev)^-2)^(-1/2)`.
///
/// # Errors
/// [`Error::InvalidParameter`] unless both are finite and positive and
/// `2 * count_stddev > total` (otherwise the count alone would spend the whole budget).
pub fn split_noise_multiplier(total: f64, count_stddev: f64) -> Result<f64, Error> {
    crate::positive("total", total)?;
    crate::positive("count_stddev", count_stddev)?;
    if 2.0 * count_stddev <= total {
        return Err(Error::param(
            "count_stddev",
            count_stddev,
            "more than half the total noise multiplier",
        ));
    }
    Ok((total.powi(-2) - (2.0 * count_stddev).powi(-2)).powf(-0.5))
}

/// Settings of the adaptive clip norm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveClipConfig {
    /// Clip norm of the first round, `C_0`.
    pub initial_clip: f64,
    /// Fraction of updates that should end up unclipped, `gamma` in `[0, 1]` (paper: 0.5).
    pub target_unclipped_quantile: f64,
    /// Geometric learning rate `eta` (paper: 0.2).
    pub learning_rate: f64,
    /// Standard deviation `sigma_b` of the noise on the unclipped count (paper: expected
    /// clients / 20). Zero gives the noise-free update (for tests and replays only).
    pub count_stddev: f64,
}

/// The adaptive clip norm state: the current `C` and its settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdaptiveClip {
    config: AdaptiveClipConfig,
    clip: f64,
}

impl AdaptiveClip {
    /// Starts at `config.initial_clip`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad field.
    pub fn new(config: AdaptiveClipConfig) -> Result<Self, Error> {
        crate::positive("initial_clip", config.initial_clip)?;
        crate::probability("target_unclipped_quantile", config.target_unclipped_quantile)?;
        crate::positive("learning_rate", config.learning_rate)?;
        if !(config.count_stddev >= 0.0 && config.count_stddev.is_finite()) {
            return Err(Error::param("count_stddev", config.count_stddev, "a finite number >= 0"));
        }
        Ok(Self { config, clip: config.initial_clip })
    }

    /// The clip norm to use this round.
    pub fn clip_norm(&self) -> f64 {
        self.clip
    }

    /// The settings.
    pub fn config(&self) -> &AdaptiveClipConfig {
        &self.config
    }

    /// Whether a client with update norm `norm` reports "unclipped" (`norm <= C`).
    pub fn is_unclipped(&self, norm: f64) -> bool {
        norm <= self.clip
    }

    /// Updates `C` from the number of clients that reported "unclipped", adding
    /// `N_Z`-lattice Gaussian noise of standard deviation `count_stddev` to the count, and
    /// normalising by the *expected* number of clients (fixed, so the sensitivity is known).
    /// Returns the new clip norm.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `expected_clients` is not positive;
    /// [`Error::Sampler`] if the random source fails.
    pub fn update<R: CryptoRng + ?Sized>(
        &mut self,
        unclipped_count: u64,
        expected_clients: f64,
        rng: &mut R,
    ) -> Result<f64, Error> {
        crate::positive("expected_clients", expected_clients)?;
        let noise = if self.config.count_stddev > 0.0 {
            let lattice = Lattice::for_sigma(self.config.count_stddev)?;
            let sampler = DiscreteGaussian::new(lattice.sigma_steps * lattice.sigma_steps, 1)?;
            sampler.sample(rng)? as f64 * lattice.step()
        } else {
            0.0
        };
        let fraction = (unclipped_count as f64 + noise) / expected_clients;
        Ok(self.apply(fraction))
    }

    /// The noise-free update from an exact unclipped fraction (replays and tests; not private).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `unclipped_fraction` is not finite.
    pub fn update_noise_free(&mut self, unclipped_fraction: f64) -> Result<f64, Error> {
        if !unclipped_fraction.is_finite() {
            return Err(Error::param("unclipped_fraction", unclipped_fraction, "a finite number"));
        }
        Ok(self.apply(unclipped_fraction))
    }

    fn apply(&mut self, fraction: f64) -> f64 {
        let c = self.clip
            * (-self.config.learning_rate * (fraction - self.config.target_unclipped_quantile)).exp();
        // Keep C a usable positive number even after extreme noise.
        self.clip = c.clamp(f64::MIN_POSITIVE, f64::MAX);
        self.clip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn config() -> AdaptiveClipConfig {
        AdaptiveClipConfig {
            initial_clip: 0.1,
            target_unclipped_quantile: 0.5,
            learning_rate: 0.2,
            count_stddev: 0.0,
        }
    }

    #[test]
    fn noise_free_replay_from_the_issue() {
        let mut clip = AdaptiveClip::new(config()).unwrap();
        let norms = vec![1.0; 10];
        for _ in 0..20 {
            let unclipped = norms.iter().filter(|&&n| clip.is_unclipped(n)).count();
            clip.update_noise_free(unclipped as f64 / norms.len() as f64).unwrap();
        }
        assert!((clip.clip_norm() - 0.1 * 2f64.exp()).abs() < 1e-12, "{}", clip.clip_norm());
        assert!((clip.clip_norm() - 0.738_905_6).abs() < 1e-7);
    }

    #[test]
    fn converges_to_the_target_quantile_with_noise() {
        // Norms uniform on (0, 1]: the median is 0.5.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut clip = AdaptiveClip::new(AdaptiveClipConfig { count_stddev: 5.0, ..config() }).unwrap();
        let norms: Vec<f64> = (1..=100).map(|i| f64::from(i) / 100.0).collect();
        let mut late = Vec::new();
        for round in 0..400 {
            let unclipped = norms.iter().filter(|&&n| clip.is_unclipped(n)).count() as u64;
            clip.update(unclipped, 100.0, &mut rng).unwrap();
            if round >= 200 {
                late.push(clip.clip_norm());
            }
        }
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!((mean - 0.5).abs() < 0.1, "{mean}");
    }

    #[test]
    fn noise_split_is_one_gaussian() {
        let z = 1.0;
        let sb = 5.0;
        let zu = split_noise_multiplier(z, sb).unwrap();
        assert!((zu.powi(-2) + (2.0 * sb).powi(-2) - z.powi(-2)).abs() < 1e-12);
        assert!(zu > z);
        assert!(split_noise_multiplier(1.0, 0.5).is_err());
        assert!(split_noise_multiplier(0.0, 1.0).is_err());
        assert!(split_noise_multiplier(1.0, f64::NAN).is_err());
    }

    #[test]
    fn bad_config_names_the_field() {
        for (cfg, name) in [
            (AdaptiveClipConfig { initial_clip: 0.0, ..config() }, "initial_clip"),
            (AdaptiveClipConfig { target_unclipped_quantile: 1.5, ..config() }, "target_unclipped_quantile"),
            (AdaptiveClipConfig { learning_rate: -1.0, ..config() }, "learning_rate"),
            (AdaptiveClipConfig { count_stddev: f64::NAN, ..config() }, "count_stddev"),
        ] {
            let e = AdaptiveClip::new(cfg).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
        let mut c = AdaptiveClip::new(config()).unwrap();
        assert!(c.update_noise_free(f64::NAN).is_err());
        assert!(c.update(1, 0.0, &mut ChaCha20Rng::seed_from_u64(1)).is_err());
    }
}
