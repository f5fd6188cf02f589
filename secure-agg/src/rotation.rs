//! Randomized Hadamard rotation: `y = H D x / sqrt(N)` with `D` a diagonal of random signs
//! drawn from a shared 32-byte seed and `H` the Walsh–Hadamard matrix of size `N`, the
//! dimension padded to a power of two. The rotation is orthogonal, so it keeps the L2 norm
//! (and every rotated coordinate is at most the norm in absolute value) while spreading a
//! spiky update over all coordinates, which lowers the rounding error of the codec.

use chacha20::ChaCha20;
use chacha20::cipher::{KeyIvInit, StreamCipher};

/// The rotation for one padded dimension and seed.
#[derive(Debug, Clone)]
pub(crate) struct Rotation {
    /// One bit per coordinate: 1 flips the sign.
    signs: Vec<u64>,
    padded: usize,
}

impl Rotation {
    /// The rotation of dimension `padded` (a power of two) drawn from `seed`.
    pub(crate) fn new(seed: &[u8; 32], padded: usize) -> Self {
        debug_assert!(padded.is_power_of_two());
        let words = padded.div_ceil(64);
        let mut bytes = vec![0_u8; words * 8];
        // A nonce of its own so that the sign stream never equals a mask stream with the
        // same key.
        let mut cipher = ChaCha20::new(seed.into(), b"daofl-rotate".into());
        cipher.apply_keystream(&mut bytes);
        let signs = bytes
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        Self { signs, padded }
    }

    fn flip(&self, x: &mut [f64]) {
        for (chunk, &bits) in x.chunks_mut(64).zip(&self.signs) {
            for (j, v) in chunk.iter_mut().enumerate() {
                if (bits >> j) & 1 == 1 {
                    *v = -*v;
                }
            }
        }
    }

    /// Rotates `x` (of length `padded`) in place.
    pub(crate) fn forward(&self, x: &mut [f64]) {
        debug_assert_eq!(x.len(), self.padded);
        self.flip(x);
        fwht(x);
        normalize(x);
    }

    /// Undoes [`Rotation::forward`] in place.
    pub(crate) fn inverse(&self, y: &mut [f64]) {
        debug_assert_eq!(y.len(), self.padded);
        fwht(y);
        normalize(y);
        self.flip(y);
    }
}

fn normalize(x: &mut [f64]) {
    let f = 1.0 / (x.len() as f64).sqrt();
    for v in x {
        *v *= f;
    }
}

/// In-place unnormalized fast Walsh–Hadamard transform; `x.len()` a power of two.
pub(crate) fn fwht(x: &mut [f64]) {
    let n = x.len();
    let mut h = 1;
    while h < n {
        for block in x.chunks_exact_mut(2 * h) {
            let (a, b) = block.split_at_mut(h);
            for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                let (p, q) = (*u, *v);
                *u = p + q;
                *v = p - q;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_preserves_norm_and_inverts() {
        let n = 1024;
        let r = Rotation::new(&[7; 32], n);
        let x: Vec<f64> = (0..n)
            .map(|i| ((i * 37 % 101) as f64 - 50.0) / 7.0)
            .collect();
        let mut y = x.clone();
        r.forward(&mut y);
        let nx: f64 = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        let ny: f64 = y.iter().map(|v| v * v).sum::<f64>().sqrt();
        assert!((nx - ny).abs() < 1e-9 * nx, "{nx} {ny}");
        assert_ne!(x, y);
        r.inverse(&mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() < 1e-12, "{a} {b}");
        }
    }

    #[test]
    fn a_spike_is_spread_evenly() {
        let n = 256;
        let r = Rotation::new(&[1; 32], n);
        let mut x = vec![0.0; n];
        x[3] = 1.0;
        r.forward(&mut x);
        for v in &x {
            assert!((v.abs() - 1.0 / 16.0).abs() < 1e-15);
        }
    }

    #[test]
    fn different_seeds_give_different_rotations() {
        let (a, b) = (Rotation::new(&[1; 32], 64), Rotation::new(&[2; 32], 64));
        assert_ne!(a.signs, b.signs);
    }
}
