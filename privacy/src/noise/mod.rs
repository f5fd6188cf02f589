//! Gaussian noise for differential privacy, from an exact discrete Gaussian on a fine lattice.
//!
//! Floating-point Gaussian samplers leak through the low bits of their output (Mironov 2012),
//! so this module never draws a float. To add `N(0, sigma^2)`-like noise to `f32` values,
//! [`GaussianNoise`]:
//!
//! 1. picks the lattice `2^-k · Z` with `k` the smallest integer such that
//!    `sigma · 2^k >= 2^24` ([`Lattice`]): the lattice step is at most `sigma / 2^24`, as fine
//!    as an `f32` can resolve at the noise's scale;
//! 2. rounds each value to the nearest lattice point (so the output's low bits carry nothing
//!    about the input's sub-lattice bits);
//! 3. adds an exact discrete Gaussian `N_Z(0, s^2)` with the *integer* scale
//!    `s = ceil(sigma · 2^k)` (never less noise than asked for, by a relative `2^-24` at most);
//! 4. maps back to `f32` (post-processing).
//!
//! ## Sensitivity on the lattice
//!
//! Rounding to the lattice can move each coordinate by half a step, so two neighbouring sums
//! whose difference has L2 norm `C` round to lattice points at most `C + sqrt(d) · 2^-k` apart.
//! [`GaussianNoise::for_sensitivity`] therefore sets `sigma = z · (C + sqrt(d) · 2^-k)`; the
//! increase is `z · sqrt(d) / 2^24` relative, about `6e-5 · z` for a million coordinates. The
//! difference of the rounded vectors is a lattice vector, and for such shifts the discrete
//! Gaussian's privacy curve is dominated by the continuous Gaussian's with the same `sigma`
//! (Canonne, Kamath and Steinke 2020, Theorems 4 and 7), so the accountants in
//! [`crate::accounting`] apply with noise multiplier `z`.
//!
//! ## Samplers and randomness
//!
//! The sampler that does the work is [`DiscreteGaussian`], CKS20's algorithm in `u64`/`u128`
//! arithmetic: 0.30 s for 10^6 coordinates at the lattice scale `2^24`, against 5.7 s for
//! opendp's `sample_discrete_gaussian` (arbitrary-precision rationals) on the same lattice,
//! one core each (`privacy/BENCH.md`). opendp's sampler draws the same distribution and is
//! kept as the reference: [`GaussianNoise::add_to_with_opendp`] and
//! [`opendp_discrete_gaussian`]; the tests in `tests/it/sampler.rs` show the two agree and
//! that the same tests reject a sampler whose sigma is 5% off.
//!
//! [`os_rng`] is a ChaCha20 stream seeded from the operating system (`getrandom`); the `_with`
//! functions take any [`CryptoRng`] so tests can inject a seeded one. opendp draws from its own
//! source (built without its `use-openssl` feature, that is `rand` 0.8's `thread_rng`, a
//! ChaCha12 CSPRNG seeded from the operating system), which cannot be seeded.

mod cks20;

pub use cks20::DiscreteGaussian;

use dashu::{integer::IBig, rational::RBig};
use rand::{CryptoRng, SeedableRng, rngs::SysRng};
use rand_chacha::ChaCha20Rng;

use crate::Error;

/// Bits of resolution below sigma: the lattice step is at most `sigma / 2^LATTICE_BITS`.
pub const LATTICE_BITS: i32 = 24;

/// Largest integer noise scale (in lattice steps) the fast sampler takes: `2^27`.
const MAX_SIGMA_STEPS: u64 = 1 << 27;

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
    exponent: i32,
    sigma_steps: u64,
}

impl Lattice {
    /// The lattice for noise of standard deviation `sigma` (see the module docs): the scale in
    /// lattice steps is `ceil(sigma · 2^k)`, in `[2^24, 2^25]`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `sigma` is not finite and positive, or outside
    /// `[2^-100, 2^100]`.
    pub fn for_sigma(sigma: f64) -> Result<Self, Error> {
        let exponent = lattice_exponent(sigma)?;
        let sigma_steps = (sigma * 2f64.powi(exponent)).ceil() as u64;
        Ok(Self {
            exponent,
            sigma_steps,
        })
    }

    /// `k` in the lattice spacing `2^-k` (negative for very large sigma).
    pub fn exponent(&self) -> i32 {
        self.exponent
    }

    /// The discrete Gaussian's scale in lattice steps.
    pub fn sigma_steps(&self) -> u64 {
        self.sigma_steps
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

    /// Rounds `values` to lattice points (as integers), or names the first that does not fit.
    fn quantize(&self, values: &[f32]) -> Result<Vec<i64>, Error> {
        crate::clip::check_finite("values", values)?;
        let scale = 2f64.powi(self.exponent);
        let limit = 2f64.powi(62);
        values
            .iter()
            .enumerate()
            .map(|(index, &v)| {
                let x = (f64::from(v) * scale).round();
                if x.abs() >= limit {
                    Err(Error::OffLattice {
                        index,
                        value: v,
                        lattice_exponent: self.exponent,
                    })
                } else {
                    Ok(x as i64)
                }
            })
            .collect()
    }
}

/// Smallest `k` with `sigma · 2^k >= 2^24`. Multiplying by powers of two is exact here.
fn lattice_exponent(sigma: f64) -> Result<i32, Error> {
    crate::positive("sigma", sigma)?;
    if !(2f64.powi(-100)..=2f64.powi(100)).contains(&sigma) {
        return Err(Error::param("sigma", sigma, "a value in [2^-100, 2^100]"));
    }
    let mut exponent = LATTICE_BITS - sigma.log2().floor() as i32;
    while sigma * 2f64.powi(exponent - 1) >= 2f64.powi(LATTICE_BITS) {
        exponent -= 1;
    }
    while sigma * 2f64.powi(exponent) < 2f64.powi(LATTICE_BITS) {
        exponent += 1;
    }
    Ok(exponent)
}

/// Discrete Gaussian noise on a fine lattice, ready to add to `f32` vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GaussianNoise {
    lattice: Lattice,
    sampler: DiscreteGaussian,
}

impl GaussianNoise {
    /// Noise of standard deviation (at least) `sigma`.
    ///
    /// Use this for values that are already multiples of the lattice step or whose rounding
    /// does not matter for privacy; for a mechanism with an L2 sensitivity use
    /// [`GaussianNoise::for_sensitivity`], which accounts for rounding.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] as [`Lattice::for_sigma`].
    pub fn new(sigma: f64) -> Result<Self, Error> {
        Self::on(Lattice::for_sigma(sigma)?)
    }

    /// Noise for a `dim`-coordinate query of L2 sensitivity `sensitivity` with noise multiplier
    /// `noise_multiplier`: standard deviation `z · (C + sqrt(dim) · 2^-k)` on the lattice
    /// `2^-k Z` chosen for `z · C` (see the module docs). The result is `(z, C)`-Gaussian for
    /// the accountants.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `noise_multiplier` or `sensitivity` is not finite and
    /// positive, `z · C` is outside `[2^-100, 2^100]`, or `z · sqrt(dim) >= 2^26` (rounding
    /// would then dominate the noise).
    pub fn for_sensitivity(
        noise_multiplier: f64,
        sensitivity: f64,
        dim: usize,
    ) -> Result<Self, Error> {
        crate::positive("noise_multiplier", noise_multiplier)?;
        crate::positive("sensitivity", sensitivity)?;
        let exponent = lattice_exponent(noise_multiplier * sensitivity)?;
        let step = 2f64.powi(-exponent);
        let sigma = noise_multiplier * (sensitivity + (dim as f64).sqrt() * step);
        let steps = (sigma * 2f64.powi(exponent)).ceil();
        if !(0.0..=MAX_SIGMA_STEPS as f64).contains(&steps) {
            return Err(Error::param(
                "dim",
                dim,
                "noise_multiplier * sqrt(dim) < 2^26 (lattice rounding would dominate the noise)",
            ));
        }
        Self::on(Lattice {
            exponent,
            sigma_steps: steps as u64,
        })
    }

    fn on(lattice: Lattice) -> Result<Self, Error> {
        let sampler = DiscreteGaussian::new(lattice.sigma_steps * lattice.sigma_steps, 1)?;
        Ok(Self { lattice, sampler })
    }

    /// The lattice and the integer scale on it.
    pub fn lattice(&self) -> Lattice {
        self.lattice
    }

    /// The standard deviation of the noise (the discrete Gaussian's `sigma` parameter).
    pub fn stddev(&self) -> f64 {
        self.lattice.effective_sigma()
    }

    /// Rounds every value to the lattice and adds independent noise, with `rng`.
    ///
    /// # Errors
    /// [`Error::NonFiniteInput`] for a NaN or infinite value, [`Error::OffLattice`] for a
    /// value above `2^62` lattice steps, [`Error::Sampler`] if sampling fails. On error the
    /// slice is unchanged.
    pub fn add_to<R: CryptoRng + ?Sized>(
        &self,
        values: &mut [f32],
        rng: &mut R,
    ) -> Result<(), Error> {
        let on_lattice = self.lattice.quantize(values)?;
        let mut noise = vec![0_i64; values.len()];
        self.sampler.fill(rng, &mut noise)?;
        self.write_back(values, &on_lattice, &noise);
        Ok(())
    }

    /// [`GaussianNoise::add_to`] with opendp's sampler and randomness instead of the fast
    /// sampler (the reference path; slow, see `privacy/BENCH.md`).
    ///
    /// # Errors
    /// As [`GaussianNoise::add_to`].
    pub fn add_to_with_opendp(&self, values: &mut [f32]) -> Result<(), Error> {
        let on_lattice = self.lattice.quantize(values)?;
        let noise = opendp_discrete_gaussian(values.len(), self.lattice.sigma_steps, 1)?;
        self.write_back(values, &on_lattice, &noise);
        Ok(())
    }

    fn write_back(&self, values: &mut [f32], on_lattice: &[i64], noise: &[i64]) {
        let step = self.lattice.step();
        for ((v, &x), &n) in values.iter_mut().zip(on_lattice).zip(noise) {
            *v = ((i128::from(x) + i128::from(n)) as f64 * step) as f32;
        }
    }

    /// `value` rounded to the lattice plus one noise draw, in `f64` (for counts).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] if `value` is not finite or is above `2^62` lattice steps;
    /// [`Error::Sampler`] if sampling fails.
    pub fn add_to_scalar<R: CryptoRng + ?Sized>(
        &self,
        value: f64,
        rng: &mut R,
    ) -> Result<f64, Error> {
        let x = (value * 2f64.powi(self.lattice.exponent)).round();
        if !(-2f64.powi(62)..2f64.powi(62)).contains(&x) {
            return Err(Error::param(
                "value",
                value,
                "a finite number below 2^62 lattice steps",
            ));
        }
        let noisy = i128::from(x as i64) + i128::from(self.sampler.sample(rng)?);
        Ok(noisy as f64 * self.lattice.step())
    }
}

/// Adds discrete Gaussian noise of standard deviation (at least) `sigma` to every value, using
/// the operating system's randomness. Returns the lattice used. See [`GaussianNoise`] for
/// noise calibrated to a sensitivity.
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
    let noise = GaussianNoise::new(sigma)?;
    noise.add_to(values, rng)?;
    Ok(noise.lattice())
}

/// `n` samples of the discrete Gaussian `N_Z(0, sigma^2)` drawn with opendp's reference sampler
/// (`opendp::traits::samplers::sample_discrete_gaussian`, arbitrary-precision rationals, its own
/// randomness), with `sigma = sigma_num / sigma_den`.
///
/// # Errors
/// [`Error::InvalidParameter`] if `sigma_den` is zero, [`Error::Sampler`] if opendp fails.
pub fn opendp_discrete_gaussian(
    n: usize,
    sigma_num: u64,
    sigma_den: u64,
) -> Result<Vec<i64>, Error> {
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
            assert!(
                (1 << 24..=1 << 25).contains(&l.sigma_steps()),
                "{sigma}: {l:?}"
            );
            assert!(l.effective_sigma() >= sigma);
            assert!(l.effective_sigma() <= sigma * (1.0 + 2f64.powi(-23)));
        }
        assert_eq!(
            Lattice::for_sigma(1.0).unwrap(),
            Lattice {
                exponent: 24,
                sigma_steps: 1 << 24
            }
        );
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e-40] {
            let e = Lattice::for_sigma(bad).unwrap_err();
            assert!(e.to_string().contains("sigma"), "{e}");
        }
    }

    #[test]
    fn calibrated_noise_covers_the_rounding() {
        // z = 1.1, C = 0.5, a million coordinates: sigma grows by z sqrt(d) 2^-k.
        let n = GaussianNoise::for_sensitivity(1.1, 0.5, 1_000_000).unwrap();
        let l = n.lattice();
        let needed = 1.1 * (0.5 + l.sensitivity_inflation(1_000_000));
        assert!(
            n.stddev() >= needed && n.stddev() <= needed * (1.0 + 1e-7),
            "{n:?}"
        );
        assert!(n.stddev() / 0.55 - 1.0 < 1e-4);
        for (z, c, d) in [
            (f64::NAN, 1.0, 1),
            (1.0, -1.0, 1),
            (0.0, 1.0, 1),
            (1e4, 1.0, usize::MAX),
        ] {
            assert!(
                GaussianNoise::for_sensitivity(z, c, d).is_err(),
                "{z} {c} {d}"
            );
        }
    }

    #[test]
    fn noise_has_the_right_scale_and_no_bias() {
        let n = 100_000;
        let mut v = vec![0.25_f32; n];
        let l = add_gaussian_noise_with(&mut v, 2.0, &mut rng()).unwrap();
        assert_eq!(l.exponent(), 23);
        let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n as f64;
        let var = v
            .iter()
            .map(|&x| (f64::from(x) - mean).powi(2))
            .sum::<f64>()
            / n as f64;
        assert!(
            (mean - 0.25).abs() < 5.0 * 2.0 / (n as f64).sqrt(),
            "{mean}"
        );
        // sd of the sample sd is about sigma / sqrt(2n) = 0.0045: 0.02 is 4.5 of them.
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
        let noise = GaussianNoise::new(1.0).unwrap();
        assert!(noise.add_to_scalar(f64::NAN, &mut rng()).is_err());
        assert!(noise.add_to_scalar(1e300, &mut rng()).is_err());
    }

    #[test]
    fn scalar_noise_is_centred_on_the_value() {
        let noise = GaussianNoise::new(0.5).unwrap();
        let mut r = rng();
        let draws: Vec<f64> = (0..20_000)
            .map(|_| noise.add_to_scalar(-3.5, &mut r).unwrap())
            .collect();
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!(
            (mean + 3.5).abs() < 5.0 * 0.5 / (draws.len() as f64).sqrt(),
            "{mean}"
        );
    }

    #[test]
    fn os_randomness_works() {
        let mut a = vec![0.0_f32; 8];
        let mut b = vec![0.0_f32; 8];
        add_gaussian_noise(&mut a, 1.0).unwrap();
        add_gaussian_noise(&mut b, 1.0).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn opendp_path_adds_noise_of_the_same_lattice() {
        let noise = GaussianNoise::new(3.0).unwrap();
        let mut v = vec![0.0_f32; 200];
        noise.add_to_with_opendp(&mut v).unwrap();
        let sd = (v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>() / 200.0).sqrt();
        // sd of the sample sd is 3 / sqrt(400) = 0.15; 1.0 is six and a half of them.
        assert!((sd - 3.0).abs() < 1.0, "{sd}");
        assert!(opendp_discrete_gaussian(1, 1, 0).is_err());
    }
}
