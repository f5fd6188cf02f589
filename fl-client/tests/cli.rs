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
