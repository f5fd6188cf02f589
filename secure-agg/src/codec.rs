//! Fixed-point codec: clip, rotate, scale, round, add a noise share, reduce mod `2^k`; and
//! the way back for the sum.
//!
//! ## Why the sum cannot wrap
//! With L2 clip norm `C` every coordinate of a clipped update, rotated or not (the rotation is
//! orthogonal), is at most `C` in absolute value; after scaling by `s` and unbiased
//! randomized rounding it is at most `floor(s C (1 + 2^-20)) + 1 =: B` (the `2^-20` absorbs
//! floating-point error of the rotation). With a distributed discrete Gaussian share of
//! variance `σ²` per client, the sum of `n` shares is `sqrt(n) σ`-subgaussian (each discrete
//! Gaussian share is `σ`-subgaussian, Canonne, Kamath and Steinke 2020), so with probability at
//! least `1 - 2^-40` *for the whole vector* (a union bound over its `N` coordinates) every
//! coordinate of the summed noise is below `T = σ sqrt(2 n (ln(2N) + 40 ln 2))`. The centred
//! sum lies in `[-(n B + T), n B + T]`, which the codec requires to fit in
//! `[-2^(k-1), 2^(k-1) - 1]`; otherwise [`Codec::new`] returns [`Error::WouldWrap`] with the
//! numbers.

use privacy::mechanism::{DistributedDiscreteGaussian, DistributedDiscreteGaussianConfig};
use privacy::noise::DiscreteGaussian;
use rand::CryptoRng;
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::prg::Aes256Ctr;
use crate::rotation::Rotation;

/// The failure probability (log2) of the noise tail bound, for a whole vector.
const TAIL_LOG2: f64 = 40.0;
/// Relative slack on `s C` for floating-point error in clipping and rotation.
const FLOAT_SLACK: f64 = 1.0 / (1u64 << 20) as f64;

/// The distributed discrete Gaussian share each client adds (Kairouz, Liu and Steinke 2021).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NoiseShare {
    /// Noise multiplier `z` of the summed noise relative to the integer sensitivity.
    pub noise_multiplier: f64,
    /// The fewest clients whose shares are guaranteed to be in the sum (the secure
    /// aggregation threshold or a bound on survivors); their shares together carry the noise.
    pub min_surviving_clients: u32,
}

/// The codec's settings. Build with [`CodecConfig::for_clients`] (largest safe scale) or by
/// hand, then [`Codec::new`] checks that the sum cannot wrap.
#[derive(Debug, Clone, PartialEq)]
pub struct CodecConfig {
    /// L2 clip norm `C` of each client's update.
    pub clip_norm: f64,
    /// Integer units per unit of update: `x` is sent as `round(scale · x)`.
    pub scale: f64,
    /// The modulus `2^k`, `k` in `2..=32`.
    pub modulus_bits: u32,
    /// The most clients whose encodings are summed.
    pub max_clients: u32,
    /// Seed of the randomized Hadamard rotation shared by all clients of a round, or `None`
    /// for no rotation. With a rotation the encoding is padded to a power of two.
    pub rotation_seed: Option<[u8; 32]>,
    /// The distributed discrete Gaussian share, or `None` for no noise.
    pub noise: Option<NoiseShare>,
}

impl CodecConfig {
    /// The configuration with the largest scale for which the sum of `clients` clipped
    /// updates cannot wrap modulo `2^bits` (no rotation, no noise).
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a non-positive clip norm, zero clients or bits outside
    /// `2..=32`; [`Error::WouldWrap`] if not even scale 1 fits.
    pub fn for_clients(clients: u32, clip_norm: f64, bits: u32) -> Result<Self> {
        Self {
            clip_norm,
            scale: 1.0,
            modulus_bits: bits,
            max_clients: clients,
            rotation_seed: None,
            noise: None,
        }
        .fit_scale(1)
    }

    /// The configuration with the given `scale` and the fewest modulus bits for which the
    /// sum of `clients` clipped updates cannot wrap (no rotation, no noise): the value range
    /// decides `k`.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a bad clip norm, scale or client count;
    /// [`Error::WouldWrap`] (naming the bits needed) if even 32 bits are not enough.
    pub fn with_scale(clients: u32, clip_norm: f64, scale: f64) -> Result<Self> {
        let mut config = Self {
            clip_norm,
            scale,
            modulus_bits: 32,
            max_clients: clients,
            rotation_seed: None,
            noise: None,
        };
        config.check_basic()?;
        let per_client = (scale * clip_norm * (1.0 + FLOAT_SLACK)).floor() + 1.0;
        let total = f64::from(clients) * per_client;
        // The smallest k with total <= 2^(k-1) - 1, at least 2.
        let bits = ((total + 1.0).log2().ceil() as u32 + 1).max(2);
        config.modulus_bits = bits.min(32);
        Codec::new(config.clone(), 1)?;
        Ok(config)
    }

    /// Adds the randomized Hadamard rotation drawn from `seed`.
    pub fn with_rotation(mut self, seed: [u8; 32]) -> Self {
        self.rotation_seed = Some(seed);
        self
    }

    /// Adds a distributed discrete Gaussian share (call [`CodecConfig::fit_scale`] after, since
    /// the noise takes room in the modulus).
    pub fn with_noise(mut self, noise: NoiseShare) -> Self {
        self.noise = Some(noise);
        self
    }

    /// Sets `scale` to (just under) the largest value for which [`Codec::new`]`(self, dim)`
    /// succeeds, noise included.
    ///
    /// # Errors
    /// As [`Codec::new`] at the chosen scale.
    pub fn fit_scale(mut self, dim: usize) -> Result<Self> {
        self.check_basic()?;
        let n = f64::from(self.max_clients);
        let room = (2f64.powi(self.modulus_bits as i32 - 1) - 1.0) * (1.0 - 1e-9);
        let c = self.clip_norm * (1.0 + FLOAT_SLACK);
        let padded = padded_len(dim, self.rotation_seed.is_some()) as f64;
        // n (s c + 1) + tau (s C + sqrt(N)/2) <= room, tau the tail factor per unit of sigma
        // sensitivity; solve for s (the sampler rounds sigma^2 up by a relative 2^-39).
        let tau = match self.noise {
            Some(z) => {
                z.noise_multiplier
                    * (1.0 + 1e-9)
                    * (n / f64::from(z.min_surviving_clients)).sqrt()
                    * tail_factor(padded)
            }
            None => 0.0,
        };
        let s = (room - n - tau * padded.sqrt() / 2.0) / (n * c + tau * self.clip_norm);
        self.scale = s * (1.0 - 1e-9);
        if self.scale.is_nan() || self.scale <= 0.0 {
            self.scale = 1.0;
        }
        Codec::new(self.clone(), dim)?;
        Ok(self)
    }

    fn check_basic(&self) -> Result<()> {
        if !(self.clip_norm.is_finite() && self.clip_norm > 0.0) {
            return Err(Error::param("clip_norm", self.clip_norm, "finite and > 0"));
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(Error::param("scale", self.scale, "finite and > 0"));
        }
        if !(2..=32).contains(&self.modulus_bits) {
            return Err(Error::param("modulus_bits", self.modulus_bits, "2..=32"));
        }
        if self.max_clients == 0 {
            return Err(Error::param("max_clients", 0, "at least 1"));
        }
        Ok(())
    }
}

/// `sqrt(2 (ln(2N) + 40 ln 2))`: the tail bound in units of the summed noise's sigma.
fn tail_factor(padded: f64) -> f64 {
    (2.0 * ((2.0 * padded).ln() + TAIL_LOG2 * std::f64::consts::LN_2)).sqrt()
}

fn padded_len(dim: usize, rotate: bool) -> usize {
    if rotate {
        dim.max(1).next_power_of_two()
    } else {
        dim
    }
}

/// A codec for updates of one dimension. Cheap to share; `encode` takes the randomness.
#[derive(Debug, Clone)]
pub struct Codec {
    config: CodecConfig,
    dim: usize,
    padded: usize,
    rotation: Option<Rotation>,
    noise: Option<DiscreteGaussian>,
    mask: u32,
}

impl Codec {
    /// A codec for `dim`-coordinate updates.
    ///
    /// # Errors
    /// [`Error::InvalidParameter`] for a bad field; [`Error::Privacy`] if the noise share is
    /// refused by the sampler (sigma below 1/2: raise `scale`); [`Error::WouldWrap`] if the
    /// sum of `max_clients` encodings could leave `[-2^(k-1), 2^(k-1))`.
    pub fn new(config: CodecConfig, dim: usize) -> Result<Self> {
        config.check_basic()?;
        if dim > (1 << 31) {
            return Err(Error::param("dim", dim, "at most 2^31"));
        }
        let padded = padded_len(dim, config.rotation_seed.is_some());
        let n = f64::from(config.max_clients);
        let per_client = (config.scale * config.clip_norm * (1.0 + FLOAT_SLACK)).floor() + 1.0;
        let noise = match config.noise {
            Some(z) => {
                let ddg = DistributedDiscreteGaussian::new(DistributedDiscreteGaussianConfig {
                    clip_norm: config.clip_norm,
                    noise_multiplier: z.noise_multiplier,
                    min_surviving_clients: z.min_surviving_clients,
                    scale: config.scale,
                    expected_clients: 1.0,
                })?;
                Some(ddg.share_sampler(padded)?)
            }
            None => None,
        };
        let tail = noise.as_ref().map_or(0.0, |s| {
            let (num, den) = s.variance();
            (num as f64 / den as f64 * n).sqrt() * tail_factor(padded as f64)
        });
        let total = n * per_client + tail;
        let room = 2f64.powi(config.modulus_bits as i32 - 1) - 1.0;
        if total.is_nan() || total > room {
            let needed_bits = (total + 1.0).log2().ceil() as u32 + 1;
            return Err(Error::WouldWrap {
                clients: u64::from(config.max_clients),
                value_bits: (per_client + tail / n).log2(),
                needed_bits,
                modulus_bits: config.modulus_bits,
            });
        }
        let rotation = config
            .rotation_seed
            .as_ref()
            .map(|seed| Rotation::new(seed, padded));
        let mask = if config.modulus_bits == 32 {
            u32::MAX
        } else {
            (1u32 << config.modulus_bits) - 1
        };
        Ok(Self {
            config,
            dim,
            padded,
            rotation,
            noise,
            mask,
        })
    }

    /// The settings.
    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// The update dimension this codec was built for.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Length of an encoding: `dim`, or the next power of two with a rotation.
    pub fn encoded_len(&self) -> usize {
        self.padded
    }

    /// The modulus bits `k`.
    pub fn modulus_bits(&self) -> u32 {
        self.config.modulus_bits
    }

    /// The variance `σ²` of one client's noise share, if any.
    pub fn noise_variance(&self) -> Option<f64> {
        self.noise.as_ref().map(|s| {
            let (num, den) = s.variance();
            num as f64 / den as f64
        })
    }

    /// Encodes one update: clip to `C` (L2), rotate, scale, round (unbiased, randomized), add
    /// the noise share, reduce mod `2^k`. The result has [`Codec::encoded_len`] values, each in
    /// `[0, 2^k)`.
    ///
    /// # Errors
    /// [`Error::BadVector`] if `x` does not have `dim` coordinates; [`Error::Privacy`] for a
    /// non-finite coordinate or a sampler failure.
    pub fn encode<R: CryptoRng + ?Sized>(&self, x: &[f32], rng: &mut R) -> Result<Vec<u32>> {
        self.encode_with(x, rng, |_| {})
    }

    /// [`Codec::encode`], handing each finished block of the encoding (in order, while it is
    /// still in cache) to `block` before going on: the client masks it there, so encoding
    /// and masking are one pass over the vector.
    ///
    /// # Errors
    /// As [`Codec::encode`].
    pub fn encode_with<R: CryptoRng + ?Sized>(
        &self,
        x: &[f32],
        rng: &mut R,
        mut block: impl FnMut(&mut [u32]),
    ) -> Result<Vec<u32>> {
        const BLOCK: usize = 4096;
        if x.len() != self.dim {
            return Err(Error::BadVector {
                client: u32::MAX,
                reason: format!("{} coordinates, the codec expects {}", x.len(), self.dim),
            });
        }
        // Copy only when clipping is needed (a NaN or infinite norm takes that path too, and
        // clip_l2 reports the coordinate).
        let clipped;
        let work: &[f32] = if l2_norm(x) <= self.config.clip_norm {
            x
        } else {
            let mut copy = x.to_vec();
            privacy::clip::clip_l2(&mut copy, self.config.clip_norm)?;
            clipped = copy;
            &clipped
        };
        let rotated = self.rotation.as_ref().map(|rotation| {
            let mut r = vec![0.0_f64; self.padded];
            for (r, &v) in r.iter_mut().zip(work) {
                *r = f64::from(v);
            }
            rotation.forward(&mut r);
            r
        });
        let s = self.config.scale;
        let mut out = vec![0_u32; self.padded];
        let mut noise = [0_i64; BLOCK];
        // Rounding randomness: 32 bits per value, in bulk for each block, from AES-256-CTR
        // keyed with 256 bits of `rng` (the mask PRG's counter mode: with AES-NI or VAES it
        // is the fastest secure stream here, so the randomness costs less than the rounding).
        let mut key = Zeroizing::new([0_u8; 32]);
        rng.fill_bytes(&mut key[..]);
        let mut rounding = Aes256Ctr::new(&key, 0);
        let mut uniform = Zeroizing::new([0_u8; 4 * BLOCK]);
        for (b, chunk) in out.chunks_mut(BLOCK).enumerate() {
            let range = b * BLOCK..b * BLOCK + chunk.len();
            let uniform = &mut uniform[..4 * chunk.len()];
            rounding.fill(uniform);
            match &rotated {
                Some(r) => round_scaled(chunk, &r[range], s, uniform),
                None => round_scaled(chunk, &work[range], s, uniform),
            }
            if let Some(sampler) = &self.noise {
                let noise = &mut noise[..chunk.len()];
                sampler.fill(rng, noise)?;
                for (o, &e) in chunk.iter_mut().zip(noise.iter()) {
                    *o = o.wrapping_add(e as u32);
                }
            }
            if self.mask != u32::MAX {
                for o in chunk.iter_mut() {
                    *o &= self.mask;
                }
            }
            block(chunk);
        }
        Ok(out)
    }

    /// Decodes a sum of encodings (mod `2^k`): centres it (`[2^(k-1), 2^k)` are negatives),
    /// divides by the scale, undoes the rotation and keeps the first `out_len` coordinates.
    ///
    /// # Errors
    /// [`Error::BadVector`] if `sum` does not have [`Codec::encoded_len`] values or `out_len`
    /// exceeds `dim`.
    pub fn decode_sum(&self, sum: &[u32], out_len: usize) -> Result<Vec<f64>> {
        if sum.len() != self.padded || out_len > self.dim {
            return Err(Error::BadVector {
                client: u32::MAX,
                reason: format!(
                    "sum of {} values for out_len {out_len}; the codec has encoded_len {} and \
                     dim {}",
                    sum.len(),
                    self.padded,
                    self.dim
                ),
            });
        }
        let half = 1_i64 << (self.config.modulus_bits - 1);
        let inv = 1.0 / self.config.scale;
        let mut values: Vec<f64> = sum
            .iter()
            .map(|&v| {
                let v = i64::from(v & self.mask);
                (if v >= half { v - 2 * half } else { v }) as f64 * inv
            })
            .collect();
        if let Some(rotation) = &self.rotation {
            rotation.inverse(&mut values);
        }
        values.truncate(out_len);
        Ok(values)
    }
}

/// `1.5 · 2^52`: adding it to an `f64` of magnitude below `2^51` rounds it to an integer (to
/// nearest), and the low 32 bits of the sum's representation are that integer as two's
/// complement `u32`.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;
/// `2^52`: `from_bits(bits(2^52) | u)` is `2^52 + u` exactly for `u < 2^32`.
const TWO_52: f64 = 4_503_599_627_370_496.0;

/// Unbiased randomized rounding of `s · x` for each `x` of `values` into `out` (as two's
/// complement `u32`): `floor(v) + 1` with probability `v - floor(v)`, compared against 32
/// uniform bits per value taken from `uniform` (little-endian). Every `|s · x|` must be below
/// `2^31` (the codec's no-wrap check guarantees it).
///
/// No branches and no calls per element (floor and the conversions are done with the
/// `1.5 · 2^52` trick), so the loop vectorises; `round_reference` in the tests is the
/// scalar definition it must equal bit for bit.
fn round_scaled<T: Copy + Into<f64>>(out: &mut [u32], values: &[T], s: f64, uniform: &[u8]) {
    const TWO_M32: f64 = 1.0 / 4_294_967_296.0;
    let two_52_bits = TWO_52.to_bits();
    for ((o, &x), u) in out.iter_mut().zip(values).zip(uniform.chunks_exact(4)) {
        let v = x.into() * s;
        // Nearest integer, then floor.
        let nearest = (v + ROUND_MAGIC) - ROUND_MAGIC;
        let floor = if nearest > v { nearest - 1.0 } else { nearest };
        let u = u32::from_le_bytes([u[0], u[1], u[2], u[3]]);
        let u = (f64::from_bits(two_52_bits | u64::from(u)) - TWO_52) * TWO_M32;
        let q = if u < v - floor { floor + 1.0 } else { floor };
        *o = (q + ROUND_MAGIC).to_bits() as u32;
    }
}

/// The L2 norm of `x`, summed in eight lanes so the loop vectorises (the order of the sum
/// differs from [`privacy::clip::l2_norm`] by rounding only, far below the codec's
/// `FLOAT_SLACK`).
fn l2_norm(x: &[f32]) -> f64 {
    let mut acc = [0.0_f64; 8];
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    let tail: f64 = tail.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
    (acc.iter().sum::<f64>() + tail).sqrt()
}

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
