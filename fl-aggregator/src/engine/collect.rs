//! How a fit stage keeps the updates it receives, in the form its strategy asked for
//! ([`UpdateForm`]): folded into one streaming [`WeightedSum`] as they arrive (one sum in
//! memory, whatever the number of members), or kept member by member for a rule that reads
//! each update (one model per member in memory).
//!
//! Secure aggregation never delivers individual updates: its stages end by handing the
//! decoded sum over with [`Collected::from_sum`].

use std::collections::BTreeMap;
use std::sync::Arc;

use fl_core::aggregate::{AggregateError, MAX_WEIGHT};
use fl_core::{
    ClientId, Contribution, MemberUpdate, Metrics, ParamVec, RoundUpdates, Schema, SignedUpdate,
    UpdateForm, UpdateSum, WeightedSum,
};

/// The updates of one fit stage so far.
pub(super) struct Collected {
    store: Store,
    /// Members whose update is arriving in chunks.
    streaming: BTreeMap<ClientId, Streaming>,
}

enum Store {
    Sum(WeightedSum),
    PerMember {
        schema: Arc<Schema>,
        done: Vec<MemberUpdate>,
    },
}

enum Streaming {
    Sum(Contribution, Metrics),
    Member {
        weight: u64,
        metrics: Metrics,
        values: Vec<f32>,
        signed: Option<Box<SignedUpdate>>,
    },
}

impl Collected {
    /// An empty collection for a model of `schema`, in `form`.
    pub(super) fn new(schema: Arc<Schema>, form: UpdateForm) -> Self {
        let store = match form {
            UpdateForm::Sum => Store::Sum(WeightedSum::new(schema)),
            UpdateForm::PerMember => Store::PerMember {
                schema,
                done: Vec::new(),
            },
        };
        Self {
            store,
            streaming: BTreeMap::new(),
        }
    }

    /// A sum that a secure-aggregation protocol decoded.
    pub(super) fn from_sum(sum: WeightedSum) -> Self {
        Self {
            store: Store::Sum(sum),
            streaming: BTreeMap::new(),
        }
    }

    /// Whether `client`'s update is arriving in chunks.
    pub(super) fn is_streaming(&self, client: ClientId) -> bool {
        self.streaming.contains_key(&client)
    }

    /// Adds a whole update.
    pub(super) fn add(
        &mut self,
        client: ClientId,
        params: &ParamVec,
        weight: u64,
        metrics: &Metrics,
    ) -> Result<(), AggregateError> {
        match &mut self.store {
            Store::Sum(sum) => sum.add(params, weight, metrics),
            Store::PerMember { schema, done } => {
                if params.schema().hash() != schema.hash() {
                    return Err(AggregateError::Params(
                        fl_core::ParamError::SchemaMismatch {
                            expected: schema.hash(),
                            got: params.schema().hash(),
                        },
                    ));
                }
                check_member(weight, params.values())?;
                done.push(MemberUpdate::new(
                    client,
                    params.clone(),
                    weight,
                    metrics.clone(),
                ));
                Ok(())
            }
        }
    }

    /// Starts `client`'s chunked update of weight `weight`, with the member's signed statement
    /// of it if the transport has one (kept with a per-member update as evidence).
    pub(super) fn begin(
        &mut self,
        client: ClientId,
        weight: u64,
        metrics: Metrics,
        signed: Option<Box<SignedUpdate>>,
    ) -> Result<(), AggregateError> {
        let streaming = match &mut self.store {
            Store::Sum(sum) => Streaming::Sum(sum.begin(weight)?, metrics),
            Store::PerMember { .. } => {
                check_member(weight, &[])?;
                Streaming::Member {
                    weight,
                    metrics,
                    values: Vec::new(),
                    signed,
                }
            }
        };
        self.streaming.insert(client, streaming);
        Ok(())
    }

    /// The next chunk of `client`'s update; `None` if it has not begun one.
    pub(super) fn extend(
        &mut self,
        client: ClientId,
        chunk: &[f32],
    ) -> Option<Result<(), AggregateError>> {
        let streaming = self.streaming.get_mut(&client)?;
        Some(match (streaming, &mut self.store) {
            (Streaming::Sum(c, _), Store::Sum(sum)) => sum.extend(*c, chunk),
            (Streaming::Member { values, .. }, Store::PerMember { schema, .. }) => {
                let expected = schema.num_values();
                if values.len() + chunk.len() > expected {
                    Err(AggregateError::TooManyValues {
                        expected,
                        got: values.len() + chunk.len(),
                    })
                } else if chunk.iter().any(|v| !v.is_finite()) {
                    Err(AggregateError::NonFinite)
                } else {
                    values.extend_from_slice(chunk);
                    Ok(())
                }
            }
            _ => unreachable!("a streaming update always matches its store"),
        })
    }

    /// Completes `client`'s chunked update; `None` if it has not begun one.
    pub(super) fn complete(&mut self, client: ClientId) -> Option<Result<(), AggregateError>> {
        let streaming = self.streaming.remove(&client)?;
        Some(match (streaming, &mut self.store) {
            (Streaming::Sum(c, metrics), Store::Sum(sum)) => sum.complete(c, &metrics),
            (
                Streaming::Member {
                    weight,
                    metrics,
                    values,
                    signed,
                },
                Store::PerMember { schema, done },
            ) => ParamVec::new(schema.clone(), values)
                .map_err(AggregateError::Params)
                .map(|params| {
                    let update = MemberUpdate::new(client, params, weight, metrics)
                        .with_signed(signed.map(|s| *s));
                    done.push(update);
                }),
            _ => unreachable!("a streaming update always matches its store"),
        })
    }

    /// Forgets `client`'s unfinished update (it dropped out or failed). In a sum, the values it
    /// delivered stay (see [`WeightedSum::mean`]); a per-member store discards them.
    pub(super) fn forget(&mut self, client: ClientId) {
        self.streaming.remove(&client);
    }

    /// Complete updates so far.
    pub(super) fn count(&self) -> usize {
        match &self.store {
            Store::Sum(sum) => sum.count(),
            Store::PerMember { done, .. } => done.len(),
        }
    }

    /// Updates that broke off mid-upload but left values in the sum.
    pub(super) fn partial(&self) -> usize {
        match &self.store {
            Store::Sum(sum) => sum.partial(),
            Store::PerMember { .. } => 0,
        }
    }

    /// The round's updates for the strategy; `deltas` says whether members sent differences
    /// from the global model (under differential privacy) rather than their models.
    pub(super) fn into_updates(self, deltas: bool) -> RoundUpdates {
        match self.store {
            Store::Sum(sum) if deltas => RoundUpdates::Sum(UpdateSum::of_deltas(sum)),
            Store::Sum(sum) => RoundUpdates::Sum(UpdateSum::of_models(sum)),
            Store::PerMember { mut done, .. } => {
                done.sort_by_key(|u| u.client);
                RoundUpdates::PerMember(done)
            }
        }
    }
}

/// The checks a [`WeightedSum`] makes of a result, for one kept whole.
fn check_member(weight: u64, values: &[f32]) -> Result<(), AggregateError> {
    if weight == 0 {
        return Err(AggregateError::ZeroWeight);
    }
    if weight > MAX_WEIGHT {
        return Err(AggregateError::WeightTooLarge { weight });
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(AggregateError::NonFinite);
    }
    Ok(())
}
