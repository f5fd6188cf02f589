//! The aggregator's anchorer: every written checkpoint anchored once, receipts in the manifest.

use super::*;

/// The manifest's `anchor` field once its round is anchored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestAnchor {
    /// The transaction that anchored the round (or its batch).
    pub receipt: AnchorReceipt,
    /// SHA-256 of the parameters, as anchored.
    pub params_hash: B256,
    /// Root of the participants tree, as anchored.
    pub participants_root: B256,
    /// ε anchored, in millionths ([`EPSILON_UNBOUNDED`] without DP).
    pub epsilon_micros: u64,
    /// The round's inclusion proof in its batch, when it was anchored in one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_proof: Option<Vec<B256>>,
}

impl ManifestAnchor {
    /// The anchor recorded in `manifest`, `None` if the round is not anchored yet.
    ///
    /// # Errors
    /// [`AnchoringError::MalformedAnchor`] when the field is not one this build wrote.
    pub fn of(manifest: &Manifest) -> Result<Option<Self>> {
        manifest
            .anchor
            .as_ref()
            .map(|v| {
                serde_json::from_value(v.clone()).map_err(|e| AnchoringError::MalformedAnchor {
                    round: manifest.round,
                    reason: e.to_string(),
                })
            })
            .transpose()
    }
}

/// Anchors a federation's checkpoints as they are written, one round per transaction or
/// `batch_rounds` rounds per batch, and records each receipt in its manifest.
///
/// Rounds wait here until they are anchored: a round whose anchor failed for a transient reason
/// (endpoint down) is retried with the next round and, after a restart, by
/// [`RoundAnchorer::resume`].
#[derive(Debug)]
pub struct RoundAnchorer {
    chain: ChainAnchor,
    batch_rounds: usize,
    waiting: Vec<CheckpointAnchor>,
    last: Option<(u64, AnchorReceipt)>,
}

impl RoundAnchorer {
    /// Opens the backend `settings` describe (contacts no endpoint yet).
    ///
    /// # Errors
    /// [`AnchoringError::Chain`] for an unusable state folder, queue folder or key.
    pub fn open(settings: &ChainSettings) -> Result<Self> {
        let chain = ChainAnchor::open(&settings.chain, &settings.run_dir)?;
        Ok(Self::new(chain, settings.chain.batch_rounds()))
    }

    /// An anchorer over an open backend.
    pub fn new(chain: ChainAnchor, batch_rounds: u32) -> Self {
        Self {
            chain,
            batch_rounds: batch_rounds.max(1) as usize,
            waiting: Vec::new(),
            last: None,
        }
    }

    /// The backend.
    pub fn chain(&self) -> &ChainAnchor {
        &self.chain
    }

    /// Rounds written but not anchored yet, ascending.
    pub fn waiting(&self) -> Vec<u64> {
        self.waiting.iter().map(|c| c.round).collect()
    }

    /// The newest round anchored by this anchorer and its receipt.
    pub fn last_anchor(&self) -> Option<&(u64, AnchorReceipt)> {
        self.last.as_ref()
    }

    /// After a start: queues every manifest without an anchor (the newest rounds, back to the
    /// newest anchored one) and anchors what is ready; returns the rounds anchored.
    ///
    /// # Errors
    /// The first failure; what is not anchored keeps waiting (see [`AnchoringError::is_transient`]).
    pub async fn resume(&mut self, store: &CheckpointStore) -> Result<Vec<u64>> {
        let mut unanchored = Vec::new();
        for round in store.rounds().await?.into_iter().rev() {
            match store.manifest(round).await {
                Ok(m) if m.anchor.is_some() => break,
                Ok(m) => unanchored.push(m),
                Err(e @ CheckpointError::Store { .. }) => return Err(e.into()),
                Err(e) => tracing::warn!(round, "not anchoring an unreadable manifest: {e}"),
            }
        }
        for m in unanchored.iter().rev() {
            self.enqueue(m)?;
        }
        self.anchor_ready(store, false).await
    }

    /// After `manifest` was written: anchors its round, or keeps it until its batch is full;
    /// returns the rounds anchored (earlier ones that waited included).
    ///
    /// # Errors
    /// As [`RoundAnchorer::resume`].
    pub async fn checkpoint_written(
        &mut self,
        store: &CheckpointStore,
        manifest: &Manifest,
    ) -> Result<Vec<u64>> {
        self.enqueue(manifest)?;
        self.anchor_ready(store, false).await
    }

    /// At the end of a run: anchors every waiting round, a partial batch included.
    ///
    /// # Errors
    /// As [`RoundAnchorer::resume`].
    pub async fn finish(&mut self, store: &CheckpointStore) -> Result<Vec<u64>> {
        self.anchor_ready(store, true).await
    }

    fn enqueue(&mut self, manifest: &Manifest) -> Result<()> {
        let anchor = checkpoint_anchor(manifest)?;
        if self.waiting.iter().all(|w| w.round < anchor.round) {
            self.waiting.push(anchor);
        }
        Ok(())
    }

    async fn anchor_ready(&mut self, store: &CheckpointStore, all: bool) -> Result<Vec<u64>> {
        let mut done = Vec::new();
        while !self.waiting.is_empty() {
            // Consecutive rounds of one federation, at most one batch.
            let mut take = 1;
            while take < self.waiting.len().min(self.batch_rounds)
                && self.waiting[take].round == self.waiting[take - 1].round + 1
                && self.waiting[take].federation == self.waiting[0].federation
            {
                take += 1;
            }
            let gap = take < self.waiting.len();
            if take < self.batch_rounds && !gap && !all {
                break; // the batch is not full yet
            }
            let group: Vec<CheckpointAnchor> = self.waiting[..take].to_vec();
            match self.anchor_group(store, group).await {
                Ok(covered) => {
                    let top = covered.last().copied().unwrap_or(0);
                    self.waiting.retain(|w| w.round > top);
                    done.extend(covered);
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // Refused for good: the manifests stay without anchor, the next rounds go on.
                    self.waiting.drain(..take);
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Anchors `group` (one round, or one batch), or recognises it on chain, and records the
    /// receipts in the manifests; returns the rounds recorded.
    async fn anchor_group(
        &mut self,
        store: &CheckpointStore,
        group: Vec<CheckpointAnchor>,
    ) -> Result<Vec<u64>> {
        let batched = self.batch_rounds > 1;
        if self.chain.backend() == BackendKind::Embedded
            && let Some(found) = self.found_on_chain(store, &group, batched).await?
        {
            return self.record(store, found).await;
        }
        let done = if batched {
            let batch = RoundBatch::new(group)?;
            Anchored {
                receipt: self.chain.anchor_batch(&batch).await?,
                rounds: batch.rounds().to_vec(),
                batch: Some(batch),
            }
        } else {
            Anchored {
                receipt: self.chain.anchor(&group[0]).await?,
                rounds: group,
                batch: None,
            }
        };
        self.record(store, done).await
    }

    /// The registry's record of `group`'s first round when it holds one with the same data
    /// (for a batch: every round of the batch as the manifests give it).
    ///
    /// The RPC backend does this check itself before each send; the embedded one does not.
    async fn found_on_chain(
        &self,
        store: &CheckpointStore,
        group: &[CheckpointAnchor],
        batched: bool,
    ) -> Result<Option<Anchored>> {
        let first = &group[0];
        let Some(anchored) = self.chain.lookup(first.federation, first.round).await? else {
            return Ok(None);
        };
        let conflict = |anchored| chain_anchor::Error::Conflict {
            federation: first.federation,
            round: first.round,
            anchored: Box::new(anchored),
        };
        let (rounds, batch) = match &anchored {
            AnchoredCheckpoint::Single(record) if !batched && first.matches(record) => {
                (vec![first.clone()], None)
            }
            AnchoredCheckpoint::Batched(b) if batched => {
                let mut rounds = Vec::new();
                for round in b.first_round..=b.last_round {
                    rounds.push(checkpoint_anchor(&store.manifest(round).await?)?);
                }
                let batch = RoundBatch::new(rounds)?;
                if batch.root() != b.root {
                    return Err(conflict(anchored.clone()).into());
                }
                (batch.rounds().to_vec(), Some(batch))
            }
            _ => return Err(conflict(anchored.clone()).into()),
        };
        let last_round = rounds[rounds.len() - 1].round;
        let event = self
            .chain
            .events(Some(first.federation), 0)
            .await?
            .into_iter()
            .find(|e| *e.kind.rounds().start() == rounds[0].round);
        let receipt = AnchorReceipt {
            backend: self.chain.backend(),
            chain_id: EMBEDDED_CHAIN_ID,
            registry: self.chain.registry(),
            tx_hash: event.as_ref().map_or(B256::ZERO, |e| e.tx_hash),
            block_number: event.as_ref().map_or(0, |e| e.block_number),
            gas_used: 0,
            effective_gas_price: 0,
            first_round: rounds[0].round,
            last_round,
            batch_root: batch.as_ref().map(RoundBatch::root),
            already_anchored: true,
        };
        tracing::info!(
            round = first.round,
            "round already anchored on chain; recording it in the manifest"
        );
        Ok(Some(Anchored {
            rounds,
            receipt,
            batch,
        }))
    }

    /// Writes the receipt (and batch proofs) into the manifests of `rounds`.
    async fn record(&mut self, store: &CheckpointStore, done: Anchored) -> Result<Vec<u64>> {
        let Anchored {
            rounds,
            receipt,
            batch,
        } = done;
        let mut recorded = Vec::new();
        for c in &rounds {
            // Found on chain: a round whose manifest already holds its receipt keeps it.
            if receipt.already_anchored && store.manifest(c.round).await?.anchor.is_some() {
                recorded.push(c.round);
                continue;
            }
            let entry = ManifestAnchor {
                receipt: receipt.clone(),
                params_hash: c.params_hash,
                participants_root: c.participants_root,
                epsilon_micros: c.epsilon_micros,
                batch_proof: batch.as_ref().and_then(|b| b.proof(c.round)),
            };
            let value =
                serde_json::to_value(&entry).map_err(|e| AnchoringError::MalformedAnchor {
                    round: c.round,
                    reason: e.to_string(),
                })?;
            store.set_anchor(c.round, value).await?;
            recorded.push(c.round);
        }
        if let Some(&round) = recorded.last() {
            tracing::info!(
                first_round = receipt.first_round,
                last_round = receipt.last_round,
                block = receipt.block_number,
                tx = %receipt.tx_hash,
                gas = receipt.gas_used,
                "checkpoint anchored"
            );
            self.last = Some((round, receipt));
        }
        Ok(recorded)
    }
}

/// Rounds anchored by one transaction, with its receipt and, for a batch, the batch.
struct Anchored {
    rounds: Vec<CheckpointAnchor>,
    receipt: AnchorReceipt,
    batch: Option<RoundBatch>,
}
