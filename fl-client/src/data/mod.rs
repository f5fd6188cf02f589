//! In-memory labelled datasets and the loaders that fill them.
//!
//! A [`Dataset`] holds every example's features as one row-major `f32` buffer plus a `u8` label
//! per example: small image and tabular classification sets (digits, MNIST, Fashion-MNIST) fit
//! in memory many times over, and training builds each minibatch tensor straight from a slice of
//! that buffer. The loaders in [`digits`] and [`idx`] read files and never panic on bad input:
//! every problem is a [`DataError`] that says where it is.

pub mod digits;
pub mod idx;
pub mod proposals;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Labelled examples, all of one feature shape, held in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    features: Vec<f32>,
    feature_shape: Vec<usize>,
    labels: Vec<u8>,
    num_classes: usize,
}

impl Dataset {
    /// Builds a dataset from row-major features (`labels.len()` rows of `feature_shape`), checking
    /// that the sizes agree and that every label is below `num_classes` (at most 256).
    pub fn new(
        features: Vec<f32>,
        feature_shape: Vec<usize>,
        labels: Vec<u8>,
        num_classes: usize,
    ) -> Result<Self, DataError> {
        let row = checked_row_len(&feature_shape)?;
        if !(1..=256).contains(&num_classes) {
            return Err(DataError::Shape(format!(
                "num_classes must be in 1..=256, got {num_classes}"
            )));
        }
        if Some(features.len()) != labels.len().checked_mul(row) {
            return Err(DataError::Shape(format!(
                "{} feature values do not make {} examples of shape {feature_shape:?}",
                features.len(),
                labels.len()
            )));
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|&(_, &l)| usize::from(l) >= num_classes)
        {
            return Err(DataError::LabelOutOfRange {
                index,
                label,
                num_classes,
            });
        }
        Ok(Self {
            features,
            feature_shape,
            labels,
            num_classes,
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Shape of one example's features, e.g. `[64]` or `[1, 8, 8]`.
    pub fn feature_shape(&self) -> &[usize] {
        &self.feature_shape
    }

    /// Number of feature values per example (the product of [`Dataset::feature_shape`]).
    pub fn feature_len(&self) -> usize {
        self.feature_shape.iter().product()
    }

    /// All features, example after example.
    pub fn features(&self) -> &[f32] {
        &self.features
    }

    /// All labels, in example order.
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    /// Number of classes; every label is below it.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// The features and label of example `index`, if it exists.
    pub fn example(&self, index: usize) -> Option<(&[f32], u8)> {
        let label = *self.labels.get(index)?;
        let row = self.feature_len();
        Some((&self.features[index * row..(index + 1) * row], label))
    }

    /// Number of examples of each class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.num_classes];
        for &l in &self.labels {
            counts[usize::from(l)] += 1;
        }
        counts
    }

    /// The same examples viewed with another feature shape of the same size, e.g. the 64 digit
    /// pixels as a `[1, 8, 8]` image for a convolutional network.
    pub fn with_feature_shape(mut self, shape: impl Into<Vec<usize>>) -> Result<Self, DataError> {
        let shape = shape.into();
        let row = checked_row_len(&shape)?;
        if row != self.feature_len() {
            return Err(DataError::Shape(format!(
                "cannot view examples of shape {:?} ({} values) as {shape:?} ({row} values)",
                self.feature_shape,
                self.feature_len()
            )));
        }
        self.feature_shape = shape;
        Ok(self)
    }

    /// A new dataset of the examples at `indices`, in that order (repeats allowed).
    pub fn subset(&self, indices: &[usize]) -> Result<Self, DataError> {
        let row = self.feature_len();
        let mut features = Vec::with_capacity(indices.len() * row);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let (x, y) = self.example(i).ok_or(DataError::IndexOutOfRange {
                index: i,
                len: self.len(),
            })?;
            features.extend_from_slice(x);
            labels.push(y);
        }
        Ok(Self {
            features,
            feature_shape: self.feature_shape.clone(),
            labels,
            num_classes: self.num_classes,
        })
    }

    /// One dataset per index list, e.g. per client of a [`partition`](crate::partition).
    pub fn split_by(&self, parts: &[Vec<usize>]) -> Result<Vec<Self>, DataError> {
        parts.iter().map(|p| self.subset(p)).collect()
    }

    /// Splits into `(train, test)`, stratified by class: of each class, a seeded random
    /// `test_fraction` (rounded to the nearest count) goes to the test side. Both sides keep
    /// the original example order.
    ///
    /// `test_fraction` must lie strictly between 0 and 1, and neither side may end up empty.
    pub fn train_test_split(
        &self,
        test_fraction: f64,
        seed: u64,
    ) -> Result<(Self, Self), DataError> {
        if !(test_fraction > 0.0 && test_fraction < 1.0) {
            return Err(DataError::InvalidFraction(test_fraction));
        }
        let mut by_class = vec![Vec::new(); self.num_classes];
        for (i, &l) in self.labels.iter().enumerate() {
            by_class[usize::from(l)].push(i);
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut train = Vec::with_capacity(self.len());
        let mut test = Vec::new();
        for mut members in by_class {
            members.shuffle(&mut rng);
            let n_test = (members.len() as f64 * test_fraction).round() as usize;
            test.extend_from_slice(&members[..n_test]);
            train.extend_from_slice(&members[n_test..]);
        }
        if train.is_empty() || test.is_empty() {
            return Err(DataError::EmptySplit {
                len: self.len(),
                test_fraction,
            });
        }
        train.sort_unstable();
        test.sort_unstable();
        Ok((self.subset(&train)?, self.subset(&test)?))
    }
}

fn checked_row_len(shape: &[usize]) -> Result<usize, DataError> {
    let row = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    match row {
        Some(n) if n > 0 && !shape.is_empty() => Ok(n),
        _ => Err(DataError::Shape(format!(
            "feature shape {shape:?} must have at least one dimension and no zero dimension"
        ))),
    }
}

/// Why a dataset could not be read or built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// Reading a file or stream failed.
    #[error("cannot read {what}: {source}")]
    Io {
        /// What was being read (a path or a description).
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file that starts like gzip could not be decompressed.
    #[error("{what} is not valid gzip: {source}")]
    Gzip {
        /// What was being read.
        what: String,
        /// The decompressor's error.
        #[source]
        source: std::io::Error,
    },
    /// The CSV reader failed (for example on invalid UTF-8).
    #[error("CSV line {line}: {message}")]
    Csv {
        /// 1-based line number.
        line: u64,
        /// The CSV reader's description.
        message: String,
    },
    /// A CSV line has the wrong number of columns.
    #[error("CSV line {line}: expected {expected} columns, found {got}")]
    ColumnCount {
        /// 1-based line number.
        line: u64,
        /// Columns every line must have.
        expected: usize,
        /// Columns found.
        got: usize,
    },
    /// A CSV field is not a number.
    #[error("CSV line {line}, column {column}: `{value}` is not a number")]
    NotANumber {
        /// 1-based line number.
        line: u64,
        /// 1-based column number.
        column: usize,
        /// The field as found.
        value: String,
    },
    /// A CSV feature value lies outside its documented range.
    #[error("CSV line {line}, column {column}: {value} is outside {min}..={max}")]
    ValueOutOfRange {
        /// 1-based line number.
        line: u64,
        /// 1-based column number.
        column: usize,
        /// The value found.
        value: f64,
        /// Smallest allowed value.
        min: f64,
        /// Largest allowed value.
        max: f64,
    },
    /// A CSV label is not an integer class below the number of classes.
    #[error("CSV line {line}: label `{value}` is not a class in 0..{num_classes}")]
    BadLabel {
        /// 1-based line number.
        line: u64,
        /// The field as found.
        value: String,
        /// Number of classes.
        num_classes: usize,
    },
    /// A label is not below the number of classes.
    #[error("example {index} has label {label}, but there are only {num_classes} classes")]
    LabelOutOfRange {
        /// Index of the example.
        index: usize,
        /// Its label.
        label: u8,
        /// Number of classes.
        num_classes: usize,
    },
    /// The input holds no examples.
    #[error("{what} holds no examples")]
    Empty {
        /// What was read.
        what: String,
    },
    /// An IDX file does not start with the expected magic number.
    #[error("{what}: IDX magic number {got:#010x}, expected {expected:#010x}")]
    IdxMagic {
        /// What was read.
        what: String,
        /// The magic number this kind of file needs.
        expected: u32,
        /// The magic number found.
        got: u32,
    },
    /// An IDX header declares more data than this reader accepts.
    #[error("{what}: header declares {declared} bytes of data, more than the limit of {limit}")]
    IdxTooLarge {
        /// What was read.
        what: String,
        /// Bytes the header declares (saturated at `u64::MAX`).
        declared: u64,
        /// The accepted maximum.
        limit: u64,
    },
    /// An IDX file ends before the data its header declares.
    #[error("{what} is truncated: header declares {expected} bytes of data, found {got}")]
    Truncated {
        /// What was read.
        what: String,
        /// Bytes declared.
        expected: u64,
        /// Bytes present.
        got: u64,
    },
    /// An IDX file has bytes after the data its header declares.
    #[error("{what} has data after the {expected} bytes its header declares")]
    TrailingData {
        /// What was read.
        what: String,
        /// Bytes declared.
        expected: u64,
    },
    /// Images and labels files disagree on the number of examples.
    #[error("{images} images but {labels} labels")]
    CountMismatch {
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// Sizes of features, shape and labels do not fit together.
    #[error("inconsistent dataset: {0}")]
    Shape(String),
    /// An example index is past the end of the dataset.
    #[error("example index {index} is out of range for a dataset of {len}")]
    IndexOutOfRange {
        /// The index asked for.
        index: usize,
        /// Number of examples.
        len: usize,
    },
    /// A split fraction is not strictly between 0 and 1.
    #[error("split fraction {0} is not strictly between 0 and 1")]
    InvalidFraction(f64),
    /// A split would leave one side without examples.
    #[error("splitting {len} examples with test fraction {test_fraction} leaves one side empty")]
    EmptySplit {
        /// Number of examples.
        len: usize,
        /// The test fraction asked for.
        test_fraction: f64,
    },
}

impl DataError {
    fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            what: path.display().to_string(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Dataset {
        // 12 examples of 2 features; labels 0,1,2 repeating.
        let features = (0..24).map(|v| v as f32).collect();
        let labels = (0..12).map(|i| (i % 3) as u8).collect();
        Dataset::new(features, vec![2], labels, 3).unwrap()
    }

    #[test]
    fn new_checks_sizes_and_labels() {
        assert!(matches!(
            Dataset::new(vec![0.0; 5], vec![2], vec![0, 1], 2),
            Err(DataError::Shape(_))
        ));
        assert!(matches!(
            Dataset::new(vec![0.0; 4], vec![2], vec![0, 2], 2),
            Err(DataError::LabelOutOfRange { index: 1, .. })
        ));
        assert!(Dataset::new(vec![], vec![0], vec![], 2).is_err());
        assert!(Dataset::new(vec![], vec![], vec![], 2).is_err());
        assert!(Dataset::new(vec![], vec![3], vec![], 0).is_err());
        assert!(Dataset::new(vec![], vec![3], vec![], 2).unwrap().is_empty());
    }

    #[test]
    fn subset_and_reshape() {
        let d = toy();
        let s = d.subset(&[3, 0, 3]).unwrap();
        assert_eq!(s.labels(), &[0, 0, 0]);
        assert_eq!(s.features(), &[6.0, 7.0, 0.0, 1.0, 6.0, 7.0]);
        assert!(matches!(
            d.subset(&[12]),
            Err(DataError::IndexOutOfRange { index: 12, len: 12 })
        ));
        let r = d.clone().with_feature_shape([1, 2, 1]).unwrap();
        assert_eq!(r.feature_shape(), &[1, 2, 1]);
        assert_eq!(r.example(1), Some((&[2.0f32, 3.0][..], 1)));
        assert!(d.with_feature_shape([3]).is_err());
    }

    #[test]
    fn split_is_stratified_seeded_and_disjoint() {
        let d = toy();
        let (train, test) = d.train_test_split(0.25, 7).unwrap();
        assert_eq!((train.len(), test.len()), (9, 3));
        assert_eq!(test.class_counts(), vec![1, 1, 1]);
        let again = d.train_test_split(0.25, 7).unwrap();
        assert_eq!((train.clone(), test.clone()), again);
        // Every example lands on exactly one side: compare first features (unique per example).
        let mut firsts: Vec<i32> = train
            .features()
            .chunks(2)
            .chain(test.features().chunks(2))
            .map(|x| x[0] as i32)
            .collect();
        firsts.sort();
        assert_eq!(firsts, (0..12).map(|i| 2 * i).collect::<Vec<_>>());
        assert!(matches!(
            d.train_test_split(1.0, 0),
            Err(DataError::InvalidFraction(_))
        ));
        assert!(d.train_test_split(f64::NAN, 0).is_err());
        assert!(matches!(
            d.train_test_split(0.01, 0),
            Err(DataError::EmptySplit { .. })
        ));
    }
}
