//! The economic loop end to end, on the embedded EVM and on anvil: a DAO is deployed, five
//! staked members train over two settlement epochs as real processes (one flips the sign of its
//! updates, one free-rides), every round anchored; five QA validators (quorum 3) each run
//! `fl-aggregator validate`, which recomputes the epoch from the anchored checkpoints, re-checks
//! the sealed evidence, signs, publishes, and posts what a quorum signed alike; a dishonest
//! validator's contradicting root is reported; after the challenge window the poisoner is
//! slashed by exactly the governed fraction, honest members claim with `fl-client claim` and
//! their balances rise by exactly their leaves, `settle verify` agrees, and the supply falls by
//! exactly what was burnt.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chain_anchor::alloy::primitives::{Address, U256};
use dao::settle::{RewardTree, RootMessage, sign_root};
use dao::{Role, tokens};
use fl_aggregator::validator::{EpochSignatures, RootVote, SIGNATURES_VERSION};
use fl_core::MemberKey;

use crate::chain::{Chain, address_list, signer};
use crate::e2e::{Procs, bin, start_aggregator_with, wait_exit, wait_line};

const TRAINERS: usize = 5;
const VALIDATORS: usize = 5;
const POISONER: usize = 3;
const FREE_RIDER: usize = 4;
const EPOCHS: u64 = 2;
const EPOCH_ROUNDS: u64 = 2;
const STAKE: u64 = 10_000;

fn federation_toml(
    port: u16,
    metrics_port: u16,
    trainers: &[MemberKey],
    validators: &[MemberKey],
    chain_section: &str,
) -> String {
    let sealed: Vec<String> = validators
        .iter()
        .map(|k| format!("\"{}\"", k.public_key_hex()))
        .collect();
    format!(
        r#"[federation]
id = "settle-e2e"
seed = 7
rounds = {rounds}
min_clients = {TRAINERS}
fit_timeout_s = 120
evaluate_timeout_s = 60

[model]
kind = "mlp"
hidden = 64

[data]
dataset = "digits"
partition = "iid"
test_fraction = 0.2

[strategy]
kind = "trimmed_mean"
fraction_fit = 1.0
min_fit_clients = {TRAINERS}
min_fit_results = {TRAINERS}

[strategy.trimmed_mean]
beta = 0.2

[strategy.detection]

[strategy.contribution]
shapley = "exact"

[strategy.fit]
local_epochs = 2
batch_size = 32
learning_rate = 0.02

[aggregator]
listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"
checkpoints = "run/checkpoints"
heartbeat_interval_s = 1
idle_timeout_s = 20

[client]
aggregator = "http://localhost:{port}"
reconnect_attempts = 200
reconnect_delay_s = 0.1

[members]
allowed = {allowed}

[qa]
validators = [{sealed}]

{chain_section}
"#,
        rounds = EPOCHS * EPOCH_ROUNDS,
        allowed = address_list(trainers),
        sealed = sealed.join(", "),
    )
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

/// `watch` (anvil only: an embedded chain is one process's at a time): validators 0, 1, 2 run
/// `fl-aggregator validate --watch` while the federation trains, instead of one pass per epoch
/// afterwards (and the hostile inputs of the one-pass runs are left out).
/// The signature file `key` would publish for `epoch` over `tree` with `deadline`.
fn signed_root_file(
    key: &MemberKey,
    domain: &chain_anchor::alloy::sol_types::Eip712Domain,
    epoch: u64,
    tree: &RewardTree,
    deadline: u64,
) -> EpochSignatures {
    let message = RootMessage::of(epoch, tree, deadline);
    EpochSignatures {
        version: SIGNATURES_VERSION,
        federation_id: "settle-e2e".into(),
        epoch,
        validator: key.address(),
        root: RootVote {
            root: message.root,
            total: U256::from(message.total),
            deadline,
            signature: sign_root(&signer(key), domain, &message).unwrap(),
        },
        rewards: tree.rewards().collect(),
        verdicts: Vec::new(),
    }
}

/// Writes `file` where its validator publishes it in the checkpoint store at `store`.
fn publish(store: &std::path::Path, file: &EpochSignatures) {
    std::fs::write(
        store.join(EpochSignatures::path(file.epoch, file.validator)),
        serde_json::to_vec(file).unwrap(),
    )
    .unwrap();
}

/// `validator`'s published file of `epoch` and its tree, checked to be the root posted on chain.
async fn posted(
    chain: &Chain,
    reader: &MemberKey,
    store: &std::path::Path,
    epoch: u64,
    validator: &MemberKey,
) -> (RewardTree, EpochSignatures) {
    let published: EpochSignatures = serde_json::from_slice(
        &std::fs::read(store.join(EpochSignatures::path(epoch, validator.address()))).unwrap(),
    )
    .unwrap();
    let tree = published.tree().unwrap();
    let state = chain.dao(reader).epoch(epoch).await.unwrap();
    assert_eq!((state.root, state.status), (tree.root(), 1));
    (tree, published)
}

async fn two_epochs(embedded: bool, watch: bool) {
    let dir = tempfile::tempdir().unwrap();
    // Keys: 0 deployer (the registry's admin and aggregator), 1 guardian, 2 slasher, 3 team,
    // 4 investors, then the trainers, then the validators; on anvil all funded accounts.
    let Some((mut chain, keys)) = Chain::start(
        embedded,
        dir.path().join("run/chain"),
        5 + TRAINERS + VALIDATORS,
    ) else {
        return;
    };
    let trainers = &keys[5..5 + TRAINERS];
    let validators = &keys[5 + TRAINERS..];

    // The DAO: 5 validators, quorum 3, 2-round epochs of 1,000 tokens, contradicting
    // validators lose 5% of their stake, a fifth of a member's slash returns to the pool.
    // The embedded aggregator deploys it there (it is the registry's admin); on anvil key 0.
    let (deployment, config) = chain
        .deploy_dao(
            &keys,
            &format!(
                "[settlement]\nvalidators = {}\nquorum = 3\nepoch_rounds = {EPOCH_ROUNDS}\n\
                 epoch_pool_tokens = 1000\nvalidator_slash_bps = 500\nslash_to_pool_bps = 2000\n",
                address_list(validators)
            ),
        )
        .await;
    deployment.save(&dir.path().join("dao.json")).unwrap();
    let team_dao = chain.dao(&keys[3]);
    // Trainers and validators stake as training nodes (a validator's signature counts only
    // while it holds the training minimum, unjailed: `validator_min_stake_tokens`, default).
    let dishonest = &validators[3];
    for k in trainers.iter().chain(validators) {
        chain
            .fund_and_stake(&team_dao, k, Role::Training, tokens(STAKE))
            .await;
    }
    let reader = chain.dao(&keys[0]);
    let supply0 = reader.total_supply().await.unwrap();
    let pool0 = reader.balance_of(deployment.training_pool).await.unwrap();
    drop((team_dao, reader));
    chain.release();

    // The federation, anchored on the same chain.
    let chain_section = if embedded {
        "[chain]\nbackend = \"embedded\"\n".to_owned()
    } else {
        // Relative paths of [chain] live in the checkpoint folder's parent (run/).
        std::fs::create_dir_all(dir.path().join("run")).unwrap();
        fl_node::write_key_file(&keys[0], &dir.path().join("run/aggregator.key")).unwrap();
        format!(
            "[chain]\nbackend = \"rpc\"\nurl = \"{}\"\nregistry = \"{}\"\nkey_file = \"aggregator.key\"\n\
             chain_id = 31337\nqueue_dir = \"anchor-queue\"\nreceipt_timeout_secs = 20\n",
            chain.rpc_url().unwrap(),
            deployment.checkpoint_registry
        )
    };
    let config_path = dir.path().join("federation.toml");
    std::fs::write(
        &config_path,
        federation_toml(
            free_port(),
            free_port(),
            trainers,
            validators,
            &chain_section,
        ),
    )
    .unwrap();
    let key_files: Vec<PathBuf> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let p = dir.path().join(format!("key-{i}.key"));
            fl_node::write_key_file(k, &p).unwrap();
            p
        })
        .collect();
    let trainer_keys = &key_files[5..5 + TRAINERS];
    let validator_keys = &key_files[5 + TRAINERS..];

    let (aggregator, lines) = start_aggregator_with(&config_path);
    let mut procs = Procs(vec![aggregator]);
    wait_line(&lines, "listening", Duration::from_secs(120));
    for (i, key) in trainer_keys.iter().enumerate() {
        let mut cmd = Command::new(bin("fl-client"));
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .arg("--key")
            .arg(key)
            .env("DAOFL_LOG", "warn")
            .stdout(std::process::Stdio::null());
        match i {
            POISONER => cmd.args(["--attack", "sign_flip"]),
            FREE_RIDER => cmd.args(["--attack", "free_ride"]),
            _ => &mut cmd,
        };
        procs.0.push(cmd.spawn().unwrap());
    }
    // Watching validators: they wait for each epoch's anchors, then validate it.
    let mut watchers = Procs(Vec::new());
    let watch_logs: Vec<PathBuf> = (0..3)
        .map(|v| dir.path().join(format!("watch-{v}.log")))
        .collect();
    if watch {
        for (v, log) in watch_logs.iter().enumerate() {
            watchers.0.push(
                Command::new(bin("fl-aggregator"))
                    .args(["validate", "--config"])
                    .arg(&config_path)
                    .arg("--key-file")
                    .arg(&validator_keys[v])
                    .arg("--dao")
                    .arg(dir.path().join("dao.json"))
                    .args(["--epoch", "1", "--watch", "--until-epoch", "2"])
                    .args(["--poll-secs", "1"])
                    .env("DAOFL_LOG", "warn")
                    .stdout(std::fs::File::create(log).unwrap())
                    .spawn()
                    .unwrap(),
            );
        }
    }
    wait_line(&lines, "finished", Duration::from_secs(600));
    assert!(wait_exit(&mut procs.0[0], Duration::from_secs(60)).success());
    drop(procs);
    for w in &mut watchers.0 {
        assert!(wait_exit(w, Duration::from_secs(180)).success());
    }
    let watched: String = watch_logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap_or_default())
        .collect();
    if watch {
        assert_eq!(watched.matches("root posted: 0x").count(), 2, "{watched}");
    }

    let validate = |v: usize, epoch: u64| {
        chain.release();
        run_ok(
            Command::new(bin("fl-aggregator"))
                .args(["validate", "--config"])
                .arg(&config_path)
                .arg("--key-file")
                .arg(&validator_keys[v])
                .arg("--dao")
                .arg(dir.path().join("dao.json"))
                .args(["--epoch", &epoch.to_string()])
                .env("DAOFL_LOG", "warn"),
        )
    };
    let store = dir.path().join("run/checkpoints");
    let poisoner: Address = trainers[POISONER].address();
    let free_rider: Address = trainers[FREE_RIDER].address();
    let domain = chain.dao(&keys[0]).settlement_domain().await.unwrap();
    let mut trees = Vec::new();
    if watch {
        for epoch in 1..=EPOCHS {
            let (tree, published) = posted(&chain, &keys[0], &store, epoch, &validators[0]).await;
            assert!(published.verdicts.iter().any(|v| v.member == poisoner));
            trees.push((tree, published));
        }
    }
    // Hostile inputs in the store and on the command line, each refused or ignored by name:
    // an epoch not anchored yet; a malformed signature file; one by a non-validator; evidence
    // whose sealed record was re-addressed to an honest member.
    if !watch {
        chain.release();
        let early = Command::new(bin("fl-aggregator"))
            .args(["validate", "--config"])
            .arg(&config_path)
            .arg("--key-file")
            .arg(&validator_keys[0])
            .arg("--dao")
            .arg(dir.path().join("dao.json"))
            .args(["--epoch", "3"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&early.stderr);
        assert!(
            !early.status.success() && text.contains("epoch 3 ends at round 6"),
            "{text}"
        );
        let folder = store.join(EpochSignatures::folder(1));
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("junk.json"), b"{ not json").unwrap();
        // An oversized one is not even read whole.
        std::fs::write(folder.join("huge.json"), vec![b' '; 5 << 20]).unwrap();
        let outsider = &trainers[0];
        let outsider_tree = RewardTree::new(&[(outsider.address(), U256::from(5u64))]).unwrap();
        let outsider_file = signed_root_file(outsider, &domain, 1, &outsider_tree, 1 << 40);
        publish(&store, &outsider_file);
        // A file that names a real validator but carries an outsider's signature.
        let impersonation = EpochSignatures {
            validator: validators[4].address(),
            ..outsider_file.clone()
        };
        std::fs::write(
            store
                .join(EpochSignatures::folder(1))
                .join("impersonation.json"),
            serde_json::to_vec(&impersonation).unwrap(),
        )
        .unwrap();
        let honest = trainers[1].address();
        let real = store.join(format!("evidence/0000000001/{poisoner}.json"));
        let forged = std::fs::read_to_string(&real)
            .unwrap()
            .replace(&poisoner.to_string(), &honest.to_string());
        std::fs::write(
            store.join(format!("evidence/0000000001/{honest}.json")),
            forged,
        )
        .unwrap();

        for epoch in 1..=EPOCHS {
            // Validators 0, 1, 2 recompute and sign; the third signature posts the root and the
            // verdicts (validators 4 abstains; 3 lies, below).
            let first = validate(0, epoch);
            assert!(first.contains("root posted: none"), "{first}");
            if epoch == 1 {
                assert!(first.contains("junk.json: malformed"), "{first}");
                assert!(
                    first.contains("huge.json has 5242880 bytes, more than the 4194304 allowed"),
                    "{first}"
                );
                assert!(
                    first.contains(&format!("{} is not a validator", outsider.address())),
                    "{first}"
                );
                assert!(
                    first.contains("impersonation.json: the root signature is not the validator's"),
                    "{first}"
                );
                assert!(
                    first.contains(&format!(
                        "dismissed evidence/0000000001/{honest}.json: rejected"
                    )),
                    "{first}"
                );
            }
            validate(1, epoch);
            let third = validate(2, epoch);
            assert!(third.contains("root posted: 0x"), "{third}");
            assert!(
                third.contains(&format!("flag holds: {poisoner}")),
                "the poisoner's evidence holds: {third}"
            );
            let (tree, published) = posted(&chain, &keys[0], &store, epoch, &validators[0]).await;
            assert!(!published.verdicts.is_empty());
            trees.push((tree, published));
        }
    }

    // Validator 3 signs and publishes another root for epoch 1 (it pays itself).
    let (tree1, file1) = &trees[0];
    let lie_tree = RewardTree::new(&[(dishonest.address(), U256::from(1u64))]).unwrap();
    let lie_file = signed_root_file(dishonest, &domain, 1, &lie_tree, file1.root.deadline);
    let lie = lie_file.root_message().unwrap();
    publish(&store, &lie_file);

    // The challenge window passes; validator 4 now reviews each epoch: it reports the liar and
    // executes the due verdicts.
    // The verdicts the validators signed, per member (the free rider's zero update is flagged
    // too: its distance from the robust centre is as anomalous as the poisoner's).
    let mut verdicts: std::collections::BTreeMap<Address, usize> = Default::default();
    for (_, file) in &trees {
        for v in &file.verdicts {
            *verdicts.entry(v.member).or_default() += 1;
        }
    }
    assert!(
        verdicts
            .get(&poisoner)
            .is_some_and(|n| *n >= EPOCHS as usize)
    );
    for (i, k) in trainers.iter().enumerate() {
        assert!(
            i == POISONER || i == FREE_RIDER || !verdicts.contains_key(&k.address()),
            "honest member {i} flagged: {verdicts:?}"
        );
    }
    let window = config.staking.challenge_window_secs;
    chain.dao(&keys[0]).advance_time(window + 1).await.unwrap();
    let mut executed = 0;
    let mut reported = 0;
    for epoch in 1..=EPOCHS {
        let out = validate(4, epoch);
        executed += out.matches("verdict executed: ").count();
        reported += out.matches("contradiction reported: ").count();
    }
    assert_eq!(reported, 1, "the liar is reported once");
    assert_eq!(
        executed,
        verdicts.values().sum::<usize>(),
        "every verdict executed"
    );
    let dao = chain.dao(&keys[0]);
    assert_eq!(dao.strikes(lie_file.validator).await.unwrap(), 1);
    // Below the minimum stake now, the liar's signature no longer counts towards a quorum.
    let next = RootMessage::of(3, &lie_tree, lie.deadline + 30 * 86_400);
    let sigs: Vec<_> = [dishonest, &validators[0], &validators[1]]
        .iter()
        .map(|k| sign_root(&signer(k), &domain, &next).unwrap())
        .collect();
    match dao.post_root(&next, &sigs).await {
        Err(dao::Error::Reverted(r)) => assert!(r.is("ValidatorNotStaked"), "{r}"),
        other => panic!("expected ValidatorNotStaked, got {other:?}"),
    }
    let liar_slash = tokens(STAKE) * U256::from(500u64) / U256::from(10_000u64);
    assert_eq!(
        dao.position(lie_file.validator, Role::Training)
            .await
            .unwrap()
            .0,
        tokens(STAKE) - liar_slash
    );
    // Each executed verdict slashed exactly 10% of what was staked then: a fifth of it back to
    // the training pool, the rest burnt.
    let mut poisoner_burnt = U256::ZERO;
    let mut returned = U256::ZERO;
    for (member, n) in &verdicts {
        let mut expected = tokens(STAKE);
        for _ in 0..*n {
            let cut = expected * U256::from(1_000u64) / U256::from(10_000u64);
            let back = cut * U256::from(2_000u64) / U256::from(10_000u64);
            poisoner_burnt += cut - back;
            returned += back;
            expected -= cut;
        }
        assert_eq!(
            dao.position(*member, Role::Training).await.unwrap().0,
            expected,
            "{member} after {n} verdicts"
        );
        assert!(
            matches!(
                dao.membership(*member, Role::Training).await.unwrap(),
                dao::Membership::Jailed { .. }
            ),
            "{member} is jailed"
        );
    }
    assert_eq!(
        dao.total_supply().await.unwrap(),
        supply0 - poisoner_burnt - liar_slash
    );

    // Honest members claim with fl-client; balances rise by exactly their leaves.
    let mut earned = vec![U256::ZERO; TRAINERS];
    for (e, (tree, _)) in trees.iter().enumerate() {
        let epoch = e as u64 + 1;
        let list = store.join(EpochSignatures::path(epoch, validators[1].address()));
        for (i, key) in trainer_keys.iter().enumerate() {
            let account: Address = trainers[i].address();
            let Some(amount) = tree.amount(account) else {
                continue;
            };
            earned[i] += amount;
            let before = chain.dao(&keys[0]).balance_of(account).await.unwrap();
            chain.release();
            run_ok(
                Command::new(bin("fl-client"))
                    .arg("claim")
                    .arg("--key")
                    .arg(key)
                    .arg("--dao")
                    .arg(dir.path().join("dao.json"))
                    .args(["--epoch", &epoch.to_string(), "--rewards"])
                    .arg(&list)
                    .args(chain.claim_args()),
            );
            let after = chain.dao(&keys[0]).balance_of(account).await.unwrap();
            assert_eq!(after - before, amount, "member {i}, epoch {epoch}");
            if i == 0 && epoch == 1 {
                // Twice, and with a list that is not the posted one: refused, nothing moves.
                chain.release();
                let claim_with = |list: &std::path::Path| {
                    Command::new(bin("fl-client"))
                        .arg("claim")
                        .arg("--key")
                        .arg(key)
                        .arg("--dao")
                        .arg(dir.path().join("dao.json"))
                        .args(["--epoch", "1", "--rewards"])
                        .arg(list)
                        .args(chain.claim_args())
                        .output()
                        .unwrap()
                };
                let again = claim_with(&list);
                assert!(
                    String::from_utf8_lossy(&again.stderr).contains("AlreadyClaimed"),
                    "{again:?}"
                );
                let wrong = claim_with(&store.join(EpochSignatures::path(1, lie_file.validator)));
                assert!(
                    String::from_utf8_lossy(&wrong.stderr)
                        .contains("not the list the validators signed"),
                    "{wrong:?}"
                );
                assert_eq!(
                    chain.dao(&keys[0]).balance_of(account).await.unwrap(),
                    after
                );
            }
        }
    }
    let honest_min = (0..TRAINERS)
        .filter(|i| *i != POISONER && *i != FREE_RIDER)
        .map(|i| earned[i])
        .min()
        .unwrap();
    assert!(honest_min > U256::ZERO);
    assert!(
        earned[FREE_RIDER] * U256::from(10u64) <= honest_min,
        "the free rider earns at most a tenth of an honest member: {earned:?}"
    );
    assert!(
        tree1
            .amount(free_rider)
            .is_none_or(|a| a * U256::from(10u64) <= honest_min)
    );

    // settle verify agrees with the chain for both epochs, root and verdicts.
    chain.release();
    for epoch in 1..=EPOCHS {
        let out = run_ok(
            Command::new(bin("fl-aggregator"))
                .args(["settle", "verify", &epoch.to_string(), "--config"])
                .arg(&config_path)
                .arg("--key-file")
                .arg(&validator_keys[0])
                .arg("--dao")
                .arg(dir.path().join("dao.json")),
        );
        assert!(out.contains("MATCH"), "{out}");
        assert!(
            out.contains(&format!("verdict on {poisoner}")) && out.contains("executed on chain"),
            "{out}"
        );
        assert!(!out.contains("not posted on chain"), "{out}");
    }
    // A coordinator that rewrites a score after anchoring is caught: the round's metrics are a
    // leaf of its anchored participants root.
    let manifest_path = store.join("rounds/0000000001.json");
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let metrics = manifest["metrics"].as_object_mut().unwrap();
    let key = metrics
        .keys()
        .find(|k| k.ends_with(".shapley"))
        .unwrap()
        .clone();
    metrics.insert(key, serde_json::json!(0.99));
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let out = Command::new(bin("fl-aggregator"))
        .args(["settle", "verify", "1", "--config"])
        .arg(&config_path)
        .arg("--key-file")
        .arg(&validator_keys[0])
        .arg("--dao")
        .arg(dir.path().join("dao.json"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains("round 1: the checkpoint does not match the chain"),
        "a rewritten score must be refused: {text}"
    );

    // Conservation: the pool paid exactly what was claimed; nothing else moved the supply.
    let dao = chain.dao(&keys[0]);
    let claimed: U256 = earned.iter().copied().sum();
    let held = dao.balance_of(deployment.settlement).await.unwrap();
    let posted: U256 = trees.iter().map(|(t, _)| t.total()).sum();
    assert_eq!(held + claimed, posted);
    assert_eq!(
        dao.balance_of(deployment.training_pool).await.unwrap(),
        pool0 - posted + returned
    );
    assert_eq!(
        dao.total_supply().await.unwrap(),
        supply0 - poisoner_burnt - liar_slash
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_epochs_settled_by_validators_on_the_embedded_evm() {
    two_epochs(true, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_epochs_settled_by_validators_on_anvil() {
    two_epochs(false, false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_epochs_watched_by_validators_on_anvil_while_training() {
    two_epochs(false, true).await;
}
