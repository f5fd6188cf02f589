//! A fast exact discrete Gaussian sampler: Canonne, Kamath and Steinke 2020 ("The Discrete
//! Gaussian for Differential Privacy"), Algorithms 1-3, in `u64`/`u128` integer arithmetic.
//!
//! Every accept/reject decision is a comparison of uniformly random integers with exact
//! rational thresholds; no floating-point number is involved anywhere. The structure is the
//! same as opendp's `sample_discrete_gaussian` (which works in arbitrary-precision rationals
//! and fetches its random bytes a few at a time from a thread-local generator); only the
//! arithmetic is specialised: the Laplace scale `t = floor(sigma) + 1` and every Bernoulli
//! threshold are `u64`/`u128` fractions. A candidate whose exact test would overflow `u128`
//! (far beyond `2^9` standard deviations) needs `2^18` successive Bernoulli(`1/e`) successes
//! to be accepted; it is rejected when one fails, and in the event that all succeed (probability
//! below `exp(-2^18)`) the sampler returns an error rather than an inexact sample (see
//! [`DiscreteGaussian::sample`]).

use rand::Rng;

use crate::Error;

/// Largest denominator `2 * num * t^2 * den` we accept (`2^110`): it keeps every product in
/// `u128` and makes the lower bound on an overflowing exponent at least `2^18`.
const MAX_DENOMINATOR: u128 = 1 << 110;

/// Uniform integer in `[0, n)`, `n >= 1`, by rejection (no modulo bias).
fn uniform_below_u64<R: Rng + ?Sized>(rng: &mut R, n: u64) -> u64 {
    debug_assert!(n > 0);
    if n.is_power_of_two() {
        return rng.next_u64() & (n - 1);
    }
    // Accept x < n * floor(2^64 / n).
    let zone = u64::MAX - (u64::MAX % n) - 1;
    loop {
        let x = rng.next_u64();
        if x <= zone {
            return x % n;
        }
    }
}

/// Uniform integer in `[0, n)`, `n >= 1`.
fn uniform_below_u128<R: Rng + ?Sized>(rng: &mut R, n: u128) -> u128 {
    debug_assert!(n > 0);
    if let Ok(small) = u64::try_from(n) {
        return u128::from(uniform_below_u64(rng, small));
    }
    // Rejection on the smallest power of two >= n: accepts with probability > 1/2.
    let bits = 128 - (n - 1).leading_zeros();
    let mask = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    loop {
        let x = ((u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())) & mask;
        if x < n {
            return x;
        }
    }
}

/// Bernoulli(`num / den`), `num <= den`, `den >= 1`.
fn bernoulli<R: Rng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    uniform_below_u128(rng, den) < num
}

/// Bernoulli(exp(-num/den)) for `num <= den` (CKS20 Algorithm 1, gamma in [0, 1]).
fn bernoulli_exp_unit<R: Rng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let mut k: u64 = 1;
    // Draw A_k ~ Bernoulli(gamma / k) = Bernoulli(gamma) AND Bernoulli(1/k) until one fails.
    while bernoulli(rng, num, den) && uniform_below_u64(rng, k) == 0 {
        k += 1;
    }
    k % 2 == 1
}

/// Bernoulli(exp(-1)).
fn bernoulli_exp_minus_one<R: Rng + ?Sized>(rng: &mut R) -> bool {
    bernoulli_exp_unit(rng, 1, 1)
}

/// Bernoulli(exp(-num/den)) for any `num >= 0`, `den >= 1` (CKS20 Algorithm 1).
fn bernoulli_exp<R: Rng + ?Sized>(rng: &mut R, num: u128, den: u128) -> bool {
    let whole = num / den;
    for _ in 0..whole {
        if !bernoulli_exp_minus_one(rng) {
            return false;
        }
    }
    bernoulli_exp_unit(rng, num % den, den)
}

/// Geometric with `P(X = x) ∝ exp(-x / t)`, `t >= 1` (CKS20 Algorithm 2 with s = 1).
fn geometric_exp<R: Rng + ?Sized>(rng: &mut R, t: u64) -> Option<u64> {
    let u = loop {
        let u = uniform_below_u64(rng, t);
        if bernoulli_exp(rng, u128::from(u), u128::from(t)) {
            break u;
        }
    };
    let mut v: u64 = 0;
    while bernoulli_exp_minus_one(rng) {
        v += 1;
    }
    v.checked_mul(t)?.checked_add(u)
}

/// Discrete Laplace with `P(Y = y) ∝ exp(-|y| / t)` (CKS20 Algorithm 2).
fn discrete_laplace<R: Rng + ?Sized>(rng: &mut R, t: u64) -> Option<i128> {
    loop {
        let negative = rng.next_u32() & 1 == 1;
        let x = geometric_exp(rng, t)?;
        if negative && x == 0 {
            continue;
        }
        let x = i128::from(x);
        return Some(if negative { -x } else { x });
    }
}

/// An exact discrete Gaussian `N_Z(0, sigma^2)` with `sigma^2 = num / den`:
/// `P(Y = y) ∝ exp(-y^2 / (2 sigma^2))` over the integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiscreteGaussian {
    num: u64,
    den: u64,
    /// Laplace scale `t = floor(sigma) + 1`.
    t: u64,
    /// `2 * num * t^2 * den`, the accept test's denominator.
    accept_den: u128,
}

impl DiscreteGaussian {
    /// The discrete Gaussian with variance parameter `sigma^2 = variance_num / variance_den`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if either part is zero or `2 num t^2 den` exceeds `2^110`
    /// (sigma above about `2^27` or a very fine denominator).
    pub fn new(variance_num: u64, variance_den: u64) -> Result<Self, Error> {
        if variance_num == 0 {
            return Err(Error::param(
                "variance_num",
                variance_num,
                "an integer >= 1",
            ));
        }
        if variance_den == 0 {
            return Err(Error::param(
                "variance_den",
                variance_den,
                "an integer >= 1",
            ));
        }
        // floor(sqrt(num/den)) = isqrt(floor(num/den)).
        let t = (variance_num / variance_den).isqrt() + 1;
        let accept_den = 2u128
            .checked_mul(u128::from(variance_num))
            .and_then(|x| x.checked_mul(u128::from(t) * u128::from(t)))
            .and_then(|x| x.checked_mul(u128::from(variance_den)))
            .filter(|&d| d <= MAX_DENOMINATOR)
            .ok_or_else(|| {
                Error::param(
                    "variance_num / variance_den",
                    format!("{variance_num}/{variance_den}"),
                    "2 * num * (floor(sqrt(num/den)) + 1)^2 * den <= 2^110",
                )
            })?;
        Ok(Self {
            num: variance_num,
            den: variance_den,
            t,
            accept_den,
        })
    }

    /// The discrete Gaussian whose `sigma^2` is `sigma * sigma` rounded *up* (never less
    /// noise than asked for) to a multiple of `2^-j`, `j = clamp(40 - floor(log2 sigma^2), 0,
    /// 20)`: within `2^-20` absolute and `2^-39` relative of `sigma^2`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `sigma` is not finite and positive or not below `2^27`.
    pub fn from_sigma(sigma: f64) -> Result<Self, Error> {
        crate::positive("sigma", sigma)?;
        let variance = sigma * sigma;
        if variance >= 2f64.powi(54) {
            return Err(Error::param("sigma", sigma, "sigma < 2^27"));
        }
        let j = (40 - variance.log2().floor() as i32).clamp(0, 20);
        let den = 1u64 << j;
        // variance * 2^j < 2^54 (j = 0) or < 2^41 (j > 0): exact in f64 and in u64.
        let num = (variance * den as f64).ceil() as u64;
        Self::new(num.max(1), den)
    }

    /// `sigma^2` as the exact fraction `(num, den)`.
    pub fn variance(&self) -> (u64, u64) {
        (self.num, self.den)
    }

    /// Draws one sample.
    ///
    /// # Errors
    /// [`Error::Sampler`] only if a candidate lies so far out (more than `2^9` standard
    /// deviations) that its exact test would overflow `u128`, *and* the `2^18` successive
    /// Bernoulli(`1/e`) draws that stand in for the test all succeed (probability below
    /// `exp(-2^18)`): the sampler then refuses rather than draw inexactly.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Result<i64, Error> {
        let overflow = || Error::Sampler("discrete Gaussian candidate overflowed u128".into());
        loop {
            let y = discrete_laplace(rng, self.t).ok_or_else(overflow)?;
            // gamma = (|y| - sigma^2/t)^2 / (2 sigma^2) = (|y| t den - num)^2 / (2 num t^2 den).
            let diff = (y.unsigned_abs())
                .checked_mul(u128::from(self.t) * u128::from(self.den))
                .map(|a| a.abs_diff(u128::from(self.num)));
            let accept = match diff.and_then(|d| d.checked_mul(d)) {
                Some(n) => bernoulli_exp(rng, n, self.accept_den),
                // gamma >= 2^128 / 2^110: need 2^18 successive Bernoulli(e^-1) successes.
                None => {
                    let mut survived = true;
                    for _ in 0..(1u32 << 18) {
                        if !bernoulli_exp_minus_one(rng) {
                            survived = false;
                            break;
                        }
                    }
                    if survived {
                        return Err(overflow());
                    }
                    false
                }
            };
            if accept {
                return i64::try_from(y).map_err(|_| overflow());
            }
        }
    }

    /// Fills `out` with independent samples.
    ///
    /// # Errors
    /// As [`DiscreteGaussian::sample`].
    pub fn fill<R: Rng + ?Sized>(&self, rng: &mut R, out: &mut [i64]) -> Result<(), Error> {
        for o in out {
            *o = self.sample(rng)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn uniform_below_is_in_range_and_covers() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut seen = [0u32; 7];
        for _ in 0..7000 {
            seen[uniform_below_u64(&mut rng, 7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        for n in [1u128, 2, 3, (1 << 64) + 3, u128::MAX] {
            assert!(uniform_below_u128(&mut rng, n) < n);
        }
    }

    #[test]
    fn bernoulli_exp_matches_its_probability() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        for (num, den) in [(0u128, 1u128), (1, 2), (1, 1), (5, 2), (7, 3)] {
            let n = 200_000;
            let hits = (0..n).filter(|_| bernoulli_exp(&mut rng, num, den)).count();
            let p = (-(num as f64) / den as f64).exp();
            let sd = (p * (1.0 - p) / n as f64).sqrt().max(1e-9);
            let z = (hits as f64 / n as f64 - p) / sd;
            assert!(z.abs() < 5.0, "exp(-{num}/{den}): z = {z}");
        }
    }

    #[test]
    fn rejects_bad_parameters() {
        assert!(DiscreteGaussian::new(0, 1).is_err());
        assert!(DiscreteGaussian::new(1, 0).is_err());
        assert!(DiscreteGaussian::new(u64::MAX, 1).is_err());
        for s in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e30, 2f64.powi(27)] {
            assert!(DiscreteGaussian::from_sigma(s).is_err(), "{s}");
        }
        // Small, medium and large sigma: sigma^2 rounded up, finely.
        for s in [1e-3, 0.5, 3.7, 1e3, 1e6, 2f64.powi(27) * 0.99] {
            let (num, den) = DiscreteGaussian::from_sigma(s).unwrap().variance();
            let v = num as f64 / den as f64;
            assert!(v >= s * s, "{s}: {v}");
            assert!(
                v - s * s <= (s * s * 2f64.powi(-39)).max(2f64.powi(-20)),
                "{s}: {v}"
            );
        }
        assert!(DiscreteGaussian::new(1 << 50, 1).is_ok());
    }
}
