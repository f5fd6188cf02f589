//! Rényi-DP accountant for the Poisson-subsampled Gaussian (add/remove-one adjacency).
//!
//! A port of `dp_accounting.rdp.rdp_privacy_accountant` (v0.6.0) for the events in
//! [`DpEvent`]: the same orders, the same series and the same conversion.

use super::{Accountant, DpEvent, check_delta, check_epsilon, effective_noise_multiplier};
use crate::Error;
use crate::special::{log_add, log_comb, log_erfc};

/// `dp_accounting`'s `DEFAULT_RDP_ORDERS`: `1 + x/10` for `x` in `1..100`, then `11..=63`,
/// then 128, 256, 512 and 1024 (156 orders).
pub static DEFAULT_RDP_ORDERS: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
});

/// Series terms beyond which the fractional-order sum is declared divergent.
const MAX_STEPS_LOG_A_FRAC: usize = 1000;

/// Rényi-DP accountant: keeps the RDP of the history at each order.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// An empty accountant at [`DEFAULT_RDP_ORDERS`].
    pub fn new() -> Self {
        Self::with_orders(DEFAULT_RDP_ORDERS.clone()).expect("default orders are valid")
    }

    /// An empty accountant at the given orders.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `orders` is empty or holds an order that is not a finite
    /// number above 1.
    pub fn with_orders(orders: Vec<f64>) -> Result<Self, Error> {
        if orders.is_empty() {
            return Err(Error::param("orders", "[]", "at least one order"));
        }
        if let Some(&bad) = orders.iter().find(|&&a| !(a.is_finite() && a > 1.0)) {
            return Err(Error::param("orders", bad, "finite orders > 1"));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// The orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// The RDP of the history at each order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }

    /// Epsilon for `delta` and the order that attains it (CKS20 Proposition 12).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `delta` is not in `[0, 1]`.
    pub fn epsilon_and_order(&self, delta: f64) -> Result<(f64, f64), Error> {
        check_delta(delta)?;
        Ok(compute_epsilon(&self.orders, &self.rdp, delta))
    }

    /// Delta for `epsilon` and the order that attains it.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `epsilon` is negative or NaN.
    pub fn delta_and_order(&self, epsilon: f64) -> Result<(f64, f64), Error> {
        check_epsilon(epsilon)?;
        Ok(compute_delta(&self.orders, &self.rdp, epsilon))
    }

    /// The RDP of `event` run `count` times, at every order.
    fn event_rdp(&self, event: &DpEvent, count: u64) -> Result<Vec<f64>, Error> {
        let n = count as f64;
        let zero = vec![0.0; self.orders.len()];
        match event {
            DpEvent::NoOp => Ok(zero),
            DpEvent::NonPrivate => Ok(vec![f64::INFINITY; self.orders.len()]),
            DpEvent::SelfComposed { event, count: c } => {
                let total = count.checked_mul(*c).ok_or_else(|| {
                    Error::param("count", c, "a composition count whose product fits in u64")
                })?;
                self.event_rdp(event, total)
            }
            DpEvent::Composed(events) => {
                let mut sum = zero;
                for e in events {
                    for (s, r) in sum.iter_mut().zip(self.event_rdp(e, count)?) {
                        *s += r;
                    }
                }
                Ok(sum)
            }
            DpEvent::Gaussian { noise_multiplier } => {
                let z = check_z(*noise_multiplier)?;
                Ok(self
                    .orders
                    .iter()
                    .map(|&a| n * sampled_gaussian_rdp(1.0, z, a))
                    .collect())
            }
            DpEvent::ZCdp { rho } => {
                if rho.is_nan() || *rho < 0.0 {
                    return Err(Error::param("rho", rho, "a number >= 0"));
                }
                Ok(self.orders.iter().map(|&a| n * rho * a).collect())
            }
            DpEvent::PoissonSampled {
                sampling_probability,
                event,
            } => {
                let q = crate::probability("sampling_probability", *sampling_probability)?;
                let z =
                    effective_noise_multiplier(event).ok_or_else(|| Error::UnsupportedEvent {
                        accountant: "rdp",
                        reason: format!(
                            "a Poisson-sampled event must be a Gaussian or a composition of \
                         Gaussians, found {event:?}"
                        ),
                    })?;
                let z = check_z(z)?;
                Ok(self
                    .orders
                    .iter()
                    .map(|&a| n * sampled_gaussian_rdp(q, z, a))
                    .collect())
            }
        }
    }
}

impl Accountant for RdpAccountant {
    fn compose(&mut self, event: &DpEvent) -> Result<(), Error> {
        let add = self.event_rdp(event, 1)?;
        for (r, a) in self.rdp.iter_mut().zip(add) {
            *r += a;
        }
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64, Error> {
        Ok(self.epsilon_and_order(delta)?.0)
    }

    fn delta(&self, epsilon: f64) -> Result<f64, Error> {
        Ok(self.delta_and_order(epsilon)?.0)
    }

    fn fresh(&self) -> Box<dyn Accountant> {
        Box::new(Self::with_orders(self.orders.clone()).expect("orders were validated"))
    }
}

fn check_z(z: f64) -> Result<f64, Error> {
    if z >= 0.0 && !z.is_nan() {
        Ok(z)
    } else {
        Err(Error::param("noise_multiplier", z, "a number >= 0"))
    }
}

/// RDP at order `alpha` of one Poisson-sampled Gaussian with rate `q` and multiplier `z`.
fn sampled_gaussian_rdp(q: f64, z: f64, alpha: f64) -> f64 {
    if q == 0.0 {
        return 0.0;
    }
    if z == 0.0 || alpha.is_infinite() {
        return f64::INFINITY;
    }
    if q == 1.0 {
        return alpha / (2.0 * z * z);
    }
    let log_a = if alpha.fract() == 0.0 {
        log_a_int(q, z, alpha as u64)
    } else {
        log_a_frac(q, z, alpha)
    };
    log_a / (alpha - 1.0)
}

/// `ln A_alpha` for integer `alpha` (Mironov et al. 2019, binomial expansion in log space).
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let log1mq = (-q).ln_1p();
    let a = alpha as f64;
    for i in 0..=alpha {
        let i = i as f64;
        let log_coef_i = log_comb(a, i) + i * q.ln() + (a - i) * log1mq;
        let s = log_coef_i + (i * i - i) / (2.0 * sigma * sigma);
        log_a = log_add(log_a, s);
    }
    log_a
}

/// `ln A_alpha` for fractional `alpha` (Mironov et al. 2019, Section 3.3).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let log1mq = (-q).ln_1p();
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    for i in 0..MAX_STEPS_LOG_A_FRAC {
        let i = i as f64;
        let log_coef = log_comb(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * q.ln() + j * log1mq;
        let log_t1 = log_coef + j * q.ln() + i * log1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / (std::f64::consts::SQRT_2 * sigma));
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma * sigma) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma * sigma) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    // Did not converge: exclude this order (as dp_accounting does).
    f64::INFINITY
}

/// Epsilon for `delta` from RDP values, minimised over orders (CKS20 Proposition 12).
fn compute_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> (f64, f64) {
    if delta == 0.0 {
        return if rdp.iter().all(|&r| r == 0.0) {
            (0.0, 0.0)
        } else {
            (f64::INFINITY, 0.0)
        };
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let eps = if r < 0.0 {
            0.0
        } else if delta * delta + (-r).exp_m1() > 0.0 {
            // KL bound: delta <= sqrt(1 - exp(-KL)).
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        // np.argmin keeps the first minimum; NaN (inf - inf) never wins.
        if eps < best.0 {
            best = (eps, a);
        }
    }
    (best.0.max(0.0), best.1)
}

/// Delta for `epsilon` from RDP values, minimised over orders.
fn compute_delta(orders: &[f64], rdp: &[f64], epsilon: f64) -> (f64, f64) {
    let mut best = (f64::INFINITY, orders[0]);
    for (&a, &r) in orders.iter().zip(rdp) {
        let mut log_delta = if r <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > 1.01 {
            let bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(bound);
        }
        if log_delta < best.0 {
            best = (log_delta, a);
        }
    }
    (best.0.exp().min(1.0), best.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_match_dp_accounting() {
        let o = &*DEFAULT_RDP_ORDERS;
        assert_eq!(o.len(), 99 + 53 + 4);
        assert_eq!(o[0], 1.1);
        assert_eq!(o[98], 10.9);
        assert_eq!(o[99], 11.0);
        assert_eq!(*o.last().unwrap(), 1024.0);
    }

    #[test]
    fn gaussian_rdp_is_alpha_over_two_z_squared() {
        let mut acc = RdpAccountant::with_orders(vec![2.0, 10.5]).unwrap();
        acc.compose(&DpEvent::Gaussian {
            noise_multiplier: 2.0,
        })
        .unwrap();
        assert_eq!(acc.rdp(), &[0.25, 10.5 / 8.0]);
    }

    #[test]
    fn zero_and_nonprivate_events() {
        let mut acc = RdpAccountant::new();
        acc.compose(&DpEvent::NoOp).unwrap();
        acc.compose(&DpEvent::poisson_gaussian(0.0, 1.0)).unwrap();
        assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0);
        acc.compose(&DpEvent::NonPrivate).unwrap();
        assert_eq!(acc.epsilon(1e-5).unwrap(), f64::INFINITY);
    }

    #[test]
    fn bad_events_are_errors_and_change_nothing() {
        let mut acc = RdpAccountant::new();
        let bad = [
            DpEvent::poisson_gaussian(1.5, 1.0),
            DpEvent::poisson_gaussian(0.1, -1.0),
            DpEvent::poisson_gaussian(0.1, f64::NAN),
            DpEvent::ZCdp { rho: -1.0 },
            DpEvent::PoissonSampled {
                sampling_probability: 0.1,
                event: Box::new(DpEvent::ZCdp { rho: 1.0 }),
            },
            DpEvent::Composed(vec![DpEvent::NoOp, DpEvent::poisson_gaussian(2.0, 1.0)]),
        ];
        for e in bad {
            assert!(acc.compose(&e).is_err(), "{e:?}");
        }
        assert!(acc.rdp().iter().all(|&r| r == 0.0));
        assert!(acc.epsilon(-0.1).is_err());
        assert!(acc.delta(f64::NAN).is_err());
        assert!(RdpAccountant::with_orders(vec![1.0]).is_err());
    }
}
