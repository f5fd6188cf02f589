//! Committee decryption: requests, the members' refusal rules, partial decryptions, combining.
//!
//! With the replicated shares of [`crate::he::keygen`], the `t` members named in a request split
//! the work without talking to each other: the share `R_A` of every `(t−1)`-set `A` is used by
//! the lowest-numbered requested member outside `A`. Member `j` returns, for every value `i`,
//! `<X^i·mask, Σ_{A designated to j} R_A> + smudging`; the sum over the `t` members is
//! `<X^i·mask, s>` plus `t` smudging terms, and `body − Σ partials` is the encoded plaintext sum.

use std::collections::BTreeMap;

use rand::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use super::aggregate::{AggregateCiphertext, check_manifest_shape};
use super::client::SignedManifest;
use super::error::{Error, Result};
use super::keygen::{CompactPublicKey, ShareBundle};
use super::math;
use super::params::CommitteeParams;
use super::wire::{Limits, Reader, Writer};
use crate::sign::SignatureVerifier;

/// What the aggregator asks each chosen committee member to decrypt.
///
/// It carries the aggregate's masks (the only part of the ciphertext a member needs), the
/// members chosen, and the signed manifests of every contributor with, per chunk, which of them
/// are counted in it, so a member can check the minimum number of distinct signed clients.
#[derive(Clone, PartialEq, Eq)]
pub struct DecryptionRequest {
    pub(crate) round: u64,
    pub(crate) num_values: u32,
    pub(crate) decrypting_members: Vec<u32>,
    pub(crate) contributors: Vec<SignedManifest>,
    pub(crate) included: Vec<Vec<u32>>,
    /// Index of the first chunk whose masks this request carries.
    pub(crate) first_chunk: u32,
    pub(crate) masks: Vec<Vec<u64>>,
}

impl std::fmt::Debug for DecryptionRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptionRequest")
            .field("round", &self.round)
            .field("num_values", &self.num_values)
            .field("decrypting_members", &self.decrypting_members)
            .field("contributors", &self.contributors.len())
            .finish_non_exhaustive()
    }
}

impl DecryptionRequest {
    /// The round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The members asked to decrypt (sorted).
    pub fn decrypting_members(&self) -> &[u32] {
        &self.decrypting_members
    }

    /// The contributors' signed manifests.
    pub fn contributors(&self) -> &[SignedManifest] {
        &self.contributors
    }

    /// The chunks whose masks this request carries: `first..first + count`.
    pub fn chunk_range(&self) -> std::ops::Range<usize> {
        let first = self.first_chunk as usize;
        first..first + self.masks.len()
    }

    /// SHA-256 of everything but the masks: equal for every slice of one round's decryption.
    pub fn header_digest(&self) -> [u8; 32] {
        let mut w = Writer::with_tag(b"DHEH");
        self.write_header(&mut w);
        Sha256::digest(w.finish()).into()
    }

    fn write_header(&self, w: &mut Writer) {
        w.u64(self.round);
        w.u32(self.num_values);
        w.u32s(&self.decrypting_members);
        w.len(self.contributors.len());
        for c in &self.contributors {
            c.write(w);
        }
        w.len(self.included.len());
        for inc in &self.included {
            w.u32s(inc);
        }
    }

    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHER");
        self.write_header(&mut w);
        w.u32(self.first_chunk);
        w.len(self.masks.len());
        for m in &self.masks {
            w.words(m);
        }
        w.finish()
    }

    /// Decodes a request within `limits`.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHER", "decryption request")?;
        let round = r.u64()?;
        let num_values = r.u32()?;
        let decrypting_members = r.u32s(64)?;
        let count = r.len(limits.max_contributors, 8)?;
        let contributors = (0..count)
            .map(|_| SignedManifest::read(&mut r, limits))
            .collect::<Result<Vec<_>>>()?;
        let chunks = r.len(limits.max_chunks, 4)?;
        let included = (0..chunks)
            .map(|_| r.u32s(limits.max_contributors))
            .collect::<Result<Vec<_>>>()?;
        let first_chunk = r.u32()?;
        let slices = r.len(chunks, 4)?;
        let mut words = 0usize;
        let mut masks = Vec::with_capacity(slices);
        for _ in 0..slices {
            let m = r.words(limits.max_words.saturating_sub(words))?;
            words += m.len();
            masks.push(m);
        }
        r.finish()?;
        Ok(Self {
            round,
            num_values,
            decrypting_members,
            contributors,
            included,
            first_chunk,
            masks,
        })
    }

    /// SHA-256 of the canonical encoding; every partial decryption names it.
    pub fn digest(&self) -> [u8; 32] {
        Self::digest_of_encoding(&self.to_bytes())
    }

    /// [`digest`](Self::digest) from an encoding already made with
    /// [`to_bytes`](Self::to_bytes).
    pub fn digest_of_encoding(encoded: &[u8]) -> [u8; 32] {
        Sha256::digest(encoded).into()
    }
}

/// One member's answer to a [`DecryptionRequest`].
#[derive(Clone, PartialEq, Eq)]
pub struct PartialDecryption {
    /// The round.
    pub round: u64,
    /// The member (0-based).
    pub member: u32,
    /// Digest of the request answered.
    pub request_digest: [u8; 32],
    /// `<X^i·mask, share> + smudging` for every value `i`.
    pub values: Vec<u64>,
}

impl std::fmt::Debug for PartialDecryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartialDecryption")
            .field("round", &self.round)
            .field("member", &self.member)
            .field("values", &self.values.len())
            .finish_non_exhaustive()
    }
}

impl PartialDecryption {
    /// Canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHEP");
        w.u64(self.round);
        w.u32(self.member);
        w.buf.extend_from_slice(&self.request_digest);
        w.words(&self.values);
        w.finish()
    }

    /// Decodes a partial decryption within `limits`.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHEP", "partial decryption")?;
        let round = r.u64()?;
        let member = r.u32()?;
        let request_digest = r.array32()?;
        let values = r.words(limits.max_words)?;
        r.finish()?;
        Ok(Self {
            round,
            member,
            request_digest,
            values,
        })
    }
}

/// What a member remembers of the round it decrypts: one request header, each chunk once.
struct RoundState {
    round: u64,
    header: [u8; 32],
    done: Vec<bool>,
}

/// A committee member: its replicated key shares and the rounds it already decrypted.
pub struct CommitteeMember {
    params: CommitteeParams,
    key_digest: [u8; 32],
    member: u32,
    /// `R_A` for every share set `A` not containing this member.
    shares: BTreeMap<u32, Vec<u64>>,
    /// The round being (or last) decrypted: its request header and the chunks answered.
    current: Option<RoundState>,
    /// Values decrypted under this key so far (the leakage budget, see `NoiseReport`).
    decrypted_values: f64,
}

impl Drop for CommitteeMember {
    fn drop(&mut self) {
        for share in self.shares.values_mut() {
            share.zeroize();
        }
    }
}

impl std::fmt::Debug for CommitteeMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitteeMember")
            .field("member", &self.member)
            .field("last_round", &self.last_round())
            .finish_non_exhaustive()
    }
}

impl CommitteeMember {
    /// Assembles member `member`'s key from the bundles every dealer sent it (one per member);
    /// `key` is the joint public key the committee published (manifests must name it).
    pub fn from_bundles(
        params: CommitteeParams,
        key: &CompactPublicKey,
        member: u32,
        bundles: &[ShareBundle],
    ) -> Result<Self> {
        params.validate()?;
        if member >= params.members {
            return Err(Error::InvalidParams(format!(
                "member {member} is not in the committee"
            )));
        }
        let n = params.he.lwe.lwe_dimension;
        let expected = params.held_sets(member);
        let mut shares: BTreeMap<u32, Vec<u64>> =
            expected.iter().map(|&i| (i, vec![0u64; n])).collect();
        let mut seen = vec![false; params.members as usize];
        for b in bundles {
            if b.recipient != member {
                return Err(Error::Mismatch(format!(
                    "bundle for member {}",
                    b.recipient
                )));
            }
            let slot = seen.get_mut(b.dealer as usize).ok_or_else(|| {
                Error::Mismatch(format!("bundle from unknown dealer {}", b.dealer))
            })?;
            if *slot {
                return Err(Error::Duplicate(format!(
                    "two bundles from dealer {}",
                    b.dealer
                )));
            }
            *slot = true;
            let indices: Vec<u32> = b.shares.iter().map(|(i, _)| *i).collect();
            if indices != expected || b.shares.iter().any(|(_, s)| s.len() != n) {
                return Err(Error::Mismatch(format!(
                    "bundle from dealer {} has the wrong share sets",
                    b.dealer
                )));
            }
            for (i, s) in &b.shares {
                if let Some(acc) = shares.get_mut(i) {
                    math::add_assign(acc, s);
                }
            }
        }
        if let Some(missing) = seen.iter().position(|s| !s) {
            return Err(Error::Mismatch(format!("no bundle from dealer {missing}")));
        }
        Ok(Self {
            params,
            key_digest: key.digest(),
            member,
            shares,
            current: None,
            decrypted_values: 0.0,
        })
    }

    /// The member's whole state in a canonical encoding, to keep it across restarts: its key
    /// shares (secret: store the bytes like a private key, readable by the member only), the
    /// round it last decrypted and the values decrypted so far (so a restarted member still
    /// refuses repeats and respects the key's budget). Save it after every
    /// [`partial_decrypt`](Self::partial_decrypt) and before sending the answer.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_tag(b"DHEM");
        write_params(&mut w, &self.params);
        w.buf.extend_from_slice(&self.key_digest);
        w.u32(self.member);
        w.len(self.shares.len());
        for (i, s) in &self.shares {
            w.u32(*i);
            w.words(s);
        }
        match &self.current {
            None => w.u32(0),
            Some(state) => {
                w.u32(1);
                w.u64(state.round);
                w.buf.extend_from_slice(&state.header);
                let done: Vec<u8> = state.done.iter().map(|&d| u8::from(d)).collect();
                w.bytes(&done);
            }
        }
        w.u64(self.decrypted_values.to_bits());
        w.finish()
    }

    /// Reads a state written by [`to_bytes`](Self::to_bytes), checking its shape against its
    /// own parameters.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader::with_tag(bytes, b"DHEM", "committee member state")?;
        let params = read_params(&mut r)?;
        params.validate()?;
        let key_digest = r.array32()?;
        let member = r.u32()?;
        if member >= params.members {
            return Err(Error::Malformed(format!(
                "committee member state: member {member} of a committee of {}",
                params.members
            )));
        }
        let n = params.he.lwe.lwe_dimension;
        let expected = params.held_sets(member);
        let count = r.len(expected.len(), 8)?;
        let mut shares = BTreeMap::new();
        for _ in 0..count {
            let i = r.u32()?;
            let s = r.words(n)?;
            shares.insert(i, s);
        }
        let indices: Vec<u32> = shares.keys().copied().collect();
        if indices != expected || shares.values().any(|s| s.len() != n) {
            return Err(Error::Malformed(
                "committee member state: wrong key share sets".into(),
            ));
        }
        let current = match r.u32()? {
            0 => None,
            1 => {
                let round = r.u64()?;
                let header = r.array32()?;
                let done = r.bytes(1 << 24)?;
                if done.iter().any(|&d| d > 1) {
                    return Err(Error::Malformed(
                        "committee member state: bad chunk flags".into(),
                    ));
                }
                Some(RoundState {
                    round,
                    header,
                    done: done.iter().map(|&d| d == 1).collect(),
                })
            }
            _ => {
                return Err(Error::Malformed(
                    "committee member state: bad round flag".into(),
                ));
            }
        };
        let decrypted_values = f64::from_bits(r.u64()?);
        if !(decrypted_values.is_finite() && decrypted_values >= 0.0) {
            return Err(Error::Malformed(
                "committee member state: bad decrypted-values count".into(),
            ));
        }
        r.finish()?;
        Ok(Self {
            params,
            key_digest,
            member,
            shares,
            current,
            decrypted_values,
        })
    }

    /// The committee parameters the member was built with.
    pub fn params(&self) -> &CommitteeParams {
        &self.params
    }

    /// SHA-256 of the joint public key this member's share belongs to.
    pub fn key_digest(&self) -> [u8; 32] {
        self.key_digest
    }

    /// This member's index.
    pub fn member(&self) -> u32 {
        self.member
    }

    /// The last round this member decrypted.
    pub fn last_round(&self) -> Option<u64> {
        self.current.as_ref().map(|c| c.round)
    }

    /// Checks a request against the refusal rules, then returns this member's partial
    /// decryption and records the round.
    ///
    /// Refuses: a round not after the last one decrypted (repeats and replays); a request that
    /// would exceed the key's budget of decrypted values (`NoiseReport::values_per_key_log2`);
    /// a request that
    /// does not name this member or names other than `t` distinct members; a chunk counting
    /// fewer than `min_contributors` distinct clients; any manifest that is not for this round
    /// and vector, or whose signature does not verify (unknown clients included).
    pub fn partial_decrypt<R: CryptoRng + ?Sized>(
        &mut self,
        request: &DecryptionRequest,
        verifier: &dyn SignatureVerifier,
        rng: &mut R,
    ) -> Result<PartialDecryption> {
        let header = self.check(request, verifier)?;
        let he = &self.params.he;
        let n = he.lwe.lwe_dimension;
        let num_values = request.num_values as usize;
        let range = request.chunk_range();
        let slice_values: usize = range.clone().map(|i| he.chunk_len(num_values, i)).sum();

        // Σ R_A over the sets this member is designated for in this request.
        let mut share = vec![0u64; n];
        for (i, set) in self.params.share_sets().iter().enumerate() {
            let designated = request
                .decrypting_members
                .iter()
                .find(|m| !set.contains(m))
                .copied();
            if designated == Some(self.member)
                && let Some(r) = self.shares.get(&(i as u32))
            {
                math::add_assign(&mut share, r);
            }
        }

        let smudging_std = 2f64.powf(self.params.noise_report().smudging_std_log2);
        let mut generator = math::generator_from(rng);
        let mut values = vec![0u64; slice_values];
        let mut start = 0usize;
        for masks in &request.masks {
            for mask in masks.chunks_exact(n) {
                let len = (slice_values - start).min(n);
                math::mask_dot_key(mask, &share, &mut values[start..start + len]);
                start += len;
            }
        }
        share.zeroize();
        math::add_gaussian(&mut values, smudging_std, &mut generator);
        let chunk_count = he.chunk_count(num_values);
        let state = match self.current.take() {
            Some(state) if state.round == request.round => state,
            _ => RoundState {
                round: request.round,
                header,
                done: vec![false; chunk_count],
            },
        };
        let mut state = state;
        for i in range {
            state.done[i] = true;
        }
        self.current = Some(state);
        self.decrypted_values += slice_values as f64;
        Ok(PartialDecryption {
            round: request.round,
            member: self.member,
            request_digest: request.digest(),
            values,
        })
    }

    /// The refusal rules; returns the request's header digest.
    fn check(
        &self,
        request: &DecryptionRequest,
        verifier: &dyn SignatureVerifier,
    ) -> Result<[u8; 32]> {
        let p = &self.params;
        let header = request.header_digest();
        let num_values = request.num_values as usize;
        let chunk_count = p.he.chunk_count(num_values);
        let range = request.chunk_range();
        if num_values == 0
            || request.included.len() != chunk_count
            || range.is_empty()
            || range.end > chunk_count
        {
            return Err(Error::Mismatch(
                "request has the wrong number of chunks".into(),
            ));
        }
        if let Some(state) = &self.current {
            if request.round < state.round {
                return Err(Error::Refused(format!(
                    "round {} is before round {}, already decrypted",
                    request.round, state.round
                )));
            }
            if request.round == state.round {
                if header != state.header {
                    return Err(Error::Refused(format!(
                        "round {} was decrypted for another request (members, contributors)",
                        request.round
                    )));
                }
                if range.clone().any(|i| state.done.get(i) != Some(&false)) {
                    return Err(Error::Refused(format!(
                        "chunks {range:?} of round {} were already decrypted",
                        request.round
                    )));
                }
            }
        }
        let members = &request.decrypting_members;
        if members.len() != p.threshold as usize
            || members.windows(2).any(|w| w[0] >= w[1])
            || members.iter().any(|&m| m >= p.members)
        {
            return Err(Error::Refused(format!(
                "the request must name {} distinct committee members",
                p.threshold
            )));
        }
        if !members.contains(&self.member) {
            return Err(Error::Refused(
                "this member is not named in the request".into(),
            ));
        }
        let slice_values: usize = range.clone().map(|i| p.he.chunk_len(num_values, i)).sum();
        let budget = 2f64.powf(p.noise_report().values_per_key_log2);
        if self.decrypted_values + slice_values as f64 > budget {
            return Err(Error::Refused(format!(
                "this key has decrypted {} values; {slice_values} more exceed its budget of \
                 2^{:.1}: rotate the committee key",
                self.decrypted_values,
                budget.log2()
            )));
        }
        for (i, m) in range.clone().zip(&request.masks) {
            let len = p.he.chunk_len(num_values, i);
            if m.len() != p.he.bins(len) * p.he.lwe.lwe_dimension {
                return Err(Error::Mismatch(format!(
                    "mask of chunk {i} has the wrong length"
                )));
            }
        }
        let mut clients = std::collections::BTreeSet::new();
        for c in &request.contributors {
            if c.manifest.key_digest != self.key_digest {
                return Err(Error::Refused(format!(
                    "client {} encrypted under another key",
                    c.manifest.client
                )));
            }
            if c.manifest.round != request.round {
                return Err(Error::Refused(format!(
                    "client {} signed for round {}",
                    c.manifest.client, c.manifest.round
                )));
            }
            check_manifest_shape(&p.he, num_values, c)?;
            if !clients.insert(c.manifest.client) {
                return Err(Error::Refused(format!(
                    "client {} listed twice",
                    c.manifest.client
                )));
            }
        }
        if request.contributors.len() > p.he.max_clients as usize {
            return Err(Error::Refused("more contributors than max_clients".into()));
        }
        for (i, inc) in request.included.iter().enumerate() {
            if inc.len() < p.min_contributors as usize {
                return Err(Error::Refused(format!(
                    "chunk {i} aggregates {} clients, fewer than the minimum {}",
                    inc.len(),
                    p.min_contributors
                )));
            }
            if inc.windows(2).any(|w| w[0] >= w[1])
                || inc
                    .iter()
                    .any(|&x| x as usize >= request.contributors.len())
            {
                return Err(Error::Refused(format!(
                    "chunk {i} lists contributors badly"
                )));
            }
        }
        // Another slice of a round already decrypted under this header: its manifests (which
        // the header digest covers) were verified then.
        let verified = self
            .current
            .as_ref()
            .is_some_and(|st| st.round == request.round && st.header == header);
        for c in request.contributors.iter().filter(|_| !verified) {
            c.verify(verifier).map_err(|_| {
                Error::Refused(format!(
                    "client {} signature does not verify",
                    c.manifest.client
                ))
            })?;
        }
        Ok(header)
    }
}

/// Combines the `t` partial decryptions of `request` with the aggregate's bodies into the
/// plaintext sum mod `2^plaintext_bits` of the request's chunks ([`DecryptionRequest::chunk_range`]:
/// the whole vector for [`AggregateCiphertext::decryption_request`]).
pub fn combine(
    aggregate: &AggregateCiphertext,
    request: &DecryptionRequest,
    partials: &[PartialDecryption],
) -> Result<Vec<u32>> {
    let he = aggregate.params();
    let num_values = aggregate.num_values();
    if request.round != aggregate.round() || request.num_values as usize != num_values {
        return Err(Error::Combine(
            "the request is for another aggregate".into(),
        ));
    }
    let range = request.chunk_range();
    let Some(chunks) = aggregate.chunks().get(range) else {
        return Err(Error::Combine(
            "the request's chunks are not the aggregate's".into(),
        ));
    };
    if chunks.iter().map(|c| &c.masks).ne(request.masks.iter()) {
        return Err(Error::Combine(
            "the request's masks are not the aggregate's".into(),
        ));
    }
    let digest = request.digest();
    let mut got: Vec<u32> = partials.iter().map(|p| p.member).collect();
    got.sort_unstable();
    if got != request.decrypting_members {
        return Err(Error::Combine(format!(
            "need exactly one partial from each of members {:?}, got {:?}",
            request.decrypting_members, got
        )));
    }
    let mut phase: Vec<u64> = chunks
        .iter()
        .flat_map(|c| c.bodies.iter().copied())
        .collect();
    for p in partials {
        if p.round != request.round || p.request_digest != digest {
            return Err(Error::Combine(format!(
                "partial of member {} answers another request",
                p.member
            )));
        }
        if p.values.len() != phase.len() {
            return Err(Error::Combine(format!(
                "partial of member {} has the wrong length",
                p.member
            )));
        }
        math::sub_assign(&mut phase, &p.values);
    }
    Ok(phase.iter().map(|&x| math::decode(he, x)).collect())
}

fn write_params(w: &mut Writer, p: &CommitteeParams) {
    w.u32(p.members);
    w.u32(p.threshold);
    w.u32(p.min_contributors);
    w.u32(p.he.lwe.lwe_dimension as u32);
    w.u32(p.he.lwe.noise_bound_log2);
    w.u32(p.he.plaintext_bits);
    w.u32(p.he.chunk_values as u32);
    w.u32(p.he.max_clients);
    match p.smudging_std_log2 {
        None => w.u32(0),
        Some(s) => {
            w.u32(1);
            w.u64(s.to_bits());
        }
    }
}

fn read_params(r: &mut Reader<'_>) -> Result<CommitteeParams> {
    let members = r.u32()?;
    let threshold = r.u32()?;
    let min_contributors = r.u32()?;
    let lwe_dimension = r.u32()? as usize;
    let noise_bound_log2 = r.u32()?;
    let plaintext_bits = r.u32()?;
    let chunk_values = r.u32()? as usize;
    let max_clients = r.u32()?;
    let smudging_std_log2 = match r.u32()? {
        0 => None,
        1 => Some(f64::from_bits(r.u64()?)),
        _ => {
            return Err(Error::Malformed(
                "committee parameters: bad smudging flag".into(),
            ));
        }
    };
    Ok(CommitteeParams {
        members,
        threshold,
        min_contributors,
        he: super::params::HeParams {
            lwe: super::params::LweParams {
                lwe_dimension,
                noise_bound_log2,
            },
            plaintext_bits,
            chunk_values,
            max_clients,
        },
        smudging_std_log2,
    })
}
