//! Client-level differential privacy in the round: what a client does to its update
//! ([`privatize_update`]) and [`DifferentialPrivacy`], the wrapper around any sum-based
//! strategy that asks members for clipped differences, noises and normalises their sum, and
//! accounts every round against a budget (the shape of Flower's `DifferentialPrivacy*`
//! wrappers). The wrapped strategy (FedAvg, optionally with a server optimiser) then turns the
//! private mean update into the next model.
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

use crate::params::ParamVec;
use crate::round::{ClientId, EvaluateResult, Metrics};
use crate::strategy::{
    EvaluatePlan, FitPlan, Refusal, RoundUpdates, Strategy, StrategyConfig, StrategyError,
    UpdateForm, UpdateSum,
};

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

/// Client-level differential privacy and a budget around a sum-based strategy (see the
/// [module docs](self)).
pub struct DifferentialPrivacy {
    inner: Box<dyn Strategy>,
    name: String,
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

impl std::fmt::Debug for DifferentialPrivacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DifferentialPrivacy")
            .field("inner", &self.inner.name())
            .field("config", &self.config)
            .field("sampling_rate", &self.sampling_rate)
            .field("spent_epsilon", &self.ledger.spent_epsilon())
            .finish_non_exhaustive()
    }
}

impl DifferentialPrivacy {
    /// Wraps `inner`, a sum-based strategy that selects as `selection` says, for a federation of
    /// `members` members (DP-FedAvg when `inner` is [`FedAvg`](crate::FedAvg)). Refuses a
    /// per-member strategy: the noise is added to the sum, so a rule that reads each member's
    /// update would see them un-noised.
    pub fn new(
        inner: Box<dyn Strategy>,
        selection: &StrategyConfig,
        config: PrivacyConfig,
        members: usize,
    ) -> Result<Self, privacy::Error> {
        if inner.update_form() != UpdateForm::Sum {
            return Err(privacy::Error::InvalidParameter {
                name: "strategy",
                value: inner.name().to_string(),
                expected: "a sum-based strategy (differential privacy noises the sum of updates)",
            });
        }
        let members = members.max(1);
        let selected = selection.expected_fit_clients(members);
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
            name: format!("dp-{}", inner.name()),
            inner,
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

    /// DP-FedAvg (McMahan et al. 2018): the wrapper around [`FedAvg`](crate::FedAvg) selecting
    /// as `selection` says.
    pub fn fedavg(
        selection: StrategyConfig,
        config: PrivacyConfig,
        members: usize,
    ) -> Result<Self, privacy::Error> {
        let inner = Box::new(crate::FedAvg::new(selection.clone()));
        Self::new(inner, &selection, config, members)
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
    /// whose manifest recorded them (its `privacy.rounds`). Fails if they exceed the budget.
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

impl Strategy for DifferentialPrivacy {
    fn name(&self) -> &str {
        &self.name
    }

    fn resume(&mut self, state: &crate::strategy::ResumeState) -> Result<(), Refusal> {
        self.inner.resume(state)?;
        Ok(self.restore(state.privacy_rounds)?)
    }

    fn authorize_round(&mut self, round: u64) -> Result<(), Refusal> {
        self.inner.authorize_round(round)?;
        let event = self.round_event()?;
        let auth = self.ledger.authorize(&event)?;
        self.pending = Some(auth);
        Ok(())
    }

    fn configure_fit(&mut self, round: u64, available: &[ClientId], round_seed: u64) -> FitPlan {
        let mut plan = self.inner.configure_fit(round, available, round_seed);
        plan.privacy = Some(UpdatePrivacy {
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
        round: u64,
        current: &ParamVec,
        updates: RoundUpdates,
    ) -> Result<ParamVec, StrategyError> {
        let RoundUpdates::Sum(sum) = updates else {
            return Err(StrategyError::WrongForm {
                needed: UpdateForm::Sum,
            });
        };
        if sum.count() == 0 {
            return Err(StrategyError::NoResults);
        }
        let auth = self
            .pending
            .take()
            .ok_or_else(|| StrategyError::Invalid("round was not authorised".into()))?;
        let participants = sum.count() as u64;
        let metrics = sum.mean_metrics();
        let unclipped_fraction = metrics.get(UNCLIPPED_METRIC).copied().unwrap_or(0.0);
        let update: Vec<f32> = match self.config.mechanism {
            Mechanism::Central => {
                let mut sum = sum.into_delta_sum(1.0)?;
                let mut rng =
                    privacy::noise::os_rng().map_err(|e| StrategyError::Invalid(e.to_string()))?;
                self.central()
                    .and_then(|m| m.privatize_sum(&mut sum, &mut rng))
                    .map_err(|e| StrategyError::Invalid(format!("noise: {e}")))?;
                sum
            }
            // The sum arrived noised from secure aggregation; divide by the fixed expected
            // count, as the central mechanism does.
            Mechanism::Distributed => sum.into_delta_sum(self.expected_clients)?,
            Mechanism::Local => sum.into_mean_delta(current)?.values().to_vec(),
        };
        let update = ParamVec::new(Arc::clone(current.schema()), update)
            .map_err(|e| StrategyError::Invalid(e.to_string()))?;
        let next = self.inner.aggregate_fit(
            round,
            current,
            RoundUpdates::Sum(UpdateSum::from_mean_delta(
                update,
                participants as usize,
                metrics,
            )),
        )?;
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
        let mut metrics = self.inner.round_metrics();
        metrics.extend(self.round_metrics.clone());
        metrics
    }

    fn configure_evaluate(
        &mut self,
        round: u64,
        available: &[ClientId],
        round_seed: u64,
    ) -> EvaluatePlan {
        self.inner.configure_evaluate(round, available, round_seed)
    }

    fn aggregate_evaluate(
        &mut self,
        round: u64,
        results: &[(ClientId, EvaluateResult)],
    ) -> Option<EvaluateResult> {
        self.inner.aggregate_evaluate(round, results)
    }
}
