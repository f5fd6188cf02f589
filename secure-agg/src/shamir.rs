//! Shamir secret sharing of 32-byte secrets over the prime field `GF(2^127 - 1)`.
//!
//! A secret is cut into three little-endian limbs of 15, 15 and 2 bytes (each below `2^120`,
//! so below the prime) and each limb is shared with its own random polynomial of degree
//! `t - 1`. A share is the three evaluations at `x = client index + 1` (never zero), 48 bytes.
//! Any `t` shares give the secret back by Lagrange interpolation at zero; fewer give no
//! information about it. Reconstruction checks that each limb fits its width, which catches
//! most inconsistent share sets. Field arithmetic is branch-free on `u128`.

use rand::CryptoRng;
use zeroize::Zeroize;

use crate::error::{Error, Result};

/// The Mersenne prime `2^127 - 1`.
const P: u128 = (1 << 127) - 1;
/// Bytes per limb of the secret.
const LIMBS: [usize; 3] = [15, 15, 2];

/// One party's share of a 32-byte secret: three field elements.
#[derive(Clone, PartialEq, Eq)]
pub struct Share(pub(crate) [u128; 3]);

impl Drop for Share {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Share(..)")
    }
}

impl Share {
    /// Encoded length in bytes.
    pub const LEN: usize = 48;

    /// The canonical encoding: three 16-byte little-endian field elements.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0; Self::LEN];
        for (chunk, y) in out.chunks_exact_mut(16).zip(&self.0) {
            chunk.copy_from_slice(&y.to_le_bytes());
        }
        out
    }

    /// Parses [`Share::to_bytes`]; rejects a wrong length or an element not below the prime.
    ///
    /// # Errors
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        if bytes.len() != Self::LEN {
            return Err(Error::malformed(
                "share",
                format!("{} bytes, not 48", bytes.len()),
            ));
        }
        let mut ys = [0_u128; 3];
        for (y, chunk) in ys.iter_mut().zip(bytes.chunks_exact(16)) {
            let mut b = [0_u8; 16];
            b.copy_from_slice(chunk);
            *y = u128::from_le_bytes(b);
            if *y >= P {
                return Err(Error::malformed(
                    "share",
                    "field element not below 2^127 - 1",
                ));
            }
        }
        Ok(Share(ys))
    }
}

/// Conditional subtraction of `P` for `x < 2^128` with `x < 2P`.
#[inline]
fn reduce_once(x: u128) -> u128 {
    let t = x.wrapping_sub(P);
    // Top bit of t set <=> x < P.
    let keep = 0_u128.wrapping_sub(t >> 127);
    (x & keep) | (t & !keep)
}

/// Any `u128` to its residue.
#[inline]
fn fold(x: u128) -> u128 {
    reduce_once((x & P) + (x >> 127))
}

#[inline]
fn add(a: u128, b: u128) -> u128 {
    reduce_once(a + b)
}

#[inline]
fn sub(a: u128, b: u128) -> u128 {
    add(a, P - b)
}

fn mul(a: u128, b: u128) -> u128 {
    let (a0, a1) = (a as u64 as u128, a >> 64);
    let (b0, b1) = (b as u64 as u128, b >> 64);
    let lo = a0 * b0;
    let mid = a0 * b1 + a1 * b0; // each < 2^127, sum < 2^128
    let hi = a1 * b1; // < 2^126
    // a b = hi 2^128 + mid 2^64 + lo, and 2^127 = 1 (mod P), so 2^128 = 2.
    let mid_hi = mid >> 64;
    let mid_lo = mid as u64 as u128;
    let r = add(fold(hi << 1), fold(mid_hi << 1));
    let r = add(r, fold(mid_lo << 64));
    add(r, fold(lo))
}

fn inv(a: u128) -> u128 {
    // a^(P-2), P - 2 = 2^127 - 3: bits 126..2 set, bit 1 clear, bit 0 set.
    let mut result = 1_u128;
    let mut base = a;
    let mut e = P - 2;
    while e > 0 {
        if e & 1 == 1 {
            result = mul(result, base);
        }
        base = mul(base, base);
        e >>= 1;
    }
    result
}

fn random_element<R: CryptoRng + ?Sized>(rng: &mut R) -> u128 {
    loop {
        let mut b = [0_u8; 16];
        rng.fill_bytes(&mut b);
        let v = u128::from_le_bytes(b) & P;
        if v != P {
            return v;
        }
    }
}

fn limbs(secret: &[u8; 32]) -> [u128; 3] {
    let mut out = [0_u128; 3];
    let mut at = 0;
    for (o, &len) in out.iter_mut().zip(&LIMBS) {
        let mut b = [0_u8; 16];
        b[..len].copy_from_slice(&secret[at..at + len]);
        *o = u128::from_le_bytes(b);
        b.zeroize();
        at += len;
    }
    out
}

/// The x-coordinate of a client's share: its index plus one.
pub(crate) fn x_of(client: u32) -> u128 {
    u128::from(client) + 1
}

/// Splits `secret` into one share per x-coordinate in `xs` (distinct, non-zero), any
/// `threshold` of which reconstruct it.
pub(crate) fn split<R: CryptoRng + ?Sized>(
    secret: &[u8; 32],
    xs: &[u128],
    threshold: usize,
    rng: &mut R,
) -> Vec<Share> {
    let mut secret_limbs = limbs(secret);
    let mut coeffs: Vec<[u128; 3]> = (1..threshold.max(1))
        .map(|_| {
            [
                random_element(rng),
                random_element(rng),
                random_element(rng),
            ]
        })
        .collect();
    let shares = xs
        .iter()
        .map(|&x| {
            let mut ys = [0_u128; 3];
            for (limb, y) in ys.iter_mut().enumerate() {
                // Horner from the top coefficient down to the secret.
                let mut acc = 0;
                for c in coeffs.iter().rev() {
                    acc = add(mul(acc, x), c[limb]);
                }
                *y = add(mul(acc, x), secret_limbs[limb]);
            }
            Share(ys)
        })
        .collect();
    for c in &mut coeffs {
        c.zeroize();
    }
    secret_limbs.zeroize();
    shares
}

/// Reconstructs a secret from `points` (x-coordinate, share), using the first `threshold`.
///
/// # Errors
/// [`Error::TooFewShares`] (with `client` and `secret` from the caller) when fewer than
/// `threshold` points are given; [`Error::ReconstructionMismatch`] when the interpolated
/// limbs do not fit their widths (inconsistent shares).
pub(crate) fn reconstruct(
    points: &[(u128, &Share)],
    threshold: usize,
    client: u32,
    secret: &'static str,
) -> Result<[u8; 32]> {
    if points.len() < threshold || threshold == 0 {
        return Err(Error::TooFewShares {
            client,
            secret,
            have: points.len(),
            need: threshold,
        });
    }
    let pts = &points[..threshold];
    let mut limbs = [0_u128; 3];
    for (j, &(xj, share)) in pts.iter().enumerate() {
        let mut num = 1_u128;
        let mut den = 1_u128;
        for (m, &(xm, _)) in pts.iter().enumerate() {
            if m != j {
                num = mul(num, xm);
                den = mul(den, sub(xm, xj));
            }
        }
        if den == 0 {
            return Err(Error::Duplicate {
                client,
                what: "the share x-coordinates",
            });
        }
        let lambda = mul(num, inv(den));
        for (l, y) in limbs.iter_mut().zip(&share.0) {
            *l = add(*l, mul(lambda, *y));
        }
    }
    let mut out = [0_u8; 32];
    let mut at = 0;
    for (l, &len) in limbs.iter().zip(&LIMBS) {
        if *l >> (8 * len) != 0 {
            return Err(Error::ReconstructionMismatch { client });
        }
        out[at..at + len].copy_from_slice(&l.to_le_bytes()[..len]);
        at += len;
    }
    limbs.zeroize();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn field_arithmetic() {
        let a = P - 1;
        assert_eq!(mul(a, a), 1); // (-1)^2
        assert_eq!(add(a, 1), 0);
        assert_eq!(sub(0, 1), P - 1);
        let mut r = ChaCha20Rng::seed_from_u64(1);
        for _ in 0..1000 {
            let x = random_element(&mut r);
            if x != 0 {
                assert_eq!(mul(x, inv(x)), 1);
            }
            let y = random_element(&mut r);
            // Against a slow reference: u128 double-and-add.
            let mut acc = 0_u128;
            for bit in (0..127).rev() {
                acc = add(acc, acc);
                if (y >> bit) & 1 == 1 {
                    acc = add(acc, x);
                }
            }
            assert_eq!(mul(x, y), acc);
        }
    }

    #[test]
    fn any_threshold_subset_reconstructs() {
        let mut r = ChaCha20Rng::seed_from_u64(2);
        let mut secret = [0_u8; 32];
        r.fill_bytes(&mut secret);
        secret[31] = 0xff;
        let xs: Vec<u128> = [3_u32, 7, 8, 100, 4_000_000_000].map(x_of).to_vec();
        let shares = split(&secret, &xs, 3, &mut r);
        for skip in 0..5 {
            let pts: Vec<(u128, &Share)> = xs
                .iter()
                .zip(&shares)
                .enumerate()
                .filter(|(i, _)| *i != skip && *i != (skip + 2) % 5)
                .map(|(_, (&x, s))| (x, s))
                .collect();
            assert_eq!(reconstruct(&pts, 3, 0, "t").unwrap(), secret);
        }
        let pts: Vec<(u128, &Share)> = xs.iter().copied().zip(&shares).take(2).collect();
        assert!(matches!(
            reconstruct(&pts, 3, 0, "t"),
            Err(Error::TooFewShares {
                have: 2,
                need: 3,
                ..
            })
        ));
        // A tampered share gives a wrong secret, almost always caught by the limb widths.
        let mut bad = shares[0].clone();
        bad.0[0] = add(bad.0[0], 1);
        let pts = [(xs[0], &bad), (xs[1], &shares[1]), (xs[2], &shares[2])];
        let res = reconstruct(&pts, 3, 0, "t");
        assert!(
            matches!(res, Err(Error::ReconstructionMismatch { client: 0 })),
            "{res:?}"
        );
        // Duplicate x-coordinates are refused.
        let pts = [
            (xs[0], &shares[0]),
            (xs[0], &shares[0]),
            (xs[2], &shares[2]),
        ];
        let res = reconstruct(&pts, 3, 0, "t");
        assert!(
            matches!(
                res,
                Err(Error::Duplicate {
                    client: 0,
                    what: "the share x-coordinates"
                })
            ),
            "{res:?}"
        );
    }

    #[test]
    fn share_bytes_round_trip_and_reject_bad() {
        let mut r = ChaCha20Rng::seed_from_u64(3);
        let s = &split(&[9; 32], &[x_of(1)], 1, &mut r)[0];
        assert_eq!(Share::from_bytes(&s.to_bytes()).unwrap(), *s);
        let malformed = |bytes: &[u8], why: &str| {
            let res = Share::from_bytes(bytes);
            assert!(
                matches!(&res, Err(Error::Malformed { message: "share", reason }) if reason == why),
                "{res:?}"
            );
        };
        malformed(&[0; 47], "47 bytes, not 48");
        malformed(&[0xff; 48], "field element not below 2^127 - 1");
        // Threshold 1: the share is the secret's limbs.
        assert_eq!(reconstruct(&[(x_of(1), s)], 1, 0, "t").unwrap(), [9; 32]);
    }
}
