//! Whole rounds with random sizes, parameters and dropouts: the unmasked sum is exact, or
//! (beyond the tolerated dropouts) the round aborts and the server could rebuild nobody's two
//! secrets.

use std::collections::BTreeMap;

use proptest::prelude::*;
use secure_agg::sim::{Sim, SimStage};
use secure_agg::{Error, GraphParams, PrgKind, SecAggParams};

use crate::common::{BINDING, identities, mac_identities, rng};

const STAGES: [SimStage; 4] = [
    SimStage::Advertise,
    SimStage::ShareKeys,
    SimStage::MaskedInput,
    SimStage::Unmask,
];

#[derive(Debug, Clone)]
struct Case {
    n: u32,
    dim: usize,
    bits: u32,
    degree: usize,
    /// Threshold as a fraction of the way from the minimum (m/2 + 1) to m.
    t_frac: f64,
    prg: PrgKind,
    /// (client, stage) drops.
    drops: Vec<(u32, usize)>,
    seed: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        3_u32..60,
        1_usize..64,
        1_u32..=32,
        1_usize..30,
        0.0..1.0_f64,
        0_u8..4,
        any::<u64>(),
    )
        .prop_flat_map(|(n, dim, bits, degree, t_frac, prg, seed)| {
            let drops = proptest::collection::vec((0..n, 0_usize..4), 0..(n as usize / 2 + 2));
            drops.prop_map(move |drops| Case {
                n,
                dim,
                bits,
                degree: degree.min(n as usize - 1),
                t_frac,
                prg: PrgKind::from_code(prg).unwrap(),
                drops,
                seed,
            })
        })
}

fn run_case(c: &Case) -> Result<(), TestCaseError> {
    let ids: Vec<u32> = (0..c.n).collect();
    let (signers, registry) = mac_identities(&ids);
    // Shares per client as planned (before any drop).
    let nominal = 2 * c.degree.div_ceil(2) + 1;
    let m = nominal.min(c.n as usize);
    let min_t = nominal / 2 + 1;
    prop_assume!(min_t <= m);
    let t = min_t + ((m - min_t) as f64 * c.t_frac) as usize;
    let params = SecAggParams {
        modulus_bits: c.bits,
        vector_len: c.dim,
        degree: c.degree,
        threshold: t,
        prg: c.prg,
    };
    prop_assume!(params.validate().is_ok());
    let mask = if c.bits == 32 {
        u32::MAX
    } else {
        (1 << c.bits) - 1
    };
    let mut r = rng(c.seed);
    let inputs: BTreeMap<u32, Vec<u32>> = ids
        .iter()
        .map(|&i| {
            let v = (0..c.dim)
                .map(|j| (i.wrapping_mul(2_654_435_761) ^ (j as u32 * 40_503)) & mask)
                .collect();
            (i, v)
        })
        .collect();
    let mut sim = Sim::new(BINDING, params, &signers, &registry, &mut r).unwrap();
    let mut dropped_at: BTreeMap<u32, SimStage> = BTreeMap::new();
    for &(i, s) in &c.drops {
        let stage = STAGES[s];
        let e = dropped_at.entry(i).or_insert(stage);
        *e = (*e).min(stage);
    }
    for (&i, &s) in &dropped_at {
        sim.drop_at(i, s);
    }
    let u1 = c.n as usize
        - dropped_at
            .values()
            .filter(|&&s| s == SimStage::Advertise)
            .count();
    let shares_after_u1 = params.shares_per_client(u1);
    let later_drops = dropped_at
        .values()
        .filter(|&&s| s > SimStage::Advertise)
        .count();
    let tolerated = shares_after_u1 >= t && later_drops <= shares_after_u1 - t;
    let result = sim.run(&inputs);
    // Whatever happened, nobody's two secrets were both revealed to the threshold.
    let mut b_count: BTreeMap<u32, usize> = BTreeMap::new();
    let mut s_count: BTreeMap<u32, usize> = BTreeMap::new();
    for client in sim.clients().values() {
        for (&j, what) in client.revealed() {
            match what {
                secure_agg::Revealed::SelfMaskShare => *b_count.entry(j).or_default() += 1,
                secure_agg::Revealed::KeyShare => *s_count.entry(j).or_default() += 1,
            }
        }
    }
    for (j, b) in &b_count {
        let s = s_count.get(j).copied().unwrap_or(0);
        prop_assert!(
            !(*b >= t && s >= t),
            "both secrets of {j} revealed: {b} and {s}"
        );
    }
    match result {
        Ok(out) => {
            let expected_survivors: Vec<u32> = ids
                .iter()
                .copied()
                .filter(|i| dropped_at.get(i).is_none_or(|&s| s > SimStage::MaskedInput))
                .collect();
            // Within the tolerated dropouts every client that sent its input is in the sum;
            // beyond, a client whose neighbours all left may refuse to mask (and so drops).
            if tolerated {
                prop_assert_eq!(&out.survivors, &expected_survivors);
            } else {
                prop_assert!(out.survivors.iter().all(|i| expected_survivors.contains(i)));
            }
            let mut plain = vec![0_u32; c.dim];
            for i in &out.survivors {
                for (p, v) in plain.iter_mut().zip(&inputs[i]) {
                    *p = p.wrapping_add(*v);
                }
            }
            for p in &mut plain {
                *p &= mask;
            }
            prop_assert_eq!(out.sum, plain);
        }
        Err(e) => {
            prop_assert!(!tolerated, "aborted within the tolerated dropouts: {e}");
            prop_assert!(
                matches!(e, Error::TooFew { .. } | Error::TooFewShares { .. }),
                "{e}"
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn unmasked_sum_is_exact_or_round_aborts(c in case()) {
        run_case(&c)?;
    }
}

#[test]
fn no_dropout_and_every_stage_of_dropout() {
    for stage in STAGES {
        let c = Case {
            n: 30,
            dim: 100,
            bits: 20,
            degree: 10,
            t_frac: 0.0,
            prg: PrgKind::ChaCha20,
            drops: vec![(3, stage as usize), (17, stage as usize)],
            seed: 1,
        };
        run_case(&c).unwrap();
    }
}

#[test]
fn chosen_parameters_run_with_their_dropout_rate() {
    let n = 40;
    let p = GraphParams::choose(n, 0.1, 0.05).unwrap();
    let c = Case {
        n: n as u32,
        dim: 33,
        bits: 32,
        degree: p.degree,
        t_frac: 0.0,
        prg: PrgKind::Aes256Ctr,
        drops: vec![(0, 1), (1, 2), (2, 2), (3, 3)],
        seed: 2,
    };
    run_case(&c).unwrap();
}

#[test]
fn too_many_dropouts_abort_cleanly() {
    let ids: Vec<u32> = (0..10).collect();
    let (signers, registry) = identities(&ids);
    let params = SecAggParams {
        modulus_bits: 16,
        vector_len: 8,
        degree: 9,
        threshold: 7,
        prg: PrgKind::ChaCha20,
    };
    let inputs: BTreeMap<u32, Vec<u32>> = ids.iter().map(|&i| (i, vec![i; 8])).collect();
    // Four drop after sending masked inputs (before unmasking): only 6 responders < t = 7.
    let mut sim = Sim::new(BINDING, params, &signers, &registry, &mut rng(3)).unwrap();
    for i in 0..4 {
        sim.drop_at(i, SimStage::Unmask);
    }
    let e = sim.run(&inputs).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooFewShares {
                need: 7,
                have: 6,
                ..
            }
        ),
        "{e}"
    );
    // Four drop before masked input: clients see 6 survivors < 7 and refuse to answer.
    let mut sim = Sim::new(BINDING, params, &signers, &registry, &mut rng(4)).unwrap();
    for i in 0..4 {
        sim.drop_at(i, SimStage::MaskedInput);
    }
    let e = sim.run(&inputs).unwrap_err();
    assert!(matches!(e, Error::TooFew { .. }), "{e}");
    for c in sim.clients().values() {
        assert!(c.revealed().is_empty());
    }
}

#[test]
fn fused_encoding_equals_encode_then_mask() {
    use crate::common::Manual;
    use secure_agg::{Codec, CodecConfig};
    let codec = Codec::new(CodecConfig::for_clients(4, 1.0, 20).unwrap(), 5000).unwrap();
    let params = SecAggParams {
        modulus_bits: 20,
        vector_len: 5001,
        degree: 3,
        threshold: 3,
        prg: PrgKind::ChaCha20,
    };
    let update: Vec<f32> = (0..5000).map(|i| (i as f32 - 2500.0) * 1e-5).collect();
    let mut a = Manual::new(4, params, 40);
    a.advertise();
    a.share_keys();
    let mut b = Manual::new(4, params, 40);
    b.advertise();
    b.share_keys();
    let mut x = codec.encode(&update, &mut rng(1)).unwrap();
    x.push(7);
    let ha = a
        .clients
        .get_mut(&0)
        .unwrap()
        .handle_shares(a.inbound[&0].clone(), &mut x, a.signers[&0].as_ref())
        .unwrap();
    let cb = b.clients.get_mut(&0).unwrap();
    // A codec that does not fit the round is refused.
    let wrong = Codec::new(CodecConfig::for_clients(4, 1.0, 20).unwrap(), 10).unwrap();
    let mut other = Manual::new(4, params, 40);
    other.advertise();
    other.share_keys();
    assert!(matches!(
        other.clients.get_mut(&0).unwrap().handle_shares_encoding(
            other.inbound[&0].clone(),
            &wrong,
            &update[..10],
            &[7],
            &mut rng(1),
            other.signers[&0].as_ref()
        ),
        Err(Error::BadVector { .. })
    ));
    let (y, hb) = cb
        .handle_shares_encoding(
            b.inbound[&0].clone(),
            &codec,
            &update,
            &[7],
            &mut rng(1),
            b.signers[&0].as_ref(),
        )
        .unwrap();
    assert_eq!(x, y);
    assert_eq!(ha, hb);
}

#[test]
fn masks_can_be_removed_range_by_range_on_threads() {
    use crate::common::Manual;
    let params = SecAggParams {
        modulus_bits: 24,
        vector_len: 10_001,
        degree: 4,
        threshold: 3,
        prg: PrgKind::Aes256Ctr,
    };
    let run = |split: bool| {
        let mut m = Manual::new(7, params, 50);
        m.advertise();
        m.share_keys();
        m.masked_input();
        for (&i, req) in &m.requests {
            let c = m.clients.get_mut(&i).unwrap();
            let r = c
                .handle_unmask_request(req.clone(), m.signers[&i].as_ref())
                .unwrap();
            m.server.handle_unmask_response(i, r, &m.registry).unwrap();
        }
        let plain = m.inputs.values().fold(vec![0_u32; 10_001], |mut acc, x| {
            for (a, v) in acc.iter_mut().zip(x) {
                *a = a.wrapping_add(*v) & 0xff_ffff;
            }
            acc
        });
        let server = std::mem::replace(
            &mut m.server,
            secure_agg::ServerRound::new(BINDING, params, &[]).unwrap(),
        );
        let sum = if split {
            let mut p = server.finish_split().unwrap();
            let unmasker = &p.unmasker;
            std::thread::scope(|s| {
                for (k, chunk) in p.masked_sum.chunks_mut(3001).enumerate() {
                    s.spawn(move || unmasker.remove_masks(k * 3001, chunk));
                }
            });
            p.masked_sum
        } else {
            server.finish().unwrap().sum
        };
        assert_eq!(sum, plain);
        sum
    };
    assert_eq!(run(true), run(false));
}
