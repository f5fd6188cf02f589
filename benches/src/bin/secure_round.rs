//! What secure aggregation costs a whole federation round (issue 7): plain FedAvg, SecAgg+
//! and homomorphic aggregation (`protocol = "he"`), measured in one process and one run.
//!
//! Each variant is a real in-process federation ([`InProcessFederation`]: the round engine,
//! every member's client session, local training with burn) of `CLIENTS` members on the
//! quickstart's digits data, training an MLP `64 -> HIDDEN -> 10` (`75 × HIDDEN + 10`
//! parameters: 999,985 at the default `HIDDEN = 13333`) with the quickstart's local settings
//! (5 epochs, batches of 32, Adam at 0.02). The variants:
//!
//! - plain FedAvg;
//! - SecAgg+ as `examples/quickstart-secagg.toml` (ChaCha20 masks, 32-bit modulus);
//! - homomorphic as `examples/quickstart-he.toml` (20-bit plaintexts, a committee of the
//!   first 3 members, any 2 of which decrypt; key shares dealt in this process).
//!
//! The variants alternate `REPEATS` times (fresh federations each time, so machine load
//! drifts over all of them alike), each running `ROUNDS` rounds; the first round of each
//! federation is warm-up and left out. Per round it reports the wall time, the process's CPU
//! time (`/proc/self/stat`, every thread), and the wall time split into local training (the
//! simulation's training batches), the engine (aggregation, unmasking, ciphertext sums) and
//! the rest (members' protocol work on the driver thread: masking, key agreement, encryption,
//! partial decryption). Upload sizes per member come from the protocol's own encoders at the
//! model's size: the f32 chunks of a plain update, the bit-packed masked vector of SecAgg+, the
//! signed manifest and ciphertext chunks of an encrypted update.
//!
//! `cargo run --release -p benches --bin secure_round -- [CLIENTS] [HIDDEN] [ROUNDS] [REPEATS]`
//! (defaults `10 13333 3 2`).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use examples::digits::{DigitsConfig, Prepared, evaluate_global, prepare};
use fl_aggregator::{Engine, EngineConfig, EngineEvent, InProcessFederation, SimStats};
use fl_client::ModelSpec;
use fl_core::secure::{CommitteeConfig, SecureAggregationConfig, SecureProtocol};
use fl_core::{FedAvg, MemberKey, ParamVec, StrategyConfig};
use secure_agg::he::{ClientEncryptor, CommitteeParams, UploadManifest};

/// Chunk size of the wire protocol's parameter and masked-value chunks.
const CHUNK_BYTES: usize = 4 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Plain,
    SecAggPlus,
    Homomorphic,
}

impl Variant {
    const ALL: [Variant; 3] = [Variant::Plain, Variant::SecAggPlus, Variant::Homomorphic];

    fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain FedAvg",
            Variant::SecAggPlus => "SecAgg+ (k=32)",
            Variant::Homomorphic => "HE (k=20, 2-of-3)",
        }
    }

    /// The federation's `[secure_aggregation]`, as the quickstart's TOML files set it.
    fn secure(self) -> Option<SecureAggregationConfig> {
        match self {
            Variant::Plain => None,
            // examples/quickstart-secagg.toml: the defaults.
            Variant::SecAggPlus => Some(SecureAggregationConfig {
                protocol: SecureProtocol::SecAggPlus,
                modulus_bits: 32,
                clip_norm: 10.0,
                max_weight: 65536,
                dropout_rate: 0.1,
                corruption_rate: 0.1,
                ..SecureAggregationConfig::default()
            }),
            // examples/quickstart-he.toml.
            Variant::Homomorphic => Some(SecureAggregationConfig {
                protocol: SecureProtocol::Homomorphic,
                modulus_bits: 20,
                clip_norm: 5.0,
                max_weight: 256,
                committee: Some(CommitteeConfig {
                    members: 3,
                    threshold: 2,
                    min_contributors: 2,
                }),
                ..SecureAggregationConfig::default()
            }),
        }
    }
}

/// One measured round.
#[derive(Debug, Clone, Copy, Default)]
struct RoundCost {
    wall: f64,
    cpu: f64,
    train: f64,
    engine: f64,
}

impl RoundCost {
    /// Wall time outside training and the engine: the members' protocol steps.
    fn protocol(&self) -> f64 {
        (self.wall - self.train - self.engine).max(0.0)
    }
}

/// Process CPU time (user + system, every thread, exited ones included) from
/// `/proc/self/stat`, at the kernel's 100 Hz clock-tick resolution.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `state` (field 3);
    // utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

struct Settings {
    clients: usize,
    hidden: usize,
    rounds: u64,
    repeats: usize,
}

fn settings() -> Result<Settings, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: usize| -> Result<usize, String> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse()
                .map_err(|e| format!("argument {}: {a}: {e}", i + 1))
        })
    };
    let s = Settings {
        clients: arg(0, 10)?,
        hidden: arg(1, 13333)?,
        rounds: arg(2, 3)? as u64,
        repeats: arg(3, 2)?,
    };
    if s.clients < 3 || s.rounds < 2 || s.repeats < 1 {
        return Err("need CLIENTS >= 3 (the committee), ROUNDS >= 2, REPEATS >= 1".into());
    }
    Ok(s)
}

fn digits_config(s: &Settings) -> DigitsConfig {
    DigitsConfig {
        clients: s.clients,
        rounds: s.rounds,
        model: ModelSpec::Mlp { hidden: s.hidden },
        ..DigitsConfig::default()
    }
}

/// Runs one federation of `variant`; returns its rounds after the first and the held-out
/// accuracy of its final model.
fn run_federation(
    config: &DigitsConfig,
    variant: Variant,
) -> Result<(Vec<RoundCost>, f64), String> {
    let Prepared {
        trainers,
        mut evaluator,
        initial,
        ..
    } = prepare(config).map_err(|e| e.to_string())?;
    let n = trainers.len();
    let engine = Engine::new(
        EngineConfig {
            num_rounds: config.rounds,
            min_available_clients: n,
            fit_timeout: Duration::from_secs(3600),
            evaluate_timeout: Duration::from_secs(3600),
            seed: config.seed,
            release_params_during_fit: false,
        },
        Box::new(FedAvg::new(StrategyConfig {
            fraction_fit: 1.0,
            min_fit_clients: n,
            min_fit_results: n,
            fraction_evaluate: 0.0,
            fit: config.fit.clone(),
            ..StrategyConfig::default()
        })),
        initial,
    );
    let federation = match variant.secure() {
        None => InProcessFederation::new(engine, trainers, config.workers),
        Some(secure) => {
            InProcessFederation::with_secure_aggregation(engine, trainers, config.workers, secure)?
        }
    };

    let mut costs = Vec::new();
    let mut problems = Vec::new();
    let mut start = (Instant::now(), Duration::ZERO, SimStats::default());
    let outcome = federation.run(|event, stats| match event {
        EngineEvent::RoundStarted { .. } => {
            start = (Instant::now(), process_cpu(), stats.clone());
        }
        EngineEvent::FitAggregated {
            round, num_results, ..
        } if *num_results != n => {
            problems.push(format!("round {round}: {num_results} of {n} results"));
        }
        EngineEvent::RoundAborted { round, reason } => {
            problems.push(format!("round {round} aborted: {reason}"));
        }
        EngineEvent::Stopped { round, reason } => {
            problems.push(format!("stopped before round {round}: {reason}"));
        }
        EngineEvent::RoundCompleted { .. } => costs.push(RoundCost {
            wall: start.0.elapsed().as_secs_f64(),
            cpu: (process_cpu().saturating_sub(start.1)).as_secs_f64(),
            train: (stats.compute_wall - start.2.compute_wall).as_secs_f64(),
            engine: (stats.engine_wall - start.2.engine_wall).as_secs_f64(),
        }),
        _ => {}
    });
    if !problems.is_empty() {
        return Err(format!("{}: {}", variant.name(), problems.join("; ")));
    }
    if costs.len() as u64 != config.rounds {
        return Err(format!(
            "{}: {} of {} rounds completed",
            variant.name(),
            costs.len(),
            config.rounds
        ));
    }
    let accuracy = evaluate_global(&mut evaluator, &outcome.params)
        .map_err(|e| e.to_string())?
        .accuracy()
        .unwrap_or(f64::NAN);
    Ok((costs.split_off(1), accuracy))
}

/// Payload bytes one member uploads for its update, from the protocol's own encoders.
fn upload_bytes(variant: Variant, params: &ParamVec, clients: usize) -> Result<usize, String> {
    let d = params.values().len();
    Ok(match variant {
        Variant::Plain => fl_core::wire::encode_chunks(params, 1, CHUNK_BYTES)
            .map(|c| c.data.len())
            .sum(),
        Variant::SecAggPlus => {
            // The masked vector: the encoded update (no rotation: d values) and the weight,
            // each a uniform value mod 2^32, bit-packed in 32 bits.
            let bits = 32;
            let codec = secure_agg::CodecConfig::for_clients(clients as u32, 10.0, bits)
                .map_err(|e| e.to_string())?;
            let len = fl_core::secure::vector_len(&codec, d).map_err(|e| e.to_string())?;
            let masked = vec![u32::MAX; len];
            fl_core::secure::wire::masked_chunks(1, &masked, bits, CHUNK_BYTES)
                .iter()
                .map(|c| c.data.len())
                .sum()
        }
        Variant::Homomorphic => {
            // The encoded update and the weight (d + 1 values of 20 bits) encrypted under a
            // committee key of the benchmark's shape, plus the signed upload manifest.
            let params = CommitteeParams::new(3, 2, 2, 20, clients as u32)
                .map_err(|e| format!("committee parameters: {e}"))?;
            let (public_key, _) =
                fl_core::secure::he::local_committee(params, 7).map_err(|e| e.to_string())?;
            let values = vec![(1u32 << 20) - 1; d + 1];
            let mut rng = privacy::noise::os_rng().map_err(|e| e.to_string())?;
            let encryptor =
                ClientEncryptor::new(params.he, public_key.clone()).map_err(|e| e.to_string())?;
            let chunks = encryptor
                .encrypt(&values, &mut rng)
                .map_err(|e| e.to_string())?;
            let signer = fl_core::secure::MemberSigner(Arc::new(MemberKey::generate()));
            let manifest =
                UploadManifest::for_chunks(public_key.digest(), 1, 0, values.len(), &chunks)
                    .sign(&signer)
                    .to_bytes();
            manifest.len() + chunks.iter().map(|c| c.to_bytes().len()).sum::<usize>()
        }
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

/// Median of each column over a variant's measured rounds.
fn summary(rounds: &[RoundCost]) -> RoundCost {
    let col = |f: fn(&RoundCost) -> f64| median(rounds.iter().map(f).collect());
    RoundCost {
        wall: col(|r| r.wall),
        cpu: col(|r| r.cpu),
        train: col(|r| r.train),
        engine: col(|r| r.engine),
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(report) => {
            print!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("secure_round: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<String, String> {
    let s = settings()?;
    let config = digits_config(&s);
    let d = prepare(&DigitsConfig {
        clients: 3,
        ..config.clone()
    })
    .map_err(|e| e.to_string())?
    .initial;
    let dim = d.values().len();
    eprintln!(
        "{} members, MLP 64-{}-10 ({dim} parameters), {} rounds x {} repeats per variant",
        s.clients, s.hidden, s.rounds, s.repeats
    );

    let mut measured: Vec<Vec<RoundCost>> = vec![Vec::new(); Variant::ALL.len()];
    let mut accuracy = vec![Vec::new(); Variant::ALL.len()];
    for repeat in 0..s.repeats {
        for (i, variant) in Variant::ALL.into_iter().enumerate() {
            let t = Instant::now();
            let (rounds, acc) = run_federation(&config, variant)?;
            eprintln!(
                "repeat {}: {:<18} {:.1} s, rounds {:?}",
                repeat + 1,
                variant.name(),
                t.elapsed().as_secs_f64(),
                rounds
                    .iter()
                    .map(|r| format!("{:.2}s/{:.2}cpu", r.wall, r.cpu))
                    .collect::<Vec<_>>()
            );
            measured[i].extend(rounds);
            accuracy[i].push(acc);
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        "d = {dim} parameters, {} members, median of {} rounds per variant (first round of each federation left out)\n",
        s.clients,
        measured[0].len()
    );
    let _ = writeln!(
        out,
        "| variant | wall s/round | CPU s/round | training s | engine s | members' protocol s | upload B/param | held-out acc. |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut sums = Vec::new();
    for (i, variant) in Variant::ALL.into_iter().enumerate() {
        let m = summary(&measured[i]);
        let bytes = upload_bytes(variant, &d, s.clients)? as f64 / dim as f64;
        let acc = accuracy[i].iter().sum::<f64>() / accuracy[i].len() as f64;
        let _ = writeln!(
            out,
            "| {} | {:.2} | {:.2} | {:.2} ({:.0}%) | {:.2} ({:.0}%) | {:.2} ({:.0}%) | {:.2} | {:.3} |",
            variant.name(),
            m.wall,
            m.cpu,
            m.train,
            100.0 * m.train / m.wall,
            m.engine,
            100.0 * m.engine / m.wall,
            m.protocol(),
            100.0 * m.protocol() / m.wall,
            bytes,
            acc
        );
        sums.push((m, bytes));
    }
    let ratio = |a: usize, b: usize| {
        format!(
            "wall {:.2}x, CPU {:.2}x, upload {:.2}x",
            sums[a].0.wall / sums[b].0.wall,
            sums[a].0.cpu / sums[b].0.cpu,
            sums[a].1 / sums[b].1
        )
    };
    let _ = writeln!(out);
    let _ = writeln!(out, "HE / plain:      {}", ratio(2, 0));
    let _ = writeln!(out, "HE / SecAgg+:    {}", ratio(2, 1));
    let _ = writeln!(out, "SecAgg+ / plain: {}", ratio(1, 0));
    Ok(out)
}
