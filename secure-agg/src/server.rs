//! The server side of one SecAgg+ round, as a state machine without IO.
//!
//! The engine feeds each stage's messages with `handle_*` and decides when a stage closes
//! (deadlines are its business); `close_*` returns the messages of the next stage. A client
//! whose message is rejected is simply left out of the stage's set. [`ServerRound::finish`]
//! reconstructs what the survivors revealed and returns the sum over the survivors, or an
//! abort error that reveals nothing.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::client::check_vector;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::keys::{self, Purpose};
use crate::messages::{
    InboundShare, InboundShares, KeyDirectory, MaskedInputHeader, RoundBinding, SharePackets,
    Signed, SignedAdvertisement, UnmaskRequest, UnmaskResponse, masked_digest,
};
use crate::params::SecAggParams;
use crate::prg::{MaskSeed, MaskStreams, PrgKind, Sign};
use crate::shamir::{self, Share};
use crate::sign::SignatureVerifier;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Advertise,
    ShareKeys,
    MaskedInput,
    Unmask,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Advertise => "advertise",
            Stage::ShareKeys => "share keys",
            Stage::MaskedInput => "masked input",
            Stage::Unmask => "unmask",
        }
    }
}

/// The result of a round: the sum mod `2^k` of the survivors' inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateOutput {
    /// `Σ_{i ∈ U3} x_i mod 2^k`.
    pub sum: Vec<u32>,
    /// The clients whose inputs are in the sum (`U3`), increasing.
    pub survivors: Vec<u32>,
}

/// The sum before its masks are removed, and what removes them ([`ServerRound::finish_split`]).
#[derive(Debug)]
pub struct PendingAggregate {
    /// `Σ_{i ∈ U3} y_i mod 2^k`, still masked.
    pub masked_sum: Vec<u32>,
    /// The clients whose inputs are in the sum (`U3`), increasing.
    pub survivors: Vec<u32>,
    /// Removes the remaining masks.
    pub unmasker: Unmasker,
}

/// The reconstructed mask seeds of a round (secret: zeroized on drop).
pub struct Unmasker {
    seeds: Vec<MaskSeed>,
    prg: PrgKind,
    bits: u32,
}

impl std::fmt::Debug for Unmasker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unmasker")
            .field("streams", &self.seeds.len())
            .finish_non_exhaustive()
    }
}

impl Unmasker {
    /// Removes the masks from `chunk`, the values of the masked sum starting at index
    /// `offset`, and reduces it mod `2^k`. Ranges may be processed in any order and on any
    /// thread; covering the whole sum once unmasks it.
    pub fn remove_masks(&self, offset: usize, chunk: &mut [u32]) {
        MaskStreams::at(&self.seeds, self.prg, self.bits, offset).apply(chunk);
    }
}

/// The server's state for one round.
pub struct ServerRound {
    binding: RoundBinding,
    params: SecAggParams,
    participants: BTreeSet<u32>,
    stage: Stage,
    adverts: BTreeMap<u32, SignedAdvertisement>,
    graph: Option<Graph>,
    packets: BTreeMap<u32, SharePackets>,
    sum: Vec<u32>,
    masked: BTreeSet<u32>,
    requests: BTreeMap<u32, UnmaskRequest>,
    responses: BTreeMap<u32, UnmaskResponse>,
}

impl std::fmt::Debug for ServerRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerRound")
            .field("binding", &self.binding)
            .field("stage", &self.stage)
            .field("advertised", &self.adverts.len())
            .field("shared", &self.packets.len())
            .field("masked", &self.masked.len())
            .field("responses", &self.responses.len())
            .finish_non_exhaustive()
    }
}

impl ServerRound {
    /// A round over `participants` (the selected clients).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid `params`.
    pub fn new(binding: RoundBinding, params: SecAggParams, participants: &[u32]) -> Result<Self> {
        params.validate()?;
        Ok(Self {
            binding,
            params,
            participants: participants.iter().copied().collect(),
            stage: Stage::Advertise,
            adverts: BTreeMap::new(),
            graph: None,
            packets: BTreeMap::new(),
            sum: Vec::new(),
            masked: BTreeSet::new(),
            requests: BTreeMap::new(),
            responses: BTreeMap::new(),
        })
    }

    /// The round's parameters.
    pub fn params(&self) -> &SecAggParams {
        &self.params
    }

    fn expect(&self, stage: Stage, call: &'static str) -> Result<()> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(Error::WrongStage {
                call,
                stage: self.stage.name(),
            })
        }
    }

    fn graph(&self) -> Result<&Graph> {
        self.graph.as_ref().ok_or(Error::WrongStage {
            call: "graph",
            stage: "advertise",
        })
    }

    /// Accepts one client's key advertisement.
    ///
    /// # Errors
    /// [`Error::UnexpectedClient`] (not a participant, or `from` is not the signer),
    /// [`Error::Duplicate`], [`Error::BadSignature`].
    pub fn handle_advertisement(
        &mut self,
        from: u32,
        msg: SignedAdvertisement,
        verifier: &dyn SignatureVerifier,
    ) -> Result<()> {
        self.expect(Stage::Advertise, "handle_advertisement")?;
        if msg.client != from || !self.participants.contains(&from) {
            return Err(Error::UnexpectedClient {
                client: msg.client,
                expected: "a participant sending its own advertisement",
            });
        }
        if self.adverts.contains_key(&from) {
            return Err(Error::Duplicate {
                client: from,
                what: "the advertisements",
            });
        }
        msg.verify_with(&self.binding, verifier)?;
        let clash = self.adverts.values().any(|a| {
            [a.cipher_key, a.mask_key].contains(&msg.cipher_key)
                || [a.cipher_key, a.mask_key].contains(&msg.mask_key)
        });
        if clash || msg.cipher_key == msg.mask_key {
            return Err(Error::Duplicate {
                client: from,
                what: "the advertised public keys",
            });
        }
        self.adverts.insert(from, msg);
        Ok(())
    }

    /// Closes the advertise stage (`U1` = the accepted advertisers) and returns the key
    /// directory to broadcast to every client in `U1`.
    ///
    /// # Errors
    /// [`Error::TooFew`] if fewer than `threshold` clients advertised (the round aborts).
    pub fn close_advertise(&mut self) -> Result<KeyDirectory> {
        self.expect(Stage::Advertise, "close_advertise")?;
        if self.adverts.len() < self.params.threshold {
            return Err(Error::TooFew {
                what: "advertised clients",
                have: self.adverts.len(),
                need: self.params.threshold,
            });
        }
        let entries: Vec<SignedAdvertisement> = self.adverts.values().cloned().collect();
        let ids: Vec<u32> = self.adverts.keys().copied().collect();
        let seed = keys::graph_seed(&self.binding, &entries);
        self.graph = Some(Graph::new(&ids, self.params.degree, &seed));
        self.stage = Stage::ShareKeys;
        Ok(KeyDirectory { entries })
    }

    /// Accepts one client's share packets: exactly one packet per neighbour, signed.
    ///
    /// # Errors
    /// [`Error::UnexpectedClient`], [`Error::Duplicate`], [`Error::BadSignature`].
    pub fn handle_share_packets(
        &mut self,
        from: u32,
        msg: SharePackets,
        verifier: &dyn SignatureVerifier,
    ) -> Result<()> {
        self.expect(Stage::ShareKeys, "handle_share_packets")?;
        if msg.client != from || !self.adverts.contains_key(&from) {
            return Err(Error::UnexpectedClient {
                client: msg.client,
                expected: "an advertised client sending its own packets",
            });
        }
        if self.packets.contains_key(&from) {
            return Err(Error::Duplicate {
                client: from,
                what: "the share packets",
            });
        }
        msg.verify_with(&self.binding, verifier)?;
        let neighbours = self.graph()?.neighbours(from);
        let recipients: Vec<u32> = msg.packets.iter().map(|p| p.to).collect();
        if recipients != neighbours {
            return Err(Error::UnexpectedClient {
                client: from,
                expected: "sending exactly one packet to each of its neighbours",
            });
        }
        self.packets.insert(from, msg);
        Ok(())
    }

    /// Closes the share-keys stage (`U2` = clients whose packets were accepted) and returns,
    /// for each client in `U2`, the packets its neighbours in `U2` sent it.
    ///
    /// # Errors
    /// [`Error::TooFew`] if `|U2|` is below the threshold (the round aborts).
    pub fn close_share_keys(&mut self) -> Result<Vec<(u32, InboundShares)>> {
        self.expect(Stage::ShareKeys, "close_share_keys")?;
        if self.packets.len() < self.params.threshold {
            return Err(Error::TooFew {
                what: "clients that sent shares",
                have: self.packets.len(),
                need: self.params.threshold,
            });
        }
        let mut inbound: BTreeMap<u32, Vec<InboundShare>> =
            self.packets.keys().map(|&i| (i, Vec::new())).collect();
        for (&from, msg) in &self.packets {
            for p in &msg.packets {
                if let Some(list) = inbound.get_mut(&p.to) {
                    list.push(InboundShare {
                        from,
                        ciphertext: p.ciphertext.clone(),
                    });
                }
            }
        }
        self.stage = Stage::MaskedInput;
        Ok(inbound
            .into_iter()
            .map(|(i, packets)| (i, InboundShares { packets }))
            .collect())
    }

    /// Accepts one client's masked input (the complete vector) and adds it into the running
    /// sum mod `2^k`.
    ///
    /// # Errors
    /// [`Error::UnexpectedClient`] (not in `U2`), [`Error::Duplicate`],
    /// [`Error::BadSignature`], [`Error::BadVector`] (length, a value `>= 2^k`, or a digest
    /// that does not match the signed header).
    pub fn handle_masked_input(
        &mut self,
        from: u32,
        header: MaskedInputHeader,
        masked: &[u32],
        verifier: &dyn SignatureVerifier,
    ) -> Result<()> {
        self.expect(Stage::MaskedInput, "handle_masked_input")?;
        if header.client != from || !self.packets.contains_key(&from) {
            return Err(Error::UnexpectedClient {
                client: header.client,
                expected: "a client that sent shares, sending its own input",
            });
        }
        if self.masked.contains(&from) {
            return Err(Error::Duplicate {
                client: from,
                what: "the masked inputs",
            });
        }
        header.verify_with(&self.binding, verifier)?;
        check_vector(from, masked, &self.params)?;
        if header.len != masked.len() as u64
            || header.digest != masked_digest(masked, self.params.modulus_bits)
        {
            return Err(Error::BadVector {
                client: from,
                reason: "the vector does not match its signed header".into(),
            });
        }
        if self.sum.is_empty() {
            self.sum = vec![0; self.params.vector_len];
        }
        for (s, &m) in self.sum.iter_mut().zip(masked) {
            *s = s.wrapping_add(m);
        }
        self.masked.insert(from);
        Ok(())
    }

    /// Closes the masked-input stage (`U3` = clients whose input is in the sum) and returns
    /// the unmask request for each of them.
    ///
    /// # Errors
    /// [`Error::TooFew`] if `|U3|` is below the threshold (the round aborts).
    pub fn close_masked_input(&mut self) -> Result<Vec<(u32, UnmaskRequest)>> {
        self.expect(Stage::MaskedInput, "close_masked_input")?;
        if self.masked.len() < self.params.threshold {
            return Err(Error::TooFew {
                what: "clients that sent masked inputs",
                have: self.masked.len(),
                need: self.params.threshold,
            });
        }
        let graph = self.graph()?;
        let mut out = Vec::with_capacity(self.masked.len());
        for &i in &self.masked {
            let mut survivors = vec![i];
            let mut dropped = Vec::new();
            for j in graph.neighbours(i) {
                if self.masked.contains(&j) {
                    survivors.push(j);
                } else if self.packets.contains_key(&j) {
                    dropped.push(j);
                }
            }
            survivors.sort_unstable();
            out.push((i, UnmaskRequest { survivors, dropped }));
        }
        self.requests = out.iter().cloned().collect();
        self.stage = Stage::Unmask;
        Ok(out)
    }

    /// Accepts one survivor's unmask response; it must answer exactly what was asked.
    ///
    /// # Errors
    /// [`Error::UnexpectedClient`] (no request was sent to it, or the shares do not match the
    /// request), [`Error::Duplicate`], [`Error::BadSignature`].
    pub fn handle_unmask_response(
        &mut self,
        from: u32,
        msg: UnmaskResponse,
        verifier: &dyn SignatureVerifier,
    ) -> Result<()> {
        self.expect(Stage::Unmask, "handle_unmask_response")?;
        let Some(request) = self.requests.get(&from).filter(|_| msg.client == from) else {
            return Err(Error::UnexpectedClient {
                client: msg.client,
                expected: "a survivor answering its own unmask request",
            });
        };
        if self.responses.contains_key(&from) {
            return Err(Error::Duplicate {
                client: from,
                what: "the unmask responses",
            });
        }
        msg.verify_with(&self.binding, verifier)?;
        let b_ids: Vec<u32> = msg.self_mask_shares.iter().map(|(j, _)| *j).collect();
        let s_ids: Vec<u32> = msg.key_shares.iter().map(|(j, _)| *j).collect();
        if b_ids != request.survivors || s_ids != request.dropped {
            return Err(Error::UnexpectedClient {
                client: from,
                expected: "answering exactly the clients of its request",
            });
        }
        self.responses.insert(from, msg);
        Ok(())
    }

    /// Reconstructs each survivor's self-mask seed and each dropped client's masking key
    /// from the responses, removes their masks in one fused pass, and returns the sum.
    ///
    /// # Errors
    /// [`Error::WrongStage`] before the unmask stage; [`Error::TooFewShares`] if some secret
    /// has fewer than `threshold` shares (the round aborts, nothing is output);
    /// [`Error::ReconstructionMismatch`] if shares are inconsistent or a reconstructed masking
    /// key does not match its advertised public key.
    pub fn finish(self) -> Result<AggregateOutput> {
        let mut pending = self.finish_split()?;
        pending.unmasker.remove_masks(0, &mut pending.masked_sum);
        Ok(AggregateOutput {
            sum: pending.masked_sum,
            survivors: pending.survivors,
        })
    }

    /// [`ServerRound::finish`] without the mask removal: the caller removes the masks with
    /// [`Unmasker::remove_masks`] on ranges of `masked_sum`, e.g. one range per thread (the
    /// removal is the server's dominant cost: `|U3| + Σ_dropped |N(j) ∩ U3|` keystreams of the
    /// vector's length).
    ///
    /// # Errors
    /// As [`ServerRound::finish`].
    pub fn finish_split(self) -> Result<PendingAggregate> {
        self.expect(Stage::Unmask, "finish")?;
        let t = self.params.threshold;
        let mut b_points: BTreeMap<u32, Vec<(u128, &Share)>> = BTreeMap::new();
        let mut s_points: BTreeMap<u32, Vec<(u128, &Share)>> = BTreeMap::new();
        for (&r, msg) in &self.responses {
            for (j, share) in &msg.self_mask_shares {
                b_points
                    .entry(*j)
                    .or_default()
                    .push((shamir::x_of(r), share));
            }
            for (j, share) in &msg.key_shares {
                s_points
                    .entry(*j)
                    .or_default()
                    .push((shamir::x_of(r), share));
            }
        }
        let dropped: Vec<u32> = self
            .packets
            .keys()
            .copied()
            .filter(|j| !self.masked.contains(j))
            .collect();
        // Check every secret can be rebuilt before rebuilding any (abort reveals nothing).
        let count = |points: &BTreeMap<u32, Vec<(u128, &Share)>>, j: u32| {
            points.get(&j).map_or(0, Vec::len)
        };
        for &k in &self.masked {
            if count(&b_points, k) < t {
                return Err(Error::TooFewShares {
                    client: k,
                    secret: "self-mask seed",
                    have: count(&b_points, k),
                    need: t,
                });
            }
        }
        let graph = self.graph.as_ref().ok_or(Error::WrongStage {
            call: "finish",
            stage: "advertise",
        })?;
        let needed: Vec<u32> = dropped
            .iter()
            .copied()
            .filter(|&j| graph.neighbours(j).iter().any(|k| self.masked.contains(k)))
            .collect();
        for &j in &needed {
            if count(&s_points, j) < t {
                return Err(Error::TooFewShares {
                    client: j,
                    secret: "masking key",
                    have: count(&s_points, j),
                    need: t,
                });
            }
        }
        let mut seeds = Vec::new();
        for &k in &self.masked {
            let b = reconstruct_checked(&b_points[&k], t, k, "self-mask seed")?;
            seeds.push(MaskSeed {
                key: Zeroizing::new(b),
                sign: Sign::Minus,
            });
        }
        for &j in &needed {
            let bytes = Zeroizing::new(reconstruct_checked(&s_points[&j], t, j, "masking key")?);
            let secret = StaticSecret::from(*bytes);
            if keys::public(&secret) != self.adverts[&j].mask_key {
                return Err(Error::ReconstructionMismatch { client: j });
            }
            for k in graph.neighbours(j) {
                if !self.masked.contains(&k) {
                    continue;
                }
                let shared = keys::agree(&secret, &self.adverts[&k].mask_key, k)?;
                // Survivor k added +PRG(s_kj) if k < j, else -PRG(s_kj): take it back out.
                seeds.push(MaskSeed {
                    key: keys::derive(&shared, &self.binding, Purpose::Mask, j, k),
                    sign: if k < j { Sign::Minus } else { Sign::Plus },
                });
            }
        }
        Ok(PendingAggregate {
            masked_sum: self.sum,
            survivors: self.masked.into_iter().collect(),
            unmasker: Unmasker {
                seeds,
                prg: self.params.prg,
                bits: self.params.modulus_bits,
            },
        })
    }
}

/// Reconstructs from the first `t` points and, when there are more, also from the last `t`:
/// two different subsets must agree, so a client that sent a wrong share is caught (the
/// round aborts) instead of silently corrupting the sum.
fn reconstruct_checked(
    points: &[(u128, &Share)],
    t: usize,
    client: u32,
    secret: &'static str,
) -> Result<[u8; 32]> {
    let first = Zeroizing::new(shamir::reconstruct(points, t, client, secret)?);
    if points.len() > t {
        let last = Zeroizing::new(shamir::reconstruct(
            &points[points.len() - t..],
            t,
            client,
            secret,
        )?);
        if first != last {
            return Err(Error::ReconstructionMismatch { client });
        }
    }
    Ok(*first)
}
