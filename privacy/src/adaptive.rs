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
//! ## Privacy of the clip norm
//!
//! The bit query and the update query run on the same sample. The server releases the
//! *centred* count `sum_i (b_i - 1/2) + N(0, sigma_b^2)`, whose add/remove sensitivity is
//! `1/2`, so its noise multiplier is `2 sigma_b`; it adds back half the *expected* number of
//! clients, never the actual one. The update's multiplier is chosen so that the pair is one
//! Gaussian with the total multiplier `z` (Mironov et al. 2019, Section 3; the paper's
//! Section 3.1): `z_update = (z^-2 - (2 sigma_b)^-2)^(-1/2)` ([`split_noise_multiplier`]).
//! Each round is then accounted as `DpEvent::poisson_gaussian(q, z)`:
//! [`AdaptiveClip::central_round`] builds the round's [`CentralGaussian`] with the current
//! clip norm, the update's multiplier and that event.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::mechanism::{CentralGaussian, CentralGaussianConfig};
use crate::noise::GaussianNoise;

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

/// The adaptive clip norm state: the current `C` and its settings. Serialisable for
/// checkpoints; deserialising validates like [`AdaptiveClip::new`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "AdaptiveClipState")]
pub struct AdaptiveClip {
    config: AdaptiveClipConfig,
    clip: f64,
}

/// The serialised form of [`AdaptiveClip`], validated on the way in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveClipState {
    config: AdaptiveClipConfig,
    clip: f64,
}

impl TryFrom<AdaptiveClipState> for AdaptiveClip {
    type Error = Error;

    fn try_from(state: AdaptiveClipState) -> Result<Self, Error> {
        let mut clip = Self::new(state.config)?;
        clip.clip = crate::positive("clip", state.clip)?;
        Ok(clip)
    }
}

impl AdaptiveClip {
    /// Starts at `config.initial_clip`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad field.
    pub fn new(config: AdaptiveClipConfig) -> Result<Self, Error> {
        crate::positive("initial_clip", config.initial_clip)?;
        crate::probability(
            "target_unclipped_quantile",
            config.target_unclipped_quantile,
        )?;
        crate::positive("learning_rate", config.learning_rate)?;
        if !(config.count_stddev >= 0.0 && config.count_stddev.is_finite()) {
            return Err(Error::param(
                "count_stddev",
                config.count_stddev,
                "a finite number >= 0",
            ));
        }
        Ok(Self {
            config,
            clip: config.initial_clip,
        })
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

    /// The noise multiplier left for the update when the round's total is `total`
    /// (see [`split_noise_multiplier`]); `total` itself when the count is noise-free.
    ///
    /// # Errors
    /// As [`split_noise_multiplier`].
    pub fn update_noise_multiplier(&self, total: f64) -> Result<f64, Error> {
        if self.config.count_stddev == 0.0 {
            return crate::positive("total", total);
        }
        split_noise_multiplier(total, self.config.count_stddev)
    }

    /// This round's central mechanism: `base` with the current clip norm and the update's share
    /// of `base.noise_multiplier`, whose [`CentralGaussian::round_event`] is
    /// `poisson_gaussian(q, base.noise_multiplier)` (update and count together).
    ///
    /// # Errors
    /// As [`CentralGaussian::new`] and [`split_noise_multiplier`].
    pub fn central_round(&self, base: &CentralGaussianConfig) -> Result<CentralGaussian, Error> {
        let total = base.noise_multiplier;
        let update = self.update_noise_multiplier(total)?;
        let mech = CentralGaussian::new(CentralGaussianConfig {
            clip_norm: self.clip,
            ..*base
        })?;
        Ok(mech.with_accounting(update, total))
    }

    /// Updates `C` after a round in which `participants` clients reported and
    /// `unclipped_count` of them said "unclipped". Releases the centred count with discrete
    /// Gaussian noise of standard deviation (at least) `count_stddev`, normalises it by the
    /// *expected* number of clients (fixed, so the sensitivity is known) and returns the new
    /// clip norm.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `expected_clients` is not finite and positive or
    /// `unclipped_count > participants`; [`Error::Sampler`] if the random source fails.
    pub fn update<R: CryptoRng + ?Sized>(
        &mut self,
        unclipped_count: u64,
        participants: u64,
        expected_clients: f64,
        rng: &mut R,
    ) -> Result<f64, Error> {
        crate::positive("expected_clients", expected_clients)?;
        if unclipped_count > participants {
            return Err(Error::param(
                "unclipped_count",
                unclipped_count,
                "at most the number of participants",
            ));
        }
        let centred = unclipped_count as f64 - participants as f64 / 2.0;
        let noisy = if self.config.count_stddev > 0.0 {
            // Sensitivity 1/2, standard deviation sigma_b: multiplier 2 sigma_b.
            GaussianNoise::for_sensitivity(2.0 * self.config.count_stddev, 0.5, 1)?
                .add_to_scalar(centred, rng)?
        } else {
            centred
        };
        Ok(self.apply(noisy / expected_clients + 0.5))
    }

    /// The noise-free update from an exact unclipped fraction (replays and tests; not private).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `unclipped_fraction` is not finite.
    pub fn update_noise_free(&mut self, unclipped_fraction: f64) -> Result<f64, Error> {
        if !unclipped_fraction.is_finite() {
            return Err(Error::param(
                "unclipped_fraction",
                unclipped_fraction,
                "a finite number",
            ));
        }
        Ok(self.apply(unclipped_fraction))
    }

    fn apply(&mut self, fraction: f64) -> f64 {
        let c = self.clip
            * (-self.config.learning_rate * (fraction - self.config.target_unclipped_quantile))
                .exp();
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
        // C0 = 0.1, every norm 1.0, quantile 0.5, lr 0.2: C grows by e^0.1 a round.
        let mut by_fraction = AdaptiveClip::new(config()).unwrap();
        let mut by_count = AdaptiveClip::new(config()).unwrap();
        let norms = [1.0; 10];
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..20 {
            let unclipped = norms
                .iter()
                .filter(|&&n| by_fraction.is_unclipped(n))
                .count();
            by_fraction
                .update_noise_free(unclipped as f64 / norms.len() as f64)
                .unwrap();
            let unclipped = norms.iter().filter(|&&n| by_count.is_unclipped(n)).count() as u64;
            by_count.update(unclipped, 10, 10.0, &mut rng).unwrap();
        }
        for c in [by_fraction.clip_norm(), by_count.clip_norm()] {
            assert!((c - 0.1 * 2f64.exp()).abs() < 1e-12, "{c}");
            assert!((c - 0.738_905_6).abs() < 1e-7);
        }
    }

    #[test]
    fn all_unclipped_shrinks_the_norm() {
        let mut clip = AdaptiveClip::new(AdaptiveClipConfig {
            initial_clip: 2.0,
            ..config()
        })
        .unwrap();
        let c = clip
            .update(10, 10, 10.0, &mut ChaCha20Rng::seed_from_u64(1))
            .unwrap();
        assert!((c - 2.0 * (-0.1f64).exp()).abs() < 1e-12, "{c}");
    }

    #[test]
    fn converges_to_the_target_quantile_with_noise() {
        // Norms uniform on (0, 1]: the median is 0.5.
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut clip = AdaptiveClip::new(AdaptiveClipConfig {
            count_stddev: 5.0,
            ..config()
        })
        .unwrap();
        let norms: Vec<f64> = (1..=100).map(|i| f64::from(i) / 100.0).collect();
        let mut late = Vec::new();
        for round in 0..400 {
            let unclipped = norms.iter().filter(|&&n| clip.is_unclipped(n)).count() as u64;
            clip.update(unclipped, 100, 100.0, &mut rng).unwrap();
            if round >= 200 {
                late.push(clip.clip_norm());
            }
        }
        let mean = late.iter().sum::<f64>() / late.len() as f64;
        assert!((mean - 0.5).abs() < 0.1, "{mean}");
    }

    #[test]
    fn count_noise_has_the_configured_scale() {
        // With C fixed far above every norm, the released fraction is 1 + noise / m.
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let cfg = AdaptiveClipConfig {
            count_stddev: 5.0,
            learning_rate: 1.0,
            ..config()
        };
        let mut fractions = Vec::new();
        for _ in 0..4000 {
            let mut clip = AdaptiveClip::new(cfg).unwrap();
            let c = clip.update(100, 100, 100.0, &mut rng).unwrap();
            // c = 0.1 exp(-(f - 0.5)) => f = 0.5 - ln(c / 0.1).
            fractions.push(0.5 - (c / 0.1).ln());
        }
        let n = fractions.len() as f64;
        let mean = fractions.iter().sum::<f64>() / n;
        let sd = (fractions.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - 1.0).abs() < 5.0 * 0.05 / n.sqrt(), "{mean}");
        assert!((sd / 0.05 - 1.0).abs() < 0.06, "{sd}");
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
    fn central_round_uses_the_current_norm_and_accounts_the_total() {
        let clip = AdaptiveClip::new(AdaptiveClipConfig {
            count_stddev: 5.0,
            ..config()
        })
        .unwrap();
        let base = CentralGaussianConfig {
            clip_norm: 123.0,
            noise_multiplier: 1.0,
            sampling_rate: 0.05,
            expected_clients: 100.0,
        };
        let round = clip.central_round(&base).unwrap();
        assert_eq!(round.config().clip_norm, 0.1);
        let zu = split_noise_multiplier(1.0, 5.0).unwrap();
        assert_eq!(round.config().noise_multiplier, zu);
        assert_eq!(
            round.round_event(),
            crate::DpEvent::poisson_gaussian(0.05, 1.0)
        );
        // With a noise-free count the update gets the whole multiplier.
        let free = AdaptiveClip::new(config())
            .unwrap()
            .central_round(&base)
            .unwrap();
        assert_eq!(free.config().noise_multiplier, 1.0);
        // A count noise that alone would exceed the total is refused.
        let greedy = AdaptiveClip::new(AdaptiveClipConfig {
            count_stddev: 0.4,
            ..config()
        })
        .unwrap();
        assert!(greedy.central_round(&base).is_err());
    }

    #[test]
    fn bad_config_names_the_field() {
        for (cfg, name) in [
            (
                AdaptiveClipConfig {
                    initial_clip: 0.0,
                    ..config()
                },
                "initial_clip",
            ),
            (
                AdaptiveClipConfig {
                    target_unclipped_quantile: 1.5,
                    ..config()
                },
                "target_unclipped_quantile",
            ),
            (
                AdaptiveClipConfig {
                    learning_rate: -1.0,
                    ..config()
                },
                "learning_rate",
            ),
            (
                AdaptiveClipConfig {
                    count_stddev: f64::NAN,
                    ..config()
                },
                "count_stddev",
            ),
        ] {
            let e = AdaptiveClip::new(cfg).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
        let mut c = AdaptiveClip::new(config()).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        assert!(c.update_noise_free(f64::NAN).is_err());
        assert!(c.update(1, 1, 0.0, &mut rng).is_err());
        assert!(c.update(2, 1, 1.0, &mut rng).is_err());
        assert_eq!(c.clip_norm(), 0.1);
    }

    #[test]
    fn state_round_trips_and_garbage_is_refused() {
        let mut clip = AdaptiveClip::new(config()).unwrap();
        clip.update_noise_free(0.0).unwrap();
        let json = serde_json::to_string(&clip).unwrap();
        let back: AdaptiveClip = serde_json::from_str(&json).unwrap();
        assert_eq!(back, clip);
        let bad = json.replace("\"learning_rate\":0.2", "\"learning_rate\":-0.2");
        assert_ne!(bad, json);
        assert!(serde_json::from_str::<AdaptiveClip>(&bad).is_err());
        let bad = json.replace(&format!("\"clip\":{}", clip.clip_norm()), "\"clip\":0.0");
        assert_ne!(bad, json);
        assert!(serde_json::from_str::<AdaptiveClip>(&bad).is_err());
        assert!(serde_json::from_str::<AdaptiveClip>("{}").is_err());
    }
}
