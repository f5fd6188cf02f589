//! Where the aggregator's signing key comes from: a key file or an environment variable, never
//! the command line or the configuration file.

use std::path::PathBuf;

use alloy::signers::local::PrivateKeySigner;
use serde::{Deserialize, Serialize};

use crate::fsutil::read_bounded;
use crate::{Error, Result};

/// Key files are one line of hex; anything much longer is not a key file.
const MAX_KEY_FILE_BYTES: u64 = 1024;

/// The source of a secp256k1 signing key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// A file with one line: `0x` and 64 hex digits, as fl-core's identity key files. On unix it
    /// must not be readable by group or others (mode 0600 or stricter).
    File(PathBuf),
    /// The name of an environment variable holding the key (same format).
    Env(String),
}

impl KeySource {
    fn name(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Env(v) => format!("env:{v}"),
        }
    }

    /// Loads the key. Errors never contain the key or any part of it.
    ///
    /// # Errors
    /// [`Error::Key`] when the source is missing, too open, or holds no valid key.
    pub fn load(&self) -> Result<PrivateKeySigner> {
        let refuse = |reason: String| Error::Key {
            source_name: self.name(),
            reason,
        };
        let text = match self {
            Self::File(path) => {
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let mode = std::fs::metadata(path)
                        .map_err(|e| refuse(e.to_string()))?
                        .permissions()
                        .mode();
                    if mode & 0o077 != 0 {
                        return Err(refuse(format!(
                            "mode {:o} lets others read the key; run `chmod 600` on it",
                            mode & 0o777
                        )));
                    }
                }
                let bytes = read_bounded(path, MAX_KEY_FILE_BYTES)
                    .map_err(|_| refuse("unreadable or too large to be a key file".into()))?;
                String::from_utf8(bytes).map_err(|_| refuse("not UTF-8 text".into()))?
            }
            Self::Env(var) => {
                std::env::var(var).map_err(|_| refuse("not set or not UTF-8".into()))?
            }
        };
        let hex = text.trim();
        let digits = hex.strip_prefix("0x").unwrap_or(hex);
        if digits.len() != 64 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refuse("expected `0x` and 64 hex digits".into()));
        }
        digits
            .parse::<PrivateKeySigner>()
            .map_err(|_| refuse("not a valid secp256k1 secret key".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80";

    #[test]
    fn file_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, format!("{KEY}\n")).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let err = KeySource::File(path.clone())
                .load()
                .unwrap_err()
                .to_string();
            assert!(err.contains("chmod 600"), "{err}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let signer = KeySource::File(path).load().unwrap();
        assert_eq!(
            signer.address().to_string(),
            "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
        );
        let err = KeySource::Env("DAOFL_TEST_UNSET_KEY_VAR".into())
            .load()
            .unwrap_err()
            .to_string();
        assert!(err.contains("env:DAOFL_TEST_UNSET_KEY_VAR"));
    }

    #[test]
    fn malformed_keys_are_refused_without_echo() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "0xdeadbeefcafe\n").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let err = KeySource::File(path).load().unwrap_err().to_string();
        assert!(!err.contains("deadbeef"), "{err}");
    }
}
