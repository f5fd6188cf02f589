//! A deterministic simulation of a whole federation: the round engine, every client's
//! [`ClientSession`] and [`Trainer`], and the network between them, on simulated time.
//!
//! In the style of quinn-proto's `Pair`: [`Sim::step`] advances to the next thing that happens
//! (a message arriving, a client finishing its local work, an engine deadline) and handles it;
//! [`Sim::drive`] steps until nothing is left. Latency, jitter and message loss come from a
//! seeded RNG, each client has a simulated compute time, so a run is reproducible exactly.
//!
//! Local training itself runs for real. Tasks that are due are run as one batch on up to
//! [`SimConfig::workers`] threads; since a task depends only on its own client, batching
//! changes wall time, never results.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fl_core::{
    Address, ClientId, ClientMessage, ClientSession, EvaluateResult, EvaluateTask, FitResult,
    FitTask, MemberKey, ServerMessage, SessionEvent, Trainer, TrainerError,
};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::engine::{Engine, EngineEvent};

/// Network and execution settings of a simulation.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// One-way delay of every message.
    pub latency: Duration,
    /// Extra delay drawn uniformly from `[0, jitter]` per message.
    pub jitter: Duration,
    /// Probability that a message is lost, in each direction.
    pub drop_rate: f64,
    /// Seed of the network's randomness (delays, losses).
    pub seed: u64,
    /// Threads that run local training in parallel; 0 uses the machine's available cores.
    pub workers: usize,
}

impl SimConfig {
    /// A perfect network (no delay, no loss): the in-process federation.
    pub fn ideal() -> Self {
        Self {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            drop_rate: 0.0,
            seed: 0,
            workers: 0,
        }
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        Self::ideal()
    }
}

/// Counters of a simulation, for reports and benchmarks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost by the simulated network.
    pub lost: u64,
    /// Messages the engine refused (late, duplicate, invalid).
    pub refused_by_engine: u64,
    /// Messages a client session refused (stale, tampered, wrong schema).
    pub refused_by_clients: u64,
    /// Training/evaluation tasks run.
    pub tasks_run: u64,
    /// Wall time spent running local tasks (training and client evaluation).
    pub compute_wall: Duration,
    /// Wall time spent inside the engine (selection, aggregation, bookkeeping).
    pub engine_wall: Duration,
}

enum Packet {
    ToClient(ClientId, ServerMessage),
    ToServer(ClientId, ClientMessage),
}

struct InFlight {
    at: Duration,
    seq: u64,
    packet: Packet,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    /// Reversed, so the max-heap pops the earliest packet (ties: first sent).
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

#[derive(Clone)]
enum Task {
    Fit(FitTask),
    Evaluate(EvaluateTask),
}

enum Outcome {
    Fit(u64, Result<FitResult, TrainerError>),
    Evaluate(u64, Result<EvaluateResult, TrainerError>),
}

struct PendingTask {
    due: Duration,
    task: Task,
    outcome: Option<Outcome>,
}

struct SimClient<T> {
    session: ClientSession,
    trainer: Option<T>,
    compute_time: Duration,
    online: bool,
    pending: Option<PendingTask>,
}

/// A federation on simulated time. See the [module docs](self).
pub struct Sim<T: Trainer> {
    now: Duration,
    engine: Engine,
    clients: BTreeMap<ClientId, SimClient<T>>,
    network: BinaryHeap<InFlight>,
    seq: u64,
    rng: ChaCha8Rng,
    config: SimConfig,
    stats: SimStats,
}

impl<T: Trainer> Sim<T> {
    /// A simulation around `engine`, with no clients yet.
    pub fn new(engine: Engine, config: SimConfig) -> Self {
        Self {
            now: Duration::ZERO,
            engine,
            clients: BTreeMap::new(),
            network: BinaryHeap::new(),
            seq: 0,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            config,
            stats: SimStats::default(),
        }
    }

    /// Adds a client that takes `compute_time` (simulated) for each task, and connects it now.
    pub fn add_client(&mut self, id: ClientId, trainer: T, compute_time: Duration) {
        let session = ClientSession::new(trainer.schema().hash());
        self.add_session(id, session, trainer, compute_time);
    }

    /// Like [`add_client`](Self::add_client), for a member that signs with `key`, which is
    /// `members[id]` (needed for secure aggregation).
    pub fn add_member(
        &mut self,
        id: ClientId,
        trainer: T,
        compute_time: Duration,
        key: Arc<MemberKey>,
        members: Arc<Vec<Address>>,
    ) {
        let session = member_session(&trainer, id, key, members);
        self.add_session(id, session, trainer, compute_time);
    }

    /// Like [`add_member`](Self::add_member), for a member that also holds a decryption
    /// committee key share (homomorphic aggregation).
    pub fn add_committee_member(
        &mut self,
        id: ClientId,
        trainer: T,
        compute_time: Duration,
        key: Arc<MemberKey>,
        members: Arc<Vec<Address>>,
        role: fl_core::secure::he::CommitteeRole,
    ) {
        let session = member_session(&trainer, id, key, members).with_committee(role);
        self.add_session(id, session, trainer, compute_time);
    }

    fn add_session(
        &mut self,
        id: ClientId,
        session: ClientSession,
        trainer: T,
        compute_time: Duration,
    ) {
        self.clients.insert(
            id,
            SimClient {
                session,
                trainer: Some(trainer),
                compute_time,
                online: true,
                pending: None,
            },
        );
        let now = self.now;
        self.timed(|e| e.handle_connect(now, id));
    }

    /// Disconnects a client now: it loses whatever it was doing and receives nothing more.
    pub fn disconnect(&mut self, id: ClientId) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.online = false;
            c.pending = None;
            let now = self.now;
            self.timed(|e| e.handle_disconnect(now, id));
        }
    }

    /// Changes a client's simulated compute time (e.g. to make it a straggler).
    pub fn set_compute_time(&mut self, id: ClientId, compute_time: Duration) {
        if let Some(c) = self.clients.get_mut(&id) {
            c.compute_time = compute_time;
        }
    }

    /// Simulated time now.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The engine (for its parameters and round).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// A client's trainer, unless it is running a task.
    pub fn trainer(&self, id: ClientId) -> Option<&T> {
        self.clients.get(&id).and_then(|c| c.trainer.as_ref())
    }

    /// Counters so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// The next progress event of the engine.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<EngineEvent> {
        self.engine.poll_event()
    }

    /// Steps until nothing is left to happen.
    pub fn drive(&mut self) {
        while self.step() {}
    }

    /// Steps until nothing is left, handing every engine event to `on_event` as it happens.
    pub fn drive_with(&mut self, mut on_event: impl FnMut(&mut Self, EngineEvent)) {
        loop {
            while let Some(e) = self.engine.poll_event() {
                on_event(self, e);
            }
            if !self.step() {
                break;
            }
        }
        while let Some(e) = self.engine.poll_event() {
            on_event(self, e);
        }
    }

    /// Handles the next thing that happens. Returns `false` when nothing is left.
    pub fn step(&mut self) -> bool {
        self.pump();
        let next_packet = self.network.peek().map(|p| p.at);
        let next_task = self
            .clients
            .values()
            .filter_map(|c| c.pending.as_ref().map(|p| p.due))
            .min();
        let next_timeout = self.engine.poll_timeout();
        let Some(t) = [next_packet, next_task, next_timeout]
            .into_iter()
            .flatten()
            .min()
        else {
            return false;
        };
        self.now = self.now.max(t);
        if next_packet == Some(t) {
            let packet = self.network.pop().expect("peeked").packet;
            self.deliver(packet);
        } else if next_task == Some(t) {
            self.run_tasks();
            self.complete_due_tasks();
        } else {
            let now = self.now;
            self.timed(|e| e.handle_timeout(now));
        }
        true
    }

    fn timed<R>(&mut self, f: impl FnOnce(&mut Engine) -> R) -> R {
        let start = Instant::now();
        let r = f(&mut self.engine);
        self.stats.engine_wall += start.elapsed();
        r
    }

    /// Moves queued messages into the network and queued work into the clients' task slots.
    fn pump(&mut self) {
        while let Some((to, msg)) = self.engine.poll_transmit() {
            self.send(Packet::ToClient(to, msg));
        }
        let ids: Vec<ClientId> = self.clients.keys().copied().collect();
        for id in ids {
            let client = self.clients.get_mut(&id).expect("listed");
            let mut out = Vec::new();
            while let Some(msg) = client.session.poll_transmit() {
                out.push(msg);
            }
            while let Some(event) = client.session.poll_event() {
                let task = match event {
                    SessionEvent::Fit(t) => Task::Fit(t),
                    SessionEvent::Evaluate(t) => Task::Evaluate(t),
                    SessionEvent::Finished => continue,
                };
                // A newer instruction replaces whatever the client was doing.
                client.pending = Some(PendingTask {
                    due: self.now + client.compute_time,
                    task,
                    outcome: None,
                });
            }
            if client.online {
                for msg in out {
                    self.send(Packet::ToServer(id, msg));
                }
            }
        }
    }

    fn send(&mut self, packet: Packet) {
        if self.config.drop_rate > 0.0 && self.rng.random_bool(self.config.drop_rate.min(1.0)) {
            self.stats.lost += 1;
            return;
        }
        let mut delay = self.config.latency;
        if !self.config.jitter.is_zero() {
            let j = self
                .rng
                .random_range(0..=self.config.jitter.as_nanos() as u64);
            delay += Duration::from_nanos(j);
        }
        self.seq += 1;
        self.network.push(InFlight {
            at: self.now + delay,
            seq: self.seq,
            packet,
        });
    }

    fn deliver(&mut self, packet: Packet) {
        match packet {
            Packet::ToClient(id, msg) => {
                let Some(client) = self.clients.get_mut(&id).filter(|c| c.online) else {
                    return;
                };
                self.stats.delivered += 1;
                if client.session.handle_message(msg).is_err() {
                    self.stats.refused_by_clients += 1;
                }
            }
            Packet::ToServer(id, msg) => {
                self.stats.delivered += 1;
                let now = self.now;
                if self.timed(|e| e.handle_message(now, id, msg)).is_err() {
                    self.stats.refused_by_engine += 1;
                }
            }
        }
    }

    /// Runs every task that has no outcome yet, in parallel.
    fn run_tasks(&mut self) {
        let mut jobs = Vec::new();
        for (&id, client) in self.clients.iter_mut() {
            if let Some(p) = client.pending.as_mut().filter(|p| p.outcome.is_none()) {
                let trainer = client
                    .trainer
                    .take()
                    .expect("a trainer is home between tasks");
                jobs.push((id, trainer, p.task.clone()));
            }
        }
        if jobs.is_empty() {
            return;
        }
        let start = Instant::now();
        self.stats.tasks_run += jobs.len() as u64;
        let done = run_parallel(jobs, self.config.workers, |(id, mut trainer, task)| {
            let outcome = run_task(&mut trainer, &task);
            (id, trainer, outcome)
        });
        self.stats.compute_wall += start.elapsed();
        for (id, trainer, outcome) in done {
            let client = self
                .clients
                .get_mut(&id)
                .expect("job came from this client");
            client.trainer = Some(trainer);
            let p = client.pending.as_mut().expect("still pending");
            p.outcome = Some(outcome);
        }
    }

    fn complete_due_tasks(&mut self) {
        for client in self.clients.values_mut() {
            if client.pending.as_ref().is_some_and(|p| p.due <= self.now) {
                let p = client.pending.take().expect("checked");
                let refused = match p.outcome.expect("run before completion") {
                    Outcome::Fit(round, r) => client.session.complete_fit(round, r).is_err(),
                    Outcome::Evaluate(round, r) => {
                        client.session.complete_evaluate(round, r).is_err()
                    }
                };
                if refused {
                    self.stats.refused_by_clients += 1;
                }
            }
        }
    }
}

fn run_task<T: Trainer>(trainer: &mut T, task: &Task) -> Outcome {
    // A panicking trainer fails its own task, never the federation.
    let caught = catch_unwind(AssertUnwindSafe(|| match task {
        Task::Fit(t) => Outcome::Fit(t.round, t.run(trainer)),
        Task::Evaluate(t) => Outcome::Evaluate(t.round, t.run(trainer)),
    }));
    caught.unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        let err = TrainerError::Other(format!("trainer panicked: {msg}"));
        match task {
            Task::Fit(t) => Outcome::Fit(t.round, Err(err)),
            Task::Evaluate(t) => Outcome::Evaluate(t.round, Err(err)),
        }
    })
}

/// Runs `f` over `jobs` on at most `workers` threads (0: available cores), keeping job order
/// in the output. One job, or one worker, runs on the calling thread.
pub fn run_parallel<J: Send, R: Send>(
    jobs: Vec<J>,
    workers: usize,
    f: impl Fn(J) -> R + Sync,
) -> Vec<R> {
    let workers = if workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        workers
    }
    .min(jobs.len());
    if workers <= 1 {
        return jobs.into_iter().map(f).collect();
    }
    let slots: Vec<Mutex<Option<J>>> = jobs.into_iter().map(|j| Mutex::new(Some(j))).collect();
    let results: Vec<Mutex<Option<R>>> = slots.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, AtomicOrdering::Relaxed);
                    let Some(slot) = slots.get(i) else { break };
                    let job = slot.lock().expect("unpoisoned").take().expect("taken once");
                    let r = f(job);
                    *results[i].lock().expect("unpoisoned") = Some(r);
                }
            });
        }
    });
    results
        .into_iter()
        .map(|m| m.into_inner().expect("unpoisoned").expect("every job ran"))
        .collect()
}

/// Helper for tests and drivers: the `VecDeque` of all events drained from a simulation.
pub fn drain_events<T: Trainer>(sim: &mut Sim<T>) -> VecDeque<EngineEvent> {
    let mut out = VecDeque::new();
    while let Some(e) = sim.poll_event() {
        out.push_back(e);
    }
    out
}

/// The session of member `id`, signing with `key` (`members[id]`).
fn member_session<T: Trainer>(
    trainer: &T,
    id: ClientId,
    key: Arc<MemberKey>,
    members: Arc<Vec<Address>>,
) -> ClientSession {
    ClientSession::with_identity(trainer.schema().hash(), key, members, id.0 as u32)
}
