//! Data-registry calls of [`Dao`]: register a batch of contributed records, read one, and rebuild
//! the registered batches from the chain's events.

use alloy::primitives::{Address, B256};
use alloy::sol_types::SolEvent;

use super::Dao;
use crate::backend::TxReceipt;
use crate::bindings::DataRegistry;
use crate::data::RecordBatch;
use crate::{Error, Result};

/// A batch as the registry holds it, with where its content lives (from its event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredBatch {
    /// Merkle root of the records' CID digests ([`RecordBatch::root`]).
    pub root: B256,
    /// Who registered it.
    pub contributor: Address,
    /// Its number, in registration order (from 0).
    pub index: u64,
    /// Records announced.
    pub records: u32,
    /// Where the content lives (an `ipfs://` CAR, a content-store URL).
    pub location: String,
}

impl Dao {
    /// Registers `batch` (the sender must be staked as an annotator, unjailed), stored at
    /// `location`; returns the receipt and the batch's index.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a batch of more than `u32::MAX` records; [`Error::Reverted`]:
    /// `NotAnnotator`, `BatchExists`, `InvalidRecordCount`, `InvalidLocation`, `ZeroRoot`.
    pub async fn register_batch(
        &self,
        batch: &RecordBatch,
        location: &str,
    ) -> Result<(TxReceipt, u64)> {
        let records = u32::try_from(batch.len())
            .map_err(|_| Error::InvalidInput(format!("{} records in one batch", batch.len())))?;
        let receipt = self
            .send(
                self.deployment.data_registry,
                DataRegistry::registerBatchCall {
                    root: batch.root(),
                    records,
                    location: location.to_owned(),
                },
            )
            .await?;
        let index = receipt
            .logs
            .iter()
            .find_map(|l| DataRegistry::BatchRegistered::decode_log_data(&l.data).ok())
            .map(|e| e.index)
            .ok_or_else(|| Error::InvalidInput("no BatchRegistered event in the receipt".into()))?;
        Ok((receipt, index))
    }

    /// The batch registered under `root`, if any (without its location: see
    /// [`registered_batches`](Self::registered_batches)).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn data_batch(&self, root: B256) -> Result<Option<(Address, u32, u64)>> {
        let b = self
            .view(
                self.deployment.data_registry,
                DataRegistry::batchCall { root },
            )
            .await?;
        Ok((!b.contributor.is_zero()).then_some((b.contributor, b.records, b.index)))
    }

    /// Every registered batch, in registration order, rebuilt from `BatchRegistered` events
    /// (what an indexer replays to rebuild the data set with the content store).
    ///
    /// # Errors
    /// An endpoint error.
    pub async fn registered_batches(&self) -> Result<Vec<RegisteredBatch>> {
        let logs = self
            .backend
            .logs(self.deployment.data_registry, self.deployment.block_number)
            .await?;
        let mut batches: Vec<RegisteredBatch> = logs
            .iter()
            .filter(|l| l.topics().first() == Some(&DataRegistry::BatchRegistered::SIGNATURE_HASH))
            .filter_map(|l| {
                let e = DataRegistry::BatchRegistered::decode_log(l).ok()?;
                Some(RegisteredBatch {
                    root: e.root,
                    contributor: e.contributor,
                    index: e.index,
                    records: e.records,
                    location: e.location.clone(),
                })
            })
            .collect();
        batches.sort_by_key(|b| b.index);
        Ok(batches)
    }
}
