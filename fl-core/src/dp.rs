//! Client-level differential privacy in the round: what a client does to its update
//! ([`privatize_update`]) and [`DpFedAvg`], the strategy that noises, normalises and accounts
//! every round against a budget.
//!
//! Two mechanisms, chosen by [`PrivacyConfig::mechanism`]:
//!
//! - **central** (DP-FedAvg, McMahan et al. 2018): each client sends its update (local minus
//!   global parameters) clipped to L2 norm `C`, with weight 1; the aggregator adds Gaussian noise
//!   of standard deviation `z C` to the sum (an exact discrete Gaussian on a fine lattice, see
//!   the `privacy` crate) and divides by the fixed expected number of clients. The aggregator is
//!   trusted with the sum; what leaves it is private.
//! - **local**: each client clips and noises its own update (sensitivity `2C`) before it leaves
//!   the machine; the aggregator averages the noisy updates.
//!
//! A central round is accounted as a Poisson-subsampled Gaussian with sampling rate `q` =
//! expected clients / members (selection here samples a fixed number without replacement;
//! accounting it as Poisson sampling with the same rate is the usual approximation, exact when
//! every member takes part, `q = 1`). A local round is a Gaussian mechanism on each member's
//! update, without amplification (the aggregator sees who took part). The [`PrivacyLedger`] authorises a round before it starts and refuses
//! the one that would take epsilon past the budget; the federation then stops cleanly. A round
//! that aborts before its noise is released spends nothing.

use std::sync::Arc;

use privacy::adaptive::AdaptiveClip;
use privacy::mechanism::{
    CentralGaussian, CentralGaussianConfig, LocalGaussian, LocalGaussianConfig,
};
use privacy::{AccountantKind, Authorization, PrivacyLedger};
use serde::{Deserialize, Serialize};

use crate::aggregate::{FRACTION_BITS, WeightedSum};
use crate::params::ParamVec;
use crate::round::{ClientId, EvaluateResult, Metrics};
use crate::strategy::{EvaluatePlan, FedAvg, FedAvgConfig, FitPlan, Strategy, StrategyError};

/// Which differential-privacy mechanism a federation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mechanism {
    /// The aggregator noises the sum of clipped updates (DP-FedAvg).
    Central,
    /// Every client noises its own clipped update.
    Local,
    /// Every client adds a share of discrete Gaussian noise to its quantised update under
    /// secure aggregation (Kairouz, Liu and Steinke 2021): the aggregator only ever sees the
    /// noised sum. Needs `[secure_aggregation]`.
    Distributed,
}

/// The `[privacy]` section of a federation file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacyConfig {
    /// Central or local noise.
    pub mechanism: Mechanism,
    /// L2 norm `C` each client's update is clipped to.
    pub clip_norm: f64,
    /// Noise multiplier `z`.
    pub noise_multiplier: f64,
    /// Total epsilon the run may spend.
    pub epsilon: f64,
    /// The delta of the guarantee.
    pub delta: f64,
    /// Accountant: `rdp` or `pld`.
    #[serde(default)]
    pub accountant: AccountantKind,
    /// Adaptive clipping (Andrew et al. 2021, central mechanism only): `clip_norm` is then only
    /// a fallback and `C` follows the noisy unclipped fraction, with part of the noise budget
    /// spent on the count (`[privacy.adaptive]`: `initial_clip`, `target_unclipped_quantile`,
    /// `learning_rate`, `count_stddev`).
    #[serde(default)]
    pub adaptive: Option<privacy::adaptive::AdaptiveClipConfig>,
}

/// The metric a client reports with a private update: 1 if its update's norm was within the
/// clip norm, 0 if it was clipped (the adaptive clip norm follows its noisy mean).
pub const UNCLIPPED_METRIC: &str = "dp_unclipped";

/// What the aggregator asks of a client's update when privacy is on.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePrivacy {
    /// Clip the update (local minus global parameters) to this L2 norm.
    pub clip_norm: f64,
    /// Local DP: add noise with this multiplier (of `2 C`) before sending; 0 for none.
    pub local_noise_multiplier: f64,
    /// Distributed DP: the noise multiplier of the summed discrete Gaussian shares the
    /// secure-aggregation codec adds; 0 for none.
    #[serde(default)]
    pub distributed_noise_multiplier: f64,
    /// Distributed DP: the fewest members whose noise shares must be in an unmasked sum (the
    /// strategy accounts each round with this many); a round with fewer survivors aborts.
    #[serde(default)]
    pub distributed_min_survivors: u32,
}

/// Turns trained parameters into the private update a client sends: `local - global`, clipped
/// to `clip_norm`, noised for local DP. Randomness comes from the operating system. Also
/// returns whether the update was within the clip norm (see [`UNCLIPPED_METRIC`]).
pub fn privatize_update(
    global: &ParamVec,
    local: &ParamVec,
    settings: &UpdatePrivacy,
) -> Result<(ParamVec, bool), privacy::Error> {
    let mut delta: Vec<f32> = local
        .values()
        .iter()
        .zip(global.values())
        .map(|(l, g)| l - g)
        .collect();
    let clipped = if settings.local_noise_multiplier > 0.0 {
        mechanism_clipped(&mut delta, settings)?
    } else {
        privacy::clip::clip_l2(&mut delta, settings.clip_norm)?
    };
    let params = ParamVec::new(global.schema().clone(), delta).expect("same length as global");
    Ok((params, !clipped.clipped))
}

fn mechanism_clipped(
    delta: &mut [f32],
    settings: &UpdatePrivacy,
) -> Result<privacy::clip::Clipped, privacy::Error> {
    LocalGaussian::new(LocalGaussianConfig {
        clip_norm: settings.clip_norm,
        noise_multiplier: settings.local_noise_multiplier,
    })?
    .privatize_update(delta, &mut privacy::noise::os_rng()?)
}

/// FedAvg with client-level differential privacy and a budget (see the [module docs](self)).
pub struct DpFedAvg {
    fedavg: FedAvg,
    config: PrivacyConfig,
    sampling_rate: f64,
    expected_clients: f64,
    ledger: PrivacyLedger,
    pending: Option<Authorization>,
    round_metrics: Metrics,
    adaptive: Option<AdaptiveClip>,
    /// The distributed mechanism's round event and the fewest survivors it assumes, fixed by
    /// the secure-aggregation codec.
    distributed: Option<(privacy::DpEvent, u32)>,
}

impl std::fmt::Debug for DpFedAvg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpFedAvg")
            .field("config", &self.config)
            .field("sampling_rate", &self.sampling_rate)
            .field("spent_epsilon", &self.ledger.spent_epsilon())
            .finish_non_exhaustive()
    }
}

impl DpFedAvg {
    /// DP-FedAvg over `members` members, selecting as `fedavg` says.
    pub fn new(
        fedavg: FedAvgConfig,
        config: PrivacyConfig,
        members: usize,
    ) -> Result<Self, privacy::Error> {
        let members = members.max(1);
        let selected = ((fedavg.fraction_fit * members as f64).ceil() as usize)
            .max(fedavg.min_fit_clients)
            .clamp(1, members);
        let sampling_rate = selected as f64 / members as f64;
        let ledger = PrivacyLedger::new(config.epsilon, config.delta, config.accountant)?;
        let adaptive = match (&config.adaptive, config.mechanism) {
            (None, _) => None,
            (Some(a), Mechanism::Central) => Some(AdaptiveClip::new(*a)?),
            (Some(_), Mechanism::Local | Mechanism::Distributed) => {
                return Err(privacy::Error::InvalidParameter {
                    name: "adaptive",
                    value: format!("mechanism = {:?}", config.mechanism),
                    expected: "adaptive clipping only with the central mechanism",
                });
            }
        };
        let this = Self {
            adaptive,
            fedavg: FedAvg::new(fedavg),
            sampling_rate,
            expected_clients: selected as f64,
            ledger,
            pending: None,
            round_metrics: Metrics::new(),
            config,
            distributed: None,
        };
        // Validate the mechanism's parameters now rather than in the first round.
        this.central()?;
        Ok(this)
    }

    fn central(&self) -> Result<CentralGaussian, privacy::Error> {
        let base = CentralGaussianConfig {
            clip_norm: self.config.clip_norm,
            noise_multiplier: self.config.noise_multiplier,
            sampling_rate: self.sampling_rate,
            expected_clients: self.expected_clients,
        };
        match &self.adaptive {
            // Update and count share the noise budget; accounted with the total multiplier.
            Some(a) => a.central_round(&base),
            None => CentralGaussian::new(base),
        }
    }

    /// The clip norm of the next round (adaptive or fixed).
    pub fn clip_norm(&self) -> f64 {
        self.adaptive
            .as_ref()
            .map_or(self.config.clip_norm, AdaptiveClip::clip_norm)
    }

    fn round_event(&self) -> Result<privacy::DpEvent, privacy::Error> {
        Ok(match self.config.mechanism {
            Mechanism::Central => self.central()?.round_event(),
            // The aggregator sees who sent what, so local DP gets no amplification by
            // sampling: each round is a Gaussian mechanism on a member's update.
            Mechanism::Local => LocalGaussian::new(LocalGaussianConfig {
                clip_norm: self.config.clip_norm,
                noise_multiplier: self.config.noise_multiplier,
            })?
            .round_event(),
            Mechanism::Distributed => {
                self.distributed.clone().map(|(e, _)| e).ok_or_else(|| {
                    privacy::Error::InvalidParameter {
                        name: "mechanism",
                        value: "\"distributed\"".into(),
                        expected: "a [secure_aggregation] section (the distributed mechanism adds \
                               its noise inside secure aggregation)",
                    }
                })?
            }
        })
    }

    /// Sets up the distributed mechanism for a model of `dim` values under `secure`: the
    /// codec every round will use ([`crate::secure::distributed_codec`]) fixes the integer
    /// scale, and with it the round's zCDP event (Kairouz et al. 2021, Theorem 1, with the
    /// noise of the fewest survivors a round may unmask with).
    pub fn with_secure_aggregation(
        mut self,
        secure: &crate::secure::SecureAggregationConfig,
        dim: usize,
    ) -> Result<Self, privacy::Error> {
        if self.config.mechanism != Mechanism::Distributed {
            return Ok(self);
        }
        let n = self.expected_clients as usize;
        let min = crate::secure::min_survivors(n, secure.dropout_rate);
        let codec = crate::secure::distributed_codec(
            n,
            self.config.clip_norm,
            self.config.noise_multiplier,
            min,
            secure.modulus_bits,
            dim,
        )
        .map_err(|e| privacy::Error::InvalidParameter {
            name: "secure_aggregation",
            value: e.to_string(),
            expected: "a codec that fits the distributed noise in the modulus",
        })?;
        let padded = secure_agg::Codec::new(codec.clone(), dim)
            .map_err(|e| privacy::Error::InvalidParameter {
                name: "secure_aggregation",
                value: e.to_string(),
                expected: "a valid codec",
            })?
            .encoded_len();
        let mechanism = privacy::mechanism::DistributedDiscreteGaussian::new(
            privacy::mechanism::DistributedDiscreteGaussianConfig {
                clip_norm: self.config.clip_norm,
                noise_multiplier: self.config.noise_multiplier,
                min_surviving_clients: min as u32,
                scale: codec.scale,
                expected_clients: self.expected_clients,
            },
        )?;
        self.distributed = Some((mechanism.round_event(padded)?, min as u32));
        Ok(self)
    }

    /// Replays `rounds` committed rounds into the ledger, as after a restart from a checkpoint
    /// whose manifest recorded them (metric `dp_rounds`). Fails if they exceed the budget.
    pub fn restore(&mut self, rounds: u64) -> Result<(), privacy::Error> {
        if rounds == 0 {
            return Ok(());
        }
        let event = self.round_event()?;
        let auth = self.ledger.authorize_rounds(&event, rounds)?;
        self.ledger.commit(auth)?;
        Ok(())
    }

    /// Epsilon spent so far.
    pub fn spent_epsilon(&self) -> f64 {
        self.ledger.spent_epsilon()
    }

    /// The ledger (serialisable, for checkpoints).
    pub fn ledger(&self) -> &PrivacyLedger {
        &self.ledger
    }

    /// The sampling rate rounds are accounted with.
    pub fn sampling_rate(&self) -> f64 {
        self.sampling_rate
    }
}

impl Strategy for DpFedAvg {
    fn name(&self) -> &str {
        "dp-fedavg"
    }

    fn authorize_round(&mut self, _round: u64) -> Result<(), String> {
        let event = self.round_event().map_err(|e| e.to_string())?;
        let auth = self.ledger.authorize(&event).map_err(|e| e.to_string())?;
        self.pending = Some(auth);
        Ok(())
    }

    fn configure_fit(&mut self, round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        let mut plan = self.fedavg.configure_fit(round, available, round_seed);
        plan.config.privacy = Some(UpdatePrivacy {
            clip_norm: self.clip_norm(),
            local_noise_multiplier: match self.config.mechanism {
                Mechanism::Local => self.config.noise_multiplier,
                Mechanism::Central | Mechanism::Distributed => 0.0,
            },
            distributed_noise_multiplier: match self.config.mechanism {
                Mechanism::Distributed => self.config.noise_multiplier,
                Mechanism::Central | Mechanism::Local => 0.0,
            },
            distributed_min_survivors: self.distributed.as_ref().map_or(0, |(_, m)| *m),
        });
        plan
    }

    fn aggregate_fit(
        &mut self,
        _round: u64,
        current: &ParamVec,
        results: WeightedSum,
    ) -> Result<ParamVec, StrategyError> {
        crate::strategy::same_schema(current, &results)?;
        if results.count() == 0 {
            return Err(StrategyError::NoResults);
        }
        let auth = self
            .pending
            .take()
            .ok_or_else(|| StrategyError::Invalid("round was not authorised".into()))?;
        let participants = results.count() as u64;
        let unclipped_fraction = results
            .mean_metrics()
            .get(UNCLIPPED_METRIC)
            .copied()
            .unwrap_or(0.0);
        let update: Vec<f32> = match self.config.mechanism {
            Mechanism::Central => {
                let scale = (1u64 << FRACTION_BITS) as f64;
                let mut sum: Vec<f32> = results
                    .into_raw()
                    .map(|s| (s as f64 / scale) as f32)
                    .collect();
                let mut rng =
                    privacy::noise::os_rng().map_err(|e| StrategyError::Invalid(e.to_string()))?;
                self.central()
                    .and_then(|m| m.privatize_sum(&mut sum, &mut rng))
                    .map_err(|e| StrategyError::Invalid(format!("noise: {e}")))?;
                sum
            }
            // The sum arrived noised from secure aggregation; divide by the fixed expected
            // count, as the central mechanism does.
            Mechanism::Distributed => {
                let scale = (1u64 << FRACTION_BITS) as f64 * self.expected_clients;
                results
                    .into_raw()
                    .map(|s| (s as f64 / scale) as f32)
                    .collect()
            }
            Mechanism::Local => results
                .into_mean()
                .ok_or(StrategyError::NoResults)?
                .values()
                .to_vec(),
        };
        let values = current
            .values()
            .iter()
            .zip(&update)
            .map(|(c, u)| c + u)
            .collect();
        let next = ParamVec::new(Arc::clone(current.schema()), values)
            .map_err(|e| StrategyError::Invalid(e.to_string()))?;
        let spent = self
            .ledger
            .commit(auth)
            .map_err(|e| StrategyError::Invalid(e.to_string()))?;
        self.round_metrics = Metrics::from([
            ("epsilon".to_string(), spent),
            ("delta".to_string(), self.config.delta),
            (
                "dp_rounds".to_string(),
                self.ledger.committed_rounds() as f64,
            ),
            ("clip_norm".to_string(), self.clip_norm()),
        ]);
        if let Some(adaptive) = &mut self.adaptive {
            // The count's noise is part of this round's (already committed) event.
            let unclipped =
                (unclipped_fraction.clamp(0.0, 1.0) * participants as f64).round() as u64;
            let mut rng =
                privacy::noise::os_rng().map_err(|e| StrategyError::Invalid(e.to_string()))?;
            let next_clip = adaptive
                .update(unclipped, participants, self.expected_clients, &mut rng)
                .map_err(|e| StrategyError::Invalid(format!("adaptive clipping: {e}")))?;
            self.round_metrics
                .insert("next_clip_norm".into(), next_clip);
        }
        Ok(next)
    }

    fn round_metrics(&self) -> Metrics {
        self.round_metrics.clone()
    }

    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan {
        self.fedavg.configure_evaluate(round, available, round_seed)
    }

    fn aggregate_evaluate(
        &mut self,
        round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult> {
        self.fedavg.aggregate_evaluate(round, results)
    }
}
