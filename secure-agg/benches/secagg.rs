//! Client masking throughput against the raw keystream of the same cipher, and the codec.
//!
//! `cargo bench -p secure-agg --bench secagg`. The whole round (server unmask at n = 100,
//! d = 10^6, 10% dropouts, bytes per parameter) is `examples/secagg_round.rs`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use secure_agg::prg::{MaskSeed, Sign, apply_masks, keystream};
use secure_agg::{Codec, CodecConfig, PrgKind, masked_digest, pack_values};
use zeroize::Zeroizing;

const D: usize = 1_000_000;
/// Streams a client adds: its self-mask and 10 pairwise masks (Flower's num_shares = 11).
const STREAMS: usize = 11;

fn seeds() -> Vec<MaskSeed> {
    (0..STREAMS)
        .map(|i| MaskSeed {
            key: Zeroizing::new([i as u8 + 1; 32]),
            sign: if i % 2 == 0 { Sign::Plus } else { Sign::Minus },
        })
        .collect()
}

fn masking(c: &mut Criterion) {
    let kinds = [
        ("chacha20", PrgKind::ChaCha20),
        ("chacha12", PrgKind::ChaCha12),
        ("chacha8", PrgKind::ChaCha8),
        ("aes256ctr", PrgKind::Aes256Ctr),
    ];
    let mut g = c.benchmark_group("keystream");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((4 * D) as u64));
    let mut buf = vec![0_u8; 4 * D];
    for (name, kind) in kinds {
        g.bench_function(name, |b| b.iter(|| keystream(kind, &[7; 32], &mut buf)));
    }
    g.finish();
    // Throughput counted in keystream bytes consumed, so the ratio to `keystream` is the
    // efficiency of the fused pass.
    let seeds = seeds();
    for bits in [32_u32, 16] {
        let width = if bits > 16 { 4 } else { 2 };
        let mut g = c.benchmark_group(format!("mask_{STREAMS}_streams_k{bits}"));
        g.sample_size(10);
        g.throughput(Throughput::Bytes((STREAMS * width * D) as u64));
        let mut v = vec![0_u32; D];
        for (name, kind) in kinds {
            g.bench_function(name, |b| b.iter(|| apply_masks(&mut v, &seeds, kind, bits)));
        }
        g.finish();
    }
}

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.sample_size(10);
    g.throughput(Throughput::Elements(D as u64));
    let x: Vec<f32> = (0..D).map(|i| ((i % 1000) as f32 - 500.0) * 1e-6).collect();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let plain = Codec::new(CodecConfig::for_clients(100, 1.0, 32).unwrap(), D).unwrap();
    g.bench_function("encode", |b| b.iter(|| plain.encode(&x, &mut rng).unwrap()));
    let rotated = Codec::new(
        CodecConfig::for_clients(100, 1.0, 32)
            .unwrap()
            .with_rotation([3; 32])
            .fit_scale(D)
            .unwrap(),
        D,
    )
    .unwrap();
    g.bench_function("encode_rotated", |b| {
        b.iter(|| rotated.encode(&x, &mut rng).unwrap())
    });
    let enc = plain.encode(&x, &mut rng).unwrap();
    g.bench_function("decode_sum", |b| {
        b.iter(|| plain.decode_sum(&enc, D).unwrap())
    });
    g.bench_function("masked_digest_k32", |b| b.iter(|| masked_digest(&enc, 32)));
    g.bench_function("masked_digest_k16", |b| b.iter(|| masked_digest(&enc, 16)));
    g.bench_function("pack_k16", |b| b.iter(|| pack_values(&enc, 16)));
    g.finish();
}

/// The hash of the signed digest: SHA-256 (SHA-NI where the CPU has it) against BLAKE3, over
/// the 4 MB of a 10^6-value vector at k = 32.
fn digest(c: &mut Criterion) {
    use sha2::Digest;
    let mut g = c.benchmark_group("hash_4MB");
    g.sample_size(10);
    g.throughput(Throughput::Bytes((4 * D) as u64));
    let bytes = vec![0x5a_u8; 4 * D];
    g.bench_function("sha256", |b| b.iter(|| sha2::Sha256::digest(&bytes)));
    g.bench_function("blake3", |b| b.iter(|| blake3::hash(&bytes)));
    g.finish();
}

/// One ECDSA (secp256k1, SHA-256 prehash) verification: k256 (pure Rust) against
/// libsecp256k1 (the `secp256k1` crate). Each client of a round verifies n advertisements.
fn verify(c: &mut Criterion) {
    use k256::ecdsa::signature::{Signer, Verifier};
    use sha2::Digest;
    let msg = [7_u8; 135];
    let mut g = c.benchmark_group("ecdsa_verify");
    g.sample_size(20);
    let sk = k256::ecdsa::SigningKey::from_slice(&[9; 32]).unwrap();
    let sig: k256::ecdsa::Signature = sk.sign(&msg);
    let vk = *sk.verifying_key();
    g.bench_function("k256", |b| b.iter(|| vk.verify(&msg, &sig).unwrap()));
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::PublicKey::from_slice(&vk.to_sec1_bytes()).unwrap();
    let sig = secp256k1::ecdsa::Signature::from_compact(&sig.to_bytes()).unwrap();
    g.bench_function("libsecp256k1", |b| {
        b.iter(|| {
            let m = secp256k1::Message::from_digest(sha2::Sha256::digest(msg).into());
            secp.verify_ecdsa(m, &sig, &pk).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, masking, codec, digest, verify);
criterion_main!(benches);
