//! Finding the Vault/OpenBao pods of one workload.
//!
//! Owns the label selector defaults, ordering by StatefulSet ordinal, the
//! choice of container and the detection of its CLI. Implements the
//! operations layer's [`VaultCluster`] over the Kubernetes API.

use crate::ops::cluster::{ClusterError, VaultCluster};
use crate::ops::node::ListenerIdentity;
use crate::ops::reconcile::ordinal_of;
use crate::transport::direct::{DirectLink, DirectNode};
use crate::transport::exec::{CliFlavour, ExecNode};
use crate::transport::pod::{Fallback, PodNode, TransportKind};
use crate::transport::probe::{from_spec, probe_container};
use crate::transport::trust::{ContainerTls, WorkloadTrust};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The selector the hashicorp/vault and openbao/openbao charts' server pods match.
pub const DEFAULT_SELECTOR: &str = "app.kubernetes.io/name in (vault,openbao),component=server";

/// What an OpenBao 2.7+ server says before it exits on `storage "file"`.
const FILE_STORAGE_REFUSED: &str = "unknown storage type file";

/// Container names the charts use for the server.
const SERVER_CONTAINERS: [&str; 2] = ["vault", "openbao"];

/// One Vault/OpenBao workload in one namespace.
#[derive(Clone)]
pub struct KubeCluster {
    pods: Api<Pod>,
    namespace: String,
    selector: String,
    statefulset: Option<String>,
    replicas: usize,
    /// `podManagementPolicy: Parallel`: every replica is created at once.
    parallel: bool,
    container: String,
    cli: CliFlavour,
    /// The container's own API address and TLS settings, as its CLI sees them.
    tls: ContainerTls,
    /// How requests reach the pods (see [`KubeCluster::use_transport`]).
    route: Route,
    /// The CA file's content when the listener is TLS.
    listener_ca: Option<Arc<str>>,
    /// The container's client certificate when the listener is TLS.
    listener_client: Option<Arc<ListenerIdentity>>,
}

/// The transport this command uses, resolved against the workload.
#[derive(Clone)]
enum Route {
    Exec,
    Direct {
        port: u16,
        /// `None`: a plain-HTTP listener.
        trust: Option<WorkloadTrust>,
        /// `Some` under `auto`: shared by every pod of this command.
        fallback: Option<Fallback>,
        /// One link (one kept-alive forwarded connection) per pod, by uid.
        links: Arc<Mutex<HashMap<String, Arc<DirectLink>>>>,
    },
}

/// Whether discovery may skip its probe exec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// Always probe: the command runs things in the container anyway
    /// (`sys/init`, snapshots), and a missing pods/exec grant is best found
    /// before anything changes.
    Always,
    /// Skip the probe where the pod spec answers for it (see
    /// [`from_spec`]): commands that only call the API.
    UnlessTheSpecAnswers,
}

/// A pod as found, before any exec.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PodInfo {
    pub name: String,
    pub ready: bool,
    pub phase: String,
    pub restarts: i32,
    pub ip: String,
}

impl KubeCluster {
    /// Lists the pods, reads their StatefulSet and detects container and CLI.
    pub async fn discover(
        client: kube::Client,
        namespace: &str,
        selector: Option<&str>,
        probe: Probe,
    ) -> Result<Self, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let selector = selector.unwrap_or(DEFAULT_SELECTOR).to_owned();
        let found = list_pods(&pods, &selector).await?;
        let first = found.first().ok_or_else(|| ClusterError::NoPods {
            selector: selector.clone(),
            namespace: namespace.to_owned(),
        })?;
        let statefulset = first
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.kind == "StatefulSet")
            .map(|o| o.name.clone());
        let mut replicas = found.len();
        let mut parallel = false;
        if let Some(name) = &statefulset {
            let sets: Api<StatefulSet> = Api::namespaced(client, namespace);
            match sets.get(name).await {
                Ok(set) => {
                    if let Some(r) = set.spec.replicas {
                        replicas = usize::try_from(r).unwrap_or(replicas);
                    }
                    parallel = set.spec.pod_management_policy.as_deref() == Some("Parallel");
                }
                Err(e) => {
                    tracing::warn!(statefulset = %name, error = %super::api_reason(&e), "could not read the StatefulSet; using the pods found as the replica count")
                }
            }
        }
        let container = server_container(first);
        let name = first.metadata.name.clone().unwrap_or_default();
        // The pod spec answers for a plain-HTTP listener and a server
        // started as `bao server`/`vault server` (the charts' defaults):
        // no exec then, which also spares the grant for it.
        let known = (probe == Probe::UnlessTheSpecAnswers)
            .then(|| from_spec(first, &container))
            .flatten();
        let (cli, mut tls) = match known {
            Some(known) => {
                tracing::debug!(pod = %name, "CLI and listener known from the pod spec; no probe");
                known
            }
            None => probe_container(&pods, &name, &container, first).await?,
        };
        if tls.addr.is_empty() {
            tls.addr = listener_addr(first, &container);
        }
        tracing::debug!(pod = %name, container = %container, cli = cli.binary(), replicas, listener = %tls.addr, "discovered");
        Ok(KubeCluster {
            pods,
            namespace: namespace.to_owned(),
            selector,
            statefulset,
            replicas,
            parallel,
            container,
            cli,
            listener_ca: (tls.is_tls() && !tls.ca_pem.is_empty())
                .then(|| Arc::from(String::from_utf8_lossy(&tls.ca_pem).as_ref())),
            listener_client: tls.client.as_ref().filter(|_| tls.is_tls()).map(|c| {
                Arc::new(ListenerIdentity {
                    cert_pem: String::from_utf8_lossy(&c.cert_pem).into_owned(),
                    key_pem: c.key_pem.clone(),
                })
            }),
            tls,
            route: Route::Exec,
        })
    }

    /// The StatefulSet's name, or the pods' common prefix.
    /// The StatefulSet that owns the pods, when they have one.
    pub fn statefulset(&self) -> Option<&str> {
        self.statefulset.as_deref()
    }

    pub fn workload_name(&self) -> String {
        self.statefulset
            .clone()
            .unwrap_or_else(|| "vault".to_owned())
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Whether the servers' listeners serve TLS (the container's address is https).
    pub fn listener_tls(&self) -> bool {
        self.tls.is_tls()
    }

    pub fn cli(&self) -> CliFlavour {
        self.cli
    }

    pub fn container(&self) -> &str {
        &self.container
    }

    /// The previous and the current container's last `lines` log lines;
    /// `None` where a log cannot be read (no previous container, or no
    /// `pods/log` grant): callers then know less, nothing more.
    pub async fn server_log_tails(
        &self,
        pod: &str,
        lines: i64,
    ) -> (Option<String>, Option<String>) {
        let params = |previous| kube::api::LogParams {
            container: Some(self.container.clone()),
            tail_lines: Some(lines),
            previous,
            ..Default::default()
        };
        let (before, now) = (params(true), params(false));
        let (previous, current) =
            tokio::join!(self.pods.logs(pod, &before), self.pods.logs(pod, &now));
        if let Err(e) = &current {
            tracing::debug!(pod, error = %e, "could not read the server log");
        }
        (previous.ok(), current.ok())
    }

    /// Whether `pod`'s server log ends in an OpenBao 2.7+ refusing file
    /// storage (`unknown storage type file`): a standalone install whose
    /// image was upgraded before it migrated, crash-looping. Both the
    /// previous container (the last crash) and the current one are read.
    pub async fn refuses_file_storage(&self, pod: &str) -> bool {
        let (previous, current) = self.server_log_tails(pod, 20).await;
        [previous, current]
            .iter()
            .flatten()
            .any(|t| t.contains(FILE_STORAGE_REFUSED))
    }

    /// Kubernetes' view of every pod (readiness, restarts).
    pub async fn pod_infos(&self) -> Result<Vec<PodInfo>, ClusterError> {
        Ok(list_pods(&self.pods, &self.selector)
            .await?
            .iter()
            .map(pod_info)
            .collect())
    }

    fn node(&self, pod: &Pod) -> Option<PodNode> {
        let name = pod.metadata.name.clone()?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let (direct, fallback) = match &self.route {
            Route::Exec => (None, None),
            Route::Direct {
                port,
                trust,
                fallback,
                links,
            } => {
                let mut links = links.lock().unwrap_or_else(|p| p.into_inner());
                let key = format!("{name}/{uid}");
                let link = match links.get(&key) {
                    Some(link) => Some(link.clone()),
                    None => {
                        let trust = match trust {
                            None => Ok(None),
                            Some(t) => t
                                .for_pod(&name, &pod_dns_names(pod, &self.namespace))
                                .map(Some),
                        };
                        match trust {
                            Ok(trust) => {
                                let link = Arc::new(DirectLink::new(
                                    kube::Client::from(self.pods.clone()),
                                    self.namespace.clone(),
                                    name.clone(),
                                    *port,
                                    trust,
                                ));
                                links.insert(key, link.clone());
                                Some(link)
                            }
                            Err(e) => {
                                tracing::warn!(pod = %name, error = %e, "no direct transport to this pod; using exec");
                                None
                            }
                        }
                    }
                };
                (link.map(DirectNode::new), fallback.clone())
            }
        };
        let exec = ExecNode::new(self.pods.clone(), name, self.container.clone(), self.cli)
            .with_data_dir(data_dir(pod, &self.container))
            .with_server_configs(crate::transport::probe::server_configs(
                pod,
                &self.container,
            ));
        Some(
            PodNode::new(exec, direct, fallback)
                .with_listener_ca(self.listener_ca.clone())
                .with_listener_client(self.listener_client.clone())
                .with_hosts(pod_hosts(pod, &self.namespace))
                .with_uid(pod.metadata.uid.clone().unwrap_or_default()),
        )
    }

    /// Resolves the transport against the workload: `direct` to the port
    /// of the container's own `BAO_ADDR`/`VAULT_ADDR` (8200 when it names
    /// none), checking a TLS listener with the container's CA; `auto` as
    /// direct, falling back to exec where direct cannot work. `direct`
    /// refuses a TLS listener whose container names no CA file.
    pub fn use_transport(mut self, kind: TransportKind) -> Result<Self, ClusterError> {
        if kind == TransportKind::Exec {
            self.route = Route::Exec;
            return Ok(self);
        }
        let trust = if self.tls.is_tls() {
            match WorkloadTrust::new(&self.tls) {
                Ok(trust) => Some(trust),
                Err(reason) if kind == TransportKind::Auto => {
                    tracing::debug!(%reason, "using exec");
                    self.route = Route::Exec;
                    return Ok(self);
                }
                Err(reason) => {
                    return Err(ClusterError::List(format!(
                        "{reason}; --transport direct needs it, --transport exec works without"
                    )))
                }
            }
        } else {
            None
        };
        let port = self
            .tls
            .addr
            .rsplit(':')
            .next()
            .and_then(|p| p.trim_end_matches('/').parse().ok())
            .unwrap_or(8200);
        self.route = Route::Direct {
            port,
            trust,
            fallback: (kind == TransportKind::Auto).then(Fallback::default),
            links: Arc::default(),
        };
        Ok(self)
    }
}

impl VaultCluster for KubeCluster {
    type Node = PodNode;

    fn replicas(&self) -> usize {
        self.replicas
    }

    async fn nodes(&self) -> Result<Vec<PodNode>, ClusterError> {
        let pods = list_pods(&self.pods, &self.selector).await?;
        Ok(pods
            .into_iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            // A Terminating pod is still Running until its server stops; it is
            // on its way out (its successor gets the work), as Endpoints see it.
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| self.node(&p))
            .collect())
    }

    async fn must_answer(&self) -> Result<Vec<usize>, ClusterError> {
        if self.parallel {
            return Ok((0..self.replicas).collect());
        }
        let pods = list_pods(&self.pods, &self.selector).await?;
        Ok(pods
            .iter()
            .filter_map(|p| p.metadata.name.as_deref().and_then(ordinal_of))
            .collect())
    }

    async fn wait_for_node(
        &self,
        ordinal: usize,
        timeout: Duration,
    ) -> Result<PodNode, ClusterError> {
        let found = crate::ops::wait::poll_until(timeout, Duration::from_millis(250), || async {
            let nodes = self.nodes().await.ok()?;
            nodes
                .into_iter()
                .find(|n| ordinal_of(crate::ops::node::VaultNode::name(n)) == Some(ordinal))
        })
        .await;
        found.ok_or_else(|| ClusterError::PodMissing {
            pod: format!("{}-{ordinal}", self.workload_name()),
            waited: timeout,
        })
    }
}

pub(crate) async fn list_pods(pods: &Api<Pod>, selector: &str) -> Result<Vec<Pod>, ClusterError> {
    let mut list = pods
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| ClusterError::Api {
            action: "list pods".into(),
            source: Box::new(e),
        })?;
    list.items.sort_by_key(|p| {
        p.metadata
            .name
            .as_deref()
            .and_then(ordinal_of)
            .unwrap_or(usize::MAX)
    });
    Ok(list.items)
}

fn pod_info(p: &Pod) -> PodInfo {
    let status = p.status.as_ref();
    PodInfo {
        name: p.metadata.name.clone().unwrap_or_default(),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True"),
        phase: status.and_then(|s| s.phase.clone()).unwrap_or_default(),
        restarts: status
            .and_then(|s| s.container_statuses.as_ref())
            .map(|c| c.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0),
        ip: status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
    }
}

/// The hosts a pod is known by: its IPs, its name, and the DNS name its
/// headless Service gives it (`<hostname>.<subdomain>`, and with the
/// namespace after it). A raft peer address names one of these.
fn pod_hosts(pod: &Pod, namespace: &str) -> Vec<String> {
    let mut hosts: Vec<String> = pod
        .status
        .as_ref()
        .map(|s| {
            s.pod_ips
                .iter()
                .flatten()
                .map(|ip| ip.ip.clone())
                .chain(s.pod_ip.clone())
                .collect()
        })
        .unwrap_or_default();
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone());
    if let Some(hostname) = hostname {
        if let Some(subdomain) = spec.and_then(|s| s.subdomain.as_deref()) {
            hosts.push(format!("{hostname}.{subdomain}.{namespace}"));
            hosts.push(format!("{hostname}.{subdomain}"));
        }
        hosts.push(hostname);
    }
    hosts.sort();
    hosts.dedup();
    hosts
}

/// The container's `BAO_ADDR`/`VAULT_ADDR`, as the charts set it.
/// Where the server container mounts a PersistentVolumeClaim: the data
/// volume the charts put raft (or file) storage on, the one place in the pod
/// that survives its deletion.
fn data_dir(pod: &Pod, container: &str) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let claims: Vec<&str> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.persistent_volume_claim.is_some())
        .map(|v| v.name.as_str())
        .collect();
    spec.containers
        .iter()
        .find(|c| c.name == container)?
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| claims.contains(&m.name.as_str()) && !m.read_only.unwrap_or(false))
        .map(|m| m.mount_path.clone())
}

fn listener_addr(pod: &Pod, container: &str) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.env.as_ref())
        .and_then(|env| {
            env.iter()
                .find(|e| e.name == "BAO_ADDR" || e.name == "VAULT_ADDR")
        })
        .and_then(|e| e.value.clone())
        .unwrap_or_else(|| "http://127.0.0.1:8200".to_owned())
}

/// The server container: one the charts name, else one whose image is
/// vault/openbao, else the default-container annotation, else the first.
fn server_container(pod: &Pod) -> String {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    containers
        .iter()
        .find(|c| SERVER_CONTAINERS.contains(&c.name.as_str()))
        .or_else(|| {
            containers.iter().find(|c| {
                c.image
                    .as_deref()
                    .is_some_and(|i| i.contains("vault") || i.contains("openbao"))
            })
        })
        .map(|c| c.name.clone())
        .or_else(|| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("kubectl.kubernetes.io/default-container"))
                .cloned()
        })
        .or_else(|| containers.first().map(|c| c.name.clone()))
        .unwrap_or_default()
}

/// The DNS names a pod's listener certificate is issued for when the
/// container's address is loopback: the headless Service names, longest first.
fn pod_dns_names(pod: &Pod, namespace: &str) -> Vec<String> {
    let spec = pod.spec.as_ref();
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .or_else(|| pod.metadata.name.clone());
    let (Some(hostname), Some(subdomain)) = (hostname, spec.and_then(|s| s.subdomain.as_deref()))
    else {
        return pod.metadata.name.clone().into_iter().collect();
    };
    let base = format!("{hostname}.{subdomain}");
    vec![
        format!("{base}.{namespace}.svc.cluster.local"),
        format!("{base}.{namespace}.svc"),
        format!("{base}.{namespace}"),
        base,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::node::RaftPeer;
    use crate::ops::peers::is_peer_of;

    fn chart_pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "prod-openbao-1", "namespace": "vault"},
            "spec": {
                "hostname": "prod-openbao-1",
                "subdomain": "prod-openbao-internal",
                "containers": [{"name": "openbao"}],
            },
            "status": {"podIP": "10.1.2.3", "podIPs": [{"ip": "10.1.2.3"}, {"ip": "fd00::3"}]},
        }))
        .expect("pod")
    }

    #[test]
    fn a_pod_is_known_by_its_ips_and_headless_service_names() {
        let hosts = pod_hosts(&chart_pod(), "vault");
        for want in [
            "10.1.2.3",
            "fd00::3",
            "prod-openbao-1",
            "prod-openbao-1.prod-openbao-internal",
            "prod-openbao-1.prod-openbao-internal.vault",
        ] {
            assert!(hosts.iter().any(|h| h == want), "{want} in {hosts:?}");
        }
        // What the charts advertise as cluster_addr matches the pod.
        let peer = RaftPeer {
            node_id: "1f0c-generated".into(),
            address: "prod-openbao-1.prod-openbao-internal:8201".into(),
            leader: false,
            voter: true,
        };
        assert!(is_peer_of(&peer, "prod-openbao-1", &hosts));
        assert!(!is_peer_of(
            &peer,
            "prod-openbao-0",
            &pod_hosts(&Pod::default(), "vault")
        ));
    }
}
