//! Records: round trips, canonical bytes, and every way hostile bytes are refused.

use fl_core::{ContentHash, MemberKey};

use super::*;

fn key(n: u8) -> MemberKey {
    MemberKey::from_hex(&format!("{:064x}", u64::from(n) + 1)).unwrap()
}

fn proposal(contributor: &MemberKey) -> ProposalRecord {
    ProposalRecord {
        contributor: contributor.address(),
        community: "ethereum".into(),
        proposal_id: "EIP-1559".into(),
        title: "Fee market change for ETH 1.0 chain".into(),
        text: "## Simple Summary\nA transaction pricing mechanism with a \"base fee\".\n".into(),
        created: Some("2019-04-13".into()),
        licence: "CC0-1.0".into(),
        source: Some(Source {
            repo: "ethereum/EIPs".into(),
            commit: "f767a1e8".into(),
            path: "EIPS/eip-1559.md".into(),
        }),
    }
}

fn annotation(annotator: &MemberKey, item: ContentHash) -> AnnotationRecord {
    AnnotationRecord {
        annotator: annotator.address(),
        item,
        epoch: 7,
        labels: Labels {
            outcome: Outcome::Accepted,
            category: Category::Protocol,
            quality: ProposalQuality::new(4).unwrap(),
            risk: Risk::High,
        },
    }
}

fn signed_annotation() -> SignedRecord<AnnotationRecord> {
    let item = SignedRecord::sign(proposal(&key(1)), &key(1))
        .unwrap()
        .cid();
    SignedRecord::sign(annotation(&key(2), item), &key(2)).unwrap()
}

#[test]
fn proposal_round_trips_and_is_deterministic() {
    let k = key(1);
    let a = SignedRecord::sign(proposal(&k), &k).unwrap();
    let b = SignedRecord::sign(proposal(&k), &k).unwrap();
    // RFC 6979 signatures: the same body signs to the same bytes and the same address.
    assert_eq!(a.bytes(), b.bytes());
    assert_eq!(a.cid(), ContentHash::of(a.bytes()));
    assert!(a.cid().to_string().starts_with("bafkrei"));
    let back = SignedRecord::<ProposalRecord>::decode_addressed(&a.cid(), a.bytes()).unwrap();
    assert_eq!(back, a);
    assert_eq!(back.body().contributor, k.address());
}

#[test]
fn annotation_bytes_are_the_documented_envelope() {
    let a = signed_annotation();
    let text = std::str::from_utf8(a.bytes()).unwrap();
    assert!(text.starts_with(r#"{"schema":1,"kind":"annotation","body":{"annotator":"0x"#));
    assert!(text.contains(
        r#""labels":{"outcome":"accepted","category":"protocol","quality":4,"risk":"high"}"#
    ));
    assert!(a.bytes().len() < 512, "{}", a.bytes().len());
    let back = SignedRecord::<AnnotationRecord>::decode(a.bytes()).unwrap();
    assert_eq!(back.body().labels.class(Field::Quality), 3);
    assert_eq!(back.cid(), a.cid());
}

#[test]
fn signing_with_another_key_is_refused() {
    let err = SignedRecord::sign(proposal(&key(1)), &key(2)).unwrap_err();
    assert!(matches!(err, RecordError::BadSignature { .. }), "{err}");
}

#[test]
fn altered_body_fails_the_signature() {
    let a = signed_annotation();
    let text = std::str::from_utf8(a.bytes()).unwrap();
    let forged = text.replace(r#""outcome":"accepted""#, r#""outcome":"rejected""#);
    assert_ne!(forged, text);
    let err = SignedRecord::<AnnotationRecord>::decode(forged.as_bytes()).unwrap_err();
    assert!(matches!(err, RecordError::BadSignature { .. }), "{err}");
}

#[test]
fn signature_of_another_record_is_refused() {
    // Another annotator's valid signature pasted onto this body recovers to someone else.
    let a = signed_annotation();
    let other = SignedRecord::sign(annotation(&key(3), a.body().item), &key(3)).unwrap();
    let text = std::str::from_utf8(a.bytes())
        .unwrap()
        .replace(&a.signature().to_string(), &other.signature().to_string());
    let err = SignedRecord::<AnnotationRecord>::decode(text.as_bytes()).unwrap_err();
    assert!(matches!(err, RecordError::BadSignature { .. }), "{err}");
}

#[test]
fn malformed_signature_is_refused() {
    let a = signed_annotation();
    let sig = a.signature().to_string();
    let text = std::str::from_utf8(a.bytes())
        .unwrap()
        .replace(&sig, "0x1234");
    let err = SignedRecord::<AnnotationRecord>::decode(text.as_bytes()).unwrap_err();
    assert!(matches!(err, RecordError::Malformed(_)), "{err}");
}

#[test]
fn bytes_that_do_not_match_the_cid_are_refused() {
    let a = signed_annotation();
    let mut bytes = a.bytes().to_vec();
    bytes.push(b' ');
    let err = SignedRecord::<AnnotationRecord>::decode_addressed(&a.cid(), &bytes).unwrap_err();
    assert!(
        matches!(err, RecordError::CidMismatch { expected, .. } if expected == a.cid()),
        "{err}"
    );
    // Valid bytes of another record under this record's address: refused too.
    let other = SignedRecord::sign(proposal(&key(1)), &key(1)).unwrap();
    let err =
        SignedRecord::<AnnotationRecord>::decode_addressed(&a.cid(), other.bytes()).unwrap_err();
    assert!(matches!(err, RecordError::CidMismatch { .. }), "{err}");
}

#[test]
fn oversized_records_are_refused_before_parsing() {
    let huge = vec![b'{'; MAX_ANNOTATION_RECORD_BYTES + 1];
    let err = SignedRecord::<AnnotationRecord>::decode(&huge).unwrap_err();
    assert!(
        matches!(err, RecordError::TooLarge { kind: RecordKind::Annotation, len, .. } if len == huge.len()),
        "{err}"
    );
    let huge = vec![b' '; MAX_PROPOSAL_RECORD_BYTES + 1];
    let err = SignedRecord::<ProposalRecord>::decode(&huge).unwrap_err();
    assert!(matches!(err, RecordError::TooLarge { .. }), "{err}");
    // And a body over a field limit is not signed.
    let k = key(1);
    let mut p = proposal(&k);
    p.text = "x".repeat(proposal::MAX_TEXT_BYTES + 1);
    let err = SignedRecord::sign(p, &k).unwrap_err();
    assert!(
        matches!(err, RecordError::FieldTooLong { field: "text", .. }),
        "{err}"
    );
}

#[test]
fn malformed_records_are_refused() {
    let a = signed_annotation();
    let text = std::str::from_utf8(a.bytes()).unwrap();
    for bad in [
        "".to_string(),
        "not json".into(),
        "[1,2,3]".into(),
        r#"{"schema":1}"#.into(),
        text[..text.len() - 1].to_string(),
        // An unknown field in the body.
        text.replace(r#""epoch":7"#, r#""epoch":7,"bonus":1"#),
        // A label that is not one of the classes.
        text.replace(r#""risk":"high""#, r#""risk":"extreme""#),
        // An item that is not a CID.
        text.replace("bafkrei", "Qm"),
        // A nesting bomb.
        format!("{}{}", "[".repeat(1500), "]".repeat(1500)),
    ] {
        let err = SignedRecord::<AnnotationRecord>::decode(bad.as_bytes()).unwrap_err();
        assert!(matches!(err, RecordError::Malformed(_)), "{bad:.80}: {err}");
    }
}

#[test]
fn out_of_range_quality_is_a_field_error() {
    let a = signed_annotation();
    let text = std::str::from_utf8(a.bytes())
        .unwrap()
        .replace(r#""quality":4"#, r#""quality":9"#);
    let err = SignedRecord::<AnnotationRecord>::decode(text.as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::InvalidField {
                field: "labels.quality",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn wrong_schema_version_is_refused() {
    let a = signed_annotation();
    let text = std::str::from_utf8(a.bytes()).unwrap();
    let v2 = text.replace(r#"{"schema":1,"#, r#"{"schema":2,"#);
    let err = SignedRecord::<AnnotationRecord>::decode(v2.as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::UnsupportedSchema {
                found: 2,
                supported: 1
            }
        ),
        "{err}"
    );
    // A future schema with fields this build does not know is still reported as a version.
    let v3 = text.replace(r#"{"schema":1,"#, r#"{"schema":3,"extra":{"a":[1]},"#);
    let err = SignedRecord::<AnnotationRecord>::decode(v3.as_bytes()).unwrap_err();
    assert!(
        matches!(err, RecordError::UnsupportedSchema { found: 3, .. }),
        "{err}"
    );
}

#[test]
fn wrong_kind_is_refused() {
    let k = key(1);
    let p = SignedRecord::sign(proposal(&k), &k).unwrap();
    let err = SignedRecord::<AnnotationRecord>::decode(p.bytes()).unwrap_err();
    assert!(
        matches!(&err, RecordError::WrongKind { expected: "annotation", found } if found == "proposal"),
        "{err}"
    );
}

#[test]
fn non_canonical_encodings_are_refused() {
    let a = signed_annotation();
    let text = std::str::from_utf8(a.bytes()).unwrap();
    let lower = a.body().annotator.to_string().to_lowercase();
    for variant in [
        // Whitespace.
        text.replace(r#""epoch":7"#, r#""epoch": 7"#),
        // An escape that decodes to the same string.
        text.replace(r#""outcome":"accepted""#, r#""outcome":"\u0061ccepted""#),
        // The annotator's address without its checksum.
        text.replace(&a.body().annotator.to_checksum(None), &lower),
        // Field order.
        text.replace(
            r#"{"schema":1,"kind":"annotation","#,
            r#"{"kind":"annotation","schema":1,"#,
        ),
    ] {
        assert_ne!(variant, text);
        let err = SignedRecord::<AnnotationRecord>::decode(variant.as_bytes()).unwrap_err();
        assert!(matches!(err, RecordError::NotCanonical), "{variant}: {err}");
    }
}

#[test]
fn empty_required_fields_are_refused() {
    let k = key(1);
    let mut p = proposal(&k);
    p.community = "  ".into();
    let err = SignedRecord::sign(p, &k).unwrap_err();
    assert!(
        matches!(
            err,
            RecordError::InvalidField {
                field: "community",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn signatures_are_domain_separated_by_kind() {
    // The same key's signature over a proposal does not verify for anything else: the tag
    // differs, so a signature lifted from one kind recovers to a random address.
    let k = key(1);
    let p = SignedRecord::sign(proposal(&k), &k).unwrap();
    let body = serde_json::to_vec(p.body()).unwrap();
    let recovered = p.signature().recover(&body).unwrap();
    assert_ne!(recovered, k.address());
}

#[test]
fn mutated_and_truncated_bytes_are_errors_never_panics() {
    use rand::{RngExt, SeedableRng};
    let a = signed_annotation();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(20);
    let mut accepted = 0;
    for _ in 0..2_000 {
        let mut bytes = a.bytes().to_vec();
        for _ in 0..rng.random_range(1..4) {
            let at = rng.random_range(0..bytes.len());
            bytes[at] = rng.random();
        }
        bytes.truncate(rng.random_range(bytes.len() / 2..=bytes.len()));
        if let Ok(r) = SignedRecord::<AnnotationRecord>::decode(&bytes) {
            // Only the original record itself verifies.
            assert_eq!(r.bytes(), a.bytes());
            accepted += 1;
        }
    }
    assert!(accepted < 2_000);
}
