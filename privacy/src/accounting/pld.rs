//! Privacy-loss-distribution accountant for the (Poisson-subsampled) Gaussian, add/remove-one.
//!
//! A port of the parts of `dp_accounting.pld` (v0.6.0) that these events need:
//! `GaussianPrivacyLoss` with log-mass truncation `-50`, the pessimistic connect-the-dots
//! discretisation on a fixed grid (Doroshenko et al. 2022, Algorithm 1), self-composition by
//! FFT with Chernoff-bounded truncation (tail mass `1e-15` moved to `+∞`), and the
//! hockey-stick divergence. With subsampling the PLD is asymmetric: both the *remove* and the
//! *add* distributions are tracked and the larger epsilon is reported.

use rustfft::{FftPlanner, num_complex::Complex};

use super::{Accountant, DpEvent, check_delta, check_epsilon, effective_noise_multiplier};
use crate::Error;
use crate::special::{log_add, log_sub, norm_cdf, norm_log_cdf, norm_ppf_lower};

/// `dp_accounting`'s default `value_discretization_interval`.
pub const DEFAULT_DISCRETIZATION: f64 = 1e-4;
/// Log of the noise mass dropped from each side when building a Gaussian PLD.
const LOG_MASS_TRUNCATION_BOUND: f64 = -50.0;
/// Upper bound on the tail mass truncated by a composition.
const TAIL_MASS_TRUNCATION: f64 = 1e-15;
/// Direct convolution below this many multiply-adds, FFT above.
const DIRECT_CONVOLUTION_LIMIT: usize = 1 << 20;
/// Most points a PMF or an FFT may have (2^25: 512 MiB of complex FFT buffer). An event that
/// needs more (a very small noise multiplier at a fine discretisation) is refused with
/// [`Error::TooLarge`] instead of exhausting memory.
pub const MAX_PLD_POINTS: usize = 1 << 25;

fn check_points(needed: f64) -> Result<usize, Error> {
    if needed.is_finite() && needed >= 0.0 && needed <= MAX_PLD_POINTS as f64 {
        Ok(needed as usize)
    } else {
        Err(Error::TooLarge {
            what: "privacy loss distribution grid",
            needed,
            limit: MAX_PLD_POINTS as f64,
        })
    }
}

/// A discretised privacy loss distribution: `probs[i]` is the mass at loss
/// `(lower + i) * interval`, plus `infinity_mass` at `+∞`.
#[derive(Debug, Clone, PartialEq)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
}

impl Pmf {
    fn identity() -> Self {
        Pmf {
            lower: 0,
            probs: vec![1.0],
            infinity_mass: 0.0,
        }
    }

    fn compose(&self, other: &Pmf) -> Result<Pmf, Error> {
        let probs = match (self.probs.as_slice(), other.probs.as_slice()) {
            // A single point (the empty history above all) only scales: no FFT needed.
            ([p], q) | (q, [p]) => q.iter().map(|x| x * p).collect(),
            (a, b) => {
                check_points(fast_len(a.len() + b.len() - 1) as f64)?;
                convolve(a, b)
            }
        };
        let (offset, probs, right) = truncate_tails(probs, TAIL_MASS_TRUNCATION);
        let inf =
            self.infinity_mass + other.infinity_mass - self.infinity_mass * other.infinity_mass;
        let lower = self
            .lower
            .checked_add(other.lower)
            .and_then(|l| l.checked_add(offset))
            .ok_or(Error::TooLarge {
                what: "privacy loss distribution support",
                needed: self.lower as f64 + other.lower as f64,
                limit: i64::MAX as f64,
            })?;
        Ok(Pmf {
            lower,
            probs,
            infinity_mass: inf + right,
        })
    }

    fn self_compose(&self, times: u64) -> Result<Pmf, Error> {
        if times == 1 {
            return Ok(self.clone());
        }
        let (lo, probs) = self_convolve(&self.probs, times, TAIL_MASS_TRUNCATION)?;
        let inf = TAIL_MASS_TRUNCATION - (times as f64 * (-self.infinity_mass).ln_1p()).exp_m1();
        let lower = i64::try_from(times)
            .ok()
            .and_then(|t| self.lower.checked_mul(t))
            .and_then(|l| l.checked_add(lo))
            .ok_or(Error::TooLarge {
                what: "privacy loss distribution support",
                needed: times as f64,
                limit: i64::MAX as f64,
            })?;
        Ok(Pmf {
            lower,
            probs,
            infinity_mass: inf,
        })
    }

    fn delta_for_epsilon(&self, interval: f64, epsilon: f64) -> f64 {
        let mut delta = self.infinity_mass;
        for (i, &p) in self.probs.iter().enumerate() {
            let loss = (self.lower + i as i64) as f64 * interval;
            if loss > epsilon {
                delta += -(epsilon - loss).exp_m1() * p;
            }
        }
        delta
    }

    fn epsilon_for_delta(&self, interval: f64, delta: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let (mut upper, mut lower) = (self.infinity_mass, 0.0_f64);
        let top = self.lower + self.probs.len() as i64 - 1;
        for (k, &p) in self.probs.iter().rev().enumerate() {
            let loss = (top - k as i64) as f64 * interval;
            if upper > delta && lower > 0.0 && ((upper - delta) / lower).ln() >= loss {
                break;
            }
            upper += p;
            lower += (-loss).exp() * p;
            if upper >= delta && lower == 0.0 {
                return loss.max(0.0);
            }
        }
        if upper <= lower + delta {
            return 0.0;
        }
        ((upper - delta) / lower).ln()
    }
}

/// Which neighbouring dataset is "upper" in the privacy loss.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Adjacency {
    Add,
    Remove,
}

/// The privacy loss of the Gaussian mechanism with sensitivity 1, noise `sigma`, sampling `q`.
struct GaussianLoss {
    sigma: f64,
    q: f64,
    adjacency: Adjacency,
}

/// `ln(a e^b + c)`.
fn log_a_exp_b_plus_c(a: f64, b: f64, c: f64) -> f64 {
    if a == 0.0 {
        return c.ln();
    }
    if b == 0.0 {
        return (a + c).ln();
    }
    let d = b + a.ln();
    if c == 0.0 {
        d
    } else if c < 0.0 {
        log_sub(d, (-c).ln())
    } else {
        log_add(d, c.ln())
    }
}

fn is_close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

impl GaussianLoss {
    fn loss_remove_unsampled(&self, x: f64) -> f64 {
        (-0.5 - x) / (self.sigma * self.sigma)
    }

    fn inverse_remove_unsampled(&self, loss: f64) -> f64 {
        -0.5 - loss * self.sigma * self.sigma
    }

    fn loss_remove(&self, x: f64) -> f64 {
        let l = self.loss_remove_unsampled(x);
        if self.q == 1.0 {
            l
        } else {
            log_a_exp_b_plus_c(self.q, l, 1.0 - self.q)
        }
    }

    fn privacy_loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.loss_remove(x),
            Adjacency::Add => -self.loss_remove(-x),
        }
    }

    fn inverse_privacy_loss(&self, loss: f64) -> f64 {
        let q = self.q;
        match self.adjacency {
            Adjacency::Remove => {
                if q == 1.0 {
                    return self.inverse_remove_unsampled(loss);
                }
                if is_close(loss, (-q).ln_1p()) {
                    return self.inverse_remove_unsampled(f64::NEG_INFINITY);
                }
                let l = log_a_exp_b_plus_c(1.0 / q, loss, 1.0 - 1.0 / q);
                self.inverse_remove_unsampled(l)
            }
            Adjacency::Add => {
                let inv_add = |l: f64| 1.0 + self.inverse_remove_unsampled(l);
                if q == 1.0 {
                    return inv_add(loss);
                }
                if is_close(loss, -(-q).ln_1p()) {
                    return inv_add(f64::INFINITY);
                }
                let l = -log_a_exp_b_plus_c(1.0 / q, -loss, 1.0 - 1.0 / q);
                inv_add(l)
            }
        }
    }

    fn mu_upper_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.adjacency {
            Adjacency::Add => norm_cdf(x / s),
            Adjacency::Remove if self.q == 1.0 => norm_cdf((x + 1.0) / s),
            Adjacency::Remove => {
                (1.0 - self.q) * norm_cdf(x / s) + self.q * norm_cdf((x + 1.0) / s)
            }
        }
    }

    fn mu_lower_log_cdf(&self, x: f64) -> f64 {
        let s = self.sigma;
        match self.adjacency {
            Adjacency::Add if self.q == 1.0 => norm_log_cdf((x - 1.0) / s),
            Adjacency::Add => log_add(
                (-self.q).ln_1p() + norm_log_cdf(x / s),
                self.q.ln() + norm_log_cdf((x - 1.0) / s),
            ),
            Adjacency::Remove => norm_log_cdf(x / s),
        }
    }

    /// Hockey-stick divergence of the continuous mechanism at `epsilon`.
    fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let use_inverse = match self.adjacency {
            _ if self.q == 1.0 => true,
            Adjacency::Add => epsilon < -(-self.q).ln_1p(),
            Adjacency::Remove => epsilon > (-self.q).ln_1p(),
        };
        let delta = if use_inverse {
            let x = self.inverse_privacy_loss(epsilon);
            self.mu_upper_cdf(x) - (epsilon + self.mu_lower_log_cdf(x)).exp()
        } else if self.adjacency == Adjacency::Remove {
            -epsilon.exp_m1()
        } else {
            0.0
        };
        delta.clamp(0.0, 1.0)
    }

    /// Pessimistic connect-the-dots PMF on the grid `interval * Z`.
    fn connect_dots_pmf(&self, interval: f64) -> Result<Pmf, Error> {
        let mut lower_x = self.sigma * norm_ppf_lower(0.5 * LOG_MASS_TRUNCATION_BOUND.exp());
        let mut upper_x = -lower_x;
        match self.adjacency {
            Adjacency::Add => upper_x += 1.0,
            Adjacency::Remove => lower_x -= 1.0,
        }
        let eps_upper = self.privacy_loss(lower_x);
        let eps_lower = self.privacy_loss(upper_x);
        let (hi, lo) = (
            (eps_upper / interval).ceil(),
            (eps_lower / interval).floor(),
        );
        check_points(hi - lo + 1.0)?;
        let (hi, lo) = (hi as i64, lo as i64);
        let mut deltas: Vec<f64> = (lo..=hi)
            .map(|i| self.delta_for_epsilon(i as f64 * interval))
            .collect();
        if lo == hi {
            return Ok(Pmf {
                lower: lo,
                probs: vec![1.0 - deltas[0]],
                infinity_mass: deltas[0],
            });
        }
        for i in 1..deltas.len() {
            deltas[i] = deltas[i].min(deltas[i - 1]);
        }
        let n = deltas.len();
        let diffs: Vec<f64> = deltas.windows(2).map(|w| w[1] - w[0]).collect();
        let em1 = interval.exp_m1();
        let e = interval.exp();
        let mut probs = vec![0.0; n];
        probs[0] = 1.0 - deltas[0] + diffs[0] / em1;
        for i in 1..n - 1 {
            probs[i] = (diffs[i] - diffs[i - 1] * e) / em1;
        }
        probs[n - 1] = diffs[n - 2] / (-interval).exp_m1();
        for p in &mut probs {
            *p = p.max(0.0);
        }
        Ok(Pmf {
            lower: lo,
            probs,
            infinity_mass: deltas[n - 1],
        })
    }
}

/// Linear convolution, direct for small inputs and by FFT otherwise.
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let len = a.len() + b.len() - 1;
    if a.len().saturating_mul(b.len()) <= DIRECT_CONVOLUTION_LIMIT {
        let mut out = vec![0.0; len];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
        return out;
    }
    let n = fast_len(len);
    let mut fa = to_complex(a, n);
    let mut fb = to_complex(b, n);
    let mut planner = FftPlanner::new();
    let fft = planner.plan_fft_forward(n);
    fft.process(&mut fa);
    fft.process(&mut fb);
    for (x, y) in fa.iter_mut().zip(&fb) {
        *x *= y;
    }
    planner.plan_fft_inverse(n).process(&mut fa);
    fa.iter().take(len).map(|c| c.re / n as f64).collect()
}

fn to_complex(a: &[f64], n: usize) -> Vec<Complex<f64>> {
    let mut v: Vec<Complex<f64>> = a.iter().map(|&x| Complex::new(x, 0.0)).collect();
    v.resize(n, Complex::new(0.0, 0.0));
    v
}

/// Smallest `2^a 3^b 5^c 7^d >= n`.
fn fast_len(n: usize) -> usize {
    let mut best = n.next_power_of_two();
    let mut p7 = 1usize;
    while p7 < best {
        let mut p5 = p7;
        while p5 < best {
            let mut p3 = p5;
            while p3 < best {
                let mut p2 = p3;
                while p2 < n {
                    p2 *= 2;
                }
                best = best.min(p2);
                p3 *= 3;
            }
            p5 *= 5;
        }
        p7 *= 7;
    }
    best
}

/// Removes the longest prefix and suffix each holding at most `tail / 2` of the mass; the prefix
/// mass goes to the first kept entry (pessimistic), the suffix mass is returned (it goes to
/// `+∞`). Returns `(prefix length, kept probabilities, suffix mass)`.
fn truncate_tails(probs: Vec<f64>, tail: f64) -> (i64, Vec<f64>, f64) {
    let prefix = |it: &mut dyn Iterator<Item = &f64>| -> usize {
        let mut s = 0.0;
        let mut count = 0;
        for &v in it {
            s += v;
            if s > tail / 2.0 {
                return count;
            }
            count += 1;
        }
        count
    };
    let n = probs.len();
    let left = prefix(&mut probs.iter());
    let right = (n - prefix(&mut probs.iter().rev())).max(left + 1).min(n);
    let left = left.min(n - 1);
    let left_mass: f64 = probs[..left].iter().sum();
    let right_mass: f64 = probs[right..].iter().sum();
    let mut kept = probs[left..right].to_vec();
    kept[0] += left_mass;
    (left as i64, kept, right_mass)
}

/// Chernoff bounds on the support of the `times`-fold self-convolution outside of which at
/// most `tail` mass lies (dp_accounting's `compute_self_convolve_bounds`). Computed in `f64`
/// (exact below 2^53) so that no count can overflow.
fn self_convolve_bounds(probs: &[f64], times: u64, tail: f64) -> (f64, f64) {
    let len = probs.len() as f64;
    let mut upper = (len - 1.0) * times as f64;
    let mut lower = 0.0_f64;
    let first = probs.iter().position(|&p| p > 0.0);
    let last = probs.iter().rposition(|&p| p > 0.0);
    let (Some(first), Some(last)) = (first, last) else {
        return (lower, upper);
    };
    for o in (-20..0).chain(1..21) {
        let order = f64::from(o) / len;
        // log sum_i probs[i] exp(i * order), scaled by the largest exponent: i = last for a
        // positive order, i = first for a negative one. exp(i * order) by recurrence: |i *
        // order| <= 20, so the powers neither overflow nor lose more than ~len ulps.
        let m_index = if order > 0.0 { last } else { first };
        let m = m_index as f64 * order;
        let ratio = order.exp();
        let mut power = (-m).exp();
        let mut sum = 0.0;
        for &p in probs {
            sum += p * power;
            power *= ratio;
        }
        let log_mgf = m + sum.ln();
        let bound = (times as f64 * log_mgf + (2.0 / tail).ln()) / order;
        if !bound.is_finite() {
            continue;
        }
        if order > 0.0 {
            upper = upper.min(bound.ceil());
        } else {
            lower = lower.max(bound.floor());
        }
    }
    (lower, upper)
}

/// The `times`-fold self-convolution of `probs` restricted to the Chernoff window, by FFT.
fn self_convolve(probs: &[f64], times: u64, tail: f64) -> Result<(i64, Vec<f64>), Error> {
    let (lo, hi) = self_convolve_bounds(probs, times, tail);
    let out_len = check_points((hi - lo + 1.0).max(1.0))?;
    if !(-2f64.powi(62)..2f64.powi(62)).contains(&lo) {
        return Err(Error::TooLarge {
            what: "privacy loss distribution support",
            needed: lo.abs(),
            limit: 2f64.powi(62),
        });
    }
    let lo = lo as i64;
    let n = fast_len(out_len.max(probs.len()));
    check_points(n as f64)?;
    let mut f = to_complex(probs, n);
    let mut planner = FftPlanner::new();
    planner.plan_fft_forward(n).process(&mut f);
    for c in &mut f {
        *c = complex_pow(*c, times);
    }
    planner.plan_fft_inverse(n).process(&mut f);
    let start = lo.rem_euclid(n as i64) as usize;
    let out = (0..out_len)
        .map(|i| f[(start + i) % n].re / n as f64)
        .collect();
    Ok((lo, out))
}

/// `base^exp` by repeated squaring, on the parts (no operator calls: this loop runs once per
/// FFT bin).
fn complex_pow(base: Complex<f64>, mut exp: u64) -> Complex<f64> {
    let (mut br, mut bi) = (base.re, base.im);
    let (mut ar, mut ai) = (1.0_f64, 0.0_f64);
    while exp > 0 {
        if exp & 1 == 1 {
            (ar, ai) = (ar * br - ai * bi, ar * bi + ai * br);
        }
        (br, bi) = (br * br - bi * bi, 2.0 * br * bi);
        exp >>= 1;
    }
    Complex::new(ar, ai)
}

/// Privacy-loss-distribution accountant (add/remove-one adjacency).
#[derive(Debug, Clone, PartialEq)]
pub struct PldAccountant {
    interval: f64,
    remove: Pmf,
    /// `None` while the distribution is symmetric (no subsampled event yet).
    add: Option<Pmf>,
    non_private: bool,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PldAccountant {
    /// An empty accountant at [`DEFAULT_DISCRETIZATION`] (`1e-4`, as `dp_accounting`).
    pub fn new() -> Self {
        Self::with_discretization(DEFAULT_DISCRETIZATION).expect("default is valid")
    }

    /// An empty accountant whose losses are multiples of `value_discretization_interval`
    /// (smaller: tighter and slower).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] unless `value_discretization_interval` is in `(0, 1]`.
    pub fn with_discretization(value_discretization_interval: f64) -> Result<Self, Error> {
        let d = crate::positive(
            "value_discretization_interval",
            value_discretization_interval,
        )?;
        if d > 1.0 {
            return Err(Error::param(
                "value_discretization_interval",
                d,
                "a number in (0, 1]",
            ));
        }
        Ok(Self {
            interval: d,
            remove: Pmf::identity(),
            add: None,
            non_private: false,
        })
    }

    /// The discretisation interval.
    pub fn discretization(&self) -> f64 {
        self.interval
    }

    /// `(remove, add)` PMFs of `event` run `count` times, or `None` for a no-op;
    /// `add == None` means symmetric. Sets `non_private` for a non-private event.
    fn event_pmfs(
        &self,
        event: &DpEvent,
        count: u64,
        non_private: &mut bool,
    ) -> Result<Option<PmfPair>, Error> {
        let unsupported = |reason: String| Error::UnsupportedEvent {
            accountant: "pld",
            reason,
        };
        match event {
            DpEvent::NoOp => Ok(None),
            DpEvent::NonPrivate => {
                *non_private = true;
                Ok(None)
            }
            DpEvent::SelfComposed { event, count: c } => {
                let total = count.checked_mul(*c).ok_or_else(|| {
                    Error::param("count", c, "a composition count whose product fits in u64")
                })?;
                self.event_pmfs(event, total, non_private)
            }
            DpEvent::Composed(events) => {
                let mut acc: Option<PmfPair> = None;
                for e in events {
                    if let Some(next) = self.event_pmfs(e, count, non_private)? {
                        acc = Some(match acc {
                            None => next,
                            Some(prev) => compose_pair(&prev, &next)?,
                        });
                    }
                }
                Ok(acc)
            }
            DpEvent::Gaussian { noise_multiplier } => {
                let z = check_z(*noise_multiplier)?;
                if count == 0 {
                    return Ok(None);
                }
                if z == 0.0 {
                    *non_private = true;
                    return Ok(None);
                }
                let loss = GaussianLoss {
                    sigma: z / (count as f64).sqrt(),
                    q: 1.0,
                    adjacency: Adjacency::Remove,
                };
                Ok(Some((loss.connect_dots_pmf(self.interval)?, None)))
            }
            DpEvent::PoissonSampled {
                sampling_probability,
                event,
            } => {
                let q = crate::probability("sampling_probability", *sampling_probability)?;
                let z = effective_noise_multiplier(event).ok_or_else(|| {
                    unsupported(format!(
                        "a Poisson-sampled event must be a Gaussian or a composition of \
                         Gaussians, found {event:?}"
                    ))
                })?;
                let z = check_z(z)?;
                if q == 0.0 || count == 0 {
                    return Ok(None);
                }
                if z == 0.0 {
                    *non_private = true;
                    return Ok(None);
                }
                let pmf = |adjacency| {
                    GaussianLoss {
                        sigma: z,
                        q,
                        adjacency,
                    }
                    .connect_dots_pmf(self.interval)?
                    .self_compose(count)
                };
                let remove = pmf(Adjacency::Remove)?;
                let add = if q < 1.0 {
                    Some(pmf(Adjacency::Add)?)
                } else {
                    None
                };
                Ok(Some((remove, add)))
            }
            DpEvent::ZCdp { .. } => Err(unsupported("zCDP events need the RDP accountant".into())),
        }
    }
}

/// Largest noise multiplier the PLD accountant takes (beyond it the loss grid degenerates in
/// `f64`; such noise costs no measurable epsilon, and the RDP accountant takes any value).
pub const MAX_PLD_NOISE_MULTIPLIER: f64 = 1e6;

fn check_z(z: f64) -> Result<f64, Error> {
    if (0.0..=MAX_PLD_NOISE_MULTIPLIER).contains(&z) {
        Ok(z)
    } else {
        Err(Error::param(
            "noise_multiplier",
            z,
            "a number in [0, 1e6] for the PLD accountant",
        ))
    }
}

type PmfPair = (Pmf, Option<Pmf>);

fn compose_pair(a: &PmfPair, b: &PmfPair) -> Result<PmfPair, Error> {
    let remove = a.0.compose(&b.0)?;
    let add = match (&a.1, &b.1) {
        (None, None) => None,
        (x, y) => Some(
            x.as_ref()
                .unwrap_or(&a.0)
                .compose(y.as_ref().unwrap_or(&b.0))?,
        ),
    };
    Ok((remove, add))
}

impl Accountant for PldAccountant {
    fn compose(&mut self, event: &DpEvent) -> Result<(), Error> {
        let mut non_private = false;
        let pmfs = self.event_pmfs(event, 1, &mut non_private)?;
        if let Some(next) = pmfs {
            let (remove, add) = compose_pair(&(self.remove.clone(), self.add.clone()), &next)?;
            self.remove = remove;
            self.add = add;
        }
        self.non_private |= non_private;
        Ok(())
    }

    fn epsilon(&self, delta: f64) -> Result<f64, Error> {
        check_delta(delta)?;
        if self.non_private {
            return Ok(f64::INFINITY);
        }
        let r = self.remove.epsilon_for_delta(self.interval, delta);
        Ok(match &self.add {
            None => r,
            Some(a) => r.max(a.epsilon_for_delta(self.interval, delta)),
        })
    }

    fn delta(&self, epsilon: f64) -> Result<f64, Error> {
        check_epsilon(epsilon)?;
        if self.non_private {
            return Ok(1.0);
        }
        let r = self.remove.delta_for_epsilon(self.interval, epsilon);
        Ok(match &self.add {
            None => r,
            Some(a) => r.max(a.delta_for_epsilon(self.interval, epsilon)),
        })
    }

    fn fresh(&self) -> Box<dyn Accountant> {
        Box::new(Self::with_discretization(self.interval).expect("interval was validated"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_len_is_smooth_and_large_enough() {
        for n in [1, 2, 11, 13, 97, 1000, 65537] {
            let m = fast_len(n);
            assert!(m >= n && m <= n.next_power_of_two());
            let mut r = m;
            for p in [2, 3, 5, 7] {
                while r.is_multiple_of(p) {
                    r /= p;
                }
            }
            assert_eq!(r, 1, "{m}");
        }
    }

    #[test]
    fn fft_and_direct_convolution_agree() {
        let a: Vec<f64> = (0..3000).map(|i| ((i * 7919) % 101) as f64 / 1e5).collect();
        let b: Vec<f64> = (0..500).map(|i| ((i * 104729) % 97) as f64 / 1e4).collect();
        let fft = convolve(&a, &b);
        let mut direct = vec![0.0; a.len() + b.len() - 1];
        for (i, x) in a.iter().enumerate() {
            for (j, y) in b.iter().enumerate() {
                direct[i + j] += x * y;
            }
        }
        for (x, y) in fft.iter().zip(&direct) {
            assert!((x - y).abs() < 1e-12);
        }
    }

    #[test]
    fn gaussian_pld_matches_the_analytic_delta() {
        // Exact Gaussian-DP: delta(eps) = Phi(-eps z + 1/(2z)) - e^eps Phi(-eps z - 1/(2z)).
        let z = 1.3;
        let mut acc = PldAccountant::new();
        acc.compose(&DpEvent::Gaussian {
            noise_multiplier: z,
        })
        .unwrap();
        for eps in [0.1, 0.5, 1.0, 2.0] {
            let exact = norm_cdf(-eps * z + 0.5 / z) - eps.exp() * norm_cdf(-eps * z - 0.5 / z);
            let got = acc.delta(eps).unwrap();
            assert!(
                got >= exact * (1.0 - 1e-9) && got <= exact * 1.01 + 1e-12,
                "{eps}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(PldAccountant::with_discretization(0.0).is_err());
        assert!(PldAccountant::with_discretization(2.0).is_err());
        let mut acc = PldAccountant::new();
        assert!(acc.compose(&DpEvent::ZCdp { rho: 0.1 }).is_err());
        assert!(acc.compose(&DpEvent::poisson_gaussian(-0.1, 1.0)).is_err());
        assert!(
            acc.compose(&DpEvent::poisson_gaussian(0.1, f64::INFINITY))
                .is_err()
        );
        assert!(acc.compose(&DpEvent::poisson_gaussian(0.1, 1e7)).is_err());
        // Tiny noise needs an enormous grid: refused, not allocated.
        assert!(matches!(
            acc.compose(&DpEvent::Gaussian {
                noise_multiplier: 1e-4
            }),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            acc.compose(&DpEvent::self_composed(
                DpEvent::poisson_gaussian(0.5, 0.5),
                u64::MAX
            )),
            Err(Error::TooLarge { .. })
        ));
        assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0);
        // Huge noise at the limit is fine and nearly free.
        acc.compose(&DpEvent::poisson_gaussian(0.5, 1e6)).unwrap();
        acc.compose(&DpEvent::Gaussian {
            noise_multiplier: 1e6,
        })
        .unwrap();
        assert!(acc.epsilon(1e-5).unwrap() < 1e-3);
        acc.compose(&DpEvent::NonPrivate).unwrap();
        assert_eq!(acc.epsilon(1e-5).unwrap(), f64::INFINITY);
        assert!(acc.epsilon(2.0).is_err());
    }
}
