//! The three places noise can enter a round, as types the round engine drives.
//!
//! - [`CentralGaussian`]: DP-FedAvg with central noise (McMahan, Ramage, Talwar and Zhang
//!   2018). Each client's update is clipped to L2 norm `C`; the server adds `N(0, z^2 C^2)` to
//!   the *sum* and divides by the *expected* number of clients `q N` (fixed, so one client
//!   moves the result by at most `C / (q N)`). With Poisson sampling of clients at rate `q`
//!   each round is [`DpEvent::poisson_gaussian`]`(q, z)`, client-level, add/remove-one.
//! - [`LocalGaussian`]: local DP. Each client clips and noises its own update before it leaves
//!   the device, so the guarantee holds against the server too. Any two clipped updates are at
//!   most `2C` apart, so the noise is `N(0, z^2 (2C)^2)` and each round the client takes part
//!   in is `DpEvent::Gaussian { noise_multiplier: z }` in *that client's* ledger (sampling does
//!   not amplify: the server knows who took part).
//! - [`DistributedDiscreteGaussian`]: the distributed discrete Gaussian under secure
//!   aggregation (Kairouz, Liu and Steinke 2021). Each client clips, scales to integers and adds
//!   a discrete Gaussian *share*; shares are sized so that the sum of at least
//!   `min_surviving_clients` of them carries the whole noise. The server sees only the sum.
//!   Rounds are accounted as zCDP ([`DpEvent::ZCdp`], RDP accountant) by the paper's
//!   Theorem 1 / Proposition 14, without amplification by sampling.
//!
//! These types do arithmetic only: which clients were sampled, who survived, the secure
//! aggregation itself and its modulus are the engine's and the `secure-agg` crate's business.

use rand::CryptoRng;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::accounting::DpEvent;
use crate::clip::{Clipped, clip_l2};
use crate::noise::{DiscreteGaussian, GaussianNoise};

/// Settings of central DP-FedAvg.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CentralGaussianConfig {
    /// Clip norm `C` for each client's update (L2).
    pub clip_norm: f64,
    /// Noise multiplier `z`: the noise on the sum has standard deviation `z C`.
    pub noise_multiplier: f64,
    /// Probability `q` that a given client is sampled in a round (Poisson sampling).
    pub sampling_rate: f64,
    /// The expected number of sampled clients `q N` that the noisy sum is divided by.
    pub expected_clients: f64,
}

/// Central DP-FedAvg for one round: clip each update, noise the sum, normalise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CentralGaussian {
    config: CentralGaussianConfig,
    /// The noise multiplier the round is accounted with (larger than the update's when an
    /// adaptive clip norm shares the budget, see [`crate::adaptive`]).
    accounted_noise_multiplier: f64,
}

impl CentralGaussian {
    /// Validates `config`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field that is not finite and positive, or
    /// a `sampling_rate` outside `(0, 1]`.
    pub fn new(config: CentralGaussianConfig) -> Result<Self, Error> {
        crate::positive("clip_norm", config.clip_norm)?;
        crate::positive("noise_multiplier", config.noise_multiplier)?;
        if !(config.sampling_rate > 0.0 && config.sampling_rate <= 1.0) {
            return Err(Error::param(
                "sampling_rate",
                config.sampling_rate,
                "a rate in (0, 1]",
            ));
        }
        crate::positive("expected_clients", config.expected_clients)?;
        Ok(Self {
            config,
            accounted_noise_multiplier: config.noise_multiplier,
        })
    }

    /// A round whose update noise is `update_noise_multiplier` and that is accounted with the
    /// larger `accounted_noise_multiplier` (adaptive clipping).
    pub(crate) fn with_accounting(mut self, update_noise_multiplier: f64, accounted: f64) -> Self {
        self.config.noise_multiplier = update_noise_multiplier;
        self.accounted_noise_multiplier = accounted;
        self
    }

    /// The settings (with the update's noise multiplier).
    pub fn config(&self) -> &CentralGaussianConfig {
        &self.config
    }

    /// Clips one client's update to `C` in place.
    ///
    /// # Errors
    /// As [`clip_l2`].
    pub fn clip(&self, update: &mut [f32]) -> Result<Clipped, Error> {
        clip_l2(update, self.config.clip_norm)
    }

    /// The noise for a sum of `dim`-coordinate clipped updates.
    ///
    /// # Errors
    /// As [`GaussianNoise::for_sensitivity`].
    pub fn noise(&self, dim: usize) -> Result<GaussianNoise, Error> {
        GaussianNoise::for_sensitivity(self.config.noise_multiplier, self.config.clip_norm, dim)
    }

    /// Turns the sum of the round's clipped updates into the private average, in place: adds
    /// the noise, then divides by `expected_clients`. Returns the noise that was added.
    ///
    /// # Errors
    /// As [`GaussianNoise::add_to`]; on error `sum` is unchanged.
    pub fn privatize_sum<R: CryptoRng + ?Sized>(
        &self,
        sum: &mut [f32],
        rng: &mut R,
    ) -> Result<GaussianNoise, Error> {
        let noise = self.noise(sum.len())?;
        noise.add_to(sum, rng)?;
        let scale = 1.0 / self.config.expected_clients;
        for v in sum.iter_mut() {
            *v = (f64::from(*v) * scale) as f32;
        }
        Ok(noise)
    }

    /// The round's privacy event: `poisson_gaussian(q, z)`.
    pub fn round_event(&self) -> DpEvent {
        DpEvent::poisson_gaussian(self.config.sampling_rate, self.accounted_noise_multiplier)
    }
}

/// Settings of local DP.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalGaussianConfig {
    /// Clip norm `C` for the client's update (L2).
    pub clip_norm: f64,
    /// Noise multiplier `z`: the noise has standard deviation `2 z C`.
    pub noise_multiplier: f64,
}

/// Local DP: a client clips and noises its own update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalGaussian {
    config: LocalGaussianConfig,
}

impl LocalGaussian {
    /// Validates `config`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first field that is not finite and positive.
    pub fn new(config: LocalGaussianConfig) -> Result<Self, Error> {
        crate::positive("clip_norm", config.clip_norm)?;
        crate::positive("noise_multiplier", config.noise_multiplier)?;
        Ok(Self { config })
    }

    /// The settings.
    pub fn config(&self) -> &LocalGaussianConfig {
        &self.config
    }

    /// Clips `update` to `C` and adds noise for sensitivity `2C`, in place.
    ///
    /// # Errors
    /// As [`clip_l2`] and [`GaussianNoise::add_to`]; on error `update` is unchanged.
    pub fn privatize_update<R: CryptoRng + ?Sized>(
        &self,
        update: &mut [f32],
        rng: &mut R,
    ) -> Result<Clipped, Error> {
        let noise = GaussianNoise::for_sensitivity(
            self.config.noise_multiplier,
            2.0 * self.config.clip_norm,
            update.len(),
        )?;
        let mut work = update.to_vec();
        let clipped = clip_l2(&mut work, self.config.clip_norm)?;
        noise.add_to(&mut work, rng)?;
        update.copy_from_slice(&work);
        Ok(clipped)
    }

    /// The event for one round this client takes part in: `Gaussian { z }`.
    pub fn round_event(&self) -> DpEvent {
        DpEvent::Gaussian {
            noise_multiplier: self.config.noise_multiplier,
        }
    }
}

/// Settings of the distributed discrete Gaussian.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistributedDiscreteGaussianConfig {
    /// Clip norm `C` for each client's update (L2), before scaling.
    pub clip_norm: f64,
    /// Noise multiplier `z` of the summed noise relative to the integer sensitivity.
    pub noise_multiplier: f64,
    /// The fewest clients whose shares are guaranteed to be in the sum; a round with fewer
    /// survivors must abort before unmasking.
    pub min_surviving_clients: u32,
    /// Integer units per unit of update (`1 / gamma` in the paper): an update `x` is sent as
    /// `round(scale · x)`.
    pub scale: f64,
    /// The expected number of clients the decoded sum is divided by.
    pub expected_clients: f64,
}

/// The distributed discrete Gaussian: quantise, add a noise share, decode the sum.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedDiscreteGaussian {
    config: DistributedDiscreteGaussianConfig,
}

impl DistributedDiscreteGaussian {
    /// Validates `config`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] naming the first bad field (every float finite and
    /// positive, at least one surviving client, `scale · clip_norm < 2^52`).
    pub fn new(config: DistributedDiscreteGaussianConfig) -> Result<Self, Error> {
        crate::positive("clip_norm", config.clip_norm)?;
        crate::positive("noise_multiplier", config.noise_multiplier)?;
        if config.min_surviving_clients == 0 {
            return Err(Error::param("min_surviving_clients", 0, "at least 1"));
        }
        crate::positive("scale", config.scale)?;
        if config.scale * config.clip_norm >= 2f64.powi(52) {
            return Err(Error::param(
                "scale",
                config.scale,
                "scale * clip_norm < 2^52",
            ));
        }
        crate::positive("expected_clients", config.expected_clients)?;
        Ok(Self { config })
    }

    /// The settings.
    pub fn config(&self) -> &DistributedDiscreteGaussianConfig {
        &self.config
    }

    /// The L2 sensitivity of the integer sum for `dim` coordinates: `scale · C + sqrt(dim) / 2`
    /// (rounding moves each coordinate by at most one half).
    pub fn integer_sensitivity(&self, dim: usize) -> f64 {
        self.config.scale * self.config.clip_norm + (dim as f64).sqrt() / 2.0
    }

    /// The sampler for one client's noise share: `N_Z(0, sigma^2)` per coordinate with
    /// `sigma^2 >= (z Δ)^2 / min_surviving_clients`, `Δ` the integer sensitivity.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if the share's sigma is below 1/2 (raise `scale`) or too
    /// large for the sampler.
    pub fn share_sampler(&self, dim: usize) -> Result<DiscreteGaussian, Error> {
        let sigma = self.config.noise_multiplier * self.integer_sensitivity(dim)
            / f64::from(self.config.min_surviving_clients).sqrt();
        if sigma.is_nan() || sigma < 0.5 {
            return Err(Error::param(
                "scale",
                self.config.scale,
                "large enough that each client's noise share has sigma >= 1/2",
            ));
        }
        DiscreteGaussian::from_sigma(sigma)
    }

    /// Client side: clips `update` to `C`, scales and rounds it to integers and adds this
    /// client's noise share. The result goes into secure aggregation.
    ///
    /// # Errors
    /// As [`clip_l2`] and [`DistributedDiscreteGaussian::share_sampler`], and
    /// [`Error::Sampler`] if sampling fails.
    pub fn encode_update<R: CryptoRng + ?Sized>(
        &self,
        update: &[f32],
        rng: &mut R,
    ) -> Result<(Vec<i64>, Clipped), Error> {
        let sampler = self.share_sampler(update.len())?;
        let mut work = update.to_vec();
        let clipped = clip_l2(&mut work, self.config.clip_norm)?;
        let mut out = vec![0_i64; work.len()];
        sampler.fill(rng, &mut out)?;
        for (o, &v) in out.iter_mut().zip(&work) {
            // |scale * v| <= scale * C < 2^52: exact in f64 and in i64.
            let q = (f64::from(v) * self.config.scale).round() as i64;
            *o = o
                .checked_add(q)
                .ok_or_else(|| Error::Sampler("noise share overflowed".into()))?;
        }
        Ok((out, clipped))
    }

    /// Server side: decodes the securely aggregated integer sum into the average update
    /// (divides by `scale` and by `expected_clients`).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `out` and `sum` differ in length.
    pub fn decode_sum(&self, sum: &[i64], out: &mut [f32]) -> Result<(), Error> {
        if sum.len() != out.len() {
            return Err(Error::param(
                "out",
                out.len(),
                "as many coordinates as the sum",
            ));
        }
        let factor = 1.0 / (self.config.scale * self.config.expected_clients);
        for (o, &s) in out.iter_mut().zip(sum) {
            *o = (s as f64 * factor) as f32;
        }
        Ok(())
    }

    /// The round's privacy event for `dim` coordinates when at least `min_surviving_clients`
    /// shares are in the sum: zCDP with `rho = (Δ / (sqrt(n) sigma) + sqrt(dim) tau)^2 / 2`,
    /// `tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k + 1))` (Kairouz et al. 2021,
    /// Theorem 1), with `sigma^2` the share variance actually sampled.
    ///
    /// # Errors
    /// As [`DistributedDiscreteGaussian::share_sampler`].
    pub fn round_event(&self, dim: usize) -> Result<DpEvent, Error> {
        let (num, den) = self.share_sampler(dim)?.variance();
        let variance = num as f64 / den as f64;
        let n = self.config.min_surviving_clients;
        let tau = 10.0
            * (1..n)
                .map(|k| {
                    let k = f64::from(k);
                    (-2.0 * std::f64::consts::PI.powi(2) * variance * k / (k + 1.0)).exp()
                })
                .sum::<f64>();
        let eps = self.integer_sensitivity(dim) / (f64::from(n) * variance).sqrt()
            + (dim as f64).sqrt() * tau;
        Ok(DpEvent::ZCdp {
            rho: eps * eps / 2.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clip::l2_norm;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn central() -> CentralGaussianConfig {
        CentralGaussianConfig {
            clip_norm: 1.0,
            noise_multiplier: 1.1,
            sampling_rate: 0.01,
            expected_clients: 100.0,
        }
    }

    #[test]
    fn central_noise_is_z_c_on_the_sum_then_normalised() {
        let mech = CentralGaussian::new(central()).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut sum = vec![50.0_f32; 50_000];
        let noise = mech.privatize_sum(&mut sum, &mut rng).unwrap();
        assert!((noise.stddev() / 1.1 - 1.0).abs() < 1e-4);
        let n = sum.len() as f64;
        let mean = sum.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let sd = (sum
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!((mean - 0.5).abs() < 5.0 * 0.011 / n.sqrt(), "{mean}");
        assert!((sd / 0.011 - 1.0).abs() < 0.02, "{sd}");
        assert_eq!(mech.round_event(), DpEvent::poisson_gaussian(0.01, 1.1));
    }

    #[test]
    fn central_config_is_validated() {
        for (cfg, name) in [
            (
                CentralGaussianConfig {
                    clip_norm: f64::NAN,
                    ..central()
                },
                "clip_norm",
            ),
            (
                CentralGaussianConfig {
                    noise_multiplier: -1.0,
                    ..central()
                },
                "noise_multiplier",
            ),
            (
                CentralGaussianConfig {
                    sampling_rate: 1.5,
                    ..central()
                },
                "sampling_rate",
            ),
            (
                CentralGaussianConfig {
                    sampling_rate: 0.0,
                    ..central()
                },
                "sampling_rate",
            ),
            (
                CentralGaussianConfig {
                    expected_clients: 0.0,
                    ..central()
                },
                "expected_clients",
            ),
        ] {
            let e = CentralGaussian::new(cfg).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn local_update_is_clipped_then_noised_for_twice_the_bound() {
        let mech = LocalGaussian::new(LocalGaussianConfig {
            clip_norm: 0.5,
            noise_multiplier: 2.0,
        })
        .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let mut update = vec![0.0_f32; 40_000];
        update[0] = 100.0;
        let clipped = mech.privatize_update(&mut update, &mut rng).unwrap();
        assert!(clipped.clipped && clipped.original_norm == 100.0);
        // Coordinate 0 was clipped to 0.5; the rest is noise of sd 2 * 2 * 0.5 = 2.
        let n = (update.len() - 1) as f64;
        let sd = (update[1..]
            .iter()
            .map(|&x| f64::from(x).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        assert!((sd / 2.0 - 1.0).abs() < 0.02, "{sd}");
        assert_eq!(
            mech.round_event(),
            DpEvent::Gaussian {
                noise_multiplier: 2.0
            }
        );
        let mut bad = vec![f32::NAN, 1.0];
        assert!(mech.privatize_update(&mut bad, &mut rng).is_err());
        assert!(bad[0].is_nan() && bad[1] == 1.0);
        assert!(
            LocalGaussian::new(LocalGaussianConfig {
                clip_norm: 0.0,
                noise_multiplier: 1.0
            })
            .is_err()
        );
    }

    fn ddg() -> DistributedDiscreteGaussianConfig {
        DistributedDiscreteGaussianConfig {
            clip_norm: 1.0,
            noise_multiplier: 1.0,
            min_surviving_clients: 8,
            scale: 1024.0,
            expected_clients: 10.0,
        }
    }

    #[test]
    fn distributed_shares_add_up_to_the_central_noise() {
        let mech = DistributedDiscreteGaussian::new(ddg()).unwrap();
        let dim = 4096;
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        // Eight survivors send zero updates: the sum is pure noise of sd z * Δ.
        let mut sum = vec![0_i64; dim];
        for _ in 0..8 {
            let (enc, _) = mech.encode_update(&vec![0.0; dim], &mut rng).unwrap();
            for (s, e) in sum.iter_mut().zip(enc) {
                *s += e;
            }
        }
        let delta = mech.integer_sensitivity(dim);
        assert_eq!(delta, 1024.0 + 32.0);
        let sd = (sum.iter().map(|&x| (x as f64).powi(2)).sum::<f64>() / dim as f64).sqrt();
        assert!((sd / delta - 1.0).abs() < 0.05, "{sd} vs {delta}");
        // The event is (almost exactly) the Gaussian's zCDP: rho = 1 / (2 z^2).
        let DpEvent::ZCdp { rho } = mech.round_event(dim).unwrap() else {
            panic!()
        };
        assert!(rho <= 0.5 && rho > 0.5 * (1.0 - 1e-6), "{rho}");
    }

    #[test]
    fn distributed_encoding_round_trips_the_clipped_average() {
        let mech = DistributedDiscreteGaussian::new(DistributedDiscreteGaussianConfig {
            noise_multiplier: 1e-3,
            min_surviving_clients: 1,
            scale: 1e6,
            ..ddg()
        })
        .unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        let update = vec![3.0_f32, 4.0];
        let (enc, clipped) = mech.encode_update(&update, &mut rng).unwrap();
        assert!(clipped.clipped);
        let mut out = vec![0.0_f32; 2];
        mech.decode_sum(&enc, &mut out).unwrap();
        // (0.6, 0.8) / expected_clients, noise sd 1e-3 * 1e6 / (1e6 * 10) = 1e-4.
        assert!(
            (out[0] - 0.06).abs() < 1e-3 && (out[1] - 0.08).abs() < 1e-3,
            "{out:?}"
        );
        assert!(l2_norm(&out) <= 0.1 + 1e-3);
        assert!(mech.decode_sum(&enc, &mut [0.0]).is_err());
    }

    #[test]
    fn distributed_config_is_validated() {
        for (cfg, name) in [
            (
                DistributedDiscreteGaussianConfig {
                    min_surviving_clients: 0,
                    ..ddg()
                },
                "min_surviving",
            ),
            (
                DistributedDiscreteGaussianConfig {
                    scale: f64::INFINITY,
                    ..ddg()
                },
                "scale",
            ),
            (
                DistributedDiscreteGaussianConfig {
                    scale: 1e300,
                    ..ddg()
                },
                "scale",
            ),
            (
                DistributedDiscreteGaussianConfig {
                    noise_multiplier: 0.0,
                    ..ddg()
                },
                "noise",
            ),
        ] {
            let e = DistributedDiscreteGaussian::new(cfg).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
        // Shares below sigma 1/2 are refused: the distributed analysis needs sigma >= 1/2.
        let tiny = DistributedDiscreteGaussian::new(DistributedDiscreteGaussianConfig {
            noise_multiplier: 0.01,
            scale: 1.0,
            ..ddg()
        })
        .unwrap();
        assert!(tiny.share_sampler(1).is_err());
        assert!(tiny.round_event(1).is_err());
    }
}
