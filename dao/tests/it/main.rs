//! Integration tests of the DAO: the same suite on a real anvil and on the embedded EVM, and
//! property tests of the token/staking invariants on the embedded EVM. Tests that need anvil find
//! it through `DAOFL_ANVIL` or chain-anchor's `node_modules` (`npm ci` in chain-anchor).

mod invariants;
mod suite;
mod support;

use support::{World, anvil_path};

#[tokio::test]
async fn suite_on_embedded_evm() {
    let world = World::embedded().await;
    suite::run(&world).await;
}

#[tokio::test]
async fn suite_on_anvil() {
    let Some(path) = anvil_path() else { return };
    let world = World::anvil(&path).await;
    suite::run(&world).await;
}
