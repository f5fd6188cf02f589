//! One homomorphic aggregation round, timed: client encryption, server sum per client, committee
//! partial decryption and combine, bytes per parameter, and the plaintext sum of the same
//! vectors for a ratio. Prints a markdown table.
//!
//! ```text
//! cargo run --release -p secure-agg --features he --example he_round -- [values] [clients]
//! ```

use std::hint::black_box;
use std::time::Instant;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha20Rng;
use secure_agg::he::{
    self, AggregateCiphertext, ClientEncryptor, CommitteeMember, CommitteeParams, MessageSigner,
    SignatureVerifier, UploadManifest,
};

/// Benchmarks sign nothing: the signature scheme is the transport's (secp256k1 in daofl).
struct NoSignature;

impl MessageSigner for NoSignature {
    fn sign(&self, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }
}

impl SignatureVerifier for NoSignature {
    fn verify(&self, _: u32, _: &[u8], _: &[u8]) -> bool {
        true
    }
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}

fn main() -> Result<(), he::Error> {
    let mut args = std::env::args().skip(1);
    let d: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let clients: u32 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let (c, t, k) = (5u32, 3u32, 16u32);
    let mut rng = ChaCha20Rng::seed_from_u64(0);

    let params = CommitteeParams::new(c, t, 2, k, 1000)?;
    let seed: u128 = rng.random();
    let start = Instant::now();
    let dealt = (0..c)
        .map(|m| he::keygen::deal(&params, seed, m, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    let contributions: Vec<_> = dealt.iter().map(|(c, _)| c.clone()).collect();
    let key = he::keygen::combine_public_key(&params, seed, &contributions)?;
    let mut members = (0..c)
        .map(|m| {
            let bundles: Vec<_> = dealt.iter().map(|(_, b)| b[m as usize].clone()).collect();
            CommitteeMember::from_bundles(params, m, &bundles)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let keygen = secs(start);

    let vectors: Vec<Vec<u32>> = (0..clients)
        .map(|_| {
            (0..d)
                .map(|_| rng.random::<u32>() & ((1 << k) - 1))
                .collect()
        })
        .collect();

    let encryptor = ClientEncryptor::new(params.he, key)?;
    let mut aggregate = AggregateCiphertext::new(params.he, 1, d)?;
    let (mut encrypt, mut sum, mut bytes) = (0.0, 0.0, 0usize);
    for (id, values) in vectors.iter().enumerate() {
        let start = Instant::now();
        let chunks = encryptor.encrypt(values, &mut rng)?;
        let manifest = UploadManifest::for_chunks(1, id as u32, d, &chunks).sign(&NoSignature);
        encrypt += secs(start);
        let wire: Vec<Vec<u8>> = chunks.iter().map(he::EncryptedChunk::to_bytes).collect();
        bytes += wire.iter().map(Vec::len).sum::<usize>();
        let start = Instant::now();
        aggregate.admit(manifest, &NoSignature)?;
        for w in &wire {
            let chunk = he::EncryptedChunk::from_bytes(w, &he::Limits::default())?;
            aggregate.add_chunk(id as u32, &chunk)?;
        }
        sum += secs(start);
    }
    let n = f64::from(clients);
    let (encrypt, sum, bytes) = (encrypt / n, sum / n, bytes as f64 / n);

    // The same vectors summed in the clear (wrapping u32 adds), per client.
    let start = Instant::now();
    let mut plain = vec![0u32; d];
    for v in &vectors {
        for (a, b) in plain.iter_mut().zip(v) {
            *a = a.wrapping_add(*b);
        }
        black_box(&plain);
    }
    let plain_add = secs(start) / n;

    let who = [0u32, 2, 4];
    let request = aggregate.decryption_request(&who, params.min_contributors)?;
    let mut partials = Vec::new();
    let start = Instant::now();
    for &m in &who {
        partials.push(members[m as usize].partial_decrypt(&request, &NoSignature, &mut rng)?);
    }
    let partial = secs(start) / who.len() as f64;
    let start = Instant::now();
    let result = he::combine(&aggregate, &request, &partials)?;
    let combine = secs(start);
    let mask = (1u32 << k) - 1;
    assert!(
        result.iter().zip(&plain).all(|(r, p)| *r == p & mask),
        "wrong sum"
    );

    let report = params.noise_report();
    println!(
        "d = {d}, clients = {clients}, committee {t}-of-{c}, k = {k} bits, n = {}, chunk = {} \
         values; smudging std 2^{:.1} (margin {:.1} bits, 2^{:.1} values per key), failure <= \
         2^{:.0} per value; keygen {:.2} s",
        params.he.lwe.lwe_dimension,
        params.he.chunk_values,
        report.smudging_std_log2,
        report.smudging_margin_log2,
        report.values_per_key_log2,
        report.failure_log2_per_value,
        keygen
    );
    println!();
    println!("| step | time | per value |");
    println!("|---|---|---|");
    let row = |name: &str, s: f64| {
        println!("| {name} | {:.3} s | {:.1} ns |", s, s * 1e9 / d as f64);
    };
    row("client encryption (per client)", encrypt);
    row("server sum, incl. decode + digest check (per client)", sum);
    row(
        "plaintext u32 add of the same vector (per client)",
        plain_add,
    );
    row("committee partial decryption (per member)", partial);
    row("combine t partials + decode", combine);
    println!();
    println!(
        "upload: {:.2} bytes per value ({:.2}x a 4-byte f32); server sum / plaintext add = {:.0}x",
        bytes / d as f64,
        bytes / d as f64 / 4.0,
        sum / plain_add
    );
    Ok(())
}
