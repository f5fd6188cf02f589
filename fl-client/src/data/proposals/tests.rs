use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::*;
use crate::partition;

fn shipped() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| load_shipped().expect("the shipped corpus loads"))
}

fn row(community: &str, id: &str, label: &str) -> String {
    format!(
        r#"{{"community":"{community}","kind":"dao","id":"{id}","doc_kind":"SIP","title":"t","status_raw":"Final","label":"{label}","label_strict":null,"type_raw":"SIP / Governance","text":"body","licence":"CC0-1.0","repo":"r/r","commit":"c","path":"p"}}"#
    )
}

#[test]
fn shipped_counts_and_split() {
    let corpus = shipped();
    assert_eq!(corpus.len(), NUM_PROPOSALS);
    let counts = corpus.community_counts();
    assert_eq!(counts.len(), 13);
    assert_eq!(counts["ethereum"], 1121);
    assert_eq!(counts["lido"], 25);
    let split = corpus.shipped_split().unwrap();
    let decided = |rows: &[usize]| {
        rows.iter()
            .filter(|&&i| corpus.proposals[i].label != Outcome::Open)
            .count()
    };
    // 3,040 decided rows less the 608 test rows (the data README's "2,428 train" is 4 short).
    assert_eq!(decided(&split.train), 2432);
    assert_eq!(decided(&split.test), 608);
    assert_eq!(
        split.test.len(),
        608,
        "the test side holds decided rows only"
    );
    assert_eq!(split.train.len() + split.test.len(), NUM_PROPOSALS);
}

#[test]
fn partition_by_community_gives_each_member_its_own_rows() {
    let corpus = shipped();
    let communities: Vec<&str> = corpus
        .proposals
        .iter()
        .map(|p| p.community.as_str())
        .collect();
    let (names, parts) = partition::by_field(&communities);
    assert_eq!(names.len(), 13);
    assert_eq!(parts.len(), 13);
    for (name, part) in names.iter().zip(&parts) {
        assert!(part.iter().all(|&i| corpus.proposals[i].community == *name));
        assert_eq!(part.len(), corpus.community_counts()[*name]);
    }
}

/// The data README lists what was stripped from the texts because it states the outcome: front
/// matter status lines, PEP `Resolution:` headers and status directives, rejection and
/// acceptance notices, MakerDAO "Date Ratified", editorial "rejected as per the author" notes.
#[test]
fn texts_hold_none_of_the_stripped_status_markers() {
    const STATUSES: &[&str] = &[
        "final",
        "living",
        "active",
        "accepted",
        "approved",
        "implemented",
        "deployed",
        "rejected",
        "withdrawn",
        "stagnant",
        "deferred",
        "abandoned",
        "draft",
        "review",
        "last call",
        "proposed",
        "superseded",
        "obsolete",
        "replaced",
        "ratified",
    ];
    let mut found = Vec::new();
    for p in &shipped().proposals {
        for line in p.text.lines() {
            let lower = line.to_lowercase();
            let bare = lower
                .trim_start_matches(|c: char| c.is_whitespace() || "-*#>|".contains(c))
                .replace('*', "");
            let bare = bare.trim();
            let field_value = |field: &str| {
                bare.strip_prefix(field)
                    .map(str::trim_start)
                    .and_then(|r| r.strip_prefix(':').or_else(|| r.strip_prefix('|')))
                    .map(|v| v.trim().trim_matches('`').trim().to_owned())
            };
            let marker = if let Some(v) = field_value("status") {
                STATUSES.iter().any(|s| v.starts_with(s))
            } else {
                field_value("resolution").is_some()
                    || field_value("date ratified").is_some()
                    || [".. rejected::", ".. accepted::", ".. withdrawn::"]
                        .iter()
                        .any(|d| bare.starts_with(d))
                    || ["rejection notice", "acceptance notice"].contains(&bare)
                    || lower.contains("rejected as per the author")
            };
            if marker {
                found.push(format!("{}: {line}", p.key()));
            }
        }
    }
    assert!(found.is_empty(), "status markers left in texts: {found:#?}");
}

#[test]
fn every_row_gets_a_kind_and_every_kind_occurs() {
    let mut counts: BTreeMap<ProposalKind, usize> = BTreeMap::new();
    for p in &shipped().proposals {
        *counts.entry(p.kind()).or_default() += 1;
    }
    assert_eq!(counts.len(), ProposalKind::COUNT, "{counts:?}");
    // The class counts written down in data/proposals/README.md.
    let expected: BTreeMap<ProposalKind, usize> = [
        (ProposalKind::Protocol, 1641),
        (ProposalKind::Standard, 864),
        (ProposalKind::Process, 356),
        (ProposalKind::Parameter, 475),
        (ProposalKind::Operations, 418),
    ]
    .into();
    assert_eq!(counts, expected);
    for k in ProposalKind::ALL {
        assert_eq!(ProposalKind::from_class(k.class()), Some(k));
    }
}

#[test]
fn kind_mapping_examples() {
    use ProposalKind::*;
    let cases = [
        ("ethereum", "EIP", "EIP / Standards Track / Core", Protocol),
        (
            "ethereum",
            "EIP",
            "EIP / Standards Track / Interface",
            Standard,
        ),
        ("ethereum", "EIP", "EIP / Meta", Process),
        ("ethereum", "ERC", "ERC / Standards Track / ERC", Standard),
        (
            "synthetix",
            "SCCP",
            "SCCP / Governance / Optimism",
            Parameter,
        ),
        (
            "synthetix",
            "SIP",
            "SIP / Meta-Governance / Ethereum",
            Process,
        ),
        ("makerdao", "SP", "SP:MIP40C3", Operations),
        ("makerdao", "SP", "SP:MIP4C2", Process),
        ("celo", "CIP", "CIP / Standards / Ring 0", Protocol),
        ("celo", "CIP", "CIP / Standards Track / Ring 3", Standard),
        ("cardano", "CIP", "CIP / Wallets", Standard),
        ("cardano", "CIP", "CIP / Ledger", Protocol),
        ("python", "PEP", "PEP / Standards Track", Protocol),
        ("python", "PEP", "PEP / Informational", Process),
        (
            "bitcoin",
            "BIP",
            "BIP / Specification / Consensus (soft fork)",
            Protocol,
        ),
        (
            "bitcoin",
            "BIP",
            "BIP / Informational / Applications",
            Standard,
        ),
        ("somewhere", "XYZ", "", Protocol),
    ];
    for (community, doc_kind, type_raw, kind) in cases {
        assert_eq!(
            ProposalKind::of(community, doc_kind, type_raw),
            kind,
            "{type_raw}"
        );
    }
}

#[test]
fn malformed_lines_are_errors_naming_the_line() {
    let good = row("yearn", "YIP-1", "accepted");
    let cases = [
        (format!("{good}\n{{not json\n"), "line 2"),
        (
            format!("{good}\n\n{}\n", row("yearn", "YIP-2", "maybe")),
            "line 3",
        ),
        (
            format!("{good}\n{}\n", row("", "YIP-2", "open")),
            "`community` is empty",
        ),
        (
            format!("{good}\n{}\n", good.replace(r#""title":"t","#, "")),
            "missing field `title`",
        ),
        (
            format!(
                "{good}\n{}\n",
                good.replace(r#""label_strict":null"#, r#""label_strict":"rejected""#)
            ),
            "contradicts",
        ),
    ];
    for (text, needle) in cases {
        let err = from_reader(text.as_bytes(), "t").unwrap_err().to_string();
        assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    }
    let mut bad_utf8 = good.clone().into_bytes();
    bad_utf8.extend_from_slice(b"\n\xff\xfe\n");
    assert!(matches!(
        from_reader(&bad_utf8[..], "t"),
        Err(ProposalsError::Malformed { line: 2, .. })
    ));
    assert!(matches!(
        from_reader(&b"\n \n"[..], "t"),
        Err(ProposalsError::Empty { .. })
    ));
    assert!(matches!(
        from_reader(&[0x1f, 0x8b, 8, 0, 1, 2, 3][..], "t"),
        Err(ProposalsError::Gzip { .. })
    ));
    assert!(matches!(
        load("/nonexistent/proposals.jsonl.gz"),
        Err(ProposalsError::Io { .. })
    ));
}

#[test]
fn oversized_input_is_refused() {
    // A line past the limit, with or without a newline after it.
    let long = format!("{}\n", "x".repeat(MAX_LINE_BYTES + 10));
    assert!(matches!(
        from_reader(long.as_bytes(), "t"),
        Err(ProposalsError::LineTooLong { line: 1, .. })
    ));
    let good = row("yearn", "YIP-1", "accepted");
    let second = format!("{good}\n{}", "y".repeat(MAX_LINE_BYTES + 1));
    assert!(matches!(
        from_reader(second.as_bytes(), "t"),
        Err(ProposalsError::LineTooLong { line: 2, .. })
    ));
    // A gzip bomb: small compressed, larger than MAX_TEXT_BYTES once inflated. Built from
    // blank lines under the line limit so that only the size limit can fire.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = " ".repeat((1 << 20) - 1) + "\n";
    for _ in 0..(MAX_TEXT_BYTES >> 20) + 1 {
        std::io::Write::write_all(&mut gz, chunk.as_bytes()).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    assert!(matches!(
        from_reader(&bomb[..], "bomb"),
        Err(ProposalsError::TooLarge { .. })
    ));
}

#[test]
fn split_refuses_unknown_test_ids() {
    let text = format!(
        "{}\n{}\n",
        row("yearn", "YIP-1", "accepted"),
        row("yearn", "YIP-2", "open")
    );
    let corpus = from_reader(text.as_bytes(), "t").unwrap();
    let split = corpus.split(&["yearn:YIP-1".into()]).unwrap();
    assert_eq!((split.train, split.test), (vec![1], vec![0]));
    assert!(matches!(
        corpus.split(&["yearn:YIP-9".into()]),
        Err(ProposalsError::UnknownTestId(k)) if k == "yearn:YIP-9"
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ids.json");
    std::fs::write(&path, "[\"a:b\",").unwrap();
    assert!(matches!(
        load_test_ids(&path),
        Err(ProposalsError::Malformed { .. })
    ));
}
