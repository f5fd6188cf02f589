use super::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn sample(dim: usize, seed: u64, norm: f32) -> Vec<f32> {
    let mut r = rng(seed);
    let v: Vec<f32> = (0..dim)
        .map(|_| (r.next_u32() as f32 / u32::MAX as f32) - 0.5)
        .collect();
    let n = privacy::clip::l2_norm(&v) as f32;
    v.iter().map(|x| x * norm / n).collect()
}

#[test]
fn round_trip_within_quantization_error() {
    for rotate in [false, true] {
        let mut cfg = CodecConfig::for_clients(1, 1.0, 24).unwrap();
        if rotate {
            cfg = cfg.with_rotation([3; 32]).fit_scale(1000).unwrap();
        }
        let codec = Codec::new(cfg.clone(), 1000).unwrap();
        let x = sample(1000, 1, 0.9);
        let enc = codec.encode(&x, &mut rng(2)).unwrap();
        assert_eq!(enc.len(), if rotate { 1024 } else { 1000 });
        assert!(enc.iter().all(|&v| v < 1 << 24));
        let dec = codec.decode_sum(&enc, 1000).unwrap();
        let step = 1.0 / cfg.scale;
        // Each coordinate is off by less than one quantization step (spread by the rotation,
        // the error's L2 norm stays below sqrt(N) steps).
        let err: f64 = x
            .iter()
            .zip(&dec)
            .map(|(&a, &b)| (f64::from(a) - b).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(err <= step * (1024f64).sqrt(), "{err} vs step {step}");
        if !rotate {
            for (&a, &b) in x.iter().zip(&dec) {
                assert!((f64::from(a) - b).abs() <= step + 1e-9);
            }
        }
    }
}

#[test]
fn sum_of_encodings_decodes_to_the_sum() {
    let n = 50;
    let dim = 300;
    let cfg = CodecConfig::for_clients(n, 2.0, 20)
        .unwrap()
        .with_rotation([9; 32])
        .fit_scale(dim)
        .unwrap();
    let codec = Codec::new(cfg.clone(), dim).unwrap();
    let mut r = rng(4);
    let mut sum = vec![0_u32; codec.encoded_len()];
    let mut plain = vec![0.0_f64; dim];
    for i in 0..n {
        // Some clients exceed the clip norm: the codec clips them.
        let x = sample(dim, 100 + u64::from(i), if i % 5 == 0 { 3.0 } else { 1.9 });
        let mut clipped = x.clone();
        privacy::clip::clip_l2(&mut clipped, 2.0).unwrap();
        for (p, &v) in plain.iter_mut().zip(&clipped) {
            *p += f64::from(v);
        }
        for (s, e) in sum.iter_mut().zip(codec.encode(&x, &mut r).unwrap()) {
            *s = s.wrapping_add(e);
        }
    }
    let dec = codec.decode_sum(&sum, dim).unwrap();
    let err: f64 = plain
        .iter()
        .zip(&dec)
        .map(|(a, b)| (a - b).powi(2))
        .sum::<f64>()
        .sqrt();
    // Rounding errors are independent, mean zero, at most one step each.
    let bound = 4.0 * (f64::from(n) * 512.0).sqrt() / cfg.scale;
    assert!(err < bound, "{err} vs {bound}");
}

#[test]
fn all_extreme_clients_do_not_wrap() {
    // Every client sends a spike at +C (or -C): the sum sits at the edge of the range.
    let n = 100;
    let cfg = CodecConfig::for_clients(n, 1.0, 16).unwrap();
    let codec = Codec::new(cfg.clone(), 1).unwrap();
    let mut r = rng(5);
    for x in [1.0_f32, -1.0] {
        let mut sum = vec![0_u32; 1];
        for _ in 0..n {
            for (s, e) in sum.iter_mut().zip(codec.encode(&[x], &mut r).unwrap()) {
                *s = s.wrapping_add(e);
            }
        }
        let dec = codec.decode_sum(&sum, 1).unwrap();
        let expected = 100.0 * f64::from(x);
        assert!(
            (dec[0] - expected).abs() < 100.0 / cfg.scale + 1e-9,
            "{dec:?}"
        );
    }
}

#[test]
fn wrap_possible_configs_are_rejected_with_the_numbers() {
    let cfg = CodecConfig {
        clip_norm: 1.0,
        scale: (1u64 << 25) as f64,
        modulus_bits: 32,
        max_clients: 100,
        rotation_seed: None,
        noise: None,
    };
    let e = Codec::new(cfg, 10).unwrap_err();
    let text = e.to_string();
    assert!(
        matches!(
            e,
            Error::WouldWrap {
                needed_bits: 33,
                ..
            }
        ),
        "{text}"
    );
    assert!(
        text.contains("n=100") && text.contains("33 bits") && text.contains("32"),
        "{text}"
    );
    assert!(text.contains("lower scale or clip_norm"), "{text}");
    let res = CodecConfig::for_clients(1 << 30, 1.0, 8);
    assert!(
        matches!(
            res,
            Err(Error::WouldWrap {
                clients: 0x4000_0000,
                modulus_bits: 8,
                ..
            })
        ),
        "{res:?}"
    );
    let invalid = |res: Result<CodecConfig>, param: &str| {
        assert!(
            matches!(&res, Err(Error::InvalidParameter { name, .. }) if *name == param),
            "{res:?}"
        );
    };
    invalid(CodecConfig::for_clients(0, 1.0, 8), "max_clients");
    invalid(CodecConfig::for_clients(3, 1.0, 33), "modulus_bits");
    invalid(CodecConfig::for_clients(3, f64::NAN, 16), "clip_norm");
}

#[test]
fn for_clients_picks_the_largest_scale() {
    let cfg = CodecConfig::for_clients(100, 1.0, 32).unwrap();
    assert!(Codec::new(cfg.clone(), 10).is_ok());
    let bigger = CodecConfig {
        scale: cfg.scale * 1.001,
        ..cfg.clone()
    };
    let res = Codec::new(bigger, 10).map(drop);
    assert!(
        matches!(
            res,
            Err(Error::WouldWrap {
                clients: 100,
                modulus_bits: 32,
                ..
            })
        ),
        "{res:?}"
    );
    // 100 clients in 31 bits of magnitude: about 2^24.4 per client.
    assert!(cfg.scale > 2f64.powi(24) && cfg.scale < 2f64.powi(25));
}

#[test]
fn bad_input_is_an_error() {
    let codec = Codec::new(CodecConfig::for_clients(3, 1.0, 16).unwrap(), 4).unwrap();
    // The codec is not a client: vector errors name none (u32::MAX).
    let bad_vector = |res: Result<Vec<f64>>| {
        assert!(
            matches!(
                res,
                Err(Error::BadVector {
                    client: u32::MAX,
                    ..
                })
            ),
            "{res:?}"
        );
    };
    let res = codec.encode(&[1.0; 3], &mut rng(1));
    assert!(
        matches!(
            &res,
            Err(Error::BadVector { client: u32::MAX, reason })
                if reason == "3 coordinates, the codec expects 4"
        ),
        "{res:?}"
    );
    let res = codec.encode(&[1.0, f32::NAN, 0.0, 0.0], &mut rng(1));
    assert!(
        matches!(
            res,
            Err(Error::Privacy(privacy::Error::NonFiniteInput {
                index: 1,
                ..
            }))
        ),
        "{res:?}"
    );
    bad_vector(codec.decode_sum(&[0; 3], 3));
    bad_vector(codec.decode_sum(&[0; 4], 5));
}

#[test]
fn noise_share_has_the_right_variance() {
    let dim = 1 << 14;
    let noise = NoiseShare {
        noise_multiplier: 1.0,
        min_surviving_clients: 10,
    };
    let cfg = CodecConfig::for_clients(20, 1.0, 24)
        .unwrap()
        .with_noise(noise)
        .fit_scale(dim)
        .unwrap();
    let codec = Codec::new(cfg.clone(), dim).unwrap();
    let var = codec.noise_variance().unwrap();
    let expected = (cfg.scale + (dim as f64).sqrt() / 2.0).powi(2) / 10.0;
    assert!((var / expected - 1.0).abs() < 1e-6, "{var} {expected}");
    let enc = codec.encode(&vec![0.0; dim], &mut rng(11)).unwrap();
    let half = 1_i64 << 23;
    let vals: Vec<f64> = enc
        .iter()
        .map(|&v| {
            let v = i64::from(v);
            (if v >= half { v - 2 * half } else { v }) as f64
        })
        .collect();
    let mean = vals.iter().sum::<f64>() / dim as f64;
    let sample_var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / dim as f64;
    // Standard error of a variance estimate: var sqrt(2/N) ~ 1.1%; allow 5 of them.
    assert!(
        (sample_var / var - 1.0).abs() < 0.055,
        "{sample_var} vs {var}"
    );
    assert!(mean.abs() < 5.0 * (var / dim as f64).sqrt(), "{mean}");
    // The noise takes room: the noisy config has a smaller scale than the noiseless one.
    assert!(cfg.scale < CodecConfig::for_clients(20, 1.0, 24).unwrap().scale);
}

#[test]
fn with_scale_picks_the_fewest_bits() {
    // 100 clients x (2^10 + 1) < 2^17: 18 bits with the sign.
    let cfg = CodecConfig::with_scale(100, 1.0, 1024.0).unwrap();
    assert_eq!(cfg.modulus_bits, 18);
    let res = Codec::new(
        CodecConfig {
            modulus_bits: 17,
            ..cfg.clone()
        },
        1,
    )
    .map(drop);
    assert!(
        matches!(
            res,
            Err(Error::WouldWrap {
                clients: 100,
                needed_bits: 18,
                modulus_bits: 17,
                ..
            })
        ),
        "{res:?}"
    );
    // 2^25 per client x 100 clients needs 33 bits: refused with the numbers.
    let e = CodecConfig::with_scale(100, 1.0, (1u64 << 25) as f64).unwrap_err();
    assert!(
        matches!(
            e,
            Error::WouldWrap {
                clients: 100,
                needed_bits: 33,
                modulus_bits: 32,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("33 bits"), "{e}");
}

/// The scalar definition of unbiased randomized rounding that `round_scaled` vectorises.
fn round_reference(out: &mut [u32], values: &[f64], uniform: &[u8]) {
    for ((o, &v), u) in out.iter_mut().zip(values).zip(uniform.chunks_exact(4)) {
        let u = f64::from(u32::from_le_bytes(u.try_into().unwrap())) / 4_294_967_296.0;
        let floor = v.floor();
        let q = floor as i64 + i64::from(u < v - floor);
        *o = q as u32;
    }
}

#[test]
fn vectorised_rounding_equals_the_scalar_definition() {
    let mut r = rng(11);
    let n = 20_000;
    let mut values: Vec<f64> = (0..n)
        .map(|i| {
            let x = (r.next_u64() as f64 / u64::MAX as f64 - 0.5) * 2.0;
            // Magnitudes from tiny to near 2^31, integers and half-integers included.
            match i % 5 {
                0 => x * 2_147_483_000.0,
                1 => x * 1000.0,
                2 => x * 1e-6,
                3 => (x * 1000.0).round(),
                _ => (x * 1000.0).round() + 0.5,
            }
        })
        .collect();
    values.extend([
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.5,
        -0.5,
        2_147_483_000.5,
        -2_147_483_000.5,
    ]);
    let mut uniform = vec![0_u8; 4 * values.len()];
    r.fill_bytes(&mut uniform);
    // Extreme uniforms too: all zeros and all ones.
    uniform[..8].fill(0);
    uniform[8..16].fill(0xff);
    let mut want = vec![0_u32; values.len()];
    round_reference(&mut want, &values, &uniform);
    let mut got = vec![0_u32; values.len()];
    round_scaled(&mut got, &values, 1.0, &uniform);
    assert_eq!(got, want);
    // f32 input scaled, as the codec calls it.
    let xs: Vec<f32> = values.iter().map(|&v| (v * 1e-9) as f32).collect();
    let scaled: Vec<f64> = xs.iter().map(|&x| f64::from(x) * 1e9).collect();
    round_reference(&mut want, &scaled, &uniform);
    round_scaled(&mut got, &xs, 1e9, &uniform);
    assert_eq!(got, want);
}

#[test]
fn rounding_is_unbiased() {
    // 0.3 rounds up with probability 0.3; -2.75 to -2 with probability 0.25.
    let mut r = rng(12);
    for (v, up) in [(0.3_f64, 0.3), (-2.75, 0.25)] {
        let n = 200_000;
        let values = vec![v; n];
        let mut uniform = vec![0_u8; 4 * n];
        r.fill_bytes(&mut uniform);
        let mut out = vec![0_u32; n];
        round_scaled(&mut out, &values, 1.0, &uniform);
        let ups = out
            .iter()
            .filter(|&&q| q as i32 as f64 == v.floor() + 1.0)
            .count();
        assert!(
            out.iter()
                .all(|&q| q as i32 as f64 == v.floor() || q as i32 as f64 == v.floor() + 1.0)
        );
        let freq = ups as f64 / n as f64;
        assert!((freq - up).abs() < 0.005, "{v}: {freq}");
    }
}

#[test]
fn l2_norm_matches_the_privacy_crate() {
    for dim in [0, 1, 7, 8, 9, 1000, 4099] {
        let x = sample(dim.max(1), dim as u64, 3.0);
        let x = &x[..dim];
        let a = l2_norm(x);
        let b = privacy::clip::l2_norm(x);
        assert!((a - b).abs() <= 1e-12 * b.max(1e-300), "{dim}: {a} {b}");
    }
}
