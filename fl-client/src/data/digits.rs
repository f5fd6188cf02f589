//! UCI optical recognition of handwritten digits: 1,797 8x8 images of the digits 0-9.
//!
//! The data set (E. Alpaydin and C. Kaynak, 1998, CC BY 4.0,
//! <https://archive.ics.uci.edu/dataset/80>) ships with this crate as `data/digits.csv.gz`, the
//! copy from the scikit-learn distribution; `data/README.md` gives its attribution. Each CSV line
//! holds 64 pixel values in 0..=16 (row by row) and then the label. Pixels are divided by 16,
//! so features lie in [0, 1] and have shape `[64]`; use
//! [`Dataset::with_feature_shape`]`(`[`IMAGE_SHAPE`]`)` to view them as images.

use std::io::Read;
use std::path::Path;
use std::sync::OnceLock;

use super::{DataError, Dataset};

/// Number of examples in the shipped file.
pub const NUM_EXAMPLES: usize = 1797;
/// Pixels per image (8 x 8).
pub const NUM_FEATURES: usize = 64;
/// Number of classes (the digits 0-9).
pub const NUM_CLASSES: usize = 10;
/// The image view of one example: one channel of 8 x 8 pixels.
pub const IMAGE_SHAPE: [usize; 3] = [1, 8, 8];
/// Largest raw pixel value (the number of set pixels in a 4 x 4 block).
pub const MAX_PIXEL: f64 = 16.0;

const EMBEDDED_GZ: &[u8] = include_bytes!("../../data/digits.csv.gz");

/// The whole shipped data set, parsed once per process and cloned on each call.
///
/// # Panics
///
/// Never for the file this crate ships (a test parses it); only if that file were replaced by
/// an invalid one at build time.
pub fn embedded() -> Dataset {
    static PARSED: OnceLock<Dataset> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            from_reader(EMBEDDED_GZ, "embedded digits.csv.gz")
                .expect("the digits file shipped with fl-client is valid")
        })
        .clone()
}

/// Reads a digits CSV file, gzip-compressed (like the shipped `digits.csv.gz`) or plain.
pub fn load_csv_gz(path: impl AsRef<Path>) -> Result<Dataset, DataError> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    from_reader(file, &path.display().to_string())
}

/// Reads digits CSV data from any reader, gzip-compressed or plain (detected by the gzip magic
/// bytes). `what` names the source in error messages.
pub fn from_reader(reader: impl Read, what: &str) -> Result<Dataset, DataError> {
    let (reader, gzip) = super::idx::maybe_gunzip(reader, what)?;
    let mut csv = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(reader);
    let mut features = Vec::with_capacity(NUM_EXAMPLES * NUM_FEATURES);
    let mut labels = Vec::with_capacity(NUM_EXAMPLES);
    let mut record = csv::StringRecord::new();
    loop {
        match csv.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(csv_error(e, what, gzip)),
        }
        let line = record.position().map_or(0, csv::Position::line);
        parse_line(&record, line, &mut features, &mut labels)?;
    }
    if labels.is_empty() {
        return Err(DataError::Empty { what: what.into() });
    }
    Dataset::new(features, vec![NUM_FEATURES], labels, NUM_CLASSES)
}

fn parse_line(
    record: &csv::StringRecord,
    line: u64,
    features: &mut Vec<f32>,
    labels: &mut Vec<u8>,
) -> Result<(), DataError> {
    if record.len() != NUM_FEATURES + 1 {
        return Err(DataError::ColumnCount {
            line,
            expected: NUM_FEATURES + 1,
            got: record.len(),
        });
    }
    for (i, field) in record.iter().take(NUM_FEATURES).enumerate() {
        let value: f64 = field.parse().map_err(|_| DataError::NotANumber {
            line,
            column: i + 1,
            value: field.into(),
        })?;
        if !(0.0..=MAX_PIXEL).contains(&value) {
            return Err(DataError::ValueOutOfRange {
                line,
                column: i + 1,
                value,
                min: 0.0,
                max: MAX_PIXEL,
            });
        }
        features.push((value / MAX_PIXEL) as f32);
    }
    let field = &record[NUM_FEATURES];
    let label = field
        .parse::<f64>()
        .ok()
        .filter(|v| v.fract() == 0.0 && (0.0..NUM_CLASSES as f64).contains(v))
        .ok_or_else(|| DataError::BadLabel {
            line,
            value: field.into(),
            num_classes: NUM_CLASSES,
        })?;
    labels.push(label as u8);
    Ok(())
}

fn csv_error(e: csv::Error, what: &str, gzip: bool) -> DataError {
    let line = e.position().map_or(0, csv::Position::line);
    if !e.is_io_error() {
        return DataError::Csv {
            line,
            message: e.to_string(),
        };
    }
    match e.into_kind() {
        csv::ErrorKind::Io(source) if gzip => DataError::Gzip {
            what: what.into(),
            source,
        },
        csv::ErrorKind::Io(source) => DataError::Io {
            what: what.into(),
            source,
        },
        other => DataError::Csv {
            line,
            message: format!("{other:?}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(pixels: &str, label: &str) -> String {
        format!("{pixels},{label}\n")
    }

    fn zeros() -> String {
        vec!["0"; 64].join(",")
    }

    #[test]
    fn shipped_file_parses() {
        let d = embedded();
        assert_eq!(d.len(), NUM_EXAMPLES);
        assert_eq!(d.feature_shape(), &[NUM_FEATURES]);
        assert_eq!(d.num_classes(), NUM_CLASSES);
        assert!(d.features().iter().all(|v| (0.0..=1.0).contains(v)));
        // Every class has roughly a tenth of the examples.
        assert!(d.class_counts().iter().all(|&c| (170..=190).contains(&c)));
        // The first image of sklearn's load_digits() is a 0: pixel (0, 2) is 5, (0, 3) is 13.
        let (x, y) = d.example(0).unwrap();
        assert_eq!(y, 0);
        assert_eq!(&x[..4], &[0.0, 0.0, 5.0 / 16.0, 13.0 / 16.0]);
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz");
        assert_eq!(load_csv_gz(path).unwrap(), d);
    }

    #[test]
    fn plain_and_gzip_readers_agree() {
        let text = line(&zeros(), "3") + &line(&vec!["16"; 64].join(","), "9");
        let plain = from_reader(text.as_bytes(), "t").unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, text.as_bytes()).unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(from_reader(&packed[..], "t").unwrap(), plain);
        assert_eq!(plain.labels(), &[3, 9]);
        assert_eq!(plain.example(1).unwrap().0, &[1.0; 64][..]);
    }

    #[test]
    fn bad_lines_are_errors_naming_the_line() {
        let ok = line(&zeros(), "1");
        let cases = [
            (ok.clone() + &line(&vec!["0"; 63].join(","), "1"), "line 2"),
            (
                ok.clone() + &line(&zeros().replacen('0', "x", 1), "1"),
                "line 2, column 1",
            ),
            (
                ok.clone() + &line(&zeros().replacen('0', "17", 1), "1"),
                "outside",
            ),
            (
                ok.clone() + &line(&zeros().replacen('0', "-1", 1), "1"),
                "outside",
            ),
            (ok.clone() + &line(&zeros(), "10"), "label `10`"),
            (ok.clone() + &line(&zeros(), "1.5"), "label `1.5`"),
            (ok.clone() + &line(&zeros(), "NaN"), "label `NaN`"),
            (
                ok.clone() + &line(&zeros().replacen('0', "nan", 1), "1"),
                "outside",
            ),
        ];
        for (text, needle) in cases {
            let err = from_reader(text.as_bytes(), "t").unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
        }
        assert!(matches!(
            from_reader(&b""[..], "t"),
            Err(DataError::Empty { .. })
        ));
        let mut bad_utf8 = ok.into_bytes();
        bad_utf8.extend_from_slice(b"\xff\xfe,0\n");
        assert!(matches!(
            from_reader(&bad_utf8[..], "t"),
            Err(DataError::Csv { line: 2, .. })
        ));
        assert!(matches!(
            from_reader(&[0x1f, 0x8b, 8, 0, 1, 2, 3][..], "t"),
            Err(DataError::Gzip { .. })
        ));
        assert!(matches!(
            load_csv_gz("/nonexistent/digits.csv.gz"),
            Err(DataError::Io { .. })
        ));
    }
}
