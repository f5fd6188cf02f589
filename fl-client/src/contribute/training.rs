//! Training on contributed data: the proposals the DAO's annotators labelled by consensus,
//! read from the index ([`fl_db::data`]) and the content store, encoded for the proposal model
//! ([`ProposalTrainer`](crate::trainer::proposals::ProposalTrainer)), so a member's node trains
//! on its community's contributed proposals next to its private ones.
//!
//! A proposal record counts when an epoch's consensus decided its category (the kind head needs
//! a class); its outcome is the consensus outcome, or unlabelled (the outcome head skips it)
//! when the consensus has none. When several epochs labelled one proposal, the latest counts.
//! Every record is read back through the content store, so its bytes are checked against its
//! CID and its signature before it is trained on.

use std::collections::BTreeMap;

use contrib::ProposalRecord;
use fl_core::ContentHash;
use fl_db::data::LabelField;

use super::{ContentStore, ContributeError, ContributedRecord};
use crate::text::HashingFeaturizer;
use crate::trainer::proposals::EncodedProposals;

/// A contributed proposal with the labels the consensus gave it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledProposal {
    /// The record, verified.
    pub record: ProposalRecord,
    /// Its CID.
    pub cid: ContentHash,
    /// The consensus outcome class (0 accepted, 1 rejected), if decided.
    pub outcome: Option<u8>,
    /// The consensus category class (the proposal model's kind classes).
    pub category: u8,
    /// The epoch whose consensus labelled it.
    pub epoch: u64,
}

/// The proposals of `community` (every community with `None`) that the consensus of `epochs`
/// labelled, in CID order.
///
/// # Errors
/// A database failure, or a labelled item the content store lacks or refuses (its bytes do
/// not match its CID, a bad signature) — an annotation's item that is not a proposal record
/// is [`ContributeError::NotAProposal`].
pub async fn labelled_proposals(
    db: &fl_db::Store,
    content: &ContentStore,
    epochs: &[u64],
    community: Option<&str>,
) -> Result<Vec<LabelledProposal>, ContributeError> {
    // item -> (epoch, outcome, category), the latest epoch winning.
    let mut labels: BTreeMap<fl_db::B256, (u64, Option<u8>, Option<u8>)> = BTreeMap::new();
    let mut sorted = epochs.to_vec();
    sorted.sort_unstable();
    for epoch in sorted {
        for c in db.consensus(epoch).await? {
            let entry = labels.entry(c.item).or_insert((epoch, None, None));
            if entry.0 != epoch {
                *entry = (epoch, None, None);
            }
            match c.field {
                LabelField::Outcome => entry.1 = c.label,
                LabelField::Category => entry.2 = c.label,
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    for (item, (epoch, outcome, category)) in labels {
        let Some(category) = category else {
            continue;
        };
        let cid = ContentHash::from_digest(item.0);
        let ContributedRecord::Proposal(signed) = content.get(&cid)? else {
            return Err(ContributeError::NotAProposal { cid });
        };
        let record = signed.body().clone();
        if community.is_some_and(|c| c != record.community) {
            continue;
        }
        out.push(LabelledProposal {
            record,
            cid,
            outcome,
            category,
            epoch,
        });
    }
    Ok(out)
}

/// Appends `proposals` to `data` featurised as the corpus is (title and text, the community as
/// metadata), with their consensus labels.
pub fn encode_into(
    data: &mut EncodedProposals,
    featurizer: &HashingFeaturizer,
    proposals: &[LabelledProposal],
) {
    for p in proposals {
        data.push_counted(
            &featurizer.id_counts(&p.record.title, &p.record.text),
            &featurizer.meta_ids(&[("community", &p.record.community)]),
            p.outcome,
            p.category,
        );
    }
}

#[cfg(test)]
mod tests {
    use contrib::SignedRecord;
    use fl_core::{FitConfig, MemberKey, Trainer};
    use fl_db::data::ConsensusRecord;

    use super::*;
    use crate::DeviceSpec;
    use crate::text::HashingConfig;
    use crate::trainer::proposals::{ProposalModelSpec, ProposalTrainer};

    fn proposal(key: &MemberKey, community: &str, id: &str, title: &str) -> ContributedRecord {
        ContributedRecord::Proposal(
            SignedRecord::sign(
                ProposalRecord {
                    contributor: key.address(),
                    community: community.into(),
                    proposal_id: id.into(),
                    title: title.into(),
                    text: format!("{title}: the body of the proposal"),
                    created: None,
                    licence: "CC0-1.0".into(),
                    source: None,
                },
                key,
            )
            .unwrap(),
        )
    }

    fn label(
        epoch: u64,
        field: LabelField,
        item: &ContentHash,
        label: Option<u8>,
    ) -> ConsensusRecord {
        ConsensusRecord {
            epoch,
            field,
            item: fl_db::B256::from(*item.as_bytes()),
            label,
            confidence: 0.9,
        }
    }

    /// Consensus labels of two epochs become training rows (the later epoch wins, a proposal
    /// without a category is left out, another community is filtered out), and a proposal
    /// trainer fits on them next to private rows.
    #[tokio::test]
    async fn consensus_labelled_proposals_train_the_proposal_model() {
        let dir = tempfile::tempdir().unwrap();
        let content = ContentStore::open(dir.path()).unwrap();
        let key = MemberKey::generate();
        let records = [
            proposal(&key, "makerdao", "MIP-1", "raise the stability fee"),
            proposal(&key, "makerdao", "MIP-2", "onboard a new collateral"),
            proposal(&key, "makerdao", "MIP-3", "fund the core unit"),
            proposal(&key, "lido", "LIP-1", "change the oracle quorum"),
        ];
        for r in &records {
            content.put_record(r).unwrap();
        }
        let cids: Vec<ContentHash> = records.iter().map(ContributedRecord::cid).collect();
        let db = fl_db::Store::open("sqlite::memory:").await.unwrap();
        db.add_consensus(&[
            label(1, LabelField::Outcome, &cids[0], Some(1)),
            label(1, LabelField::Category, &cids[0], Some(3)),
            label(1, LabelField::Outcome, &cids[1], Some(0)),
            label(1, LabelField::Category, &cids[1], Some(4)),
            // No category: not trainable.
            label(1, LabelField::Outcome, &cids[2], Some(0)),
            label(1, LabelField::Outcome, &cids[3], Some(0)),
            label(1, LabelField::Category, &cids[3], Some(0)),
        ])
        .await
        .unwrap();
        // Epoch 2 relabels MIP-1 as accepted.
        db.add_consensus(&[
            label(2, LabelField::Outcome, &cids[0], Some(0)),
            label(2, LabelField::Category, &cids[0], Some(3)),
        ])
        .await
        .unwrap();

        let maker = labelled_proposals(&db, &content, &[2, 1], Some("makerdao"))
            .await
            .unwrap();
        let ids: Vec<&str> = maker
            .iter()
            .map(|p| p.record.proposal_id.as_str())
            .collect();
        let mut expected = [(cids[0], "MIP-1"), (cids[1], "MIP-2")];
        expected.sort();
        assert_eq!(ids, expected.map(|(_, id)| id));
        let mip1 = maker
            .iter()
            .find(|p| p.record.proposal_id == "MIP-1")
            .unwrap();
        assert_eq!((mip1.epoch, mip1.outcome, mip1.category), (2, Some(0), 3));
        let all = labelled_proposals(&db, &content, &[1, 2], None)
            .await
            .unwrap();
        assert_eq!(all.len(), 3);

        // A labelled item the store refuses is an error, not a silent skip.
        std::fs::write(
            dir.path().join("records").join(cids[3].to_string()),
            b"tampered",
        )
        .unwrap();
        assert!(labelled_proposals(&db, &content, &[1], None).await.is_err());

        let spec = ProposalModelSpec {
            featurizer: HashingConfig {
                buckets_log2: 9,
                ..Default::default()
            },
            dim: 4,
            ..Default::default()
        };
        let featurizer = HashingFeaturizer::new(spec.featurizer.clone()).unwrap();
        let mut data = EncodedProposals::new();
        // A private row of the member's own, then the contributed ones.
        data.push(
            &featurizer.ids("a private proposal", "its text"),
            &featurizer.meta_ids(&[("community", "makerdao")]),
            Some(1),
            2,
        );
        encode_into(&mut data, &featurizer, &maker);
        assert_eq!(data.len(), 3);
        let mut trainer = ProposalTrainer::new(&spec, DeviceSpec::Cpu, data, None, 1).unwrap();
        let outcome = trainer.fit(&FitConfig::default()).unwrap();
        assert_eq!(outcome.num_examples, 3);
    }
}
