//! SecAgg+ as an update protocol ([`SecAgg`], its [`Collector`] the round's
//! [`SecureStage`]): relays the protocol's steps between the selected members and the
//! `secure-agg` server state machine, and decodes the unmasked sum into the
//! [`WeightedSum`](fl_core::WeightedSum) the strategy aggregates.
//!
//! Steps, each closed when every member still in the protocol answered or its deadline
//! passed (members that miss a step are dropped, as in a plain round):
//!
//! 1. **advertise** (step timeout): members send signed public keys;
//! 2. **share keys** (step timeout): the key directory goes out, members send encrypted shares;
//! 3. **masked input** (fit timeout): shares are relayed, members train and send masked
//!    updates;
//! 4. **unmask** (step timeout): survivors and dropouts are announced, members reveal the
//!    shares that remove the masks.
//!
//! A step that leaves too few members for the protocol aborts the round cleanly: the global
//! model is unchanged and the next round runs.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fl_core::protocol::{SecureClientStep, SecureServerStep};
use fl_core::secure::{
    MemberVerifier, SecureAggregationConfig, SecureFit, SecureProtocol, Weighting, decode_sum,
    distributed_codec, min_survivors, vector_len,
};
use fl_core::{
    Address, ClientId, ClientMessage, FitPlan, Metrics, ParamVec, ServerMessage, UpdateForm,
    UploadProtocol,
};
use secure_agg::{
    GraphParams, MaskedInputHeader, SecAggParams, ServerRound, SharePackets, SignedAdvertisement,
    UnmaskResponse,
};

use super::collect::Collected;
use super::collector::{
    Collector, Next, Progress, StageContext, Started, Unexpected, UpdateProtocol,
};
use super::{AbortReason, Engine};

/// Secure aggregation for an [`Engine`]: settings, the federation's member list (client id =
/// position, to check signatures) and the run's session binding.
#[derive(Debug, Clone)]
pub struct SecureSetup {
    /// The federation's `[secure_aggregation]` settings.
    pub config: SecureAggregationConfig,
    /// Member addresses; client id `i` signs as `members[i]`.
    pub members: Arc<Vec<Address>>,
    /// Random per run: binds every signed protocol message to this run (with the round).
    pub session: [u8; 32],
    /// The decryption committee, for `protocol = "he"`.
    pub committee: Option<super::HeCommittee>,
}

/// Where a secure fit stage is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Advertise,
    ShareKeys,
    MaskedInput,
    Unmask,
}

/// What a closed step sends: payloads per recipient, their step, the next step and its
/// deadline.
type NextStep = (Vec<(u32, Vec<u8>)>, SecureServerStep, Step, Duration);

/// The protocol state of one secure fit stage.
pub(super) struct SecureStage {
    fit: SecureFit,
    server: ServerRound,
    /// A round with fewer masked inputs aborts before unmasking (the distributed noise is
    /// calibrated to this many shares).
    min_survivors: usize,
    step: Step,
    /// Clients that completed the current step.
    answered: BTreeSet<ClientId>,
    /// Sums of the masked inputs' metrics (each member counted once).
    metrics: MetricSums,
    /// Checks the members' signatures on their protocol messages.
    verifier: MemberVerifier,
    /// Time members have for each step but the masked input.
    step_timeout: Duration,
}

impl SecureSetup {
    /// Sets up the protocol for round `round`'s selected clients.
    pub(super) fn start_stage(
        &self,
        round: u64,
        plan: &FitPlan,
        params: &ParamVec,
    ) -> Result<Box<SecureStage>, String> {
        let n = plan.clients.len();
        if n < 3 {
            return Err(format!(
                "secure aggregation needs at least 3 participants (one member could subtract \
                 its own update from a sum of two), the strategy selected {n}"
            ));
        }
        let participants = plan
            .clients
            .iter()
            .map(|c| u32::try_from(c.0).map_err(|_| format!("client id {c} exceeds 2^32")))
            .collect::<Result<Vec<u32>, _>>()?;
        let bits = self.config.modulus_bits;
        let (weighting, clip_norm) = self.weighting(plan, n, bits)?;
        let dim = params.values().len();
        let distributed = plan.privacy.map_or(0.0, |p| p.distributed_noise_multiplier);
        // The strategy accounted the round with at least this many noise shares in the sum.
        let accounted = plan
            .privacy
            .map_or(0, |p| p.distributed_min_survivors as usize);
        let min_survivors = min_survivors(n, self.config.dropout_rate).max(accounted);
        if min_survivors > n {
            return Err(format!(
                "distributed DP was accounted with {min_survivors} surviving members, only {n} \
                 were selected"
            ));
        }
        let mut codec = if distributed > 0.0 {
            distributed_codec(n, clip_norm, distributed, min_survivors, bits, dim)
                .map_err(|e| e.to_string())?
        } else {
            secure_agg::CodecConfig::for_clients(n as u32, clip_norm, bits)
                .map_err(|e| format!("secure aggregation codec: {e}"))?
        };
        if self.config.rotate {
            // Public randomness: the rotation needs to be shared, not secret.
            let seed = fl_core::ContentHash::of(
                &[self.session.as_slice(), &round.to_le_bytes(), b"rotation"].concat(),
            );
            codec = codec
                .with_rotation(*seed.as_bytes())
                .fit_scale(dim)
                .map_err(|e| format!("secure aggregation codec: {e}"))?;
        }
        let graph = match (self.config.degree, self.config.threshold) {
            (Some(degree), Some(threshold)) => Ok(GraphParams { degree, threshold }),
            _ => GraphParams::choose(n, self.config.dropout_rate, self.config.corruption_rate),
        }
        .map_err(|e| format!("secure aggregation graph: {e}"))?;
        let params = SecAggParams {
            modulus_bits: bits,
            vector_len: vector_len(&codec, dim).map_err(|e| e.to_string())?,
            degree: graph.degree,
            threshold: graph.threshold,
            prg: Default::default(),
        };
        let fit = SecureFit {
            session: self.session,
            participants: participants.clone(),
            params,
            codec,
            weighting,
        };
        let server = ServerRound::new(fit.binding(round), params, &participants)
            .map_err(|e| format!("secure aggregation: {e}"))?;
        Ok(Box::new(SecureStage {
            fit,
            server,
            min_survivors,
            step: Step::Advertise,
            answered: BTreeSet::new(),
            metrics: MetricSums::default(),
            verifier: self.verifier(),
            step_timeout: self.config.step_timeout(),
        }))
    }
}

impl Engine {
    /// Runs every fit stage under secure aggregation, SecAgg+ or homomorphic as
    /// `setup.config.protocol` says (see the module docs of [`engine`](crate::engine)).
    pub fn with_secure_aggregation(mut self, setup: SecureSetup) -> Self {
        self.protocol = match setup.config.protocol {
            SecureProtocol::Homomorphic => Box::new(super::he::Homomorphic(setup)),
            _ => Box::new(SecAgg(setup)),
        };
        self
    }
}

impl SecureSetup {
    /// The verifier of the members' signed protocol messages.
    pub(super) fn verifier(&self) -> MemberVerifier {
        MemberVerifier(self.members.clone())
    }
}

/// SecAgg+ as the engine's update protocol.
pub(super) struct SecAgg(pub(super) SecureSetup);

impl UpdateProtocol for SecAgg {
    fn per_member(&self) -> bool {
        false
    }

    fn reads_params(&self) -> bool {
        // The sum is decoded against the global model.
        true
    }

    fn start(
        &self,
        cx: &StageContext<'_>,
        plan: &FitPlan,
        _form: UpdateForm,
    ) -> Result<Started, AbortReason> {
        let stage = self
            .0
            .start_stage(cx.round, plan, cx.params)
            .map_err(AbortReason::SecureAggregation)?;
        Ok(Started {
            upload: UploadProtocol::SecAgg(Arc::new(stage.fit.clone())),
            timeout: stage.step_timeout,
            collector: stage,
        })
    }
}

impl Collector for SecureStage {
    fn handle(
        &mut self,
        _cx: &StageContext<'_>,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<Progress, Unexpected> {
        let limits = self.fit.limits();
        let from = client.0 as u32;
        let verifier = &self.verifier;
        let outcome = match msg {
            ClientMessage::Secure { step, payload, .. } => {
                let expected = match step {
                    SecureClientStep::Advertisement => Step::Advertise,
                    SecureClientStep::SharePackets => Step::ShareKeys,
                    SecureClientStep::UnmaskResponse => Step::Unmask,
                    // A homomorphic step never belongs to a SecAgg+ stage.
                    SecureClientStep::PartialDecryption => return Err(Unexpected),
                };
                if self.step != expected {
                    return Err(Unexpected);
                }
                match step {
                    SecureClientStep::Advertisement => {
                        SignedAdvertisement::from_bytes(&payload, &limits)
                            .and_then(|m| self.server.handle_advertisement(from, m, verifier))
                    }
                    SecureClientStep::SharePackets => SharePackets::from_bytes(&payload, &limits)
                        .and_then(|m| self.server.handle_share_packets(from, m, verifier)),
                    _ => UnmaskResponse::from_bytes(&payload, &limits)
                        .and_then(|m| self.server.handle_unmask_response(from, m, verifier)),
                }
            }
            ClientMessage::MaskedInput {
                header,
                values,
                metrics,
                ..
            } if self.step == Step::MaskedInput => {
                let outcome = MaskedInputHeader::from_bytes(&header, &limits)
                    .and_then(|h| self.server.handle_masked_input(from, h, &values, verifier));
                if outcome.is_ok() {
                    self.metrics.add(metrics);
                }
                outcome
            }
            _ => return Err(Unexpected),
        };
        Ok(match outcome {
            Ok(()) => {
                self.answered.insert(client);
                Progress::Done
            }
            Err(e) => Progress::Invalid(e.to_string()),
        })
    }

    fn forget(&mut self, _client: ClientId) {
        // The server state machine counts who answered each step; nothing half-done to drop.
    }

    fn close_step(mut self: Box<Self>, cx: &StageContext<'_>) -> Next {
        let answered = std::mem::take(&mut self.answered);
        let step_timeout = self.step_timeout;
        let sent: Result<NextStep, String> = match self.step {
            Step::Advertise => self
                .server
                .close_advertise()
                .map_err(|e| e.to_string())
                .map(|dir| {
                    let bytes = dir.to_bytes();
                    (
                        answered
                            .iter()
                            .map(|c| (c.0 as u32, bytes.clone()))
                            .collect(),
                        SecureServerStep::KeyDirectory,
                        Step::ShareKeys,
                        step_timeout,
                    )
                }),
            Step::ShareKeys => self
                .server
                .close_share_keys()
                .map_err(|e| e.to_string())
                .map(|inbound| {
                    (
                        inbound
                            .into_iter()
                            .map(|(to, m)| (to, m.to_bytes()))
                            .collect(),
                        SecureServerStep::Shares,
                        Step::MaskedInput,
                        cx.fit_timeout,
                    )
                }),
            Step::MaskedInput if answered.len() < self.min_survivors => Err(format!(
                "only {} masked inputs arrived, fewer than the {} the round needs",
                answered.len(),
                self.min_survivors
            )),
            Step::MaskedInput => self
                .server
                .close_masked_input()
                .map_err(|e| e.to_string())
                .map(|requests| {
                    (
                        requests
                            .into_iter()
                            .map(|(to, m)| (to, m.to_bytes()))
                            .collect(),
                        SecureServerStep::Unmask,
                        Step::Unmask,
                        step_timeout,
                    )
                }),
            Step::Unmask => return self.finish(cx),
        };
        let (payloads, server_step, next, timeout) = match sent {
            Ok(v) => v,
            Err(reason) => return Next::Abort(AbortReason::SecureAggregation(reason)),
        };
        let pending = payloads
            .iter()
            .map(|(to, _)| ClientId(u64::from(*to)))
            .collect();
        // One allocation per distinct payload (the key directory is the same for everyone).
        let mut last: Option<(Vec<u8>, Arc<[u8]>)> = None;
        let mut messages = Vec::with_capacity(payloads.len());
        for (to, bytes) in payloads {
            let payload = match &last {
                Some((b, shared)) if *b == bytes => shared.clone(),
                _ => {
                    let shared: Arc<[u8]> = bytes.as_slice().into();
                    last = Some((bytes, shared.clone()));
                    shared
                }
            };
            messages.push((
                ClientId(u64::from(to)),
                ServerMessage::Secure {
                    round: cx.round,
                    step: server_step,
                    payload,
                },
            ));
        }
        self.step = next;
        Next::Step {
            collector: self,
            messages,
            pending,
            timeout,
        }
    }
}

impl SecureStage {
    /// Unmasks the sum and decodes it into the round's updates.
    fn finish(self: Box<Self>, cx: &StageContext<'_>) -> Next {
        let SecureStage {
            fit,
            server,
            metrics,
            ..
        } = *self;
        let output = match server.finish() {
            Ok(o) => o,
            Err(e) => return Next::Abort(AbortReason::SecureAggregation(e.to_string())),
        };
        let count = output.survivors.len();
        let metric_sums = metrics.weighted_by(output.sum.last().copied().unwrap_or(0));
        match decode_sum(&fit, &output.sum, count, cx.params, metric_sums) {
            Ok(sum) => Next::Done(Collected::from_sum(sum)),
            Err(e) => Next::Abort(AbortReason::SecureAggregation(e.to_string())),
        }
    }
}

/// Training metrics of the members whose input made it into a secure sum: summed as they
/// arrive, then scaled to the hidden total weight the strategy divides by (plain means, since
/// no member's weight is visible).
#[derive(Default)]
pub(super) struct MetricSums {
    sums: Metrics,
    count: usize,
}

impl MetricSums {
    /// Adds one member's (finite) metrics.
    pub(super) fn add(&mut self, metrics: Metrics) {
        self.count += 1;
        for (k, v) in metrics {
            if v.is_finite() {
                *self.sums.entry(k).or_default() += v;
            }
        }
    }

    /// Members added.
    pub(super) fn count(&self) -> usize {
        self.count
    }

    /// The means times `total_weight`, as a weighted sum of metrics.
    pub(super) fn weighted_by(self, total_weight: u32) -> Metrics {
        if self.count == 0 {
            return Metrics::new();
        }
        let scale = f64::from(total_weight) / self.count as f64;
        self.sums.into_iter().map(|(k, s)| (k, s * scale)).collect()
    }
}

impl SecureSetup {
    /// How the round's members weigh and the L2 bound their update is clipped to: uniformly
    /// with the privacy clip under DP, by capped example count otherwise; refuses weights that
    /// could sum past `2^bits` for `n` members.
    pub(super) fn weighting(
        &self,
        plan: &FitPlan,
        n: usize,
        bits: u32,
    ) -> Result<(Weighting, f64), String> {
        let (weighting, clip_norm) = match &plan.privacy {
            Some(p) => (Weighting::Uniform, p.clip_norm),
            None => (
                Weighting::Examples {
                    max_weight: self.config.max_weight,
                },
                self.config.clip_norm,
            ),
        };
        if let Weighting::Examples { max_weight } = weighting
            && (n as u128) * u128::from(max_weight) >= 1u128 << bits
        {
            return Err(format!(
                "{n} members with weights up to max_weight = {max_weight} can sum past \
                 2^{bits}: lower secure_aggregation.max_weight or raise modulus_bits"
            ));
        }
        Ok((weighting, clip_norm))
    }
}
