//! Batches: exported as CARs, verified against the root registered on chain, indexed, and the
//! whole index rebuilt from the chain's events plus the content store.

use dao::data::RecordBatch;
use dao::{Dao, RegisteredBatch};
use fl_db::B256;
use fl_db::data::BatchRecord;

use super::car::{self, CarLimits};
use super::{ContentStore, ContributeError, ContributedRecord, records_of_car};

/// What [`rebuild_index`] did, batch by batch (roots in registration order).
#[derive(Debug, Default)]
pub struct RebuildReport {
    /// Batches indexed now.
    pub indexed: Vec<B256>,
    /// Batches the index held already (left as they were).
    pub already: Vec<B256>,
    /// Batches refused, and why (nothing of them indexed).
    pub refused: Vec<(B256, ContributeError)>,
}

fn digest(record: &ContributedRecord) -> B256 {
    B256::from(*record.cid().as_bytes())
}

/// The batch of `records` (its Merkle tree, what the registry registers) and its CAR v1: the
/// records as raw blocks in ascending digest order, every record a root.
pub fn export_batch(
    records: &[ContributedRecord],
) -> Result<(RecordBatch, Vec<u8>), ContributeError> {
    let mut sorted: Vec<&ContributedRecord> = records.iter().collect();
    sorted.sort_by_key(|r| digest(r));
    sorted.dedup_by_key(|r| digest(r));
    let digests: Vec<B256> = sorted.iter().map(|r| digest(r)).collect();
    let batch = RecordBatch::new(&digests).map_err(|_| ContributeError::EmptyBatch)?;
    let roots: Vec<_> = sorted.iter().map(|r| r.cid().to_cid()).collect();
    let car = car::write(&roots, sorted.iter().map(|r| (r.cid().to_cid(), r.bytes())));
    Ok((batch, car))
}

/// Reads the CAR of the registered `batch`, checks every block against its CID and as a signed
/// record, and checks that the records hash to the root on chain and number what it announced.
pub fn verify_batch(
    batch: &RegisteredBatch,
    car_bytes: &[u8],
) -> Result<Vec<ContributedRecord>, ContributeError> {
    let car = car::read(car_bytes, &CarLimits::default())?;
    let mut records = records_of_car(&car)?;
    records.sort_by_key(digest);
    records.dedup_by_key(|r| digest(r));
    let digests: Vec<B256> = records.iter().map(digest).collect();
    let computed = RecordBatch::new(&digests)
        .map_err(|_| ContributeError::EmptyBatch)?
        .root();
    if computed != batch.root {
        return Err(ContributeError::RootMismatch {
            root: batch.root,
            computed,
        });
    }
    if records.len() as u64 != u64::from(batch.records) {
        return Err(ContributeError::CountMismatch {
            root: batch.root,
            announced: u64::from(batch.records),
            found: records.len() as u64,
        });
    }
    Ok(records)
}

/// Indexes the registered `batch` with its (verified) `records` in one transaction.
pub async fn index_batch(
    db: &fl_db::Store,
    batch: &RegisteredBatch,
    records: &[ContributedRecord],
) -> Result<(), ContributeError> {
    let row = BatchRecord {
        root: batch.root,
        index: batch.index,
        contributor: batch.contributor,
        records: u64::from(batch.records),
        location: batch.location.clone(),
        // The registry's events, as `Dao::registered_batches` reads them, carry neither.
        block: None,
        tx: None,
    };
    let rows: Vec<_> = records.iter().map(ContributedRecord::index_row).collect();
    db.index_batch(&row, &rows).await?;
    Ok(())
}

/// Rebuilds the index in `db` from the chain and the content store: every batch the registry's
/// `BatchRegistered` events name, in order, whose CAR the content store holds is verified
/// ([`verify_batch`]), its records stored in the content store and indexed. A batch already
/// indexed is left as it is; a batch whose content is missing or refused is reported in
/// [`RebuildReport::refused`] and the others go on. Errors of the chain or of the database
/// stop it (what was indexed stays).
pub async fn rebuild_index(
    dao: &Dao,
    content: &ContentStore,
    db: &fl_db::Store,
) -> Result<RebuildReport, ContributeError> {
    let mut report = RebuildReport::default();
    for batch in dao.registered_batches().await? {
        if db.batch(&batch.root).await?.is_some() {
            report.already.push(batch.root);
            continue;
        }
        let verified = match content.batch_car(&batch.root)? {
            None => Err(ContributeError::MissingBatch { root: batch.root }),
            Some(car) => verify_batch(&batch, &car),
        };
        match verified {
            Ok(records) => {
                for record in &records {
                    content.put_record(record)?;
                }
                index_batch(db, &batch, &records).await?;
                report.indexed.push(batch.root);
            }
            Err(e) => report.refused.push((batch.root, e)),
        }
    }
    Ok(report)
}
