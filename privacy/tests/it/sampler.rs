//! The fast exact discrete Gaussian sampler draws the same distribution as the exact pmf and as
//! opendp's reference sampler.

use privacy::noise::{DiscreteGaussian, opendp_discrete_gaussian};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;

/// The exact pmf of N_Z(0, sigma^2) on [-bound, bound] (the mass outside is below 1e-30).
fn pmf(sigma_sq: f64, bound: i64) -> BTreeMap<i64, f64> {
    let w: BTreeMap<i64, f64> =
        (-bound..=bound).map(|x| (x, (-(x * x) as f64 / (2.0 * sigma_sq)).exp())).collect();
    let total: f64 = w.values().sum();
    w.into_iter().map(|(x, v)| (x, v / total)).collect()
}

/// Pearson statistic over bins with expected count >= 5 (tails pooled), and its degrees of freedom.
fn chi_square(samples: &[i64], pmf: &BTreeMap<i64, f64>) -> (f64, usize) {
    let n = samples.len() as f64;
    let mut counts: BTreeMap<i64, f64> = BTreeMap::new();
    for s in samples {
        *counts.entry(*s).or_default() += 1.0;
    }
    let (mut stat, mut bins) = (0.0, 0);
    let (mut pool_obs, mut pool_exp) = (0.0, 0.0);
    for (x, p) in pmf {
        let obs = counts.get(x).copied().unwrap_or(0.0);
        if p * n >= 5.0 {
            stat += (obs - p * n).powi(2) / (p * n);
            bins += 1;
        } else {
            pool_obs += obs;
            pool_exp += p * n;
        }
    }
    let outside = samples.iter().filter(|s| !pmf.contains_key(s)).count() as f64;
    pool_obs += outside;
    if pool_exp > 0.0 {
        stat += (pool_obs - pool_exp).powi(2) / pool_exp;
        bins += 1;
    }
    (stat, bins - 1)
}

/// A conservative critical value: df + 6 sqrt(2 df) + 10 (right tail far below 1e-6).
fn critical(df: usize) -> f64 {
    df as f64 + 6.0 * (2.0 * df as f64).sqrt() + 10.0
}

#[test]
fn fast_sampler_matches_the_exact_pmf() {
    let mut rng = ChaCha20Rng::seed_from_u64(2024);
    for (num, den) in [(1u64, 4u64), (9, 4), (10, 1), (400, 1), (1 << 20, 1 << 10)] {
        let sampler = DiscreteGaussian::new(num, den).unwrap();
        let sigma_sq = num as f64 / den as f64;
        let mut xs = vec![0; 200_000];
        sampler.fill(&mut rng, &mut xs).unwrap();
        let bound = (sigma_sq.sqrt() * 12.0).ceil() as i64 + 2;
        let (stat, df) = chi_square(&xs, &pmf(sigma_sq, bound));
        assert!(stat < critical(df), "sigma^2={num}/{den}: chi2 {stat:.1} on {df} df");
        // Moments: mean 0, variance ~ sigma^2 (for sigma >= 1 the two agree to 1e-8).
        let mean = xs.iter().sum::<i64>() as f64 / xs.len() as f64;
        assert!(mean.abs() < 6.0 * (sigma_sq / xs.len() as f64).sqrt(), "mean {mean}");
        eprintln!("sigma^2 = {num}/{den}: chi2 = {stat:.1} on {df} df (critical {:.1})", critical(df));
    }
}

#[test]
fn fast_sampler_and_opendp_draw_the_same_distribution() {
    // sigma = 3/2 and sigma = 5: opendp takes sigma, ours sigma^2.
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    for ((snum, sden), (vnum, vden)) in [((3u64, 2u64), (9u64, 4u64)), ((5, 1), (25, 1))] {
        let n = 30_000;
        let theirs = opendp_discrete_gaussian(n, snum, sden).unwrap();
        let mut ours = vec![0; n];
        DiscreteGaussian::new(vnum, vden).unwrap().fill(&mut rng, &mut ours).unwrap();
        // Two-sample chi-square test of homogeneity over bins with >= 10 pooled observations.
        let mut a: BTreeMap<i64, f64> = BTreeMap::new();
        let mut b: BTreeMap<i64, f64> = BTreeMap::new();
        for x in &theirs {
            *a.entry(*x).or_default() += 1.0;
        }
        for x in &ours {
            *b.entry(*x).or_default() += 1.0;
        }
        let keys: Vec<i64> = a.keys().chain(b.keys()).copied().collect::<std::collections::BTreeSet<_>>().into_iter().collect();
        let (mut stat, mut bins) = (0.0, 0usize);
        let (mut pa, mut pb) = (0.0, 0.0);
        let mut flush = |oa: f64, ob: f64, stat: &mut f64, bins: &mut usize| {
            let tot = oa + ob;
            let (ea, eb) = (tot / 2.0, tot / 2.0); // equal sample sizes
            *stat += (oa - ea).powi(2) / ea + (ob - eb).powi(2) / eb;
            *bins += 1;
        };
        for k in keys {
            pa += a.get(&k).copied().unwrap_or(0.0);
            pb += b.get(&k).copied().unwrap_or(0.0);
            if pa + pb >= 20.0 {
                flush(pa, pb, &mut stat, &mut bins);
                pa = 0.0;
                pb = 0.0;
            }
        }
        if pa + pb > 0.0 {
            flush(pa, pb, &mut stat, &mut bins);
        }
        let df = bins - 1;
        assert!(stat < critical(df), "sigma={snum}/{sden}: chi2 {stat:.1} on {df} df");
        // And opendp's samples fit the exact pmf too (the test is of the same power for both).
        let sigma_sq = vnum as f64 / vden as f64;
        let (s2, df2) = chi_square(&theirs, &pmf(sigma_sq, 80));
        assert!(s2 < critical(df2), "opendp vs pmf: {s2:.1} on {df2} df");
        eprintln!("sigma = {snum}/{sden}: two-sample chi2 = {stat:.1} on {df} df; opendp vs pmf {s2:.1} on {df2} df");
    }
}
