//! The messages of a SecAgg+ round and their canonical byte encodings.
//!
//! Every encoding starts with a one-byte tag, uses little-endian integers, lists clients in
//! strictly increasing order, and ends exactly where the message ends: `from_bytes` rejects a
//! wrong tag, truncation, trailing bytes, unsorted or duplicate ids and counts or lengths over
//! the [`Limits`], without panicking and before allocating for them.
//!
//! Client messages carry a signature by the client's identity key over
//! `"daofl/secagg/v1\0" || tag || session || round || body`, where `body` is the encoding
//! without tag and signature. The sender's index is in the body, so a signature binds the
//! message to its sender, session, round and type.

use crate::error::{Error, Result};
use crate::shamir::Share;
use crate::sign::{MessageSigner, SignatureVerifier};
use crate::wire::{Limits, Reader, Writer, strictly_increasing};

/// Domain separator of every signed payload.
const DOMAIN: &[u8] = b"daofl/secagg/v1\0";
/// Plaintext of one share packet: the self-mask seed share and the masking key share.
pub(crate) const SHARE_PLAINTEXT_LEN: usize = 2 * Share::LEN;
/// Ciphertext of one share packet: plaintext plus the Poly1305 tag.
pub const SHARE_CIPHERTEXT_LEN: usize = SHARE_PLAINTEXT_LEN + 16;

/// The session and round a message belongs to. Every signature and every derived key covers
/// it, so nothing from one round or session can be replayed in another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RoundBinding {
    /// A 32-byte session identifier (e.g. a hash of the federation's config and run id).
    pub session: [u8; 32],
    /// The round number.
    pub round: u64,
}

/// A client message signed by its identity key.
pub(crate) trait Signed {
    const TAG: u8;
    const NAME: &'static str;
    fn client(&self) -> u32;
    fn body(&self, w: &mut Writer);
    fn signature(&self) -> &[u8];

    fn payload(&self, binding: &RoundBinding) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(128));
        w.bytes(DOMAIN);
        w.u8(Self::TAG);
        w.bytes(&binding.session);
        w.u64(binding.round);
        self.body(&mut w);
        w.0
    }

    fn sign_with(&self, binding: &RoundBinding, signer: &dyn MessageSigner) -> Vec<u8> {
        signer.sign(&self.payload(binding))
    }

    fn verify_with(&self, binding: &RoundBinding, verifier: &dyn SignatureVerifier) -> Result<()> {
        if verifier.verify(self.client(), &self.payload(binding), self.signature()) {
            Ok(())
        } else {
            Err(Error::BadSignature {
                client: self.client(),
                message: Self::NAME,
            })
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new(Self::TAG);
        self.body(&mut w);
        w.short_bytes(self.signature());
        w.0
    }
}

/// Stage 1, client to server: the client's two X25519 public keys, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedAdvertisement {
    /// The sender's index.
    pub client: u32,
    /// Public key for share encryption (`c_i^PK`).
    pub cipher_key: [u8; 32],
    /// Public key for pairwise masks (`s_i^PK`).
    pub mask_key: [u8; 32],
    /// Identity signature.
    pub signature: Vec<u8>,
}

impl Signed for SignedAdvertisement {
    const TAG: u8 = 0x01;
    const NAME: &'static str = "key advertisement";
    fn client(&self) -> u32 {
        self.client
    }
    fn body(&self, w: &mut Writer) {
        w.u32(self.client);
        w.bytes(&self.cipher_key);
        w.bytes(&self.mask_key);
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl SignedAdvertisement {
    /// Encoding: `0x01 | client u32 | cipher_key [32] | mask_key [32] | sig_len u16 | sig`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// Parses [`SignedAdvertisement::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::TAG, Self::NAME)?;
        let v = Self::read(&mut r, limits)?;
        r.finish()?;
        Ok(v)
    }

    fn read(r: &mut Reader<'_>, limits: &Limits) -> Result<Self> {
        Ok(Self {
            client: r.u32()?,
            cipher_key: r.array()?,
            mask_key: r.array()?,
            signature: r.signature(limits)?,
        })
    }
}

/// Stage 2, server to every client: all advertisements the server accepted (`U1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDirectory {
    /// The advertisements, by increasing client index.
    pub entries: Vec<SignedAdvertisement>,
}

impl KeyDirectory {
    const TAG: u8 = 0x02;

    /// Encoding: `0x02 | count u32 | count × (advertisement without its tag)`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Self::TAG);
        w.u32(self.entries.len() as u32);
        for e in &self.entries {
            e.body(&mut w);
            w.short_bytes(&e.signature);
        }
        w.0
    }

    /// Parses [`KeyDirectory::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`], also for entries out of order or repeated.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::TAG, "key directory")?;
        let n = r.count(limits.max_clients, 70)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(SignedAdvertisement::read(&mut r, limits)?);
        }
        strictly_increasing(entries.iter().map(|e| e.client), &r, "entries")?;
        r.finish()?;
        Ok(Self { entries })
    }
}

/// One encrypted share pair for one neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePacket {
    /// The recipient.
    pub to: u32,
    /// ChaCha20-Poly1305 ciphertext of the two shares ([`SHARE_CIPHERTEXT_LEN`] bytes).
    pub ciphertext: Vec<u8>,
}

/// Stage 2, client to server: one encrypted share packet per neighbour, signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePackets {
    /// The sender.
    pub client: u32,
    /// The packets, by increasing recipient.
    pub packets: Vec<SharePacket>,
    /// Identity signature.
    pub signature: Vec<u8>,
}

impl Signed for SharePackets {
    const TAG: u8 = 0x03;
    const NAME: &'static str = "share packets";
    fn client(&self) -> u32 {
        self.client
    }
    fn body(&self, w: &mut Writer) {
        w.u32(self.client);
        w.u32(self.packets.len() as u32);
        for p in &self.packets {
            w.u32(p.to);
            w.bytes(&p.ciphertext);
        }
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

fn read_ciphertext(r: &mut Reader<'_>) -> Result<Vec<u8>> {
    Ok(r.take(SHARE_CIPHERTEXT_LEN)?.to_vec())
}

impl SharePackets {
    /// Encoding: `0x03 | client u32 | count u32 | count × (to u32 | ciphertext [112]) |
    /// sig_len u16 | sig`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// Parses [`SharePackets::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::TAG, Self::NAME)?;
        let client = r.u32()?;
        let n = r.count(limits.max_clients, 4 + SHARE_CIPHERTEXT_LEN)?;
        let mut packets = Vec::with_capacity(n);
        for _ in 0..n {
            let to = r.u32()?;
            packets.push(SharePacket {
                to,
                ciphertext: read_ciphertext(&mut r)?,
            });
        }
        strictly_increasing(packets.iter().map(|p| p.to), &r, "recipients")?;
        let signature = r.signature(limits)?;
        r.finish()?;
        Ok(Self {
            client,
            packets,
            signature,
        })
    }
}

/// One encrypted share pair addressed to the receiving client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundShare {
    /// The sender.
    pub from: u32,
    /// The ciphertext, as the sender made it.
    pub ciphertext: Vec<u8>,
}

/// Stage 3, server to one client: the share packets its neighbours in `U2` sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundShares {
    /// The packets, by increasing sender.
    pub packets: Vec<InboundShare>,
}

impl InboundShares {
    const TAG: u8 = 0x04;

    /// Encoding: `0x04 | count u32 | count × (from u32 | ciphertext [112])`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Self::TAG);
        w.u32(self.packets.len() as u32);
        for p in &self.packets {
            w.u32(p.from);
            w.bytes(&p.ciphertext);
        }
        w.0
    }

    /// Parses [`InboundShares::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::TAG, "inbound shares")?;
        let n = r.count(limits.max_clients, 4 + SHARE_CIPHERTEXT_LEN)?;
        let mut packets = Vec::with_capacity(n);
        for _ in 0..n {
            let from = r.u32()?;
            packets.push(InboundShare {
                from,
                ciphertext: read_ciphertext(&mut r)?,
            });
        }
        strictly_increasing(packets.iter().map(|p| p.from), &r, "senders")?;
        r.finish()?;
        Ok(Self { packets })
    }
}

/// Stage 3, client to server: the signed header of a masked input; the vector travels beside
/// it (bit-packed with [`crate::pack_values`], possibly in chunks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskedInputHeader {
    /// The sender.
    pub client: u32,
    /// Number of values in the masked vector.
    pub len: u64,
    /// [`masked_digest`] of the masked vector (at the round's modulus bits).
    pub digest: [u8; 32],
    /// Identity signature.
    pub signature: Vec<u8>,
}

impl Signed for MaskedInputHeader {
    const TAG: u8 = 0x05;
    const NAME: &'static str = "masked input header";
    fn client(&self) -> u32 {
        self.client
    }
    fn body(&self, w: &mut Writer) {
        w.u32(self.client);
        w.u64(self.len);
        w.bytes(&self.digest);
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl MaskedInputHeader {
    /// Encoding: `0x05 | client u32 | len u64 | digest [32] | sig_len u16 | sig`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// Parses [`MaskedInputHeader::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`], also for a length over `limits.max_vector_len`.
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::TAG, Self::NAME)?;
        let client = r.u32()?;
        let len = r.u64()?;
        if len > limits.max_vector_len as u64 {
            return Err(r.malformed(format!(
                "vector length {len} over the limit {}",
                limits.max_vector_len
            )));
        }
        let digest = r.array()?;
        let signature = r.signature(limits)?;
        r.finish()?;
        Ok(Self {
            client,
            len,
            digest,
            signature,
        })
    }
}

/// BLAKE3 in key-derivation mode with the context `"daofl secagg v2 masked vector"` over the
/// values bit-packed at `bits` bits ([`crate::pack_values`]: exactly the bytes on the wire)
/// followed by `bits u8 || len u64`, so a receiver can hash the packed bytes as they arrive,
/// and a smaller `k` hashes fewer bytes.
///
/// The context string separates this hash from every other use of BLAKE3 (the suffix, of
/// fixed length, makes the encoding injective); the session and round are bound by the
/// signature over the [`MaskedInputHeader`] that carries the digest (every signature covers
/// the round's binding). BLAKE3 (256-bit output, 2^128 collision resistance like SHA-256)
/// replaced SHA-256 here because it hashes the 4 MB vectors of a 10^6-parameter round several
/// times faster on one core: it hashes 1 KiB chunks in parallel with SIMD, which is also why
/// the fixed fields come last (the vector starts on a chunk boundary).
pub fn masked_digest(values: &[u32], bits: u32) -> [u8; 32] {
    // 8192 values of any width pack to a whole number of bytes (and of 1 KiB chunks), so
    // packing chunk by chunk gives the same bytes as packing the whole vector.
    const CHUNK: usize = 8192;
    let bits = bits.clamp(1, 32);
    let mut h = blake3::Hasher::new_derive_key("daofl secagg v2 masked vector");
    let mut buf = vec![0_u8; 4 * CHUNK];
    for chunk in values.chunks(CHUNK) {
        match bits {
            32 => {
                for (b, v) in buf.chunks_exact_mut(4).zip(chunk) {
                    b.copy_from_slice(&v.to_le_bytes());
                }
                h.update(&buf[..4 * chunk.len()]);
            }
            16 => {
                for (b, &v) in buf.chunks_exact_mut(2).zip(chunk) {
                    b.copy_from_slice(&(v as u16).to_le_bytes());
                }
                h.update(&buf[..2 * chunk.len()]);
            }
            _ => {
                h.update(&crate::wire::pack_values(chunk, bits));
            }
        }
    }
    h.update(&[bits as u8]);
    h.update(&(values.len() as u64).to_le_bytes());
    h.finalize().into()
}

/// Stage 4, server to one surviving client: which of its neighbours (and itself) survived
/// (`U3`) and which sent shares but no masked input (`U2 \ U3`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskRequest {
    /// Survivors among the client's neighbours and itself, increasing.
    pub survivors: Vec<u32>,
    /// Dropped neighbours, increasing.
    pub dropped: Vec<u32>,
}

fn write_ids(w: &mut Writer, ids: &[u32]) {
    w.u32(ids.len() as u32);
    for &id in ids {
        w.u32(id);
    }
}

fn read_ids(r: &mut Reader<'_>, limits: &Limits, what: &str) -> Result<Vec<u32>> {
    let n = r.count(limits.max_clients, 4)?;
    let ids = (0..n).map(|_| r.u32()).collect::<Result<Vec<u32>>>()?;
    strictly_increasing(ids.iter().copied(), r, what)?;
    Ok(ids)
}

impl UnmaskRequest {
    const TAG: u8 = 0x06;

    /// Encoding: `0x06 | n u32 | n × survivor u32 | m u32 | m × dropped u32`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::new(Self::TAG);
        write_ids(&mut w, &self.survivors);
        write_ids(&mut w, &self.dropped);
        w.0
    }

    /// Parses [`UnmaskRequest::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::TAG, "unmask request")?;
        let survivors = read_ids(&mut r, limits, "survivors")?;
        let dropped = read_ids(&mut r, limits, "dropped")?;
        r.finish()?;
        Ok(Self { survivors, dropped })
    }
}

/// Stage 4, client to server: for each survivor the share of its self-mask seed, for each
/// dropped neighbour the share of its masking key; never both for one client. Signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnmaskResponse {
    /// The sender.
    pub client: u32,
    /// `(survivor, share of its self-mask seed b)`, increasing.
    pub self_mask_shares: Vec<(u32, Share)>,
    /// `(dropped client, share of its masking key s^SK)`, increasing.
    pub key_shares: Vec<(u32, Share)>,
    /// Identity signature.
    pub signature: Vec<u8>,
}

fn write_shares(w: &mut Writer, shares: &[(u32, Share)]) {
    w.u32(shares.len() as u32);
    for (id, s) in shares {
        w.u32(*id);
        w.bytes(&s.to_bytes());
    }
}

fn read_shares(r: &mut Reader<'_>, limits: &Limits, what: &str) -> Result<Vec<(u32, Share)>> {
    let n = r.count(limits.max_clients, 4 + Share::LEN)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let id = r.u32()?;
        out.push((id, Share::from_bytes(r.take(Share::LEN)?)?));
    }
    strictly_increasing(out.iter().map(|(id, _)| *id), r, what)?;
    Ok(out)
}

impl Signed for UnmaskResponse {
    const TAG: u8 = 0x07;
    const NAME: &'static str = "unmask response";
    fn client(&self) -> u32 {
        self.client
    }
    fn body(&self, w: &mut Writer) {
        w.u32(self.client);
        write_shares(w, &self.self_mask_shares);
        write_shares(w, &self.key_shares);
    }
    fn signature(&self) -> &[u8] {
        &self.signature
    }
}

impl UnmaskResponse {
    /// Encoding: `0x07 | client u32 | n u32 | n × (id u32 | share [48]) | m u32 |
    /// m × (id u32 | share [48]) | sig_len u16 | sig`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode()
    }

    /// Parses [`UnmaskResponse::to_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8], limits: &Limits) -> Result<Self> {
        let mut r = Reader::new(bytes, Self::TAG, Self::NAME)?;
        let client = r.u32()?;
        let self_mask_shares = read_shares(&mut r, limits, "self-mask shares")?;
        let key_shares = read_shares(&mut r, limits, "key shares")?;
        let signature = r.signature(limits)?;
        r.finish()?;
        Ok(Self {
            client,
            self_mask_shares,
            key_shares,
            signature,
        })
    }
}
