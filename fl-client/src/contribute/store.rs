//! The content store: a directory of records, each in a file named by its CID, and of batch
//! CARs, each named by the batch's Merkle root.
//!
//! Nothing unchecked is stored: [`ContentStore::put`] verifies the CID of the bytes and the
//! record (size, schema, canonical form, signature) before writing, and writes atomically (a
//! temporary file renamed into place), so a refused or interrupted write leaves what was stored
//! as it was. Reads check again: a file altered on disk is refused, not returned.

use std::io::Write;
use std::path::{Path, PathBuf};

use contrib::record::MAX_PROPOSAL_RECORD_BYTES;
use fl_core::ContentHash;
use fl_db::B256;

use super::car::{self, CarLimits};
use super::{ContributeError, ContributedRecord};

/// A directory of records (`records/<cid>`) and batch CARs (`batches/<root>.car`).
#[derive(Debug, Clone)]
pub struct ContentStore {
    dir: PathBuf,
}

impl ContentStore {
    /// Opens (creating it if needed) the store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ContributeError> {
        let dir = dir.into();
        for sub in ["records", "batches"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path)
                .map_err(|source| ContributeError::Io { path, source })?;
        }
        Ok(ContentStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, cid: &ContentHash) -> PathBuf {
        self.dir.join("records").join(cid.to_string())
    }

    fn batch_path(&self, root: &B256) -> PathBuf {
        self.dir.join("batches").join(format!("{root:#x}.car"))
    }

    /// Checks `bytes` against `cid` and as a signed record, then stores them (storing a record
    /// already there is a no-op). Returns the record.
    pub fn put(
        &self,
        cid: &ContentHash,
        bytes: &[u8],
    ) -> Result<ContributedRecord, ContributeError> {
        let record = ContributedRecord::decode_addressed(cid, bytes)?;
        let path = self.record_path(cid);
        if !path.exists() {
            write_atomically(&path, bytes)?;
        }
        Ok(record)
    }

    /// Stores a record already checked (a [`ContributedRecord`] can only be had checked).
    pub fn put_record(&self, record: &ContributedRecord) -> Result<(), ContributeError> {
        let path = self.record_path(&record.cid());
        if path.exists() {
            return Ok(());
        }
        write_atomically(&path, record.bytes())
    }

    /// The record `cid`, read back and checked.
    pub fn get(&self, cid: &ContentHash) -> Result<ContributedRecord, ContributeError> {
        let bytes = read_bounded(&self.record_path(cid), MAX_PROPOSAL_RECORD_BYTES)?
            .ok_or(ContributeError::MissingRecord { cid: *cid })?;
        ContributedRecord::decode_addressed(cid, &bytes)
    }

    /// The stored bytes of record `cid`, unchecked (`None` if absent).
    pub fn raw(&self, cid: &ContentHash) -> Result<Option<Vec<u8>>, ContributeError> {
        read_bounded(&self.record_path(cid), MAX_PROPOSAL_RECORD_BYTES)
    }

    /// Keeps `car` as the content of the batch `root` (the caller checked it).
    pub fn put_batch_car(&self, root: &B256, car: &[u8]) -> Result<(), ContributeError> {
        write_atomically(&self.batch_path(root), car)
    }

    /// The CAR of batch `root`, if stored.
    pub fn batch_car(&self, root: &B256) -> Result<Option<Vec<u8>>, ContributeError> {
        let limits = CarLimits::default();
        read_bounded(
            &self.batch_path(root),
            limits
                .max_blocks
                .saturating_mul(limits.max_block_bytes + 64),
        )
    }

    /// Reads a CAR, checks every block against its CID and as a signed record, and only then
    /// stores them all: a CAR with one bad block stores nothing. Returns the records in file
    /// order.
    pub fn import_car(&self, bytes: &[u8]) -> Result<Vec<ContributedRecord>, ContributeError> {
        let car = car::read(bytes, &CarLimits::default())?;
        let records = super::records_of_car(&car)?;
        for record in &records {
            self.put_record(record)?;
        }
        Ok(records)
    }
}

/// The file at `path` if it exists, refusing one over `limit` bytes before reading it.
fn read_bounded(path: &Path, limit: usize) -> Result<Option<Vec<u8>>, ContributeError> {
    let io = |source| ContributeError::Io {
        path: path.to_owned(),
        source,
    };
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if len > limit as u64 {
        return Err(ContributeError::TooLarge {
            path: path.to_owned(),
            len,
            limit,
        });
    }
    std::fs::read(path).map(Some).map_err(io)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), ContributeError> {
    let dir = path.parent().expect("store paths have a parent");
    let io = |source| ContributeError::Io {
        path: path.to_owned(),
        source,
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}
