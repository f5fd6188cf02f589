//! Special functions for the accountants, in log space where tails matter.

use std::f64::consts::{LN_2, PI, SQRT_2};

/// `ln(exp(a) + exp(b))`.
pub(crate) fn log_add(a: f64, b: f64) -> f64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY {
        return hi;
    }
    (lo - hi).exp().ln_1p() + hi
}

/// `ln(exp(a) - exp(b))` for `a > b`; `-inf` when equal.
pub(crate) fn log_sub(a: f64, b: f64) -> f64 {
    if b == f64::NEG_INFINITY {
        return a;
    }
    if a <= b {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

/// `ln Γ(x)` for `x > 0`.
pub(crate) fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// `ln(binom(n, k))` for real `n`, `k` with `n - k > -1`.
pub(crate) fn log_comb(n: f64, k: f64) -> f64 {
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
}

/// `ln(erfc(x))`, accurate in the far right tail.
pub(crate) fn log_erfc(x: f64) -> f64 {
    if x < 25.0 {
        return libm::erfc(x).ln();
    }
    // Asymptotic expansion of erfc at +infinity (as in dp_accounting's fallback).
    let x2 = x * x;
    -PI.ln() / 2.0 - x.ln() - x2 - 0.5 / x2 + 0.625 / (x2 * x2) - 37.0 / 24.0 / (x2 * x2 * x2)
        + 353.0 / 64.0 / (x2 * x2 * x2 * x2)
}

/// Standard normal CDF `Φ(x)`.
pub(crate) fn norm_cdf(x: f64) -> f64 {
    0.5 * libm::erfc(-x / SQRT_2)
}

/// `ln Φ(x)`, accurate in the far left tail.
pub(crate) fn norm_log_cdf(x: f64) -> f64 {
    if x > 5.0 {
        // Φ(x) = 1 - Φ(-x), with Φ(-x) tiny.
        return (-norm_cdf(-x)).ln_1p();
    }
    log_erfc(-x / SQRT_2) - LN_2
}

/// `Φ^{-1}(p)` for `p` in `(0, 0.5]`, by bisection on `ln Φ` (used once per PLD, for tails).
pub(crate) fn norm_ppf_lower(p: f64) -> f64 {
    let target = p.ln();
    let (mut lo, mut hi) = (-40.0_f64, 0.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if norm_log_cdf(mid) < target {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
            break;
        }
    }
    0.5 * (lo + hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert!((norm_cdf(0.0) - 0.5).abs() < 1e-16);
        assert!((norm_cdf(-1.0) - 0.158_655_253_931_457_05).abs() < 1e-15);
        // scipy 1.x: norm.logcdf(-30) = -454.32124395634327, norm.logcdf(-40) =
        // -804.6084420137539, norm.logcdf(-3) = -6.60772622151035.
        assert!((norm_log_cdf(-30.0) / -454.321_243_956_343_27 - 1.0).abs() < 1e-13);
        assert!((norm_log_cdf(-40.0) / -804.608_442_013_753_9 - 1.0).abs() < 1e-13);
        assert!((norm_log_cdf(-3.0) / -6.607_726_221_510_35 - 1.0).abs() < 1e-13);
        // Both sides of the switch to the asymptotic series agree (x = 25 sqrt 2).
        let x = -25.0 * SQRT_2;
        let (a, b) = (
            norm_log_cdf(x * (1.0 - 1e-12)),
            norm_log_cdf(x * (1.0 + 1e-12)),
        );
        assert!((a - b).abs() < 1e-8, "{a} {b}");
        // scipy: norm.ppf(0.5 * exp(-50)) = -9.745474864965935.
        let x = norm_ppf_lower(0.5 * (-50f64).exp());
        assert!((x + 9.745_474_864_965_935).abs() < 1e-12, "{x}");
        assert!((norm_log_cdf(x) - (0.5f64.ln() - 50.0)).abs() < 1e-10);
        assert!((log_comb(5.0, 2.0) - 10f64.ln()).abs() < 1e-14);
        assert!((log_add(0.0, 0.0) - LN_2).abs() < 1e-15);
        assert!((log_sub(LN_2, 0.0)).abs() < 1e-15);
    }
}
