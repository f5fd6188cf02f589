//! The aggregator side: sums chunks as they stream in, after the client's signed manifest.

use std::collections::BTreeMap;

use super::client::{EncryptedChunk, SignedManifest};
use super::committee::DecryptionRequest;
use super::error::{Error, Result};
use super::keygen::CompactPublicKey;
use super::math;
use super::params::HeParams;
use super::shared_key::SeededChunk;
use crate::sign::SignatureVerifier;

/// The running sum of the clients' ciphertexts for one round.
///
/// Call order: [`admit`](Self::admit) a client's signed manifest, then
/// [`add_chunk`](Self::add_chunk) its chunks in any order as they arrive (each is checked against
/// the signed digest and added at once; nothing is buffered), then
/// [`decryption_request`](Self::decryption_request) once, which seals the aggregate.
/// A client that drops out mid-upload is simply counted in the chunks it completed.
#[derive(Debug, Clone)]
pub struct AggregateCiphertext {
    params: HeParams,
    key_digest: [u8; 32],
    round: u64,
    num_values: usize,
    chunks: Vec<EncryptedChunk>,
    /// Contributor positions (into `contributors`) included in each chunk, increasing.
    included: Vec<Vec<u32>>,
    contributors: Vec<SignedManifest>,
    by_client: BTreeMap<u32, usize>,
    sealed: bool,
}

impl AggregateCiphertext {
    /// An empty aggregate for `num_values` values in `round`, of ciphertexts under `key`.
    pub fn new(
        params: HeParams,
        key: &CompactPublicKey,
        round: u64,
        num_values: usize,
    ) -> Result<Self> {
        params.validate()?;
        if num_values == 0 || num_values > u32::MAX as usize {
            return Err(Error::InvalidParams("num_values must be in 1..2^32".into()));
        }
        let n = params.lwe.lwe_dimension;
        let chunks = (0..params.chunk_count(num_values))
            .map(|i| {
                let len = params.chunk_len(num_values, i);
                EncryptedChunk {
                    index: i as u32,
                    masks: vec![0; params.bins(len) * n],
                    bodies: vec![0; len],
                }
            })
            .collect::<Vec<_>>();
        let included = vec![Vec::new(); chunks.len()];
        Ok(Self {
            params,
            key_digest: key.digest(),
            round,
            num_values,
            chunks,
            included,
            contributors: Vec::new(),
            by_client: BTreeMap::new(),
            sealed: false,
        })
    }

    /// The round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// Values in the vector.
    pub fn num_values(&self) -> usize {
        self.num_values
    }

    /// The parameters.
    pub fn params(&self) -> &HeParams {
        &self.params
    }

    /// Clients admitted so far.
    pub fn contributor_count(&self) -> usize {
        self.contributors.len()
    }

    /// Clients counted in chunk `index`.
    pub fn chunk_contributors(&self, index: usize) -> impl Iterator<Item = u32> + '_ {
        self.included
            .get(index)
            .into_iter()
            .flatten()
            .map(|&p| self.contributors[p as usize].manifest.client)
    }

    /// Clients whose every chunk has been added.
    pub fn complete_clients(&self) -> Vec<u32> {
        (0..self.contributors.len())
            .filter(|&p| {
                self.included
                    .iter()
                    .all(|inc| inc.binary_search(&(p as u32)).is_ok())
            })
            .map(|p| self.contributors[p].manifest.client)
            .collect()
    }

    /// The summed chunks (each the same shape as a client's chunk).
    pub fn chunks(&self) -> &[EncryptedChunk] {
        &self.chunks
    }

    /// Admits a client: checks its signed manifest (registered signer, this round, this vector
    /// length, one digest per chunk, not admitted before, room under `max_clients`).
    pub fn admit(
        &mut self,
        signed: SignedManifest,
        verifier: &dyn SignatureVerifier,
    ) -> Result<()> {
        if self.sealed {
            return Err(Error::Mismatch(
                "aggregate is sealed: decryption was requested".into(),
            ));
        }
        let m = &signed.manifest;
        if m.round != self.round {
            return Err(Error::Mismatch(format!(
                "manifest for round {}, not {}",
                m.round, self.round
            )));
        }
        check_manifest_shape(&self.params, self.num_values, &signed)?;
        if m.key_digest != self.key_digest {
            return Err(Error::Mismatch(format!(
                "client {} encrypted under another key",
                m.client
            )));
        }
        if self.by_client.contains_key(&m.client) {
            return Err(Error::Duplicate(format!(
                "client {} already admitted",
                m.client
            )));
        }
        if self.contributors.len() >= self.params.max_clients as usize {
            return Err(Error::Refused(format!(
                "max_clients {} reached: the noise budget has no room",
                self.params.max_clients
            )));
        }
        signed.verify(verifier)?;
        self.by_client.insert(m.client, self.contributors.len());
        self.contributors.push(signed);
        Ok(())
    }

    /// Adds one chunk of an admitted client: checks its shape and signed digest, then adds it
    /// into the running sum.
    pub fn add_chunk(&mut self, client: u32, chunk: &EncryptedChunk) -> Result<()> {
        chunk.check_shape(&self.params, self.num_values)?;
        let (index, position, slot) = self.slot(client, chunk.index, chunk.digest())?;
        self.add_at(index, position, slot, chunk);
        Ok(())
    }

    /// Adds one seeded chunk (shared-key mode, [`SeededChunk`]): checks its shape and signed
    /// digest, regenerates its masks from the seed, then adds it into the running sum.
    pub fn add_seeded_chunk(&mut self, client: u32, chunk: &SeededChunk) -> Result<()> {
        let index = chunk.index as usize;
        if index >= self.params.chunk_count(self.num_values)
            || chunk.bodies.len() != self.params.chunk_len(self.num_values, index)
        {
            return Err(Error::Mismatch(format!(
                "seeded chunk {index} has the wrong index or length"
            )));
        }
        let (index, position, slot) = self.slot(client, chunk.index, chunk.digest())?;
        let expanded = chunk.expand(&self.params);
        self.add_at(index, position, slot, &expanded);
        Ok(())
    }

    /// Where chunk `index` of `client` goes, after the admission, duplicate and digest checks.
    fn slot(&self, client: u32, index: u32, digest: [u8; 32]) -> Result<(usize, usize, usize)> {
        if self.sealed {
            return Err(Error::Mismatch(
                "aggregate is sealed: decryption was requested".into(),
            ));
        }
        let position = *self
            .by_client
            .get(&client)
            .ok_or_else(|| Error::Mismatch(format!("client {client} was not admitted")))?;
        let index = index as usize;
        let slot = match self.included[index].binary_search(&(position as u32)) {
            Ok(_) => {
                return Err(Error::Duplicate(format!(
                    "chunk {index} of client {client} twice"
                )));
            }
            Err(slot) => slot,
        };
        if self.contributors[position].manifest.chunk_digests[index] != digest {
            return Err(Error::BadSignature { client });
        }
        Ok((index, position, slot))
    }

    fn add_at(&mut self, index: usize, position: usize, slot: usize, chunk: &EncryptedChunk) {
        self.included[index].insert(slot, position as u32);
        let sum = &mut self.chunks[index];
        math::add_assign(&mut sum.masks, &chunk.masks);
        math::add_assign(&mut sum.bodies, &chunk.bodies);
    }

    /// The request to send to the `t` chosen committee members (those known to be online),
    /// covering every chunk. Seals the aggregate: no chunk is added afterwards.
    ///
    /// Fails if a chunk has fewer than `min_contributors` clients.
    pub fn decryption_request(
        &mut self,
        decrypting_members: &[u32],
        min_contributors: u32,
    ) -> Result<DecryptionRequest> {
        let all = self.chunks.len();
        let mut requests =
            self.decryption_requests(decrypting_members, min_contributors, all.max(1))?;
        requests
            .pop()
            .ok_or_else(|| Error::Mismatch("the aggregate has no chunk".into()))
    }

    /// The same as [`decryption_request`](Self::decryption_request), split into requests of at
    /// most `chunks_per_request` chunks each (a request carries 8 bytes per value of masks plus
    /// the manifests), so each message stays under the transport's size limit. Members answer
    /// each slice of a round once; [`combine`](crate::he::combine) works per slice.
    pub fn decryption_requests(
        &mut self,
        decrypting_members: &[u32],
        min_contributors: u32,
        chunks_per_request: usize,
    ) -> Result<Vec<DecryptionRequest>> {
        if chunks_per_request == 0 {
            return Err(Error::InvalidParams(
                "chunks_per_request must be positive".into(),
            ));
        }
        for (i, inc) in self.included.iter().enumerate() {
            if inc.len() < min_contributors as usize {
                return Err(Error::Refused(format!(
                    "chunk {i} has {} contributors, fewer than {min_contributors}",
                    inc.len()
                )));
            }
        }
        self.sealed = true;
        let mut members = decrypting_members.to_vec();
        members.sort_unstable();
        Ok(self
            .chunks
            .chunks(chunks_per_request)
            .enumerate()
            .map(|(i, slice)| DecryptionRequest {
                round: self.round,
                num_values: self.num_values as u32,
                decrypting_members: members.clone(),
                contributors: self.contributors.clone(),
                included: self.included.clone(),
                first_chunk: (i * chunks_per_request) as u32,
                masks: slice.iter().map(|c| c.masks.clone()).collect(),
            })
            .collect())
    }
}

/// The manifest's vector length and chunk count match the round's.
pub(crate) fn check_manifest_shape(
    params: &HeParams,
    num_values: usize,
    signed: &SignedManifest,
) -> Result<()> {
    let m = &signed.manifest;
    if m.num_values as usize != num_values {
        return Err(Error::Mismatch(format!(
            "client {} manifest has {} values, the round {num_values}",
            m.client, m.num_values
        )));
    }
    if m.chunk_digests.len() != params.chunk_count(num_values) {
        return Err(Error::Mismatch(format!(
            "client {} manifest has the wrong chunk count",
            m.client
        )));
    }
    Ok(())
}
