//! The embedded chain: an in-memory revm database, a block clock and the logs, persisted as one
//! JSON file.

use std::collections::BTreeMap;
use std::path::Path;

use alloy::primitives::{Address, B256, Bytes, Log, LogData, U256, keccak256};
use alloy::sol_types::SolValue;
use revm::context::TxEnv;
use revm::context::result::ExecutionResult;
use revm::database::{AccountState, CacheDB, EmptyDB};
use revm::primitives::TxKind;
use revm::state::{AccountInfo, Bytecode};
use revm::{Context, ExecuteCommitEvm, ExecuteEvm, MainBuilder, MainContext};
use serde::{Deserialize, Serialize};

use crate::fsutil::{read_bounded, write_atomic};
use crate::{Error, Result};

/// Chain id of the embedded EVM (`"daof"` in ASCII); no public chain uses it.
pub const EMBEDDED_CHAIN_ID: u64 = 0x6461_6f66;

/// Format tag of the state file.
const FORMAT: &str = "daofl-embedded-evm/1";

/// Gas limit of every embedded transaction (under the 2^24 per-transaction cap of recent forks).
const TX_GAS_LIMIT: u64 = 15_000_000;

/// Largest state file read (a registry with a million anchored rounds is far below it).
const MAX_STATE_BYTES: u64 = 1 << 30;

/// A log with where it was emitted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredLog {
    pub block_number: u64,
    pub tx_hash: B256,
    pub address: Address,
    pub topics: Vec<B256>,
    pub data: Bytes,
}

impl StoredLog {
    pub(crate) fn to_log(&self) -> Option<Log> {
        Some(Log {
            address: self.address,
            data: LogData::new(self.topics.clone(), self.data.clone())?,
        })
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredAccount {
    nonce: u64,
    balance: U256,
    #[serde(default, skip_serializing_if = "<[u8]>::is_empty")]
    code: Bytes,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    storage: BTreeMap<U256, U256>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredChain {
    format: String,
    chain_id: u64,
    block_number: u64,
    timestamp: u64,
    registry: Address,
    accounts: BTreeMap<Address, StoredAccount>,
    logs: Vec<StoredLog>,
}

/// The outcome of one embedded transaction.
pub(crate) struct Executed {
    pub result: ExecutionResult,
    pub tx_hash: B256,
    pub block_number: u64,
}

/// The embedded chain.
#[derive(Debug, Default)]
pub(crate) struct Chain {
    db: CacheDB<EmptyDB>,
    pub block_number: u64,
    timestamp: u64,
    pub registry: Address,
    pub logs: Vec<StoredLog>,
}

impl Chain {
    /// An empty chain (no accounts, block 0).
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Reads a state file written by [`Chain::save`].
    pub(crate) fn load(path: &Path) -> Result<Self> {
        let corrupt = |reason: String| Error::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = read_bounded(path, MAX_STATE_BYTES)?;
        let stored: StoredChain =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if stored.format != FORMAT {
            return Err(corrupt(format!(
                "format {:?}, expected {FORMAT:?}",
                stored.format
            )));
        }
        if stored.chain_id != EMBEDDED_CHAIN_ID {
            return Err(corrupt(format!("chain id {}", stored.chain_id)));
        }
        let mut db = CacheDB::new(EmptyDB::new());
        for (address, a) in stored.accounts {
            let mut info = AccountInfo {
                balance: a.balance,
                nonce: a.nonce,
                ..AccountInfo::default()
            };
            if !a.code.is_empty() {
                let code = Bytecode::new_raw_checked(a.code)
                    .map_err(|e| corrupt(format!("code of {address}: {e:?}")))?;
                info = info.with_code(code);
            }
            db.insert_account_info(address, info);
            for (slot, value) in a.storage {
                db.insert_account_storage(address, slot, value)
                    .map_err(|e| corrupt(format!("storage of {address}: {e:?}")))?;
            }
        }
        Ok(Self {
            db,
            block_number: stored.block_number,
            timestamp: stored.timestamp,
            registry: stored.registry,
            logs: stored.logs,
        })
    }

    /// Writes the state atomically to `path`.
    pub(crate) fn save(&self, path: &Path) -> Result<()> {
        let mut accounts = BTreeMap::new();
        for (address, a) in &self.db.cache.accounts {
            if a.account_state == AccountState::NotExisting {
                continue;
            }
            let code = match &a.info.code {
                Some(c) => c.original_bytes(),
                None => self
                    .db
                    .cache
                    .contracts
                    .get(&a.info.code_hash)
                    .map(Bytecode::original_bytes)
                    .unwrap_or_default(),
            };
            let storage: BTreeMap<U256, U256> = a
                .storage
                .iter()
                .filter(|(_, v)| !v.is_zero())
                .map(|(k, v)| (*k, *v))
                .collect();
            accounts.insert(
                *address,
                StoredAccount {
                    nonce: a.info.nonce,
                    balance: a.info.balance,
                    code,
                    storage,
                },
            );
        }
        let stored = StoredChain {
            format: FORMAT.into(),
            chain_id: EMBEDDED_CHAIN_ID,
            block_number: self.block_number,
            timestamp: self.timestamp,
            registry: self.registry,
            accounts,
            logs: self.logs.clone(),
        };
        let json = serde_json::to_vec_pretty(&stored)
            .map_err(|e| Error::Evm(format!("serialising the state: {e}")))?;
        write_atomic(path, &json)
    }

    /// Runtime code at `address` (empty when none).
    pub(crate) fn code(&self, address: Address) -> Bytes {
        self.db
            .cache
            .accounts
            .get(&address)
            .and_then(|a| {
                a.info
                    .code
                    .as_ref()
                    .map(Bytecode::original_bytes)
                    .or_else(|| {
                        self.db
                            .cache
                            .contracts
                            .get(&a.info.code_hash)
                            .map(Bytecode::original_bytes)
                    })
            })
            .unwrap_or_default()
    }

    /// Timestamp of the last block.
    pub(crate) fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// Moves the clock `seconds` past the later of the last block's time and the wall clock,
    /// and mines an empty block at that time (as anvil's `evm_increaseTime` + `evm_mine`).
    pub(crate) fn advance_time(&mut self, seconds: u64) -> Result<u64> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let timestamp = self
            .timestamp
            .max(now)
            .checked_add(seconds)
            .ok_or_else(|| {
                Error::InvalidInput(format!("advancing the clock by {seconds} s overflows"))
            })?;
        self.block_number = self
            .block_number
            .checked_add(1)
            .ok_or_else(|| Error::Evm("the block number is at its maximum".into()))?;
        self.timestamp = timestamp;
        Ok(timestamp)
    }

    pub(crate) fn nonce(&self, address: Address) -> u64 {
        self.db
            .cache
            .accounts
            .get(&address)
            .map_or(0, |a| a.info.nonce)
    }

    /// Executes a call or creation by `caller` in a new block and commits it (also when it
    /// reverts: the nonce is spent, as on a real chain). Logs of a successful call are kept.
    pub(crate) fn transact(
        &mut self,
        caller: Address,
        to: TxKind,
        data: Bytes,
    ) -> Result<Executed> {
        let nonce = self.nonce(caller);
        let block_number = self
            .block_number
            .checked_add(1)
            .ok_or_else(|| Error::Evm("the block number is at its maximum".into()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let timestamp = now.max(self.timestamp.saturating_add(1));
        let target = match to {
            TxKind::Call(a) => a,
            TxKind::Create => Address::ZERO,
        };
        let tx_hash =
            keccak256((EMBEDDED_CHAIN_ID, caller, nonce, target, data.clone()).abi_encode());
        let tx = TxEnv::builder()
            .caller(caller)
            .kind(to)
            .data(data)
            .nonce(nonce)
            .gas_limit(TX_GAS_LIMIT)
            .gas_price(0)
            .chain_id(Some(EMBEDDED_CHAIN_ID))
            .build()
            .map_err(|e| Error::Evm(format!("building the transaction: {e:?}")))?;
        let db = std::mem::take(&mut self.db);
        let mut evm = self
            .context(db, block_number, timestamp, false)
            .build_mainnet();
        let outcome = evm.transact_commit(tx);
        self.db = evm.ctx.journaled_state.database;
        let result = outcome.map_err(|e| Error::Evm(format!("{e:?}")))?;
        self.block_number = block_number;
        self.timestamp = timestamp;
        if result.is_success() {
            for log in result.logs() {
                self.logs.push(StoredLog {
                    block_number,
                    tx_hash,
                    address: log.address,
                    topics: log.data.topics().to_vec(),
                    data: log.data.data.clone(),
                });
            }
        }
        Ok(Executed {
            result,
            tx_hash,
            block_number,
        })
    }

    /// Executes a read-only call against the current state (nothing is committed).
    pub(crate) fn call(&mut self, to: Address, data: Bytes) -> Result<ExecutionResult> {
        self.call_as(Address::ZERO, to, data)
    }

    /// A read-only call from `caller` (nothing is committed).
    pub(crate) fn call_as(
        &mut self,
        caller: Address,
        to: Address,
        data: Bytes,
    ) -> Result<ExecutionResult> {
        let tx = TxEnv::builder()
            .caller(caller)
            .kind(TxKind::Call(to))
            .data(data)
            .gas_limit(TX_GAS_LIMIT)
            .gas_price(0)
            .chain_id(Some(EMBEDDED_CHAIN_ID))
            .build()
            .map_err(|e| Error::Evm(format!("building the call: {e:?}")))?;
        let db = std::mem::take(&mut self.db);
        let mut evm = self
            .context(db, self.block_number, self.timestamp, true)
            .build_mainnet();
        let outcome = evm.transact(tx);
        self.db = evm.ctx.journaled_state.database;
        outcome
            .map(|r| r.result)
            .map_err(|e| Error::Evm(format!("{e:?}")))
    }

    fn context(
        &self,
        db: CacheDB<EmptyDB>,
        number: u64,
        timestamp: u64,
        read_only: bool,
    ) -> revm::handler::MainnetContext<CacheDB<EmptyDB>> {
        Context::mainnet()
            .with_db(db)
            .modify_cfg_chained(|cfg| {
                cfg.chain_id = EMBEDDED_CHAIN_ID;
                cfg.disable_nonce_check = read_only;
            })
            .modify_block_chained(|block| {
                block.number = U256::from(number);
                block.timestamp = U256::from(timestamp);
                block.basefee = 0;
                block.gas_limit = 30_000_000;
            })
    }
}
