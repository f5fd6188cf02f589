//! The initial model from files, so the stock aggregator federates a model it has never seen:
//! members embed their own [`Trainer`](fl_core::Trainer) and the federation file names its
//! schema and initial parameters.
//!
//! ```toml
//! [model]
//! kind = "file"
//! schema = "model.schema.json"    # {"tensors": [{"name": "w", "shape": [64, 10]}, ...]}
//! params = "model.params"         # little-endian f32, in schema order (as checkpoints store them)
//! params_cid = "bafkrei..."       # optional: refuse any other parameters
//! ```
//!
//! Members write both files from their trainer with [`write()`]; the aggregator reads them with
//! [`load()`] and refuses members whose schema differs (naming the tensors that do).

use std::path::{Path, PathBuf};

use fl_core::config::FederationConfig;
use fl_core::{ContentHash, ParamVec, Schema};

/// Largest schema file read: 16 MiB.
pub const MAX_SCHEMA_BYTES: u64 = 16 << 20;

/// Largest parameter file read: 16 GiB (4 Gi values).
pub const MAX_PARAMS_BYTES: u64 = 16 << 30;

/// Why the initial model could not be read from its files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelFileError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file is larger than its limit.
    #[error("{path} is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The schema file is not a valid schema.
    #[error("{path} is not a model schema: {reason}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The parameter file does not fit the schema.
    #[error("{path} holds {got} bytes, the schema needs {expected} (4 per value)")]
    Length {
        /// The file.
        path: PathBuf,
        /// Bytes the schema needs.
        expected: u64,
        /// Bytes in the file.
        got: u64,
    },
    /// The parameters are not the ones `params_cid` names.
    #[error("the initial parameters are {got}, [model] params_cid names {expected}")]
    Cid {
        /// The CID in the federation file.
        expected: String,
        /// The parameters' CID.
        got: ContentHash,
    },
}

/// The initial parameters `[model] kind = "file"` names, or `None` for another kind of model.
pub fn load(config: &FederationConfig) -> Result<Option<ParamVec>, ModelFileError> {
    let model = &config.model;
    if model.get("kind").and_then(|k| k.as_str()) != Some("file") {
        return Ok(None);
    }
    // FederationConfig::parse checked both are strings and resolved them against its folder.
    let path = |key: &str| PathBuf::from(model.get(key).and_then(|v| v.as_str()).unwrap_or(""));
    let schema_path = path("schema");
    let params_path = path("params");
    let text = read_bounded(&schema_path, MAX_SCHEMA_BYTES)?;
    let schema: Schema = serde_json::from_slice(&text).map_err(|e| ModelFileError::Schema {
        path: schema_path.clone(),
        reason: e.to_string(),
    })?;
    let expected = 4 * schema.num_values() as u64;
    let size = size_of(&params_path)?;
    if size != expected {
        return Err(ModelFileError::Length {
            path: params_path,
            expected,
            got: size,
        });
    }
    let bytes = read_bounded(&params_path, MAX_PARAMS_BYTES)?;
    let params = ParamVec::from_le_bytes(std::sync::Arc::new(schema), &bytes).map_err(|e| {
        ModelFileError::Schema {
            path: params_path.clone(),
            reason: e.to_string(),
        }
    })?;
    if let Some(cid) = model.get("params_cid").and_then(|v| v.as_str())
        && params.content_hash().to_string() != cid
    {
        return Err(ModelFileError::Cid {
            expected: cid.to_string(),
            got: params.content_hash(),
        });
    }
    Ok(Some(params))
}

/// Writes `params` as the two files [`load`] reads (schema JSON, little-endian `f32`); returns
/// the parameters' CID for `params_cid`.
pub fn write(
    params: &ParamVec,
    schema_path: &Path,
    params_path: &Path,
) -> Result<ContentHash, ModelFileError> {
    let schema = serde_json::to_vec_pretty(params.schema().as_ref()).expect("a schema serialises");
    let write = |path: &Path, bytes: &[u8]| {
        std::fs::write(path, bytes).map_err(|source| ModelFileError::Write {
            path: path.to_owned(),
            source,
        })
    };
    write(schema_path, &schema)?;
    write(params_path, &params.to_le_bytes())?;
    Ok(params.content_hash())
}

fn size_of(path: &Path) -> Result<u64, ModelFileError> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| ModelFileError::Read {
            path: path.to_owned(),
            source,
        })
}

fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, ModelFileError> {
    let size = size_of(path)?;
    if size > limit {
        return Err(ModelFileError::TooLarge {
            path: path.to_owned(),
            size,
            limit,
        });
    }
    std::fs::read(path).map_err(|source| ModelFileError::Read {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use fl_core::TensorSpec;

    use super::*;

    fn federation(
        dir: &Path,
        model: &str,
    ) -> Result<FederationConfig, fl_core::config::ConfigError> {
        let toml = format!(
            "[federation]\nid = \"f\"\nrounds = 1\nmin_clients = 1\n[model]\n{model}\n[data]\n\
             [members]\nallowed = [\"0x00000000000000000000000000000000000000aa\"]\n"
        );
        FederationConfig::parse(&toml, dir)
    }

    #[test]
    fn written_files_load_back_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let schema = Arc::new(
            Schema::new(vec![
                TensorSpec::new("w", [3, 2]),
                TensorSpec::new("b", [2]),
            ])
            .unwrap(),
        );
        let params = ParamVec::new(schema, (0..8).map(|i| i as f32 / 4.0).collect()).unwrap();
        let cid = write(
            &params,
            &dir.path().join("m.schema.json"),
            &dir.path().join("m.params"),
        )
        .unwrap();
        let files = "kind = \"file\"\nschema = \"m.schema.json\"\nparams = \"m.params\"";
        let config = federation(dir.path(), files).unwrap();
        assert_eq!(load(&config).unwrap(), Some(params.clone()));
        let pinned = federation(dir.path(), &format!("{files}\nparams_cid = \"{cid}\"")).unwrap();
        assert_eq!(load(&pinned).unwrap(), Some(params.clone()));
        let other = federation(
            dir.path(),
            &format!("{files}\nparams_cid = \"bafkreiother\""),
        )
        .unwrap();
        assert!(matches!(load(&other), Err(ModelFileError::Cid { .. })));

        // A truncated parameter file, a broken schema, a missing file.
        std::fs::write(dir.path().join("m.params"), [0u8; 12]).unwrap();
        assert!(matches!(
            load(&config),
            Err(ModelFileError::Length {
                expected: 32,
                got: 12,
                ..
            })
        ));
        std::fs::write(
            dir.path().join("m.schema.json"),
            b"{\"tensors\": [{\"name\": \"\"}]}",
        )
        .unwrap();
        assert!(matches!(load(&config), Err(ModelFileError::Schema { .. })));
        std::fs::remove_file(dir.path().join("m.schema.json")).unwrap();
        assert!(matches!(load(&config), Err(ModelFileError::Read { .. })));
        // Another kind of model is not ours to load; a file model without its paths is refused
        // when the federation file loads.
        assert!(
            load(&federation(dir.path(), "kind = \"mlp\"").unwrap())
                .unwrap()
                .is_none()
        );
        let e = federation(dir.path(), "kind = \"file\"\nschema = \"m.schema.json\"").unwrap_err();
        assert!(e.to_string().contains("params"), "{e}");
    }
}
