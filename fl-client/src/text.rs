//! Text to model input without a vocabulary: a hashing n-gram featuriser.
//!
//! A [`HashingFeaturizer`] turns a document into a bag of bucket ids: word unigrams and
//! bigrams (and, optionally, character n-grams of each word), each hashed (64-bit FNV-1a over
//! its bytes, with a per-feature-type prefix) into one of `2^buckets_log2` buckets. A model
//! then learns one embedding per bucket.
//!
//! ## Why hashing, not a vocabulary
//!
//! A vocabulary is a list of the tokens the members' texts contain; agreeing on one means
//! either pooling texts (which federated learning exists to avoid) or summing members' token
//! counts under secure aggregation, an extra protocol round whose result still reveals which
//! rare tokens exist somewhere in the federation. Hashing needs no agreement at all: the
//! bucket of a token is a fixed function of the token, so every member and every inference
//! node computes the same ids from its own text alone, new words need no vocabulary update,
//! and the model's input side is fully described by [`HashingConfig`] (its
//! [`digest`](HashingConfig::digest) goes into the model card). The price is collisions:
//! with 2^18 buckets and a few hundred thousand distinct n-grams, some unrelated n-grams share
//! an embedding, which costs a linear text model little.
//!
//! ## Tokens and truncation
//!
//! Text is lower-cased and split into runs of alphanumeric characters (and `_`); runs of one
//! character are dropped (as scikit-learn's default `\b\w\w+\b`), and runs longer than
//! [`MAX_TOKEN_CHARS`] are cut. A proposal's tokens are its title's, then its body's, and only
//! the first [`HashingConfig::max_tokens`] are kept: long proposals (the longest has 47,000
//! words, the median 890) are truncated, never chunked, so every document costs at most
//! `max_tokens` unigrams and as many bigrams. Within a document each bucket id is kept once
//! ([`HashingFeaturizer::ids`]), with its count where a model weighs terms by frequency
//! ([`HashingFeaturizer::id_counts`], [`tf_idf`]).
//!
//! Metadata the member knows about its own proposal (its community) goes into a separate,
//! small bag ([`HashingFeaturizer::meta_ids`]) so that it is not diluted among a thousand
//! text n-grams.

use fl_core::ContentHash;
use serde::{Deserialize, Serialize};

/// Characters kept of a single token; longer runs (hashes, base64) are cut.
pub const MAX_TOKEN_CHARS: usize = 40;

/// Version of the hashing scheme, part of the [`HashingConfig::digest`]. Change it whenever
/// the ids a text hashes to change.
pub const SCHEME: &str = "daofl-hashing-ngrams-v1";

/// How text becomes bucket ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HashingConfig {
    /// The number of buckets is `2^buckets_log2` (8..=24).
    pub buckets_log2: u8,
    /// Longest word n-gram: 1 (unigrams) or 2 (unigrams and bigrams) or 3.
    pub word_ngrams: u8,
    /// Character n-grams of each word, `(min, max)` lengths with the word padded by `<` and
    /// `>` (fastText's subwords); `None` for none.
    pub char_ngrams: Option<(u8, u8)>,
    /// Tokens kept per document (title first, then body).
    pub max_tokens: usize,
}

impl Default for HashingConfig {
    /// 2^18 buckets, word unigrams and bigrams, no character n-grams, the first 1,024 tokens.
    fn default() -> Self {
        Self {
            buckets_log2: 18,
            word_ngrams: 2,
            char_ngrams: None,
            max_tokens: 1024,
        }
    }
}

impl HashingConfig {
    /// Number of buckets.
    pub fn buckets(&self) -> usize {
        1usize << self.buckets_log2
    }

    /// Checks the ranges of every field.
    pub fn validate(&self) -> Result<(), String> {
        if !(8..=24).contains(&self.buckets_log2) {
            return Err(format!(
                "buckets_log2 must be in 8..=24, got {}",
                self.buckets_log2
            ));
        }
        if !(1..=3).contains(&self.word_ngrams) {
            return Err(format!(
                "word_ngrams must be 1, 2 or 3, got {}",
                self.word_ngrams
            ));
        }
        if let Some((lo, hi)) = self.char_ngrams
            && !(1 <= lo && lo <= hi && hi <= 8)
        {
            return Err(format!(
                "char_ngrams must satisfy 1 <= min <= max <= 8, got ({lo}, {hi})"
            ));
        }
        if !(1..=1 << 20).contains(&self.max_tokens) {
            return Err(format!(
                "max_tokens must be in 1..=1048576, got {}",
                self.max_tokens
            ));
        }
        Ok(())
    }

    /// The canonical description of this featuriser (scheme and every field), what
    /// [`digest`](Self::digest) hashes.
    pub fn canonical(&self) -> String {
        let chars = match self.char_ngrams {
            Some((lo, hi)) => format!("{lo}-{hi}"),
            None => "none".into(),
        };
        format!(
            "{SCHEME};hash=fnv1a64;lowercase;token=alnum_underscore_min2_max{MAX_TOKEN_CHARS};\
             buckets_log2={};word_ngrams={};char_ngrams={chars};max_tokens={};order=title,text;dedup",
            self.buckets_log2, self.word_ngrams, self.max_tokens
        )
    }

    /// A stable content address of this configuration (CIDv1 of [`canonical`](Self::canonical)):
    /// two featurisers with the same digest give every text the same ids.
    pub fn digest(&self) -> ContentHash {
        ContentHash::of(self.canonical().as_bytes())
    }
}

/// Turns text into bucket ids per a [`HashingConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashingFeaturizer {
    config: HashingConfig,
    mask: u64,
}

/// Feature-type prefixes, so that a unigram, a bigram and a character n-gram of the same bytes
/// land in different buckets.
const UNIGRAM: u8 = 1;
const BIGRAM: u8 = 2;
const TRIGRAM: u8 = 3;
const CHARS: u8 = 4;
const META: u8 = 5;

impl HashingFeaturizer {
    /// A featuriser for a valid `config`.
    pub fn new(config: HashingConfig) -> Result<Self, String> {
        config.validate()?;
        let mask = (1u64 << config.buckets_log2) - 1;
        Ok(Self { config, mask })
    }

    /// The configuration.
    pub fn config(&self) -> &HashingConfig {
        &self.config
    }

    /// The tokens of `title` then `text`, at most `max_tokens` of them.
    pub fn tokens(&self, title: &str, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        for part in [title, text] {
            if !push_tokens(part, self.config.max_tokens, &mut out) {
                break;
            }
        }
        out
    }

    /// The sorted, distinct bucket ids of a document's n-grams.
    pub fn ids(&self, title: &str, text: &str) -> Vec<u32> {
        let mut ids = self.all_ids(title, text);
        ids.dedup();
        ids
    }

    /// The sorted, distinct bucket ids of a document's n-grams with how often each occurs
    /// (the term frequencies of [`sublinear_tf`]); the ids are exactly [`ids`](Self::ids)'s.
    pub fn id_counts(&self, title: &str, text: &str) -> Vec<(u32, u32)> {
        self.id_counts_of(&self.tokens(title, text))
    }

    /// [`id_counts`](Self::id_counts) and [`sequence`](Self::sequence) (of at most `limit`
    /// ids) of one document, tokenised once.
    pub fn counts_and_sequence(
        &self,
        title: &str,
        text: &str,
        limit: usize,
    ) -> (Vec<(u32, u32)>, Vec<u32>) {
        let tokens = self.tokens(title, text);
        (self.id_counts_of(&tokens), self.sequence_of(&tokens, limit))
    }

    fn id_counts_of(&self, tokens: &[String]) -> Vec<(u32, u32)> {
        let mut out: Vec<(u32, u32)> = Vec::new();
        for id in self.all_ids_of(tokens) {
            match out.last_mut() {
                Some((last, count)) if *last == id => *count += 1,
                _ => out.push((id, 1)),
            }
        }
        out
    }

    /// The bucket ids of the first `limit` tokens (title, then text) in reading order,
    /// unigrams only, repeats kept: what a sequence model (the proposal transformer) reads,
    /// where [`ids`](Self::ids) is a bag. At most `min(limit, max_tokens)` ids.
    pub fn sequence(&self, title: &str, text: &str, limit: usize) -> Vec<u32> {
        self.sequence_of(&self.tokens(title, text), limit)
    }

    fn sequence_of(&self, tokens: &[String], limit: usize) -> Vec<u32> {
        tokens
            .iter()
            .take(limit)
            .map(|t| self.bucket(UNIGRAM, &[t.as_bytes()]))
            .collect()
    }

    /// Every n-gram's bucket id, sorted, repeats kept.
    fn all_ids(&self, title: &str, text: &str) -> Vec<u32> {
        self.all_ids_of(&self.tokens(title, text))
    }

    fn all_ids_of(&self, tokens: &[String]) -> Vec<u32> {
        let mut ids = Vec::with_capacity(tokens.len() * usize::from(self.config.word_ngrams));
        for (i, t) in tokens.iter().enumerate() {
            ids.push(self.bucket(UNIGRAM, &[t.as_bytes()]));
            if self.config.word_ngrams >= 2 && i >= 1 {
                ids.push(self.bucket(BIGRAM, &[tokens[i - 1].as_bytes(), t.as_bytes()]));
            }
            if self.config.word_ngrams >= 3 && i >= 2 {
                let parts = [
                    tokens[i - 2].as_bytes(),
                    tokens[i - 1].as_bytes(),
                    t.as_bytes(),
                ];
                ids.push(self.bucket(TRIGRAM, &parts));
            }
            if let Some((lo, hi)) = self.config.char_ngrams {
                let padded: Vec<char> = std::iter::once('<')
                    .chain(t.chars())
                    .chain(std::iter::once('>'))
                    .collect();
                for n in usize::from(lo)..=usize::from(hi) {
                    for w in padded.windows(n) {
                        let gram: String = w.iter().collect();
                        ids.push(self.bucket(CHARS, &[gram.as_bytes()]));
                    }
                }
            }
        }
        ids.sort_unstable();
        ids
    }

    /// The bucket ids of metadata fields (`name=value`), e.g. `[("community", "ethereum")]`,
    /// sorted and distinct.
    pub fn meta_ids(&self, fields: &[(&str, &str)]) -> Vec<u32> {
        let mut ids: Vec<u32> = fields
            .iter()
            .map(|(k, v)| self.bucket(META, &[k.as_bytes(), v.to_lowercase().as_bytes()]))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn bucket(&self, kind: u8, parts: &[&[u8]]) -> u32 {
        let mut h = Fnv1a::new();
        h.write(&[kind]);
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                h.write(&[0x1f]);
            }
            h.write(p);
        }
        (h.0 & self.mask) as u32
    }
}

/// Sublinear term frequency, `1 + ln(count)` (scikit-learn's `sublinear_tf`), for a count of
/// at least 1; 0 for 0.
pub fn sublinear_tf(count: u32) -> f32 {
    if count == 0 {
        0.0
    } else {
        1.0 + (count as f32).ln()
    }
}

/// Inverse document frequency of a term that occurs in the fraction `df_fraction` of the
/// documents: `ln((1 + s) / (df_fraction + s)) + 1` with smoothing `s`.
///
/// With `s = 1/N` over `N` documents this is scikit-learn's smoothed
/// `ln((1 + N) / (1 + df)) + 1` (`df` the document count): one extra document containing every
/// term. The federation learns the fraction (the members' document frequencies averaged with
/// their example counts as weights, see
/// [`EncodedProposals::document_frequencies`](crate::trainer::proposals::EncodedProposals::document_frequencies)),
/// not `N`, so `s` is a model setting.
pub fn idf(df_fraction: f32, smoothing: f32) -> f32 {
    ((1.0 + smoothing) / (df_fraction.max(0.0) + smoothing)).ln() + 1.0
}

/// TF-IDF weights of one document: `sublinear_tf(count) · idf[id]` per `(id, count)`, scaled
/// to unit L2 norm (all zeros stay zeros). `idf` has one entry per bucket; `None` weighs every
/// bucket 1 (term frequencies only).
pub fn tf_idf(counts: &[(u32, u32)], idf: Option<&[f32]>) -> Vec<f32> {
    let mut w: Vec<f32> = counts
        .iter()
        .map(|&(id, c)| sublinear_tf(c) * idf.map_or(1.0, |idf| idf[id as usize]))
        .collect();
    let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        w.iter_mut().for_each(|x| *x /= norm);
    }
    w
}

/// Appends the tokens of `text` to `out` until it holds `max` tokens; false once it is full.
fn push_tokens(text: &str, max: usize, out: &mut Vec<String>) -> bool {
    let mut current = String::new();
    let mut chars = 0usize;
    let flush = |current: &mut String, chars: &mut usize, out: &mut Vec<String>| {
        if *chars >= 2 {
            out.push(std::mem::take(current));
        } else {
            current.clear();
        }
        *chars = 0;
    };
    for c in text.chars() {
        if out.len() >= max {
            return false;
        }
        if c.is_alphanumeric() || c == '_' {
            if chars < MAX_TOKEN_CHARS {
                current.extend(c.to_lowercase());
            }
            chars += 1;
        } else if chars > 0 {
            flush(&mut current, &mut chars, out);
        }
    }
    if chars > 0 && out.len() < max {
        flush(&mut current, &mut chars, out);
    }
    out.len() < max
}

/// 64-bit FNV-1a: simple, fast on short keys, identical on every platform and Rust version
/// (unlike `std`'s `DefaultHasher`).
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn featurizer(config: HashingConfig) -> HashingFeaturizer {
        HashingFeaturizer::new(config).unwrap()
    }

    #[test]
    fn a_sequence_keeps_reading_order_repeats_and_its_limit() {
        let f = featurizer(HashingConfig {
            max_tokens: 5,
            ..HashingConfig::default()
        });
        let seq = f.sequence("Raise fee", "fee raise fee raise", 100);
        assert_eq!(seq.len(), 5, "max_tokens bounds it");
        assert_eq!((seq[0], seq[1]), (seq[3], seq[2]), "raise fee | fee raise");
        assert_eq!(seq[1], seq[4]);
        assert_ne!(seq[0], seq[1]);
        assert_eq!(f.sequence("Raise fee", "fee", 2), seq[..2]);
        // The unigram ids of the bag, in order and with repeats.
        let bag = HashingFeaturizer::new(HashingConfig {
            word_ngrams: 1,
            max_tokens: 5,
            ..HashingConfig::default()
        })
        .unwrap();
        let mut sorted = seq.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(bag.ids("Raise fee", "fee raise fee raise"), sorted);
        assert!(f.sequence("", "", 10).is_empty());
        assert_eq!(
            f.counts_and_sequence("Raise fee", "fee raise fee raise", 3),
            (
                f.id_counts("Raise fee", "fee raise fee raise"),
                seq[..3].to_vec()
            )
        );
    }

    #[test]
    fn tokens_are_lowercased_words_of_two_or_more_characters() {
        let f = featurizer(HashingConfig::default());
        assert_eq!(
            f.tokens(
                "EIP-1559: Fee market",
                "A change to the fee_market, ÜBER x."
            ),
            [
                "eip",
                "1559",
                "fee",
                "market",
                "change",
                "to",
                "the",
                "fee_market",
                "über"
            ]
        );
        let long = "a".repeat(100);
        assert_eq!(f.tokens(&long, "")[0].len(), MAX_TOKEN_CHARS);
    }

    #[test]
    fn truncation_keeps_the_first_tokens_title_first() {
        let f = featurizer(HashingConfig {
            max_tokens: 3,
            ..Default::default()
        });
        assert_eq!(
            f.tokens("one two", "three four five"),
            ["one", "two", "three"]
        );
        assert_eq!(
            f.tokens("one two three four", "five"),
            ["one", "two", "three"]
        );
        // Everything past the limit is ignored: appending text changes nothing.
        assert_eq!(
            f.ids("one two", "three four"),
            f.ids("one two", "three five six")
        );
    }

    #[test]
    fn ids_are_stable_distinct_and_in_range() {
        let config = HashingConfig {
            buckets_log2: 10,
            char_ngrams: Some((3, 4)),
            ..Default::default()
        };
        let f = featurizer(config.clone());
        let ids = f.ids("Hello world", "hello world again");
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|&i| (i as usize) < config.buckets()));
        // unigrams hello, world, again; bigrams hello_world, world_hello, world_again; and
        // character grams: most distinct after hashing into 1,024 buckets.
        assert!(ids.len() > 10);
        // The same text always gives the same ids (FNV-1a is fixed, not seeded per process).
        assert_eq!(
            featurizer(HashingConfig::default()).ids("governance", ""),
            vec![(fnv(&[&[UNIGRAM], b"governance"]) & ((1 << 18) - 1)) as u32]
        );
        // Bigrams add ids; word order then matters.
        let uni = featurizer(HashingConfig {
            word_ngrams: 1,
            ..Default::default()
        });
        assert_eq!(uni.ids("a b", "cc dd"), uni.ids("", "dd cc"));
        let bi = featurizer(HashingConfig::default());
        assert_ne!(bi.ids("", "cc dd"), bi.ids("", "dd cc"));
        // Metadata and words of the same text hash apart.
        assert_ne!(
            bi.meta_ids(&[("community", "python")]),
            bi.ids("python", "")
        );
    }

    fn fnv(parts: &[&[u8]]) -> u64 {
        let mut h = Fnv1a::new();
        for p in parts {
            h.write(p);
        }
        h.0
    }

    #[test]
    fn counts_keep_repeats_and_match_the_ids() {
        let f = featurizer(HashingConfig {
            word_ngrams: 1,
            ..Default::default()
        });
        let counts = f.id_counts("fee fee", "market fee");
        assert_eq!(
            counts.iter().map(|c| c.0).collect::<Vec<_>>(),
            f.ids("fee fee", "market fee")
        );
        let fee = f.ids("fee", "")[0];
        let market = f.ids("market", "")[0];
        assert!(counts.contains(&(fee, 3)) && counts.contains(&(market, 1)));
        assert_eq!(counts.len(), 2);
    }

    /// A hand-computed example: 4 documents; term a in all 4, b in 1.
    /// idf(a) = ln(5/5) + 1 = 1, idf(b) = ln(5/2) + 1 = 1.916291 (scikit-learn's smooth idf,
    /// `s = 1/N`). A document with a twice and b once: tf 1 + ln 2 = 1.693147 and 1, weights
    /// (1.693147, 1.916291) / 2.557131 = (0.662128, 0.749391).
    #[test]
    fn tf_idf_matches_a_hand_computed_example() {
        let n = 4.0f32;
        let (idf_a, idf_b) = (idf(4.0 / n, 1.0 / n), idf(1.0 / n, 1.0 / n));
        assert!((idf_a - 1.0).abs() < 1e-6, "{idf_a}");
        assert!((idf_b - 1.916_291).abs() < 1e-5, "{idf_b}");
        assert!((sublinear_tf(2) - 1.693_147).abs() < 1e-6);
        assert_eq!((sublinear_tf(1), sublinear_tf(0)), (1.0, 0.0));
        let w = tf_idf(&[(0, 2), (1, 1)], Some(&[idf_a, idf_b]));
        assert!((w[0] - 0.662_128).abs() < 1e-5, "{w:?}");
        assert!((w[1] - 0.749_391).abs() < 1e-5, "{w:?}");
        // Without idf: tf only, still unit length.
        let w = tf_idf(&[(0, 1), (1, 1)], None);
        assert!((w[0] - 0.5f32.sqrt()).abs() < 1e-6 && w[0] == w[1]);
        assert!(tf_idf(&[], None).is_empty());
    }

    #[test]
    fn digest_names_the_configuration() {
        let a = HashingConfig::default();
        assert_eq!(a.digest(), HashingConfig::default().digest());
        let b = HashingConfig {
            max_tokens: 512,
            ..Default::default()
        };
        assert_ne!(a.digest(), b.digest());
        assert!(a.canonical().starts_with(SCHEME));
    }

    #[test]
    fn invalid_configurations_are_refused() {
        for bad in [
            HashingConfig {
                buckets_log2: 30,
                ..Default::default()
            },
            HashingConfig {
                word_ngrams: 0,
                ..Default::default()
            },
            HashingConfig {
                char_ngrams: Some((4, 3)),
                ..Default::default()
            },
            HashingConfig {
                max_tokens: 0,
                ..Default::default()
            },
        ] {
            assert!(HashingFeaturizer::new(bad).is_err());
        }
        assert!(toml::from_str::<HashingConfig>("buckets_log2 = 12\ntypo = 1").is_err());
    }
}
