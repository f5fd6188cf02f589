//! The fit stage under homomorphic aggregation (`protocol = "he"`): members encrypt their
//! encoded update under the committee's joint key; the engine adds each member's ciphertext
//! as it arrives (all of it or nothing), then asks `t` connected committee members for partial
//! decryptions of the sum and combines them. Member dropouts cost nothing; if fewer than `t`
//! committee members answer, the round aborts cleanly.

use std::sync::Arc;
use std::time::Duration;

use fl_core::protocol::{SecureClientStep, SecureServerStep};
use fl_core::secure::MemberVerifier;
use fl_core::secure::decode_vector_sum;
use fl_core::secure::he::{EncryptedUpdate, HeFit, decode_partial, decode_update, he_err};
use fl_core::{
    ClientId, ClientMessage, FitPlan, Metrics, ParamVec, ServerMessage, UpdateForm, UploadProtocol,
};
use secure_agg::he::{
    AggregateCiphertext, CommitteeParams, CompactPublicKey, DecryptionRequest, PartialDecryption,
};

use super::collect::Collected;
use super::collector::{
    Collector, Next, Progress, StageContext, Started, Unexpected, UpdateProtocol,
};
use super::secure::MetricSums;
use super::{AbortReason, SecureSetup};

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
    /// Checks the members' signed manifests.
    verifier: MemberVerifier,
    /// Who decrypts, and with what parameters.
    committee: HeCommittee,
    /// Time the committee has to decrypt.
    step_timeout: Duration,
}

/// A decryption request (and each partial decryption) stays under this many bytes, so it fits
/// in one transport frame with room to spare.
pub const MAX_REQUEST_BYTES: usize = 3 << 20;

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
            verifier: self.verifier(),
            committee: committee.clone(),
            step_timeout: self.config.step_timeout(),
        }))
    }
}

/// Homomorphic aggregation as the engine's update protocol (`protocol = "he"`).
pub(super) struct Homomorphic(pub(super) SecureSetup);

impl UpdateProtocol for Homomorphic {
    fn per_member(&self) -> bool {
        false
    }

    fn reads_params(&self) -> bool {
        // The decrypted sum is decoded against the global model.
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
            .start_he_stage(cx.round, plan, cx.params)
            .map_err(AbortReason::Homomorphic)?;
        Ok(Started {
            upload: UploadProtocol::Homomorphic(stage.fit.clone()),
            timeout: cx.fit_timeout,
            collector: stage,
        })
    }
}

impl Collector for HeStage {
    fn handle(
        &mut self,
        cx: &StageContext<'_>,
        client: ClientId,
        msg: ClientMessage,
    ) -> Result<Progress, Unexpected> {
        let outcome = match msg {
            ClientMessage::Encrypted {
                update, metrics, ..
            } if self.step == Step::Collect => self
                .encrypted_update(client, cx.round, &update, metrics)
                .map(|()| true),
            ClientMessage::Secure {
                step: SecureClientStep::PartialDecryption,
                payload,
                ..
            } if self.step == Step::Decrypt => self.partial_decryption(client, cx.round, &payload),
            _ => return Err(Unexpected),
        };
        Ok(match outcome {
            Ok(true) => Progress::Done,
            // More slices to come from this committee member.
            Ok(false) => Progress::More,
            Err(reason) => Progress::Invalid(reason),
        })
    }

    fn forget(&mut self, _client: ClientId) {
        // An encrypted update is added whole or not at all; nothing half-done to drop.
    }

    fn close_step(mut self: Box<Self>, cx: &StageContext<'_>) -> Next {
        match self.step {
            Step::Collect => {
                let committee = self.committee.clone();
                let t = committee.params.threshold as usize;
                // The first t committee members still connected decrypt.
                let chosen: Vec<(u32, ClientId)> = committee
                    .members
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| cx.connected.contains(c))
                    .take(t)
                    .map(|(i, c)| (i as u32, *c))
                    .collect();
                if chosen.len() < t {
                    return Next::Abort(AbortReason::CommitteeUnavailable {
                        connected: chosen.len(),
                        needed: t,
                    });
                }
                if self.metrics.count() < cx.min_results {
                    return Next::Abort(AbortReason::TooFewResults {
                        arrived: self.metrics.count(),
                        required: cx.min_results,
                    });
                }
                let indices: Vec<u32> = chosen.iter().map(|(i, _)| *i).collect();
                let (requests, payloads) = match slice_requests(
                    &mut self,
                    &indices,
                    &committee.params,
                    committee.max_request_bytes,
                ) {
                    Ok(r) => r,
                    Err(e) => return Next::Abort(AbortReason::Homomorphic(e)),
                };
                let mut messages = Vec::with_capacity(chosen.len() * payloads.len());
                for (_, client) in &chosen {
                    for payload in &payloads {
                        messages.push((
                            *client,
                            ServerMessage::Secure {
                                round: cx.round,
                                step: SecureServerStep::Decrypt,
                                payload: payload.clone(),
                            },
                        ));
                    }
                }
                // A request's digest is the SHA-256 of its encoding, already made once.
                self.digests = payloads
                    .iter()
                    .map(|p| DecryptionRequest::digest_of_encoding(p))
                    .collect();
                self.partials = vec![Vec::new(); requests.len()];
                self.requests = requests;
                self.decrypting = chosen.iter().map(|(i, c)| (*c, *i)).collect();
                self.step = Step::Decrypt;
                let timeout = self.step_timeout;
                Next::Step {
                    collector: self,
                    messages,
                    pending: chosen.iter().map(|(_, c)| *c).collect(),
                    timeout,
                }
            }
            Step::Decrypt => self.combine(cx),
        }
    }
}

impl HeStage {
    /// Adds a member's encrypted update to the aggregate (all of it or nothing).
    fn encrypted_update(
        &mut self,
        client: ClientId,
        round: u64,
        update: &EncryptedUpdate,
        metrics: Metrics,
    ) -> Result<(), String> {
        let outcome = (|| {
            let (manifest, chunks) = decode_update(&self.fit, update)?;
            if u64::from(manifest.manifest.client) != client.0 || manifest.manifest.round != round {
                return Err(fl_core::secure::SecureError::Homomorphic(format!(
                    "a manifest of client {} for round {} sent by {client} in round {round}",
                    manifest.manifest.client, manifest.manifest.round
                )));
            }
            let me = manifest.manifest.client;
            self.aggregate
                .admit(manifest, &self.verifier)
                .map_err(he_err)?;
            for chunk in &chunks {
                self.aggregate.add_chunk(me, chunk).map_err(he_err)?;
            }
            Ok(())
        })();
        if outcome.is_ok() {
            self.metrics.add(metrics);
        }
        outcome.map_err(|e| e.to_string())
    }

    /// Takes one of a committee member's partial decryptions (one per request slice).
    /// `Ok(true)` once the member has answered every slice.
    fn partial_decryption(
        &mut self,
        client: ClientId,
        round: u64,
        payload: &[u8],
    ) -> Result<bool, String> {
        let partial = decode_partial(&self.fit, payload).map_err(|e| e.to_string())?;
        let Some(&index) = self.decrypting.get(&client) else {
            return Err(format!("{client} was not asked to decrypt"));
        };
        if partial.member != index || partial.round != round {
            return Err(format!(
                "a partial decryption of member {} for round {} sent by committee member \
                 {index} in round {round}",
                partial.member, partial.round
            ));
        }
        let Some(slot) = self
            .digests
            .iter()
            .position(|d| *d == partial.request_digest)
        else {
            return Err("a partial decryption of a request that was not sent".into());
        };
        if self.partials[slot].iter().any(|p| p.member == index) {
            return Err(format!(
                "a second partial decryption of request slice {slot}"
            ));
        }
        self.partials[slot].push(partial);
        Ok(self
            .partials
            .iter()
            .all(|ps| ps.iter().any(|p| p.member == index)))
    }

    /// Combines the committee's partial decryptions and decodes the sum.
    fn combine(self: Box<Self>, cx: &StageContext<'_>) -> Next {
        let HeStage {
            fit,
            aggregate,
            requests,
            partials,
            metrics,
            ..
        } = *self;
        let threshold = fit.params.threshold as usize;
        if requests.is_empty() {
            return Next::Abort(AbortReason::Homomorphic("no decryption request".into()));
        }
        if let Some(short) = partials.iter().find(|p| p.len() < threshold) {
            return Next::Abort(AbortReason::TooFewDecryptions {
                arrived: short.len(),
                needed: threshold,
            });
        }
        let mut sum = Vec::with_capacity(aggregate.num_values());
        for (request, partials) in requests.iter().zip(&partials) {
            match secure_agg::he::combine(&aggregate, request, partials) {
                Ok(part) => sum.extend_from_slice(&part),
                Err(e) => return Next::Abort(AbortReason::Homomorphic(e.to_string())),
            }
        }
        let count = aggregate.complete_clients().len();
        let metric_sums = metrics.weighted_by(sum.last().copied().unwrap_or(0));
        match decode_vector_sum(
            &fit.codec,
            fit.weighting,
            &sum,
            count,
            cx.params,
            metric_sums,
        ) {
            Ok(sum) => Next::Done(Collected::from_sum(sum)),
            Err(e) => Next::Abort(AbortReason::Homomorphic(e.to_string())),
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
