//! Homomorphic backend: exact sums, threshold absence, refusal rules, signatures, encodings.

use std::collections::BTreeMap;

use k256::ecdsa::signature::{Signer, Verifier};
use k256::ecdsa::{Signature, SigningKey, VerifyingKey};
use rand::{Rng, RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use secure_agg::he::{
    self, AggregateCiphertext, ClientEncryptor, CommitteeMember, CommitteeParams, Error, HeParams,
    Limits, MessageSigner, SharedKey, SignatureVerifier,
};

/// A client's secp256k1 ECDSA key.
struct EcdsaSigner(SigningKey);

impl MessageSigner for EcdsaSigner {
    fn sign(&self, msg: &[u8]) -> Vec<u8> {
        let sig: Signature = self.0.sign(msg);
        sig.to_bytes().to_vec()
    }
}

/// The registry of clients' verifying keys.
#[derive(Default)]
struct Registry(BTreeMap<u32, VerifyingKey>);

impl SignatureVerifier for Registry {
    fn verify(&self, who: u32, msg: &[u8], sig: &[u8]) -> bool {
        let Some(key) = self.0.get(&who) else {
            return false;
        };
        let Ok(sig) = Signature::from_slice(sig) else {
            return false;
        };
        key.verify(msg, &sig).is_ok()
    }
}

struct Clients {
    signers: Vec<EcdsaSigner>,
    registry: Registry,
}

fn clients(count: u32, rng: &mut ChaCha20Rng) -> Clients {
    let mut registry = Registry::default();
    let signers = (0..count)
        .map(|id| {
            let key = loop {
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                if let Ok(k) = SigningKey::from_slice(&bytes) {
                    break k;
                }
            };
            registry.0.insert(id, *key.verifying_key());
            EcdsaSigner(key)
        })
        .collect();
    Clients { signers, registry }
}

/// Asserts that `res` is [`Error::Malformed`] with a message ending in `why`.
#[track_caller]
fn assert_malformed<T: std::fmt::Debug>(res: Result<T, Error>, why: &str) {
    assert!(
        matches!(&res, Err(Error::Malformed(m)) if m.ends_with(why)),
        "expected a malformed message ({why}), got {res:?}"
    );
}

fn random_values(len: usize, bits: u32, rng: &mut ChaCha20Rng) -> Vec<u32> {
    (0..len)
        .map(|_| {
            let v: u32 = rng.random();
            if bits == 32 { v } else { v & ((1 << bits) - 1) }
        })
        .collect()
}

fn plain_sum(vectors: &[Vec<u32>], bits: u32) -> Vec<u32> {
    let mask = if bits == 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << bits) - 1
    };
    (0..vectors[0].len())
        .map(|i| (vectors.iter().map(|v| u64::from(v[i])).sum::<u64>() & mask) as u32)
        .collect()
}

struct Committee {
    params: CommitteeParams,
    members: Vec<CommitteeMember>,
    key: he::CompactPublicKey,
}

fn committee(params: CommitteeParams, rng: &mut ChaCha20Rng) -> Committee {
    let seed: u128 = rng.random();
    let dealt: Vec<_> = (0..params.members)
        .map(|m| he::keygen::deal(&params, seed, m, rng).unwrap())
        .collect();
    // Contributions and bundles travel as bytes.
    let limits = Limits::default();
    let contributions: Vec<_> = dealt
        .iter()
        .map(|(c, _)| {
            he::keygen::KeyShareContribution::from_bytes(&c.to_bytes(), params.he.lwe).unwrap()
        })
        .collect();
    let key = he::keygen::combine_public_key(&params, seed, &contributions).unwrap();
    let key = he::CompactPublicKey::from_bytes(&key.to_bytes(), params.he.lwe).unwrap();
    let members = (0..params.members)
        .map(|m| {
            let bundles: Vec<_> = dealt
                .iter()
                .map(|(_, b)| {
                    he::keygen::ShareBundle::from_bytes(&b[m as usize].to_bytes(), &limits).unwrap()
                })
                .collect();
            CommitteeMember::from_bundles(params, &key, m, &bundles).unwrap()
        })
        .collect();
    Committee {
        params,
        members,
        key,
    }
}

/// Encrypts, signs and uploads every vector (as bytes) into a fresh aggregate.
fn upload(
    params: HeParams,
    key: &he::CompactPublicKey,
    round: u64,
    vectors: &[Vec<u32>],
    clients: &Clients,
    rng: &mut ChaCha20Rng,
) -> AggregateCiphertext {
    let encryptor = ClientEncryptor::new(params, key.clone()).unwrap();
    let len = vectors[0].len();
    let mut aggregate = AggregateCiphertext::new(params, key, round, len).unwrap();
    let limits = Limits::default();
    for (id, values) in vectors.iter().enumerate() {
        let id = id as u32;
        let chunks = encryptor.encrypt(values, rng).unwrap();
        let manifest = encryptor
            .manifest(round, id, &chunks)
            .sign(&clients.signers[id as usize]);
        let manifest = he::SignedManifest::from_bytes(&manifest.to_bytes(), &limits).unwrap();
        aggregate.admit(manifest, &clients.registry).unwrap();
        // Chunks arrive in reverse order, as bytes.
        for chunk in chunks.iter().rev() {
            let chunk = he::EncryptedChunk::from_bytes(&chunk.to_bytes(), &limits).unwrap();
            aggregate.add_chunk(id, &chunk).unwrap();
        }
    }
    aggregate
}

fn decrypt_with(
    committee: &mut Committee,
    aggregate: &mut AggregateCiphertext,
    who: &[u32],
    verifier: &dyn SignatureVerifier,
    rng: &mut ChaCha20Rng,
) -> Result<Vec<u32>, Error> {
    let request = aggregate.decryption_request(who, committee.params.min_contributors)?;
    let request = he::DecryptionRequest::from_bytes(&request.to_bytes(), &Limits::default())?;
    let mut partials = Vec::new();
    for &m in who {
        let p = committee.members[m as usize].partial_decrypt(&request, verifier, rng)?;
        partials.push(he::PartialDecryption::from_bytes(
            &p.to_bytes(),
            &Limits::default(),
        )?);
    }
    he::combine(aggregate, &request, &partials)
}

fn small_chunks(mut params: CommitteeParams) -> CommitteeParams {
    params.he.chunk_values = 2 * params.he.lwe.lwe_dimension;
    params
}

#[test]
fn committee_sums_are_exact_for_random_vectors_and_client_counts() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let params = small_chunks(CommitteeParams::new(5, 3, 2, 16, 1000).unwrap());
    let mut committee = committee(params, &mut rng);
    let all = clients(6, &mut rng);
    for (round, (count, len)) in [(2usize, 1usize), (3, 4097), (6, 9000)]
        .into_iter()
        .enumerate()
    {
        let vectors: Vec<_> = (0..count)
            .map(|_| random_values(len, 16, &mut rng))
            .collect();
        let mut aggregate = upload(
            params.he,
            &committee.key,
            round as u64,
            &vectors,
            &all,
            &mut rng,
        );
        let who = [[0, 1, 2], [1, 3, 4], [0, 2, 4]][round];
        let sum = decrypt_with(
            &mut committee,
            &mut aggregate,
            &who,
            &all.registry,
            &mut rng,
        );
        assert_eq!(
            sum.unwrap(),
            plain_sum(&vectors, 16),
            "{count} clients, {len} values"
        );
    }
}

#[test]
fn committee_of_wider_values_full_and_single_threshold() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    // c-of-c (additive) and 1-of-c, 20-bit values with few clients.
    for (c, t) in [(3, 3), (3, 1)] {
        let params = small_chunks(CommitteeParams::new(c, t, 2, 20, 50).unwrap());
        let mut committee = committee(params, &mut rng);
        let all = clients(3, &mut rng);
        let vectors: Vec<_> = (0..3).map(|_| random_values(3000, 20, &mut rng)).collect();
        let mut aggregate = upload(params.he, &committee.key, 7, &vectors, &all, &mut rng);
        let who: Vec<u32> = (c - t..c).collect();
        let sum = decrypt_with(
            &mut committee,
            &mut aggregate,
            &who,
            &all.registry,
            &mut rng,
        );
        assert_eq!(sum.unwrap(), plain_sum(&vectors, 20), "{t}-of-{c}");
    }
}

#[test]
fn absence_up_to_c_minus_t_decrypts_and_beyond_fails_cleanly() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let params = small_chunks(CommitteeParams::new(5, 3, 2, 16, 1000).unwrap());
    let mut committee = committee(params, &mut rng);
    let all = clients(2, &mut rng);
    let vectors: Vec<_> = (0..2).map(|_| random_values(300, 16, &mut rng)).collect();
    // Every 3-subset of the 5 members decrypts (2 absent).
    let mut round = 0;
    for a in 0..5u32 {
        for b in a + 1..5 {
            for c in b + 1..5 {
                round += 1;
                let mut aggregate =
                    upload(params.he, &committee.key, round, &vectors, &all, &mut rng);
                let sum = decrypt_with(
                    &mut committee,
                    &mut aggregate,
                    &[a, b, c],
                    &all.registry,
                    &mut rng,
                );
                assert_eq!(sum.unwrap(), plain_sum(&vectors, 16), "members {a} {b} {c}");
            }
        }
    }
    // Three absent: a request naming 2 members is refused by them ...
    round += 1;
    let mut aggregate = upload(params.he, &committee.key, round, &vectors, &all, &mut rng);
    let err = decrypt_with(
        &mut committee,
        &mut aggregate,
        &[0, 1],
        &all.registry,
        &mut rng,
    );
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
    // ... and 2 of 3 requested partials do not combine.
    round += 1;
    let mut aggregate = upload(params.he, &committee.key, round, &vectors, &all, &mut rng);
    let request = aggregate.decryption_request(&[2, 3, 4], 2).unwrap();
    let partials: Vec<_> = [2usize, 3]
        .iter()
        .map(|&m| {
            committee.members[m]
                .partial_decrypt(&request, &all.registry, &mut rng)
                .unwrap()
        })
        .collect();
    let err = he::combine(&aggregate, &request, &partials);
    assert!(matches!(err, Err(Error::Combine(_))), "{err:?}");
}

#[test]
fn single_client_and_repeated_requests_are_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let params = small_chunks(CommitteeParams::new(3, 2, 2, 16, 100).unwrap());
    let mut committee = committee(params, &mut rng);
    let all = clients(2, &mut rng);
    let one = vec![random_values(100, 16, &mut rng)];
    // The aggregator's own check ...
    let mut aggregate = upload(params.he, &committee.key, 1, &one, &all, &mut rng);
    assert!(matches!(
        aggregate.decryption_request(&[0, 1], 2),
        Err(Error::Refused(_))
    ));
    // ... and a cheating aggregator that skips it is refused by every member.
    let request = aggregate.decryption_request(&[0, 1], 1).unwrap();
    for m in 0..2 {
        let err = committee.members[m].partial_decrypt(&request, &all.registry, &mut rng);
        assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
    }

    let two: Vec<_> = (0..2).map(|_| random_values(100, 16, &mut rng)).collect();
    let mut aggregate = upload(params.he, &committee.key, 5, &two, &all, &mut rng);
    let request = aggregate.decryption_request(&[0, 1], 2).unwrap();
    let p0 = committee.members[0]
        .partial_decrypt(&request, &all.registry, &mut rng)
        .unwrap();
    let p1 = committee.members[1]
        .partial_decrypt(&request, &all.registry, &mut rng)
        .unwrap();
    assert_eq!(
        he::combine(&aggregate, &request, &[p0, p1]).unwrap(),
        plain_sum(&two, 16)
    );
    // The same request again, and an older round, are refused.
    let again = committee.members[0].partial_decrypt(&request, &all.registry, &mut rng);
    assert!(matches!(again, Err(Error::Refused(_))), "{again:?}");
    let mut older = upload(params.he, &committee.key, 4, &two, &all, &mut rng);
    let request = older.decryption_request(&[0, 1], 2).unwrap();
    let err = committee.members[1].partial_decrypt(&request, &all.registry, &mut rng);
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
    // A member not named refuses too.
    let mut next = upload(params.he, &committee.key, 6, &two, &all, &mut rng);
    let request = next.decryption_request(&[0, 1], 2).unwrap();
    let err = committee.members[2].partial_decrypt(&request, &all.registry, &mut rng);
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
}

/// Accepts every signature: a cheating aggregator's view.
struct AcceptAll;

impl SignatureVerifier for AcceptAll {
    fn verify(&self, _: u32, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

#[test]
fn unknown_unsigned_and_tampered_uploads_are_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let params = small_chunks(CommitteeParams::new(3, 2, 2, 16, 100).unwrap());
    let mut committee = committee(params, &mut rng);
    let all = clients(3, &mut rng);
    let encryptor = ClientEncryptor::new(params.he, committee.key.clone()).unwrap();
    let values = random_values(5000, 16, &mut rng);
    let chunks = encryptor.encrypt(&values, &mut rng).unwrap();
    let mut aggregate = AggregateCiphertext::new(params.he, &committee.key, 1, 5000).unwrap();

    // Unknown client 9 with a real signature by another key.
    let forged = encryptor.manifest(1, 9, &chunks).sign(&all.signers[0]);
    assert_eq!(
        aggregate.admit(forged, &all.registry),
        Err(Error::BadSignature { client: 9 })
    );
    // Client 1's manifest signed by client 0.
    let forged = encryptor.manifest(1, 1, &chunks).sign(&all.signers[0]);
    assert_eq!(
        aggregate.admit(forged, &all.registry),
        Err(Error::BadSignature { client: 1 })
    );
    // Unsigned.
    let mut unsigned = encryptor.manifest(1, 1, &chunks).sign(&all.signers[1]);
    unsigned.signature.clear();
    assert_eq!(
        aggregate.admit(unsigned, &all.registry),
        Err(Error::BadSignature { client: 1 })
    );
    // A chunk from a client not admitted.
    assert!(matches!(
        aggregate.add_chunk(2, &chunks[0]),
        Err(Error::Mismatch(_))
    ));
    // A tampered chunk of an admitted client, and a duplicate chunk.
    let ok = encryptor.manifest(1, 1, &chunks).sign(&all.signers[1]);
    aggregate.admit(ok.clone(), &all.registry).unwrap();
    assert!(matches!(
        aggregate.admit(ok, &all.registry),
        Err(Error::Duplicate(_))
    ));
    let mut tampered = chunks[1].clone();
    tampered.bodies[3] ^= 1;
    assert_eq!(
        aggregate.add_chunk(1, &tampered),
        Err(Error::BadSignature { client: 1 })
    );
    aggregate.add_chunk(1, &chunks[1]).unwrap();
    assert!(matches!(
        aggregate.add_chunk(1, &chunks[1]),
        Err(Error::Duplicate(_))
    ));
    // A manifest for ciphertexts under another key.
    let mut other_key = encryptor.manifest(1, 2, &chunks);
    other_key.key_digest = [0; 32];
    let other_key = other_key.sign(&all.signers[2]);
    assert!(matches!(
        aggregate.admit(other_key, &all.registry),
        Err(Error::Mismatch(_))
    ));
    // A manifest for another round.
    let other = encryptor.manifest(2, 2, &chunks).sign(&all.signers[2]);
    assert!(matches!(
        aggregate.admit(other, &all.registry),
        Err(Error::Mismatch(_))
    ));

    // An aggregator that admitted a forged client: the members verify and refuse.
    let mut cheat = AggregateCiphertext::new(params.he, &committee.key, 3, 5000).unwrap();
    for (id, signer) in [(0u32, 0usize), (7, 1)] {
        let m = encryptor
            .manifest(3, id, &chunks)
            .sign(&all.signers[signer]);
        cheat.admit(m, &AcceptAll).unwrap();
        for c in &chunks {
            cheat.add_chunk(id, c).unwrap();
        }
    }
    let request = cheat.decryption_request(&[0, 1], 2).unwrap();
    let err = committee.members[0].partial_decrypt(&request, &all.registry, &mut rng);
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
}

#[test]
fn partial_uploads_count_only_where_complete() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let params = small_chunks(CommitteeParams::new(3, 2, 2, 16, 100).unwrap());
    let mut committee = committee(params, &mut rng);
    let all = clients(3, &mut rng);
    let encryptor = ClientEncryptor::new(params.he, committee.key.clone()).unwrap();
    let len = 3 * params.he.chunk_values;
    let vectors: Vec<_> = (0..3).map(|_| random_values(len, 16, &mut rng)).collect();
    let mut aggregate = AggregateCiphertext::new(params.he, &committee.key, 1, len).unwrap();
    for (id, v) in vectors.iter().enumerate() {
        let chunks = encryptor.encrypt(v, &mut rng).unwrap();
        let m = encryptor
            .manifest(1, id as u32, &chunks)
            .sign(&all.signers[id]);
        aggregate.admit(m, &all.registry).unwrap();
        // Client 2 drops out after its first chunk.
        let sent = if id == 2 { 1 } else { chunks.len() };
        for c in &chunks[..sent] {
            aggregate.add_chunk(id as u32, c).unwrap();
        }
    }
    assert_eq!(aggregate.complete_clients(), vec![0, 1]);
    assert_eq!(aggregate.chunk_contributors(0).count(), 3);
    assert_eq!(aggregate.chunk_contributors(1).count(), 2);
    let sum = decrypt_with(
        &mut committee,
        &mut aggregate,
        &[1, 2],
        &all.registry,
        &mut rng,
    )
    .unwrap();
    let cv = params.he.chunk_values;
    assert_eq!(sum[..cv], plain_sum(&vectors, 16)[..cv]);
    assert_eq!(sum[cv..], plain_sum(&vectors[..2], 16)[cv..]);
}

#[test]
fn shared_key_mode_sums_exactly() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let mut params = HeParams::new(32, 64).unwrap();
    params.chunk_values = 2048;
    let key = SharedKey::generate(params, &mut rng).unwrap();
    let key = SharedKey::from_bytes(&key.to_bytes(), params).unwrap();
    let all = clients(5, &mut rng);
    for (round, count) in [1usize, 2, 5].into_iter().enumerate() {
        let vectors: Vec<_> = (0..count)
            .map(|_| random_values(5000, 32, &mut rng))
            .collect();
        let aggregate = upload(
            params,
            key.public_key(),
            round as u64,
            &vectors,
            &all,
            &mut rng,
        );
        let sum = key.decrypt(aggregate.chunks(), 5000).unwrap();
        assert_eq!(sum, plain_sum(&vectors, 32), "{count} clients");
    }
}

#[test]
fn parameters_and_plaintext_range_are_checked() {
    let invalid = |res: Result<CommitteeParams, Error>, why: &str| {
        assert!(
            matches!(&res, Err(Error::InvalidParams(m)) if m.starts_with(why)),
            "expected invalid parameters ({why}), got {res:?}"
        );
    };
    invalid(
        CommitteeParams::new(5, 6, 2, 16, 10),
        "threshold must be in 1..=members",
    );
    invalid(
        CommitteeParams::new(5, 3, 1, 16, 10),
        "min_contributors must be at least 2",
    );
    invalid(
        CommitteeParams::new(5, 3, 2, 33, 10),
        "plaintext_bits must be in 1..=32",
    );
    // 32-bit values leave no room to smudge a committee's decryption.
    invalid(CommitteeParams::new(5, 3, 2, 32, 100), "smudging margin");
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let params = HeParams::new(8, 10).unwrap();
    let key = SharedKey::generate(params, &mut rng).unwrap();
    let enc = ClientEncryptor::new(params, key.public_key().clone()).unwrap();
    assert!(matches!(
        enc.encrypt(&[255, 256], &mut rng),
        Err(Error::PlaintextRange(_))
    ));
}

#[test]
fn decoding_is_bounded_and_never_panics() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let params = small_chunks(CommitteeParams::new(3, 2, 2, 16, 100).unwrap());
    let committee = committee(params, &mut rng);
    let all = clients(2, &mut rng);
    let vectors: Vec<_> = (0..2).map(|_| random_values(3000, 16, &mut rng)).collect();
    let mut aggregate = upload(params.he, &committee.key, 1, &vectors, &all, &mut rng);
    let request = aggregate.decryption_request(&[0, 1], 2).unwrap();
    let chunk = aggregate.chunks()[0].clone();
    let limits = Limits::default();
    let samples: Vec<(Vec<u8>, &str)> = vec![
        (request.to_bytes(), "request"),
        (chunk.to_bytes(), "chunk"),
        (committee.key.to_bytes(), "key"),
        (request.contributors()[0].to_bytes(), "manifest"),
    ];
    let decode = |what: &str, b: &[u8]| -> Result<(), Error> {
        match what {
            "request" => he::DecryptionRequest::from_bytes(b, &limits).map(drop),
            "chunk" => he::EncryptedChunk::from_bytes(b, &limits).map(drop),
            "key" => he::CompactPublicKey::from_bytes(b, params.he.lwe).map(drop),
            _ => he::SignedManifest::from_bytes(b, &limits).map(drop),
        }
    };
    for (bytes, what) in &samples {
        assert!(decode(what, bytes).is_ok(), "{what} does not decode");
        // Every truncation and a trailing byte are errors.
        for cut in (0..bytes.len()).step_by(bytes.len() / 97 + 1) {
            let res = decode(what, &bytes[..cut]);
            assert!(
                matches!(&res, Err(Error::Malformed(m)) if m.ends_with(": truncated")),
                "{what} truncated at {cut}: {res:?}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_malformed(decode(what, &long), ": trailing bytes");
        // Random corruption never panics.
        for _ in 0..200 {
            let mut b = bytes.clone();
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
            let _ = he::DecryptionRequest::from_bytes(&b, &limits);
            let _ = he::EncryptedChunk::from_bytes(&b, &limits);
            let _ = he::SignedManifest::from_bytes(&b, &limits);
            let _ = he::PartialDecryption::from_bytes(&b, &limits);
            let _ = he::keygen::ShareBundle::from_bytes(&b, &limits);
        }
    }
    // A length prefix over the limit is refused before allocating.
    let tight = Limits {
        max_words: 100,
        ..limits
    };
    assert!(matches!(
        he::EncryptedChunk::from_bytes(&chunk.to_bytes(), &tight),
        Err(Error::Malformed(_))
    ));
    // Round trips.
    assert_eq!(
        he::EncryptedChunk::from_bytes(&chunk.to_bytes(), &limits).unwrap(),
        chunk
    );
    assert_eq!(
        he::DecryptionRequest::from_bytes(&request.to_bytes(), &limits).unwrap(),
        request
    );
}

#[test]
fn a_key_refuses_once_its_value_budget_is_spent() {
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let mut params = CommitteeParams::new(3, 2, 2, 16, 100).unwrap();
    // Smudging just 10.1 bits above the aggregate noise: 2^18.2 ≈ 300,000 values per key.
    let report = params.noise_report();
    params.smudging_std_log2 = Some(report.aggregate_noise_std_log2 + 10.1);
    params.validate().unwrap();
    let budget = 2f64.powf(params.noise_report().values_per_key_log2);
    assert!((290_000.0..310_000.0).contains(&budget), "{budget}");
    let mut committee = committee(params, &mut rng);
    let all = clients(2, &mut rng);
    let len = 160_000;
    let encryptor = ClientEncryptor::new(params.he, committee.key.clone()).unwrap();
    let vectors: Vec<_> = (0..2).map(|_| random_values(len, 16, &mut rng)).collect();
    let chunks: Vec<_> = vectors
        .iter()
        .map(|v| encryptor.encrypt(v, &mut rng).unwrap())
        .collect();
    let mut run = |round: u64| {
        let mut aggregate =
            AggregateCiphertext::new(params.he, &committee.key, round, len).unwrap();
        for (id, c) in chunks.iter().enumerate() {
            let m = encryptor
                .manifest(round, id as u32, c)
                .sign(&all.signers[id]);
            aggregate.admit(m, &all.registry).unwrap();
            for chunk in c {
                aggregate.add_chunk(id as u32, chunk).unwrap();
            }
        }
        decrypt_with(
            &mut committee,
            &mut aggregate,
            &[0, 1],
            &all.registry,
            &mut rng,
        )
    };
    assert_eq!(run(1).unwrap(), plain_sum(&vectors, 16));
    let err = run(2);
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
}

#[test]
fn shared_key_seeded_uploads_are_half_the_size_and_sum_exactly() {
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let mut params = HeParams::new(24, 64).unwrap();
    params.chunk_values = 2048;
    let key = SharedKey::generate(params, &mut rng).unwrap();
    let all = clients(3, &mut rng);
    let len = 5000;
    let vectors: Vec<_> = (0..3).map(|_| random_values(len, 24, &mut rng)).collect();
    let mut aggregate = AggregateCiphertext::new(params, key.public_key(), 1, len).unwrap();
    let limits = Limits::default();
    // Clients 0 and 1 upload seeded GLWE chunks (as bytes), client 2 a public-key encryption.
    for id in 0..2u32 {
        let chunks = key.encrypt_seeded(&vectors[id as usize], &mut rng).unwrap();
        let bytes: usize = chunks.iter().map(|c| c.to_bytes().len()).sum();
        assert!(bytes < 8 * len + 100, "{bytes} bytes");
        let m = key.manifest(1, id, &chunks).sign(&all.signers[id as usize]);
        aggregate.admit(m, &all.registry).unwrap();
        // A tampered chunk does not match the digest its client signed.
        let mut tampered = chunks[0].clone();
        tampered.seed ^= 1;
        let res = aggregate.add_seeded_chunk(id, &tampered);
        assert!(
            matches!(res, Err(Error::BadSignature { client }) if client == id),
            "{res:?}"
        );
        for c in &chunks {
            let c = he::SeededChunk::from_bytes(&c.to_bytes(), &limits).unwrap();
            aggregate.add_seeded_chunk(id, &c).unwrap();
        }
        // Once the real chunk is counted, another one at its index is refused as a duplicate,
        // before its digest is looked at.
        let res = aggregate.add_seeded_chunk(id, &tampered);
        assert!(
            matches!(&res, Err(Error::Duplicate(m)) if m == &format!("chunk 0 of client {id} twice")),
            "{res:?}"
        );
    }
    let encryptor = ClientEncryptor::new(params, key.public_key().clone()).unwrap();
    let chunks = encryptor.encrypt(&vectors[2], &mut rng).unwrap();
    let m = encryptor.manifest(1, 2, &chunks).sign(&all.signers[2]);
    aggregate.admit(m, &all.registry).unwrap();
    for c in &chunks {
        aggregate.add_chunk(2, c).unwrap();
    }
    let sum = key.decrypt(aggregate.chunks(), len).unwrap();
    assert_eq!(sum, plain_sum(&vectors, 24));
}

#[test]
fn random_committees_members_and_client_counts_decrypt_exactly() {
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    for (c, t) in [(4u32, 2u32), (7, 4)] {
        let params = small_chunks(CommitteeParams::new(c, t, 2, 16, 100).unwrap());
        let mut committee = committee(params, &mut rng);
        let all = clients(5, &mut rng);
        for round in 1..=3u64 {
            let count = rng.random_range(2..=5usize);
            let len = rng.random_range(1..=7000usize);
            let vectors: Vec<_> = (0..count)
                .map(|_| random_values(len, 16, &mut rng))
                .collect();
            let mut aggregate = upload(params.he, &committee.key, round, &vectors, &all, &mut rng);
            // t distinct members, chosen at random.
            let mut who: Vec<u32> = (0..c).collect();
            while who.len() > t as usize {
                let i = rng.random_range(0..who.len());
                who.remove(i);
            }
            let sum = decrypt_with(
                &mut committee,
                &mut aggregate,
                &who,
                &all.registry,
                &mut rng,
            );
            assert_eq!(sum.unwrap(), plain_sum(&vectors, 16), "{t}-of-{c}, {who:?}");
        }
    }
}

#[test]
fn sliced_requests_decrypt_each_slice_once() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let params = small_chunks(CommitteeParams::new(3, 2, 2, 16, 100).unwrap());
    let mut committee = committee(params, &mut rng);
    let all = clients(2, &mut rng);
    // 5 chunks of 4,096 values, the last one partial.
    let len = 4 * params.he.chunk_values + 1000;
    let vectors: Vec<_> = (0..2).map(|_| random_values(len, 16, &mut rng)).collect();
    let mut aggregate = upload(params.he, &committee.key, 1, &vectors, &all, &mut rng);
    let requests = aggregate.decryption_requests(&[0, 2], 2, 2).unwrap();
    assert_eq!(
        requests.iter().map(|r| r.chunk_range()).collect::<Vec<_>>(),
        vec![0..2, 2..4, 4..5]
    );
    let limits = Limits::default();
    let mut sum = Vec::new();
    for request in &requests {
        let request = he::DecryptionRequest::from_bytes(&request.to_bytes(), &limits).unwrap();
        assert_eq!(request.header_digest(), requests[0].header_digest());
        let partials: Vec<_> = [0usize, 2]
            .iter()
            .map(|&m| {
                committee.members[m]
                    .partial_decrypt(&request, &all.registry, &mut rng)
                    .unwrap()
            })
            .collect();
        sum.extend(he::combine(&aggregate, &request, &partials).unwrap());
        // Each slice is answered once.
        let again = committee.members[0].partial_decrypt(&request, &all.registry, &mut rng);
        assert!(matches!(again, Err(Error::Refused(_))), "{again:?}");
    }
    assert_eq!(sum, plain_sum(&vectors, 16));
    // A whole-vector request for the same round overlaps the answered slices.
    let whole = aggregate.decryption_request(&[0, 2], 2).unwrap();
    let err = committee.members[2].partial_decrypt(&whole, &all.registry, &mut rng);
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
    // Another member set for the same round is another request.
    let other = aggregate.decryption_request(&[1, 2], 2).unwrap();
    let err = committee.members[2].partial_decrypt(&other, &all.registry, &mut rng);
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
}

#[test]
fn a_restarted_member_keeps_its_refusals_and_garbage_state_is_rejected() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let params = small_chunks(CommitteeParams::new(3, 2, 2, 16, 100).unwrap());
    let mut committee = committee(params, &mut rng);
    let all = clients(2, &mut rng);
    let two: Vec<_> = (0..2).map(|_| random_values(100, 16, &mut rng)).collect();

    // A fresh state round-trips and still decrypts.
    let saved = committee.members[0].to_bytes();
    let restored = CommitteeMember::from_bytes(&saved).unwrap();
    assert_eq!(restored.to_bytes(), saved);
    assert_eq!(restored.member(), 0);
    assert_eq!(*restored.params(), params);
    assert_eq!(restored.key_digest(), committee.key.digest());
    committee.members[0] = restored;
    let mut aggregate = upload(params.he, &committee.key, 3, &two, &all, &mut rng);
    assert_eq!(
        decrypt_with(
            &mut committee,
            &mut aggregate,
            &[0, 1],
            &all.registry,
            &mut rng
        )
        .unwrap(),
        plain_sum(&two, 16)
    );

    // After decrypting round 3, a member restarted from its saved state refuses round 3 again
    // (and older rounds) but serves round 4.
    let mut restarted = CommitteeMember::from_bytes(&committee.members[0].to_bytes()).unwrap();
    assert_eq!(restarted.last_round(), Some(3));
    let mut again = upload(params.he, &committee.key, 3, &two, &all, &mut rng);
    let request = again.decryption_request(&[0, 1], 2).unwrap();
    let err = restarted.partial_decrypt(&request, &all.registry, &mut rng);
    assert!(matches!(err, Err(Error::Refused(_))), "{err:?}");
    let mut next = upload(params.he, &committee.key, 4, &two, &all, &mut rng);
    let request = next.decryption_request(&[0, 1], 2).unwrap();
    assert!(
        restarted
            .partial_decrypt(&request, &all.registry, &mut rng)
            .is_ok()
    );

    // Truncated, extended or corrupted states are refused, never panic.
    let bytes = restarted.to_bytes();
    for cut in [0, 3, 4, 20, bytes.len() / 2, bytes.len() - 1] {
        let res = CommitteeMember::from_bytes(&bytes[..cut]);
        assert!(
            matches!(&res, Err(Error::Malformed(m)) if m == "committee member state: truncated"),
            "cut at {cut}: {res:?}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_malformed(
        CommitteeMember::from_bytes(&longer),
        "committee member state: trailing bytes",
    );
    for pos in (0..bytes.len()).step_by(997) {
        let mut flipped = bytes.clone();
        flipped[pos] ^= 0x80;
        // Either refused or a well-formed (different) state: never a panic.
        let _ = CommitteeMember::from_bytes(&flipped);
    }
    let mut member_out_of_range = bytes.clone();
    // The member index follows the tag, the parameters (8 u32 + a u32 flag, + u64 if set) and
    // the 32-byte key digest.
    let offset = 4
        + 9 * 4
        + if params.smudging_std_log2.is_some() {
            8
        } else {
            0
        }
        + 32;
    member_out_of_range[offset..offset + 4].copy_from_slice(&7u32.to_le_bytes());
    assert_malformed(
        CommitteeMember::from_bytes(&member_out_of_range),
        &format!(
            "committee member state: member 7 of a committee of {}",
            params.members
        ),
    );
}
