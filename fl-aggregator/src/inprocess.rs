//! The in-process federation: every client in this process, on a perfect network, training in
//! parallel on up to as many threads as there are cores. Built on [`Sim`], so it runs the very
//! engine and client sessions a networked federation runs.

use std::sync::Arc;
use std::time::Duration;

use fl_core::secure::SecureAggregationConfig;
use fl_core::{Address, ClientId, MemberKey, ParamVec, Trainer};

use crate::engine::{Engine, EngineEvent, SecureSetup};
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
    /// random session binding.
    pub fn with_secure_aggregation(
        engine: Engine,
        trainers: Vec<T>,
        workers: usize,
        secure: SecureAggregationConfig,
    ) -> Self {
        let keys: Vec<Arc<MemberKey>> = trainers
            .iter()
            .map(|_| Arc::new(MemberKey::generate()))
            .collect();
        let members: Arc<Vec<Address>> = Arc::new(keys.iter().map(|k| k.address()).collect());
        let engine = engine.with_secure_aggregation(SecureSetup {
            config: secure,
            members: members.clone(),
            session: fl_core::identity::random_nonce(),
        });
        let config = SimConfig {
            workers,
            ..SimConfig::ideal()
        };
        let mut sim = Sim::new(engine, config);
        for (i, (trainer, key)) in trainers.into_iter().zip(keys).enumerate() {
            sim.add_member(ClientId(i as u64), trainer, TASK_TIME, key, members.clone());
        }
        Self { sim }
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
