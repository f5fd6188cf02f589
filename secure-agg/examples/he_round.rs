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
    SharedKey, SignatureVerifier,
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

/// Wall-clock and on-CPU seconds of this thread since `start` (the CPU time, from Linux's
/// `/proc/thread-self/schedstat`, is what other processes on a loaded machine do not inflate).
#[derive(Clone, Copy)]
struct Stamp {
    wall: Instant,
    cpu: f64,
}

fn thread_cpu() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(f64::NAN, |ns| ns / 1e9)
}

fn now() -> Stamp {
    Stamp {
        wall: Instant::now(),
        cpu: thread_cpu(),
    }
}

/// `(wall, cpu)` seconds since `start`.
fn secs(start: Stamp) -> (f64, f64) {
    (start.wall.elapsed().as_secs_f64(), thread_cpu() - start.cpu)
}

fn add(a: &mut (f64, f64), b: (f64, f64)) {
    a.0 += b.0;
    a.1 += b.1;
}

fn div(a: (f64, f64), n: f64) -> (f64, f64) {
    (a.0 / n, a.1 / n)
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
    let start = now();
    let dealt = (0..c)
        .map(|m| he::keygen::deal(&params, seed, m, &mut rng))
        .collect::<Result<Vec<_>, _>>()?;
    let contributions: Vec<_> = dealt.iter().map(|(c, _)| c.clone()).collect();
    let key = he::keygen::combine_public_key(&params, seed, &contributions)?;
    let mut members = (0..c)
        .map(|m| {
            let bundles: Vec<_> = dealt.iter().map(|(_, b)| b[m as usize].clone()).collect();
            CommitteeMember::from_bundles(params, &key, m, &bundles)
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

    let encryptor = ClientEncryptor::new(params.he, key.clone())?;
    let mut aggregate = AggregateCiphertext::new(params.he, &key, 1, d)?;
    let (mut encrypt, mut sum, mut bytes) = ((0.0, 0.0), (0.0, 0.0), 0usize);
    for (id, values) in vectors.iter().enumerate() {
        let start = now();
        let chunks = encryptor.encrypt(values, &mut rng)?;
        let manifest = encryptor.manifest(1, id as u32, &chunks).sign(&NoSignature);
        add(&mut encrypt, secs(start));
        let wire: Vec<Vec<u8>> = chunks.iter().map(he::EncryptedChunk::to_bytes).collect();
        bytes += wire.iter().map(Vec::len).sum::<usize>();
        let start = now();
        aggregate.admit(manifest, &NoSignature)?;
        for w in &wire {
            let chunk = he::EncryptedChunk::from_bytes(w, &he::Limits::default())?;
            aggregate.add_chunk(id as u32, &chunk)?;
        }
        add(&mut sum, secs(start));
    }
    let n = f64::from(clients);
    let (encrypt, sum, bytes) = (div(encrypt, n), div(sum, n), bytes as f64 / n);

    // The same vectors summed in the clear (wrapping u32 adds), per client.
    // Repeated, so the short plaintext sum is measurable on the CPU clock.
    const REPEAT: usize = 50;
    let start = now();
    let mut plain = vec![0u32; d];
    for _ in 0..REPEAT {
        plain.fill(0);
        for v in &vectors {
            for (a, b) in plain.iter_mut().zip(v) {
                *a = a.wrapping_add(*b);
            }
            black_box(&plain);
        }
    }
    let plain_add = div(secs(start), n * REPEAT as f64);

    let who = [0u32, 2, 4];
    let request = aggregate.decryption_request(&who, params.min_contributors)?;
    let mut partials = Vec::new();
    let start = now();
    for &m in &who {
        partials.push(members[m as usize].partial_decrypt(&request, &NoSignature, &mut rng)?);
    }
    let partial = div(secs(start), who.len() as f64);
    let start = now();
    let result = he::combine(&aggregate, &request, &partials)?;
    let combine = secs(start);
    let mask = (1u32 << k) - 1;
    assert!(
        result.iter().zip(&plain).all(|(r, p)| *r == p & mask),
        "wrong sum"
    );

    // Shared-key mode: seeded GLWE uploads (8 bytes per value), masks regenerated by the server.
    let shared = SharedKey::generate(params.he, &mut rng)?;
    let mut shared_aggregate = AggregateCiphertext::new(params.he, shared.public_key(), 2, d)?;
    let (mut seeded_encrypt, mut seeded_sum, mut seeded_bytes) = ((0.0, 0.0), (0.0, 0.0), 0usize);
    for (id, values) in vectors.iter().enumerate() {
        let start = now();
        let chunks = shared.encrypt_seeded(values, &mut rng)?;
        let manifest = shared.manifest(2, id as u32, &chunks).sign(&NoSignature);
        add(&mut seeded_encrypt, secs(start));
        let wire: Vec<Vec<u8>> = chunks.iter().map(he::SeededChunk::to_bytes).collect();
        seeded_bytes += wire.iter().map(Vec::len).sum::<usize>();
        let start = now();
        shared_aggregate.admit(manifest, &NoSignature)?;
        for w in &wire {
            let chunk = he::SeededChunk::from_bytes(w, &he::Limits::default())?;
            shared_aggregate.add_seeded_chunk(id as u32, &chunk)?;
        }
        add(&mut seeded_sum, secs(start));
    }
    let start = now();
    let shared_result = shared.decrypt(shared_aggregate.chunks(), d)?;
    let shared_decrypt = secs(start);
    assert!(
        shared_result
            .iter()
            .zip(&plain)
            .all(|(r, p)| *r == p & mask),
        "wrong shared-key sum"
    );
    let (seeded_encrypt, seeded_sum) = (div(seeded_encrypt, n), div(seeded_sum, n));
    let seeded_bytes = seeded_bytes as f64 / n;

    let report = params.noise_report();
    println!(
        "d = {d}, clients = {clients}, committee {t}-of-{c}, k = {k} bits, n = {}, chunk = {} \
         values; smudging std 2^{:.1} (margin {:.1} bits, 2^{:.1} values per key), failure <= \
         2^{:.0} per value; keygen {:.2} s CPU",
        params.he.lwe.lwe_dimension,
        params.he.chunk_values,
        report.smudging_std_log2,
        report.smudging_margin_log2,
        report.values_per_key_log2,
        report.failure_log2_per_value,
        keygen.1
    );
    println!();
    println!("| step | CPU time | CPU per value | wall time |");
    println!("|---|---|---|---|");
    let row = |name: &str, (wall, cpu): (f64, f64)| {
        println!(
            "| {name} | {cpu:.3} s | {:.1} ns | {wall:.3} s |",
            cpu * 1e9 / d as f64
        );
    };
    row("client encryption (per client)", encrypt);
    row("server sum, incl. decode + digest check (per client)", sum);
    row(
        "plaintext u32 add of the same vector (per client)",
        plain_add,
    );
    row("committee partial decryption (per member)", partial);
    row("combine t partials + decode", combine);
    row(
        "shared key: seeded GLWE encryption (per client)",
        seeded_encrypt,
    );
    row(
        "shared key: server sum, incl. mask regeneration (per client)",
        seeded_sum,
    );
    row("shared key: decryption of the sum", shared_decrypt);
    println!();
    println!(
        "shared-key seeded upload: {:.2} bytes per value ({:.2}x a 4-byte f32)",
        seeded_bytes / d as f64,
        seeded_bytes / d as f64 / 4.0
    );
    println!(
        "upload: {:.2} bytes per value ({:.2}x a 4-byte f32); CPU time ratios: server sum / \
         plaintext add = {:.0}x, client encryption / plaintext add = {:.0}x",
        bytes / d as f64,
        bytes / d as f64 / 4.0,
        sum.1 / plain_add.1,
        encrypt.1 / plain_add.1
    );
    Ok(())
}
