//! The sentinel: a random value written into the root token's cubbyhole
//! before the copy, which must read back from the raft data before a
//! migrate (or a rollback) is done. Not a secret.

use super::{node_err, MigrateError};
use crate::ops::credentials::Credentials;
use crate::ops::node::{NodeError, Request, VaultNode};
use crate::ops::secret::SecretBytes;

/// Where the sentinel lives: the root token's cubbyhole, which no other
/// token can read and which migrates with the rest of the storage.
pub const SENTINEL_PATH: &str = "cubbyhole/kubectl-vault-migrate";

/// A fresh sentinel value: random, not a secret.
pub(super) fn new_sentinel() -> String {
    use rand::Rng;
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(super) async fn write_sentinel(
    node: &impl VaultNode,
    credentials: &Credentials,
    sentinel: &str,
) -> Result<(), MigrateError> {
    let body = SecretBytes::json(&serde_json::json!({ "sentinel": sentinel }))
        .map_err(|e| NodeError::Malformed(e.to_string()))
        .map_err(node_err("write the sentinel", node))?;
    node.call(Request::write(SENTINEL_PATH, body).with_token(&credentials.root_token))
        .await
        .map_err(node_err(
            "write the sentinel with the stored root token",
            node,
        ))?;
    Ok(())
}

/// Reads the sentinel back; `Ok(false)` when it is absent or different.
pub async fn sentinel_reads_back(
    node: &impl VaultNode,
    credentials: &Credentials,
    sentinel: &str,
) -> Result<bool, NodeError> {
    match node
        .call(Request::read(SENTINEL_PATH).with_token(&credentials.root_token))
        .await
    {
        Ok(v) => Ok(v.get("sentinel").and_then(|s| s.as_str()) == Some(sentinel)),
        Err(NodeError::Api { status: 404, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}
