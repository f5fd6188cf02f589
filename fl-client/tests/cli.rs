//! The `fl-client` binary: key management and clear errors for bad input.

use std::process::Command;

fn fl_client() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fl-client"))
}

#[test]
fn keys_are_made_once_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("member.key");
    let out = fl_client()
        .args(["keys", "new", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let address = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );

    let shown = fl_client()
        .args(["keys", "show"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), address);

    // A key is never overwritten.
    let again = fl_client()
        .args(["keys", "new", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(!again.status.success());
    let shown = fl_client()
        .args(["keys", "show"])
        .arg(&key)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(shown.stdout).unwrap().trim(), address);
}

#[test]
fn bad_key_and_config_files_are_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.key");
    std::fs::write(&garbage, "not a key\n").unwrap();
    let out = fl_client()
        .args(["keys", "show"])
        .arg(&garbage)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("garbage.key"), "{err}");

    let key = dir.path().join("member.key");
    assert!(
        fl_client()
            .args(["keys", "new", "--out"])
            .arg(&key)
            .output()
            .unwrap()
            .status
            .success()
    );
    let config = dir.path().join("federation.toml");
    std::fs::write(&config, "[federation]\nid = \"x\"\n").unwrap();
    let out = fl_client()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid federation file"), "{err}");

    // A member not listed in the file is told so.
    let listed = "[federation]\nid = \"x\"\nrounds = 1\nmin_clients = 1\n[model]\nkind = \"mlp\"\n[data]\ndataset = \"digits\"\n[members]\nallowed = [\"0x00000000000000000000000000000000000000aa\"]\n";
    std::fs::write(&config, listed).unwrap();
    let out = fl_client()
        .args(["run", "--config"])
        .arg(&config)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not in [members] allowed"), "{err}");
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        cmd,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(!out.status.success(), "{cmd:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The key ceremony of a homomorphic federation, as three holders run it with the binary.
#[test]
fn committee_ceremony_with_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: usize| dir.path().join(format!("m{i}.key"));
    let secret = |i: usize| dir.path().join(format!("m{i}.ceremony"));
    let state = |i: usize| dir.path().join(format!("m{i}.committee"));
    let addresses: Vec<String> = (0..4)
        .map(|i| run_ok(fl_client().args(["keys", "new", "--out"]).arg(key(i))))
        .collect();
    let config = dir.path().join("federation.toml");
    let quoted = |list: &[String]| {
        list.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    std::fs::write(
        &config,
        format!(
            "[federation]\nid = \"he-dao\"\nrounds = 1\nmin_clients = 3\n\
             [model]\nkind = \"mlp\"\nhidden = 8\n[data]\ndataset = \"digits\"\n\
             [secure_aggregation]\nprotocol = \"he\"\nmodulus_bits = 20\nclip_norm = 5.0\n\
             [secure_aggregation.committee]\nmembers = 3\nthreshold = 2\nmin_contributors = 2\n\
             [secure_aggregation.ceremony]\nholders = [{}]\ndir = \"ceremony\"\n\
             [client]\naggregator = \"http://127.0.0.1:9\"\nreconnect_attempts = 0\n\
             [members]\nallowed = [{}]\n",
            quoted(&addresses[..3]),
            quoted(&addresses)
        ),
    )
    .unwrap();
    let step = |name: &str, i: usize| {
        let mut c = fl_client();
        c.args(["committee", name, "--config"])
            .arg(&config)
            .arg("--key")
            .arg(key(i))
            .arg("--secret")
            .arg(secret(i));
        c
    };

    // Member 3 is not a holder.
    let err = run_err(&mut step("commit", 3));
    assert!(err.contains("is not a committee holder"), "{err}");
    for i in 0..3 {
        let path = run_ok(&mut step("commit", i));
        assert!(path.ends_with(&format!("commit-{i:02}.json")), "{path}");
    }
    // Committing twice would replace the secret: refused.
    let err = run_err(&mut step("commit", 0));
    assert!(err.contains("m0.ceremony"), "{err}");
    for i in 0..3 {
        run_ok(&mut step("deal", i));
    }
    // A tampered dealing is caught by every holder, naming the dealer.
    let deal1 = dir.path().join("ceremony/deal-01.json");
    let original = std::fs::read_to_string(&deal1).unwrap();
    let tampered = original.replacen("\"part\": \"", "\"part\": \"00", 1);
    std::fs::write(&deal1, &tampered).unwrap();
    let finish = |i: usize| {
        let mut c = step("finish", i);
        c.arg("--state").arg(state(i));
        c
    };
    let err = run_err(&mut finish(0));
    assert!(err.contains("holder 1"), "{err}");
    std::fs::write(&deal1, &original).unwrap();
    let digests: Vec<String> = (0..3).map(|i| run_ok(&mut finish(i))).collect();
    assert_eq!(digests[0].len(), 64);
    assert!(digests.iter().all(|d| *d == digests[0]), "{digests:?}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state(0)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    // The state is never overwritten.
    let err = run_err(&mut finish(0));
    assert!(err.contains("m0.committee"), "{err}");

    // A holder's node needs its state; with it, the node gets as far as connecting.
    let run = |i: usize, with_state: bool| {
        let mut c = fl_client();
        c.args(["run", "--config"])
            .arg(&config)
            .arg("--key")
            .arg(key(i));
        if with_state {
            c.arg("--committee-state").arg(state(i));
        }
        c
    };
    let err = run_err(&mut run(1, false));
    assert!(err.contains("pass its committee state"), "{err}");
    let err = run_err(&mut run(1, true));
    assert!(err.contains("connect"), "{err}");
    // Another holder's state is refused.
    let mut c = run(2, false);
    c.arg("--committee-state").arg(state(1));
    let err = run_err(&mut c);
    assert!(err.contains("committee member 1"), "{err}");
}

#[test]
fn predict_names_a_missing_model_and_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "{}\n").unwrap();
    let err = run_err(
        fl_client()
            .args(["predict", "--model"])
            .arg(dir.path())
            .arg("--input")
            .arg(&input)
            .arg("--output")
            .arg(dir.path().join("out.jsonl")),
    );
    assert!(err.contains("no checkpoint"), "{err}");
    assert!(err.contains(&dir.path().display().to_string()), "{err}");
    assert!(!dir.path().join("out.jsonl").exists());
}

#[test]
fn devices_lists_the_backends_and_a_bad_device_is_refused() {
    let out = run_ok(fl_client().arg("devices"));
    let backends = out.lines().next().unwrap_or_default();
    assert!(backends.starts_with("backends in this build: cpu"), "{out}");
    // Built with `wgpu` (as the test command builds it), every adapter listed is one
    // `--device wgpu:N` takes, numbered from 0.
    if backends.contains("wgpu") {
        for (i, line) in out.lines().skip(1).enumerate() {
            assert!(line.starts_with(&format!("wgpu:{i}\t")), "{out}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let err = run_err(
        fl_client()
            .args(["run", "--config", "federation.toml", "--key", "member.key"])
            .args(["--device", "tpu:0"])
            .current_dir(dir.path()),
    );
    assert!(err.contains("unknown device \"tpu:0\""), "{err}");
}
