//! The fit stage under homomorphic aggregation (`protocol = "he"`): members encrypt their
//! encoded update under the committee's joint key; the engine adds each member's ciphertext
//! as it arrives (all of it or nothing), then asks `t` connected committee members for partial
//! decryptions of the sum and combines them. Member dropouts cost nothing; if fewer than `t`
//! committee members answer, the round aborts cleanly.

use std::sync::Arc;
use std::time::Duration;

use fl_core::protocol::SecureServerStep;
use fl_core::secure::decode_vector_sum;
use fl_core::secure::he::{EncryptedUpdate, HeFit, decode_partial, decode_update, he_err};
use fl_core::{ClientId, FitPlan, Metrics, ParamVec, ServerMessage, Stage};
use secure_agg::he::{
    AggregateCiphertext, CommitteeParams, CompactPublicKey, DecryptionRequest, PartialDecryption,
};

use super::secure::MetricSums;
use super::{Engine, EngineError, FitStage, Protocol, SecureSetup, State, unexpected};

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
    /// Largest decryption request (and partial decryption) in bytes; bigger aggregates are
    /// decrypted in several slices. [`MAX_REQUEST_BYTES`] fits the gRPC transport's frames.
    pub max_request_bytes: usize,
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
    /// The decryption requests (slices of the aggregate, each small enough for one frame).
    requests: Vec<DecryptionRequest>,
    /// `requests[i].digest()`.
    digests: Vec<[u8; 32]>,
    /// The committee index of each member asked to decrypt.
    decrypting: std::collections::BTreeMap<ClientId, u32>,
    /// `partials[i]`: the partial decryptions of `requests[i]` received so far.
    partials: Vec<Vec<PartialDecryption>>,
    metrics: MetricSums,
}

/// A decryption request (and each partial decryption) stays under this many bytes, so it fits
/// in one transport frame with room to spare.
pub const MAX_REQUEST_BYTES: usize = 3 << 20;

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
            requests: Vec::new(),
            digests: Vec::new(),
            decrypting: Default::default(),
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
                match &mut stage.protocol {
                    Protocol::Homomorphic(s) if s.step == step => Ok(s),
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

    /// Takes one of a committee member's partial decryptions (one per request slice).
    /// `Ok(true)` once the member has answered every slice.
    pub(super) fn partial_decryption(
        &mut self,
        client: ClientId,
        round: u64,
        payload: &[u8],
    ) -> Result<Result<bool, String>, EngineError> {
        let stage = self.he_owing(client, round, Step::Decrypt)?;
        let outcome = (|| {
            let partial = decode_partial(&stage.fit, payload).map_err(|e| e.to_string())?;
            let Some(&index) = stage.decrypting.get(&client) else {
                return Err(format!("{client} was not asked to decrypt"));
            };
            if partial.member != index || partial.round != round {
                return Err(format!(
                    "a partial decryption of member {} for round {} sent by committee member \
                     {index} in round {round}",
                    partial.member, partial.round
                ));
            }
            let Some(slot) = stage
                .digests
                .iter()
                .position(|d| *d == partial.request_digest)
            else {
                return Err("a partial decryption of a request that was not sent".into());
            };
            if stage.partials[slot].iter().any(|p| p.member == index) {
                return Err(format!(
                    "a second partial decryption of request slice {slot}"
                ));
            }
            stage.partials[slot].push(partial);
            Ok(stage
                .partials
                .iter()
                .all(|ps| ps.iter().any(|p| p.member == index)))
        })();
        Ok(outcome)
    }

    /// The current step is over: ask the committee, or combine and aggregate.
    pub(super) fn advance_he(&mut self, now: Duration, mut stage: FitStage) {
        let round = stage.round;
        let mut he = match std::mem::replace(&mut stage.protocol, Protocol::Plain) {
            Protocol::Homomorphic(h) => h,
            other => {
                stage.protocol = other;
                return self.close_fit(now, stage);
            }
        };
        let Some(setup) = self.secure.as_ref() else {
            return self.abort_round(
                now,
                super::AbortReason::Homomorphic("homomorphic stage without a setup".into()),
            );
        };
        let committee = setup.committee.clone();
        let step_timeout = setup.config.step_timeout();
        match he.step {
            Step::Collect => {
                let Some(committee) = committee else {
                    return self
                        .abort_round(now, super::AbortReason::Homomorphic("no committee".into()));
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
                        super::AbortReason::CommitteeUnavailable {
                            connected: chosen.len(),
                            needed: t,
                        },
                    );
                }
                if he.metrics.count() < stage.min_results {
                    return self.abort_round(
                        now,
                        super::AbortReason::TooFewResults {
                            arrived: he.metrics.count(),
                            required: stage.min_results,
                        },
                    );
                }
                let indices: Vec<u32> = chosen.iter().map(|(i, _)| *i).collect();
                let (requests, payloads) = match slice_requests(
                    &mut he,
                    &indices,
                    &committee.params,
                    committee.max_request_bytes,
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        return self
                            .abort_round(now, super::AbortReason::Homomorphic(e.to_string()));
                    }
                };
                for (_, client) in &chosen {
                    for payload in &payloads {
                        self.outbox.push_back((
                            *client,
                            ServerMessage::Secure {
                                round,
                                step: SecureServerStep::Decrypt,
                                payload: payload.clone(),
                            },
                        ));
                    }
                }
                // A request's digest is the SHA-256 of its encoding, already made once.
                he.digests = payloads
                    .iter()
                    .map(|p| DecryptionRequest::digest_of_encoding(p))
                    .collect();
                he.partials = vec![Vec::new(); requests.len()];
                he.requests = requests;
                he.decrypting = chosen.iter().map(|(i, c)| (*c, *i)).collect();
                he.step = Step::Decrypt;
                stage.pending = chosen.iter().map(|(_, c)| *c).collect();
                stage.deadline = now + step_timeout;
                stage.protocol = Protocol::Homomorphic(he);
                self.state = State::Fit(stage);
            }
            Step::Decrypt => {
                let HeStage {
                    fit,
                    aggregate,
                    requests,
                    partials,
                    metrics,
                    ..
                } = *he;
                let threshold = fit.params.threshold as usize;
                if requests.is_empty() {
                    return self.abort_round(
                        now,
                        super::AbortReason::Homomorphic("no decryption request".into()),
                    );
                }
                if let Some(short) = partials.iter().find(|p| p.len() < threshold) {
                    return self.abort_round(
                        now,
                        super::AbortReason::TooFewDecryptions {
                            arrived: short.len(),
                            needed: threshold,
                        },
                    );
                }
                let mut sum = Vec::with_capacity(aggregate.num_values());
                for (request, partials) in requests.iter().zip(&partials) {
                    match secure_agg::he::combine(&aggregate, request, partials) {
                        Ok(part) => sum.extend_from_slice(&part),
                        Err(e) => {
                            return self
                                .abort_round(now, super::AbortReason::Homomorphic(e.to_string()));
                        }
                    }
                }
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
                        stage.updates = super::Collected::from_sum(sum);
                        self.close_fit(now, stage);
                    }
                    Err(e) => self.abort_round(now, super::AbortReason::Homomorphic(e.to_string())),
                }
            }
        }
    }
}

/// Decryption requests and their encodings, in order.
type Slices = (Vec<DecryptionRequest>, Vec<Arc<[u8]>>);

/// Seals the aggregate into decryption requests of at most `max_bytes` each (a partial
/// decryption has the size of a request's masks), with their encodings.
fn slice_requests(
    he: &mut HeStage,
    indices: &[u32],
    params: &CommitteeParams,
    max_bytes: usize,
) -> Result<Slices, String> {
    let chunks = params.he.chunk_count(he.aggregate.num_values()).max(1);
    let contributors = he.aggregate.contributor_count();
    // Per contributor: its manifest (header, a digest per chunk, a signature) and its index in
    // every chunk's list. Per chunk: masks and partial values, 8 bytes per value.
    let header = contributors * (128 + 32 * chunks + 4 * chunks) + 1024;
    let per_chunk = 8 * params.he.chunk_values;
    let room = max_bytes.saturating_sub(header);
    if room < per_chunk {
        return Err(format!(
            "a decryption request for {contributors} contributors and {chunks} chunks does \
             not fit in {max_bytes} bytes"
        ));
    }
    let requests = he
        .aggregate
        .decryption_requests(indices, params.min_contributors, room / per_chunk)
        .map_err(|e| e.to_string())?;
    let payloads: Vec<Arc<[u8]>> = requests.iter().map(|r| r.to_bytes().into()).collect();
    if let Some(big) = payloads
        .iter()
        .map(|p| p.len())
        .find(|&len| len > max_bytes)
    {
        return Err(format!(
            "a decryption request of {big} bytes exceeds {max_bytes}"
        ));
    }
    Ok((requests, payloads))
}
