//! Throughput of the exact discrete Gaussian samplers on 10^6 coordinates.
//!
//! `cargo bench -p privacy --bench sampler -- --warm-up-time 1 --measurement-time 5`
//!
//! Both benchmarks add noise of sigma = 1 to 10^6 `f32`s on the lattice 2^-24 Z (integer
//! scale 2^24), through [`GaussianNoise`]:
//!
//! - `noise_1e6/fast`: [`GaussianNoise::add_to`], the CKS20 sampler in integer arithmetic
//!   with a ChaCha20 CSPRNG;
//! - `noise_1e6/opendp`: [`GaussianNoise::add_to_with_opendp`], opendp's
//!   `sample_discrete_gaussian` (dashu rationals, its own CSPRNG), same lattice and scale.
//!
//! opendp takes seconds per iteration, so criterion runs its ten samples (flat sampling: the
//! same number of iterations in each) past the measurement time it was given; that is
//! expected.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use privacy::noise::GaussianNoise;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::hint::black_box;

const N: usize = 1_000_000;

fn samplers(c: &mut Criterion) {
    let noise = GaussianNoise::new(1.0).expect("sigma 1 is valid");
    assert_eq!(noise.lattice().sigma_steps(), 1 << 24);
    let mut g = c.benchmark_group("noise_1e6");
    g.sample_size(10);
    // One iteration per sample for opendp (seconds each) instead of criterion's 1, 2, ..., 10.
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(N as u64));
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut values = vec![0.1_f32; N];
    g.bench_function("fast", |b| {
        b.iter(|| {
            noise
                .add_to(black_box(&mut values), &mut rng)
                .expect("finite values")
        })
    });
    g.bench_function("opendp", |b| {
        b.iter(|| {
            noise
                .add_to_with_opendp(black_box(&mut values))
                .expect("finite values")
        })
    });
    g.finish();
}

criterion_group!(benches, samplers);
criterion_main!(benches);
