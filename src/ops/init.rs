//! `init`: initialize exactly once, store the keys before anything can lose
//! them, then bring every pod up.
//!
//! Owns the decision table (fresh cluster, resume, already initialized, data
//! loss, credentials lost) and the order of the steps. Locking, prompting and
//! where a last-resort copy of the keys goes are the caller's business.
//!
//! # Expected flow
//! 1. Preflight: write the checkpoint in phase `init_pending` (proves the store is writable).
//! 2. `sys/init` on pod 0 only. The transport keeps a pod-local copy of the
//!    response until step 3 succeeds, so a crash between the two loses nothing.
//!    On an auto-unseal cluster (the pods' `sys/seal-status` names a seal
//!    provider) it asks for recovery keys instead of unseal shares, and the
//!    answer's recovery keys are what is stored.
//! 3. Store the response in the checkpoint (one write, retried, read back).
//! 4. [`reconcile`]: unseal pod 0, wait for it to lead, join and unseal the
//!    rest. On an auto-unseal cluster nothing is submitted: each pod is
//!    waited for until it reports unsealed through its own seal.
//! 5. Store the final credentials (read back), then delete the checkpoint.
//!
//! # Guarantees
//! `sys/init` is never called when any pod is initialized or when credentials
//! are stored. Every re-run after a crash at any step boundary ends with the
//! same keys stored that the cluster was initialized with.

use crate::ops::checkpoint::{Checkpoint, Phase};
use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::credentials::Credentials;
use crate::ops::keyring::Keyring;
use crate::ops::node::{seal_status, seal_status_when_up, NodeError, SealStatus, VaultNode};
use crate::ops::operation::{claim, Claim, Operation, OtherOperation};
use crate::ops::reconcile::{reconcile, ReconcileError, ReconcileReport, Timeouts};
use crate::ops::seal::credentials_from_init;
use crate::ops::secret::SecretBytes;
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};

#[derive(Clone, Debug)]
pub struct InitOptions {
    pub key_shares: u8,
    pub key_threshold: u8,
    /// Recovery keys on an auto-unseal cluster (`sys/init`'s
    /// `recovery_shares`/`recovery_threshold`); 0/0 asks for none. Whether
    /// none may be asked for is the caller's decision.
    pub recovery_shares: u8,
    pub recovery_threshold: u8,
    /// Who runs this, recorded in the checkpoint.
    pub holder: String,
    pub budget: RetryBudget,
    pub timeouts: Timeouts,
}

/// How init ended.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum InitOutcome {
    /// This run called `sys/init`.
    Initialized { report: ReconcileReport },
    /// An interrupted init was finished from its checkpoint.
    Resumed { report: ReconcileReport },
    /// The cluster was initialized and its credentials stored already; pods were brought up.
    AlreadyInitialized { report: ReconcileReport },
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("could not read the seal status of pod {pod}: {source}")]
    ReadStatus { pod: String, source: NodeError },
    #[error("{object} could not be read: {source}")]
    LoadStore { object: String, source: StoreError },
    #[error("no pod is initialized, but {object} holds credentials (generation {generation}): the cluster's data was lost while its keys survived; refusing to initialize over surviving keys. Choose a snapshot and run `kubectl vault recover --from LOCATION`")]
    DataLoss { object: String, generation: u32 },
    #[error(transparent)]
    OtherOperation(#[from] OtherOperation),
    #[error("pod {pod} is not running; init sends sys/init only to pod 0, and only once every replica has answered. Re-run `kubectl vault init` when it runs (`kubectl get pod {pod}`)")]
    TargetMissing { pod: String },
    #[error("the cluster is initialized but no credentials exist: neither {object} nor {checkpoint} holds them. The unseal keys and root token are lost. Only options: unseal with shares you kept elsewhere and `kubectl vault credentials import` them, or wipe every pod's data and run `kubectl vault init` again (all data is lost)")]
    CredentialsLost { object: String, checkpoint: String },
    #[error("the credential store is not writable, so the cluster was not initialized: {source}")]
    Preflight { source: StoreError },
    #[error("sys/init on pod {pod} failed: {source}")]
    SysInit { pod: String, source: NodeError },
    /// The keys exist only in this process (and the pod-local copy): the caller must save them.
    #[error("the cluster was initialized but its keys could not be stored in {object}: {source}")]
    StoreUnwritable {
        object: String,
        source: StoreError,
        credentials: Box<Credentials>,
    },
    #[error("could not store {object}: {source}; the keys are still in {checkpoint}, re-run `kubectl vault init` to finish")]
    StoreFinal {
        object: String,
        checkpoint: String,
        source: StoreError,
    },
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

impl InitError {
    /// Whether re-running cannot help until something changes (exit 1), as
    /// opposed to a failure that a re-run resumes (exit 2). Every variant is
    /// named, so a new one must be classified here.
    pub fn is_refusal(&self) -> bool {
        match self {
            InitError::InvalidOptions(_)
            | InitError::DataLoss { .. }
            | InitError::OtherOperation(_)
            | InitError::CredentialsLost { .. }
            | InitError::Preflight { .. }
            | InitError::LoadStore { .. }
            | InitError::Cluster(_) => true,
            InitError::ReadStatus { .. }
            | InitError::TargetMissing { .. }
            | InitError::SysInit { .. }
            | InitError::StoreUnwritable { .. }
            | InitError::StoreFinal { .. }
            | InitError::Reconcile(_) => false,
        }
    }
}

/// Runs `init` to completion, resuming or refusing as the stored state demands.
pub async fn run<C: VaultCluster>(
    cluster: &C,
    store: &impl CredentialStore,
    opts: &InitOptions,
) -> Result<InitOutcome, InitError> {
    if opts.key_shares == 0 || opts.key_threshold == 0 || opts.key_threshold > opts.key_shares {
        return Err(InitError::InvalidOptions(format!(
            "--key-threshold {} must be between 1 and --key-shares {}",
            opts.key_threshold, opts.key_shares
        )));
    }
    let recovery_ok = match (opts.recovery_shares, opts.recovery_threshold) {
        (0, 0) => true,
        (shares, threshold) => threshold >= 1 && threshold <= shares,
    };
    if !recovery_ok {
        return Err(InitError::InvalidOptions(format!(
            "--recovery-threshold {} must be between 1 and --recovery-shares {}",
            opts.recovery_threshold, opts.recovery_shares
        )));
    }
    let stored = store
        .load_credentials()
        .await
        .map_err(|source| InitError::LoadStore {
            object: store.credentials_object(),
            source,
        })?;
    let checkpoint = store
        .load_checkpoint()
        .await
        .map_err(|source| InitError::LoadStore {
            object: store.checkpoint_object(),
            source,
        })?;
    let resumed = match claim(checkpoint.as_ref(), Operation::Init) {
        Claim::Busy(found) => {
            return Err(InitError::OtherOperation(OtherOperation::new(
                store.checkpoint_object(),
                found,
            )))
        }
        Claim::Resume(c) => Some(c),
        Claim::Free => None,
    };
    let recorded = match resumed.map(|c| &c.phase) {
        Some(Phase::InitPending { pod: Some(pod), .. }) => Some(pod.clone()),
        _ => None,
    };
    // Without keys anywhere, this run may decide the cluster is fresh, or
    // find a lost `sys/init` answer on any pod: both need every replica.
    let keys_known = stored.is_some() || resumed.and_then(Checkpoint::credentials).is_some();
    let (target, nodes) = nodes_with(cluster, recorded, !keys_known, opts).await?;
    let statuses = read_statuses(&nodes, opts.timeouts.pod_appear).await?;
    let any_initialized = statuses.iter().any(|s| s.initialized);

    if let Some(credentials) = resumed.and_then(Checkpoint::credentials) {
        if !any_initialized {
            return Err(InitError::DataLoss {
                object: store.checkpoint_object(),
                generation: credentials.generation,
            });
        }
        tracing::info!(checkpoint = %store.checkpoint_object(), "resuming an interrupted init");
        let credentials = credentials.clone();
        let report = finish(cluster, store, &credentials, opts).await?;
        return Ok(InitOutcome::Resumed { report });
    }
    if let Some(credentials) = stored {
        if !any_initialized {
            return Err(InitError::DataLoss {
                object: store.credentials_object(),
                generation: credentials.generation,
            });
        }
        let report = reconcile(cluster, &Keyring::of(&credentials), &opts.timeouts).await?;
        if resumed.is_some() {
            delete_checkpoint(store).await?;
        }
        return Ok(InitOutcome::AlreadyInitialized { report });
    }
    // No credentials anywhere: a run that died while sys/init was in flight
    // (or before its answer was stored) left the answer in a pod.
    if let Some((node, credentials)) = find_copy(&nodes).await? {
        let initialized = seal_status(node)
            .await
            .map_err(|source| InitError::ReadStatus {
                pod: node.name().to_owned(),
                source,
            })?
            .initialized;
        if initialized {
            let credentials = with_facts(credentials, &statuses);
            store_keys(store, &credentials, opts).await?;
            clear_copy(node).await;
            let report = finish(cluster, store, &credentials, opts).await?;
            return Ok(InitOutcome::Resumed { report });
        }
        // The answer of a cluster whose data is gone: it protects nothing.
        tracing::warn!(
            pod = node.name(),
            "removing the sys/init answer of a cluster whose data is gone"
        );
        clear_copy(node).await;
    }
    if any_initialized {
        return Err(InitError::CredentialsLost {
            object: store.credentials_object(),
            checkpoint: store.checkpoint_object(),
        });
    }

    // A fresh cluster: every pod answered, none is initialized.
    let seal = statuses
        .iter()
        .zip(&nodes)
        .find(|(_, n)| n.name() == target)
        .map(|(s, _)| s.seal())
        .unwrap_or_default();
    let (shares, threshold) = if seal.is_auto() {
        (opts.recovery_shares, opts.recovery_threshold)
    } else {
        (opts.key_shares, opts.key_threshold)
    };
    let first =
        nodes
            .iter()
            .find(|n| n.name() == target)
            .ok_or_else(|| InitError::TargetMissing {
                pod: target.clone(),
            })?;
    let pending = Checkpoint::new(
        &opts.holder,
        Phase::InitPending {
            key_shares: shares,
            key_threshold: threshold,
            pod: Some(target.clone()),
        },
    );
    persist(store, Record::Checkpoint(&pending), opts.budget)
        .await
        .map_err(|source| InitError::Preflight { source })?;
    fail::fail_point!("init::after_preflight");

    let body = SecretBytes::json(&crate::ops::seal::init_body(&seal, shares, threshold))
        .map_err(|e| InitError::InvalidOptions(e.to_string()))?;
    tracing::info!(pod = first.name(), seal = %seal, "initializing");
    let answer = first
        .init(body)
        .await
        .map_err(|source| InitError::SysInit {
            pod: first.name().to_owned(),
            source,
        })?;
    fail::fail_point!("init::after_sys_init");
    let credentials =
        credentials_from_init(answer, &seal, Some(threshold), 1, "").map_err(|source| {
            InitError::SysInit {
                pod: first.name().to_owned(),
                source,
            }
        })?;
    let credentials = with_facts(credentials, &statuses);
    store_keys(store, &credentials, opts).await?;
    fail::fail_point!("init::after_checkpoint");
    clear_copy(first).await;
    fail::fail_point!("init::after_clear_copy");
    let report = finish(cluster, store, &credentials, opts).await?;
    Ok(InitOutcome::Initialized { report })
}

/// The pod `sys/init` goes to (the one a checkpoint recorded, else ordinal
/// 0, never merely the first one running) and the running pods, once the
/// target is among them: deciding that a cluster is fresh needs its answer.
/// With `every_replica`, it also waits for every replica that must answer
/// ([`VaultCluster::must_answer`]): a Pending pod may hold initialized data,
/// or the only copy of a lost `sys/init` answer, and "fresh" is decided only
/// when all have answered.
async fn nodes_with<C: VaultCluster>(
    cluster: &C,
    recorded: Option<String>,
    every_replica: bool,
    opts: &InitOptions,
) -> Result<(String, Vec<C::Node>), InitError> {
    let nodes = cluster.nodes().await?;
    let any = nodes
        .first()
        .ok_or_else(|| ClusterError::List("no running pods".into()))?;
    let prefix = any
        .name()
        .rsplit_once('-')
        .map_or(any.name(), |(p, _)| p)
        .to_owned();
    let target = recorded.unwrap_or_else(|| format!("{prefix}-0"));
    let target_ordinal =
        crate::ops::reconcile::ordinal_of(&target).ok_or_else(|| InitError::TargetMissing {
            pod: target.clone(),
        })?;
    let mut wanted = vec![target_ordinal];
    if every_replica {
        let others = cluster.must_answer().await?;
        wanted.extend(others.into_iter().filter(|o| *o != target_ordinal));
    }
    let present = |nodes: &[C::Node], ordinal: usize| {
        nodes
            .iter()
            .any(|n| crate::ops::reconcile::ordinal_of(n.name()) == Some(ordinal))
    };
    if wanted.iter().all(|o| present(&nodes, *o)) {
        return Ok((target, nodes));
    }
    let deadline = tokio::time::Instant::now() + opts.timeouts.pod_appear;
    for ordinal in wanted {
        if present(&nodes, ordinal) {
            continue;
        }
        let pod = format!("{prefix}-{ordinal}");
        tracing::info!(pod = %pod, "waiting for a replica to answer before deciding what init does");
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        cluster
            .wait_for_node(ordinal, left)
            .await
            .map_err(|_| InitError::TargetMissing { pod })?;
    }
    Ok((target, cluster.nodes().await?))
}

/// The first pod holding the answer of an interrupted `sys/init` (waiting
/// for one still in flight), and the credentials in it.
async fn find_copy<N: VaultNode>(nodes: &[N]) -> Result<Option<(&N, Credentials)>, InitError> {
    for node in nodes {
        if let Some(credentials) = recover_response(node).await? {
            return Ok(Some((node, credentials)));
        }
    }
    Ok(None)
}

/// Every node's status; a node that is not answering yet is waited for, since
/// deciding to initialize needs all of them.
async fn read_statuses<N: VaultNode>(
    nodes: &[N],
    timeout: std::time::Duration,
) -> Result<Vec<SealStatus>, InitError> {
    let results =
        futures::future::join_all(nodes.iter().map(|n| seal_status_when_up(n, timeout))).await;
    nodes
        .iter()
        .zip(results)
        .map(|(n, r)| {
            r.map_err(|source| InitError::ReadStatus {
                pod: n.name().to_owned(),
                source,
            })
        })
        .collect()
}

fn with_facts(mut credentials: Credentials, statuses: &[SealStatus]) -> Credentials {
    if let Some(s) = statuses.first() {
        credentials.server_version.clone_from(&s.version);
    }
    credentials
}

async fn recover_response(node: &impl VaultNode) -> Result<Option<Credentials>, InitError> {
    let pod = || node.name().to_owned();
    let answer = node
        .recover_init_response()
        .await
        .map_err(|source| InitError::SysInit { pod: pod(), source })?;
    let Some(answer) = answer else {
        return Ok(None);
    };
    let status = seal_status(node)
        .await
        .map_err(|source| InitError::ReadStatus { pod: pod(), source })?;
    let threshold = u8::try_from(status.threshold).ok().filter(|t| *t > 0);
    let credentials = credentials_from_init(answer, &status.seal(), threshold, 1, &status.version)
        .map_err(|source| InitError::SysInit { pod: pod(), source })?;
    tracing::info!(
        pod = node.name(),
        "recovered the response of an interrupted sys/init"
    );
    Ok(Some(credentials))
}

async fn store_keys(
    store: &impl CredentialStore,
    credentials: &Credentials,
    opts: &InitOptions,
) -> Result<(), InitError> {
    let checkpoint = Checkpoint::new(
        &opts.holder,
        Phase::InitKeysStored {
            credentials: credentials.clone(),
        },
    );
    persist(store, Record::Checkpoint(&checkpoint), opts.budget)
        .await
        .map_err(|source| InitError::StoreUnwritable {
            object: store.checkpoint_object(),
            source,
            credentials: Box::new(credentials.clone()),
        })
}

async fn clear_copy(node: &impl VaultNode) {
    if let Err(e) = node.clear_init_response().await {
        tracing::warn!(pod = node.name(), error = %e, "could not remove the pod-local copy of the init response");
    }
}

/// Steps 4 and 5: bring every pod up, store the final credentials, drop the checkpoint.
async fn finish<C: VaultCluster>(
    cluster: &C,
    store: &impl CredentialStore,
    credentials: &Credentials,
    opts: &InitOptions,
) -> Result<ReconcileReport, InitError> {
    let report = reconcile(cluster, &Keyring::of(credentials), &opts.timeouts).await?;
    let mut final_credentials = credentials.clone();
    if final_credentials.cluster_id.is_empty() {
        final_credentials.cluster_id.clone_from(&report.cluster_id);
    }
    fail::fail_point!("init::before_final_write");
    persist(store, Record::Credentials(&final_credentials), opts.budget)
        .await
        .map_err(|source| InitError::StoreFinal {
            object: store.credentials_object(),
            checkpoint: store.checkpoint_object(),
            source,
        })?;
    fail::fail_point!("init::after_final_write");
    delete_checkpoint(store).await?;
    Ok(report)
}

async fn delete_checkpoint(store: &impl CredentialStore) -> Result<(), InitError> {
    store
        .delete_checkpoint()
        .await
        .map_err(|source| InitError::StoreFinal {
            object: store.checkpoint_object(),
            checkpoint: store.checkpoint_object(),
            source,
        })
}
