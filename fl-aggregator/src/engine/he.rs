//! The fit stage under homomorphic aggregation (`protocol = "he"`): members encrypt their
//! encoded update under the committee's joint key; the engine adds each member's ciphertext
//! as it arrives (all of it or nothing), then asks `t` connected committee members for partial
//! decryptions of the sum and combines them. Member dropouts cost nothing; if fewer than `t`
//! committee members answer, the round aborts cleanly.

use std::sync::Arc;
use std::time::Duration;

use fl_core::protocol::{SecureClientStep, SecureServerStep};
use fl_core::secure::decode_vector_sum;
use fl_core::secure::he::{EncryptedUpdate, HeFit, decode_partial, decode_update, he_err};
use fl_core::{ClientId, FitPlan, Metrics, ParamVec, ServerMessage, Stage};
use secure_agg::he::{
    AggregateCiphertext, CommitteeParams, CompactPublicKey, DecryptionRequest, PartialDecryption,
};

use super::secure::MetricSums;
use super::{Engine, EngineError, FitStage, SecureSetup, State, unexpected};

/// The committee of a homomorphic federation: its parameters, joint public key, and the
/// client each committee index belongs to.
#[derive(Debug, Clone)]
pub struct HeCommittee {
    /// Committee, encryption and chunking parameters.
    pub params: CommitteeParams,
    /// The joint public key members encrypt under.
    pub public_key: CompactPublicKey,
    /// `members[i]` holds committee key share `i`.
    pub members: Vec<ClientId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Collect,
    Decrypt,
}

/// The state of one homomorphic fit stage.
pub(super) struct HeStage {
    fit: Arc<HeFit>,
    aggregate: AggregateCiphertext,
    step: Step,
    request: Option<DecryptionRequest>,
    partials: Vec<PartialDecryption>,
    metrics: MetricSums,
}

impl HeStage {
    pub(super) fn fit(&self) -> &Arc<HeFit> {
        &self.fit
    }
}

impl SecureSetup {
    /// Sets up a homomorphic stage for round `round`'s selected clients.
    pub(super) fn start_he_stage(
        &self,
        round: u64,
        plan: &FitPlan,
        params: &ParamVec,
    ) -> Result<Box<HeStage>, String> {
        let committee = self
            .committee
            .as_ref()
            .ok_or("protocol = \"he\" but the engine has no committee")?;
        let n = plan.clients.len();
        if plan
            .config
            .privacy
            .is_some_and(|p| p.distributed_noise_multiplier > 0.0)
        {
            return Err("distributed DP runs under SecAgg+ only so far".into());
        }
        let bits = committee.params.he.plaintext_bits;
        let (weighting, clip_norm) = self.weighting(plan, n, bits)?;
        if n > committee.params.he.max_clients as usize {
            return Err(format!(
                "{n} members selected, the committee's parameters allow {}",
                committee.params.he.max_clients
            ));
        }
        let dim = params.values().len();
        let codec = secure_agg::CodecConfig::for_clients(n as u32, clip_norm, bits)
            .map_err(|e| format!("secure aggregation codec: {e}"))?;
        let num_values = fl_core::secure::vector_len(&codec, dim).map_err(|e| e.to_string())?;
        let fit = Arc::new(HeFit {
            params: committee.params,
            public_key: committee.public_key.clone(),
            codec,
            weighting,
            num_values,
        });
        let aggregate = AggregateCiphertext::new(
            committee.params.he,
            &committee.public_key,
            round,
            num_values,
        )
        .map_err(|e| format!("homomorphic aggregation: {e}"))?;
        Ok(Box::new(HeStage {
            fit,
            aggregate,
            step: Step::Collect,
            request: None,
            partials: Vec::new(),
            metrics: MetricSums::default(),
        }))
    }
}

impl Engine {
    fn he_owing(
        &mut self,
        client: ClientId,
        round: u64,
        step: Step,
    ) -> Result<&mut HeStage, EngineError> {
        match &mut self.state {
            State::Fit(stage) if stage.round == round && stage.pending.contains(&client) => {
                match stage.he.as_mut() {
                    Some(s) if s.step == step => Ok(s),
                    _ => Err(unexpected(client, round, Stage::Fit)),
                }
            }
            _ => Err(unexpected(client, round, Stage::Fit)),
        }
    }

    /// Adds a member's encrypted update to the aggregate (all of it or nothing).
    pub(super) fn encrypted_update(
        &mut self,
        client: ClientId,
        round: u64,
        update: &EncryptedUpdate,
        metrics: Metrics,
    ) -> Result<Result<(), String>, EngineError> {
        let verifier = self.verifier();
        let stage = self.he_owing(client, round, Step::Collect)?;
        let outcome = (|| {
            let (manifest, chunks) = decode_update(&stage.fit, update)?;
            if u64::from(manifest.manifest.client) != client.0 || manifest.manifest.round != round {
                return Err(fl_core::secure::SecureError::Homomorphic(format!(
                    "a manifest of client {} for round {} sent by {client} in round {round}",
                    manifest.manifest.client, manifest.manifest.round
                )));
            }
            let me = manifest.manifest.client;
            stage.aggregate.admit(manifest, &verifier).map_err(he_err)?;
            for chunk in &chunks {
                stage.aggregate.add_chunk(me, chunk).map_err(he_err)?;
            }
            Ok(())
        })();
        if outcome.is_ok() {
            stage.metrics.add(metrics);
        }
        Ok(outcome.map_err(|e| e.to_string()))
    }

    /// Takes a committee member's partial decryption.
    pub(super) fn partial_decryption(
        &mut self,
        client: ClientId,
        round: u64,
        payload: &[u8],
    ) -> Result<Result<(), String>, EngineError> {
        let stage = self.he_owing(client, round, Step::Decrypt)?;
        let outcome = decode_partial(&stage.fit, payload).map(|p| stage.partials.push(p));
        Ok(outcome.map_err(|e| e.to_string()))
    }

    /// Routes a secure-step message of a homomorphic stage.
    pub(super) fn he_step(
        &mut self,
        client: ClientId,
        round: u64,
        step: SecureClientStep,
        payload: &[u8],
    ) -> Result<Result<(), String>, EngineError> {
        match step {
            SecureClientStep::PartialDecryption => self.partial_decryption(client, round, payload),
            _ => Err(unexpected(client, round, Stage::Fit)),
        }
    }

    /// The current step is over: ask the committee, or combine and aggregate.
    pub(super) fn advance_he(&mut self, now: Duration, mut stage: FitStage) {
        let round = stage.round;
        let Some(mut he) = stage.he.take() else {
            return self.close_fit(now, stage);
        };
        let Some(setup) = self.secure.as_ref() else {
            return self.abort_round(now, "homomorphic stage without a setup".into());
        };
        let committee = setup.committee.clone();
        let step_timeout = setup.config.step_timeout();
        match he.step {
            Step::Collect => {
                let Some(committee) = committee else {
                    return self.abort_round(now, "no committee".into());
                };
                let t = committee.params.threshold as usize;
                // The first t committee members still connected decrypt.
                let chosen: Vec<(u32, ClientId)> = committee
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| self.connected.contains(c))
                    .take(t)
                    .map(|(i, c)| (i as u32, *c))
                    .collect();
                if chosen.len() < t {
                    return self.abort_round(
                        now,
                        format!(
                            "homomorphic aggregation: only {} of the {t} committee members \
                             needed to decrypt are connected",
                            chosen.len()
                        ),
                    );
                }
                if he.metrics.count() < stage.min_results {
                    return self.abort_round(
                        now,
                        format!(
                            "only {} of the {} required results arrived",
                            he.metrics.count(),
                            stage.min_results
                        ),
                    );
                }
                let indices: Vec<u32> = chosen.iter().map(|(i, _)| *i).collect();
                let request = match he
                    .aggregate
                    .decryption_request(&indices, committee.params.min_contributors)
                {
                    Ok(r) => r,
                    Err(e) => {
                        return self.abort_round(now, format!("homomorphic aggregation: {e}"));
                    }
                };
                let payload: Arc<[u8]> = request.to_bytes().into();
                for (_, client) in &chosen {
                    self.outbox.push_back((
                        *client,
                        ServerMessage::Secure {
                            round,
                            step: SecureServerStep::Decrypt,
                            payload: payload.clone(),
                        },
                    ));
                }
                he.request = Some(request);
                he.step = Step::Decrypt;
                stage.pending = chosen.iter().map(|(_, c)| *c).collect();
                stage.deadline = now + step_timeout;
                stage.he = Some(he);
                self.state = State::Fit(stage);
            }
            Step::Decrypt => {
                let HeStage {
                    fit,
                    aggregate,
                    request,
                    partials,
                    metrics,
                    ..
                } = *he;
                let Some(request) = request else {
                    return self.abort_round(now, "no decryption request".into());
                };
                if partials.len() < fit.params.threshold as usize {
                    return self.abort_round(
                        now,
                        format!(
                            "homomorphic aggregation: {} of the {} partial decryptions arrived",
                            partials.len(),
                            fit.params.threshold
                        ),
                    );
                }
                let sum = match secure_agg::he::combine(&aggregate, &request, &partials) {
                    Ok(s) => s,
                    Err(e) => {
                        return self.abort_round(now, format!("homomorphic aggregation: {e}"));
                    }
                };
                let count = aggregate.complete_clients().len();
                let metric_sums = metrics.weighted_by(sum.last().copied().unwrap_or(0));
                match decode_vector_sum(
                    &fit.codec,
                    fit.weighting,
                    &sum,
                    count,
                    &self.params,
                    metric_sums,
                ) {
                    Ok(sum) => {
                        stage.sum = sum;
                        self.close_fit(now, stage);
                    }
                    Err(e) => self.abort_round(now, format!("homomorphic aggregation: {e}")),
                }
            }
        }
    }
}
