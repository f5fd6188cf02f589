//! The fast exact discrete Gaussian sampler draws the same distribution as the exact pmf and as
//! opendp's reference sampler, and the same tests reject a sampler whose sigma is 5% off.
//!
//! Our samplers run on fixed seeds, so their side of every test is deterministic. opendp draws
//! from its own unseedable CSPRNG, so each test that involves it uses thresholds whose false
//! rejection probability is below about 1e-6 (chi-square at the Wilson-Hilferty quantile for
//! z = 5.2, Kolmogorov-Smirnov at the DKW / two-sample bound for alpha = 1e-6).

use privacy::noise::{DiscreteGaussian, opendp_discrete_gaussian};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::collections::BTreeMap;

/// Standard normal quantile for the one-sided false-rejection rate ~1e-7.
const Z_REJECT: f64 = 5.2;
/// Kolmogorov-Smirnov false-rejection rate.
const KS_ALPHA: f64 = 1e-6;

fn fast_samples(num: u64, den: u64, n: usize, seed: u64) -> Vec<i64> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut xs = vec![0; n];
    DiscreteGaussian::new(num, den)
        .unwrap()
        .fill(&mut rng, &mut xs)
        .unwrap();
    xs
}

/// The exact pmf of N_Z(0, sigma^2) on [-bound, bound] (`bound` >= 12 sigma: the mass outside
/// is below 1e-30).
fn exact_pmf(sigma_sq: f64, bound: i64) -> BTreeMap<i64, f64> {
    let w: BTreeMap<i64, f64> = (-bound..=bound)
        .map(|x| (x, (-((x * x) as f64) / (2.0 * sigma_sq)).exp()))
        .collect();
    let total: f64 = w.values().sum();
    w.into_iter().map(|(x, v)| (x, v / total)).collect()
}

/// Chi-square critical value for `df` degrees of freedom (Wilson-Hilferty).
fn chi2_critical(df: usize) -> f64 {
    let k = df as f64;
    k * (1.0 - 2.0 / (9.0 * k) + Z_REJECT * (2.0 / (9.0 * k)).sqrt()).powi(3)
}

/// Pearson statistic of `samples` against `pmf` over bins with expected count >= 5 (the rest,
/// and anything outside the pmf's support, pooled into one bin), and its degrees of freedom.
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
    pool_obs += samples.iter().filter(|s| !pmf.contains_key(s)).count() as f64;
    if pool_exp > 0.0 {
        stat += (pool_obs - pool_exp).powi(2) / pool_exp.max(1e-300);
        bins += 1;
    }
    (stat, bins - 1)
}

/// Largest distance between the empirical CDF of `samples` and the pmf's CDF.
fn ks_distance(samples: &[i64], pmf: &BTreeMap<i64, f64>) -> f64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as f64;
    let (mut cdf, mut worst, mut i) = (0.0, 0.0_f64, 0);
    for (&x, &p) in pmf {
        cdf += p;
        while i < sorted.len() && sorted[i] <= x {
            i += 1;
        }
        worst = worst.max((i as f64 / n - cdf).abs());
    }
    worst
}

/// DKW: P(sup |F_n - F| > eps) <= 2 exp(-2 n eps^2); valid for discrete F too.
fn ks_critical(n: usize) -> f64 {
    ((2.0 / KS_ALPHA).ln() / (2.0 * n as f64)).sqrt()
}

/// One-sample verdict: `Ok` if the samples fit the pmf by both tests, else the reason.
fn one_sample(samples: &[i64], pmf: &BTreeMap<i64, f64>) -> Result<String, String> {
    let (stat, df) = chi_square(samples, pmf);
    let ks = ks_distance(samples, pmf);
    let msg = format!(
        "chi2 {stat:.1} on {df} df (critical {:.1}), KS {ks:.5} (critical {:.5})",
        chi2_critical(df),
        ks_critical(samples.len())
    );
    if stat < chi2_critical(df) && ks < ks_critical(samples.len()) {
        Ok(msg)
    } else {
        Err(msg)
    }
}

/// Two-sample verdict (chi-square homogeneity over bins of >= 20 pooled observations, and
/// the two-sample KS bound).
fn two_sample(a: &[i64], b: &[i64]) -> Result<String, String> {
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let mut ca: BTreeMap<i64, f64> = BTreeMap::new();
    let mut cb: BTreeMap<i64, f64> = BTreeMap::new();
    for x in a {
        *ca.entry(*x).or_default() += 1.0;
        cb.entry(*x).or_default();
    }
    for x in b {
        *cb.entry(*x).or_default() += 1.0;
        ca.entry(*x).or_default();
    }
    let (mut stat, mut bins) = (0.0, 0usize);
    let (mut pa, mut pb) = (0.0, 0.0);
    let (mut fa, mut fb, mut ks) = (0.0, 0.0, 0.0_f64);
    let mut flush = |oa: f64, ob: f64| {
        let tot = oa + ob;
        let (ea, eb) = (tot * na / (na + nb), tot * nb / (na + nb));
        stat += (oa - ea).powi(2) / ea + (ob - eb).powi(2) / eb;
        bins += 1;
    };
    for (k, oa) in &ca {
        let ob = cb[k];
        fa += oa / na;
        fb += ob / nb;
        ks = ks.max((fa - fb).abs());
        pa += oa;
        pb += ob;
        if pa + pb >= 20.0 {
            flush(pa, pb);
            pa = 0.0;
            pb = 0.0;
        }
    }
    if pa + pb > 0.0 {
        flush(pa, pb);
    }
    let df = bins - 1;
    let ks_crit = ((2.0 / KS_ALPHA).ln() / 2.0).sqrt() * ((na + nb) / (na * nb)).sqrt();
    let msg = format!(
        "chi2 {stat:.1} on {df} df (critical {:.1}), KS {ks:.5} (critical {ks_crit:.5})",
        chi2_critical(df)
    );
    if stat < chi2_critical(df) && ks < ks_crit {
        Ok(msg)
    } else {
        Err(msg)
    }
}

/// The standard normal CDF.
fn phi(x: f64) -> f64 {
    0.5 * libm::erfc(-x / std::f64::consts::SQRT_2)
}

/// Chi-square of samples of scale `sigma` (large: the discrete Gaussian is then the normal
/// to within exp(-2 pi^2 sigma^2)) against the normal, in 40 bins of width sigma / 8 over
/// [-2.5 sigma, 2.5 sigma] plus the two tails.
fn binned_normal(samples: &[i64], sigma: f64) -> Result<String, String> {
    let edges: Vec<f64> = (-20..=20).map(|i| f64::from(i) * sigma / 8.0).collect();
    let n = samples.len() as f64;
    let mut counts = vec![0.0; edges.len() + 1];
    for &s in samples {
        // Integer x is in bin i when edges[i-1] < x + 1/2 <= edges[i] (continuity correction).
        let x = s as f64 + 0.5;
        counts[edges.partition_point(|&e| e < x)] += 1.0;
    }
    let mut stat = 0.0;
    for (i, obs) in counts.iter().enumerate() {
        let lo = if i == 0 {
            0.0
        } else {
            phi(edges[i - 1] / sigma)
        };
        let hi = if i == edges.len() {
            1.0
        } else {
            phi(edges[i] / sigma)
        };
        let exp = (hi - lo) * n;
        stat += (obs - exp).powi(2) / exp;
    }
    let df = counts.len() - 1;
    let msg = format!(
        "chi2 {stat:.1} on {df} df (critical {:.1})",
        chi2_critical(df)
    );
    if stat < chi2_critical(df) {
        Ok(msg)
    } else {
        Err(msg)
    }
}

/// `sigma^2` fractions: a quarter, 9/4, 10, 400 and 1024 (as 2^20 / 2^10).
const VARIANCES: [(u64, u64); 5] = [(1, 4), (9, 4), (10, 1), (400, 1), (1 << 20, 1 << 10)];

#[test]
fn fast_sampler_matches_the_exact_pmf() {
    for (i, (num, den)) in VARIANCES.into_iter().enumerate() {
        let xs = fast_samples(num, den, 200_000, 2024 + i as u64);
        let sigma_sq = num as f64 / den as f64;
        let pmf = exact_pmf(sigma_sq, (sigma_sq.sqrt() * 12.0).ceil() as i64 + 2);
        match one_sample(&xs, &pmf) {
            Ok(m) => eprintln!("sigma^2 = {num}/{den}: {m}"),
            Err(m) => panic!("sigma^2 = {num}/{den}: {m}"),
        }
    }
}

#[test]
fn the_pmf_tests_reject_a_sampler_with_sigma_five_percent_off() {
    for (i, (num, den)) in VARIANCES.into_iter().enumerate().skip(1) {
        let sigma_sq = num as f64 / den as f64;
        let pmf = exact_pmf(sigma_sq, (sigma_sq.sqrt() * 12.0).ceil() as i64 + 2);
        // (1.05)^2 = 441/400 and (0.95)^2 = 361/400, exactly.
        for (f_num, f_den) in [(441, 400), (361, 400)] {
            let xs = fast_samples(num * f_num, den * f_den, 200_000, 77 + i as u64);
            let (stat, df) = chi_square(&xs, &pmf);
            let ks = ks_distance(&xs, &pmf);
            eprintln!(
                "sigma^2 = {num}/{den} x {f_num}/{f_den}: chi2 {stat:.0} on {df} df, KS {ks:.4}"
            );
            assert!(
                stat > chi2_critical(df),
                "chi-square accepted a wrong sigma: {stat} on {df}"
            );
            assert!(
                ks > ks_critical(xs.len()),
                "KS accepted a wrong sigma: {ks}"
            );
        }
    }
}

#[test]
fn fast_sampler_matches_the_normal_at_the_noise_lattice_scale() {
    // The scales GaussianNoise uses: sigma in [2^24, 2^25] lattice steps.
    for (i, s) in [1u64 << 24, (1 << 24) + 12_345, (1 << 25) - 1]
        .into_iter()
        .enumerate()
    {
        let xs = fast_samples(s * s, 1, 200_000, 500 + i as u64);
        let sigma = s as f64;
        match binned_normal(&xs, sigma) {
            Ok(m) => eprintln!("sigma = {s}: {m}"),
            Err(m) => panic!("sigma = {s}: {m}"),
        }
        // And at sigma off by 5% the same test rejects.
        let off = s * 105 / 100;
        let ys = fast_samples(off * off, 1, 200_000, 600 + i as u64);
        assert!(
            binned_normal(&ys, sigma).is_err(),
            "accepted sigma {off} as {s}"
        );
    }
}

#[test]
fn fast_sampler_and_opendp_draw_the_same_distribution() {
    // opendp takes sigma, ours sigma^2.
    for (i, ((snum, sden), (vnum, vden))) in [
        ((3u64, 2u64), (9u64, 4u64)),
        ((5, 1), (25, 1)),
        ((40, 1), (1600, 1)),
    ]
    .into_iter()
    .enumerate()
    {
        let n = 200_000;
        let theirs = opendp_discrete_gaussian(n, snum, sden).unwrap();
        let ours = fast_samples(vnum, vden, n, 99 + i as u64);
        match two_sample(&theirs, &ours) {
            Ok(m) => eprintln!("sigma = {snum}/{sden}: ours vs opendp: {m}"),
            Err(m) => panic!("sigma = {snum}/{sden}: ours vs opendp: {m}"),
        }
        // opendp's samples fit the exact pmf by the same one-sample tests...
        let sigma_sq = vnum as f64 / vden as f64;
        let pmf = exact_pmf(sigma_sq, (sigma_sq.sqrt() * 12.0).ceil() as i64 + 2);
        if let Err(m) = one_sample(&theirs, &pmf) {
            panic!("sigma = {snum}/{sden}: opendp vs the exact pmf: {m}");
        }
        // ...and the two-sample test tells a 5%-off sampler from opendp.
        for (f_num, f_den) in [(441, 400), (361, 400)] {
            let wrong = fast_samples(vnum * f_num, vden * f_den, n, 199 + i as u64);
            let verdict = two_sample(&theirs, &wrong);
            assert!(
                verdict.is_err(),
                "sigma = {snum}/{sden} x {f_num}/{f_den} accepted: {verdict:?}"
            );
        }
    }
}
