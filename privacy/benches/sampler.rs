//! Throughput of the exact discrete Gaussian samplers on 10^6 coordinates.
//!
//! `cargo bench -p privacy --bench sampler`
//!
//! - `fast/add_gaussian_noise_1e6`: `privacy::noise::add_gaussian_noise_with` on 10^6 `f32`s,
//!   sigma = 1 (lattice 2^-24, integer scale 2^24), ChaCha20 CSPRNG.
//! - `fast/discrete_gaussian_1e6`: the integer sampler alone, same scale.
//! - `opendp/discrete_gaussian_1e4`: opendp's `sample_discrete_gaussian` at the same scale, on
//!   10^4 draws (10^6 would take minutes); compare per-element throughput.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use privacy::noise::{DiscreteGaussian, add_gaussian_noise_with, opendp_discrete_gaussian};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;

fn samplers(c: &mut Criterion) {
    let mut g = c.benchmark_group("fast");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut values = vec![0.1_f32; 1_000_000];
    g.bench_function("add_gaussian_noise_1e6", |b| {
        b.iter(|| add_gaussian_noise_with(black_box(&mut values), 1.0, &mut rng).unwrap())
    });
    let sampler = DiscreteGaussian::new(1 << 48, 1).unwrap();
    let mut out = vec![0_i64; 1_000_000];
    g.bench_function("discrete_gaussian_1e6", |b| {
        b.iter(|| sampler.fill(&mut rng, black_box(&mut out)).unwrap())
    });
    g.finish();

    let mut g = c.benchmark_group("opendp");
    g.sample_size(10);
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("discrete_gaussian_1e4", |b| {
        b.iter(|| opendp_discrete_gaussian(10_000, 1 << 24, 1).unwrap())
    });
    g.finish();
}

criterion_group!(benches, samplers);
criterion_main!(benches);
