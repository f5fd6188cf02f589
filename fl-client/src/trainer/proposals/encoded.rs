//! [`EncodedProposals`]: proposals as the model reads them, bags of bucket ids with labels.

use burn::prelude::*;

use crate::data::proposals::Proposal;
use crate::text::{HashingFeaturizer, tf_idf};

/// Proposals encoded for the model: per example a bag of text ids, a bag of metadata ids, the
/// outcome class (`None` for open) and the kind class. Stored flat (one id buffer with row
/// offsets), so a member's whole share costs a few bytes per n-gram.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EncodedProposals {
    /// `ids[offsets[i]..offsets[i + 1]]` are example `i`'s ids: text ids first.
    offsets: Vec<usize>,
    ids: Vec<u32>,
    /// How often each of `ids` occurs in its document (1 for metadata ids and for examples
    /// pushed without counts).
    counts: Vec<u32>,
    /// How many of example `i`'s ids are text ids (the rest are metadata ids).
    text_len: Vec<u32>,
    outcome: Vec<Option<u8>>,
    kind: Vec<u8>,
    /// The community prior of example `i` (see [`EncodedProposals::with_prior`]).
    prior: Vec<f32>,
    /// `sequence[sequence_offsets[i]..sequence_offsets[i + 1]]` is example `i`'s text as
    /// unigram bucket ids in reading order (at most [`SEQUENCE_CAP`]), for the transformer;
    /// empty for examples pushed as bags only.
    sequence_offsets: Vec<usize>,
    sequence: Vec<u32>,
}

/// The most tokens of a proposal [`EncodedProposals::encode`] keeps in reading order (a
/// transformer's `sequence_len` is at most this).
pub const SEQUENCE_CAP: usize = 512;

impl EncodedProposals {
    /// An empty set.
    pub fn new() -> Self {
        Self {
            offsets: vec![0],
            sequence_offsets: vec![0],
            ..Default::default()
        }
    }

    /// Encodes `proposals` with `featurizer`: title and text into the text bag, the community
    /// into the metadata bag, `label` and [`Proposal::kind`] as targets.
    pub fn encode<'a>(
        featurizer: &HashingFeaturizer,
        proposals: impl IntoIterator<Item = &'a Proposal>,
    ) -> Self {
        let mut out = Self::new();
        for p in proposals {
            let (counts, sequence) =
                featurizer.counts_and_sequence(&p.title, &p.text, SEQUENCE_CAP);
            out.push_counted(
                &counts,
                &featurizer.meta_ids(&[("community", &p.community)]),
                p.label.class(),
                p.kind().class(),
            );
            out.set_last_sequence(&sequence);
        }
        out
    }

    /// Sets the reading-order ids of the example pushed last (see [`encode`](Self::encode)),
    /// keeping the first [`SEQUENCE_CAP`]. Does nothing on an empty set.
    pub fn set_last_sequence(&mut self, ids: &[u32]) {
        if self.is_empty() {
            return;
        }
        let n = self.len();
        let start = self.sequence_offsets[n - 1];
        self.sequence.truncate(start);
        self.sequence
            .extend_from_slice(&ids[..ids.len().min(SEQUENCE_CAP)]);
        self.sequence_offsets[n] = self.sequence.len();
    }

    /// Example `i`'s text ids in reading order (empty if it was pushed as a bag only).
    /// Panics if `i` is out of range.
    pub fn sequence(&self, i: usize) -> &[u32] {
        &self.sequence[self.sequence_offsets[i]..self.sequence_offsets[i + 1]]
    }

    /// Appends one example. Outcome classes are 0 (accepted) or 1 (rejected); kind classes
    /// index [`ProposalKind::ALL`](crate::data::proposals::ProposalKind::ALL).
    pub fn push(&mut self, text_ids: &[u32], meta_ids: &[u32], outcome: Option<u8>, kind: u8) {
        let counted: Vec<(u32, u32)> = text_ids.iter().map(|&id| (id, 1)).collect();
        self.push_counted(&counted, meta_ids, outcome, kind);
    }

    /// Appends one example whose text ids come with their counts
    /// ([`HashingFeaturizer::id_counts`]), as [`push`](Self::push) otherwise.
    pub fn push_counted(
        &mut self,
        text: &[(u32, u32)],
        meta_ids: &[u32],
        outcome: Option<u8>,
        kind: u8,
    ) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        if self.sequence_offsets.is_empty() {
            self.sequence_offsets.push(0);
        }
        self.sequence_offsets.push(self.sequence.len());
        self.ids.extend(text.iter().map(|&(id, _)| id));
        self.counts.extend(text.iter().map(|&(_, c)| c.max(1)));
        self.ids.extend_from_slice(meta_ids);
        self.counts.extend(meta_ids.iter().map(|_| 1));
        self.offsets.push(self.ids.len());
        self.text_len.push(text.len() as u32);
        self.outcome.push(outcome.map(|c| c.min(1)));
        self.kind.push(kind);
        self.prior.push(0.0);
    }

    /// The smoothed log-odds of acceptance among the decided examples,
    /// `ln((accepted + 1) / (rejected + 1))`: a member's community prior, computed from its
    /// own labels only.
    pub fn acceptance_log_odds(&self) -> f32 {
        let accepted = self.outcome.iter().filter(|o| **o == Some(0)).count();
        let rejected = self.outcome.iter().filter(|o| **o == Some(1)).count();
        ((accepted as f32 + 1.0) / (rejected as f32 + 1.0)).ln()
    }

    /// Sets every example's community prior to `prior` (a member sets its own
    /// [`acceptance_log_odds`](Self::acceptance_log_odds)). The model adds a learned multiple
    /// of it to the outcome logits: every member trains that one shared weight, whereas a
    /// per-community embedding is trained by one member only and FedAvg dilutes its update by
    /// the member's share of the examples.
    pub fn with_prior(mut self, prior: f32) -> Self {
        self.prior.iter_mut().for_each(|p| *p = prior);
        self
    }

    /// Sets example `i`'s community prior (an inference node sets each proposal's from the
    /// model card). Panics if `i` is out of range.
    pub fn set_prior(&mut self, i: usize, prior: f32) {
        self.prior[i] = prior;
    }

    /// Example `i`'s community prior. Panics if `i` is out of range.
    pub fn prior(&self, i: usize) -> f32 {
        self.prior[i]
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.kind.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.kind.is_empty()
    }

    /// Example `i`'s outcome class (0 accepted, 1 rejected), `None` if open. Panics if `i`
    /// is out of range.
    pub fn outcome(&self, i: usize) -> Option<u8> {
        self.outcome[i]
    }

    /// Example `i`'s kind class. Panics if `i` is out of range.
    pub fn kind(&self, i: usize) -> u8 {
        self.kind[i]
    }

    /// Number of examples with an outcome (accepted or rejected).
    pub fn decided(&self) -> usize {
        self.outcome.iter().flatten().count()
    }

    /// The examples at `indices`, in that order; indices out of range are skipped.
    pub fn subset(&self, indices: &[usize]) -> Self {
        let mut out = Self::new();
        for &i in indices.iter().filter(|&&i| i < self.len()) {
            let (text, meta) = self.row(i);
            out.push_counted(&text, meta, self.outcome[i], self.kind[i]);
            out.set_last_sequence(self.sequence(i));
            *out.prior.last_mut().expect("just pushed") = self.prior[i];
        }
        out
    }

    /// The examples of `self` followed by those of `other`.
    pub fn concat(&self, other: &Self) -> Self {
        let mut out = self.clone();
        if out.offsets.is_empty() {
            out.offsets.push(0);
        }
        let base = out.ids.len();
        out.ids.extend_from_slice(&other.ids);
        out.counts.extend_from_slice(&other.counts);
        out.offsets
            .extend(other.offsets.iter().skip(1).map(|&o| base + o));
        out.text_len.extend_from_slice(&other.text_len);
        out.outcome.extend_from_slice(&other.outcome);
        out.kind.extend_from_slice(&other.kind);
        out.prior.extend_from_slice(&other.prior);
        if out.sequence_offsets.is_empty() {
            out.sequence_offsets.push(0);
        }
        let base = out.sequence.len();
        out.sequence.extend_from_slice(&other.sequence);
        out.sequence_offsets
            .extend(other.sequence_offsets.iter().skip(1).map(|&o| base + o));
        out
    }

    /// A copy with the outcome labels permuted among the decided examples by `seed` (the
    /// "shuffled labels" control: a model trained on it can learn no real signal).
    pub fn with_shuffled_outcomes(&self, seed: u64) -> Self {
        use rand::SeedableRng;
        use rand::seq::SliceRandom;
        let mut out = self.clone();
        let decided: Vec<usize> = (0..self.len())
            .filter(|&i| self.outcome[i].is_some())
            .collect();
        let mut labels: Vec<Option<u8>> = decided.iter().map(|&i| self.outcome[i]).collect();
        labels.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
        for (&i, label) in decided.iter().zip(labels) {
            out.outcome[i] = label;
        }
        out
    }

    /// Example `i`'s text ids with their counts, and its metadata ids.
    fn row(&self, i: usize) -> (Vec<(u32, u32)>, &[u32]) {
        let (start, end) = (self.offsets[i], self.offsets[i + 1]);
        let text = start + self.text_len[i] as usize;
        let counted = self.ids[start..text]
            .iter()
            .copied()
            .zip(self.counts[start..text].iter().copied())
            .collect();
        (counted, &self.ids[text..end])
    }

    /// The fraction of the examples whose text contains each bucket, `buckets` entries: what a
    /// member contributes to the federation's document frequencies (the example-weighted mean
    /// of the members' fractions is the federation's fraction). Ids at or above `buckets` are
    /// ignored; all zeros for an empty set.
    pub fn document_frequencies(&self, buckets: usize) -> Vec<f32> {
        let mut df = vec![0u64; buckets];
        for i in 0..self.len() {
            let start = self.offsets[i];
            for &id in &self.ids[start..start + self.text_len[i] as usize] {
                if let Some(d) = df.get_mut(id as usize) {
                    *d += 1;
                }
            }
        }
        let n = self.len().max(1) as f64;
        df.into_iter().map(|d| (d as f64 / n) as f32).collect()
    }

    /// Checks that every id is below `buckets` and every kind a known class.
    pub(crate) fn check_ids(&self, buckets: usize) -> Result<(), String> {
        if let Some(&id) = self
            .ids
            .iter()
            .chain(&self.sequence)
            .find(|&&id| id as usize >= buckets)
        {
            return Err(format!(
                "id {id} is not below the model's {buckets} buckets: encode with the model's featuriser"
            ));
        }
        let kinds = crate::data::proposals::ProposalKind::COUNT;
        if let Some(&k) = self.kind.iter().find(|&&k| usize::from(k) >= kinds) {
            return Err(format!("kind class {k} is not below {kinds}"));
        }
        Ok(())
    }

    /// `(ids [batch, len], weights [batch, len], prior [batch, 1])` of the examples at `indices` (in range),
    /// padded to the longest: each metadata id weighs `meta_scale / metadata ids`, padding 0,
    /// and each text id `1 / text ids` (a mean) under [`TextWeights::Mean`], or its TF-IDF
    /// weight ([`tf_idf`]: sublinear tf times idf, unit L2 norm per document) under
    /// [`TextWeights::TfIdf`]. The model sums the weighted embeddings.
    pub(crate) fn batch(
        &self,
        indices: &[usize],
        meta_scale: f32,
        text_weights: TextWeights<'_>,
        device: &Device,
    ) -> (Tensor<2, Int>, Tensor<2>, Tensor<2>) {
        let width = indices
            .iter()
            .map(|&i| self.offsets[i + 1] - self.offsets[i])
            .max()
            .unwrap_or(0)
            .max(1);
        let b = indices.len();
        let mut ids = vec![0i64; b * width];
        let mut weights = vec![0f32; b * width];
        for (r, &i) in indices.iter().enumerate() {
            let row = &self.ids[self.offsets[i]..self.offsets[i + 1]];
            let text = self.text_len[i] as usize;
            let meta = row.len() - text;
            let text_weight: Vec<f32> = match text_weights {
                TextWeights::Mean => vec![1.0 / text as f32; text],
                TextWeights::TfIdf(idf) => tf_idf(&self.row(i).0, idf),
                TextWeights::Off => vec![0.0; text],
            };
            for (c, &id) in row.iter().enumerate() {
                ids[r * width + c] = i64::from(id);
                weights[r * width + c] = if c >= text {
                    meta_scale / meta as f32
                } else {
                    text_weight[c]
                };
            }
        }
        let prior: Vec<f32> = indices.iter().map(|&i| self.prior[i]).collect();
        (
            Tensor::from_data(TensorData::new(ids, [b, width]), device),
            Tensor::from_data(TensorData::new(weights, [b, width]), device),
            Tensor::from_data(TensorData::new(prior, [b, 1]), device),
        )
    }

    /// `(ids [batch, len], padding [batch, len], pool [batch, len])` of the reading-order ids
    /// of the examples at `indices` (in range), each cut to its first `len` and padded to
    /// `len`: `padding` is true past a sequence's end, `pool` weighs each real position
    /// `1 / its length` (a mean) and padding 0. An example without a sequence reads one
    /// padding id (0) as its only, unmasked position, so attention never sees a row of
    /// nothing but padding.
    pub(crate) fn sequence_batch(
        &self,
        indices: &[usize],
        len: usize,
        device: &Device,
    ) -> (Tensor<2, Int>, Tensor<2, Bool>, Tensor<2>) {
        let len = len.max(1);
        let b = indices.len();
        let mut ids = vec![0i64; b * len];
        let mut padding = vec![true; b * len];
        let mut pool = vec![0f32; b * len];
        for (r, &i) in indices.iter().enumerate() {
            let seq = self.sequence(i);
            let n = seq.len().min(len).max(1);
            for c in 0..n {
                ids[r * len + c] = seq.get(c).map_or(0, |&id| i64::from(id));
                padding[r * len + c] = false;
                pool[r * len + c] = 1.0 / n as f32;
            }
        }
        (
            Tensor::from_data(TensorData::new(ids, [b, len]), device),
            Tensor::from_data(TensorData::new(padding, [b, len]), device),
            Tensor::from_data(TensorData::new(pool, [b, len]), device),
        )
    }
}

/// How [`EncodedProposals::batch`] weighs the text ids of a document.
#[derive(Debug, Clone, Copy)]
pub(crate) enum TextWeights<'a> {
    /// Each `1 / text ids`: the mean of the text embeddings.
    Mean,
    /// TF-IDF with these inverse document frequencies (one per bucket; `None`: all 1, before
    /// the document frequencies are known).
    TfIdf(Option<&'a [f32]>),
    /// Text ids weigh 0: only the metadata bag counts (the transformer reads the text as a
    /// sequence instead).
    Off,
}
