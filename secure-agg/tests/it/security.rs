//! What a malicious server, a forger or a replayer gets: errors, never secrets.

use secure_agg::{
    ClientRound, Error, GraphParams, MessageSigner, PrgKind, Revealed, RoundBinding, SecAggParams,
    ServerRound, UnmaskRequest,
};

use crate::common::{BINDING, EcdsaSigner, Manual, identities, rng, signing_key};

fn params(n: usize, len: usize) -> SecAggParams {
    SecAggParams {
        modulus_bits: 16,
        vector_len: len,
        prg: PrgKind::ChaCha20,
        ..SecAggParams::new(16, len, GraphParams::choose(n, 0.2, 0.1).unwrap())
    }
}

#[test]
fn a_client_never_reveals_both_shares_of_a_peer() {
    let mut m = Manual::new(8, params(8, 4), 1);
    m.advertise();
    m.share_keys();
    m.masked_input();
    let req = m.requests[&0].clone();
    let c = m.clients.get_mut(&0).unwrap();
    let signer = m.signers[&0].as_ref();
    let first = c.handle_unmask_request(req.clone(), signer).unwrap();
    assert_eq!(first.self_mask_shares.len(), req.survivors.len());
    let before = c.revealed().clone();
    // The same request again, and one that calls survivor 1 dropped: both refused.
    assert!(matches!(
        c.handle_unmask_request(req.clone(), signer),
        Err(Error::AlreadyAnswered)
    ));
    let flipped = UnmaskRequest {
        survivors: req.survivors.iter().copied().filter(|&j| j != 1).collect(),
        dropped: vec![1],
    };
    let res = c.handle_unmask_request(flipped, signer);
    assert!(matches!(res, Err(Error::AlreadyAnswered)), "{res:?}");
    assert_eq!(c.revealed(), &before);
    assert!(before.values().all(|r| *r == Revealed::SelfMaskShare));
}

#[test]
fn both_dropped_and_alive_gets_no_answer_ever() {
    let mut m = Manual::new(8, params(8, 4), 2);
    m.advertise();
    m.share_keys();
    m.masked_input();
    let mut req = m.requests[&0].clone();
    let other = *req.survivors.iter().find(|&&j| j != 0).unwrap();
    req.dropped.push(other);
    req.dropped.sort_unstable();
    let c = m.clients.get_mut(&0).unwrap();
    let signer = m.signers[&0].as_ref();
    assert!(matches!(
        c.handle_unmask_request(req, signer),
        Err(Error::InconsistentDropouts { client }) if client == other
    ));
    // Even the honest request is refused afterwards.
    let res = c.handle_unmask_request(m.requests[&0].clone(), signer);
    assert!(
        matches!(
            res,
            Err(Error::WrongStage {
                call: "handle_unmask_request",
                stage: "failed"
            })
        ),
        "{res:?}"
    );
    assert!(c.revealed().is_empty());
}

#[test]
fn unmask_requests_with_strangers_or_too_few_survivors_are_refused() {
    let mut m = Manual::new(8, params(8, 4), 3);
    m.advertise();
    m.share_keys();
    m.masked_input();
    let t = m.params.threshold;
    let signer = m.signers[&1].as_ref();
    let req = m.requests[&1].clone();
    let mut stranger = req.clone();
    stranger.dropped = vec![1000];
    let c = m.clients.get_mut(&1).unwrap();
    assert!(matches!(
        c.handle_unmask_request(stranger, signer),
        Err(Error::UnexpectedClient { client: 1000, .. })
    ));
    let c = m.clients.get_mut(&2).unwrap();
    let mut few = m.requests[&2].clone();
    let cut: Vec<u32> = few.survivors.iter().copied().filter(|&j| j != 2).collect();
    few.survivors = {
        let mut s: Vec<u32> = cut[..t.saturating_sub(2)].to_vec();
        s.push(2);
        s.sort_unstable();
        s
    };
    assert!(matches!(
        c.handle_unmask_request(few, m.signers[&2].as_ref()),
        Err(Error::TooFew { .. })
    ));
}

#[test]
fn a_masked_input_alone_looks_uniform() {
    let len = 1 << 16;
    let mut m = Manual::new(5, params(5, len), 4);
    m.advertise();
    m.share_keys();
    // Client 0 masks an all-zero vector.
    let mut masked = vec![0_u32; len];
    let c = m.clients.get_mut(&0).unwrap();
    c.handle_shares(m.inbound[&0].clone(), &mut masked, m.signers[&0].as_ref())
        .unwrap();
    // Chi-square over 256 bins of the top byte: 255 degrees of freedom, mean 255, sd 22.6.
    let mut bins = [0_f64; 256];
    for &v in &masked {
        bins[(v >> 8) as usize] += 1.0;
    }
    let expect = len as f64 / 256.0;
    let chi2: f64 = bins.iter().map(|b| (b - expect).powi(2) / expect).sum();
    assert!(chi2 < 255.0 + 6.0 * 22.6, "chi2 {chi2}");
    let mean = masked.iter().map(|&v| f64::from(v)).sum::<f64>() / len as f64;
    let sd = 65536.0 / 12f64.sqrt() / (len as f64).sqrt();
    assert!((mean - 32767.5).abs() < 6.0 * sd, "mean {mean}");
    // The plain vector, by contrast, is all in one bin.
    assert!(masked.iter().filter(|&&v| v == 0).count() < 10);
}

#[test]
fn forged_or_replayed_advertisements_are_rejected() {
    let p = params(4, 2);
    let ids = [0, 1, 2, 3];
    let (signers, registry) = identities(&ids);
    let mut server = ServerRound::new(BINDING, p, &ids).unwrap();
    let mut client = ClientRound::new(BINDING, p, 0, &ids, &mut rng(5)).unwrap();
    // Signed by a key that is not client 0's.
    let forger = EcdsaSigner(signing_key(0, 99));
    let forged = client.advertise(&forger).unwrap();
    assert!(matches!(
        server.handle_advertisement(0, forged.clone(), &registry),
        Err(Error::BadSignature { client: 0, .. })
    ));
    // Client 1's real advertisement claimed by client 2.
    let mut c1 = ClientRound::new(BINDING, p, 1, &ids, &mut rng(6)).unwrap();
    let ad1 = c1.advertise(signers[&1].as_ref()).unwrap();
    let res = server.handle_advertisement(2, ad1.clone(), &registry);
    assert!(
        matches!(res, Err(Error::UnexpectedClient { client: 1, .. })),
        "{res:?}"
    );
    let mut relabelled = ad1.clone();
    relabelled.client = 2;
    let res = server.handle_advertisement(2, relabelled, &registry);
    assert!(
        matches!(res, Err(Error::BadSignature { client: 2, .. })),
        "{res:?}"
    );
    // Made for another round or another session.
    for other in [
        RoundBinding {
            round: BINDING.round + 1,
            ..BINDING
        },
        RoundBinding {
            session: [1; 32],
            ..BINDING
        },
    ] {
        let mut c = ClientRound::new(other, p, 3, &ids, &mut rng(7)).unwrap();
        let replay = c.advertise(signers[&3].as_ref()).unwrap();
        assert!(matches!(
            server.handle_advertisement(3, replay, &registry),
            Err(Error::BadSignature { client: 3, .. })
        ));
    }
    // The real one is accepted once.
    server
        .handle_advertisement(1, ad1.clone(), &registry)
        .unwrap();
    assert!(matches!(
        server.handle_advertisement(1, ad1, &registry),
        Err(Error::Duplicate { client: 1, .. })
    ));
}

#[test]
fn a_client_rejects_a_directory_with_a_forged_or_swapped_key() {
    let mut m = Manual::new(6, params(6, 2), 8);
    m.advertise();
    let mut dir = m.directory.clone().unwrap();
    // The server swaps in its own masking key for client 3 (signature no longer matches).
    dir.entries[3].mask_key = [9; 32];
    let c = m.clients.get_mut(&0).unwrap();
    assert!(matches!(
        c.handle_key_directory(dir, &m.registry, m.signers[&0].as_ref()),
        Err(Error::BadSignature { client: 3, .. })
    ));
    // Another client: a directory that drops its own entry.
    let mut dir = m.directory.clone().unwrap();
    dir.entries.retain(|e| e.client != 1);
    let c = m.clients.get_mut(&1).unwrap();
    let res = c.handle_key_directory(dir, &m.registry, m.signers[&1].as_ref());
    assert!(
        matches!(res, Err(Error::UnexpectedClient { client: 1, .. })),
        "{res:?}"
    );
    // Duplicate entries.
    let mut dir = m.directory.clone().unwrap();
    let e = dir.entries[2].clone();
    dir.entries.insert(2, e);
    let c = m.clients.get_mut(&2).unwrap();
    assert!(matches!(
        c.handle_key_directory(dir, &m.registry, m.signers[&2].as_ref()),
        Err(Error::Duplicate { client: 2, .. })
    ));
}

#[test]
fn forged_replayed_or_mismatched_masked_inputs_are_rejected() {
    let mut m = Manual::new(5, params(5, 16), 9);
    m.advertise();
    m.share_keys();
    let mut masked = vec![1_u32; 16];
    let c = m.clients.get_mut(&0).unwrap();
    let header = c
        .handle_shares(m.inbound[&0].clone(), &mut masked, m.signers[&0].as_ref())
        .unwrap();
    // The real key's signature over something else.
    let mut replay = header.clone();
    replay.signature = EcdsaSigner(signing_key(0, 0)).sign(b"another payload");
    assert!(matches!(
        m.server
            .handle_masked_input(0, replay, &masked, &m.registry),
        Err(Error::BadSignature { client: 0, .. })
    ));
    // A tampered vector no longer matches its signed digest.
    let mut tampered = masked.clone();
    tampered[3] ^= 1;
    assert!(matches!(
        m.server
            .handle_masked_input(0, header.clone(), &tampered, &m.registry),
        Err(Error::BadVector { client: 0, .. })
    ));
    // Values at or above 2^k, wrong lengths.
    let mut big = masked.clone();
    big[0] = 1 << 16;
    let res = m
        .server
        .handle_masked_input(0, header.clone(), &big, &m.registry);
    assert!(
        matches!(res, Err(Error::BadVector { client: 0, .. })),
        "{res:?}"
    );
    let res = m
        .server
        .handle_masked_input(0, header.clone(), &masked[1..], &m.registry);
    assert!(
        matches!(res, Err(Error::BadVector { client: 0, .. })),
        "{res:?}"
    );
    // Claimed by someone else.
    let res = m
        .server
        .handle_masked_input(1, header.clone(), &masked, &m.registry);
    assert!(
        matches!(res, Err(Error::UnexpectedClient { client: 0, .. })),
        "{res:?}"
    );
    // The real one, once.
    m.server
        .handle_masked_input(0, header.clone(), &masked, &m.registry)
        .unwrap();
    assert!(matches!(
        m.server
            .handle_masked_input(0, header, &masked, &m.registry),
        Err(Error::Duplicate { client: 0, .. })
    ));
}

#[test]
fn a_masked_input_header_from_another_round_is_rejected() {
    // Two rounds with the same clients and keys' identities; a header from round 8 fed to
    // round 7's server fails its signature.
    let p = params(4, 4);
    let other = RoundBinding {
        round: BINDING.round + 1,
        ..BINDING
    };
    let mut m7 = Manual::new(4, p, 10);
    m7.advertise();
    m7.share_keys();
    let ids = [0, 1, 2, 3];
    let (signers, registry) = identities(&ids);
    let mut clients: Vec<ClientRound> = ids
        .iter()
        .map(|&i| ClientRound::new(other, p, i, &ids, &mut rng(20 + u64::from(i))).unwrap())
        .collect();
    let mut server8 = ServerRound::new(other, p, &ids).unwrap();
    for c in &mut clients {
        let ad = c.advertise(signers[&c.me()].as_ref()).unwrap();
        server8.handle_advertisement(c.me(), ad, &registry).unwrap();
    }
    let dir = server8.close_advertise().unwrap();
    for c in &mut clients {
        let pk = c
            .handle_key_directory(dir.clone(), &registry, signers[&c.me()].as_ref())
            .unwrap();
        server8.handle_share_packets(c.me(), pk, &registry).unwrap();
    }
    let inbound = server8.close_share_keys().unwrap();
    let mut masked = vec![0_u32; 4];
    let header8 = clients[0]
        .handle_shares(inbound[0].1.clone(), &mut masked, signers[&0].as_ref())
        .unwrap();
    assert!(matches!(
        m7.server
            .handle_masked_input(0, header8, &masked, &m7.registry),
        Err(Error::BadSignature { client: 0, .. })
    ));
    // And round 8's key directory is refused by a round-7 client.
    let mut c7 = ClientRound::new(BINDING, p, 0, &ids, &mut rng(30)).unwrap();
    c7.advertise(signers[&0].as_ref()).unwrap();
    let res = c7.handle_key_directory(dir, &registry, signers[&0].as_ref());
    assert!(
        matches!(res, Err(Error::BadSignature { client: 0, .. })),
        "{res:?}"
    );
}

#[test]
fn tampered_share_ciphertexts_are_rejected() {
    let mut m = Manual::new(5, params(5, 4), 11);
    m.advertise();
    m.share_keys();
    let mut inbound = m.inbound[&0].clone();
    inbound.packets[0].ciphertext[10] ^= 0x40;
    let from = inbound.packets[0].from;
    let c = m.clients.get_mut(&0).unwrap();
    let mut x = vec![0_u32; 4];
    assert!(matches!(
        c.handle_shares(inbound, &mut x, m.signers[&0].as_ref()),
        Err(Error::Decrypt { from: f }) if f == from
    ));
    // A packet relabelled as coming from another neighbour fails too (AAD and key).
    let mut inbound = m.inbound[&1].clone();
    if inbound.packets.len() >= 2 {
        let ct = inbound.packets[0].ciphertext.clone();
        inbound.packets[1].ciphertext = ct;
        let from = inbound.packets[1].from;
        let c = m.clients.get_mut(&1).unwrap();
        let res = c.handle_shares(inbound, &mut x, m.signers[&1].as_ref());
        assert!(
            matches!(res, Err(Error::Decrypt { from: f }) if f == from),
            "{res:?}"
        );
    }
}

#[test]
fn an_inconsistent_server_cannot_collect_both_secrets() {
    // The server tells half of client 0's neighbours that 0 dropped and the others that it
    // survived. With 2t > m, neither half reaches the threshold for both secrets.
    let n = 9;
    let p = SecAggParams {
        modulus_bits: 16,
        vector_len: 4,
        degree: 8,
        threshold: 5,
        prg: PrgKind::ChaCha20,
    };
    let mut m = Manual::new(n, p, 12);
    m.advertise();
    m.share_keys();
    m.masked_input();
    let mut b = 0;
    let mut s = 0;
    for i in 1..n {
        let mut req = m.requests[&i].clone();
        if i % 2 == 0 {
            req.survivors.retain(|&j| j != 0);
            req.dropped.push(0);
            req.dropped.sort_unstable();
        }
        let c = m.clients.get_mut(&i).unwrap();
        if let Ok(r) = c.handle_unmask_request(req, m.signers[&i].as_ref()) {
            b += r.self_mask_shares.iter().filter(|(j, _)| *j == 0).count();
            s += r.key_shares.iter().filter(|(j, _)| *j == 0).count();
        }
    }
    // Client 0 itself answers with its own b-share only.
    let r0 = m
        .clients
        .get_mut(&0)
        .unwrap()
        .handle_unmask_request(m.requests[&0].clone(), m.signers[&0].as_ref())
        .unwrap();
    b += r0.self_mask_shares.iter().filter(|(j, _)| *j == 0).count();
    s += r0.key_shares.iter().filter(|(j, _)| *j == 0).count();
    assert!(b + s <= n as usize);
    assert!(!(b >= 5 && s >= 5), "b {b} s {s}");
}

#[test]
fn weak_thresholds_are_refused() {
    let p = SecAggParams {
        modulus_bits: 16,
        vector_len: 4,
        degree: 8,
        threshold: 4,
        prg: PrgKind::ChaCha20,
    };
    let e = p.validate().unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidParameter {
                name: "threshold",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("threshold"), "{e}");
    let res = ServerRound::new(BINDING, p, &[0, 1]);
    assert!(
        matches!(
            res,
            Err(Error::InvalidParameter {
                name: "threshold",
                ..
            })
        ),
        "{:?}",
        res.err()
    );
}

#[test]
fn a_share_altered_in_transit_is_refused() {
    // 6 clients, t = 4: every self-mask seed has 6 shares, so two subsets are compared.
    let p = SecAggParams {
        modulus_bits: 16,
        vector_len: 4,
        degree: 5,
        threshold: 4,
        prg: PrgKind::ChaCha20,
    };
    let mut m = Manual::new(6, p, 13);
    m.advertise();
    m.share_keys();
    m.masked_input();
    for i in 0..6 {
        let c = m.clients.get_mut(&i).unwrap();
        let mut r = c
            .handle_unmask_request(m.requests[&i].clone(), m.signers[&i].as_ref())
            .unwrap();
        if i == 5 {
            // The share of client 0's seed is altered in transit.
            let (_, share) = r
                .self_mask_shares
                .iter_mut()
                .find(|(j, _)| *j == 0)
                .unwrap();
            let mut bytes = share.to_bytes();
            bytes[0] ^= 1;
            *share = secure_agg::Share::from_bytes(&bytes).unwrap();
        }
        // The tampered response carries no valid signature: it is refused.
        let res = m.server.handle_unmask_response(i, r, &m.registry);
        if i == 5 {
            assert!(
                matches!(res, Err(Error::BadSignature { client: 5, .. })),
                "{res:?}"
            );
        } else {
            assert!(res.is_ok(), "{res:?}");
        }
    }
    // Without client 5's response the server still has 5 >= t shares of everyone.
    let out = m.server.finish().unwrap();
    assert_eq!(out.survivors.len(), 6);
}

#[test]
fn a_malicious_client_with_a_valid_signature_cannot_corrupt_the_sum_silently() {
    use secure_agg::{MessageSigner as _, UnmaskResponse};
    let p = SecAggParams {
        modulus_bits: 16,
        vector_len: 4,
        degree: 5,
        threshold: 4,
        prg: PrgKind::ChaCha20,
    };
    let mut m = Manual::new(6, p, 14);
    m.advertise();
    m.share_keys();
    m.masked_input();
    let mut responses = Vec::new();
    for i in 0..6 {
        let c = m.clients.get_mut(&i).unwrap();
        responses.push(
            c.handle_unmask_request(m.requests[&i].clone(), m.signers[&i].as_ref())
                .unwrap(),
        );
    }
    // Client 5 is malicious: it changes a share and signs the result with its own key.
    let mut bad: UnmaskResponse = responses[5].clone();
    let (_, share) = bad
        .self_mask_shares
        .iter_mut()
        .find(|(j, _)| *j == 0)
        .unwrap();
    let mut bytes = share.to_bytes();
    bytes[0] ^= 1;
    *share = secure_agg::Share::from_bytes(&bytes).unwrap();
    let payload = bad_payload(&bad);
    bad.signature = EcdsaSigner(signing_key(5, 0)).sign(&payload);
    responses[5] = bad;
    for (i, r) in responses.into_iter().enumerate() {
        m.server
            .handle_unmask_response(i as u32, r, &m.registry)
            .unwrap();
    }
    assert!(matches!(
        m.server.finish(),
        Err(Error::ReconstructionMismatch { client: 0 })
    ));
}

/// The signed payload of an unmask response (as documented in `messages`):
/// `"daofl/secagg/v1\0" || tag || session || round || body`.
fn bad_payload(r: &secure_agg::UnmaskResponse) -> Vec<u8> {
    let bytes = r.to_bytes();
    // body = encoding without the tag and the trailing signature (u16 length + bytes).
    let body = &bytes[1..bytes.len() - 2 - r.signature.len()];
    let mut p = b"daofl/secagg/v1\0".to_vec();
    p.push(bytes[0]);
    p.extend_from_slice(&BINDING.session);
    p.extend_from_slice(&BINDING.round.to_le_bytes());
    p.extend_from_slice(body);
    p
}
