//! The client side of one SecAgg+ round, as a state machine without IO.
//!
//! Call order: [`ClientRound::advertise`], [`ClientRound::handle_key_directory`],
//! [`ClientRound::handle_shares`], [`ClientRound::handle_unmask_request`]. Each returns the
//! message to send. Any error ends the client's part in the round (later calls return
//! [`Error::WrongStage`]); in particular a refused unmask request is never answered.

use std::collections::{BTreeMap, BTreeSet};

use rand::{CryptoRng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use x25519_dalek::StaticSecret;
use zeroize::Zeroizing;

use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::graph::Graph;
use crate::keys::{self, Purpose};
use crate::messages::{
    InboundShares, KeyDirectory, MaskedInputHeader, RoundBinding, SHARE_CIPHERTEXT_LEN,
    SharePacket, SharePackets, Signed, SignedAdvertisement, UnmaskRequest, UnmaskResponse,
    masked_digest,
};
use crate::params::SecAggParams;
use crate::prg::{MaskSeed, MaskStreams, Sign, apply_masks, modulus_mask};
use crate::shamir::{self, Share};
use crate::sign::{MessageSigner, SignatureVerifier};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Advertise,
    AwaitDirectory,
    AwaitShares,
    AwaitUnmask,
    Done,
    Failed,
}

impl Stage {
    fn name(self) -> &'static str {
        match self {
            Stage::Advertise => "advertise",
            Stage::AwaitDirectory => "awaiting the key directory",
            Stage::AwaitShares => "awaiting shares",
            Stage::AwaitUnmask => "awaiting the unmask request",
            Stage::Done => "done",
            Stage::Failed => "failed",
        }
    }
}

/// What this client has revealed about a peer in the unmask stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revealed {
    /// The share of the peer's self-mask seed (the peer survived).
    SelfMaskShare,
    /// The share of the peer's masking key (the peer dropped).
    KeyShare,
}

/// One client's state for one round.
pub struct ClientRound {
    binding: RoundBinding,
    params: SecAggParams,
    me: u32,
    participants: BTreeSet<u32>,
    stage: Stage,
    cipher_secret: StaticSecret,
    mask_secret: StaticSecret,
    self_seed: Zeroizing<[u8; 32]>,
    rng: ChaCha20Rng,
    /// Peers' advertised keys (`U1`).
    directory: BTreeMap<u32, ([u8; 32], [u8; 32])>,
    neighbours: Vec<u32>,
    /// Shares held: `(share of b_j, share of s_j^SK)` for each `j` in `U2 ∩ N(i)` and me.
    held: BTreeMap<u32, (Share, Share)>,
    /// The share-encryption key with each neighbour, derived once in stage 2 (X25519 +
    /// HKDF) and used again to open that neighbour's shares in stage 3.
    share_keys: BTreeMap<u32, Zeroizing<[u8; 32]>>,
    revealed: BTreeMap<u32, Revealed>,
}

impl std::fmt::Debug for ClientRound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRound")
            .field("binding", &self.binding)
            .field("me", &self.me)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

impl ClientRound {
    /// A client `me` among `participants` (the clients selected for the round), with fresh
    /// keys and self-mask seed from `rng` (a CSPRNG: the OS's in production).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for invalid `params` ([`SecAggParams::validate`]) or if
    /// `me` is not among `participants`.
    pub fn new<R: CryptoRng + ?Sized>(
        binding: RoundBinding,
        params: SecAggParams,
        me: u32,
        participants: &[u32],
        rng: &mut R,
    ) -> Result<Self> {
        params.validate()?;
        let participants: BTreeSet<u32> = participants.iter().copied().collect();
        if !participants.contains(&me) {
            return Err(Error::param("me", me, "one of the participants"));
        }
        let mut draw = || {
            let mut b = Zeroizing::new([0_u8; 32]);
            rng.fill_bytes(b.as_mut());
            b
        };
        let cipher_secret = StaticSecret::from(*draw());
        let mask_secret = StaticSecret::from(*draw());
        let self_seed = draw();
        let rng = ChaCha20Rng::from_seed(*draw());
        Ok(Self {
            binding,
            params,
            me,
            participants,
            stage: Stage::Advertise,
            cipher_secret,
            mask_secret,
            self_seed,
            rng,
            directory: BTreeMap::new(),
            neighbours: Vec::new(),
            held: BTreeMap::new(),
            share_keys: BTreeMap::new(),
            revealed: BTreeMap::new(),
        })
    }

    /// This client's index.
    pub fn me(&self) -> u32 {
        self.me
    }

    /// The neighbours this client shares with (known after the key directory).
    pub fn neighbours(&self) -> &[u32] {
        &self.neighbours
    }

    /// What this client revealed about each peer (filled by the unmask stage).
    pub fn revealed(&self) -> &BTreeMap<u32, Revealed> {
        &self.revealed
    }

    /// Whether the round failed for this client (it answers nothing more).
    pub fn is_failed(&self) -> bool {
        self.stage == Stage::Failed
    }

    fn expect(&self, stage: Stage, call: &'static str) -> Result<()> {
        if self.stage == stage {
            Ok(())
        } else if stage == Stage::AwaitUnmask && self.stage == Stage::Done {
            Err(Error::AlreadyAnswered)
        } else {
            Err(Error::WrongStage {
                call,
                stage: self.stage.name(),
            })
        }
    }

    /// Runs a stage handler; an error fails the round for this client.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let out = f(self);
        if out.is_err() && !matches!(out, Err(Error::WrongStage { .. } | Error::AlreadyAnswered)) {
            self.stage = Stage::Failed;
            self.held.clear();
        }
        out
    }

    /// Stage 1: the signed advertisement of this client's two public keys.
    ///
    /// # Errors
    /// [`Error::WrongStage`] if called twice.
    pub fn advertise(&mut self, signer: &dyn MessageSigner) -> Result<SignedAdvertisement> {
        self.expect(Stage::Advertise, "advertise")?;
        let mut ad = SignedAdvertisement {
            client: self.me,
            cipher_key: keys::public(&self.cipher_secret),
            mask_key: keys::public(&self.mask_secret),
            signature: Vec::new(),
        };
        ad.signature = ad.sign_with(&self.binding, signer);
        self.stage = Stage::AwaitDirectory;
        Ok(ad)
    }

    /// Stage 2: checks every advertisement in the directory (signature bound to this session
    /// and round, a participant, no duplicate client or key, our own entry unchanged),
    /// derives the neighbour graph, Shamir-shares the self-mask seed and the masking key
    /// among the neighbours and encrypts each neighbour's pair.
    ///
    /// # Errors
    /// [`Error::BadSignature`], [`Error::UnexpectedClient`], [`Error::Duplicate`],
    /// [`Error::WeakKey`], [`Error::TooFew`] (fewer advertisers than the threshold).
    pub fn handle_key_directory(
        &mut self,
        directory: KeyDirectory,
        verifier: &dyn SignatureVerifier,
        signer: &dyn MessageSigner,
    ) -> Result<SharePackets> {
        self.expect(Stage::AwaitDirectory, "handle_key_directory")?;
        self.guarded(|s| s.key_directory(directory, verifier, signer))
    }

    fn key_directory(
        &mut self,
        directory: KeyDirectory,
        verifier: &dyn SignatureVerifier,
        signer: &dyn MessageSigner,
    ) -> Result<SharePackets> {
        let mut keys_seen = BTreeSet::new();
        let mut last = None;
        for e in &directory.entries {
            if last.is_some_and(|l| l >= e.client) {
                return Err(Error::Duplicate {
                    client: e.client,
                    what: "the key directory (or out of order)",
                });
            }
            last = Some(e.client);
            if !self.participants.contains(&e.client) {
                return Err(Error::UnexpectedClient {
                    client: e.client,
                    expected: "a participant of this round",
                });
            }
            e.verify_with(&self.binding, verifier)?;
            if !keys_seen.insert(e.cipher_key) || !keys_seen.insert(e.mask_key) {
                return Err(Error::Duplicate {
                    client: e.client,
                    what: "the advertised public keys",
                });
            }
            self.directory.insert(e.client, (e.cipher_key, e.mask_key));
        }
        let mine = (
            keys::public(&self.cipher_secret),
            keys::public(&self.mask_secret),
        );
        if self.directory.get(&self.me) != Some(&mine) {
            return Err(Error::UnexpectedClient {
                client: self.me,
                expected: "in the key directory with the keys it advertised",
            });
        }
        let need = self.params.threshold;
        if directory.entries.len() < need {
            return Err(Error::TooFew {
                what: "advertised clients",
                have: directory.entries.len(),
                need,
            });
        }
        let ids: Vec<u32> = self.directory.keys().copied().collect();
        let seed = keys::graph_seed(&self.binding, &directory.entries);
        let graph = Graph::new(&ids, self.params.degree, &seed);
        self.neighbours = graph.neighbours(self.me);
        if self.neighbours.len() + 1 < need {
            return Err(Error::TooFew {
                what: "neighbours and self",
                have: self.neighbours.len() + 1,
                need,
            });
        }
        // Shares for the neighbours and for me, in that order.
        let mut xs: Vec<u128> = self.neighbours.iter().map(|&j| shamir::x_of(j)).collect();
        xs.push(shamir::x_of(self.me));
        let mask_secret = Zeroizing::new(self.mask_secret.to_bytes());
        let b_shares = shamir::split(&self.self_seed, &xs, need, &mut self.rng);
        let s_shares = shamir::split(&mask_secret, &xs, need, &mut self.rng);
        let mut packets = Vec::with_capacity(self.neighbours.len());
        let mut plaintext = Zeroizing::new([0_u8; 2 * Share::LEN]);
        for (k, (b, s)) in b_shares.iter().zip(&s_shares).enumerate() {
            let Some(&j) = self.neighbours.get(k) else {
                self.held.insert(self.me, (b.clone(), s.clone()));
                continue;
            };
            let key = self.share_key(j)?;
            plaintext[..Share::LEN].copy_from_slice(&b.to_bytes());
            plaintext[Share::LEN..].copy_from_slice(&s.to_bytes());
            let ciphertext = keys::seal(&key, &self.binding, self.me, j, plaintext.as_ref());
            packets.push(SharePacket { to: j, ciphertext });
        }
        let mut out = SharePackets {
            client: self.me,
            packets,
            signature: Vec::new(),
        };
        out.signature = out.sign_with(&self.binding, signer);
        self.stage = Stage::AwaitShares;
        Ok(out)
    }

    /// Stage 3: decrypts the shares the neighbours sent (`U2 ∩ N(i)`), then masks `input`
    /// (already encoded, values in `[0, 2^k)`, length `vector_len`) in place:
    /// `y = x + PRG(b) + Σ_j ±PRG(s_ij) mod 2^k`, all streams fused in one pass. Returns the
    /// signed header to send with the masked vector.
    ///
    /// # Errors
    /// [`Error::BadVector`] for a wrong length or value; [`Error::UnexpectedClient`] for a
    /// sender that is not a neighbour; [`Error::Decrypt`] for a tampered ciphertext;
    /// [`Error::TooFew`] if fewer than `threshold - 1` neighbours sent shares.
    pub fn handle_shares(
        &mut self,
        inbound: InboundShares,
        input: &mut [u32],
        signer: &dyn MessageSigner,
    ) -> Result<MaskedInputHeader> {
        self.expect(Stage::AwaitShares, "handle_shares")?;
        self.guarded(|s| s.shares(inbound, input, signer))
    }

    fn shares(
        &mut self,
        inbound: InboundShares,
        input: &mut [u32],
        signer: &dyn MessageSigner,
    ) -> Result<MaskedInputHeader> {
        check_vector(self.me, input, &self.params)?;
        let seeds = self.take_shares(inbound)?;
        apply_masks(input, &seeds, self.params.prg, self.params.modulus_bits);
        Ok(self.sign_masked(input, signer))
    }

    /// Stage 3 fused with the codec: decrypts the neighbours' shares as
    /// [`ClientRound::handle_shares`] does, then encodes `update` with `codec` and masks each
    /// block as it is produced (one pass), followed by the `extra` values (exact integers the
    /// application appends, e.g. an example count, each below `2^k`). Returns the masked
    /// vector (`codec.encoded_len() + extra.len()` = `vector_len` values) and its signed
    /// header.
    ///
    /// # Errors
    /// As [`ClientRound::handle_shares`], [`Error::BadVector`] if the lengths or the codec's
    /// modulus do not match the round's, and as [`Codec::encode`].
    pub fn handle_shares_encoding<R: CryptoRng + ?Sized>(
        &mut self,
        inbound: InboundShares,
        codec: &Codec,
        update: &[f32],
        extra: &[u32],
        rng: &mut R,
        signer: &dyn MessageSigner,
    ) -> Result<(Vec<u32>, MaskedInputHeader)> {
        self.expect(Stage::AwaitShares, "handle_shares_encoding")?;
        self.guarded(|s| {
            let (len, bits) = (s.params.vector_len, s.params.modulus_bits);
            if codec.encoded_len() + extra.len() != len || codec.modulus_bits() != bits {
                return Err(Error::BadVector {
                    client: s.me,
                    reason: format!(
                        "codec of {} values mod 2^{} plus {} extra values for a round of {len} \
                         values mod 2^{bits}",
                        codec.encoded_len(),
                        codec.modulus_bits(),
                        extra.len()
                    ),
                });
            }
            let mut tail = extra.to_vec();
            if let Some(&v) = tail.iter().find(|&&v| v & !modulus_mask(bits) != 0) {
                return Err(Error::BadVector {
                    client: s.me,
                    reason: format!("extra value {v} is not below 2^{bits}"),
                });
            }
            let seeds = s.take_shares(inbound)?;
            let mut streams = MaskStreams::new(&seeds, s.params.prg, bits);
            let mut out = codec.encode_with(update, rng, |block| streams.apply(block))?;
            streams.apply(&mut tail);
            out.extend_from_slice(&tail);
            let header = s.sign_masked(&out, signer);
            Ok((out, header))
        })
    }

    /// Decrypts and stores the neighbours' shares; returns the mask seeds (self-mask and
    /// one pairwise seed per neighbour that sent shares).
    fn take_shares(&mut self, inbound: InboundShares) -> Result<Vec<MaskSeed>> {
        for p in &inbound.packets {
            if self.neighbours.binary_search(&p.from).is_err() {
                return Err(Error::UnexpectedClient {
                    client: p.from,
                    expected: "a neighbour",
                });
            }
            if self.held.contains_key(&p.from) {
                return Err(Error::Duplicate {
                    client: p.from,
                    what: "the inbound shares",
                });
            }
            if p.ciphertext.len() != SHARE_CIPHERTEXT_LEN {
                return Err(Error::Decrypt { from: p.from });
            }
            let key = self.share_key(p.from)?;
            let plain = keys::open(&key, &self.binding, p.from, self.me, &p.ciphertext)?;
            let b = Share::from_bytes(&plain[..Share::LEN])?;
            let s = Share::from_bytes(&plain[Share::LEN..])?;
            self.held.insert(p.from, (b, s));
        }
        if self.held.len() < self.params.threshold {
            return Err(Error::TooFew {
                what: "neighbours that sent shares, and self",
                have: self.held.len(),
                need: self.params.threshold,
            });
        }
        let mut seeds = Vec::with_capacity(self.held.len());
        seeds.push(MaskSeed {
            key: self.self_seed.clone(),
            sign: Sign::Plus,
        });
        for &j in self.held.keys().filter(|&&j| j != self.me) {
            let (_, mask_key) = self.directory[&j];
            let shared = keys::agree(&self.mask_secret, &mask_key, j)?;
            seeds.push(MaskSeed {
                key: keys::derive(&shared, &self.binding, Purpose::Mask, self.me, j),
                sign: if self.me < j { Sign::Plus } else { Sign::Minus },
            });
        }
        Ok(seeds)
    }

    /// The share-encryption key with neighbour `j` (from the directory), derived on first use
    /// and kept for the round.
    fn share_key(&mut self, j: u32) -> Result<Zeroizing<[u8; 32]>> {
        if let Some(key) = self.share_keys.get(&j) {
            return Ok(key.clone());
        }
        let (cipher_key, _) = self.directory[&j];
        let shared = keys::agree(&self.cipher_secret, &cipher_key, j)?;
        let key = keys::derive(&shared, &self.binding, Purpose::Share, self.me, j);
        self.share_keys.insert(j, key.clone());
        Ok(key)
    }

    /// The signed header of the masked vector; moves to the unmask stage.
    fn sign_masked(&mut self, masked: &[u32], signer: &dyn MessageSigner) -> MaskedInputHeader {
        let mut header = MaskedInputHeader {
            client: self.me,
            len: masked.len() as u64,
            digest: masked_digest(masked, self.params.modulus_bits),
            signature: Vec::new(),
        };
        header.signature = header.sign_with(&self.binding, signer);
        self.stage = Stage::AwaitUnmask;
        header
    }

    /// Stage 4: reveals, for each listed survivor, the share of its self-mask seed and, for
    /// each listed dropped neighbour, the share of its masking key. Answers at most once per
    /// round. Refuses (and never answers this round) if a client is listed both ways, a
    /// listed client is not a neighbour that sent shares (or this client for survivors), this
    /// client is not listed as a survivor, or fewer than `threshold` survivors are listed.
    ///
    /// # Errors
    /// [`Error::AlreadyAnswered`], [`Error::InconsistentDropouts`],
    /// [`Error::UnexpectedClient`], [`Error::TooFew`].
    pub fn handle_unmask_request(
        &mut self,
        request: UnmaskRequest,
        signer: &dyn MessageSigner,
    ) -> Result<UnmaskResponse> {
        self.expect(Stage::AwaitUnmask, "handle_unmask_request")?;
        self.guarded(|s| s.unmask(request, signer))
    }

    fn unmask(
        &mut self,
        request: UnmaskRequest,
        signer: &dyn MessageSigner,
    ) -> Result<UnmaskResponse> {
        let survivors: BTreeSet<u32> = request.survivors.iter().copied().collect();
        let dropped: BTreeSet<u32> = request.dropped.iter().copied().collect();
        if survivors.len() != request.survivors.len() || dropped.len() != request.dropped.len() {
            return Err(Error::Duplicate {
                client: u32::MAX,
                what: "the unmask request",
            });
        }
        if let Some(&j) = survivors.intersection(&dropped).next() {
            return Err(Error::InconsistentDropouts { client: j });
        }
        for &j in survivors.iter().chain(&dropped) {
            if !self.held.contains_key(&j) || (j == self.me && dropped.contains(&j)) {
                return Err(Error::UnexpectedClient {
                    client: j,
                    expected: "a neighbour that sent shares (or this client, as a survivor)",
                });
            }
        }
        if !survivors.contains(&self.me) {
            return Err(Error::UnexpectedClient {
                client: self.me,
                expected: "listed among the survivors",
            });
        }
        if survivors.len() < self.params.threshold {
            return Err(Error::TooFew {
                what: "survivors among my neighbours and me",
                have: survivors.len(),
                need: self.params.threshold,
            });
        }
        let mut response = UnmaskResponse {
            client: self.me,
            self_mask_shares: Vec::with_capacity(survivors.len()),
            key_shares: Vec::with_capacity(dropped.len()),
            signature: Vec::new(),
        };
        for (&j, (b, s)) in &self.held {
            let reveal = if survivors.contains(&j) {
                Revealed::SelfMaskShare
            } else if dropped.contains(&j) {
                Revealed::KeyShare
            } else {
                continue;
            };
            // One kind per peer, ever (the stage check makes this the only answer; the map
            // keeps the invariant explicit).
            if *self.revealed.entry(j).or_insert(reveal) != reveal {
                return Err(Error::InconsistentDropouts { client: j });
            }
            match reveal {
                Revealed::SelfMaskShare => response.self_mask_shares.push((j, b.clone())),
                Revealed::KeyShare => response.key_shares.push((j, s.clone())),
            }
        }
        response.signature = response.sign_with(&self.binding, signer);
        self.stage = Stage::Done;
        self.held.clear();
        Ok(response)
    }
}

/// Checks a masked or encoded vector's length and range.
pub(crate) fn check_vector(client: u32, v: &[u32], params: &SecAggParams) -> Result<()> {
    if v.len() != params.vector_len {
        return Err(Error::BadVector {
            client,
            reason: format!("{} values, expected {}", v.len(), params.vector_len),
        });
    }
    let mask = modulus_mask(params.modulus_bits);
    // An OR over the whole vector vectorises; the position is looked for only on failure.
    if v.iter().fold(0, |acc, &x| acc | x) & !mask == 0 {
        return Ok(());
    }
    if let Some(i) = v.iter().position(|&x| x & !mask != 0) {
        return Err(Error::BadVector {
            client,
            reason: format!(
                "value {} at {i} is not below 2^{}",
                v[i], params.modulus_bits
            ),
        });
    }
    Ok(())
}
