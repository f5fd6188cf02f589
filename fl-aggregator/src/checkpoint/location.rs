//! From a store URL to an object store and a prefix inside it.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;

use super::error::CheckpointError;

/// Opens the store a URL names: a local directory (created if missing), `memory://[prefix]`, or
/// a cloud bucket when its cargo feature is on.
pub(crate) fn open_url(url: &str) -> Result<(Arc<dyn ObjectStore>, Path), CheckpointError> {
    let invalid = |reason: &str| CheckpointError::InvalidUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if url.trim().is_empty() {
        return Err(invalid("it is empty"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return open_local(url, PathBuf::from(url));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "file" => {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(invalid(
                    "a file URL needs an absolute path (`file:///abs/dir`, three slashes)",
                ));
            }
            let path = percent_decode(path).ok_or_else(|| invalid("bad percent-encoding"))?;
            open_local(url, PathBuf::from(path))
        }
        // No authority: all of `memory://fed/one` after the scheme is the prefix `fed/one`.
        "memory" => Ok((Arc::new(InMemory::new()) as _, parse_prefix(url, rest)?)),
        "s3" | "s3a" => cloud(url, rest, "s3"),
        "gs" => cloud(url, rest, "gcs"),
        "az" | "azure" | "abfs" | "abfss" => cloud(url, rest, "azure"),
        _ => Err(invalid(&format!("unknown scheme `{scheme}`"))),
    }
}

fn open_local(url: &str, dir: PathBuf) -> Result<(Arc<dyn ObjectStore>, Path), CheckpointError> {
    std::fs::create_dir_all(&dir).map_err(|source| CheckpointError::CreateDir {
        path: dir.clone(),
        source,
    })?;
    let store =
        LocalFileSystem::new_with_prefix(&dir).map_err(|source| CheckpointError::Store {
            op: "open",
            path: url.to_owned(),
            source,
        })?;
    Ok((Arc::new(store) as _, Path::default()))
}

/// The object prefix of `scheme://bucket/prefix` (`rest` is what follows `://`): the bucket is
/// the store, not part of the prefix.
fn url_prefix(url: &str, rest: &str) -> Result<Path, CheckpointError> {
    parse_prefix(url, rest.split_once('/').map_or("", |(_, p)| p))
}

/// A percent-encoded object prefix (`a/b`, `/a/b` and `a/b/` are the same).
fn parse_prefix(url: &str, prefix: &str) -> Result<Path, CheckpointError> {
    Path::from_url_path(prefix).map_err(|e| CheckpointError::InvalidUrl {
        url: url.to_owned(),
        reason: format!("bad prefix `{prefix}`: {e}"),
    })
}

/// Opens a cloud bucket, when the cargo feature `feature` of this crate is on.
fn cloud(
    url: &str,
    rest: &str,
    feature: &'static str,
) -> Result<(Arc<dyn ObjectStore>, Path), CheckpointError> {
    #[allow(unused_variables)] // unused when no cloud feature is on
    let opened = |store: object_store::Result<Arc<dyn ObjectStore>>| -> Result<_, CheckpointError> {
        let store = store.map_err(|source| CheckpointError::Store {
            op: "open",
            path: url.to_owned(),
            source,
        })?;
        Ok((store, url_prefix(url, rest)?))
    };
    #[cfg(feature = "s3")]
    if feature == "s3" {
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build();
        return opened(store.map(|s| Arc::new(s) as _));
    }
    #[cfg(feature = "gcs")]
    if feature == "gcs" {
        let store = object_store::gcp::GoogleCloudStorageBuilder::from_env()
            .with_url(url)
            .build();
        return opened(store.map(|s| Arc::new(s) as _));
    }
    #[cfg(feature = "azure")]
    if feature == "azure" {
        let store = object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(url)
            .build();
        return opened(store.map(|s| Arc::new(s) as _));
    }
    Err(CheckpointError::FeatureDisabled {
        url: url.to_owned(),
        feature,
    })
}

/// Decodes `%XX` escapes; `None` for a bad escape or non-UTF-8 result.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("/a%20b/c").as_deref(), Some("/a b/c"));
        assert_eq!(percent_decode("/a%2"), None);
        assert_eq!(percent_decode("/a%zz"), None);
        assert_eq!(percent_decode("/a%+1"), None);
        assert_eq!(percent_decode("/%ff"), None);
    }

    #[test]
    fn memory_prefix() {
        let (_, p) = open_url("memory://").unwrap();
        assert_eq!(p.as_ref(), "");
        // A memory store has no bucket: the whole path is the prefix.
        for url in ["memory://fed/one", "memory:///fed/one", "memory://fed/one/"] {
            let (_, p) = open_url(url).unwrap();
            assert_eq!(p.as_ref(), "fed/one", "{url}");
        }
        assert!(matches!(
            open_url("memory://fed//one"),
            Err(CheckpointError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn bucket_is_not_part_of_the_prefix() {
        let prefix = |rest| url_prefix("s3://x", rest).unwrap();
        assert_eq!(prefix("bucket").as_ref(), "");
        assert_eq!(prefix("bucket/").as_ref(), "");
        assert_eq!(prefix("bucket/fed/one").as_ref(), "fed/one");
        assert_eq!(prefix("bucket/a%20b").as_ref(), "a b");
    }
}
