//! The files of a decryption committee's key ceremony: each holder's `commit-NN.json` and
//! `deal-NN.json` messages in the directory the federation file names
//! (`[secure_aggregation.ceremony] dir`). The checks themselves are
//! [`fl_core::secure::ceremony`]'s; this module only reads.

use std::io::Read as _;
use std::path::Path;

use fl_core::config::FederationConfig;
use fl_core::secure::ceremony::{
    self as core, CeremonyError, CeremonySpec, CommitMessage, DealMessage,
};
use fl_core::secure::he::CompactPublicKey;

/// Largest ceremony message file read: 64 MiB.
pub const MAX_MESSAGE_BYTES: u64 = 64 << 20;

fn message_err(what: impl Into<String>, reason: impl Into<String>) -> CeremonyError {
    CeremonyError::Message {
        what: what.into(),
        reason: reason.into(),
    }
}

/// Reads a ceremony message file (JSON, at most [`MAX_MESSAGE_BYTES`]).
pub fn read_message<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, CeremonyError> {
    let what = path.display().to_string();
    let mut text = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_MESSAGE_BYTES + 1).read_to_end(&mut text))
        .map_err(|e| message_err(&what, e.to_string()))?;
    if text.len() as u64 > MAX_MESSAGE_BYTES {
        return Err(message_err(what, "larger than 64 MiB"));
    }
    serde_json::from_slice(&text).map_err(|e| message_err(what, e.to_string()))
}

/// Reads every `<prefix>-*.json` message of a ceremony directory, in name order.
pub fn read_messages<T: serde::de::DeserializeOwned>(
    dir: &Path,
    prefix: &str,
) -> Result<Vec<T>, CeremonyError> {
    let what = dir.display().to_string();
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| message_err(&what, e.to_string()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("{prefix}-")) && n.ends_with(".json"))
        })
        .collect();
    paths.sort();
    paths.iter().map(|p| read_message(p)).collect()
}

/// Reads a ceremony directory's commitments and dealings.
pub fn read_dir(dir: &Path) -> Result<(Vec<CommitMessage>, Vec<DealMessage>), CeremonyError> {
    Ok((read_messages(dir, "commit")?, read_messages(dir, "deal")?))
}

/// The ceremony a federation file describes and the joint key its directory's messages give,
/// every message checked (what the aggregator and each holder's node run at start).
pub fn joint_key_from_config(
    config: &FederationConfig,
) -> Result<(CeremonySpec, CompactPublicKey), CeremonyError> {
    let spec = core::spec_from_config(config)?;
    let (commits, deals) = read_dir(&core::dir_from_config(config)?)?;
    let key = core::public_key(&spec, &commits, &deals)?;
    Ok((spec, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_oversized_and_malformed_messages_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_dir(&dir.path().join("absent")).unwrap_err();
        assert!(matches!(&err, CeremonyError::Message { what, .. } if what.ends_with("absent")));
        std::fs::write(dir.path().join("commit-00.json"), "{not json").unwrap();
        std::fs::write(dir.path().join("other.json"), "ignored").unwrap();
        let err = read_messages::<CommitMessage>(dir.path(), "commit").unwrap_err();
        assert!(
            matches!(&err, CeremonyError::Message { what, .. } if what.ends_with("commit-00.json")),
            "{err}"
        );
        assert!(
            read_messages::<DealMessage>(dir.path(), "deal")
                .unwrap()
                .is_empty()
        );
    }
}
