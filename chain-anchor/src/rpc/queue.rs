//! The durable retry queue: one JSON file per anchor not yet confirmed on chain.
//!
//! An anchor is written (and synced) here before its transaction is sent and removed only once
//! its receipt is confirmed, or once the chain is found to hold it already. File names sort in
//! sending order within a federation: `<federation>-<first round, 20 digits>.json`. An anchor
//! the registry refuses for good (a conflicting record, a round behind the chain) is moved to
//! `rejected/` with the error beside it, so it is never lost and never blocks the queue.

use std::fs;
use std::path::{Path, PathBuf};

use alloy::primitives::B256;
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};

use crate::bindings::CheckpointRegistry as Registry;
use crate::fsutil::{io_err, read_bounded, sync_dir, write_atomic};
use crate::types::{CheckpointAnchor, FederationId, RoundBatch};
use crate::{Error, Result};

/// Largest queue entry read (a batch of thousands of rounds stays far below).
const MAX_ENTRY_BYTES: u64 = 16 << 20;

/// One anchor waiting for confirmation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Pending {
    /// One round.
    Single {
        /// The round.
        checkpoint: CheckpointAnchor,
    },
    /// A batch of consecutive rounds.
    Batch {
        /// The rounds (the batch is rebuilt from them).
        rounds: Vec<CheckpointAnchor>,
    },
}

impl Pending {
    pub(crate) fn federation(&self) -> Result<FederationId> {
        match self {
            Self::Single { checkpoint } => Ok(checkpoint.federation),
            Self::Batch { rounds } => Ok(RoundBatch::new(rounds.clone())?.federation()),
        }
    }

    /// First and last round.
    pub(crate) fn rounds(&self) -> Result<(u64, u64)> {
        match self {
            Self::Single { checkpoint } => Ok((checkpoint.round, checkpoint.round)),
            Self::Batch { rounds } => {
                let b = RoundBatch::new(rounds.clone())?;
                Ok((b.first_round(), b.last_round()))
            }
        }
    }

    /// The registry call, and the batch root when it is a batch.
    pub(crate) fn calldata(&self) -> Result<(Vec<u8>, Option<B256>)> {
        Ok(match self {
            Self::Single { checkpoint: c } => (
                Registry::anchorCall {
                    federation: c.federation.0,
                    round: c.round,
                    paramsHash: c.params_hash,
                    cid: c.cid.clone(),
                    participantsRoot: c.participants_root,
                    epsilonMicros: c.epsilon_micros,
                }
                .abi_encode(),
                None,
            ),
            Self::Batch { rounds } => {
                let b = RoundBatch::new(rounds.clone())?;
                (
                    Registry::anchorBatchCall {
                        federation: b.federation().0,
                        firstRound: b.first_round(),
                        lastRound: b.last_round(),
                        batchRoot: b.root(),
                    }
                    .abi_encode(),
                    Some(b.root()),
                )
            }
        })
    }
}

/// The queue folder.
#[derive(Debug, Clone)]
pub(crate) struct Queue {
    dir: PathBuf,
}

impl Queue {
    /// Opens (creating) the queue folder and its `rejected/` folder.
    pub(crate) fn open(dir: &Path) -> Result<Self> {
        let rejected = dir.join("rejected");
        fs::create_dir_all(&rejected).map_err(io_err(&rejected))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    fn path_of(&self, p: &Pending) -> Result<PathBuf> {
        let fed = p.federation()?;
        let (first, _) = p.rounds()?;
        Ok(self.dir.join(format!("{:x}-{first:020}.json", fed.0)))
    }

    /// Writes `p` durably; returns its file. Pushing an anchor already queued is a no-op.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] when other data is queued for the same first round.
    pub(crate) fn push(&self, p: &Pending) -> Result<PathBuf> {
        let path = self.path_of(p)?;
        if path.exists() {
            if self.read(&path)? == *p {
                return Ok(path);
            }
            return Err(Error::InvalidInput(format!(
                "{} already holds a different anchor for this round; it is still pending",
                path.display()
            )));
        }
        let json = serde_json::to_vec_pretty(p)
            .map_err(|e| Error::InvalidInput(format!("unserialisable anchor: {e}")))?;
        write_atomic(&path, &json)?;
        Ok(path)
    }

    fn read(&self, path: &Path) -> Result<Pending> {
        let bytes = read_bounded(path, MAX_ENTRY_BYTES)?;
        let p: Pending = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        if self.path_of(&p)? != path {
            return Err(Error::Corrupt {
                path: path.to_path_buf(),
                reason: "the anchor inside does not match the file name".into(),
            });
        }
        Ok(p)
    }

    /// Queued anchors in sending order. Leftover temporary files (a write cut short before its
    /// rename, so never acknowledged) are removed.
    pub(crate) fn entries(&self) -> Result<Vec<(PathBuf, Pending)>> {
        let mut paths = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let path = entry.map_err(io_err(&self.dir))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.ends_with(".json.tmp") {
                fs::remove_file(&path).map_err(io_err(&path))?;
            } else if name.ends_with(".json") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        paths
            .into_iter()
            .map(|p| self.read(&p).map(|e| (p, e)))
            .collect()
    }

    /// Number of queued anchors.
    pub(crate) fn len(&self) -> Result<usize> {
        Ok(self.entries()?.len())
    }

    /// Removes a confirmed anchor.
    pub(crate) fn remove(&self, path: &Path) -> Result<()> {
        fs::remove_file(path).map_err(io_err(path))?;
        sync_dir(&self.dir)
    }

    /// Moves an anchor the registry refuses for good to `rejected/`, with the reason beside it.
    pub(crate) fn reject(&self, path: &Path, reason: &Error) -> Result<PathBuf> {
        let name = path.file_name().unwrap_or_default();
        let to = self.dir.join("rejected").join(name);
        let mut why = to.clone().into_os_string();
        why.push(".error.txt");
        write_atomic(Path::new(&why), format!("{reason}\n").as_bytes())?;
        fs::rename(path, &to).map_err(io_err(path))?;
        sync_dir(&self.dir)?;
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(round: u64) -> CheckpointAnchor {
        CheckpointAnchor {
            federation: FederationId::from_name("f"),
            round,
            params_hash: B256::repeat_byte(1),
            cid: "bafk".into(),
            participants_root: B256::ZERO,
            epsilon_micros: 0,
        }
    }

    #[test]
    fn push_order_remove_reject() {
        let dir = tempfile::tempdir().unwrap();
        let q = Queue::open(dir.path()).unwrap();
        for r in [10, 2, 9] {
            q.push(&Pending::Single { checkpoint: cp(r) }).unwrap();
        }
        // idempotent push, conflicting push refused
        q.push(&Pending::Single { checkpoint: cp(2) }).unwrap();
        let mut other = cp(2);
        other.cid = "bafx".into();
        assert!(q.push(&Pending::Single { checkpoint: other }).is_err());
        let rounds: Vec<u64> = q
            .entries()
            .unwrap()
            .iter()
            .map(|(_, p)| p.rounds().unwrap().0)
            .collect();
        assert_eq!(rounds, [2, 9, 10]);
        let (first, _) = q.entries().unwrap().remove(0);
        q.remove(&first).unwrap();
        let (next, _) = q.entries().unwrap().remove(0);
        q.reject(&next, &Error::InvalidInput("test".into()))
            .unwrap();
        assert_eq!(q.len().unwrap(), 1);
        // a torn write is dropped, a corrupt entry is reported and kept
        fs::write(dir.path().join("x.json.tmp"), b"{").unwrap();
        assert_eq!(q.len().unwrap(), 1);
        fs::write(dir.path().join("zz.json"), b"not json").unwrap();
        assert!(matches!(q.entries(), Err(Error::Corrupt { .. })));
    }
}
