//! A session from its first frame: hello, challenge, signed join, membership, welcome; then the
//! reader and writer run until the member leaves.

use super::*;

/// Handshake, then frames until the client leaves or breaks the protocol.
pub(super) async fn run_session(
    shared: &Shared,
    mut inbound: Streaming<pb::ClientFrame>,
    out: Outbound,
    pending: PendingGuard<'_>,
) -> Result<(), Status> {
    let cfg = &shared.config;
    let Some(pb::client_frame::Kind::Hello(hello)) =
        next_frame(&mut inbound, cfg.handshake_timeout, "hello").await?
    else {
        return Err(Status::invalid_argument("the first frame must be Hello"));
    };
    if hello.protocol_version != wire::PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version {} is not supported (this aggregator speaks {})",
            hello.protocol_version,
            wire::PROTOCOL_VERSION
        )));
    }
    if hello.federation_id != cfg.federation_id {
        return Err(Status::failed_precondition(format!(
            "this aggregator serves federation `{}`, not `{}`",
            cfg.federation_id, hello.federation_id
        )));
    }
    let schema_hash = wire::hash_from_bytes("schema_hash", &hello.schema_hash).map_err(invalid)?;
    if schema_hash != shared.schema.hash() {
        // The federation's schema travels in the status details (JSON, when small enough for
        // a trailer), so the member can name the tensors that differ.
        let message = format!(
            "schema mismatch: the federation trains schema {}, the client {}",
            shared.schema.hash(),
            schema_hash
        );
        let details = serde_json::to_vec(shared.schema.as_ref())
            .ok()
            .filter(|d| d.len() <= MAX_SCHEMA_DETAILS);
        return Err(match details {
            Some(d) => Status::with_details(tonic::Code::FailedPrecondition, message, d.into()),
            None => Status::failed_precondition(message),
        });
    }
    if !cfg.server_names.is_empty() && !cfg.server_names.contains(&hello.server) {
        return Err(Status::failed_precondition(format!(
            "`{}` is not a name of this aggregator",
            hello.server
        )));
    }
    let address: [u8; 20] = hello.address.as_slice().try_into().map_err(|_| {
        Status::invalid_argument(format!(
            "an address is 20 bytes, got {}",
            hello.address.len()
        ))
    })?;
    let address = Address::from(address);
    // A fixed list is checked before the challenge; the chain only for a proven signer (below),
    // so unauthenticated peers cannot make the aggregator query it.
    let fixed = shared.membership.fixed().is_some();
    if fixed {
        shared
            .membership
            .check(address)
            .await
            .map_err(|r| r.to_status())?;
    }
    let client_nonce: [u8; 32] = hello
        .client_nonce
        .as_slice()
        .try_into()
        .map_err(|_| Status::invalid_argument("the client nonce must be 32 bytes"))?;

    let session_id = random_nonce();
    let challenge = JoinChallenge {
        federation_id: cfg.federation_id.clone(),
        session_id,
        client_nonce,
        server: hello.server.clone(),
    };
    out.send(Ok(frame(pb::server_frame::Kind::Challenge(
        pb::Challenge {
            session_id: session_id.to_vec(),
        },
    ))))
    .await
    .map_err(|_| Status::cancelled("client went away"))?;

    let Some(pb::client_frame::Kind::Join(join)) =
        next_frame(&mut inbound, cfg.handshake_timeout, "join").await?
    else {
        return Err(Status::invalid_argument("expected Join after Challenge"));
    };
    let signature = MemberSignature::from_bytes(&join.signature)
        .map_err(|e| Status::unauthenticated(e.to_string()))?;
    let signer =
        verify_join(&challenge, &signature).map_err(|e| Status::unauthenticated(e.to_string()))?;
    if signer != address {
        return Err(Status::unauthenticated(format!(
            "the join signature is by {signer}, not {address}"
        )));
    }
    if !fixed {
        shared
            .membership
            .check(address)
            .await
            .map_err(|r| r.to_status())?;
    }

    let (msg_tx, msg_rx) = mpsc::unbounded_channel();
    let (reply_tx, reply_rx) = oneshot::channel();
    let (kick_tx, kick_rx) = oneshot::channel();
    shared
        .coordinator
        .send(Input::Join {
            address,
            outbound: msg_tx,
            kick: kick_tx,
            reply: reply_tx,
        })
        .await
        .map_err(|_| Status::unavailable("the federation is shutting down"))?;
    let client = reply_rx
        .await
        .map_err(|_| Status::unavailable("the federation is shutting down"))??;
    tracing::info!(%client, %address, "member joined");
    drop(pending);
    shared.metrics.session_delta(1);
    out.send(Ok(frame(pb::server_frame::Kind::Welcome(pb::Welcome {
        client_id: client.0,
        heartbeat_interval_ms: cfg.heartbeat_interval.as_millis() as u32,
        max_chunk_bytes: cfg.max_chunk_bytes as u64,
    }))))
    .await
    .map_err(|_| Status::cancelled("client went away"))?;

    let writer = tokio::spawn(write_instructions(
        msg_rx,
        out.clone(),
        cfg.max_chunk_bytes,
        shared.metrics.clone(),
    ));
    let ctx = SessionCtx {
        shared,
        client,
        address,
        session_id,
    };
    let result = tokio::select! {
        result = ctx.read_loop(&mut inbound) => result,
        Ok(status) = kick_rx => Err(status),
    };
    writer.abort();
    let _ = shared.coordinator.send(Input::Leave { client }).await;
    shared.metrics.session_delta(-1);
    tracing::info!(%client, "member left");
    result
}
