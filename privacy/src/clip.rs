//! L2 clipping of an update to a norm bound.
//!
//! The norm is computed in `f64`; the scaled update is then re-measured in `f64` from its
//! `f32` coordinates, and the scale factor is shrunk (by a few ulps at a time) until the
//! stored `f32` vector's norm is at most `C`. Rounding can therefore never push a clipped
//! update above the bound the accountant assumes.

use crate::Error;

/// What [`clip_l2`] did to an update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Clipped {
    /// The update's L2 norm before clipping (computed in `f64`).
    pub original_norm: f64,
    /// Whether the update was scaled down (its norm was above the bound).
    pub clipped: bool,
}

/// The L2 norm of `values`, accumulated in `f64`.
pub fn l2_norm(values: &[f32]) -> f64 {
    // Scale-free accumulation would be slower; f64 has range for any f32 vector we can hold
    // (f32::MAX^2 * 2^40 < f64::MAX), so a plain sum of squares is exact enough.
    values
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt()
}

/// Clips `values` in place to L2 norm at most `max_norm`.
///
/// Returns the original norm and whether the vector was scaled. After a successful call,
/// `l2_norm(values) <= max_norm` holds exactly (in `f64` arithmetic over the stored `f32`s).
///
/// # Errors
/// [`Error::InvalidParameter`] if `max_norm` is NaN, infinite or not positive;
/// [`Error::NonFiniteInput`] if a coordinate is NaN or infinite (the slice is left unchanged).
pub fn clip_l2(values: &mut [f32], max_norm: f64) -> Result<Clipped, Error> {
    crate::positive("max_norm", max_norm)?;
    check_finite("values", values)?;
    let norm = l2_norm(values);
    if norm <= max_norm {
        return Ok(Clipped {
            original_norm: norm,
            clipped: false,
        });
    }
    let original: Vec<f32> = values.to_vec();
    let mut factor = max_norm / norm;
    loop {
        for (v, &o) in values.iter_mut().zip(&original) {
            *v = (f64::from(o) * factor) as f32;
        }
        if l2_norm(values) <= max_norm {
            return Ok(Clipped {
                original_norm: norm,
                clipped: true,
            });
        }
        // Rounding to f32 overshot: shrink the factor by a relative 2^-24 (one f32 ulp) per
        // try. One or two steps always suffice in practice; the loop ends because the
        // factor reaches 0 (where the norm is 0) after finitely many steps.
        factor *= 1.0 - f64::from(f32::EPSILON);
    }
}

/// Returns an error naming the first non-finite coordinate of `values`.
pub(crate) fn check_finite(name: &'static str, values: &[f32]) -> Result<(), Error> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(Error::NonFiniteInput {
            name,
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn short_vectors_are_untouched() {
        let mut v = vec![0.3_f32, 0.4];
        let c = clip_l2(&mut v, 1.0).unwrap();
        assert!(!c.clipped);
        assert_eq!(v, vec![0.3, 0.4]);
        assert!((c.original_norm - 0.5).abs() < 1e-7);
    }

    #[test]
    fn long_vectors_are_scaled_to_the_bound() {
        let mut v = vec![3.0_f32, 4.0];
        let c = clip_l2(&mut v, 1.0).unwrap();
        assert!(c.clipped);
        assert_eq!(c.original_norm, 5.0);
        assert!(l2_norm(&v) <= 1.0);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
    }

    #[test]
    fn bad_input_is_an_error() {
        let mut v = vec![1.0_f32, f32::NAN];
        assert!(matches!(
            clip_l2(&mut v, 1.0),
            Err(Error::NonFiniteInput { index: 1, .. })
        ));
        for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = clip_l2(&mut [1.0], c).unwrap_err();
            assert!(err.to_string().contains("max_norm"), "{err}");
        }
        assert_eq!(clip_l2(&mut [], 1.0).unwrap().original_norm, 0.0);
    }

    #[test]
    fn clipped_norm_never_exceeds_bound_on_random_vectors() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        for case in 0..2000 {
            let len = rng.random_range(1..300);
            let scale = 10f32.powi(rng.random_range(-6..7));
            let mut v: Vec<f32> = (0..len)
                .map(|_| (rng.random::<f32>() - 0.5) * scale)
                .collect();
            let bound = f64::from(10f32.powi(rng.random_range(-6..6)) * rng.random::<f32>()) + 1e-9;
            let c = clip_l2(&mut v, bound).unwrap();
            let after = l2_norm(&v);
            assert!(after <= bound, "case {case}: {after} > {bound}");
            if c.clipped {
                assert!(
                    after >= bound * (1.0 - 1e-5),
                    "case {case}: clipped too far"
                );
            }
        }
    }

    #[test]
    fn adversarial_bounds_just_below_the_norm() {
        let mut rng = ChaCha20Rng::seed_from_u64(8);
        for _ in 0..2000 {
            let len = rng.random_range(1..50);
            let v: Vec<f32> = (0..len).map(|_| rng.random::<f32>() - 0.5).collect();
            let n = l2_norm(&v);
            for bound in [n * (1.0 - 1e-9), n * (1.0 - 1e-7), n.next_down()] {
                if bound <= 0.0 {
                    continue;
                }
                let mut w = v.clone();
                clip_l2(&mut w, bound).unwrap();
                assert!(l2_norm(&w) <= bound);
            }
        }
    }
}
