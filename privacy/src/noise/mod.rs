//! Gaussian noise for differential privacy, from an exact discrete Gaussian on a fine lattice.
//!
//! Floating-point Gaussian samplers leak through the low bits of their output (Mironov 2012),
//! so this module never draws a float. To add `N(0, sigma^2)`-like noise to `f32` values it:
//!
//! 1. picks the lattice `2^-k · Z` with `k` the smallest integer such that
//!    `sigma · 2^k >= 2^24` (see [`Lattice::for_sigma`]): the lattice step is at most
//!    `sigma / 2^24`, as fine as an `f32` can resolve at the noise's scale;
//! 2. rounds each value to the nearest lattice point (so the output's low bits carry nothing
//!    about the input's sub-lattice bits);
//! 3. adds an exact discrete Gaussian `N_Z(0, s^2)` with the *integer* `s = ceil(sigma · 2^k)`
//!    (so the noise's scale is at least `sigma`, by a relative `2^-24` at most);
//! 4. maps back to `f32` (post-processing).
//!
//! Rounding to the lattice can move a vector by at most `sqrt(d) · 2^-k / 2` in L2, so the
//! sensitivity of a sum of clipped updates grows from `C` to at most
//! `C + sqrt(d) · 2^-k` ([`Lattice::sensitivity_inflation`]): relative to `sigma` that is
//! `sqrt(d) / 2^24`, about `6e-5` for a million coordinates. CKS20 show that the discrete
//! Gaussian with `s^2 = sigma^2` gives the same `rho = Δ^2 / (2 sigma^2)` zCDP as the continuous
//! one, and its RDP curve is dominated by the continuous Gaussian's, so the accountants in
//! [`crate::accounting`] apply with the noise multiplier `sigma / (C + inflation)`.
//!
//! Randomness: [`os_rng`] is a ChaCha20 stream seeded from the operating system (`getrandom`);
//! the `_with` variants take any [`CryptoRng`](rand::CryptoRng) so tests can inject a seeded one.
//! The sampler is [`DiscreteGaussian`] (CKS20 in integer arithmetic, about 200 ns a draw);
//! [`opendp_discrete_gaussian`] draws the same distribution with opendp's arbitrary-precision
//! sampler and is kept as the reference (tests compare the two; the bench measures both).

mod cks20;

pub use cks20::DiscreteGaussian;

use dashu::{integer::IBig, rational::RBig};
use rand::{CryptoRng, SeedableRng, rngs::SysRng};
use rand_chacha::ChaCha20Rng;

use crate::Error;

/// Bits of resolution below sigma: the lattice step is at most `sigma / 2^LATTICE_BITS`.
pub const LATTICE_BITS: i32 = 24;

/// A ChaCha20 CSPRNG seeded with 32 bytes from the operating system.
///
/// # Errors
/// [`Error::Sampler`] if the operating system has no entropy to give.
pub fn os_rng() -> Result<ChaCha20Rng, Error> {
    ChaCha20Rng::try_from_rng(&mut SysRng)
        .map_err(|e| Error::Sampler(format!("operating-system entropy unavailable: {e}")))
}

/// The lattice `2^-exponent · Z` on which noise is drawn, and the integer noise scale on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lattice {
    /// `k` in the lattice spacing `2^-k` (negative for very large sigma).
    pub exponent: i32,
    /// The discrete Gaussian's scale in lattice steps, `ceil(sigma · 2^k)`, in `[2^24, 2^25]`.
    pub sigma_steps: u64,
}

impl Lattice {
    /// The lattice for noise of standard deviation `sigma` (see the module docs).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `sigma` is not finite and positive, or outside
    /// `[2^-100, 2^100]`.
    pub fn for_sigma(sigma: f64) -> Result<Self, Error> {
        crate::positive("sigma", sigma)?;
        if !(2f64.powi(-100)..=2f64.powi(100)).contains(&sigma) {
            return Err(Error::param("sigma", sigma, "a value in [2^-100, 2^100]"));
        }
        // Smallest k with sigma * 2^k >= 2^24. Multiplying by powers of two is exact here.
        let mut exponent = LATTICE_BITS - sigma.log2().floor() as i32;
        while sigma * 2f64.powi(exponent - 1) >= 2f64.powi(LATTICE_BITS) {
            exponent -= 1;
        }
        while sigma * 2f64.powi(exponent) < 2f64.powi(LATTICE_BITS) {
            exponent += 1;
        }
        let sigma_steps = (sigma * 2f64.powi(exponent)).ceil() as u64;
        Ok(Self { exponent, sigma_steps })
    }

    /// The lattice spacing `2^-k`.
    pub fn step(&self) -> f64 {
        2f64.powi(-self.exponent)
    }

    /// The standard deviation actually used, `sigma_steps · 2^-k` (at least the one asked for).
    pub fn effective_sigma(&self) -> f64 {
        self.sigma_steps as f64 * self.step()
    }

    /// Upper bound on how much rounding `dim` coordinates to this lattice can add to the L2
    /// sensitivity of a sum: `sqrt(dim) · 2^-k` (each of two neighbouring inputs moves by at
    /// most half a step per coordinate).
    pub fn sensitivity_inflation(&self, dim: usize) -> f64 {
        (dim as f64).sqrt() * self.step()
    }

    fn sampler(&self) -> Result<DiscreteGaussian, Error> {
        DiscreteGaussian::new(self.sigma_steps * self.sigma_steps, 1)
    }
}

/// Adds discrete Gaussian noise of standard deviation (at least) `sigma` to every value, using
/// the operating system's randomness. Returns the lattice used.
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad `sigma`, [`Error::NonFiniteInput`] for a NaN or
/// infinite value, [`Error::OffLattice`] for a value above `2^62` lattice steps,
/// [`Error::Sampler`] if the OS has no entropy. On error the slice is unchanged.
pub fn add_gaussian_noise(values: &mut [f32], sigma: f64) -> Result<Lattice, Error> {
    add_gaussian_noise_with(values, sigma, &mut os_rng()?)
}

/// [`add_gaussian_noise`] with an injected CSPRNG (tests, or a caller that pools its RNG).
///
/// # Errors
/// As [`add_gaussian_noise`].
pub fn add_gaussian_noise_with<R: CryptoRng + ?Sized>(
    values: &mut [f32],
    sigma: f64,
    rng: &mut R,
) -> Result<Lattice, Error> {
    let lattice = Lattice::for_sigma(sigma)?;
    crate::clip::check_finite("values", values)?;
    let scale = 2f64.powi(lattice.exponent);
    let limit = 2f64.powi(62);
    let mut on_lattice = Vec::with_capacity(values.len());
    for (index, &v) in values.iter().enumerate() {
        let x = (f64::from(v) * scale).round();
        if x.abs() >= limit {
            return Err(Error::OffLattice { index, value: v, lattice_exponent: lattice.exponent });
        }
        on_lattice.push(x as i64);
    }
    let sampler = lattice.sampler()?;
    let step = lattice.step();
    for (v, x) in values.iter_mut().zip(on_lattice) {
        let noisy = i128::from(x) + i128::from(sampler.sample(rng)?);
        *v = (noisy as f64 * step) as f32;
    }
    Ok(lattice)
}

/// `n` independent integer samples of the discrete Gaussian with parameter `sigma` (its
/// `sigma^2` rounded up to a multiple of `2^-20`), from the OS's randomness. For the
/// distributed discrete Gaussian under secure aggregation, where each client adds integer
/// noise in the quantised domain; use [`DiscreteGaussian::new`] for an exact rational `sigma^2`.
///
/// # Errors
/// [`Error::InvalidParameter`] for a bad `sigma`, [`Error::Sampler`] if the OS has no entropy.
pub fn discrete_gaussian_integers(n: usize, sigma: f64) -> Result<Vec<i64>, Error> {
    let sampler = DiscreteGaussian::from_sigma(sigma)?;
    let mut out = vec![0; n];
    sampler.fill(&mut os_rng()?, &mut out)?;
    Ok(out)
}

/// `n` samples of the discrete Gaussian `N_Z(0, sigma^2)` drawn with opendp's reference sampler
/// (`opendp::traits::samplers::sample_discrete_gaussian`, arbitrary-precision rationals, its own
/// randomness). `sigma = sigma_num / sigma_den`. Slow (see `benches/sampler.rs`); kept as the
/// reference against which [`DiscreteGaussian`] is tested.
///
/// # Errors
/// [`Error::InvalidParameter`] if `sigma_den` is zero, [`Error::Sampler`] if opendp fails.
pub fn opendp_discrete_gaussian(n: usize, sigma_num: u64, sigma_den: u64) -> Result<Vec<i64>, Error> {
    if sigma_den == 0 {
        return Err(Error::param("sigma_den", sigma_den, "an integer >= 1"));
    }
    let scale = RBig::from_parts(IBig::from(sigma_num), sigma_den.into());
    (0..n)
        .map(|_| {
            let x = opendp::traits::samplers::sample_discrete_gaussian(scale.clone())
                .map_err(|e| Error::Sampler(format!("opendp: {e:?}")))?;
            i64::try_from(x).map_err(|_| Error::Sampler("opendp sample exceeds i64".into()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> ChaCha20Rng {
        ChaCha20Rng::seed_from_u64(42)
    }

    #[test]
    fn lattice_is_fine_and_conservative() {
        for sigma in [1e-6, 0.013, 0.5, 1.0, 1.1, 3.0, 1e6, 2f64.powi(90)] {
            let l = Lattice::for_sigma(sigma).unwrap();
            assert!((1 << 24..=1 << 25).contains(&l.sigma_steps), "{sigma}: {l:?}");
            assert!(l.effective_sigma() >= sigma);
            assert!(l.effective_sigma() <= sigma * (1.0 + 2f64.powi(-23)));
        }
        assert_eq!(Lattice::for_sigma(1.0).unwrap(), Lattice { exponent: 24, sigma_steps: 1 << 24 });
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-40] {
            let e = Lattice::for_sigma(bad).unwrap_err();
            assert!(e.to_string().contains("sigma"), "{e}");
        }
    }

    #[test]
    fn noise_has_the_right_scale_and_no_bias() {
        let n = 100_000;
        let mut v = vec![0.25_f32; n];
        let l = add_gaussian_noise_with(&mut v, 2.0, &mut rng()).unwrap();
        assert_eq!(l.exponent, 23);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        let var = v.iter().map(|&x| (f64::from(x) - mean).powi(2)).sum::<f64>() / n as f64;
        assert!((mean - 0.25).abs() < 5.0 * 2.0 / (n as f64).sqrt(), "{mean}");
        assert!((var.sqrt() - 2.0).abs() < 0.02, "{}", var.sqrt());
    }

    #[test]
    fn bad_values_leave_the_slice_unchanged() {
        let mut v = vec![1.0_f32, f32::INFINITY];
        assert!(matches!(
            add_gaussian_noise_with(&mut v, 1.0, &mut rng()),
            Err(Error::NonFiniteInput { index: 1, .. })
        ));
        assert_eq!(v[0], 1.0);
        let mut big = vec![0.0_f32, 3e38];
        assert!(matches!(
            add_gaussian_noise_with(&mut big, 1e-6, &mut rng()),
            Err(Error::OffLattice { index: 1, .. })
        ));
        assert_eq!(big[0], 0.0);
    }

    #[test]
    fn os_randomness_works() {
        let a = discrete_gaussian_integers(8, 10.0).unwrap();
        let b = discrete_gaussian_integers(8, 10.0).unwrap();
        assert_ne!(a, b);
        let mut v = vec![0.0_f32; 4];
        add_gaussian_noise(&mut v, 1.0).unwrap();
        assert!(v.iter().any(|&x| x != 0.0));
    }

    #[test]
    fn opendp_reference_runs() {
        let xs = opendp_discrete_gaussian(200, 3, 2).unwrap();
        assert!(xs.iter().all(|x| x.abs() < 20));
        assert!(opendp_discrete_gaussian(1, 1, 0).is_err());
    }
}
