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
//! 3. Unseal with the temporary keys (an auto-unseal server, which the
//!    caller started with the live server's seal, unseals itself); wait
//!    until it leads.
//! 4. Force-restore the snapshot with the temporary root token.
//! 5. Shamir: unseal with the stored shares of the manifest's generation:
//!    the proof. Then a stored root token (of that generation first, then
//!    any other stored one, as `restore` step 5 chooses) must answer
//!    `auth/token/lookup-self` in the restored data, sentinel or not: a
//!    restore that leaves no working token cannot be finished (OpenBao 2.7
//!    generates a new root only with a token). Read the sentinel path with
//!    it, when one is given.
//!
//! An auto-unseal snapshot is opened by the seal, not by stored shares, so
//! step 5 is `auto_unseal::through_the_seal`:
//! 5a. Wait until the restored data is the server's: it reloads the
//!     snapshot's root key through its seal (OpenBao does this in place, a
//!     few seconds after the restore call returned), and the temporary
//!     token stops working. A server that seals instead was not opened by
//!     the seal. Killed (SIGKILL) and restarted before that point, the
//!     server came back with the temporary data (measured; a TERM let the
//!     restore finish): what an earlier attempt, which then checked
//!     nothing that only the snapshot holds, passed.
//! 5b. A stored root token of the manifest's generation must answer
//!     `auth/token/lookup-self`.
//! 5c. The stored recovery keys of that generation must be the restored
//!     data's: a recovery-key rotation is started with them (verification
//!     required) and cancelled before any verification, so nothing changes
//!     (the same probe `recover` uses). A generation stored without
//!     recovery keys (OpenBao's default since 2.4) has none to check.
//! 5d. Restart the server: from what is on disk, it must unseal itself
//!     through the seal, as a restored cluster's pods will; the temporary
//!     token must still fail and the stored one still answer (it is the
//!     restored data that came back).
//! 5e. The sentinel path must read, when one is given.
//!
//! Before any of it, the caller checks [`Room`]: a throwaway server whose
//! restore fills the data volume would take the live server's storage down
//! with it.
//!
//! # Guarantees
//! - Only the server handed in is ever called; the stored credentials are
//!   only read.
//! - A Shamir pass means the stored shares of the manifest's generation
//!   unsealed the restored data and a stored root token is valid in it
//!   (`root_token_valid` is then always true). Every stored token refused
//!   (403) fails the test ([`RestoreTestError::RootToken`], exit 1); a
//!   lookup that never gets an answer is the test's own error.
//! - An auto-unseal pass means the restored data, restarted from disk,
//!   unsealed through the seal, and that a stored root token and the
//!   stored recovery keys of the manifest's generation are its own; each
//!   of these failing fails the test with its own reason.
//! - A failure names the step, and [`RestoreTestError::is_verdict`] tells a
//!   snapshot that does not restore (or keys that do not open it) from a
//!   test that could not run.

use crate::ops::credentials::{Credentials, SealKind};
use crate::ops::node::{seal_status_when_up, NodeError, Request, VaultNode};
use crate::ops::reconcile::{wait_for_leader, ReconcileError};
use crate::ops::restore::{wait_for_reseal, FeedError, SnapshotFeed};
use crate::ops::rotate::RotateError;

mod auto_unseal;
mod root_token;
use crate::ops::secret::{Secret, SecretBytes};
use crate::ops::unseal::{unseal_node, UnsealError, UnsealOutcome};
use std::time::Duration;

/// Free space kept on the data volume beyond the estimate: raft's log,
/// the database's growth steps, and the live server's own writes meanwhile.
pub const ROOM_MARGIN_BYTES: u64 = 64 * 1024 * 1024;

/// Whether the data volume has room for the throwaway server.
///
/// What the server writes there, at its peak: the snapshot as received
/// (its compressed size), raft's copy of the installed snapshot (the
/// unpacked data, `state.bin`), and the database the data is restored into
/// (the unpacked data again, with up to half more for the database's
/// pages). So the estimate is `snapshot + 2.5 × data + margin`; a rule of
/// thumb with headroom, not an exact figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Room {
    /// The estimate above, in bytes.
    pub needed: u64,
    /// What the volume has free, in bytes.
    pub free: u64,
}

impl Room {
    /// The room a snapshot of `snapshot_bytes` whose data unpacks to
    /// `state_bytes` needs, against `free` bytes.
    pub fn for_snapshot(snapshot_bytes: u64, state_bytes: u64, free: u64) -> Room {
        let needed = snapshot_bytes
            .saturating_add(state_bytes.saturating_mul(5) / 2)
            .saturating_add(ROOM_MARGIN_BYTES);
        Room { needed, free }
    }

    pub fn suffices(&self) -> bool {
        self.free >= self.needed
    }
}

/// What the test is given besides the server and the feed.
pub struct Proof<'a> {
    /// The shares (and shape) of the manifest's generation.
    pub generation: &'a Credentials,
    /// Every stored root token, those of that generation first
    /// ([`Credentials::root_tokens_for`]).
    pub tokens: Vec<Secret>,
    /// A path that must be readable in the restored data (`kv/sentinel`).
    pub sentinel: Option<&'a str>,
    /// How long the server may take to answer, and to lead.
    pub timeout: Duration,
}

/// Restarts the throwaway server on the same storage and address, and
/// returns once it answers (sealed or not).
pub trait Restart {
    fn restart(&self) -> impl std::future::Future<Output = Result<(), NodeError>> + Send;
}

/// What a passed test established.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RestoreTestReport {
    /// The generation whose shares unsealed the restored data (Shamir), or
    /// whose root token and recovery keys it accepted (auto-unseal).
    pub generation: u32,
    pub shares_submitted: usize,
    /// Auto-unseal: the seal that opened the restored data, restarted from
    /// disk, with no share submitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seal: Option<String>,
    /// Auto-unseal: the stored recovery keys of the generation are the
    /// restored data's (`None` when none are stored for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovery_keys_verified: Option<bool>,
    /// A stored root token is valid in the restored data (a pass requires
    /// it; kept in the report for the readers of earlier ones).
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
    #[error("the throwaway server, running with the live server's {seal} seal, stayed sealed {when} (for {} s): the seal does not open this snapshot", waited.as_secs())]
    SealDidNotOpen {
        seal: String,
        when: &'static str,
        waited: Duration,
    },
    #[error("the forced restore did not take effect in the throwaway server within {} s: its temporary root token still works", waited.as_secs())]
    NotApplied { waited: Duration },
    #[error("could not restart the throwaway server after the forced restore: {source}")]
    Restart { source: NodeError },
    #[error("the throwaway server came back from its restart with its temporary data, not the restored data, so nothing was proven")]
    RestartLostRestore,
    #[error("no stored root token of key generation {generation} answers auth/token/lookup-self in the restored data: the stored credentials of that generation are not this snapshot's, and a restore of it could not be finished with them")]
    RootToken { generation: u32 },
    #[error("could not check the stored root tokens of key generation {generation} against the restored data: {source}")]
    RootTokenUnchecked { generation: u32, source: NodeError },
    #[error("the stored recovery keys of key generation {generation}, which the manifest names, are not the restored data's: its recovery-key rotation refused them")]
    RecoveryKeys { generation: u32 },
    #[error("could not check the stored recovery keys of key generation {generation} against the restored data: {source}")]
    RecoveryProbe {
        generation: u32,
        source: RotateError,
    },
    #[error("the throwaway server {server} did not reseal after the forced restore, so the shares were never tested")]
    NotResealed { server: String },
    #[error("the sentinel {path} cannot be read from the restored data: {source}")]
    Sentinel { path: String, source: NodeError },
}

impl RestoreTestError {
    /// True when the snapshot or its keys failed the test; false when the
    /// test itself could not run (the server, the stream, the pod).
    pub fn is_verdict(&self) -> bool {
        match self {
            RestoreTestError::Refused { .. }
            | RestoreTestError::SealDidNotOpen { .. }
            | RestoreTestError::RootToken { .. }
            | RestoreTestError::RecoveryKeys { .. }
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

/// Runs the test on `server`, an empty server started for it (with the
/// live server's seal when the generation is an auto-unseal one);
/// `restart` restarts it.
pub async fn run<N, F, R>(
    server: &N,
    feed: &F,
    restart: &R,
    proof: &Proof<'_>,
) -> Result<RestoreTestReport, RestoreTestError>
where
    N: VaultNode,
    F: SnapshotFeed<N>,
    R: Restart,
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
    if !shape.seal.is_auto() {
        unseal_node(
            server,
            temp.unseal_shares(),
            usize::from(temp.key_threshold),
        )
        .await
        .map_err(|source| RestoreTestError::TemporaryUnseal { source })?;
    }
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
    if let SealKind::Auto(seal) = &shape.seal {
        return auto_unseal::through_the_seal(
            server,
            restart,
            proof,
            &temp.root_token,
            seal,
            &step,
        )
        .await;
    }
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
    let token =
        root_token::accepted_token(server, &proof.tokens, shape.generation, proof.timeout).await?;
    step("root token");
    let sentinel = match proof.sentinel {
        None => None,
        Some(path) => Some(read_sentinel(server, path, &token).await?),
    };
    Ok(RestoreTestReport {
        generation: shape.generation,
        shares_submitted,
        seal: None,
        recovery_keys_verified: None,
        root_token_valid: true,
        sentinel,
    })
}

/// Reads the configured sentinel path with `token` in the restored data.
pub(crate) async fn read_sentinel<N: VaultNode>(
    server: &N,
    path: &str,
    token: &Secret,
) -> Result<String, RestoreTestError> {
    server
        .call(Request::read(path).with_token(token))
        .await
        .map_err(|source| RestoreTestError::Sentinel {
            path: path.to_owned(),
            source,
        })?;
    Ok(path.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::double::FakeNode;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn room_counts_the_snapshot_the_unpacked_data_twice_and_a_margin() {
        // 10 MiB compressed, 40 MiB of data: 10 + 100 + 64 MiB.
        let room = Room::for_snapshot(10 * MIB, 40 * MIB, 174 * MIB);
        assert_eq!(room.needed, 174 * MIB);
        assert!(room.suffices(), "exactly enough is enough");
        assert!(!Room::for_snapshot(10 * MIB, 40 * MIB, 174 * MIB - 1).suffices());
        // A small snapshot still needs the margin.
        let tiny = Room::for_snapshot(4096, 8192, 32 * MIB);
        assert_eq!(tiny.needed, 4096 + 20480 + ROOM_MARGIN_BYTES);
        assert!(!tiny.suffices());
        // Sizes from a damaged manifest do not wrap around to "fits".
        assert!(!Room::for_snapshot(u64::MAX, u64::MAX, u64::MAX - 1).suffices());
    }

    #[test]
    fn only_a_snapshot_or_its_keys_failing_is_a_verdict() {
        let api = |status| NodeError::Api {
            status,
            errors: vec!["x".into()],
        };
        let verdicts = [
            RestoreTestError::Refused { source: api(400) },
            RestoreTestError::Sentinel {
                path: "kv/s".into(),
                source: api(404),
            },
            RestoreTestError::Unseal {
                generation: 1,
                source: UnsealError::NotEnoughShares {
                    pod: "p".into(),
                    needed: 2,
                    have: 1,
                },
            },
            RestoreTestError::SealDidNotOpen {
                seal: "static".into(),
                when: "after the forced restore",
                waited: Duration::from_secs(10),
            },
            RestoreTestError::RootToken { generation: 1 },
            RestoreTestError::RecoveryKeys { generation: 1 },
        ];
        for e in &verdicts {
            assert!(e.is_verdict(), "{e}");
        }
        let errors = [
            RestoreTestError::Start {
                server: "p/restore-test".into(),
                source: NodeError::Unreachable("gone".into()),
            },
            RestoreTestError::NotEmpty {
                server: "p/restore-test".into(),
            },
            RestoreTestError::Apply {
                source: NodeError::Unreachable("cut".into()),
            },
            RestoreTestError::NotResealed {
                server: "p/restore-test".into(),
            },
            // The test's own failures: the restart, or a restore that never
            // took effect, prove nothing about the snapshot.
            RestoreTestError::NotApplied {
                waited: Duration::from_secs(60),
            },
            RestoreTestError::Restart {
                source: NodeError::Unreachable("gone".into()),
            },
            RestoreTestError::RestartLostRestore,
        ];
        for e in &errors {
            assert!(!e.is_verdict(), "{e}");
        }
    }

    struct NoRestart;
    impl Restart for NoRestart {
        async fn restart(&self) -> Result<(), NodeError> {
            panic!("a server that is not empty is never restarted");
        }
    }

    /// A feed that must never be reached.
    struct NoFeed;
    impl SnapshotFeed<FakeNode> for NoFeed {
        async fn restore_into(&self, _: &FakeNode, _: &Secret, _: bool) -> Result<(), FeedError> {
            panic!("nothing is restored into a server that is not empty");
        }
    }

    #[tokio::test]
    async fn an_initialized_server_is_not_the_throwaway_one_and_gets_nothing() {
        let server = FakeNode::standalone("pod-0/restore-test", 2);
        let shape = crate::ops::credentials::sample(3, 2);
        let proof = Proof {
            generation: &shape,
            tokens: vec![],
            sentinel: None,
            timeout: Duration::from_secs(1),
        };
        let err = run(&server, &NoFeed, &NoRestart, &proof).await.unwrap_err();
        assert!(matches!(err, RestoreTestError::NotEmpty { .. }), "{err}");
        assert!(!err.is_verdict());
        // No share was submitted to it.
        let state = server.state.lock().unwrap().clone();
        assert!(state.sealed);
        assert_eq!(state.progress, 0);
    }
}
