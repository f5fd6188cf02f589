//! Secure aggregation on the wire: [`SecureFit`] as protobuf settings, protocol steps, and
//! the masked update in bounded chunks.

use crate::protocol::{SecureClientStep, SecureServerStep};
use crate::wire::{WireError, pb};

#[cfg(feature = "he")]
use super::he::{EncryptedUpdate, HeFit};
use super::{SecureFit, Weighting};

/// Most participants a secure fit stage may list.
pub const MAX_PARTICIPANTS: usize = 1 << 16;

/// [`SecureFit`] as protobuf settings.
pub fn fit_to_pb(fit: &SecureFit) -> pb::SecureFitSettings {
    let codec = &fit.codec;
    pb::SecureFitSettings {
        session: fit.session.to_vec(),
        participants: fit.participants.clone(),
        modulus_bits: fit.params.modulus_bits,
        vector_len: fit.params.vector_len as u64,
        degree: fit.params.degree as u32,
        threshold: fit.params.threshold as u32,
        prg: u32::from(fit.params.prg.code()),
        clip_norm: codec.clip_norm,
        scale: codec.scale,
        max_clients: codec.max_clients,
        rotation_seed: codec.rotation_seed.map(|s| s.to_vec()).unwrap_or_default(),
        noise_multiplier: codec.noise.map_or(0.0, |n| n.noise_multiplier),
        min_surviving_clients: codec.noise.map_or(0, |n| n.min_surviving_clients),
        max_weight: weighting_to_pb(fit.weighting),
    }
}

/// Reads protobuf settings back, checking lengths and ranges (the codec and the protocol
/// check the rest when the member builds them).
pub fn fit_from_pb(s: &pb::SecureFitSettings) -> Result<SecureFit, WireError> {
    let bad = |reason: String| WireError::Malformed {
        field: "secure settings",
        reason,
    };
    let session: [u8; 32] = s
        .session
        .as_slice()
        .try_into()
        .map_err(|_| bad(format!("session is {} bytes, not 32", s.session.len())))?;
    if s.participants.len() > MAX_PARTICIPANTS {
        return Err(bad(format!(
            "{} participants, at most {MAX_PARTICIPANTS}",
            s.participants.len()
        )));
    }
    let rotation_seed = rotation_seed_from_pb(&s.rotation_seed).map_err(bad)?;
    let noise = (s.noise_multiplier != 0.0).then_some(secure_agg::NoiseShare {
        noise_multiplier: s.noise_multiplier,
        min_surviving_clients: s.min_surviving_clients,
    });
    let prg = u8::try_from(s.prg)
        .ok()
        .and_then(secure_agg::PrgKind::from_code)
        .ok_or_else(|| bad(format!("unknown PRG code {}", s.prg)))?;
    let vector_len = usize::try_from(s.vector_len).map_err(|_| bad("vector_len".into()))?;
    Ok(SecureFit {
        session,
        participants: s.participants.clone(),
        params: secure_agg::SecAggParams {
            modulus_bits: s.modulus_bits,
            vector_len,
            degree: s.degree as usize,
            threshold: s.threshold as usize,
            prg,
        },
        codec: secure_agg::CodecConfig {
            clip_norm: s.clip_norm,
            scale: s.scale,
            modulus_bits: s.modulus_bits,
            max_clients: s.max_clients,
            rotation_seed,
            noise,
        },
        weighting: weighting_from_pb(s.max_weight),
    })
}

/// The weighting as `max_weight` (0: every member weighs 1).
fn weighting_to_pb(weighting: Weighting) -> u64 {
    match weighting {
        Weighting::Examples { max_weight } => max_weight,
        Weighting::Uniform => 0,
    }
}

fn weighting_from_pb(max_weight: u64) -> Weighting {
    match max_weight {
        0 => Weighting::Uniform,
        max_weight => Weighting::Examples { max_weight },
    }
}

/// A rotation seed: empty for none, else 32 bytes.
fn rotation_seed_from_pb(bytes: &[u8]) -> Result<Option<[u8; 32]>, String> {
    match bytes.len() {
        0 => Ok(None),
        n => bytes
            .try_into()
            .map(Some)
            .map_err(|_| format!("rotation seed is {n} bytes, not 0 or 32")),
    }
}

/// A server step's wire code.
pub fn server_step_to_pb(step: SecureServerStep) -> pb::SecureStep {
    match step {
        SecureServerStep::KeyDirectory => pb::SecureStep::KeyDirectory,
        SecureServerStep::Shares => pb::SecureStep::Shares,
        SecureServerStep::Unmask => pb::SecureStep::Unmask,
        SecureServerStep::Decrypt => pb::SecureStep::Decrypt,
    }
}

/// A server step from its wire code.
pub fn server_step_from_pb(code: i32) -> Result<SecureServerStep, WireError> {
    match pb::SecureStep::try_from(code) {
        Ok(pb::SecureStep::KeyDirectory) => Ok(SecureServerStep::KeyDirectory),
        Ok(pb::SecureStep::Shares) => Ok(SecureServerStep::Shares),
        Ok(pb::SecureStep::Unmask) => Ok(SecureServerStep::Unmask),
        Ok(pb::SecureStep::Decrypt) => Ok(SecureServerStep::Decrypt),
        _ => Err(WireError::Malformed {
            field: "secure step",
            reason: format!("{code} is not a server step"),
        }),
    }
}

/// A client step's wire code.
pub fn client_step_to_pb(step: SecureClientStep) -> pb::SecureStep {
    match step {
        SecureClientStep::Advertisement => pb::SecureStep::Advertisement,
        SecureClientStep::SharePackets => pb::SecureStep::SharePackets,
        SecureClientStep::UnmaskResponse => pb::SecureStep::UnmaskResponse,
        SecureClientStep::PartialDecryption => pb::SecureStep::PartialDecryption,
    }
}

/// A client step from its wire code.
pub fn client_step_from_pb(code: i32) -> Result<SecureClientStep, WireError> {
    match pb::SecureStep::try_from(code) {
        Ok(pb::SecureStep::Advertisement) => Ok(SecureClientStep::Advertisement),
        Ok(pb::SecureStep::SharePackets) => Ok(SecureClientStep::SharePackets),
        Ok(pb::SecureStep::UnmaskResponse) => Ok(SecureClientStep::UnmaskResponse),
        Ok(pb::SecureStep::PartialDecryption) => Ok(SecureClientStep::PartialDecryption),
        _ => Err(WireError::Malformed {
            field: "secure step",
            reason: format!("{code} is not a client step"),
        }),
    }
}

/// Splits a masked update into chunks of at most `max_bytes` bytes, each value bit-packed in
/// `bits` bits (so a 20-bit modulus costs 2.5 bytes per parameter, not 4).
pub fn masked_chunks(
    round: u64,
    values: &[u32],
    bits: u32,
    max_bytes: usize,
) -> Vec<pb::MaskedChunk> {
    let bits = bits.clamp(1, 32) as usize;
    // A multiple of 8 values per chunk keeps every chunk byte-aligned.
    let per = ((max_bytes * 8 / bits) / 8 * 8).max(8);
    values
        .chunks(per)
        .enumerate()
        .map(|(i, part)| pb::MaskedChunk {
            round,
            offset: (i * per) as u64,
            count: part.len() as u32,
            data: secure_agg::pack_values(part, bits as u32),
        })
        .collect()
}

/// Reassembles a masked update from [`pb::MaskedChunk`]s, in order, never holding more than
/// the announced length (itself bounded by the caller).
#[derive(Debug)]
pub struct MaskedAssembler {
    round: u64,
    len: usize,
    bits: u32,
    max_chunk_bytes: usize,
    values: Vec<u32>,
}

impl MaskedAssembler {
    /// Expects `len` values (at most `max_len`) of `bits` bits for `round`, in chunks of at
    /// most `max_chunk_bytes`.
    pub fn new(
        round: u64,
        len: u64,
        bits: u32,
        max_len: usize,
        max_chunk_bytes: usize,
    ) -> Result<Self, WireError> {
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0 && l <= max_len)
            .ok_or_else(|| WireError::Malformed {
                field: "masked header",
                reason: format!("{len} values (this model allows 1..={max_len})"),
            })?;
        if !(1..=32).contains(&bits) {
            return Err(WireError::Malformed {
                field: "masked header",
                reason: format!("{bits} bits per value (1..=32)"),
            });
        }
        Ok(Self {
            round,
            len,
            bits,
            max_chunk_bytes,
            values: Vec::new(),
        })
    }

    /// Adds the next chunk.
    pub fn push(&mut self, chunk: &pb::MaskedChunk) -> Result<(), WireError> {
        let bad = |reason: String| {
            Err(WireError::Malformed {
                field: "masked chunk",
                reason,
            })
        };
        if chunk.round != self.round {
            return bad(format!(
                "round {} in an update for {}",
                chunk.round, self.round
            ));
        }
        if chunk.offset != self.values.len() as u64 {
            return bad(format!(
                "offset {} where {} was next",
                chunk.offset,
                self.values.len()
            ));
        }
        let count = chunk.count as usize;
        if count == 0 || count > self.len - self.values.len() {
            return bad(format!(
                "{count} values where 1..={} remain",
                self.len - self.values.len()
            ));
        }
        if chunk.data.len() > self.max_chunk_bytes {
            return bad(format!(
                "{} bytes, more than {}",
                chunk.data.len(),
                self.max_chunk_bytes
            ));
        }
        let values = secure_agg::unpack_values(&chunk.data, self.bits, count).map_err(|e| {
            WireError::Malformed {
                field: "masked chunk",
                reason: e.to_string(),
            }
        })?;
        if self.values.is_empty() {
            self.values.reserve_exact(self.len);
        }
        self.values.extend(values);
        Ok(())
    }

    /// Whether every announced value arrived.
    pub fn is_complete(&self) -> bool {
        self.values.len() == self.len
    }

    /// The values, once complete.
    pub fn finish(self) -> Result<Vec<u32>, WireError> {
        if !self.is_complete() {
            return Err(WireError::Malformed {
                field: "masked update",
                reason: format!("ended after {} of {} values", self.values.len(), self.len),
            });
        }
        Ok(self.values)
    }
}

#[cfg(feature = "he")]
/// [`HeFit`] as protobuf settings.
pub fn he_fit_to_pb(fit: &HeFit) -> pb::HeFitSettings {
    let p = &fit.params;
    pb::HeFitSettings {
        committee_members: p.members,
        threshold: p.threshold,
        min_contributors: p.min_contributors,
        plaintext_bits: p.he.plaintext_bits,
        lwe_dimension: p.he.lwe.lwe_dimension as u32,
        noise_bound_log2: p.he.lwe.noise_bound_log2,
        chunk_values: p.he.chunk_values as u64,
        max_clients: p.he.max_clients,
        smudging_std_log2: p.smudging_std_log2,
        public_key: fit.public_key.to_bytes(),
        clip_norm: fit.codec.clip_norm,
        scale: fit.codec.scale,
        codec_max_clients: fit.codec.max_clients,
        rotation_seed: fit
            .codec
            .rotation_seed
            .map(|s| s.to_vec())
            .unwrap_or_default(),
        num_values: fit.num_values as u64,
        max_weight: weighting_to_pb(fit.weighting),
    }
}

#[cfg(feature = "he")]
/// Reads homomorphic settings back: the committee parameters must pass their own validation
/// (noise budget included), the key must decode under them, and the vector may hold at most
/// `max_values` values (the caller's model size plus padding).
pub fn he_fit_from_pb(s: &pb::HeFitSettings, max_values: usize) -> Result<HeFit, WireError> {
    let bad = |reason: String| WireError::Malformed {
        field: "homomorphic settings",
        reason,
    };
    let he_params = secure_agg::he::HeParams {
        lwe: secure_agg::he::LweParams {
            lwe_dimension: s.lwe_dimension as usize,
            noise_bound_log2: s.noise_bound_log2,
        },
        plaintext_bits: s.plaintext_bits,
        chunk_values: usize::try_from(s.chunk_values).map_err(|_| bad("chunk_values".into()))?,
        max_clients: s.max_clients,
    };
    let params = secure_agg::he::CommitteeParams {
        members: s.committee_members,
        threshold: s.threshold,
        min_contributors: s.min_contributors,
        he: he_params,
        smudging_std_log2: s.smudging_std_log2,
    };
    params.validate().map_err(|e| bad(e.to_string()))?;
    let public_key = secure_agg::he::CompactPublicKey::from_bytes(&s.public_key, he_params.lwe)
        .map_err(|e| bad(e.to_string()))?;
    let num_values = usize::try_from(s.num_values)
        .ok()
        .filter(|&n| n > 0 && n <= max_values)
        .ok_or_else(|| {
            bad(format!(
                "{} values (this model allows 1..={max_values})",
                s.num_values
            ))
        })?;
    let rotation_seed = rotation_seed_from_pb(&s.rotation_seed).map_err(bad)?;
    Ok(HeFit {
        params,
        public_key,
        codec: secure_agg::CodecConfig {
            clip_norm: s.clip_norm,
            scale: s.scale,
            modulus_bits: s.plaintext_bits,
            max_clients: s.codec_max_clients,
            rotation_seed,
            noise: None,
        },
        weighting: weighting_from_pb(s.max_weight),
        num_values,
    })
}

#[cfg(feature = "he")]
/// An encrypted update as frames: the header with the signed manifest, then one
/// [`pb::CipherChunk`] per ciphertext chunk.
pub fn encrypted_frames(
    round: u64,
    update: &EncryptedUpdate,
    metrics: &crate::Metrics,
) -> (pb::EncryptedHeader, Vec<pb::CipherChunk>) {
    let header = pb::EncryptedHeader {
        round,
        manifest: update.manifest.clone(),
        num_chunks: update.chunks.len() as u32,
        metrics: crate::wire::metrics_to_pb(metrics),
    };
    let chunks = update
        .chunks
        .iter()
        .enumerate()
        .map(|(i, data)| pb::CipherChunk {
            round,
            index: i as u32,
            data: data.clone(),
        })
        .collect();
    (header, chunks)
}

#[cfg(feature = "he")]
/// Reassembles an encrypted update from its header and [`pb::CipherChunk`]s, in order, within
/// bounds on the chunk count and sizes (the engine then checks every chunk against the signed
/// manifest's digests).
#[derive(Debug)]
pub struct EncryptedAssembler {
    round: u64,
    manifest: Vec<u8>,
    metrics: crate::Metrics,
    expected: usize,
    max_chunk_bytes: usize,
    max_total_bytes: usize,
    total: usize,
    chunks: Vec<Vec<u8>>,
}

#[cfg(feature = "he")]
impl EncryptedAssembler {
    /// Expects the header's chunks: at most `max_chunks` of them, each at most
    /// `max_chunk_bytes`, `max_total_bytes` in all.
    pub fn new(
        header: pb::EncryptedHeader,
        max_chunks: usize,
        max_chunk_bytes: usize,
        max_total_bytes: usize,
    ) -> Result<Self, WireError> {
        let bad = |reason: String| WireError::Malformed {
            field: "encrypted header",
            reason,
        };
        let expected = header.num_chunks as usize;
        if expected == 0 || expected > max_chunks {
            return Err(bad(format!(
                "{expected} chunks (this model allows 1..={max_chunks})"
            )));
        }
        if header.manifest.is_empty() || header.manifest.len() > max_chunk_bytes {
            return Err(bad(format!(
                "a manifest of {} bytes (1..={max_chunk_bytes})",
                header.manifest.len()
            )));
        }
        let metrics = crate::wire::metrics_from_pb(&header.metrics)?;
        Ok(Self {
            round: header.round,
            manifest: header.manifest,
            metrics,
            expected,
            max_chunk_bytes,
            max_total_bytes,
            total: 0,
            chunks: Vec::new(),
        })
    }

    /// The round of the update.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Adds the next chunk.
    pub fn push(&mut self, chunk: pb::CipherChunk) -> Result<(), WireError> {
        let bad = |reason: String| {
            Err(WireError::Malformed {
                field: "ciphertext chunk",
                reason,
            })
        };
        if chunk.round != self.round {
            return bad(format!(
                "round {} in an update for {}",
                chunk.round, self.round
            ));
        }
        if chunk.index as usize != self.chunks.len() {
            return bad(format!(
                "chunk {} where {} was next",
                chunk.index,
                self.chunks.len()
            ));
        }
        if self.chunks.len() == self.expected {
            return bad(format!("more than the {} announced chunks", self.expected));
        }
        if chunk.data.is_empty() || chunk.data.len() > self.max_chunk_bytes {
            return bad(format!(
                "{} bytes (1..={})",
                chunk.data.len(),
                self.max_chunk_bytes
            ));
        }
        self.total += chunk.data.len();
        if self.total > self.max_total_bytes {
            return bad(format!("the update exceeds {} bytes", self.max_total_bytes));
        }
        self.chunks.push(chunk.data);
        Ok(())
    }

    /// Whether every announced chunk arrived.
    pub fn is_complete(&self) -> bool {
        self.chunks.len() == self.expected
    }

    /// The round, the update and its metrics, once complete.
    pub fn finish(self) -> Result<(u64, EncryptedUpdate, crate::Metrics), WireError> {
        if !self.is_complete() {
            return Err(WireError::Malformed {
                field: "encrypted update",
                reason: format!(
                    "ended after {} of {} chunks",
                    self.chunks.len(),
                    self.expected
                ),
            });
        }
        Ok((
            self.round,
            EncryptedUpdate {
                manifest: self.manifest,
                chunks: self.chunks,
            },
            self.metrics,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `res` is a `Malformed` refusal of `field` whose reason is `why`.
    #[track_caller]
    fn refused<T: std::fmt::Debug>(res: Result<T, WireError>, field: &str, why: &str) {
        assert!(
            matches!(&res, Err(WireError::Malformed { field: f, reason }) if *f == field && reason == why),
            "expected {field}: {why}, got {res:?}"
        );
    }

    #[test]
    fn masked_chunks_reassemble_and_bad_chunks_are_refused() {
        for bits in [32, 20, 7] {
            let values: Vec<u32> = (0..1000u32)
                .map(|i| i.wrapping_mul(7919) & ((1u64 << bits) - 1) as u32)
                .collect();
            let chunks = masked_chunks(3, &values, bits, 256);
            assert!(chunks.len() > 1);
            let bytes: usize = chunks.iter().map(|c| c.data.len()).sum();
            assert_eq!(bytes, 1000 * bits as usize / 8, "{bits} bits per value");
            let mut a = MaskedAssembler::new(3, 1000, bits, 2000, 256).unwrap();
            for c in &chunks {
                a.push(c).unwrap();
            }
            assert_eq!(a.finish().unwrap(), values);
        }
        let values: Vec<u32> = (0..1000).collect();
        let chunks = masked_chunks(3, &values, 32, 256);
        let header = "masked header";
        refused(
            MaskedAssembler::new(3, 5000, 32, 2000, 256),
            header,
            "5000 values (this model allows 1..=2000)",
        );
        refused(
            MaskedAssembler::new(3, 0, 32, 2000, 256),
            header,
            "0 values (this model allows 1..=2000)",
        );
        refused(
            MaskedAssembler::new(3, 10, 33, 2000, 256),
            header,
            "33 bits per value (1..=32)",
        );
        let mut a = MaskedAssembler::new(3, 1000, 32, 2000, 256).unwrap();
        let chunk = "masked chunk";
        let next = chunks[1].offset;
        refused(
            a.push(&chunks[1]),
            chunk,
            &format!("offset {next} where 0 was next"),
        );
        let mut other = chunks[0].clone();
        other.round = 4;
        refused(a.push(&other), chunk, "round 4 in an update for 3");
        let mut odd = chunks[0].clone();
        odd.data.pop();
        let (count, bytes) = (odd.count, odd.data.len());
        refused(
            a.push(&odd),
            chunk,
            &format!(
                "malformed masked vector: {bytes} bytes, {count} values of 32 bits need {}",
                bytes + 1
            ),
        );
        let mut a = MaskedAssembler::new(3, 10, 32, 2000, 256).unwrap();
        refused(
            a.push(&chunks[0]),
            chunk,
            &format!("{} values where 1..=10 remain", chunks[0].count),
        );
        let a = MaskedAssembler::new(3, 1000, 32, 2000, 256).unwrap();
        refused(a.finish(), "masked update", "ended after 0 of 1000 values");
    }

    #[cfg(feature = "he")]
    #[test]
    fn encrypted_updates_reassemble_and_bad_frames_are_refused() {
        let update = EncryptedUpdate {
            manifest: vec![7; 40],
            chunks: vec![vec![1; 100], vec![2; 100], vec![3; 50]],
        };
        let metrics = crate::Metrics::from([("loss".to_string(), 0.5)]);
        let (header, chunks) = encrypted_frames(9, &update, &metrics);
        let new = |h: &pb::EncryptedHeader| EncryptedAssembler::new(h.clone(), 8, 128, 1000);
        let mut a = new(&header).unwrap();
        for c in &chunks {
            assert!(!a.is_complete());
            a.push(c.clone()).unwrap();
        }
        let (round, got, got_metrics) = a.finish().unwrap();
        assert_eq!((round, got, got_metrics), (9, update.clone(), metrics));

        // Header bounds: no chunks, too many, an empty or oversized manifest.
        let field = "encrypted header";
        let mut h = header.clone();
        h.num_chunks = 0;
        refused(new(&h), field, "0 chunks (this model allows 1..=8)");
        h.num_chunks = 9;
        refused(new(&h), field, "9 chunks (this model allows 1..=8)");
        let mut h = header.clone();
        h.manifest.clear();
        refused(new(&h), field, "a manifest of 0 bytes (1..=128)");
        h.manifest = vec![0; 129];
        refused(new(&h), field, "a manifest of 129 bytes (1..=128)");

        // Chunks out of order, for another round, empty, oversized, past the announced count,
        // beyond the total budget.
        let field = "ciphertext chunk";
        let mut a = new(&header).unwrap();
        refused(a.push(chunks[1].clone()), field, "chunk 1 where 0 was next");
        let mut other = chunks[0].clone();
        other.round = 10;
        refused(a.push(other), field, "round 10 in an update for 9");
        let mut empty = chunks[0].clone();
        empty.data.clear();
        refused(a.push(empty), field, "0 bytes (1..=128)");
        let mut big = chunks[0].clone();
        big.data = vec![0; 129];
        refused(a.push(big), field, "129 bytes (1..=128)");
        let mut a = EncryptedAssembler::new(header.clone(), 8, 128, 150).unwrap();
        a.push(chunks[0].clone()).unwrap();
        refused(
            a.push(chunks[1].clone()),
            field,
            "the update exceeds 150 bytes",
        );
        let mut a = new(&header).unwrap();
        for c in &chunks {
            a.push(c.clone()).unwrap();
        }
        let mut extra = chunks[2].clone();
        extra.index = 3;
        refused(a.push(extra), field, "more than the 3 announced chunks");
        let mut a = new(&header).unwrap();
        a.push(chunks[0].clone()).unwrap();
        refused(a.finish(), "encrypted update", "ended after 1 of 3 chunks");
    }
}
