//! Streaming, example-weighted sums of client parameters in exact fixed point.
//!
//! The round engine adds each client's result as it arrives, chunk by chunk, and drops it right
//! after, so an aggregator's memory holds one sum per round, not one model per client.
//!
//! Each term `w·x` (an example count times an `f32` value) is exact in `f64`; it is rounded to
//! a multiple of 2⁻³² and summed in `i64`. Integer addition is associative, so the sum, and the
//! model that comes out of it, do not depend on the order in which clients' chunks arrive: an
//! aggregator that restarts and sees results in another order produces the same bytes. It is
//! also the encoding secure aggregation and discrete-Gaussian noise work in.
//!
//! A client whose upload breaks off mid-way leaves the values it had delivered in the sum; each
//! value is averaged over the weight of the clients that delivered it (see [`WeightedSum::mean`]).

use std::sync::Arc;

use crate::params::{ParamError, ParamVec, Schema};
use crate::round::Metrics;

/// Fractional bits of the fixed-point sum: terms are multiples of 2⁻³².
pub const FRACTION_BITS: u32 = 32;

const SCALE: f64 = (1u64 << FRACTION_BITS) as f64;

/// Values per block of the sum: 8 Mi values, 64 MiB (above glibc's largest mmap threshold, so
/// a freed block goes back to the operating system).
const BLOCK: usize = 1 << 23;

/// Largest weight (example count) of one result: `2²⁹`, so that `weight · value` is exact in
/// `f64`.
pub const MAX_WEIGHT: u64 = 1 << 29;

/// Largest magnitude of one term `weight · value`: `2³⁰`, so a term fits in 62 bits.
pub const MAX_TERM: f64 = (1u64 << 30) as f64;

/// A client's running contribution to a [`WeightedSum`], from [`WeightedSum::begin`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contribution(usize);

#[derive(Debug, Clone)]
struct Part {
    weight: u64,
    /// Values delivered so far: the contribution covers `[0, end)`.
    end: usize,
    complete: bool,
}

/// The running sum `Σ wᵢ·xᵢ` of client parameters `xᵢ` with weights `wᵢ` (example counts).
#[derive(Debug, Clone)]
pub struct WeightedSum {
    schema: Arc<Schema>,
    /// The sum in blocks of [`BLOCK`] values, so that turning it into the mean can free it as
    /// it goes (peak memory: the sum plus the mean, not the sum plus the mean plus a copy).
    sum: Vec<Vec<i64>>,
    len: usize,
    parts: Vec<Part>,
    total_weight: u64,
    count: usize,
    metric_sums: Metrics,
}

impl WeightedSum {
    /// An empty sum for parameters of `schema`.
    pub fn new(schema: Arc<Schema>) -> Self {
        let n = schema.num_values();
        let sum = (0..n.div_ceil(BLOCK))
            .map(|b| vec![0; BLOCK.min(n - b * BLOCK)])
            .collect();
        Self {
            schema,
            sum,
            len: n,
            parts: Vec::new(),
            total_weight: 0,
            count: 0,
            metric_sums: Metrics::new(),
        }
    }

    /// Adds a whole result: `params` with weight `weight`, and `metrics` weighted the same way.
    ///
    /// Refuses another schema, non-finite or out-of-range values and a zero or oversized
    /// weight, leaving the sum unchanged.
    pub fn add(
        &mut self,
        params: &ParamVec,
        weight: u64,
        metrics: &Metrics,
    ) -> Result<(), AggregateError> {
        if params.schema().hash() != self.schema.hash() {
            return Err(AggregateError::Params(ParamError::SchemaMismatch {
                expected: self.schema.hash(),
                got: params.schema().hash(),
            }));
        }
        check_weight(weight)?;
        let c = Contribution(self.parts.len());
        self.parts.push(Part {
            weight,
            end: 0,
            complete: false,
        });
        match self
            .extend(c, params.values())
            .and_then(|()| self.complete(c, metrics))
        {
            Ok(()) => Ok(()),
            Err(e) => {
                // `extend` is all-or-nothing, so nothing of this result is in the sum.
                self.parts.pop();
                Err(e)
            }
        }
    }

    /// Starts a result that will arrive in pieces, with weight `weight`.
    pub fn begin(&mut self, weight: u64) -> Result<Contribution, AggregateError> {
        check_weight(weight)?;
        self.parts.push(Part {
            weight,
            end: 0,
            complete: false,
        });
        Ok(Contribution(self.parts.len() - 1))
    }

    /// Adds the next `values` of contribution `c` (they continue where its last piece ended).
    ///
    /// All or nothing: non-finite or out-of-range values, values past the end of the schema, a
    /// finished contribution or an overflowing sum leave the sum unchanged.
    pub fn extend(&mut self, c: Contribution, values: &[f32]) -> Result<(), AggregateError> {
        let n = self.len;
        let part = self
            .parts
            .get(c.0)
            .ok_or(AggregateError::UnknownContribution)?;
        if part.complete {
            return Err(AggregateError::AlreadyComplete);
        }
        let start = part.end;
        if values.len() > n - start {
            return Err(AggregateError::TooManyValues {
                expected: n - start,
                got: values.len(),
            });
        }
        let w = part.weight as f64;
        let mut terms = Vec::with_capacity(values.len());
        for v in values {
            if !v.is_finite() {
                return Err(AggregateError::NonFinite);
            }
            // Exact: a 24-bit mantissa times a weight below 2^29, then a power of two.
            let t = w * f64::from(*v);
            if t.abs() > MAX_TERM {
                return Err(AggregateError::OutOfRange { value: *v });
            }
            terms.push((t * SCALE).round() as i64);
        }
        if let Err(done) = self.apply(start, &terms, i64::checked_add) {
            // Roll back the values already added; subtraction cannot overflow there.
            let _ = self.apply(start, &terms[..done], i64::checked_sub);
            return Err(AggregateError::Overflow);
        }
        self.parts[c.0].end = start + values.len();
        Ok(())
    }

    /// Marks contribution `c` complete once every value arrived, and adds its `metrics`.
    pub fn complete(&mut self, c: Contribution, metrics: &Metrics) -> Result<(), AggregateError> {
        let n = self.len;
        let part = self
            .parts
            .get_mut(c.0)
            .ok_or(AggregateError::UnknownContribution)?;
        if part.complete {
            return Err(AggregateError::AlreadyComplete);
        }
        if part.end != n {
            return Err(AggregateError::Incomplete {
                received: part.end,
                expected: n,
            });
        }
        part.complete = true;
        let w = part.weight as f64;
        for (k, v) in metrics {
            if v.is_finite() {
                *self.metric_sums.entry(k.clone()).or_insert(0.0) += w * v;
            }
        }
        self.total_weight += part.weight;
        self.count += 1;
        Ok(())
    }

    /// A sum that was computed elsewhere, as secure aggregation delivers it: `sum[i]` is
    /// `Σ wⱼ·xⱼ[i]` over `count` results of total weight `total_weight`, and `metric_sums`
    /// the weighted sums of their metrics. Values are rounded to the fixed-point grid.
    ///
    /// Refuses a length other than the schema's, non-finite or out-of-range values, and a zero
    /// count or weight.
    pub fn from_sum(
        schema: Arc<Schema>,
        sum: &[f64],
        total_weight: u64,
        count: usize,
        metric_sums: Metrics,
    ) -> Result<Self, AggregateError> {
        let mut this = Self::new(schema);
        if sum.len() != this.len {
            return Err(AggregateError::TooManyValues {
                expected: this.len,
                got: sum.len(),
            });
        }
        if count == 0 || total_weight == 0 {
            return Err(AggregateError::ZeroWeight);
        }
        let mut at = 0;
        for block in &mut this.sum {
            for s in block.iter_mut() {
                let v = sum[at];
                if !v.is_finite() {
                    return Err(AggregateError::NonFinite);
                }
                if v.abs() > MAX_TERM {
                    return Err(AggregateError::OutOfRange { value: v as f32 });
                }
                *s = (v * SCALE).round() as i64;
                at += 1;
            }
        }
        this.parts.push(Part {
            weight: total_weight,
            end: this.len,
            complete: true,
        });
        this.total_weight = total_weight;
        this.count = count;
        this.metric_sums = metric_sums;
        Ok(this)
    }

    /// Number of complete results.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Number of results that broke off after delivering some but not all values.
    pub fn partial(&self) -> usize {
        self.parts
            .iter()
            .filter(|p| !p.complete && p.end > 0)
            .count()
    }

    /// Sum of the weights of complete results.
    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }

    /// The schema of the summed parameters.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The raw fixed-point sum, one `i64` per parameter in units of 2⁻³², in order.
    pub fn raw(&self) -> impl Iterator<Item = i64> + '_ {
        self.sum.iter().flatten().copied()
    }

    /// Consumes the sum, yielding the raw fixed-point values in order (each block is freed once
    /// read).
    pub fn into_raw(self) -> impl Iterator<Item = i64> {
        self.sum.into_iter().flatten()
    }

    /// Combines `terms` into the sum from value `start` on with `op`; on failure returns how
    /// many terms were applied before it.
    fn apply(
        &mut self,
        start: usize,
        terms: &[i64],
        op: fn(i64, i64) -> Option<i64>,
    ) -> Result<(), usize> {
        let mut done = 0;
        while done < terms.len() {
            let at = start + done;
            let block = &mut self.sum[at / BLOCK];
            let from = at % BLOCK;
            let take = (block.len() - from).min(terms.len() - done);
            for (s, t) in block[from..from + take].iter_mut().zip(&terms[done..]) {
                match op(*s, *t) {
                    Some(v) => *s = v,
                    None => return Err(done),
                }
                done += 1;
            }
        }
        Ok(())
    }

    /// The weight behind each value, as runs `(end, weight)`: values before `end` (and after
    /// the previous run's end) were delivered by results of total weight `weight`.
    fn coverage(&self) -> Vec<(usize, u64)> {
        let n = self.len;
        let mut ends: Vec<(usize, u64)> = self
            .parts
            .iter()
            .filter(|p| p.end > 0)
            .map(|p| (p.end, p.weight))
            .collect();
        ends.sort_unstable_by_key(|e| std::cmp::Reverse(e.0));
        // Walk from the end of the vector backwards, adding each part's weight where it begins
        // to cover.
        let mut runs = Vec::new();
        let mut weight = 0u64;
        let mut i = 0;
        let mut hi = n;
        while i < ends.len() {
            let at = ends[i].0;
            if at < hi && weight > 0 {
                runs.push((hi, weight));
            }
            hi = hi.min(at);
            while i < ends.len() && ends[i].0 == at {
                weight += ends[i].1;
                i += 1;
            }
        }
        if hi > 0 && weight > 0 {
            runs.push((hi, weight));
        }
        runs.reverse();
        runs
    }

    /// The weighted mean rounded to `f32`, or `None` if no result is complete.
    ///
    /// Each value is divided by the weight of the results that delivered it: with only complete
    /// results that is `Σ wᵢ·xᵢ / Σ wᵢ`; values also delivered by a result that broke off
    /// include it.
    pub fn mean(&self) -> Option<ParamVec> {
        self.clone().into_mean()
    }

    /// Like [`mean`](Self::mean), consuming the sum and freeing it block by block as the mean
    /// is built.
    pub fn into_mean(mut self) -> Option<ParamVec> {
        if self.count == 0 {
            return None;
        }
        let coverage = self.coverage();
        let mut values = Vec::with_capacity(self.len);
        let mut runs = coverage.into_iter().peekable();
        let mut at = 0;
        for block in std::mem::take(&mut self.sum) {
            for s in block {
                while runs.peek().is_some_and(|&(end, _)| at >= end) {
                    runs.next();
                }
                let weight = runs.peek().map_or(0, |&(_, w)| w);
                values.push((s as f64 / (weight as f64 * SCALE)) as f32);
                at += 1;
            }
        }
        ParamVec::new(self.schema.clone(), values).ok()
    }

    /// The weighted mean of every reported metric over complete results.
    pub fn mean_metrics(&self) -> Metrics {
        if self.total_weight == 0 {
            return Metrics::new();
        }
        let w = self.total_weight as f64;
        self.metric_sums
            .iter()
            .map(|(k, s)| (k.clone(), s / w))
            .collect()
    }
}

fn check_weight(weight: u64) -> Result<(), AggregateError> {
    if weight == 0 {
        return Err(AggregateError::ZeroWeight);
    }
    if weight > MAX_WEIGHT {
        return Err(AggregateError::WeightTooLarge { weight });
    }
    Ok(())
}

/// Why a result could not be added to a sum.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum AggregateError {
    /// The parameters are for another model.
    #[error(transparent)]
    Params(#[from] ParamError),
    /// A result claims zero examples, so it cannot be weighted.
    #[error("a result with zero examples cannot be weighted")]
    ZeroWeight,
    /// A result claims more examples than the fixed-point sum can weight exactly.
    #[error("a weight of {weight} examples exceeds the limit of {MAX_WEIGHT}")]
    WeightTooLarge {
        /// The weight claimed.
        weight: u64,
    },
    /// A result holds NaN or infinite values.
    #[error("parameters contain NaN or infinite values")]
    NonFinite,
    /// A value whose weighted term exceeds [`MAX_TERM`].
    #[error("value {value} times its weight is outside the fixed-point range (±2^30)")]
    OutOfRange {
        /// The offending value.
        value: f32,
    },
    /// The sum of a value over results left the `i64` range.
    #[error("the fixed-point sum overflowed")]
    Overflow,
    /// More values than the schema has left.
    #[error("{got} values arrived where at most {expected} remain")]
    TooManyValues {
        /// Values the schema has left.
        expected: usize,
        /// Values received.
        got: usize,
    },
    /// A result was marked complete before all of its values arrived.
    #[error("result incomplete: {received} of {expected} values")]
    Incomplete {
        /// Values received.
        received: usize,
        /// Values expected.
        expected: usize,
    },
    /// The contribution was already complete.
    #[error("the result is already complete")]
    AlreadyComplete,
    /// A contribution handle from another sum.
    #[error("unknown contribution")]
    UnknownContribution,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::TensorSpec;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema::new(vec![TensorSpec::new("w", [3])]).unwrap())
    }

    #[test]
    fn weights_by_examples() {
        let s = schema();
        let mut sum = WeightedSum::new(s.clone());
        let a = ParamVec::new(s.clone(), vec![1.0, 2.0, 3.0]).unwrap();
        let b = ParamVec::new(s.clone(), vec![5.0, 6.0, 7.0]).unwrap();
        let ma = Metrics::from([("loss".to_string(), 1.0)]);
        let mb = Metrics::from([("loss".to_string(), 4.0)]);
        sum.add(&a, 30, &ma).unwrap();
        sum.add(&b, 10, &mb).unwrap();
        // (30·a + 10·b) / 40
        assert_eq!(sum.mean().unwrap().values(), &[2.0, 3.0, 4.0]);
        assert_eq!(sum.mean_metrics()["loss"], 1.75);
        assert_eq!(sum.count(), 2);
        assert_eq!(sum.total_weight(), 40);
    }

    #[test]
    fn bad_results_leave_the_sum_untouched() {
        let s = schema();
        let mut sum = WeightedSum::new(s.clone());
        let other = Arc::new(Schema::new(vec![TensorSpec::new("v", [3])]).unwrap());
        let wrong = ParamVec::new(other, vec![0.0; 3]).unwrap();
        assert!(matches!(
            sum.add(&wrong, 1, &Metrics::new()),
            Err(AggregateError::Params(_))
        ));
        let nan = ParamVec::new(s.clone(), vec![f32::NAN, 0.0, 0.0]).unwrap();
        assert_eq!(
            sum.add(&nan, 1, &Metrics::new()),
            Err(AggregateError::NonFinite)
        );
        let ok = ParamVec::new(s, vec![1.0; 3]).unwrap();
        assert_eq!(
            sum.add(&ok, 0, &Metrics::new()),
            Err(AggregateError::ZeroWeight)
        );
        assert_eq!(sum.count(), 0);
        assert!(sum.mean().is_none());
    }

    #[test]
    fn one_result_averages_to_itself_exactly() {
        let s = schema();
        let p = ParamVec::new(s.clone(), vec![0.1, -3.7e-5, 12345.678]).unwrap();
        let mut sum = WeightedSum::new(s);
        sum.add(&p, 1797, &Metrics::new()).unwrap();
        assert_eq!(sum.mean().unwrap(), p);
    }

    #[test]
    fn order_of_arrival_does_not_change_a_bit() {
        let s = Arc::new(Schema::new(vec![TensorSpec::new("w", [1000])]).unwrap());
        let results: Vec<(ParamVec, u64)> = (0..7u64)
            .map(|i| {
                let values = (0..1000)
                    .map(|j| ((i * 7919 + j * 104_729) % 9973) as f32 * 1.37e-3 - 6.1)
                    .collect();
                (ParamVec::new(s.clone(), values).unwrap(), 17 + i * 31)
            })
            .collect();
        let mut forward = WeightedSum::new(s.clone());
        for (p, w) in &results {
            forward.add(p, *w, &Metrics::new()).unwrap();
        }
        // Backwards, and chunked in a different way.
        let mut backward = WeightedSum::new(s.clone());
        for (p, w) in results.iter().rev() {
            let c = backward.begin(*w).unwrap();
            for piece in p.values().chunks(333) {
                backward.extend(c, piece).unwrap();
            }
            backward.complete(c, &Metrics::new()).unwrap();
        }
        assert!(forward.raw().eq(backward.raw()));
        assert_eq!(
            forward.mean().unwrap().content_hash(),
            backward.mean().unwrap().content_hash()
        );
    }

    #[test]
    fn a_broken_off_result_counts_only_where_it_delivered() {
        let s = Arc::new(Schema::new(vec![TensorSpec::new("w", [4])]).unwrap());
        let mut sum = WeightedSum::new(s.clone());
        let full = ParamVec::new(s.clone(), vec![1.0; 4]).unwrap();
        sum.add(&full, 1, &Metrics::new()).unwrap();
        let c = sum.begin(3).unwrap();
        sum.extend(c, &[5.0, 5.0]).unwrap();
        assert_eq!(
            sum.complete(c, &Metrics::new()),
            Err(AggregateError::Incomplete {
                received: 2,
                expected: 4
            })
        );
        assert_eq!(sum.count(), 1);
        assert_eq!(sum.partial(), 1);
        // (1 + 3·5) / 4 = 4 where both delivered, 1 elsewhere.
        assert_eq!(sum.mean().unwrap().values(), &[4.0, 4.0, 1.0, 1.0]);
    }

    #[test]
    fn extend_is_all_or_nothing() {
        let s = schema();
        let mut sum = WeightedSum::new(s.clone());
        let c = sum.begin(1).unwrap();
        assert_eq!(
            sum.extend(c, &[1.0, f32::INFINITY]),
            Err(AggregateError::NonFinite)
        );
        assert_eq!(
            sum.extend(c, &[1.0, 2e9]),
            Err(AggregateError::OutOfRange { value: 2e9 })
        );
        assert_eq!(
            sum.extend(c, &[1.0; 4]),
            Err(AggregateError::TooManyValues {
                expected: 3,
                got: 4
            })
        );
        assert!(sum.raw().all(|v| v == 0));
        // Overflow midway through a piece rolls the piece back.
        let big = (1u64 << 29) as f32;
        let mut sum = WeightedSum::new(s.clone());
        let mut pushed = 0;
        let err = loop {
            let c = sum.begin(2).unwrap();
            match sum.extend(c, &[1.0, big, big]) {
                Ok(()) => pushed += 1,
                Err(e) => break e,
            }
            assert!(pushed < 100, "never overflowed");
        };
        assert_eq!(err, AggregateError::Overflow);
        let expected = pushed as i64 * (2 << FRACTION_BITS);
        assert_eq!(sum.raw().next(), Some(expected));
        assert_eq!(
            sum.begin(MAX_WEIGHT + 1),
            Err(AggregateError::WeightTooLarge {
                weight: MAX_WEIGHT + 1
            })
        );
    }
}
