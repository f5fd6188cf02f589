//! What the DAO says about inference: the model governance promoted for a federation (its
//! parameters' hash in the `ModelRegistry`) and which inference nodes are staked
//! (`Staking`, role `inference`). The gateway weights nodes by these stakes and treats answers
//! for any other model as disagreements; a node serves a checkpoint only if it is the promoted
//! one.

use std::collections::BTreeMap;

use dao::{Dao, Membership, Role};
use fl_core::{Address, ContentHash};

/// The parameters' hash of the model governance promoted for `federation` (by name), `None`
/// before any promotion.
///
/// # Errors
/// An endpoint error.
pub async fn promoted_model(dao: &Dao, federation: &str) -> dao::Result<Option<ContentHash>> {
    let id = dao::chain_anchor::FederationId::from_name(federation);
    Ok(dao
        .current_model(id)
        .await?
        .map(|m| ContentHash::from_digest(m.params_hash.0)))
}

/// Each node's stake as an inference node, in whole tokens; 0 for a node without enough stake,
/// jailed or unbonding (never selected).
///
/// # Errors
/// An endpoint error.
pub async fn inference_stakes(dao: &Dao, nodes: &[Address]) -> dao::Result<BTreeMap<Address, f64>> {
    let mut out = BTreeMap::new();
    for &node in nodes {
        let stake = match dao.membership(node, Role::Inference).await? {
            Membership::Ok { stake } => {
                // Base units (18 decimals) to tokens; f64 keeps 15 significant digits.
                let units: u128 = stake.try_into().unwrap_or(u128::MAX);
                units as f64 / 1e18
            }
            _ => 0.0,
        };
        out.insert(node, stake);
    }
    Ok(out)
}
