//! # fl-node
//!
//! The IO a daofl member (`fl-client`) and the aggregator (`fl-aggregator`) share, so that
//! `fl-core` stays free of it:
//!
//! - [`grpc`]: the client and server stubs of the `daofl.v1` services (`Federation`, and the
//!   inference node's `InferenceNode`), generated once (the messages are `fl_core::wire::pb`);
//! - [`load_federation`]: a federation file read from disk (bounded) and checked by
//!   [`FederationConfig::parse`];
//! - [`read_key_file`] and [`write_key_file`]: a member's secp256k1 key as a private file;
//! - `ceremony` (feature `he`): the message files of a decryption committee's key ceremony.
//!
//! ```no_run
//! let federation = fl_node::load_federation("federation.toml".as_ref())?;
//! let key = fl_node::read_key_file("member.key".as_ref())?;
//! println!("{} joins {}", key.address(), federation.federation.id);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fs;
use std::io::{Read as _, Write as _};
use std::path::Path;

use fl_core::config::{ConfigError, FederationConfig, MAX_CONFIG_BYTES};
use fl_core::identity::{IdentityError, MAX_KEY_FILE_BYTES, MemberKey};

#[cfg(feature = "he")]
pub mod ceremony;

/// The gRPC stubs of the `daofl.v1` services, `Federation` and `InferenceNode` (client and
/// server; messages from [`fl_core::wire::pb`]).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod grpc {
    tonic::include_proto!("daofl.v1");
}

/// Reads the federation file at `path` (at most [`MAX_CONFIG_BYTES`]) and checks it; relative
/// paths in it resolve against the file's directory.
pub fn load_federation(path: &Path) -> Result<FederationConfig, ConfigError> {
    let read = |source| ConfigError::Read {
        path: path.to_owned(),
        source,
    };
    let mut bytes = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES + 1).read_to_end(&mut bytes))
        .map_err(read)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        let size = fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(ConfigError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| ConfigError::Invalid(format!("{} is not UTF-8", path.display())))?;
    let base = path.parent().unwrap_or(Path::new("."));
    FederationConfig::parse(&text, base)
}

/// Reads a key file written by [`write_key_file`]: one line, `0x` and 64 hex digits
/// (surrounding whitespace is ignored). Errors name the file, never its content.
pub fn read_key_file(path: &Path) -> Result<MemberKey, IdentityError> {
    let io_err = |source| IdentityError::KeyFileIo {
        path: path.to_path_buf(),
        source,
    };
    let mut content = Vec::new();
    fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_end(&mut content))
        .map_err(io_err)?;
    let malformed = |reason| IdentityError::MalformedKeyFile {
        path: path.to_path_buf(),
        reason,
    };
    if content.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(malformed("too large to be a key file"));
    }
    let text = std::str::from_utf8(&content).map_err(|_| malformed("not UTF-8 text"))?;
    MemberKey::from_hex(text.trim()).map_err(|e| match e {
        IdentityError::MalformedKey { reason } => malformed(reason),
        other => other,
    })
}

/// Writes `key` to a new file readable only by its owner (mode 0600 on unix).
///
/// Refuses to overwrite an existing file (an identity may hold stake and cannot be recovered
/// once replaced): remove the old file first if that is really meant.
pub fn write_key_file(key: &MemberKey, path: &Path) -> Result<(), IdentityError> {
    let io_err = |source| IdentityError::KeyFileIo {
        path: path.to_path_buf(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(io_err)?;
    file.write_all(format!("{}\n", key.to_hex()).as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err)
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn key_files_round_trip_private_and_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.key");
        let key = MemberKey::generate();
        write_key_file(&key, &path).unwrap();
        assert_eq!(read_key_file(&path).unwrap().address(), key.address());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let err = write_key_file(&MemberKey::generate(), &path).unwrap_err();
        assert!(
            matches!(&err, IdentityError::KeyFileIo { source, .. } if source.kind() == io::ErrorKind::AlreadyExists)
        );
        assert_eq!(read_key_file(&path).unwrap().address(), key.address());

        let garbage = dir.path().join("garbage.key");
        fs::write(&garbage, "not a key\n").unwrap();
        let err = read_key_file(&garbage).unwrap_err();
        assert!(
            matches!(err, IdentityError::MalformedKeyFile { reason, .. } if reason.contains("hex") || reason.contains("0x")),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.key"));
        let huge = dir.path().join("huge.key");
        fs::write(&huge, vec![b'0'; 4096]).unwrap();
        assert!(matches!(
            read_key_file(&huge).unwrap_err(),
            IdentityError::MalformedKeyFile {
                reason: "too large to be a key file",
                ..
            }
        ));
        let err = read_key_file(&dir.path().join("missing.key")).unwrap_err();
        assert!(
            matches!(&err, IdentityError::KeyFileIo { source, .. } if source.kind() == io::ErrorKind::NotFound),
            "{err}"
        );
    }

    #[test]
    fn a_federation_file_is_read_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load_federation(&dir.path().join("none.toml")).unwrap_err();
        assert!(matches!(missing, ConfigError::Read { .. }), "{missing}");
        let big = dir.path().join("big.toml");
        fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(
            load_federation(&big).unwrap_err(),
            ConfigError::TooLarge { size, .. } if size == MAX_CONFIG_BYTES + 1
        ));
        let binary = dir.path().join("binary.toml");
        fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(matches!(
            load_federation(&binary).unwrap_err(),
            ConfigError::Invalid(m) if m.contains("not UTF-8")
        ));
        let bad = dir.path().join("bad.toml");
        fs::write(&bad, "[federation\n").unwrap();
        assert!(matches!(
            load_federation(&bad).unwrap_err(),
            ConfigError::Toml(_)
        ));
    }
}
