//! An in-process driver of a whole round: `n` clients and the server, every message passed
//! through its byte encoding, with drop injection at every stage. For tests, examples and
//! simulations (in the style of quinn's `Pair`: no IO, no clocks).

use std::collections::BTreeMap;

use rand::CryptoRng;

use crate::client::ClientRound;
use crate::error::Result;
use crate::messages::{
    InboundShares, KeyDirectory, MaskedInputHeader, RoundBinding, SharePackets,
    SignedAdvertisement, UnmaskRequest, UnmaskResponse,
};
use crate::params::SecAggParams;
use crate::server::{AggregateOutput, ServerRound};
use crate::sign::{MessageSigner, SignatureVerifier};
use crate::wire::{Limits, pack_values, unpack_values};

/// The stage at which a client stops sending (it sends nothing from that stage on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimStage {
    /// Before advertising its keys.
    Advertise,
    /// Before sending its share packets.
    ShareKeys,
    /// Before sending its masked input.
    MaskedInput,
    /// Before answering the unmask request.
    Unmask,
}

/// Bytes that crossed the simulated wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Client-to-server bytes, all clients together.
    pub uplink: u64,
    /// Server-to-client bytes, all clients together.
    pub downlink: u64,
    /// Of the uplink, the bytes of masked vectors (bit-packed at `k` bits).
    pub masked_vectors: u64,
}

/// A simulated round.
pub struct Sim<'a> {
    limits: Limits,
    server: Option<ServerRound>,
    clients: BTreeMap<u32, ClientRound>,
    signers: &'a BTreeMap<u32, Box<dyn MessageSigner>>,
    verifier: &'a dyn SignatureVerifier,
    drops: BTreeMap<u32, SimStage>,
    /// Bytes on the simulated wire so far.
    pub stats: WireStats,
}

impl<'a> Sim<'a> {
    /// A round over the clients that have a signer, each with keys from `rng`.
    ///
    /// # Errors
    /// As [`ClientRound::new`] and [`ServerRound::new`].
    pub fn new<R: CryptoRng + ?Sized>(
        binding: RoundBinding,
        params: SecAggParams,
        signers: &'a BTreeMap<u32, Box<dyn MessageSigner>>,
        verifier: &'a dyn SignatureVerifier,
        rng: &mut R,
    ) -> Result<Self> {
        let ids: Vec<u32> = signers.keys().copied().collect();
        let clients = ids
            .iter()
            .map(|&i| Ok((i, ClientRound::new(binding, params, i, &ids, rng)?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            limits: Limits::default(),
            server: Some(ServerRound::new(binding, params, &ids)?),
            clients,
            signers,
            verifier,
            drops: BTreeMap::new(),
            stats: WireStats::default(),
        })
    }

    /// Makes `client` go silent from `stage` on.
    pub fn drop_at(&mut self, client: u32, stage: SimStage) {
        self.drops.insert(client, stage);
    }

    /// The client state machines (to inspect what they revealed).
    pub fn clients(&self) -> &BTreeMap<u32, ClientRound> {
        &self.clients
    }

    fn active(&self, client: u32, stage: SimStage) -> bool {
        self.drops.get(&client).is_none_or(|&d| d > stage)
    }

    /// Runs the whole round (once) on the given encoded inputs (one per client,
    /// `vector_len` values below `2^k`). Client-side errors drop that client; server errors
    /// abort.
    ///
    /// # Errors
    /// The server's abort error ([`crate::Error::TooFew`], [`crate::Error::TooFewShares`],
    /// ...).
    pub fn run(&mut self, inputs: &BTreeMap<u32, Vec<u32>>) -> Result<AggregateOutput> {
        let mut server = self.server.take().ok_or(crate::Error::WrongStage {
            call: "Sim::run",
            stage: "finished",
        })?;
        let ids: Vec<u32> = self.clients.keys().copied().collect();
        let bits = server.params().modulus_bits;
        let v = self.verifier;
        let signers = self.signers;
        let l = self.limits;
        // Stage 1.
        for &i in &ids {
            if !self.active(i, SimStage::Advertise) {
                continue;
            }
            let signer = signers[&i].as_ref();
            let Some(client) = self.clients.get_mut(&i) else {
                continue;
            };
            let Ok(ad) = client.advertise(signer) else {
                continue;
            };
            let bytes = ad.to_bytes();
            self.stats.uplink += bytes.len() as u64;
            let _ = server.handle_advertisement(i, SignedAdvertisement::from_bytes(&bytes, &l)?, v);
        }
        let directory = server.close_advertise()?.to_bytes();
        // Stage 2.
        for &i in &ids {
            if !self.active(i, SimStage::ShareKeys) || self.clients[&i].is_failed() {
                continue;
            }
            self.stats.downlink += directory.len() as u64;
            let dir = KeyDirectory::from_bytes(&directory, &l)?;
            let signer = signers[&i].as_ref();
            let out = match self.clients.get_mut(&i) {
                Some(c) => c.handle_key_directory(dir, v, signer),
                None => continue,
            };
            let Ok(packets) = out else { continue };
            let bytes = packets.to_bytes();
            self.stats.uplink += bytes.len() as u64;
            let _ = server.handle_share_packets(i, SharePackets::from_bytes(&bytes, &l)?, v);
        }
        // Stage 3.
        for (i, inbound) in server.close_share_keys()? {
            if !self.active(i, SimStage::MaskedInput) {
                continue;
            }
            let bytes = inbound.to_bytes();
            self.stats.downlink += bytes.len() as u64;
            let mut input = inputs.get(&i).cloned().unwrap_or_default();
            let signer = signers[&i].as_ref();
            let Some(client) = self.clients.get_mut(&i) else {
                continue;
            };
            let Ok(header) =
                client.handle_shares(InboundShares::from_bytes(&bytes, &l)?, &mut input, signer)
            else {
                continue;
            };
            let header_bytes = header.to_bytes();
            let packed = pack_values(&input, bits);
            self.stats.uplink += (header_bytes.len() + packed.len()) as u64;
            self.stats.masked_vectors += packed.len() as u64;
            let masked = unpack_values(&packed, bits, input.len())?;
            drop(input);
            let _ = server.handle_masked_input(
                i,
                MaskedInputHeader::from_bytes(&header_bytes, &l)?,
                &masked,
                v,
            );
        }
        // Stage 4.
        for (i, request) in server.close_masked_input()? {
            if !self.active(i, SimStage::Unmask) {
                continue;
            }
            let bytes = request.to_bytes();
            self.stats.downlink += bytes.len() as u64;
            let signer = signers[&i].as_ref();
            let Some(client) = self.clients.get_mut(&i) else {
                continue;
            };
            let Ok(response) =
                client.handle_unmask_request(UnmaskRequest::from_bytes(&bytes, &l)?, signer)
            else {
                continue;
            };
            let bytes = response.to_bytes();
            self.stats.uplink += bytes.len() as u64;
            let _ = server.handle_unmask_response(i, UnmaskResponse::from_bytes(&bytes, &l)?, v);
        }
        server.finish()
    }
}
