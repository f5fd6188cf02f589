//! A member's SCAFFOLD control variate `cᵢ` on disk, so that a node that restarts or
//! reconnects goes on with the control variate it had (see [`fl_core::scaffold`]).
//!
//! # Format
//!
//! ```text
//! magic       8 bytes   "DAOFLSC1"
//! fed_len     u16 LE    length of the federation id
//! federation  fed_len   UTF-8 federation id the control variate belongs to
//! schema      32 bytes  schema hash of the model
//! count       u64 LE    number of values
//! values      count·4   little-endian f32
//! checksum    32 bytes  SHA-256 of everything before it
//! ```
//!
//! The file is written to `<path>.tmp` in the same directory, flushed to disk and renamed over
//! `<path>`, so a crash leaves the old file or the new one, never a mix. Reading refuses a short,
//! long or corrupted file, another federation's or another model's, and non-finite values, each
//! with its own [`ScaffoldStateError`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fl_core::{ContentHasher, ParamVec, Schema, SchemaHash};

/// SHA-256 of `bytes`.
fn checksum(bytes: &[u8]) -> [u8; 32] {
    let mut h = ContentHasher::new();
    h.update(bytes);
    *h.finish().as_bytes()
}

const MAGIC: &[u8; 8] = b"DAOFLSC1";

/// Why a SCAFFOLD state file cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaffoldStateError {
    /// Reading or writing failed.
    #[error("SCAFFOLD state {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The bytes are not a state file (wrong magic, truncated, trailing bytes, bad checksum).
    #[error(
        "SCAFFOLD state {} is malformed ({reason}); delete it to restart this member's control \
         variate from zero",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file belongs to another federation or another model.
    #[error(
        "SCAFFOLD state {} is for {what}: move it away (or point --scaffold-state elsewhere) to \
         start this federation's control variate from zero",
        path.display()
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Which federation or model it is for.
        what: String,
    },
}

/// Where a member keeps its SCAFFOLD control variate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaffoldState {
    path: PathBuf,
    federation_id: String,
}

impl ScaffoldState {
    /// The state of federation `federation_id` at `path`.
    pub fn new(path: impl Into<PathBuf>, federation_id: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            federation_id: federation_id.into(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The control variate kept for a model of `schema`, or `None` when there is no file yet.
    pub fn load(&self, schema: &Arc<Schema>) -> Result<Option<ParamVec>, ScaffoldStateError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ScaffoldStateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        self.decode(&bytes, schema).map(Some)
    }

    /// Writes `control` atomically (temporary file, sync, rename).
    pub fn save(&self, control: &ParamVec) -> Result<(), ScaffoldStateError> {
        let bytes = self.encode(control);
        let tmp = self.path.with_extension("tmp");
        let io = |source| ScaffoldStateError::Io {
            path: self.path.clone(),
            source,
        };
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(&bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        Ok(())
    }

    fn encode(&self, control: &ParamVec) -> Vec<u8> {
        let fed = self.federation_id.as_bytes();
        let fed = &fed[..fed.len().min(usize::from(u16::MAX))];
        let mut out = Vec::with_capacity(8 + 2 + fed.len() + 32 + 8 + 4 * control.len() + 32);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(fed.len() as u16).to_le_bytes());
        out.extend_from_slice(fed);
        out.extend_from_slice(control.schema().hash().as_bytes());
        out.extend_from_slice(&(control.len() as u64).to_le_bytes());
        out.extend_from_slice(&control.to_le_bytes());
        let sum = checksum(&out);
        out.extend_from_slice(&sum);
        out
    }

    fn decode(&self, bytes: &[u8], schema: &Arc<Schema>) -> Result<ParamVec, ScaffoldStateError> {
        let malformed = |reason: String| ScaffoldStateError::Malformed {
            path: self.path.clone(),
            reason,
        };
        let mismatch = |what: String| ScaffoldStateError::Mismatch {
            path: self.path.clone(),
            what,
        };
        if bytes.len() < 8 + 2 + 32 + 8 + 32 {
            return Err(malformed(format!("{} bytes is too short", bytes.len())));
        }
        let (body, sum) = bytes.split_at(bytes.len() - 32);
        if checksum(body).as_slice() != sum {
            return Err(malformed("its checksum does not match".into()));
        }
        let mut r = Reader(body);
        if r.take(8) != Some(MAGIC.as_slice()) {
            return Err(malformed("it does not start with DAOFLSC1".into()));
        }
        let fed_len = r
            .take(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .ok_or_else(|| malformed("truncated".into()))?;
        let fed = r
            .take(usize::from(fed_len))
            .ok_or_else(|| malformed("truncated federation id".into()))?;
        let fed = std::str::from_utf8(fed)
            .map_err(|_| malformed("the federation id is not UTF-8".into()))?;
        if fed != self.federation_id {
            return Err(mismatch(format!(
                "federation `{fed}`, this node joins `{}`",
                self.federation_id
            )));
        }
        let hash = r
            .take(32)
            .ok_or_else(|| malformed("truncated schema hash".into()))?;
        let expected: SchemaHash = schema.hash();
        if hash != expected.as_bytes() {
            return Err(mismatch(format!(
                "another model (schema {}), this member trains {expected}",
                fl_core::ContentHash::from_digest(hash.try_into().unwrap_or([0; 32]))
            )));
        }
        let count = r
            .take(8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or_else(|| malformed("truncated value count".into()))?;
        if count != schema.num_values() as u64 || r.0.len() as u64 != count.saturating_mul(4) {
            return Err(malformed(format!(
                "{count} values announced, {} bytes follow, the model has {} values",
                r.0.len(),
                schema.num_values()
            )));
        }
        let control =
            ParamVec::from_le_bytes(schema.clone(), r.0).map_err(|e| malformed(e.to_string()))?;
        if !control.all_finite() {
            return Err(malformed("it holds NaN or infinite values".into()));
        }
        Ok(control)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use fl_core::TensorSpec;

    use super::*;

    fn schema(name: &str) -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new(name, [3])]).unwrap())
    }

    #[test]
    fn round_trips_and_refuses_what_is_not_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("member.scaffold");
        let state = ScaffoldState::new(&path, "dao");
        let s = schema("w");
        assert!(state.load(&s).unwrap().is_none(), "no file yet: zeros");
        let c = ParamVec::new(s.clone(), vec![0.5, -1.25, 3.0]).unwrap();
        state.save(&c).unwrap();
        assert_eq!(state.load(&s).unwrap(), Some(c.clone()));
        assert!(!path.with_extension("tmp").exists());
        // Another federation, another model.
        assert!(matches!(
            ScaffoldState::new(&path, "other").load(&s),
            Err(ScaffoldStateError::Mismatch { .. })
        ));
        assert!(matches!(
            state.load(&schema("v")),
            Err(ScaffoldStateError::Mismatch { .. })
        ));
        // Every truncation and every flipped byte is refused, never a panic.
        let good = std::fs::read(&path).unwrap();
        for cut in 0..good.len() {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(
                matches!(state.load(&s), Err(ScaffoldStateError::Malformed { .. })),
                "cut at {cut}"
            );
        }
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            assert!(state.load(&s).is_err(), "byte {i}");
        }
        let mut long = good.clone();
        long.push(0);
        std::fs::write(&path, &long).unwrap();
        assert!(matches!(
            state.load(&s),
            Err(ScaffoldStateError::Malformed { .. })
        ));
        // Well-formed but non-finite: refused with its reason.
        let nan = ParamVec::new(s.clone(), vec![f32::NAN, 0.0, 0.0]).unwrap();
        std::fs::write(&path, state.encode(&nan)).unwrap();
        let e = state.load(&s).unwrap_err().to_string();
        assert!(e.contains("NaN"), "{e}");
        // A file of the right layout for another model size (with a forged schema hash of
        // ours) is refused by its count.
        let four = Arc::new(Schema::new(vec![TensorSpec::new("w", [4])]).unwrap());
        let mut forged = state.encode(&ParamVec::zeros(four));
        let at = 8 + 2 + 3;
        forged[at..at + 32].copy_from_slice(s.hash().as_bytes());
        let body = forged.len() - 32;
        let sum = checksum(&forged[..body]);
        forged[body..].copy_from_slice(&sum);
        std::fs::write(&path, &forged).unwrap();
        assert!(matches!(
            state.load(&s),
            Err(ScaffoldStateError::Malformed { .. })
        ));
    }
}
