//! A member's decryption-committee role under homomorphic aggregation: the key ceremony's
//! three steps as file operations (`fl-client committee commit|deal|finish`), and the role a
//! node plays with the resulting key share.
//!
//! The ceremony's messages ([`fl_core::secure::ceremony`]) go to the directory named by
//! `[secure_aggregation.ceremony] dir`, shared by the holders and the aggregator (a mounted
//! volume, a git repository, a bucket synced by hand): they are signed and hold no secret in
//! the clear. Each holder's secrets stay in files only it can read (mode 0600): its ceremony
//! secret between the steps, then its committee state, which the node rewrites atomically
//! after every partial decryption and before the answer leaves.

use std::io::Write;
use std::path::{Path, PathBuf};

use fl_core::config::FederationConfig;
use fl_core::secure::ceremony::{self, CeremonyError, CeremonySecret, CeremonySpec};
use fl_core::secure::he::{CommitteeRole, PersistState};
use fl_core::secure::{MemberVerifier, SecureProtocol};
use fl_core::{MemberKey, secure::he::CommitteeMember};

/// Why a committee step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitteeError {
    /// A ceremony message or setting is unusable.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// The member or its files do not fit the federation.
    #[error("{0}")]
    Invalid(String),
}

type Result<T> = std::result::Result<T, CommitteeError>;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CommitteeError + '_ {
    move |source| CommitteeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Writes `bytes` to a new file readable only by its owner; never overwrites.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = private_options()
        .create_new(true)
        .open(path)
        .map_err(io(path))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(path))
}

/// Replaces `path` with `bytes` atomically (a private temporary file, fsync, rename, fsync of
/// the directory): a crash leaves the old or the new content, never a mix.
pub fn replace_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| CommitteeError::Invalid(format!("{} is not a file path", path.display())))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = private_options()
        .create(true)
        .truncate(true)
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(max + 1).read_to_end(&mut bytes))
        .map_err(io(path))?;
    if bytes.len() as u64 > max {
        return Err(CommitteeError::Invalid(format!(
            "{} is larger than {max} bytes",
            path.display()
        )));
    }
    Ok(bytes)
}

fn ceremony_dir(config: &FederationConfig) -> Result<PathBuf> {
    Ok(ceremony::dir_from_config(config)?)
}

fn write_message<T: serde::Serialize>(dir: &Path, name: &str, message: &T) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let path = dir.join(name);
    let json = serde_json::to_vec_pretty(message)
        .map_err(|e| CommitteeError::Invalid(format!("encoding {name}: {e}")))?;
    // Re-running a step rewrites the same message (the dealing is deterministic).
    replace_public(&path, &json)?;
    Ok(path)
}

fn replace_public(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn load_secret(spec: &CeremonySpec, key: &MemberKey, path: &Path) -> Result<CeremonySecret> {
    let secret = CeremonySecret::from_bytes(&read_limited(path, 1024)?)?;
    if spec.holder_index(key.address()) != Some(secret.holder()) {
        return Err(CommitteeError::Invalid(format!(
            "{} is not the ceremony secret of {}",
            path.display(),
            key.address()
        )));
    }
    Ok(secret)
}

/// Step 1: draws this holder's ceremony secrets into `secret_path` (a new private file) and
/// writes its signed commitment into the ceremony directory. Returns the message's path.
pub fn commit_step(
    config: &FederationConfig,
    key: &MemberKey,
    secret_path: &Path,
) -> Result<PathBuf> {
    let spec = ceremony::spec_from_config(config)?;
    let mut rng = fl_core::secure::os_rng()
        .map_err(|e| CommitteeError::Invalid(format!("no randomness: {e}")))?;
    let (secret, message) = ceremony::commit(&spec, key, &mut rng)?;
    write_new_private(secret_path, &secret.to_bytes())?;
    write_message(
        &ceremony_dir(config)?,
        &ceremony::message_file("commit", secret.holder()),
        &message,
    )
}

/// Step 2, once every holder committed: writes this holder's signed key part and its share
/// bundles, each encrypted to its recipient, into the ceremony directory.
pub fn deal_step(
    config: &FederationConfig,
    key: &MemberKey,
    secret_path: &Path,
) -> Result<PathBuf> {
    let spec = ceremony::spec_from_config(config)?;
    let secret = load_secret(&spec, key, secret_path)?;
    let dir = ceremony_dir(config)?;
    let commits = fl_node::ceremony::read_messages(&dir, "commit")?;
    let mut rng = fl_core::secure::os_rng()
        .map_err(|e| CommitteeError::Invalid(format!("no randomness: {e}")))?;
    let message = ceremony::deal(&spec, key, &secret, &commits, &mut rng)?;
    write_message(
        &dir,
        &ceremony::message_file("deal", secret.holder()),
        &message,
    )
}

/// Step 3, once every holder dealt: checks every message, decrypts this holder's shares and
/// writes its committee state to `state_path` (a new private file). Returns the SHA-256 of the
/// joint public key (every holder and the aggregator must report the same).
pub fn finish_step(
    config: &FederationConfig,
    key: &MemberKey,
    secret_path: &Path,
    state_path: &Path,
) -> Result<[u8; 32]> {
    let spec = ceremony::spec_from_config(config)?;
    let secret = load_secret(&spec, key, secret_path)?;
    let (commits, deals) = fl_node::ceremony::read_dir(&ceremony_dir(config)?)?;
    let (public_key, member) = ceremony::finish(&spec, &secret, &commits, &deals)?;
    write_new_private(state_path, &member.to_bytes())?;
    Ok(public_key.digest())
}

/// The committee role of `key` in the federation, if it is a holder of a homomorphic
/// federation: its state from `state_path`, checked against the federation's ceremony, saved
/// back to the same file after every partial decryption.
///
/// Errors if the member is a holder but has no state file, or the state belongs to another
/// committee, holder or key.
pub fn load_role(
    config: &FederationConfig,
    key: &MemberKey,
    state_path: Option<&Path>,
) -> Result<Option<CommitteeRole>> {
    let Some(secure) = &config.secure_aggregation else {
        return Ok(None);
    };
    if secure.protocol != SecureProtocol::Homomorphic || secure.ceremony.is_none() {
        return Ok(None);
    }
    let spec = ceremony::spec_from_config(config)?;
    let Some(index) = spec.holder_index(key.address()) else {
        return Ok(None);
    };
    let path = state_path.ok_or_else(|| {
        CommitteeError::Invalid(format!(
            "{} holds committee key share {index}: pass its committee state \
             (`fl-client committee finish` wrote it)",
            key.address()
        ))
    })?;
    let member = CommitteeMember::from_bytes(&read_limited(path, 1 << 30)?)
        .map_err(|e| CommitteeError::Invalid(format!("{}: {e}", path.display())))?;
    if member.member() != index || *member.params() != spec.params {
        return Err(CommitteeError::Invalid(format!(
            "{} is the state of committee member {} under other parameters; this member is \
             holder {index} of the federation's committee",
            path.display(),
            member.member()
        )));
    }
    let (_, public_key) = fl_node::ceremony::joint_key_from_config(config)?;
    if member.key_digest() != public_key.digest() {
        return Err(CommitteeError::Invalid(format!(
            "{} holds a share of another committee key (key epoch or ceremony changed)",
            path.display()
        )));
    }
    let members = config
        .members()
        .map_err(|e| CommitteeError::Invalid(e.to_string()))?;
    let owned = path.to_path_buf();
    let persist: PersistState =
        Box::new(move |bytes: &[u8]| replace_private(&owned, bytes).map_err(|e| e.to_string()));
    Ok(Some(
        CommitteeRole::new(member, MemberVerifier(std::sync::Arc::new(members)))
            .with_persistence(persist),
    ))
}
