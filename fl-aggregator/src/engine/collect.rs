//! How a fit stage keeps the updates it receives, in the form its strategy asked for
//! ([`UpdateForm`]): folded into one streaming [`WeightedSum`] as they arrive (one sum in
//! memory, whatever the number of members), or kept member by member for a rule that reads
//! each update (one model per member in memory).
//!
//! Secure aggregation never delivers individual updates: its stages end by handing the
//! decoded sum over with [`Collected::from_sum`].
//!
//! In a SCAFFOLD round ([`requiring_control`](Collected::requiring_control)) every member's
//! update must come with its control-variate difference `Δcᵢ`
//! ([`ClientMessage::ControlChunk`](fl_core::ClientMessage::ControlChunk)s, whole before a
//! `FitDone` or streamed before a `FitEnd`): one of the model's length, finite, or the update
//! is refused.

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
    /// SCAFFOLD: the control-variate differences arriving, by member; `None` outside SCAFFOLD
    /// rounds.
    controls: Option<BTreeMap<ClientId, Vec<f32>>>,
}

/// Why a member's result was refused.
#[derive(Debug, thiserror::Error)]
pub(super) enum CollectError {
    /// The update itself.
    #[error(transparent)]
    Update(#[from] AggregateError),
    /// A SCAFFOLD update without (all of) its control-variate difference.
    #[error(
        "the SCAFFOLD control-variate difference has {got} of the model's {expected} values \
         (a member must send its Δc with every update of a SCAFFOLD round)"
    )]
    ControlLength {
        /// The model's values.
        expected: usize,
        /// Values received.
        got: usize,
    },
    /// Non-finite values in a control-variate difference.
    #[error("the SCAFFOLD control-variate difference holds NaN or infinite values")]
    ControlNonFinite,
    /// Control-variate values in a round that is not SCAFFOLD.
    #[error("control-variate values in a round that is not a SCAFFOLD round")]
    UnexpectedControl,
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
            controls: None,
        }
    }

    /// The same collection for a SCAFFOLD round when `scaffold` (per-member form only): every
    /// update must come with its control-variate difference.
    pub(super) fn requiring_control(mut self, scaffold: bool) -> Self {
        self.controls =
            (scaffold && matches!(self.store, Store::PerMember { .. })).then(BTreeMap::new);
        self
    }

    /// The next values of `client`'s control-variate difference.
    pub(super) fn extend_control(
        &mut self,
        client: ClientId,
        chunk: &[f32],
    ) -> Result<(), CollectError> {
        let (Some(controls), Store::PerMember { schema, .. }) = (&mut self.controls, &self.store)
        else {
            return Err(CollectError::UnexpectedControl);
        };
        let expected = schema.num_values();
        let values = controls.entry(client).or_default();
        if values.len() + chunk.len() > expected {
            let got = values.len() + chunk.len();
            controls.remove(&client);
            return Err(CollectError::ControlLength { expected, got });
        }
        if chunk.iter().any(|v| !v.is_finite()) {
            controls.remove(&client);
            return Err(CollectError::ControlNonFinite);
        }
        values.extend_from_slice(chunk);
        Ok(())
    }

    /// `client`'s whole control-variate difference, taken out (`None` outside SCAFFOLD rounds).
    fn take_control(
        &mut self,
        client: ClientId,
        schema: &Arc<Schema>,
    ) -> Result<Option<ParamVec>, CollectError> {
        let Some(controls) = &mut self.controls else {
            return Ok(None);
        };
        let values = controls.remove(&client).unwrap_or_default();
        let expected = schema.num_values();
        if values.len() != expected {
            return Err(CollectError::ControlLength {
                expected,
                got: values.len(),
            });
        }
        ParamVec::new(schema.clone(), values)
            .map(Some)
            .map_err(|e| CollectError::Update(AggregateError::Params(e)))
    }

    /// A sum that a secure-aggregation protocol decoded.
    pub(super) fn from_sum(sum: WeightedSum) -> Self {
        Self {
            store: Store::Sum(sum),
            streaming: BTreeMap::new(),
            controls: None,
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
    ) -> Result<(), CollectError> {
        let schema = match &self.store {
            Store::PerMember { schema, .. } => schema.clone(),
            Store::Sum(sum) => sum.schema().clone(),
        };
        let control = self.take_control(client, &schema);
        match &mut self.store {
            Store::Sum(sum) => Ok(sum.add(params, weight, metrics)?),
            Store::PerMember { schema, done } => {
                if params.schema().hash() != schema.hash() {
                    return Err(AggregateError::Params(fl_core::ParamError::SchemaMismatch {
                        expected: schema.hash(),
                        got: params.schema().hash(),
                    })
                    .into());
                }
                check_member(weight, params.values())?;
                done.push(
                    MemberUpdate::new(client, params.clone(), weight, metrics.clone())
                        .with_control_delta(control?),
                );
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
    pub(super) fn complete(&mut self, client: ClientId) -> Option<Result<(), CollectError>> {
        let streaming = self.streaming.remove(&client)?;
        let control = match &self.store {
            Store::PerMember { schema, .. } => self.take_control(client, &schema.clone()),
            Store::Sum(_) => Ok(None),
        };
        Some(match (streaming, &mut self.store) {
            (Streaming::Sum(c, metrics), Store::Sum(sum)) => {
                sum.complete(c, &metrics).map_err(CollectError::from)
            }
            (
                Streaming::Member {
                    weight,
                    metrics,
                    values,
                    signed,
                },
                Store::PerMember { schema, done },
            ) => control.and_then(|control| {
                let params =
                    ParamVec::new(schema.clone(), values).map_err(AggregateError::Params)?;
                let update = MemberUpdate::new(client, params, weight, metrics)
                    .with_signed(signed.map(|s| *s))
                    .with_control_delta(control);
                done.push(update);
                Ok(())
            }),
            _ => unreachable!("a streaming update always matches its store"),
        })
    }

    /// Forgets `client`'s unfinished update (it dropped out or failed). In a sum, the values it
    /// delivered stay (see [`WeightedSum::mean`]); a per-member store discards them.
    pub(super) fn forget(&mut self, client: ClientId) {
        self.streaming.remove(&client);
        if let Some(controls) = &mut self.controls {
            controls.remove(&client);
        }
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
