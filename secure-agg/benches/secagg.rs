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
    g.bench_function("pack_k16", |b| b.iter(|| pack_values(&enc, 16)));
    g.finish();
}

criterion_group!(benches, masking, codec);
criterion_main!(benches);
