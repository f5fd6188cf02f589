//! The IDX format of MNIST and Fashion-MNIST, plain or gzip-compressed.
//!
//! An IDX file is a big-endian header (a magic number `0x0000_08NN`, where `08` says the values
//! are unsigned bytes and `NN` is the rank, then one `u32` per dimension) followed by exactly the
//! declared number of bytes. The readers check the magic number, refuse headers that declare
//! more than [`MAX_DATA_BYTES`] (so a hostile header cannot make them allocate terabytes; memory
//! grows only with the bytes actually present), and refuse truncated files and trailing data.
//! Gzip input is recognised by its magic bytes `1f 8b`, whatever the file name.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use super::{DataError, Dataset};

/// Magic number of an IDX file of `u8` images (rank 3: count, rows, columns).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX file of `u8` labels (rank 1: count).
pub const LABELS_MAGIC: u32 = 0x0000_0801;
/// Largest data section accepted (1 GiB; MNIST's training images take 47 MB).
pub const MAX_DATA_BYTES: u64 = 1 << 30;
/// Number of classes of MNIST and Fashion-MNIST.
pub const NUM_CLASSES: usize = 10;

/// The contents of an IDX images file: `count` images of `rows` x `cols` bytes, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// All pixels, image after image, each row-major.
    pub pixels: Vec<u8>,
}

/// Reads an IDX images file (plain or gzip).
pub fn read_images(path: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    read_images_from(file, &path.display().to_string())
}

/// Reads IDX images from any reader (plain or gzip); `what` names it in error messages.
pub fn read_images_from(reader: impl Read, what: &str) -> Result<IdxImages, DataError> {
    let (dims, pixels) = read_idx(reader, what, IMAGES_MAGIC)?;
    let [count, rows, cols] = dims[..] else {
        unreachable!("read_idx returns as many dimensions as the magic number's rank")
    };
    if rows == 0 || cols == 0 {
        return Err(DataError::Shape(format!(
            "{what}: images of {rows} x {cols} pixels"
        )));
    }
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Reads an IDX labels file (plain or gzip).
pub fn read_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    read_labels_from(file, &path.display().to_string())
}

/// Reads IDX labels from any reader (plain or gzip); `what` names it in error messages.
pub fn read_labels_from(reader: impl Read, what: &str) -> Result<Vec<u8>, DataError> {
    Ok(read_idx(reader, what, LABELS_MAGIC)?.1)
}

/// Loads an images file and its labels file as a [`Dataset`] of [`NUM_CLASSES`] classes with
/// feature shape `[1, rows, cols]` and pixels scaled from 0..=255 to [0, 1].
pub fn load(
    images_path: impl AsRef<Path>,
    labels_path: impl AsRef<Path>,
) -> Result<Dataset, DataError> {
    to_dataset(
        read_images(images_path)?,
        &read_labels(labels_path)?,
        NUM_CLASSES,
    )
}

/// Pairs images with labels as a [`Dataset`] (see [`load`]), checking that the counts agree and
/// that every label is below `num_classes`.
pub fn to_dataset(
    images: IdxImages,
    labels: &[u8],
    num_classes: usize,
) -> Result<Dataset, DataError> {
    if images.count != labels.len() {
        return Err(DataError::CountMismatch {
            images: images.count,
            labels: labels.len(),
        });
    }
    if labels.is_empty() {
        return Err(DataError::Empty {
            what: "IDX images file".into(),
        });
    }
    let features = images
        .pixels
        .iter()
        .map(|&p| f32::from(p) / 255.0)
        .collect();
    Dataset::new(
        features,
        vec![1, images.rows, images.cols],
        labels.to_vec(),
        num_classes,
    )
}

/// Wraps `reader` in a gzip decoder when its first bytes are the gzip magic `1f 8b`; the flag
/// says whether it did.
pub(crate) fn maybe_gunzip<'r>(
    reader: impl Read + 'r,
    what: &str,
) -> Result<(Box<dyn Read + 'r>, bool), DataError> {
    let mut reader = BufReader::new(reader);
    let head = reader.fill_buf().map_err(|source| DataError::Io {
        what: what.into(),
        source,
    })?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok((Box::new(flate2::bufread::MultiGzDecoder::new(reader)), true))
    } else {
        Ok((Box::new(reader), false))
    }
}

/// Reads a whole IDX file of `u8` values whose magic number must be `magic`; returns the
/// dimensions and the data.
fn read_idx(reader: impl Read, what: &str, magic: u32) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    let (mut reader, gzip) = maybe_gunzip(reader, what)?;
    let io_err = |source| {
        if gzip {
            DataError::Gzip {
                what: what.into(),
                source,
            }
        } else {
            DataError::Io {
                what: what.into(),
                source,
            }
        }
    };
    let rank = (magic & 0xff) as usize;
    let mut header = vec![0u8; 4 + 4 * rank];
    let got = read_up_to(&mut reader, &mut header).map_err(io_err)?;
    if got >= 4 {
        let found = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        if found != magic {
            return Err(DataError::IdxMagic {
                what: what.into(),
                expected: magic,
                got: found,
            });
        }
    }
    if got < header.len() {
        return Err(DataError::Truncated {
            what: format!("{what} (header)"),
            expected: header.len() as u64,
            got: got as u64,
        });
    }
    let dims: Vec<usize> = header[4..]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let declared = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    if declared > MAX_DATA_BYTES {
        return Err(DataError::IdxTooLarge {
            what: what.into(),
            declared,
            limit: MAX_DATA_BYTES,
        });
    }
    // Grow with the bytes that actually arrive rather than trusting the header's size.
    let mut data = Vec::with_capacity(declared.min(1 << 24) as usize);
    reader
        .take(declared + 1)
        .read_to_end(&mut data)
        .map_err(io_err)?;
    let got = data.len() as u64;
    if got < declared {
        return Err(DataError::Truncated {
            what: what.into(),
            expected: declared,
            got,
        });
    }
    if got > declared {
        return Err(DataError::TrailingData {
            what: what.into(),
            expected: declared,
        });
    }
    Ok((dims, data))
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read.
fn read_up_to(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn idx(magic: u32, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = magic.to_be_bytes().to_vec();
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// Three 2x2 images with pixel values 0, 51, ..., and labels 7, 0, 9.
    fn good_files() -> (Vec<u8>, Vec<u8>) {
        let pixels: Vec<u8> = (0..12).map(|i| (i * 51 % 256) as u8).collect();
        (
            idx(IMAGES_MAGIC, &[3, 2, 2], &pixels),
            idx(LABELS_MAGIC, &[3], &[7, 0, 9]),
        )
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn reads_plain_and_gzip_files() {
        let dir = tempfile::tempdir().unwrap();
        let (images, labels) = good_files();
        let plain = load(
            write(dir.path(), "i", &images),
            write(dir.path(), "l", &labels),
        )
        .unwrap();
        let packed = load(
            write(dir.path(), "i.gz", &gzip(&images)),
            write(dir.path(), "l.gz", &gzip(&labels)),
        )
        .unwrap();
        assert_eq!(plain, packed);
        assert_eq!(plain.len(), 3);
        assert_eq!(plain.feature_shape(), &[1, 2, 2]);
        assert_eq!(plain.labels(), &[7, 0, 9]);
        assert_eq!(plain.example(0).unwrap().0, &[0.0, 0.2, 0.4, 0.6][..]);
        assert_eq!(plain.features()[5], 1.0);
    }

    #[test]
    fn malformed_files_are_errors() {
        let (images, labels) = good_files();
        let r = |bytes: &[u8]| read_images_from(bytes, "t");
        let l = |bytes: &[u8]| read_labels_from(bytes, "t");
        // Bad magic: a labels file read as images and vice versa.
        assert!(matches!(
            r(&labels),
            Err(DataError::IdxMagic {
                expected: IMAGES_MAGIC,
                got: LABELS_MAGIC,
                ..
            })
        ));
        assert!(matches!(l(&images), Err(DataError::IdxMagic { .. })));
        // Truncated data and header, empty input, trailing data.
        assert!(matches!(
            r(&images[..images.len() - 1]),
            Err(DataError::Truncated {
                expected: 12,
                got: 11,
                ..
            })
        ));
        assert!(matches!(r(&images[..10]), Err(DataError::Truncated { .. })));
        assert!(matches!(r(&[]), Err(DataError::Truncated { .. })));
        let mut long = labels.clone();
        long.push(1);
        assert!(matches!(l(&long), Err(DataError::TrailingData { .. })));
        // Gzip of a truncated file is caught the same way; gzip garbage is a gzip error.
        assert!(matches!(
            r(&gzip(&images[..images.len() - 3])),
            Err(DataError::Truncated { .. })
        ));
        let mut garbage = gzip(&images);
        garbage.truncate(garbage.len() / 2);
        assert!(matches!(r(&garbage), Err(DataError::Gzip { .. })));
        assert!(matches!(
            r(&[0x1f, 0x8b, 0xde, 0xad, 0xbe, 0xef]),
            Err(DataError::Gzip { .. })
        ));
        // A hostile header declaring ~2^96 bytes is refused before any allocation.
        let huge = idx(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(matches!(r(&huge), Err(DataError::IdxTooLarge { .. })));
        let big = idx(IMAGES_MAGIC, &[(1 << 20) + 1, 32, 32], &[]);
        assert!(matches!(r(&big), Err(DataError::IdxTooLarge { .. })));
        assert!(matches!(
            r(&idx(IMAGES_MAGIC, &[1, 0, 2], &[])),
            Err(DataError::Shape(_))
        ));
    }

    #[test]
    fn images_and_labels_must_agree() {
        let (images, _) = good_files();
        let images = read_images_from(&images[..], "t").unwrap();
        assert!(matches!(
            to_dataset(images.clone(), &[1, 2], NUM_CLASSES),
            Err(DataError::CountMismatch {
                images: 3,
                labels: 2
            })
        ));
        assert!(matches!(
            to_dataset(images.clone(), &[1, 2, 10], NUM_CLASSES),
            Err(DataError::LabelOutOfRange { index: 2, .. })
        ));
        let empty = read_images_from(&idx(IMAGES_MAGIC, &[0, 2, 2], &[])[..], "t").unwrap();
        assert!(matches!(
            to_dataset(empty, &[], NUM_CLASSES),
            Err(DataError::Empty { .. })
        ));
        assert!(matches!(
            load("/nonexistent/images", "/nonexistent/labels"),
            Err(DataError::Io { .. })
        ));
    }
}
