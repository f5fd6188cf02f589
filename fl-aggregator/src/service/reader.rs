//! A session's inbound frames after the handshake: rate limit, one upload at a time, checked
//! chunks forwarded to the coordinator.

use super::*;

pub(super) struct SessionCtx<'a> {
    pub(super) shared: &'a Shared,
    pub(super) client: ClientId,
    pub(super) address: Address,
    pub(super) session_id: [u8; 32],
}

/// An update whose chunks are arriving: each verified chunk goes straight into the engine's
/// running sum, so the service never holds a whole update.
pub(super) struct PendingUpdate {
    pub(super) round: u64,
    pub(super) verifier: ChunkVerifier,
    /// SCAFFOLD: the control-variate difference's chunks, which follow the update's.
    pub(super) control: Option<Box<ChunkVerifier>>,
}

impl PendingUpdate {
    /// Checks the next chunk (the update's, then the control variate's) and turns its values
    /// into the engine's message.
    fn push(&mut self, chunk: &pb::Chunk) -> Result<ClientMessage, wire::WireError> {
        let round = self.round;
        match self.control.as_mut() {
            Some(control) if self.verifier.is_complete() => Ok(ClientMessage::ControlChunk {
                round,
                values: control.push(chunk)?,
            }),
            _ => Ok(ClientMessage::FitChunk {
                round,
                values: self.verifier.push(chunk)?,
            }),
        }
    }

    /// Whether every chunk (of the control variate too) arrived.
    fn is_complete(&self) -> bool {
        self.verifier.is_complete() && self.control.as_ref().is_none_or(|c| c.is_complete())
    }

    fn finish(self) -> Result<(), wire::WireError> {
        self.verifier.finish()?;
        self.control.map_or(Ok(()), |c| c.finish())
    }
}

/// The one update a session may have in flight, by protocol.
pub(super) enum Upload {
    /// A plain update, verified chunk by chunk and streamed into the engine.
    Plain(PendingUpdate),
    /// A masked update (SecAgg+), buffered whole.
    Masked(PendingMasked),
    /// An encrypted update (homomorphic aggregation), buffered whole.
    Encrypted(secure_wire::EncryptedAssembler),
}

impl Upload {
    fn describe(&self) -> &'static str {
        match self {
            Self::Plain(_) => "an update",
            Self::Masked(_) => "a masked update",
            Self::Encrypted(_) => "an encrypted update",
        }
    }
}

/// The one exclusivity rule of uploads: a new one may begin only when none is in flight.
pub(super) fn no_upload_in_progress(upload: &Option<Upload>, new: &str) -> Result<(), Status> {
    match upload {
        None => Ok(()),
        Some(u) => Err(invalid(format!(
            "{new} began before {} ended",
            u.describe()
        ))),
    }
}

/// A masked update (secure aggregation) whose chunks are arriving. Unlike a plain update it is
/// buffered whole: masks only cancel in the sum of complete inputs, so a member that breaks
/// off mid-way must leave nothing in it.
pub(super) struct PendingMasked {
    pub(super) round: u64,
    pub(super) bits: u32,
    pub(super) header: Vec<u8>,
    pub(super) metrics: fl_core::Metrics,
    pub(super) assembler: secure_wire::MaskedAssembler,
}

impl SessionCtx<'_> {
    pub(super) async fn read_loop(
        &self,
        inbound: &mut Streaming<pb::ClientFrame>,
    ) -> Result<(), Status> {
        let cfg = &self.shared.config;
        // At most one update arrives at a time, whatever its protocol.
        let mut upload: Option<Upload> = None;
        let rate = f64::from(cfg.max_frames_per_second);
        let mut tokens = rate;
        let mut last = Instant::now();
        loop {
            let Some(kind) =
                next_frame(inbound, cfg.idle_timeout, "frame (not even a heartbeat)").await?
            else {
                return Ok(());
            };
            let now = Instant::now();
            tokens = (tokens + rate * (now - last).as_secs_f64()).min(rate);
            last = now;
            if tokens < 1.0 {
                return Err(Status::resource_exhausted(format!(
                    "more than {} frames per second; slow down",
                    cfg.max_frames_per_second
                )));
            }
            tokens -= 1.0;
            match kind {
                pb::client_frame::Kind::Heartbeat(_) => {}
                pb::client_frame::Kind::Update(header) => {
                    no_upload_in_progress(&upload, "an update")?;
                    let (update, begin) = self.begin_update(header)?;
                    let round = update.round;
                    self.forward_checked(begin).await?.map_err(|e| {
                        // ABORTED, not FAILED_PRECONDITION: the member may reconnect and take
                        // part in the next round.
                        Status::aborted(format!(
                            "update for round {round} refused: {e} (too late, a duplicate, or a round this member was not asked to train)"
                        ))
                    })?;
                    upload = Some(Upload::Plain(update));
                }
                pb::client_frame::Kind::Chunk(chunk) => {
                    let Some(Upload::Plain(p)) = upload.as_mut() else {
                        return Err(invalid("a chunk arrived outside an update"));
                    };
                    let msg = p.push(&chunk).map_err(invalid)?;
                    self.shared.metrics.received(chunk.data.len());
                    let round = p.round;
                    self.forward(msg).await?;
                    if p.is_complete() {
                        let Some(Upload::Plain(p)) = upload.take() else {
                            unreachable!("checked above")
                        };
                        p.finish().map_err(invalid)?;
                        self.forward(ClientMessage::FitEnd { round }).await?;
                    }
                }
                pb::client_frame::Kind::Secure(m) => {
                    let step = secure_wire::client_step_from_pb(m.step).map_err(invalid)?;
                    self.shared.metrics.received(m.payload.len());
                    self.forward(ClientMessage::Secure {
                        round: m.round,
                        step,
                        payload: m.payload,
                    })
                    .await?;
                }
                pb::client_frame::Kind::Masked(header) => {
                    no_upload_in_progress(&upload, "a masked update")?;
                    // Encoded length: padding (rotation) at most doubles the model, plus the
                    // weight.
                    let max_len = 2 * self.shared.schema.num_values() + 2;
                    let assembler = secure_wire::MaskedAssembler::new(
                        header.round,
                        header.len,
                        header.bits,
                        max_len,
                        cfg.max_chunk_bytes,
                    )
                    .map_err(invalid)?;
                    upload = Some(Upload::Masked(PendingMasked {
                        round: header.round,
                        bits: header.bits,
                        header: header.header,
                        metrics: wire::metrics_from_pb(&header.metrics).map_err(invalid)?,
                        assembler,
                    }));
                }
                pb::client_frame::Kind::MaskedChunk(chunk) => {
                    let Some(Upload::Masked(m)) = upload.as_mut() else {
                        return Err(invalid("a masked chunk arrived outside a masked update"));
                    };
                    m.assembler.push(&chunk).map_err(invalid)?;
                    self.shared.metrics.received(chunk.data.len());
                    if m.assembler.is_complete() {
                        let Some(Upload::Masked(m)) = upload.take() else {
                            unreachable!("checked above")
                        };
                        let values = m.assembler.finish().map_err(invalid)?;
                        self.forward(ClientMessage::MaskedInput {
                            round: m.round,
                            header: m.header,
                            values,
                            metrics: m.metrics,
                            bits: m.bits,
                        })
                        .await?;
                    }
                }
                pb::client_frame::Kind::Encrypted(header) => {
                    no_upload_in_progress(&upload, "an encrypted update")?;
                    // Encoded length: padding (rotation) at most doubles the model, plus the
                    // weight; a ciphertext takes at most 16 bytes per value plus its masks.
                    let max_len = 2 * self.shared.schema.num_values() + 2;
                    let max_total = 32 * max_len + (1 << 20);
                    let assembler = secure_wire::EncryptedAssembler::new(
                        header,
                        secure_agg::he::Limits::default().max_chunks,
                        cfg.max_chunk_bytes,
                        max_total,
                    )
                    .map_err(invalid)?;
                    upload = Some(Upload::Encrypted(assembler));
                }
                pb::client_frame::Kind::CipherChunk(chunk) => {
                    let Some(Upload::Encrypted(e)) = upload.as_mut() else {
                        return Err(invalid(
                            "a ciphertext chunk arrived outside an encrypted update",
                        ));
                    };
                    self.shared.metrics.received(chunk.data.len());
                    e.push(chunk).map_err(invalid)?;
                    if e.is_complete() {
                        let Some(Upload::Encrypted(e)) = upload.take() else {
                            unreachable!("checked above")
                        };
                        let (round, update, metrics) = e.finish().map_err(invalid)?;
                        self.forward(ClientMessage::Encrypted {
                            round,
                            update,
                            metrics,
                        })
                        .await?;
                    }
                }
                pb::client_frame::Kind::Evaluate(report) => {
                    let metrics = wire::metrics_from_pb(&report.metrics).map_err(invalid)?;
                    self.forward(ClientMessage::EvaluateDone {
                        round: report.round,
                        result: EvaluateResult {
                            loss: report.loss,
                            num_examples: report.num_examples,
                            metrics,
                        },
                    })
                    .await?;
                }
                pb::client_frame::Kind::Failure(f) => {
                    let stage = match pb::Stage::try_from(f.stage) {
                        Ok(pb::Stage::Fit) => Stage::Fit,
                        Ok(pb::Stage::Evaluate) => Stage::Evaluate,
                        _ => return Err(invalid("a failure must name its stage")),
                    };
                    let mut reason = f.reason;
                    reason.truncate(1024);
                    self.forward(ClientMessage::Failed {
                        round: f.round,
                        stage,
                        reason,
                    })
                    .await?;
                }
                pb::client_frame::Kind::Hello(_) | pb::client_frame::Kind::Join(_) => {
                    return Err(invalid("the handshake is over"));
                }
            }
        }
    }

    /// Checks an update header (signature over its chunk hashes, round and weight) and prepares
    /// to verify its chunks.
    fn begin_update(
        &self,
        header: pb::UpdateHeader,
    ) -> Result<(PendingUpdate, ClientMessage), Status> {
        let cfg = &self.shared.config;
        let hashes = wire::chunk_hashes_from_bytes(&header.chunk_hashes).map_err(invalid)?;
        let control_hashes =
            wire::chunk_hashes_from_bytes(&header.control_chunk_hashes).map_err(invalid)?;
        // A SCAFFOLD update's signature covers its control variate's chunks too.
        let update_hash = if control_hashes.is_empty() {
            wire::update_digest(&hashes)
        } else {
            wire::scaffold_update_digest(&hashes, &control_hashes)
        };
        // Checked for form only: the signed chunk hashes pin every byte of the update.
        wire::hash_from_bytes("params_hash", &header.params_hash).map_err(invalid)?;
        let statement = UpdateStatement {
            federation_id: cfg.federation_id.clone(),
            session_id: self.session_id,
            round: header.round,
            kind: UpdateKind::Fit,
            update_hash,
            num_examples: header.num_examples,
        };
        let signature = MemberSignature::from_bytes(&header.signature)
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        verify_update_by(&statement, &signature, self.address)
            .map_err(|e| Status::unauthenticated(format!("update signature: {e}")))?;
        let signed = Some(Box::new(SignedUpdate {
            statement,
            signature,
        }));
        let metrics = wire::metrics_from_pb(&header.metrics).map_err(invalid)?;
        let verifier = ChunkVerifier::new(
            &self.shared.schema,
            header.round,
            None,
            cfg.max_chunk_bytes,
            Some(hashes),
        )
        .map_err(invalid)?;
        let control = (!control_hashes.is_empty())
            .then(|| {
                ChunkVerifier::new(
                    &self.shared.schema,
                    header.round,
                    None,
                    cfg.max_chunk_bytes,
                    Some(control_hashes),
                )
            })
            .transpose()
            .map_err(invalid)?
            .map(Box::new);
        let begin = ClientMessage::FitBegin {
            round: header.round,
            num_examples: header.num_examples,
            metrics,
            signed,
        };
        Ok((
            PendingUpdate {
                round: header.round,
                verifier,
                control,
            },
            begin,
        ))
    }

    async fn forward(&self, msg: ClientMessage) -> Result<(), Status> {
        self.shared
            .coordinator
            .send(Input::Message {
                client: self.client,
                msg,
                verdict: None,
            })
            .await
            .map_err(|_| Status::unavailable("the federation is shutting down"))
    }

    /// Forwards `msg` and waits for the engine's verdict on it.
    async fn forward_checked(
        &self,
        msg: ClientMessage,
    ) -> Result<Result<(), crate::engine::EngineError>, Status> {
        let (tx, rx) = oneshot::channel();
        self.shared
            .coordinator
            .send(Input::Message {
                client: self.client,
                msg,
                verdict: Some(tx),
            })
            .await
            .map_err(|_| Status::unavailable("the federation is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("the federation is shutting down"))
    }
}
