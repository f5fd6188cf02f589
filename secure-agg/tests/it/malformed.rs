//! Every message type: valid encodings round-trip; truncated, extended, or random bytes are
//! errors, never panics.

use proptest::prelude::*;
use secure_agg::{
    Error, InboundShares, KeyDirectory, Limits, MaskedInputHeader, PrgKind, SecAggParams,
    SharePackets, SignedAdvertisement, UnmaskRequest, UnmaskResponse, unpack_values,
};

use crate::common::Manual;

type Decoder = fn(&[u8], &Limits) -> Result<(), Error>;

/// Every message type's decoder, with the name its `Malformed` errors carry.
fn decoders() -> Vec<(&'static str, &'static str, Decoder)> {
    vec![
        ("advertisement", "key advertisement", |b, l| {
            SignedAdvertisement::from_bytes(b, l).map(drop)
        }),
        ("directory", "key directory", |b, l| {
            KeyDirectory::from_bytes(b, l).map(drop)
        }),
        ("share packets", "share packets", |b, l| {
            SharePackets::from_bytes(b, l).map(drop)
        }),
        ("inbound", "inbound shares", |b, l| {
            InboundShares::from_bytes(b, l).map(drop)
        }),
        ("header", "masked input header", |b, l| {
            MaskedInputHeader::from_bytes(b, l).map(drop)
        }),
        ("request", "unmask request", |b, l| {
            UnmaskRequest::from_bytes(b, l).map(drop)
        }),
        ("response", "unmask response", |b, l| {
            UnmaskResponse::from_bytes(b, l).map(drop)
        }),
    ]
}

/// Asserts that `res` is a `Malformed` error of the message `name` whose reason contains `why`.
#[track_caller]
fn assert_malformed<T: std::fmt::Debug>(res: Result<T, Error>, name: &str, why: &str) {
    assert!(
        matches!(&res, Err(Error::Malformed { message, reason })
            if *message == name && reason.contains(why)),
        "expected a malformed {name} ({why}), got {res:?}"
    );
}

/// One valid encoding of every message type, from a real round (made once).
fn samples() -> Vec<(&'static str, Vec<u8>)> {
    static SAMPLES: std::sync::OnceLock<Vec<(&'static str, Vec<u8>)>> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(make_samples).clone()
}

fn make_samples() -> Vec<(&'static str, Vec<u8>)> {
    let p = SecAggParams {
        modulus_bits: 12,
        vector_len: 5,
        degree: 4,
        threshold: 3,
        prg: PrgKind::ChaCha8,
    };
    let mut m = Manual::new(5, p, 1);
    let ad = {
        let c = m.clients.get_mut(&0).unwrap();
        c.advertise(m.signers[&0].as_ref()).unwrap().to_bytes()
    };
    let mut m = Manual::new(5, p, 2);
    m.advertise();
    let dir = m.directory.clone().unwrap();
    let packets = {
        let c = m.clients.get_mut(&0).unwrap();
        c.handle_key_directory(dir.clone(), &m.registry, m.signers[&0].as_ref())
            .unwrap()
            .to_bytes()
    };
    let mut m = Manual::new(5, p, 3);
    m.advertise();
    m.share_keys();
    let inbound = m.inbound[&0].to_bytes();
    let mut x = vec![1_u32; 5];
    let header = {
        let c = m.clients.get_mut(&0).unwrap();
        c.handle_shares(m.inbound[&0].clone(), &mut x, m.signers[&0].as_ref())
            .unwrap()
            .to_bytes()
    };
    let mut m = Manual::new(5, p, 4);
    m.advertise();
    m.share_keys();
    m.masked_input();
    let request = m.requests[&0].to_bytes();
    let response = {
        let c = m.clients.get_mut(&0).unwrap();
        c.handle_unmask_request(m.requests[&0].clone(), m.signers[&0].as_ref())
            .unwrap()
            .to_bytes()
    };
    vec![
        ("advertisement", ad),
        ("directory", dir.to_bytes()),
        ("share packets", packets),
        ("inbound", inbound),
        ("header", header),
        ("request", request),
        ("response", response),
    ]
}

#[test]
fn valid_encodings_round_trip_and_damaged_ones_fail() {
    let l = Limits::default();
    let decoders = decoders();
    for ((name, bytes), (dname, message, decode)) in samples().into_iter().zip(&decoders) {
        assert_eq!(name, *dname);
        let res = decode(&bytes, &l);
        assert!(res.is_ok(), "{name} does not decode: {res:?}");
        for cut in 0..bytes.len() {
            // Cut anywhere, some read runs out of bytes (or a count no longer fits them).
            let res = decode(&bytes[..cut], &l);
            assert!(
                matches!(&res, Err(Error::Malformed { message: m, reason })
                    if m == message
                        && (reason.starts_with("truncated") || reason.starts_with("count "))),
                "{name} truncated to {cut}: {res:?}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_malformed(decode(&longer, &l), message, "1 trailing bytes");
        // Every other decoder refuses it (tags differ).
        for (other, other_message, d) in &decoders {
            if other != dname {
                assert_malformed(d(&bytes, &l), other_message, "expected 0x");
            }
        }
    }
    // Re-encoding is canonical.
    let dir = &samples()[1].1;
    assert_eq!(&KeyDirectory::from_bytes(dir, &l).unwrap().to_bytes(), dir);
}

#[test]
fn limits_are_enforced_before_allocation() {
    let tight = Limits {
        max_clients: 2,
        max_signature_len: 8,
        max_vector_len: 10,
    };
    let s = samples();
    // Five entries where at most two are allowed; a 64-byte signature where 8 are.
    assert_malformed(
        KeyDirectory::from_bytes(&s[1].1, &tight),
        "key directory",
        "count 5 over the limit 2",
    );
    assert_malformed(
        SignedAdvertisement::from_bytes(&s[0].1, &tight),
        "key advertisement",
        "limit 8",
    );
    // A count of 2^32 - 1 with no bytes behind it.
    let mut huge = vec![0x02];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_malformed(
        KeyDirectory::from_bytes(&huge, &Limits::default()),
        "key directory",
        &format!("count {}", u32::MAX),
    );
    let mut req = vec![0x06];
    req.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_malformed(
        UnmaskRequest::from_bytes(&req, &Limits::default()),
        "unmask request",
        &format!("count {}", u32::MAX),
    );
    // Unsorted ids.
    let bad = UnmaskRequest {
        survivors: vec![3, 1],
        dropped: vec![],
    }
    .to_bytes();
    assert_malformed(
        UnmaskRequest::from_bytes(&bad, &Limits::default()),
        "unmask request",
        "survivors not in strictly increasing order at 1",
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), tag in 0_u8..9) {
        let mut b = bytes;
        if !b.is_empty() {
            b[0] = tag;
        }
        let l = Limits::default();
        for (_, _, d) in decoders() {
            let _ = d(&b, &l);
        }
        let _ = unpack_values(&b, (u32::from(tag) % 32) + 1, b.len());
    }

    #[test]
    fn flipped_bytes_never_panic(index in any::<prop::sample::Index>(), xor in 1_u8..=255) {
        let l = Limits::default();
        for ((_, bytes), (_, _, d)) in samples().into_iter().zip(decoders()) {
            let mut b = bytes;
            let i = index.index(b.len());
            b[i] ^= xor;
            let _ = d(&b, &l);
        }
    }
}
