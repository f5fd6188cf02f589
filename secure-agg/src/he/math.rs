//! Arithmetic shared by both modes: seeding tfhe's generators from an injected RNG, encoding,
//! the per-bin key product of a compact ciphertext mask, and wrapping slice sums.

use rand::CryptoRng;
use tfhe::core_crypto::algorithms::polynomial_algorithms::polynomial_karatsuba_wrapping_mul;
use tfhe::core_crypto::commons::math::random::{RandomGenerator, Seed};
use tfhe::core_crypto::prelude::*;

use super::params::HeParams;

/// A fresh tfhe seed (128 bits) drawn from the injected CSPRNG.
pub(crate) fn seed_from<R: CryptoRng + ?Sized>(rng: &mut R) -> Seed {
    let mut b = [0u8; 16];
    rng.fill_bytes(&mut b);
    Seed(u128::from_le_bytes(b))
}

/// tfhe's AES-CTR generator seeded from the injected CSPRNG.
pub(crate) fn generator_from<R: CryptoRng + ?Sized>(
    rng: &mut R,
) -> RandomGenerator<DefaultRandomGenerator> {
    RandomGenerator::new(seed_from(rng))
}

/// A binary LWE secret key of dimension `n` drawn by tfhe's secret generator.
pub(crate) fn binary_secret<R: CryptoRng + ?Sized>(n: usize, rng: &mut R) -> Vec<u64> {
    let mut generator = SecretRandomGenerator::<DefaultRandomGenerator>::new(seed_from(rng));
    let key: LweSecretKeyOwned<u64> =
        allocate_and_generate_new_binary_lwe_secret_key(LweDimension(n), &mut generator);
    key.into_container()
}

/// `out += N(0, std²)` smudging noise, sampled by tfhe (Box–Muller on its AES-CTR stream; the
/// standard deviation is given to tfhe as a fraction of the modulus 2^64).
pub(crate) fn add_gaussian(
    out: &mut [u64],
    std: f64,
    generator: &mut RandomGenerator<DefaultRandomGenerator>,
) {
    let relative = std / 2f64.powi(64);
    generator.unsigned_integer_slice_wrapping_add_random_from_distribution_assign(
        out,
        Gaussian::from_standard_dev(StandardDev(relative), 0.0),
    );
}

/// Encodes values mod `2^k` into the top `k` bits of a 64-bit plaintext.
pub(crate) fn encode(params: &HeParams, values: &[u32]) -> Vec<u64> {
    let shift = params.delta_log2();
    values.iter().map(|&v| u64::from(v) << shift).collect()
}

/// Rounds a phase to the nearest multiple of `Δ` and returns the value mod `2^k`.
pub(crate) fn decode(params: &HeParams, phase: u64) -> u32 {
    let shift = params.delta_log2();
    let half = 1u64 << (shift - 1);
    let mask = if params.plaintext_bits == 32 {
        u64::from(u32::MAX)
    } else {
        (1u64 << params.plaintext_bits) - 1
    };
    // The value fits k ≤ 32 bits after the mask.
    (((phase.wrapping_add(half)) >> shift) & mask) as u32
}

/// `out[j] = <X^j · mask, key>` for `j < out.len()`: the key-dependent part of the phase of the
/// `j`-th value of a compact ciphertext bin, computed as one negacyclic product without expanding
/// the bin into `n` LWE ciphertexts.
///
/// With `mask*(X) = mask(X^-1)` in `Z_q[X]/(X^n + 1)`, `<X^j·mask, key>` is coefficient `j` of
/// `mask* · key`.
pub(crate) fn mask_dot_key(mask: &[u64], key: &[u64], out: &mut [u64]) {
    let n = mask.len();
    let reversed = reverse_mask(mask);
    let mut product = Polynomial::new(0u64, PolynomialSize(n));
    polynomial_karatsuba_wrapping_mul(
        &mut product,
        &Polynomial::from_container(reversed.as_slice()),
        &Polynomial::from_container(key),
    );
    let len = out.len();
    out.copy_from_slice(&product.as_ref()[..len]);
}

/// `mask(X^-1)` in the negacyclic ring: `c_0, −c_{n−1}, …, −c_1`. An involution; it also turns
/// a GLWE mask (phase `body − mask·s`) into a compact-list mask (phase `body − mask(X^-1)·s`).
pub(crate) fn reverse_mask(mask: &[u64]) -> Vec<u64> {
    let n = mask.len();
    let mut reversed = vec![0u64; n];
    if n > 0 {
        reversed[0] = mask[0];
    }
    for k in 1..n {
        reversed[n - k] = mask[k].wrapping_neg();
    }
    reversed
}

/// `acc += x` coefficient-wise mod 2^64.
pub(crate) fn add_assign(acc: &mut [u64], x: &[u64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a = a.wrapping_add(*b);
    }
}

/// `acc -= x` coefficient-wise mod 2^64.
pub(crate) fn sub_assign(acc: &mut [u64], x: &[u64]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a = a.wrapping_sub(*b);
    }
}

/// Uniform words mod 2^64 from tfhe's generator.
pub(crate) fn uniform_words(
    n: usize,
    generator: &mut RandomGenerator<DefaultRandomGenerator>,
) -> Vec<u64> {
    let mut v = vec![0u64; n];
    generator.fill_slice_with_random_uniform(&mut v);
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use tfhe::core_crypto::commons::generators::DeterministicSeeder;

    /// `mask_dot_key` agrees with tfhe's own expansion of a compact list + LWE decryption.
    #[test]
    fn mask_dot_key_matches_tfhe_expansion() {
        let n = 256;
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let key = binary_secret(n, &mut rng);
        let sk = LweSecretKey::from_container(key.as_slice());
        let mut g = generator_from(&mut rng);
        let mut seeder = DeterministicSeeder::<DefaultRandomGenerator>::new(seed_from(&mut rng));
        let mut enc = EncryptionRandomGenerator::<DefaultRandomGenerator>::new(
            seed_from(&mut rng),
            &mut seeder,
        );
        let pk = allocate_and_generate_new_lwe_compact_public_key(
            &sk,
            TUniform::<u64>::new(17),
            CiphertextModulus::new_native(),
            &mut enc,
        );
        let count = 200;
        let plain: Vec<u64> = uniform_words(count, &mut g);
        let mut list = LweCompactCiphertextList::new(
            0u64,
            LweSize(n + 1),
            LweCiphertextCount(count),
            CiphertextModulus::new_native(),
        );
        encrypt_lwe_compact_ciphertext_list_with_compact_public_key(
            &pk,
            &mut list,
            &PlaintextList::from_container(plain.as_slice()),
            TUniform::<u64>::new(17),
            TUniform::<u64>::new(17),
            enc.noise_generator_mut(),
        );
        let (masks, bodies) = list.get_mask_and_body_list();
        let mut dots = vec![0u64; count];
        mask_dot_key(masks.as_ref(), &key, &mut dots);
        let bodies: Vec<u64> = bodies.as_ref().to_vec();
        let expanded = list.expand_into_lwe_ciphertext_list();
        let mut phases = PlaintextList::new(0u64, PlaintextCount(count));
        decrypt_lwe_ciphertext_list(&sk, &expanded, &mut phases);
        for j in 0..count {
            assert_eq!(
                bodies[j].wrapping_sub(dots[j]),
                phases.as_ref()[j],
                "value {j}"
            );
        }
    }
}
