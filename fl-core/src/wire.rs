//! The wire form of the protocol: prost messages compiled from `proto/daofl.proto`, and the
//! chunked transfer of parameters.
//!
//! Parameters travel tensor by tensor as [`pb::Chunk`]s of little-endian `f32` bytes, at most
//! [`MAX_CHUNK_BYTES`] each. Both ends derive the same [`ChunkPlan`] from the schema, so a
//! receiver knows exactly which chunk must come next and refuses anything else (another round,
//! another tensor, a gap, a duplicate, an oversized or misaligned chunk) before copying a byte.
//! [`ParamAssembler`] checks each chunk against the hash list announced up front (so a bad
//! chunk is caught where it arrives) and the whole vector against its content hash.
//!
//! Decoding a frame (`prost::Message::decode`) is bounded by the transport's message size
//! limit, which the drivers set just above one chunk.

use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::hash::{ContentHash, ContentHasher};
use crate::params::{ParamVec, Schema};
use crate::round::{FitConfig, Metrics};

/// Messages generated from `proto/daofl.proto` (package `daofl.v1`).
#[allow(missing_docs, clippy::all)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/daofl.v1.rs"));
}

/// Version number sent in [`pb::Hello`].
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest chunk payload: 4 MiB.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;

/// Largest encoded frame a transport must accept: one full chunk plus headroom for fields.
pub const MAX_FRAME_BYTES: usize = MAX_CHUNK_BYTES + 64 * 1024;

/// Why a frame or chunk was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A chunk's payload exceeds the agreed maximum.
    #[error("chunk of {got} bytes exceeds the {max}-byte limit")]
    OversizedChunk {
        /// Payload size received.
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A chunk other than the next one expected.
    #[error(
        "unexpected chunk: expected round {expected_round} chunk {expected_index} (tensor {expected_tensor} at {expected_offset}), got round {round} chunk {index} (tensor {tensor} at {offset})"
    )]
    UnexpectedChunk {
        /// Round expected.
        expected_round: u64,
        /// Chunk index expected.
        expected_index: u32,
        /// Tensor expected.
        expected_tensor: u32,
        /// Offset expected.
        expected_offset: u64,
        /// Round received.
        round: u64,
        /// Chunk index received.
        index: u32,
        /// Tensor received.
        tensor: u32,
        /// Offset received.
        offset: u64,
    },
    /// A chunk's payload length differs from the plan.
    #[error("chunk {index} carries {got} bytes, the plan says {expected}")]
    ChunkLength {
        /// Chunk index.
        index: u32,
        /// Bytes expected.
        expected: usize,
        /// Bytes received.
        got: usize,
    },
    /// More chunks than the plan holds.
    #[error("chunk {index} is beyond the {planned} planned chunks")]
    TooManyChunks {
        /// Chunk index received.
        index: u32,
        /// Chunks planned.
        planned: usize,
    },
    /// A chunk's data does not hash to the value announced in the header.
    #[error("chunk {index} does not match its announced hash")]
    ChunkHashMismatch {
        /// Chunk index.
        index: u32,
    },
    /// The announced chunk count or hash list does not fit the schema.
    #[error("the header announces {announced} chunks, the schema needs {planned}")]
    ChunkCount {
        /// Chunks announced.
        announced: usize,
        /// Chunks the schema needs.
        planned: usize,
    },
    /// The transfer ended early.
    #[error("transfer incomplete: {received} of {planned} chunks")]
    Incomplete {
        /// Chunks received.
        received: usize,
        /// Chunks planned.
        planned: usize,
    },
    /// The assembled parameters do not hash to the announced content hash.
    #[error("assembled parameters hash to {got}, {expected} was announced")]
    ContentHashMismatch {
        /// Announced hash.
        expected: ContentHash,
        /// Actual hash.
        got: ContentHash,
    },
    /// A field is missing or malformed.
    #[error("malformed {field}: {reason}")]
    Malformed {
        /// Which field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// One planned chunk: which tensor, from which value, how many values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedChunk {
    /// Tensor index in schema order.
    pub tensor: u32,
    /// First value within the tensor.
    pub offset: u64,
    /// Number of values.
    pub len: usize,
    /// First value within the flat vector.
    pub flat_start: usize,
}

/// The sequence of chunks a parameter vector of a schema is sent as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkPlan {
    chunks: Vec<PlannedChunk>,
}

impl ChunkPlan {
    /// Splits every tensor into pieces of at most `max_bytes` (rounded down to whole `f32`s;
    /// at least one value per chunk). Empty tensors take no chunk.
    pub fn new(schema: &Schema, max_bytes: usize) -> Self {
        let per_chunk = (max_bytes / 4).max(1);
        let mut chunks = Vec::new();
        let mut flat = 0usize;
        for (t, spec) in schema.tensors().iter().enumerate() {
            let n = spec.num_values();
            let mut offset = 0usize;
            while offset < n {
                let len = per_chunk.min(n - offset);
                chunks.push(PlannedChunk {
                    tensor: t as u32,
                    offset: offset as u64,
                    len,
                    flat_start: flat + offset,
                });
                offset += len;
            }
            flat += n;
        }
        Self { chunks }
    }

    /// The chunks in order.
    pub fn chunks(&self) -> &[PlannedChunk] {
        &self.chunks
    }

    /// Number of chunks.
    pub fn len(&self) -> usize {
        self.chunks.len()
    }

    /// Whether the plan is empty (a schema without values).
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }
}

/// Encodes `params` as the chunks of [`ChunkPlan::new`]`(schema, max_bytes)`, lazily.
pub fn encode_chunks(
    params: &ParamVec,
    round: u64,
    max_bytes: usize,
) -> impl Iterator<Item = pb::Chunk> + '_ {
    let plan = ChunkPlan::new(params.schema(), max_bytes);
    plan.chunks.into_iter().enumerate().map(move |(i, c)| {
        let values = &params.values()[c.flat_start..c.flat_start + c.len];
        let mut data = Vec::with_capacity(c.len * 4);
        for v in values {
            data.extend_from_slice(&v.to_le_bytes());
        }
        pb::Chunk {
            round,
            index: i as u32,
            tensor: c.tensor,
            offset: c.offset,
            data,
        }
    })
}

/// SHA-256 of each chunk's payload, in plan order: what an [`pb::UpdateHeader`] announces.
pub fn chunk_hashes(params: &ParamVec, max_bytes: usize) -> Vec<[u8; 32]> {
    encode_chunks(params, 0, max_bytes)
        .map(|c| Sha256::digest(&c.data).into())
        .collect()
}

/// The digest a member signs for an update: SHA-256 over its chunk hashes in order, so that
/// every chunk is covered by the signature and can be checked as it arrives.
pub fn update_digest(chunk_hashes: &[[u8; 32]]) -> ContentHash {
    let mut h = ContentHasher::new();
    for c in chunk_hashes {
        h.update(c);
    }
    h.finish()
}

/// The digest a member signs for a SCAFFOLD update: SHA-256 over a domain tag, the number of
/// the update's chunk hashes, those hashes, then the chunk hashes of its control-variate
/// difference, so that one signature covers every chunk of both and neither list can be
/// passed off as part of the other. (An update without a control variate keeps
/// [`update_digest`], unchanged.)
pub fn scaffold_update_digest(
    chunk_hashes: &[[u8; 32]],
    control_chunk_hashes: &[[u8; 32]],
) -> ContentHash {
    let mut h = ContentHasher::new();
    h.update(b"daofl/scaffold-update/v1");
    h.update(&(chunk_hashes.len() as u64).to_le_bytes());
    for c in chunk_hashes.iter().chain(control_chunk_hashes) {
        h.update(c);
    }
    h.finish()
}

/// Checks a chunked transfer as it arrives, without keeping it: each chunk against the plan
/// (round, index, tensor, offset, length, size limit) and its announced hash, and the whole
/// sequence against the announced content hash. The aggregator streams updates through this
/// into its running sum, so it never holds a client's whole update.
#[derive(Debug)]
pub struct ChunkVerifier {
    round: u64,
    plan: ChunkPlan,
    max_bytes: usize,
    next: usize,
    chunk_hashes: Option<Vec<[u8; 32]>>,
    content: Option<(ContentHasher, ContentHash)>,
}

impl ChunkVerifier {
    /// Expects the parameters of `schema` for `round` in chunks of at most `max_bytes`. With
    /// `chunk_hashes`, every chunk is checked as it arrives; with `expected`, the whole
    /// sequence is checked against that content hash at [`finish`](Self::finish). (A signed
    /// update carries signed chunk hashes, which already pin every byte.)
    pub fn new(
        schema: &Schema,
        round: u64,
        expected: Option<ContentHash>,
        max_bytes: usize,
        chunk_hashes: Option<Vec<[u8; 32]>>,
    ) -> Result<Self, WireError> {
        let plan = ChunkPlan::new(schema, max_bytes);
        if let Some(h) = &chunk_hashes
            && h.len() != plan.len()
        {
            return Err(WireError::ChunkCount {
                announced: h.len(),
                planned: plan.len(),
            });
        }
        Ok(Self {
            round,
            plan,
            max_bytes,
            next: 0,
            chunk_hashes,
            content: expected.map(|e| (ContentHasher::new(), e)),
        })
    }

    /// Chunks still expected.
    pub fn remaining(&self) -> usize {
        self.plan.len() - self.next
    }

    /// Whether every chunk arrived.
    pub fn is_complete(&self) -> bool {
        self.next == self.plan.len()
    }

    /// Checks the next chunk and returns its values. On error the verifier is unchanged.
    pub fn push(&mut self, chunk: &pb::Chunk) -> Result<Vec<f32>, WireError> {
        if chunk.data.len() > self.max_bytes {
            return Err(WireError::OversizedChunk {
                got: chunk.data.len(),
                max: self.max_bytes,
            });
        }
        let Some(planned) = self.plan.chunks.get(self.next) else {
            return Err(WireError::TooManyChunks {
                index: chunk.index,
                planned: self.plan.len(),
            });
        };
        if chunk.round != self.round
            || chunk.index as usize != self.next
            || chunk.tensor != planned.tensor
            || chunk.offset != planned.offset
        {
            return Err(WireError::UnexpectedChunk {
                expected_round: self.round,
                expected_index: self.next as u32,
                expected_tensor: planned.tensor,
                expected_offset: planned.offset,
                round: chunk.round,
                index: chunk.index,
                tensor: chunk.tensor,
                offset: chunk.offset,
            });
        }
        if chunk.data.len() != planned.len * 4 {
            return Err(WireError::ChunkLength {
                index: chunk.index,
                expected: planned.len * 4,
                got: chunk.data.len(),
            });
        }
        if let Some(hashes) = &self.chunk_hashes {
            let got: [u8; 32] = Sha256::digest(&chunk.data).into();
            if got != hashes[self.next] {
                return Err(WireError::ChunkHashMismatch { index: chunk.index });
            }
        }
        if let Some((hasher, _)) = &mut self.content {
            hasher.update(&chunk.data);
        }
        self.next += 1;
        Ok(chunk
            .data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    /// Succeeds once every chunk arrived and the whole matches the announced content hash.
    pub fn finish(self) -> Result<(), WireError> {
        if !self.is_complete() {
            return Err(WireError::Incomplete {
                received: self.next,
                planned: self.plan.len(),
            });
        }
        if let Some((hasher, expected)) = self.content {
            let got = hasher.finish();
            if got != expected {
                return Err(WireError::ContentHashMismatch { expected, got });
            }
        }
        Ok(())
    }
}

/// Rebuilds a parameter vector from its chunks, refusing anything off-plan (a
/// [`ChunkVerifier`] that keeps the values).
#[derive(Debug)]
pub struct ParamAssembler {
    schema: Arc<Schema>,
    verifier: ChunkVerifier,
    values: Vec<f32>,
    expected: ContentHash,
}

impl ParamAssembler {
    /// Expects the parameters of `schema` for `round`, hashing to `expected`, in chunks of at
    /// most `max_bytes`. With `chunk_hashes`, every chunk is checked as it arrives.
    pub fn new(
        schema: Arc<Schema>,
        round: u64,
        expected: ContentHash,
        max_bytes: usize,
        chunk_hashes: Option<Vec<[u8; 32]>>,
    ) -> Result<Self, WireError> {
        let verifier = ChunkVerifier::new(&schema, round, None, max_bytes, chunk_hashes)?;
        Ok(Self {
            values: Vec::with_capacity(schema.num_values()),
            schema,
            verifier,
            expected,
        })
    }

    /// Chunks still expected.
    pub fn remaining(&self) -> usize {
        self.verifier.remaining()
    }

    /// Whether every chunk arrived.
    pub fn is_complete(&self) -> bool {
        self.verifier.is_complete()
    }

    /// Takes the next chunk. On error nothing is kept from it.
    pub fn push(&mut self, chunk: &pb::Chunk) -> Result<(), WireError> {
        let values = self.verifier.push(chunk)?;
        self.values.extend_from_slice(&values);
        Ok(())
    }

    /// The assembled parameters, once complete and matching the announced content hash.
    pub fn finish(self) -> Result<ParamVec, WireError> {
        self.verifier.finish()?;
        let params = ParamVec::new(self.schema, self.values).map_err(|e| WireError::Malformed {
            field: "parameters",
            reason: e.to_string(),
        })?;
        // Hashed once here and cached on the vector, so later checks cost nothing.
        let got = params.content_hash();
        if got != self.expected {
            return Err(WireError::ContentHashMismatch {
                expected: self.expected,
                got,
            });
        }
        Ok(params)
    }
}

/// Reads a 32-byte hash field.
pub fn hash_from_bytes(field: &'static str, bytes: &[u8]) -> Result<ContentHash, WireError> {
    let digest: [u8; 32] = bytes.try_into().map_err(|_| WireError::Malformed {
        field,
        reason: format!("expected 32 bytes, got {}", bytes.len()),
    })?;
    Ok(ContentHash::from_digest(digest))
}

/// Reads a list of 32-byte chunk hashes.
pub fn chunk_hashes_from_bytes(list: &[Vec<u8>]) -> Result<Vec<[u8; 32]>, WireError> {
    list.iter()
        .map(|b| hash_from_bytes("chunk hash", b).map(|h| *h.as_bytes()))
        .collect()
}

/// Metrics as wire messages, refusing none (names are free text).
pub fn metrics_to_pb(metrics: &Metrics) -> Vec<pb::Metric> {
    metrics
        .iter()
        .map(|(name, value)| pb::Metric {
            name: name.clone(),
            value: *value,
        })
        .collect()
}

/// Metrics from wire messages; refuses duplicate or overlong names.
pub fn metrics_from_pb(list: &[pb::Metric]) -> Result<Metrics, WireError> {
    const MAX_METRICS: usize = 64;
    const MAX_NAME: usize = 64;
    if list.len() > MAX_METRICS {
        return Err(WireError::Malformed {
            field: "metrics",
            reason: format!("{} metrics, at most {MAX_METRICS} allowed", list.len()),
        });
    }
    let mut out = Metrics::new();
    for m in list {
        if m.name.is_empty() || m.name.len() > MAX_NAME {
            return Err(WireError::Malformed {
                field: "metric name",
                reason: format!("length {} not in 1..={MAX_NAME}", m.name.len()),
            });
        }
        if out.insert(m.name.clone(), m.value).is_some() {
            return Err(WireError::Malformed {
                field: "metrics",
                reason: format!("`{}` appears twice", m.name),
            });
        }
    }
    Ok(out)
}

/// The local training settings of a fit instruction as a wire message; the upload settings
/// (`privacy`, `secure`, `he`) are left empty for the caller to fill in.
pub fn fit_settings_to_pb(config: &FitConfig) -> pb::FitSettings {
    pb::FitSettings {
        local_epochs: config.local_epochs,
        batch_size: config.batch_size,
        learning_rate: config.learning_rate,
        shuffle_seed: config.shuffle_seed,
        proximal_mu: config.proximal_mu,
        ..Default::default()
    }
}

/// The local training settings of a fit instruction. Refuses a proximal coefficient that is
/// negative or not finite; an absent one (a message from before FedProx) is 0. The other
/// settings are the trainer's to check.
pub fn fit_settings_from_pb(settings: &pb::FitSettings) -> Result<FitConfig, WireError> {
    let mu = settings.proximal_mu;
    if !(mu.is_finite() && mu >= 0.0) {
        return Err(WireError::Malformed {
            field: "proximal_mu",
            reason: format!("{mu} is not a finite number >= 0"),
        });
    }
    Ok(FitConfig {
        local_epochs: settings.local_epochs,
        batch_size: settings.batch_size,
        learning_rate: settings.learning_rate,
        shuffle_seed: settings.shuffle_seed,
        proximal_mu: mu,
        scaffold: None,
    })
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::params::TensorSpec;

    fn params() -> ParamVec {
        let schema = Arc::new(
            Schema::new(vec![
                TensorSpec::new("a", [5]),
                TensorSpec::new("empty", [0]),
                TensorSpec::new("b", [2, 3]),
            ])
            .unwrap(),
        );
        ParamVec::new(schema, (0..11).map(|i| i as f32 * 0.25).collect()).unwrap()
    }

    fn assembler(p: &ParamVec, max: usize, hashes: bool) -> ParamAssembler {
        ParamAssembler::new(
            p.schema().clone(),
            7,
            p.content_hash(),
            max,
            hashes.then(|| chunk_hashes(p, max)),
        )
        .unwrap()
    }

    #[test]
    fn plan_splits_tensors_and_skips_empty_ones() {
        let p = params();
        let plan = ChunkPlan::new(p.schema(), 8);
        let shape: Vec<(u32, u64, usize)> = plan
            .chunks()
            .iter()
            .map(|c| (c.tensor, c.offset, c.len))
            .collect();
        assert_eq!(
            shape,
            vec![
                (0, 0, 2),
                (0, 2, 2),
                (0, 4, 1),
                (2, 0, 2),
                (2, 2, 2),
                (2, 4, 2)
            ]
        );
        assert_eq!(
            ChunkPlan::new(p.schema(), 1).len(),
            11,
            "at least one value a chunk"
        );
    }

    #[test]
    fn chunks_round_trip_through_protobuf_bytes() {
        let p = params();
        let mut asm = assembler(&p, 12, true);
        for chunk in encode_chunks(&p, 7, 12) {
            let bytes = pb::ServerFrame {
                kind: Some(pb::server_frame::Kind::Chunk(chunk)),
            }
            .encode_to_vec();
            let frame = pb::ServerFrame::decode(bytes.as_slice()).unwrap();
            let Some(pb::server_frame::Kind::Chunk(c)) = frame.kind else {
                panic!()
            };
            asm.push(&c).unwrap();
        }
        assert_eq!(asm.finish().unwrap(), p);
    }

    #[test]
    fn malformed_protobuf_is_an_error() {
        // prost's DecodeError has no public kind: its message is the stable part.
        let err = pb::ClientFrame::decode(&[0xff, 0xff, 0xff, 0xff][..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to decode Protobuf message: invalid varint"
        );
        let err = pb::ClientFrame::decode(&[0x0a, 0x80][..]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "failed to decode Protobuf message: ClientFrame.kind: invalid varint",
            "truncated length"
        );
    }

    #[test]
    fn off_plan_chunks_are_refused_and_leave_no_trace() {
        let p = params();
        let chunks: Vec<_> = encode_chunks(&p, 7, 8).collect();
        let mut asm = assembler(&p, 8, true);

        let mut wrong_round = chunks[0].clone();
        wrong_round.round = 6;
        assert!(matches!(
            asm.push(&wrong_round),
            Err(WireError::UnexpectedChunk { .. })
        ));
        let mut wrong_tensor = chunks[0].clone();
        wrong_tensor.tensor = 2;
        assert!(matches!(
            asm.push(&wrong_tensor),
            Err(WireError::UnexpectedChunk { .. })
        ));
        assert!(
            matches!(asm.push(&chunks[1]), Err(WireError::UnexpectedChunk { .. })),
            "gap"
        );
        let mut big = chunks[0].clone();
        big.data = vec![0; 12];
        assert!(matches!(
            asm.push(&big),
            Err(WireError::OversizedChunk { got: 12, max: 8 })
        ));
        let mut short = chunks[0].clone();
        short.data.truncate(6);
        assert!(matches!(
            asm.push(&short),
            Err(WireError::ChunkLength { .. })
        ));
        let mut flipped = chunks[0].clone();
        flipped.data[0] ^= 1;
        assert_eq!(
            asm.push(&flipped),
            Err(WireError::ChunkHashMismatch { index: 0 })
        );

        // The refusals changed nothing: the honest sequence still assembles.
        for c in &chunks {
            asm.push(c).unwrap();
        }
        assert!(matches!(
            asm.push(&chunks[0]),
            Err(WireError::TooManyChunks { .. })
        ));
        assert_eq!(asm.finish().unwrap(), p);
    }

    #[test]
    fn incomplete_or_tampered_transfers_do_not_assemble() {
        let p = params();
        let chunks: Vec<_> = encode_chunks(&p, 7, 8).collect();
        let mut asm = assembler(&p, 8, false);
        asm.push(&chunks[0]).unwrap();
        assert!(matches!(
            asm.finish(),
            Err(WireError::Incomplete {
                received: 1,
                planned: 6
            })
        ));

        // Without per-chunk hashes a flipped byte is caught by the content hash at the end.
        let mut asm = assembler(&p, 8, false);
        for (i, c) in chunks.iter().enumerate() {
            let mut c = c.clone();
            if i == 3 {
                c.data[1] ^= 0x40;
            }
            asm.push(&c).unwrap();
        }
        assert!(matches!(
            asm.finish(),
            Err(WireError::ContentHashMismatch { .. })
        ));

        assert!(matches!(
            ParamAssembler::new(
                p.schema().clone(),
                7,
                p.content_hash(),
                8,
                Some(vec![[0; 32]])
            ),
            Err(WireError::ChunkCount {
                announced: 1,
                planned: 6
            })
        ));
    }

    #[test]
    fn field_decoders_check_lengths_and_duplicates() {
        assert_eq!(
            hash_from_bytes("params_hash", &[1; 31]),
            Err(WireError::Malformed {
                field: "params_hash",
                reason: "expected 32 bytes, got 31".into()
            })
        );
        assert!(hash_from_bytes("params_hash", &[1; 32]).is_ok());
        let m = |n: &str| pb::Metric {
            name: n.into(),
            value: 1.0,
        };
        assert_eq!(
            metrics_from_pb(&[m("a"), m("a")]),
            Err(WireError::Malformed {
                field: "metrics",
                reason: "`a` appears twice".into()
            })
        );
        assert_eq!(
            metrics_from_pb(&[m("")]),
            Err(WireError::Malformed {
                field: "metric name",
                reason: "length 0 not in 1..=64".into()
            })
        );
        assert_eq!(metrics_from_pb(&[m("a"), m("b")]).unwrap().len(), 2);
        let update = update_digest(&chunk_hashes(&params(), 8));
        assert_ne!(update, update_digest(&chunk_hashes(&params(), 12)));
    }

    /// `FitSettings` as members built before FedProx encode and decode it.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FitSettingsBeforeProx {
        #[prost(uint32, tag = "1")]
        local_epochs: u32,
        #[prost(uint32, tag = "2")]
        batch_size: u32,
        #[prost(double, tag = "3")]
        learning_rate: f64,
        #[prost(uint64, tag = "4")]
        shuffle_seed: u64,
    }

    #[test]
    fn fit_settings_carry_the_proximal_term_and_old_messages_still_decode() {
        let config = FitConfig {
            local_epochs: 3,
            batch_size: 16,
            learning_rate: 0.05,
            shuffle_seed: 77,
            proximal_mu: 0.01,
            scaffold: None,
        };
        let bytes = fit_settings_to_pb(&config).encode_to_vec();
        let back = pb::FitSettings::decode(bytes.as_slice()).unwrap();
        assert_eq!(fit_settings_from_pb(&back).unwrap(), config);
        // An old aggregator's message: no field 8, so no proximal term.
        let old = FitSettingsBeforeProx {
            local_epochs: 3,
            batch_size: 16,
            learning_rate: 0.05,
            shuffle_seed: 77,
        };
        let decoded = pb::FitSettings::decode(old.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            fit_settings_from_pb(&decoded).unwrap(),
            FitConfig {
                proximal_mu: 0.0,
                ..config.clone()
            }
        );
        // An old member reads a new message, ignoring the field it does not know.
        assert_eq!(
            FitSettingsBeforeProx::decode(bytes.as_slice()).unwrap(),
            old
        );
        // mu = 0 is not encoded at all: default settings are byte for byte what they were.
        let plain = FitConfig::default();
        assert_eq!(
            fit_settings_to_pb(&plain).encode_to_vec(),
            FitSettingsBeforeProx {
                local_epochs: plain.local_epochs,
                batch_size: plain.batch_size,
                learning_rate: plain.learning_rate,
                shuffle_seed: plain.shuffle_seed,
            }
            .encode_to_vec()
        );
        for mu in [-0.5, f64::NAN, f64::INFINITY] {
            let bad = pb::FitSettings {
                proximal_mu: mu,
                ..fit_settings_to_pb(&config)
            };
            assert!(
                matches!(
                    fit_settings_from_pb(&bad),
                    Err(WireError::Malformed {
                        field: "proximal_mu",
                        ..
                    })
                ),
                "{mu}"
            );
        }
    }
}
