//! Additive homomorphic aggregation with tfhe's LWE compact public-key encryption: a second
//! secure-aggregation backend beside SecAgg+ masking.
//!
//! A client encrypts its quantized update (values mod `2^k`, `k ≤ 32`, from the codec) once and
//! needs no other client: dropouts cost nothing. The aggregator adds ciphertexts chunk by chunk as
//! they stream in. Only the sum is ever decrypted:
//!
//! - **Committee mode** (default): a committee of `c` key holders generates the key without a
//!   dealer ([`keygen`]); any `t` of them decrypt an aggregate by partial decryptions with
//!   smudging noise ([`CommitteeMember::partial_decrypt`], [`combine`]). A member decrypts only
//!   an aggregate of at least `min_contributors` distinct signed clients, each chunk once
//!   per round.
//! - **Shared-key mode** ([`shared_key`]): every client holds the secret key and the server only
//!   adds, as in NVFlare. Weaker; for cross-silo federations that trust every client. Clients
//!   may upload seeded GLWE ([`SeededChunk`], 8 bytes per value).
//!
//! Ciphertexts are tfhe compact lists (`tfhe::core_crypto`, n = 2048, q = 2^64, vetted
//! `TUniform(17)` noise): ≈ 16 bytes per value, never expanded into individual LWE ciphertexts.
//! Every message has a canonical bounded encoding (`to_bytes` / `from_bytes(.., limits)`).
//! `secure-agg/HE.md` has the design, the parameter analysis and measurements.
//!
//! Like the rest of daofl's protocol cores this module does no IO, reads no clock and takes its
//! randomness from an injected [`rand::CryptoRng`] (tfhe's AES-CTR generators are seeded from it).
//! It does not encrypt committee share bundles in transit (the transport's job), does not prove
//! that clients' ciphertexts are well formed, and cannot check that the aggregate really is the
//! sum of the listed ciphertexts without seeing them (see `HE.md`, "What a member checks").
//!
//! # Example
//!
//! ```no_run
//! use secure_agg::he::{self, AggregateCiphertext, ClientEncryptor, CommitteeMember, CommitteeParams};
//! # fn demo(signer: &dyn he::MessageSigner, verifier: &dyn he::SignatureVerifier, mut rng: impl rand::CryptoRng) -> he::Result<()> {
//! let params = CommitteeParams::new(5, 3, 2, 16, 1000)?; // c = 5, t = 3, ≥ 2 clients, k = 16
//! let seed = 42; // public, agreed by the committee
//! let dealt: Vec<_> = (0..5).map(|m| he::keygen::deal(&params, seed, m, &mut rng)).collect::<Result<_, _>>()?;
//! let contributions: Vec<_> = dealt.iter().map(|(c, _)| c.clone()).collect();
//! let key = he::keygen::combine_public_key(&params, seed, &contributions)?;
//! let mut members: Vec<CommitteeMember> = (0..5u32)
//!     .map(|m| {
//!         let bundles: Vec<_> = dealt.iter().map(|(_, b)| b[m as usize].clone()).collect();
//!         CommitteeMember::from_bundles(params, &key, m, &bundles)
//!     })
//!     .collect::<Result<_, _>>()?;
//!
//! let mut aggregate = AggregateCiphertext::new(params.he, &key, 1, 3)?;
//! let encryptor = ClientEncryptor::new(params.he, key)?;
//! for client in 0..2u32 {
//!     let chunks = encryptor.encrypt(&[1, 2, 3], &mut rng)?;
//!     let manifest = encryptor.manifest(1, client, &chunks).sign(signer);
//!     aggregate.admit(manifest, verifier)?;
//!     for chunk in &chunks {
//!         aggregate.add_chunk(client, chunk)?;
//!     }
//! }
//! let request = aggregate.decryption_request(&[0, 2, 4], params.min_contributors)?;
//! let partials = [0usize, 2, 4]
//!     .map(|m| members[m].partial_decrypt(&request, verifier, &mut rng))
//!     .into_iter()
//!     .collect::<Result<Vec<_>, _>>()?;
//! assert_eq!(he::combine(&aggregate, &request, &partials)?, vec![2, 4, 6]);
//! # Ok(()) }
//! ```

mod aggregate;
mod client;
mod committee;
mod error;
pub mod keygen;
mod math;
mod params;
pub mod shared_key;
mod wire;

/// The crate's identity-signature traits, shared with SecAgg+.
pub use crate::sign::{MessageSigner, SignatureVerifier};
pub use aggregate::AggregateCiphertext;
pub use client::{ClientEncryptor, EncryptedChunk, SignedManifest, UploadManifest};
pub use committee::{CommitteeMember, DecryptionRequest, PartialDecryption, combine};
pub use error::{Error, Result};
pub use keygen::CompactPublicKey;
pub use params::{
    CommitteeParams, FAILURE_LOG2_PER_VALUE, HeParams, LweParams, MIN_SMUDGING_MARGIN_LOG2,
    NoiseReport,
};
pub use shared_key::{SeededChunk, SharedKey};
pub use wire::Limits;
