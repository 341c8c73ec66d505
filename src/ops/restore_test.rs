//! The restore-test: proves that a snapshot restores, and that the key
//! generation its manifest names unseals it, on a throwaway server.
//!
//! Owns the steps and what each failure means (the snapshot or its keys
//! failed, or the test itself could not run). Starting and stopping the
//! throwaway server, choosing and verifying the snapshot, and recording the
//! result are the caller's: this module sees one empty server and a feed.
//!
//! # Expected flow
//! 1. The server must answer and be uninitialized: anything else is not the
//!    server the caller started, and nothing is sent to it.
//! 2. A temporary `sys/init` with the share count and threshold of the
//!    snapshot's generation (after a forced restore the server keeps the
//!    seal configuration of its own init in memory, as in `recover`). Its
//!    keys live only in memory: the server is thrown away with them.
//! 3. Unseal with the temporary keys; wait until it leads.
//! 4. Force-restore the snapshot with the temporary root token.
//! 5. Unseal with the stored shares of the manifest's generation: the proof.
//! 6. Find a stored root token of that generation the restored data
//!    accepts; read the sentinel path with it, when one is given.
//!
//! # Guarantees
//! - Only the server handed in is ever called; the stored credentials are
//!   only read.
//! - A failure names the step, and [`RestoreTestError::is_verdict`] tells a
//!   snapshot that does not restore (or keys that do not open it) from a
//!   test that could not run.

use crate::ops::credentials::Credentials;
use crate::ops::node::{seal_status_when_up, NodeError, Request, VaultNode};
use crate::ops::reconcile::{wait_for_leader, ReconcileError};
use crate::ops::restore::{wait_for_reseal, working_token, FeedError, SnapshotFeed};
use crate::ops::secret::{Secret, SecretBytes};
use crate::ops::unseal::{unseal_node, UnsealError, UnsealOutcome};
use std::time::Duration;

/// What the test is given besides the server and the feed.
pub struct Proof<'a> {
    /// The shares (and shape) of the manifest's generation.
    pub generation: &'a Credentials,
    /// The stored root tokens of that generation, most likely first.
    pub tokens: Vec<Secret>,
    /// A path that must be readable in the restored data (`kv/sentinel`).
    pub sentinel: Option<&'a str>,
    /// How long the server may take to answer, and to lead.
    pub timeout: Duration,
}

/// What a passed test established.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RestoreTestReport {
    /// The generation whose shares unsealed the restored data.
    pub generation: u32,
    pub shares_submitted: usize,
    /// A stored root token of that generation is valid in the restored data.
    pub root_token_valid: bool,
    /// The sentinel path that was read, if one was given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sentinel: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreTestError {
    #[error("the throwaway server {server} did not answer: {source}")]
    Start { server: String, source: NodeError },
    #[error("the throwaway server {server} is already initialized, so it is not the empty server this run started; nothing was sent to it")]
    NotEmpty { server: String },
    #[error("the temporary sys/init of the throwaway server {server} failed: {source}")]
    TemporaryInit { server: String, source: NodeError },
    #[error("could not unseal the throwaway server with its temporary keys: {source}")]
    TemporaryUnseal { source: UnsealError },
    #[error("the throwaway server did not become active: {source}")]
    Leader { source: ReconcileError },
    #[error("the server refused the snapshot ({source}): it does not restore")]
    Refused { source: NodeError },
    #[error("the snapshot stream into the throwaway server broke: {source}")]
    Apply { source: NodeError },
    #[error("the stored shares of key generation {generation}, which the manifest names, do not unseal the restored data: {source}")]
    Unseal {
        generation: u32,
        source: UnsealError,
    },
    #[error("the throwaway server {server} did not reseal after the forced restore, so the shares were never tested")]
    NotResealed { server: String },
    #[error("no stored root token of key generation {generation} is valid in the restored data, so the sentinel {path} cannot be read")]
    NoToken { generation: u32, path: String },
    #[error("the sentinel {path} cannot be read from the restored data: {source}")]
    Sentinel { path: String, source: NodeError },
}

impl RestoreTestError {
    /// True when the snapshot or its keys failed the test; false when the
    /// test itself could not run (the server, the stream, the pod).
    pub fn is_verdict(&self) -> bool {
        match self {
            RestoreTestError::Refused { .. }
            | RestoreTestError::NoToken { .. }
            | RestoreTestError::Sentinel { .. } => true,
            RestoreTestError::Unseal { source, .. } => matches!(
                source,
                UnsealError::Rejected { .. }
                    | UnsealError::StillSealed { .. }
                    | UnsealError::NotEnoughShares { .. }
            ),
            _ => false,
        }
    }
}

/// Runs the test on `server`, an empty server started for it.
pub async fn run<N, F>(
    server: &N,
    feed: &F,
    proof: &Proof<'_>,
) -> Result<RestoreTestReport, RestoreTestError>
where
    N: VaultNode,
    F: SnapshotFeed<N>,
{
    let name = server.name().to_owned();
    let t0 = std::time::Instant::now();
    let step = |step: &str| {
        tracing::debug!(
            step,
            ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            "restore-test step done"
        );
    };
    let status = seal_status_when_up(server, proof.timeout)
        .await
        .map_err(|source| RestoreTestError::Start {
            server: name.clone(),
            source,
        })?;
    if status.initialized {
        return Err(RestoreTestError::NotEmpty { server: name });
    }
    step("answered");
    let shape = proof.generation;
    let body = SecretBytes::json(&crate::ops::seal::init_body(
        &shape.seal,
        shape.key_shares,
        shape.key_threshold,
    ))
    .map_err(|e| RestoreTestError::TemporaryInit {
        server: name.clone(),
        source: NodeError::Malformed(e.to_string()),
    })?;
    let answer = server
        .init(body)
        .await
        .map_err(|source| RestoreTestError::TemporaryInit {
            server: name.clone(),
            source,
        })?;
    let temp = crate::ops::seal::credentials_from_init(
        answer,
        &shape.seal,
        Some(shape.key_threshold),
        0,
        "",
    )
    .map_err(|source| RestoreTestError::TemporaryInit {
        server: name.clone(),
        source,
    })?;
    unseal_node(
        server,
        temp.unseal_shares(),
        usize::from(temp.key_threshold),
    )
    .await
    .map_err(|source| RestoreTestError::TemporaryUnseal { source })?;
    step("temporary init and unseal");
    wait_for_leader(std::slice::from_ref(server), proof.timeout)
        .await
        .map_err(|source| RestoreTestError::Leader { source })?;
    step("active");
    tracing::info!(server = %name, "force-restoring the snapshot into the throwaway server");
    feed.restore_into(server, &temp.root_token, true)
        .await
        .map_err(|e| match e {
            FeedError::Rejected(source) => RestoreTestError::Refused { source },
            FeedError::Interrupted(source) => RestoreTestError::Apply { source },
        })?;
    step("restored");
    wait_for_reseal(server, &temp.root_token, Duration::from_secs(30)).await;
    step("resealed");
    tracing::info!(
        generation = shape.generation,
        "unsealing the restored data with the stored shares of the manifest's generation"
    );
    let outcome = unseal_node(
        server,
        shape.unseal_shares(),
        usize::from(shape.key_threshold),
    )
    .await
    .map_err(|source| RestoreTestError::Unseal {
        generation: shape.generation,
        source,
    })?;
    // A server that never resealed was not asked for the shares: no proof.
    let UnsealOutcome::Unsealed { shares_submitted } = outcome else {
        return Err(RestoreTestError::NotResealed { server: name });
    };
    step("unsealed with the manifest's generation");
    wait_for_leader(std::slice::from_ref(server), proof.timeout)
        .await
        .map_err(|source| RestoreTestError::Leader { source })?;
    step("active again");
    let token = working_token(server, &proof.tokens).await;
    step("root token");
    let sentinel = match proof.sentinel {
        None => None,
        Some(path) => {
            let Some(token) = &token else {
                return Err(RestoreTestError::NoToken {
                    generation: shape.generation,
                    path: path.to_owned(),
                });
            };
            server
                .call(Request::read(path).with_token(token))
                .await
                .map_err(|source| RestoreTestError::Sentinel {
                    path: path.to_owned(),
                    source,
                })?;
            Some(path.to_owned())
        }
    };
    Ok(RestoreTestReport {
        generation: shape.generation,
        shares_submitted,
        root_token_valid: token.is_some(),
        sentinel,
    })
}
