//! Evidence of flagged updates: built from a real robust round with signed updates, accepted
//! by `qa::verify`, rejected when any part is changed, sealed to validators.

use std::collections::BTreeMap;
use std::sync::Arc;

use fl_aggregator::checkpoint::{CheckpointMeta, Manifest, Participant};
use fl_aggregator::qa::{
    self, CheckOptions, Evidence, EvidenceError, EvidenceFile, HexVector, RoundRecord,
};
use fl_core::hash::ContentHash;
use fl_core::identity::{MemberKey, SignedUpdate, UpdateKind, UpdateStatement};
use fl_core::seal::{RecipientKey, SealError};
use fl_core::strategy::detection::Feature;
use fl_core::strategy::{MemberUpdate, QaFindings, RoundUpdates, StrategyConfig};
use fl_core::{ClientId, Metrics, ParamVec, Schema, TensorSpec, wire};

const FED: &str = "qa-fed";
const ROUND: u64 = 3;
/// Small chunks, so the signed digest covers several of them.
const CHUNK: usize = 8;

struct Round {
    keys: Vec<MemberKey>,
    global: ParamVec,
    next: ParamVec,
    findings: QaFindings,
    record: RoundRecord,
    ids: BTreeMap<ClientId, String>,
}

fn signed(key: &MemberKey, params: &ParamVec, round: u64) -> SignedUpdate {
    let statement = UpdateStatement {
        federation_id: FED.into(),
        session_id: [7; 32],
        round,
        kind: UpdateKind::Fit,
        update_hash: wire::update_digest(&wire::chunk_hashes(params, CHUNK)),
        num_examples: 10,
    };
    SignedUpdate {
        signature: key.sign_update(&statement),
        statement,
    }
}

/// Ten signed members under trimmed mean with detection: eight honest around a common step,
/// member 8 sends its step scaled by 30, members 9 and 10 (colluders) one vector that sits
/// among the honest ones.
fn round(server_optimizer: bool) -> Round {
    const DIM: usize = 48;
    let schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [DIM])]).unwrap());
    // A fixed pseudo-random sequence in [-1, 1) (SplitMix64), so the test is deterministic.
    let noise = |i: usize, j: usize| {
        let mut z = (i as u64 * 1_000_003 + j as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f32 / (1u64 << 52) as f32 - 1.0
    };
    let global = ParamVec::new(schema.clone(), (0..DIM).map(|j| noise(99, j)).collect()).unwrap();
    let keys: Vec<MemberKey> = (0..11).map(|_| MemberKey::generate()).collect();
    let step: Vec<f32> = (0..DIM).map(|j| 0.1 * noise(100, j)).collect();
    let updates: Vec<MemberUpdate> = (0..11)
        .map(|i| {
            let delta: Vec<f32> = match i {
                8 => step.iter().map(|s| 30.0 * s).collect(),
                9 | 10 => step.iter().map(|s| s * 1.01).collect(),
                _ => step
                    .iter()
                    .enumerate()
                    .map(|(j, s)| s + 0.05 * noise(i, j))
                    .collect(),
            };
            let values = global
                .values()
                .iter()
                .zip(&delta)
                .map(|(g, d)| g + d)
                .collect();
            let params = ParamVec::new(schema.clone(), values).unwrap();
            let s = signed(&keys[i], &params, ROUND);
            MemberUpdate::new(ClientId(i as u64), params, 10, Metrics::new()).with_signed(Some(s))
        })
        .collect();
    let mut toml =
        String::from("kind = \"trimmed_mean\"\n[trimmed_mean]\nbeta = 0.2\n[detection]\n");
    if server_optimizer {
        toml.push_str("[server_optimizer]\nkind = \"fedavgm\"\nmomentum = 0.5\n");
    }
    let config: StrategyConfig = toml::from_str(&toml).unwrap();
    let mut strategy = config.build(None, None, 11, DIM).unwrap();
    let digests: Vec<ContentHash> = updates
        .iter()
        .map(|u| u.signed.as_ref().unwrap().statement.update_hash)
        .collect();
    let next = strategy
        .aggregate_fit(ROUND, &global, RoundUpdates::PerMember(updates))
        .unwrap();
    let findings = strategy
        .take_findings()
        .expect("detection reports findings");
    assert!(strategy.take_findings().is_none(), "handed over once");
    let ids: BTreeMap<ClientId, String> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (ClientId(i as u64), k.address().to_string()))
        .collect();
    let record = RoundRecord {
        federation_id: FED.into(),
        round: ROUND,
        next_cid: next.content_hash(),
        participants: keys
            .iter()
            .zip(&digests)
            .map(|(k, d)| (k.address().to_string(), Some(*d)))
            .collect(),
        // The manifest's metrics (`manifest_of`: the QA reference) are a leaf of the root too.
        metrics: fl_aggregator::anchoring::metrics_digest(
            &findings.reference.metrics(),
            &BTreeMap::new(),
        ),
        model_card: None,
    };
    Round {
        keys,
        global,
        next,
        findings,
        record,
        ids,
    }
}

fn evidence_of(r: &Round, member: u64) -> Evidence {
    qa::build_evidence(&r.findings, &r.global, &r.record, &r.ids, CHUNK)
        .unwrap()
        .into_iter()
        .find(|e| e.update.member == r.ids[&ClientId(member)])
        .unwrap_or_else(|| panic!("member {member} was not flagged: {:?}", r.findings.scores))
}

#[test]
fn every_flag_of_a_signed_round_is_accepted_by_verify() {
    let r = round(false);
    let flagged: Vec<u64> = r
        .findings
        .flagged
        .iter()
        .map(|f| f.update.client.0)
        .collect();
    let honest_nearest = r.findings.scores[..8]
        .iter()
        .map(|s| s.features.neighbour.unwrap());
    assert!(
        honest_nearest.fold(f64::INFINITY, f64::min) > 0.0,
        "honest updates are distinct"
    );
    assert_eq!(flagged, vec![8, 9, 10], "{:?}", r.findings.scores);
    assert_eq!(r.findings.signed_digests.len(), 11);
    let all = qa::build_evidence(&r.findings, &r.global, &r.record, &r.ids, CHUNK).unwrap();
    assert_eq!(all.len(), 3);
    for e in &all {
        let v = qa::verify(e, false).unwrap();
        assert!(v.holds, "{v:?}");
        assert!(v.centre_checked);
        assert_eq!(v.signer.unwrap().to_string(), e.update.member);
        assert_eq!(v.score, e.claimed.score);
    }
    // The scaled update is far; the colluders are each other's nearest neighbour, and their
    // records carry the neighbour's signed update.
    let scaled = evidence_of(&r, 8);
    assert!(matches!(
        scaled.claimed.reason,
        Feature::Distance | Feature::Norm
    ));
    assert!(scaled.neighbour.is_none());
    let colluder = evidence_of(&r, 9);
    assert_eq!(colluder.claimed.reason, Feature::Neighbour);
    assert_eq!(
        colluder.neighbour.as_ref().unwrap().member,
        r.ids[&ClientId(10)]
    );
    // Through JSON and the file type, against the round's manifest.
    let manifest = manifest_of(&r);
    let bytes = serde_json::to_vec(&EvidenceFile::new(colluder, &[]).unwrap()).unwrap();
    let options = CheckOptions {
        manifest: Some(&manifest),
        ..CheckOptions::default()
    };
    let (_, v) = qa::check_file(&bytes, &options).unwrap();
    assert!(v.holds);
}

fn manifest_of(r: &Round) -> Manifest {
    let participants = r
        .record
        .participants
        .iter()
        .map(|(id, h)| Participant::new(id.clone()).with_update_hash(h.unwrap()));
    let meta = CheckpointMeta::new(FED, ROUND, ContentHash::of(b"config"))
        .with_participants(participants)
        .with_metrics(r.findings.reference.metrics());
    Manifest::new(meta, &r.next)
}

#[test]
fn tampered_evidence_is_rejected_with_the_reason() {
    let r = round(false);
    let good = evidence_of(&r, 8);
    let check = |f: &dyn Fn(&mut Evidence)| {
        let mut e = good.clone();
        f(&mut e);
        qa::verify(&e, false).unwrap_err()
    };
    assert!(matches!(
        check(&|e| e.claimed.score += 1.0),
        EvidenceError::ScoreMismatch {
            feature: "score",
            ..
        }
    ));
    assert!(matches!(
        check(&|e| e.claimed.features.norm *= 0.5),
        EvidenceError::ScoreMismatch {
            feature: "norm",
            ..
        }
    ));
    // One value of the update changed: it no longer hashes to what the member signed.
    let mut values = r.findings.flagged[0].update.params.values().to_vec();
    values[4] += 1e-3;
    let changed = HexVector::encode(&values);
    assert!(matches!(
        check(&|e| e.update.params = changed.clone()),
        EvidenceError::DigestMismatch(_)
    ));
    // Another member's signature over the same statement.
    let forged = r.keys[0].sign_update(&good.update.signed.as_ref().unwrap().statement);
    assert!(matches!(
        check(&|e| e.update.signed.as_mut().unwrap().signature = forged),
        EvidenceError::WrongSigner { .. }
    ));
    // The record pinned on another member.
    let other = r.ids[&ClientId(1)].clone();
    assert!(matches!(
        check(&|e| e.update.member = other.clone()),
        EvidenceError::WrongSigner { .. }
    ));
    assert!(matches!(
        check(&|e| e.update.signed.as_mut().unwrap().statement.round = ROUND + 1),
        EvidenceError::StatementMismatch(_)
    ));
    assert!(matches!(
        check(&|e| e.max_chunk_bytes = 16),
        EvidenceError::DigestMismatch(_)
    ));
    let mut centre = r.findings.centre.to_vec();
    centre[0] += 0.5;
    let centre = HexVector::encode(&centre);
    assert!(matches!(
        check(&|e| e.centre = centre.clone()),
        EvidenceError::CentreMismatch(_)
    ));
    let other_global = HexVector::encode(&[0.0; 48]);
    assert!(matches!(
        check(&|e| e.global = other_global.clone()),
        EvidenceError::GlobalMismatch(_)
    ));
    assert!(matches!(
        check(&|e| e.update.proof.clear()),
        EvidenceError::NotAParticipant(_)
    ));
    assert!(matches!(
        check(&|e| e.participants_root = Default::default()),
        EvidenceError::NotAParticipant(_)
    ));
    assert!(matches!(
        check(&|e| e.update.signed = None),
        EvidenceError::Unsigned(_)
    ));
    assert!(matches!(
        check(&|e| e.version = 2),
        EvidenceError::Version(2)
    ));
    assert!(matches!(
        check(&|e| e.update.params = HexVector::encode(&[0.0; 47])),
        EvidenceError::Malformed(_)
    ));
    // A collusion flag without the colluder's update cannot be re-checked.
    let mut colluder = evidence_of(&r, 9);
    colluder.neighbour = None;
    assert!(matches!(
        qa::verify(&colluder, false),
        Err(EvidenceError::Neighbour(_))
    ));
    // A claimed neighbour distance without the neighbour's update, with a reference and score
    // made to match it, is consistent, but cannot make a flag hold: the verdict uses only what
    // the data gives.
    let mut inflated = good.clone();
    inflated.detection.threshold = inflated.claimed.score + 1.0;
    inflated.claimed.features.neighbour = Some(0.0);
    inflated.reference.neighbour = Some(fl_core::strategy::detection::Spread {
        median: 1.0,
        scale: 1e-6,
    });
    inflated.claimed.score = 1e6;
    let v = qa::verify(&inflated, false).unwrap();
    assert!(!v.holds, "{v:?}");
    assert_ne!(v.reason, Feature::Neighbour);
    // The reference is the aggregator's word, published in the round's manifest: a record
    // whose reference differs from the manifest's is refused.
    let manifest = manifest_of(&r);
    let bytes = serde_json::to_vec(&EvidenceFile::new(inflated, &[]).unwrap()).unwrap();
    let options = CheckOptions {
        manifest: Some(&manifest),
        ..CheckOptions::default()
    };
    assert!(matches!(
        qa::check_file(&bytes, &options),
        Err(EvidenceError::ReferenceMismatch(_))
    ));
    // A raised threshold is not tampering: the record is valid and the flag does not hold.
    let mut lenient = good.clone();
    lenient.detection.threshold = 1e9;
    assert!(!qa::verify(&lenient, false).unwrap().holds);
    // Malformed files.
    for bad in [
        &b""[..],
        b"{}",
        b"[1,2]",
        b"{\"kind\":\"plain\"}",
        &[0xff; 16],
    ] {
        assert!(matches!(
            qa::check_file(bad, &CheckOptions::default()),
            Err(EvidenceError::Parse(_))
        ));
    }
}

#[test]
fn under_a_server_optimiser_the_centre_is_taken_as_reported() {
    let r = round(true);
    let e = evidence_of(&r, 8);
    assert!(e.server_optimizer);
    let v = qa::verify(&e, false).unwrap();
    assert!(v.holds && !v.centre_checked);
}

#[test]
fn sealed_evidence_opens_for_validators_only_and_binds_its_public_record() {
    let r = round(false);
    let e = evidence_of(&r, 8);
    let validator = MemberKey::generate();
    let keys = [RecipientKey::from_hex(&validator.public_key_hex()).unwrap()];
    let file = EvidenceFile::new(e.clone(), &keys).unwrap();
    let EvidenceFile::Sealed(sealed) = &file else {
        panic!("validators named: sealed");
    };
    // The public record names the member and the score, not the data.
    let public = serde_json::to_string(&sealed.public).unwrap();
    let global_hex = serde_json::to_string(&HexVector::encode(r.global.values())).unwrap();
    assert!(!public.contains(global_hex.trim_matches('"')));
    assert_eq!(sealed.public.score, e.claimed.score);
    assert_eq!(sealed.public.member, e.update.member);
    let bytes = serde_json::to_vec(&file).unwrap();
    let with = |key: Option<&MemberKey>| {
        qa::check_file(
            &bytes,
            &CheckOptions {
                key,
                ..CheckOptions::default()
            },
        )
    };
    let (opened, v) = with(Some(&validator)).unwrap();
    assert_eq!(opened, e);
    assert!(v.holds);
    let stranger = MemberKey::generate();
    assert_eq!(
        with(Some(&stranger)).unwrap_err(),
        EvidenceError::Seal(SealError::NotARecipient(stranger.address()))
    );
    assert!(matches!(with(None), Err(EvidenceError::PublicMismatch(_))));
    // A public record edited after sealing no longer authenticates.
    let mut edited = sealed.clone();
    edited.public.score = 0.0;
    assert_eq!(
        edited.open(&validator).unwrap_err(),
        EvidenceError::Seal(SealError::Forged)
    );
}

#[test]
fn a_manifest_of_another_round_or_root_is_refused() {
    let r = round(false);
    let e = evidence_of(&r, 8);
    let bytes = serde_json::to_vec(&EvidenceFile::new(e, &[]).unwrap()).unwrap();
    let mut other = r;
    other.record.participants.pop();
    let m = manifest_of(&other);
    let err = qa::check_file(
        &bytes,
        &CheckOptions {
            manifest: Some(&m),
            ..CheckOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, EvidenceError::NotAParticipant(_)), "{err}");
}
