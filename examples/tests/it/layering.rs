//! The workspace's dependency rule, checked over `cargo metadata`: every crate depends only on
//! crates of lower layers, so protocol leaves know nothing of rounds, the core nothing of burn
//! or IO stacks, and nothing points up.

use std::collections::BTreeMap;
use std::process::Command;

/// Each workspace crate's layer; a crate may depend only on crates of a strictly lower layer.
const LAYERS: [(&str, u32); 11] = [
    // Leaves: they work on slices, keys and hashes (fl-db: the gateway's and registries'
    // database, on no workspace crate).
    ("privacy", 0),
    ("chain-anchor", 0),
    ("fl-db", 0),
    ("secure-agg", 1), // uses privacy's discrete Gaussian
    // The vocabulary and the math.
    ("fl-core", 2),
    // The IO both node kinds share: gRPC stubs, federation, key and ceremony files.
    ("fl-node", 3),
    // Data contribution: records, commit-reveal, assignment, consensus, rewards (fl-core only).
    ("contrib", 3),
    // What a member embeds and what a coordinator runs.
    ("fl-client", 4),
    ("fl-aggregator", 4),
    // Programs on top.
    ("examples", 5),
    ("benches", 6),
];

/// Edges that break the rule, each with its reason.
const KNOWN_EXCEPTIONS: [(&str, &str); 1] = [
    // Only the `fl-aggregator` binary (optional, feature `cli`): it builds a `[model]` that is
    // one of ours (mlp, cnn) through fl-client's burn models for the seeded initial parameters.
    // A federation with its own model names files instead (`[model] kind = "file"`), and the
    // library never depends on fl-client.
    ("fl-aggregator", "fl-client"),
];

/// Crates added since this rule was written sit in a layer by name; an unknown crate fails the
/// test, so every new crate is placed on purpose.
fn layer(name: &str) -> Option<u32> {
    LAYERS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, l)| *l)
        .or(match name {
            "dao" => Some(1), // beside chain-anchor, reusing its backends
            _ => None,
        })
}

#[test]
fn dependencies_only_point_down() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    let packages = meta["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    let mut edges: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().unwrap();
        for d in p["dependencies"].as_array().unwrap() {
            let dep = d["name"].as_str().unwrap();
            // Dev-dependencies may reach sideways for tests; build and normal ones may not.
            let dev = d.get("kind").and_then(|k| k.as_str()) == Some("dev");
            if names.contains(&dep) && !dev {
                edges.entry(name).or_default().push(dep);
            }
        }
    }
    let mut violations = Vec::new();
    for (&from, tos) in &edges {
        let Some(lf) = layer(from) else {
            violations.push(format!("{from} has no layer: add it to LAYERS"));
            continue;
        };
        for &to in tos {
            let Some(lt) = layer(to) else {
                violations.push(format!("{to} has no layer: add it to LAYERS"));
                continue;
            };
            if lt >= lf && !KNOWN_EXCEPTIONS.contains(&(from, to)) {
                violations.push(format!("{from} (layer {lf}) depends on {to} (layer {lt})"));
            }
        }
    }
    for name in &names {
        assert!(
            layer(name).is_some(),
            "{name} has no layer: add it to LAYERS"
        );
    }
    assert!(violations.is_empty(), "{violations:#?}");
    // The lowest leaves depend on no workspace crate at all.
    for leaf in ["privacy", "chain-anchor"] {
        assert!(!edges.contains_key(leaf), "{leaf}: {:?}", edges.get(leaf));
    }
}

/// The packages `cargo tree` lists for `package` with `args`, normal dependencies only.
fn tree(package: &str, args: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            package,
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_member_with_its_own_model_compiles_no_burn_no_tfhe_and_no_cli() {
    let lean = tree("fl-client", &["--no-default-features"]);
    for heavy in [
        "burn",
        "burn-core",
        "clap",
        "tracing-subscriber",
        "tfhe",
        "alloy-network",
    ] {
        assert!(
            !lean.iter().any(|n| n == heavy),
            "fl-client without default features pulls {heavy}"
        );
    }
    let full = tree("fl-client", &[]);
    assert!(
        full.iter().any(|n| n == "burn"),
        "the burn feature is on by default"
    );
    assert!(
        lean.len() + 80 < full.len(),
        "leaving the defaults out saves little: {} vs {} packages",
        lean.len(),
        full.len()
    );
    // The library of the stock aggregator needs no fl-client (its models are files).
    let aggregator = tree("fl-aggregator", &["--no-default-features"]);
    assert!(!aggregator.iter().any(|n| n == "fl-client" || n == "burn"));
}
