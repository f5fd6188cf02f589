//! Model parameters as they cross the library boundary: a flat `f32` vector and its schema.
//!
//! A [`ParamVec`] is what a [`Trainer`](crate::Trainer) hands out and takes back, what a
//! [`Strategy`](crate::Strategy) averages and what a checkpoint stores. It never holds a
//! framework's record type, so the aggregator needs no ML framework at all.

use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

use crate::hash::{ContentHash, ContentHasher};

/// One named tensor of a model: its name (a module path such as `hidden.weight`) and shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Module path of the tensor, unique within its schema.
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
}

impl TensorSpec {
    /// A spec from a name and a shape.
    pub fn new(name: impl Into<String>, shape: impl Into<Vec<usize>>) -> Self {
        Self {
            name: name.into(),
            shape: shape.into(),
        }
    }

    /// Number of values (the product of the dimensions; 1 for a scalar).
    pub fn num_values(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The ordered list of tensors of a model, identified by its [`SchemaHash`].
///
/// Two parties agree on a model's layout exactly when their schema hashes are equal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schema {
    tensors: Vec<TensorSpec>,
    #[serde(skip)]
    cached: Option<(usize, SchemaHash)>,
}

/// SHA-256 of a [`Schema`]'s canonical encoding (see [`Schema::hash`]).
pub type SchemaHash = ContentHash;

impl Schema {
    /// What differs between `self` (say, the federation's model) and `other` (a member's):
    /// tensors only in one of them, tensors whose shapes differ, or the same tensors in another
    /// order. Empty when the schemas are equal.
    pub fn difference(&self, other: &Schema) -> SchemaDifference {
        let find = |s: &Schema, name: &str| s.tensors.iter().find(|t| t.name == name).cloned();
        let mut d = SchemaDifference::default();
        for t in &self.tensors {
            match find(other, &t.name) {
                None => d.only_here.push(t.clone()),
                Some(o) if o.shape != t.shape => {
                    d.reshaped.push((t.name.clone(), t.shape.clone(), o.shape))
                }
                Some(_) => {}
            }
        }
        d.only_there = other
            .tensors
            .iter()
            .filter(|t| find(self, &t.name).is_none())
            .cloned()
            .collect();
        d.reordered = d.is_empty() && self.hash() != other.hash();
        d
    }

    /// Builds a schema, refusing empty or duplicate names.
    pub fn new(tensors: Vec<TensorSpec>) -> Result<Self, ParamError> {
        let mut seen = std::collections::HashSet::new();
        for t in &tensors {
            if t.name.is_empty() {
                return Err(ParamError::EmptyTensorName);
            }
            if !seen.insert(t.name.as_str()) {
                return Err(ParamError::DuplicateTensor(t.name.clone()));
            }
        }
        let total = tensors.iter().map(TensorSpec::num_values).sum();
        let mut s = Self {
            tensors,
            cached: None,
        };
        s.cached = Some((total, s.compute_hash()));
        Ok(s)
    }

    /// The tensors in order.
    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// Total number of values over all tensors.
    pub fn num_values(&self) -> usize {
        match self.cached {
            Some((n, _)) => n,
            None => self.tensors.iter().map(TensorSpec::num_values).sum(),
        }
    }

    /// SHA-256 over the canonical encoding: for each tensor in order, the name's byte length
    /// (u32 LE), the UTF-8 name, the rank (u32 LE) and each dimension (u64 LE).
    pub fn hash(&self) -> SchemaHash {
        match self.cached {
            Some((_, h)) => h,
            None => self.compute_hash(),
        }
    }

    fn compute_hash(&self) -> SchemaHash {
        let mut h = ContentHasher::new();
        for t in &self.tensors {
            h.update(&(t.name.len() as u32).to_le_bytes());
            h.update(t.name.as_bytes());
            h.update(&(t.shape.len() as u32).to_le_bytes());
            for d in &t.shape {
                h.update(&(*d as u64).to_le_bytes());
            }
        }
        h.finish()
    }

    /// Restores the cache after deserialisation (serde skips it).
    fn with_cache(mut self) -> Self {
        self.cached = None;
        self.cached = Some((self.num_values(), self.compute_hash()));
        self
    }
}

/// Flat model parameters: all tensors' values concatenated in schema order.
///
/// The schema is shared (`Arc`) so that copies of parameters for many clients do not copy it.
/// Parameters are stored and sent as their canonical bytes ([`ParamVec::to_le_bytes`]), never
/// through a text format.
///
/// The content hash is computed once and cached (values can only change through
/// [`ParamVec::values_mut`], which clears it), so parameters shared by `Arc` with many
/// in-process clients are hashed once, not once per client.
#[derive(Clone)]
pub struct ParamVec {
    schema: Arc<Schema>,
    values: Vec<f32>,
    hash: OnceLock<ContentHash>,
}

impl PartialEq for ParamVec {
    fn eq(&self, other: &Self) -> bool {
        self.schema.hash() == other.schema.hash() && self.values == other.values
    }
}

impl fmt::Debug for ParamVec {
    /// Prints the shape of the parameters, not a million values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParamVec")
            .field("schema", &self.schema.hash())
            .field("len", &self.values.len())
            .field("head", &&self.values[..self.values.len().min(4)])
            .finish_non_exhaustive()
    }
}

impl ParamVec {
    /// Pairs values with their schema, checking the count.
    pub fn new(schema: Arc<Schema>, values: Vec<f32>) -> Result<Self, ParamError> {
        if values.len() != schema.num_values() {
            return Err(ParamError::LengthMismatch {
                expected: schema.num_values(),
                got: values.len(),
            });
        }
        Ok(Self {
            schema,
            values,
            hash: OnceLock::new(),
        })
    }

    /// All-zero parameters of a schema.
    pub fn zeros(schema: Arc<Schema>) -> Self {
        let n = schema.num_values();
        Self {
            schema,
            values: vec![0.0; n],
            hash: OnceLock::new(),
        }
    }

    /// Rebuilds parameters from their canonical little-endian bytes (see [`ParamVec::to_le_bytes`]).
    pub fn from_le_bytes(schema: Arc<Schema>, bytes: &[u8]) -> Result<Self, ParamError> {
        if bytes.len() != schema.num_values() * 4 {
            return Err(ParamError::LengthMismatch {
                expected: schema.num_values() * 4,
                got: bytes.len(),
            });
        }
        let values = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(Self {
            schema,
            values,
            hash: OnceLock::new(),
        })
    }

    /// The schema.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The values, in schema order.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Mutable access to the values (the length cannot change). Clears the cached hash.
    pub fn values_mut(&mut self) -> &mut [f32] {
        self.hash = OnceLock::new();
        &mut self.values
    }

    /// Takes the values out.
    pub fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Each tensor's spec and its slice of values, in schema order.
    pub fn tensors(&self) -> impl Iterator<Item = (&TensorSpec, &[f32])> {
        let mut offset = 0;
        self.schema.tensors().iter().map(move |spec| {
            let n = spec.num_values();
            let slice = &self.values[offset..offset + n];
            offset += n;
            (spec, slice)
        })
    }

    /// The values of the tensor named `name`, if the schema has it.
    pub fn tensor(&self, name: &str) -> Option<&[f32]> {
        self.tensors()
            .find(|(spec, _)| spec.name == name)
            .map(|(_, v)| v)
    }

    /// The values of the tensor named `name`, mutable, if the schema has it.
    pub fn tensor_mut(&mut self, name: &str) -> Option<&mut [f32]> {
        let mut offset = 0;
        for spec in self.schema.tensors() {
            let n = spec.num_values();
            if spec.name == name {
                return Some(&mut self.values[offset..offset + n]);
            }
            offset += n;
        }
        None
    }

    /// The canonical byte form: every value as 4 little-endian bytes, in schema order.
    pub fn to_le_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.values.len() * 4);
        for v in &self.values {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out
    }

    /// SHA-256 of [`ParamVec::to_le_bytes`], computed without materialising the bytes
    /// (once; later calls return the cached value).
    ///
    /// Printed, it is the CIDv1 (`raw`) of the parameter file a checkpoint stores.
    pub fn content_hash(&self) -> ContentHash {
        *self.hash.get_or_init(|| self.compute_hash())
    }

    fn compute_hash(&self) -> ContentHash {
        let mut h = ContentHasher::new();
        let mut buf = [0u8; 4096];
        for chunk in self.values.chunks(buf.len() / 4) {
            for (i, v) in chunk.iter().enumerate() {
                buf[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            h.update(&buf[..chunk.len() * 4]);
        }
        h.finish()
    }

    /// Checks that `other` has the same schema (by hash).
    pub fn check_same_schema(&self, other: &ParamVec) -> Result<(), ParamError> {
        if Arc::ptr_eq(&self.schema, &other.schema) || self.schema.hash() == other.schema.hash() {
            Ok(())
        } else {
            Err(ParamError::SchemaMismatch {
                expected: self.schema.hash(),
                got: other.schema.hash(),
            })
        }
    }

    /// Whether every value is finite (no NaN or infinity).
    pub fn all_finite(&self) -> bool {
        self.values.iter().all(|v| v.is_finite())
    }
}

impl<'de> Deserialize<'de> for Schema {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            tensors: Vec<TensorSpec>,
        }
        let raw = Raw::deserialize(d)?;
        Schema::new(raw.tensors)
            .map(Schema::with_cache)
            .map_err(serde::de::Error::custom)
    }
}

/// How two schemas differ ([`Schema::difference`]); prints as one line naming each tensor.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaDifference {
    /// Tensors of the first schema that the second lacks.
    pub only_here: Vec<TensorSpec>,
    /// Tensors of the second schema that the first lacks.
    pub only_there: Vec<TensorSpec>,
    /// Tensors of both with different shapes: name, first shape, second shape.
    pub reshaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// Same tensors and shapes, in another order.
    pub reordered: bool,
}

impl SchemaDifference {
    /// Whether no tensor differs (the order may still, see [`reordered`](Self::reordered)).
    pub fn is_empty(&self) -> bool {
        self.only_here.is_empty() && self.only_there.is_empty() && self.reshaped.is_empty()
    }

    /// Prints with `here` and `there` naming the two sides (e.g. "the federation", "this
    /// member").
    pub fn describe(&self, here: &str, there: &str) -> String {
        let list = |ts: &[TensorSpec]| {
            ts.iter()
                .map(|t| format!("{} {:?}", t.name, t.shape))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut parts = Vec::new();
        if !self.reshaped.is_empty() {
            let shapes = self
                .reshaped
                .iter()
                .map(|(n, a, b)| format!("{n} is {a:?} in {here} but {b:?} in {there}"))
                .collect::<Vec<_>>();
            parts.push(shapes.join(", "));
        }
        if !self.only_here.is_empty() {
            parts.push(format!("only {here} has {}", list(&self.only_here)));
        }
        if !self.only_there.is_empty() {
            parts.push(format!("only {there} has {}", list(&self.only_there)));
        }
        if self.reordered {
            parts.push("the same tensors in another order".into());
        }
        if parts.is_empty() {
            "no difference".into()
        } else {
            parts.join("; ")
        }
    }
}

/// Why parameters or a schema were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamError {
    /// The number of values (or bytes) does not match the schema.
    #[error("parameter length mismatch: schema needs {expected}, got {got}")]
    LengthMismatch {
        /// What the schema needs.
        expected: usize,
        /// What was given.
        got: usize,
    },
    /// Two parameter sets describe different models.
    #[error("schema mismatch: expected schema {expected}, got {got}")]
    SchemaMismatch {
        /// The schema hash that was expected.
        expected: SchemaHash,
        /// The schema hash that arrived.
        got: SchemaHash,
    },
    /// A tensor name appears twice in a schema.
    #[error("tensor `{0}` appears twice in the schema")]
    DuplicateTensor(String),
    /// A tensor has an empty name.
    #[error("a tensor in the schema has an empty name")]
    EmptyTensorName,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_differences_name_each_tensor() {
        let s = |ts: &[(&str, &[usize])]| {
            Schema::new(
                ts.iter()
                    .map(|(n, sh)| TensorSpec::new(*n, sh.to_vec()))
                    .collect(),
            )
            .unwrap()
        };
        let fed = s(&[
            ("fc1.weight", &[64, 256]),
            ("fc1.bias", &[256]),
            ("head", &[10]),
        ]);
        let member = s(&[
            ("fc1.weight", &[64, 128]),
            ("fc1.bias", &[256]),
            ("extra", &[3]),
        ]);
        let d = fed.difference(&member);
        assert_eq!(
            d.describe("the federation", "this member"),
            "fc1.weight is [64, 256] in the federation but [64, 128] in this member; only the \
             federation has head [10]; only this member has extra [3]"
        );
        assert!(fed.difference(&fed).is_empty());
        assert_eq!(fed.difference(&fed).describe("a", "b"), "no difference");
        let swapped = s(&[
            ("fc1.bias", &[256]),
            ("fc1.weight", &[64, 256]),
            ("head", &[10]),
        ]);
        let d = fed.difference(&swapped);
        assert!(d.is_empty() && d.reordered);
        assert_eq!(d.describe("a", "b"), "the same tensors in another order");
    }

    fn schema() -> Arc<Schema> {
        Arc::new(
            Schema::new(vec![
                TensorSpec::new("fc.weight", [2, 3]),
                TensorSpec::new("fc.bias", [2]),
            ])
            .unwrap(),
        )
    }

    #[test]
    fn slices_follow_the_schema() {
        let mut p = ParamVec::new(schema(), (0..8).map(|i| i as f32).collect()).unwrap();
        let t: Vec<_> = p
            .tensors()
            .map(|(s, v)| (s.name.clone(), v.to_vec()))
            .collect();
        assert_eq!(t[0], ("fc.weight".into(), vec![0., 1., 2., 3., 4., 5.]));
        assert_eq!(t[1], ("fc.bias".into(), vec![6., 7.]));
        assert_eq!(p.tensor("fc.bias"), Some(&[6.0f32, 7.0][..]));
        assert_eq!(p.tensor("nope"), None);
        p.tensor_mut("fc.bias").unwrap()[1] = 9.0;
        assert_eq!(p.tensor("fc.bias"), Some(&[6.0f32, 9.0][..]));
        assert!(p.tensor_mut("nope").is_none());
    }

    #[test]
    fn wrong_lengths_and_names_are_errors() {
        assert_eq!(
            ParamVec::new(schema(), vec![0.0; 7]),
            Err(ParamError::LengthMismatch {
                expected: 8,
                got: 7
            })
        );
        assert_eq!(
            ParamVec::from_le_bytes(schema(), &[0u8; 31]),
            Err(ParamError::LengthMismatch {
                expected: 32,
                got: 31
            })
        );
        assert!(matches!(
            Schema::new(vec![TensorSpec::new("a", [1]), TensorSpec::new("a", [2])]),
            Err(ParamError::DuplicateTensor(name)) if name == "a"
        ));
        assert_eq!(
            Schema::new(vec![TensorSpec::new("", [1])]),
            Err(ParamError::EmptyTensorName)
        );
    }

    #[test]
    fn content_hash_is_sha256_of_le_bytes() {
        let p = ParamVec::new(schema(), (0..8).map(|i| i as f32 * 0.5 - 1.0).collect()).unwrap();
        assert_eq!(p.content_hash(), ContentHash::of(&p.to_le_bytes()));
        let back = ParamVec::from_le_bytes(schema(), &p.to_le_bytes()).unwrap();
        assert_eq!(back, p);
        // Large enough to span several internal buffers.
        let big_schema = Arc::new(Schema::new(vec![TensorSpec::new("w", [3001])]).unwrap());
        let mut big = ParamVec::new(big_schema, (0..3001).map(|i| i as f32).collect()).unwrap();
        assert_eq!(big.content_hash(), ContentHash::of(&big.to_le_bytes()));
        // Changing a value invalidates the cached hash.
        let before = big.content_hash();
        big.values_mut()[3000] = -1.0;
        assert_ne!(big.content_hash(), before);
        assert_eq!(big.content_hash(), ContentHash::of(&big.to_le_bytes()));
    }

    #[test]
    fn schema_hash_depends_on_names_order_and_shapes() {
        let a = Schema::new(vec![TensorSpec::new("a", [2, 3])]).unwrap();
        let b = Schema::new(vec![TensorSpec::new("a", [3, 2])]).unwrap();
        let c = Schema::new(vec![TensorSpec::new("b", [2, 3])]).unwrap();
        assert_ne!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
        let json = serde_json::to_string(&a).unwrap();
        let back: Schema = serde_json::from_str(&json).unwrap();
        assert_eq!(back.hash(), a.hash());
        // serde_json's error is opaque: it is a data error carrying our message.
        let err =
            serde_json::from_str::<Schema>(r#"{"tensors":[{"name":"","shape":[1]}]}"#).unwrap_err();
        assert!(
            err.is_data()
                && err
                    .to_string()
                    .starts_with(&ParamError::EmptyTensorName.to_string()),
            "{err}"
        );
    }
}
