//! The in-process federation: every client in this process, on a perfect network, training in
//! parallel on up to as many threads as there are cores. Built on [`Sim`], so it runs the very
//! engine and client sessions a networked federation runs.

use std::sync::Arc;
use std::time::Duration;

use fl_core::secure::he::{CommitteeRole, local_committee};
use fl_core::secure::{MemberVerifier, SecureAggregationConfig, SecureProtocol};
use fl_core::{Address, ClientId, MemberKey, ParamVec, Trainer};

use crate::engine::{Engine, EngineEvent, HeCommittee, SecureSetup};
use crate::sim::{Sim, SimConfig, SimStats};

/// Simulated time each in-process task takes; only orders events, never waits.
const TASK_TIME: Duration = Duration::from_millis(1);

/// N local clients and an engine, run to the end.
pub struct InProcessFederation<T: Trainer> {
    sim: Sim<T>,
}

/// What a finished in-process federation leaves.
#[derive(Debug, Clone)]
pub struct FederationOutcome {
    /// Final global parameters.
    pub params: Arc<ParamVec>,
    /// Rounds run.
    pub rounds: u64,
    /// Counters and wall-time split (training vs engine).
    pub stats: SimStats,
}

impl<T: Trainer> InProcessFederation<T> {
    /// Clients `ClientId(0)..ClientId(n)` with the given trainers; `workers` threads train in
    /// parallel (0: one per available core).
    pub fn new(engine: Engine, trainers: Vec<T>, workers: usize) -> Self {
        let config = SimConfig {
            workers,
            ..SimConfig::ideal()
        };
        let mut sim = Sim::new(engine, config);
        for (i, trainer) in trainers.into_iter().enumerate() {
            sim.add_client(ClientId(i as u64), trainer, TASK_TIME);
        }
        Self { sim }
    }

    /// Like [`new`](Self::new), with every fit stage under secure aggregation: each client gets
    /// a fresh identity key (the federation's member list is their addresses) and the run a
    /// random session binding. Under `protocol = "he"` the first `committee.members` clients
    /// also hold the decryption committee's key shares, dealt in this process.
    pub fn with_secure_aggregation(
        engine: Engine,
        trainers: Vec<T>,
        workers: usize,
        secure: SecureAggregationConfig,
    ) -> Result<Self, String> {
        let keys: Vec<Arc<MemberKey>> = trainers
            .iter()
            .map(|_| Arc::new(MemberKey::generate()))
            .collect();
        let members: Arc<Vec<Address>> = Arc::new(keys.iter().map(|k| k.address()).collect());
        let mut roles = Vec::new();
        let committee = match (secure.protocol, secure.committee) {
            (SecureProtocol::Homomorphic, Some(c)) => {
                // Every committee member deals in this process: fine for a simulation, not
                // for a deployment (see `local_committee`).
                let params = c
                    .params(secure.modulus_bits, trainers.len() as u32)
                    .map_err(|e| format!("committee parameters: {e}"))?;
                let mut seed = [0u8; 16];
                seed.copy_from_slice(&fl_core::identity::random_nonce()[..16]);
                let (public_key, shares) = local_committee(params, u128::from_le_bytes(seed))
                    .map_err(|e| e.to_string())?;
                let verifier = MemberVerifier(members.clone());
                roles = shares
                    .into_iter()
                    .map(|m| CommitteeRole::new(m, verifier.clone()))
                    .collect();
                Some(HeCommittee {
                    params,
                    public_key,
                    members: (0..u64::from(c.members)).map(ClientId).collect(),
                    max_request_bytes: crate::engine::MAX_REQUEST_BYTES,
                })
            }
            _ => None,
        };
        let engine = engine.with_secure_aggregation(SecureSetup {
            config: secure,
            members: members.clone(),
            session: fl_core::identity::random_nonce(),
            committee,
        });
        let config = SimConfig {
            workers,
            ..SimConfig::ideal()
        };
        let mut sim = Sim::new(engine, config);
        let mut roles = roles.into_iter();
        for (i, (trainer, key)) in trainers.into_iter().zip(keys).enumerate() {
            let id = ClientId(i as u64);
            match roles.next() {
                Some(role) => {
                    sim.add_committee_member(id, trainer, TASK_TIME, key, members.clone(), role)
                }
                None => sim.add_member(id, trainer, TASK_TIME, key, members.clone()),
            }
        }
        Ok(Self { sim })
    }

    /// The simulation underneath, to drive it step by step (e.g. to disconnect members).
    pub fn into_sim(self) -> Sim<T> {
        self.sim
    }

    /// The simulation underneath, e.g. to inspect a client's trainer.
    pub fn sim(&self) -> &Sim<T> {
        &self.sim
    }

    /// Runs every round, handing each engine event to `on_event` as it happens, with the
    /// counters so far (for wall-time splits).
    pub fn run(mut self, mut on_event: impl FnMut(&EngineEvent, &SimStats)) -> FederationOutcome {
        self.sim.drive_with(|sim, e| on_event(&e, sim.stats()));
        let engine = self.sim.engine();
        FederationOutcome {
            params: engine.params().clone(),
            rounds: engine.round(),
            stats: self.sim.stats().clone(),
        }
    }
}
