//! After a restore: every pod reads through the restored keyring.
//!
//! A forced restore replaces the data and the keyring under running servers.
//! The active node reseals itself; a standby may not. It then keeps the old
//! keyring in memory and answers every read with `decryption failed: cipher:
//! message authentication failed` until it is sealed and unsealed with the
//! restored shares, or restarted. Such a standby cannot even be sealed
//! through `sys/seal`: checking the token needs the keyring it lacks.
//!
//! Owns the probe (a read on each pod) and the remedy (seal and unseal, else
//! restart and unseal). How a pod is restarted is the caller's
//! [`ServerRestart`].
//!
//! # Expected flow
//! 1. For each pod: read `sys/leader` (served from the pod's own storage,
//!    through its own keyring) and, with a token, `auth/token/lookup-self`.
//! 2. A pod whose reads fail: `sys/seal` with the token, then unseal it with
//!    the restored shares. When the seal is refused (as it is on a standby
//!    with the old keyring), restart it, wait for it to come back sealed,
//!    and unseal it. An auto-unseal pod is restarted at once (after
//!    `sys/seal` it would stay sealed until a restart) and unseals itself.
//! 3. Read again; a pod that still fails is an error naming it.
//! 4. When any pod was sealed or restarted, read every pod once more. A
//!    restarted voter can cost the others their quorum or their leader for a
//!    while (on two voters, always), so a pod that read before the change
//!    is not proof that it reads after it. With HA, the pass also waits for
//!    an active node.
//!
//! # Guarantees
//! On `Ok`, every pod answered both reads after the last change made here.
//! A pod that reads is never sealed or restarted.

use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::credentials::Credentials;
use crate::ops::node::{leader, seal_status, NodeError, Request, VaultNode};
use crate::ops::secret::{Secret, SecretBytes};
use crate::ops::unseal::{unseal_node, UnsealError};
use crate::ops::wait::poll_until;
use std::future::Future;
use std::time::Duration;

/// How long a pod may take to answer reads after an unseal before it counts
/// as unreadable; a stale keyring is detected at once by its error.
const SETTLE: Duration = Duration::from_secs(15);

/// Restarts one server so that it comes back sealed and loads its keyring
/// from storage (for Kubernetes: delete the pod; its StatefulSet recreates
/// it with its data).
pub trait ServerRestart: Send + Sync {
    fn restart(&self, pod: &str) -> impl Future<Output = Result<(), ClusterError>> + Send;
}

/// What was done to one pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Remedy {
    /// It read through the restored keyring already.
    None,
    /// Sealed through `sys/seal` and unsealed with the restored shares.
    Resealed,
    /// Restarted and unsealed with the restored shares.
    Restarted,
}

impl std::fmt::Display for Remedy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Remedy::None => "reading",
            Remedy::Resealed => "sealed and unsealed",
            Remedy::Restarted => "restarted and unsealed",
        })
    }
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct PodReading {
    pub pod: String,
    pub remedy: Remedy,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(
        "pod {pod} cannot read through the restored keyring and could not be restarted: {source}"
    )]
    Restart { pod: String, source: ClusterError },
    #[error("pod {pod} did not come back sealed within {waited:?} after its restart")]
    NotBack { pod: String, waited: Duration },
    #[error("could not unseal pod {pod} with the restored shares: {source}")]
    Unseal { pod: String, source: UnsealError },
    #[error(
        "pod {pod} still cannot read through the restored keyring after it was {remedy}: {source}"
    )]
    Unreadable {
        pod: String,
        remedy: &'static str,
        source: NodeError,
    },
    #[error(
        "pod {pod} stopped reading after another pod was sealed or restarted, and did not read again within {waited:?}: {source}"
    )]
    Unsettled {
        pod: String,
        waited: Duration,
        source: NodeError,
    },
}

/// True for the answer of a server whose in-memory keyring does not open
/// its storage: waiting does not heal it.
pub fn is_stale_keyring(e: &NodeError) -> bool {
    match e {
        NodeError::Api { errors, .. } => errors.iter().any(|m| {
            m.contains("decryption failed") || m.contains("message authentication failed")
        }),
        _ => false,
    }
}

/// One read through the pod's own keyring, and one with `token`. With HA,
/// the pod must also know an active node: requests to a standby are
/// forwarded there.
pub async fn reads(node: &impl VaultNode, token: Option<&Secret>) -> Result<(), NodeError> {
    let l = leader(node).await?;
    if l.ha_enabled && !l.is_self && l.leader_address.is_empty() {
        return Err(NodeError::Malformed("no active node yet".into()));
    }
    if let Some(t) = token {
        node.call(Request::read("auth/token/lookup-self").with_token(t))
            .await?;
    }
    Ok(())
}

/// [`reads`], retried until it succeeds, fails with a stale keyring, or
/// `timeout` passes; returns the last error.
async fn reads_settled(
    node: &impl VaultNode,
    token: Option<&Secret>,
    timeout: Duration,
) -> Result<(), NodeError> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match reads(node, token).await {
            Ok(()) => return Ok(()),
            Err(e) if is_stale_keyring(&e) || std::time::Instant::now() >= deadline => {
                return Err(e)
            }
            Err(e) => {
                tracing::debug!(pod = node.name(), error = %e, "not reading yet");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

/// Brings every pod onto the restored keyring; see the module docs.
pub async fn converge<C, R>(
    cluster: &C,
    restart: &R,
    restored: &Credentials,
    token: Option<&Secret>,
    pod_appear: Duration,
) -> Result<Vec<PodReading>, ConvergeError>
where
    C: VaultCluster,
    R: ServerRestart,
{
    let mut out = Vec::new();
    #[allow(unused_variables)]
    for (index, node) in cluster.nodes().await?.into_iter().enumerate() {
        let pod = node.name().to_owned();
        #[allow(unused_mut)]
        let mut first = reads_settled(&node, token, SETTLE).await;
        // Tests: a standby that kept the old keyring, on demand.
        #[cfg(feature = "failpoints")]
        if index > 0 && fail::eval("converge::stale_standby", |_| ()).is_some() {
            first = Err(NodeError::Api {
                status: 500,
                errors: vec![
                    "decryption failed: cipher: message authentication failed (injected)".into(),
                ],
            });
        }
        let Err(e) = first else {
            out.push(PodReading {
                pod,
                remedy: Remedy::None,
            });
            continue;
        };
        tracing::warn!(pod = %pod, error = %e, "the pod does not read through the restored keyring; sealing it");
        // An auto-unseal pod sealed through `sys/seal` stays sealed until it
        // restarts; a restart is its remedy (it then unseals itself).
        let sealed_by_api = if restored.seal.is_auto() {
            Err(NodeError::Malformed(
                "an auto-unseal pod is restarted, not sealed".into(),
            ))
        } else {
            seal(&node, token).await
        };
        let remedy = match sealed_by_api {
            Ok(()) => Remedy::Resealed,
            Err(e) => {
                tracing::info!(pod = %pod, error = %e, "sys/seal refused; restarting the pod");
                restart
                    .restart(&pod)
                    .await
                    .map_err(|source| ConvergeError::Restart {
                        pod: pod.clone(),
                        source,
                    })?;
                Remedy::Restarted
            }
        };
        let waited = if remedy == Remedy::Restarted {
            pod_appear
        } else {
            SETTLE
        };
        // A restarted auto-unseal pod may be unsealed again before we look.
        let auto = restored.seal.is_auto();
        let sealed = poll_until(waited, Duration::from_millis(300), || async {
            seal_status(&node).await.ok().filter(|s| s.sealed || auto)
        })
        .await;
        if sealed.is_none() {
            return Err(ConvergeError::NotBack { pod, waited });
        }
        unseal_node(
            &node,
            restored.unseal_shares(),
            usize::from(restored.key_threshold),
        )
        .await
        .map_err(|source| ConvergeError::Unseal {
            pod: pod.clone(),
            source,
        })?;
        reads_settled(&node, token, SETTLE)
            .await
            .map_err(|source| ConvergeError::Unreadable {
                pod: pod.clone(),
                remedy: match remedy {
                    Remedy::Restarted => "restarted",
                    _ => "sealed and unsealed",
                },
                source,
            })?;
        tracing::info!(pod = %pod, %remedy, "the pod reads through the restored keyring");
        out.push(PodReading { pod, remedy });
    }
    if out.iter().any(|r| r.remedy != Remedy::None) {
        for node in cluster.nodes().await? {
            reads_settled(&node, token, SETTLE)
                .await
                .map_err(|source| ConvergeError::Unsettled {
                    pod: node.name().to_owned(),
                    waited: SETTLE,
                    source,
                })?;
        }
    }
    Ok(out)
}

async fn seal(node: &impl VaultNode, token: Option<&Secret>) -> Result<(), NodeError> {
    // Tests: what a standby with the old keyring answers.
    fail::fail_point!("converge::seal_refused", |_| Err(NodeError::Api {
        status: 500,
        errors: vec!["invalid request (injected)".into()],
    }));
    let token =
        token.ok_or_else(|| NodeError::Malformed("no token valid in the restored data".into()))?;
    let body = SecretBytes::json(&serde_json::json!({}))
        .map_err(|e| NodeError::Malformed(e.to_string()))?;
    node.call(Request::write("sys/seal", body).with_token(token))
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::credentials::sample;
    use serde_json::{json, Value};
    use std::sync::{Arc, Mutex};

    /// One server as a forced restore leaves it: `stale` is a standby still
    /// holding the old keyring (reads fail); `seal_refused` is what OpenBao
    /// 2.7 answers `sys/seal` on such a standby (its token check needs the
    /// keyring it lacks).
    #[derive(Debug, Default)]
    struct State {
        /// Reads that fail before this pod answers again, as a voter does
        /// while a restarted peer costs it its quorum.
        unsettled: u32,
        reads_after_restart: u32,
        sealed: bool,
        stale: bool,
        seal_refused: bool,
        seals: u32,
        restarts: u32,
    }

    #[derive(Clone)]
    struct FakeNode {
        name: String,
        state: Arc<Mutex<State>>,
    }

    fn api(status: u16, message: &str) -> NodeError {
        NodeError::Api {
            status,
            errors: vec![message.to_owned()],
        }
    }

    impl VaultNode for FakeNode {
        fn name(&self) -> &str {
            &self.name
        }

        async fn call_secret(
            &self,
            req: Request<'_>,
        ) -> Result<crate::ops::secret::SecretAnswer, NodeError> {
            self.call(req).await.map(crate::ops::double::secret_answer)
        }

        async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
            let mut s = self.state.lock().unwrap();
            let status = |s: &State| json!({"initialized": true, "sealed": s.sealed, "t": 1, "n": 1, "progress": 0});
            match req.path {
                "sys/seal-status" => Ok(status(&s)),
                "sys/unseal" => {
                    // Unsealing loads the keyring from storage: the restored one.
                    s.sealed = false;
                    s.stale = false;
                    Ok(status(&s))
                }
                _ if s.sealed => Err(api(503, "Vault is sealed")),
                "sys/seal" if s.seal_refused => Err(api(500, "invalid request")),
                "sys/seal" => {
                    s.seals += 1;
                    s.sealed = true;
                    Ok(Value::Null)
                }
                _ if s.stale => Err(api(
                    500,
                    "decryption failed: cipher: message authentication failed",
                )),
                _ if s.unsettled > 0 => {
                    s.unsettled -= 1;
                    Err(NodeError::Unreachable("EOF".into()))
                }
                "sys/leader" => {
                    s.reads_after_restart += 1;
                    Ok(json!({"ha_enabled": true, "leader_address": "http://vault-0:8200"}))
                }
                "auth/token/lookup-self" => Ok(json!({"id": "x"})),
                other => Err(api(404, other)),
            }
        }
    }

    struct FakeCluster(Vec<FakeNode>);

    impl VaultCluster for FakeCluster {
        type Node = FakeNode;
        fn replicas(&self) -> usize {
            self.0.len()
        }
        async fn nodes(&self) -> Result<Vec<FakeNode>, ClusterError> {
            Ok(self.0.clone())
        }
        async fn wait_for_node(
            &self,
            ordinal: usize,
            _: Duration,
        ) -> Result<FakeNode, ClusterError> {
            Ok(self.0[ordinal].clone())
        }
    }

    impl ServerRestart for FakeCluster {
        async fn restart(&self, pod: &str) -> Result<(), ClusterError> {
            for other in self.0.iter().filter(|n| n.name != pod) {
                let mut s = other.state.lock().unwrap();
                s.unsettled = 2;
                s.reads_after_restart = 0;
            }
            let node = self.0.iter().find(|n| n.name == pod).unwrap();
            let mut s = node.state.lock().unwrap();
            s.restarts += 1;
            s.sealed = true;
            s.stale = false;
            Ok(())
        }
    }

    fn cluster(states: Vec<State>) -> FakeCluster {
        FakeCluster(
            states
                .into_iter()
                .enumerate()
                .map(|(i, s)| FakeNode {
                    name: format!("vault-{i}"),
                    state: Arc::new(Mutex::new(s)),
                })
                .collect(),
        )
    }

    #[tokio::test]
    async fn a_standby_with_the_old_keyring_is_restarted_and_unsealed_the_others_are_left_alone() {
        let c = cluster(vec![
            State::default(),
            State {
                stale: true,
                seal_refused: true,
                ..State::default()
            },
            State::default(),
        ]);
        let token = Secret::new("t");
        let readings = converge(&c, &c, &sample(1, 1), Some(&token), Duration::from_secs(2))
            .await
            .unwrap();
        let remedies: Vec<Remedy> = readings.iter().map(|r| r.remedy).collect();
        assert_eq!(remedies, [Remedy::None, Remedy::Restarted, Remedy::None]);
        for (i, n) in c.0.iter().enumerate() {
            let s = n.state.lock().unwrap();
            assert!(!s.sealed && !s.stale, "pod {i}: {s:?}");
            assert_eq!(s.restarts, u32::from(i == 1), "pod {i}");
            assert_eq!(s.seals, 0, "pod {i}");
        }
    }

    /// Pod 0 read before pod 1 was restarted; the restart cost it its
    /// quorum for a while. `Ok` means it was read again afterwards.
    #[tokio::test]
    async fn pods_that_read_before_a_restart_are_read_again_after_it() {
        let c = cluster(vec![
            State::default(),
            State {
                stale: true,
                seal_refused: true,
                ..State::default()
            },
        ]);
        let token = Secret::new("t");
        converge(&c, &c, &sample(1, 1), Some(&token), Duration::from_secs(2))
            .await
            .unwrap();
        let s = c.0[0].state.lock().unwrap();
        assert_eq!(s.unsettled, 0, "pod 0's failing reads were waited out");
        assert!(s.reads_after_restart >= 1, "pod 0 read after the restart");
    }

    #[tokio::test]
    async fn a_standby_that_knows_no_active_node_does_not_count_as_reading() {
        let c = cluster(vec![State::default()]);
        // A standby answers sys/leader without an active node while an
        // election runs.
        struct NoLeader(FakeNode);
        impl VaultNode for NoLeader {
            fn name(&self) -> &str {
                self.0.name()
            }

            async fn call_secret(
                &self,
                req: Request<'_>,
            ) -> Result<crate::ops::secret::SecretAnswer, NodeError> {
                self.call(req).await.map(crate::ops::double::secret_answer)
            }
            async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
                match req.path {
                    "sys/leader" => {
                        Ok(json!({"ha_enabled": true, "is_self": false, "leader_address": ""}))
                    }
                    _ => self.0.call(req).await,
                }
            }
        }
        let err = reads(&NoLeader(c.0[0].clone()), None).await.unwrap_err();
        assert!(err.to_string().contains("no active node"), "{err}");
        reads(&c.0[0], None).await.unwrap();
    }

    #[tokio::test]
    async fn a_stale_pod_that_takes_sys_seal_is_resealed_not_restarted() {
        let c = cluster(vec![State {
            stale: true,
            ..State::default()
        }]);
        let token = Secret::new("t");
        let readings = converge(&c, &c, &sample(1, 1), Some(&token), Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(readings[0].remedy, Remedy::Resealed);
        let s = c.0[0].state.lock().unwrap();
        assert_eq!((s.seals, s.restarts, s.sealed), (1, 0, false));
    }

    #[tokio::test]
    async fn without_a_valid_token_a_stale_pod_is_restarted() {
        let c = cluster(vec![State {
            stale: true,
            ..State::default()
        }]);
        let readings = converge(&c, &c, &sample(1, 1), None, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(readings[0].remedy, Remedy::Restarted);
    }
}
