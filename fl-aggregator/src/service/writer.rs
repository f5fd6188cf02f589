//! Engine messages to frames: an instruction (or the final model) and its parameters in chunks
//! (then, in a SCAFFOLD round, the server control variate in chunks of its own).

use super::*;

/// Turns engine messages into frames: an instruction, then the parameters in chunks.
pub(super) async fn write_instructions(
    mut rx: mpsc::UnboundedReceiver<ServerMessage>,
    out: Outbound,
    max_chunk_bytes: usize,
    metrics: Arc<AggregatorMetrics>,
) {
    while let Some(msg) = rx.recv().await {
        let (header, params, settings, control) = match msg {
            ServerMessage::Fit {
                header,
                params,
                config,
                upload,
            } => (
                header,
                params,
                pb::instruction::Settings::Fit(pb::FitSettings {
                    scaffold: config.scaffold.as_ref().map(|s| match &s.server {
                        Some(c) => pb::ScaffoldSettings {
                            control_hash: c.content_hash().as_bytes().to_vec(),
                            num_chunks: wire::ChunkPlan::new(c.schema(), max_chunk_bytes).len()
                                as u32,
                        },
                        None => pb::ScaffoldSettings::default(),
                    }),
                    privacy: upload.privacy.map(|p| pb::UpdatePrivacy {
                        clip_norm: p.clip_norm,
                        local_noise_multiplier: p.local_noise_multiplier,
                        distributed_noise_multiplier: p.distributed_noise_multiplier,
                        distributed_min_survivors: p.distributed_min_survivors,
                    }),
                    secure: match &upload.protocol {
                        fl_core::UploadProtocol::SecAgg(fit) => Some(secure_wire::fit_to_pb(fit)),
                        _ => None,
                    },
                    he: match &upload.protocol {
                        fl_core::UploadProtocol::Homomorphic(fit) => {
                            Some(secure_wire::he_fit_to_pb(fit))
                        }
                        _ => None,
                    },
                    ..wire::fit_settings_to_pb(&config)
                }),
                config.scaffold.and_then(|s| s.server),
            ),
            ServerMessage::Evaluate {
                header,
                params,
                config,
            } => (
                header,
                params,
                pb::instruction::Settings::Evaluate(pb::EvaluateSettings {
                    batch_size: config.batch_size,
                }),
                None,
            ),
            ServerMessage::Secure {
                round,
                step,
                payload,
            } => {
                metrics.sent(payload.len());
                let msg = pb::SecureMessage {
                    round,
                    step: secure_wire::server_step_to_pb(step) as i32,
                    payload: payload.to_vec(),
                };
                if out
                    .send(Ok(frame(pb::server_frame::Kind::Secure(msg))))
                    .await
                    .is_err()
                {
                    return;
                }
                continue;
            }
            ServerMessage::Finished { round, params } => {
                let Some(params) = params else {
                    let _ = out
                        .send(Ok(frame(pb::server_frame::Kind::Finished(
                            pb::Finished::default(),
                        ))))
                        .await;
                    continue;
                };
                // The final model follows in chunks, like an instruction's parameters.
                let num_chunks = wire::ChunkPlan::new(params.schema(), max_chunk_bytes).len();
                let finished = pb::Finished {
                    final_params_hash: params.content_hash().as_bytes().to_vec(),
                    num_chunks: num_chunks as u32,
                    round,
                };
                if out
                    .send(Ok(frame(pb::server_frame::Kind::Finished(finished))))
                    .await
                    .is_err()
                {
                    return;
                }
                for chunk in wire::encode_chunks(&params, round, max_chunk_bytes) {
                    metrics.sent(chunk.data.len());
                    if out
                        .send(Ok(frame(pb::server_frame::Kind::Chunk(chunk))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                continue;
            }
        };
        let num_chunks = wire::ChunkPlan::new(params.schema(), max_chunk_bytes).len() as u32;
        let instruction = pb::Instruction {
            round: header.round,
            stage: match header.stage {
                Stage::Fit => pb::Stage::Fit,
                Stage::Evaluate => pb::Stage::Evaluate,
            } as i32,
            params_hash: header.params_hash.as_bytes().to_vec(),
            schema_hash: header.schema_hash.as_bytes().to_vec(),
            num_chunks,
            settings: Some(settings),
        };
        if out
            .send(Ok(frame(pb::server_frame::Kind::Instruction(instruction))))
            .await
            .is_err()
        {
            return;
        }
        let control = control.as_deref();
        let chunks = wire::encode_chunks(&params, header.round, max_chunk_bytes).chain(
            control
                .into_iter()
                .flat_map(|c| wire::encode_chunks(c, header.round, max_chunk_bytes)),
        );
        for chunk in chunks {
            metrics.sent(chunk.data.len());
            if out
                .send(Ok(frame(pb::server_frame::Kind::Chunk(chunk))))
                .await
                .is_err()
            {
                return;
            }
        }
    }
}
