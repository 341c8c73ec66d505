//! Cluster options: what a sandbox cluster looks like before it starts.
//!
//! Owns the flavour (OpenBao or Vault naming), the pod management policy and
//! the builder used by tests and the CLI. Knows nothing about processes.

use std::path::PathBuf;

pub use crate::seal::Seal;

/// Which chart the cluster imitates: names, labels, container and CLI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    /// openbao/openbao chart: container `openbao`, CLI `bao`, env `BAO_ADDR`.
    OpenBao,
    /// hashicorp/vault chart: container `vault`, CLI `vault` (a shim over `bao`), env `VAULT_ADDR`.
    Vault,
}

impl Flavour {
    /// The `app.kubernetes.io/name` label, the main container name and the default StatefulSet name.
    pub fn app_name(self) -> &'static str {
        match self {
            Flavour::OpenBao => "openbao",
            Flavour::Vault => "vault",
        }
    }

    /// The CLI available in the main container's PATH.
    pub fn cli(self) -> &'static str {
        match self {
            Flavour::OpenBao => "bao",
            Flavour::Vault => "vault",
        }
    }

    /// The environment variable holding the server address inside the container.
    pub fn addr_env(self) -> &'static str {
        match self {
            Flavour::OpenBao => "BAO_ADDR",
            Flavour::Vault => "VAULT_ADDR",
        }
    }

    /// `BAO` or `VAULT`: the prefix of the chart's `*_API_ADDR`, `*_CLUSTER_ADDR`, ...
    pub fn env_prefix(self) -> &'static str {
        match self {
            Flavour::OpenBao => "BAO",
            Flavour::Vault => "VAULT",
        }
    }

    /// The image reported in the pod spec and status.
    pub fn image(self) -> &'static str {
        match self {
            Flavour::OpenBao => "openbao/openbao:2.7.2",
            Flavour::Vault => "hashicorp/vault:1.20.4",
        }
    }
}

/// Where a TLS listener's CA is named for the container's CLI, as chart
/// users set it up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ListenerCa {
    /// `*_CACERT` names the CA file (the charts' TLS guides).
    #[default]
    CaCert,
    /// `*_CAPATH` names the folder the CA Secret is mounted at.
    CaPath,
    /// The container's env names no CA; only the server config's listener
    /// stanza does (`tls_client_ca_file`).
    ServerConfig,
}

/// Where the server finds a [`Seal::Static`] configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SealIn {
    /// A `seal` stanza in the HCL server config (the charts' `config`).
    #[default]
    HclConfig,
    /// The container's environment: `BAO_SEAL_TYPE=static`,
    /// `BAO_STATIC_SEAL_CURRENT_KEY_ID` and the key itself (base64) from the
    /// seal Secret, as a chart user sets them through
    /// `extraSecretEnvironmentVars`; no stanza. OpenBao's names (Vault has
    /// no static seal).
    Environment,
    /// A second config file, `seal.json`, named by a second `-config`.
    JsonConfig,
}

/// Where the servers keep their data, as the charts' two modes do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// `server.ha.raft`: integrated storage, one raft peer per pod.
    Raft,
    /// `server.standalone` (both charts' default): `storage "file"`, not HA.
    /// OpenBao 2.7 refuses it, so these pods run OpenBao 2.6 (the openbao
    /// chart's app version) from `.deps/bao-2.6`.
    File,
}

/// StatefulSet `podManagementPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodManagement {
    /// All pods are created at once (hashicorp/vault chart).
    Parallel,
    /// Pod N+1 is created only once pod N is Ready (openbao chart).
    OrderedReady,
}

impl PodManagement {
    /// The name Kubernetes uses in `spec.podManagementPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PodManagement::Parallel => "Parallel",
            PodManagement::OrderedReady => "OrderedReady",
        }
    }
}

/// Everything needed to start a [`crate::Cluster`].
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// StatefulSet name; pods are `NAME-0..N-1`.
    pub name: String,
    /// The Helm release (`app.kubernetes.io/instance`); `None` = the StatefulSet name.
    pub release: Option<String>,
    /// Namespace of the pods, Secrets and Leases.
    pub namespace: String,
    /// Desired number of pods.
    pub replicas: u32,
    /// OpenBao or Vault naming.
    pub flavour: Flavour,
    /// How pods are created.
    pub pod_management: PodManagement,
    /// Adds a `retry_join` stanza pointing at pod 0 to every pod's config.
    pub retry_join: bool,
    /// Raft or file storage.
    pub storage: Storage,
    /// `node_id = "<pod>"` in the raft stanza (the charts' `setNodeId: true`).
    /// Off, as the charts default: OpenBao generates a UUID and keeps it in
    /// `<data>/node-id`.
    pub set_node_id: bool,
    /// Raft addresses as the charts set them: `cluster_addr` is
    /// `https://<pod>.<sts>-internal:8201`, resolved by a per-pod
    /// `/etc/hosts` (each server runs under `unshare -m` with that file
    /// bind-mounted; needs root). The default when running as root, as tests
    /// and CI do. Off: the pods' IPs, which a deleted pod keeps.
    pub cluster_dns: bool,
    /// `*_ADDR=http://127.0.0.1:8200` in what is exec'd, as the charts set
    /// it: each pod gets a network namespace of its own whose loopback
    /// relays to its server (see `loopback`; needs root). The default as
    /// root. Off: `*_ADDR` names the pod's IP.
    pub loopback_addr: bool,
    /// Serve the API over HTTPS with a generated CA.
    pub tls: bool,
    /// The pods' own listeners serve TLS (see `listener_tls`).
    pub tls_listener: bool,
    /// How the container names the listener CA (with `tls_listener`).
    pub listener_ca: ListenerCa,
    /// The listeners require a client certificate
    /// (`tls_require_and_verify_client_cert`); the container names one in
    /// `*_CLIENT_CERT`/`*_CLIENT_KEY` (with `tls_listener`).
    pub listener_client_auth: bool,
    /// Shamir (the default) or an auto-unseal stanza in every pod's config.
    pub seal: Seal,
    /// Where the server finds its static seal (see [`SealIn`]).
    pub seal_in: SealIn,
    /// Adds a first container `agent` without any vault CLI.
    pub sidecar: bool,
    /// Where pod folders, the kubeconfig and the audit log live; `None` = a temp dir removed on drop.
    pub dir: Option<PathBuf>,
    /// Folder holding the `bao` binary; `None` = `SANDBOX_BIN_DIR` or the workspace's `.deps/bin`.
    pub bin_dir: Option<PathBuf>,
    /// Fixed API server port (the CLI's `--port`); `None` = any free port.
    pub port: Option<u16>,
    /// The OpenBao version the pods run (`2.6.2` or `2.7.2`); `None` = the
    /// storage's default: 2.6.2 for file (the openbao chart's app version,
    /// the last that serves file storage), 2.7.2 for raft.
    pub version: Option<String>,
    /// Ordinals whose raft listener peers cannot reach: it binds another
    /// port than the advertised 8201 (a NetworkPolicy or firewall between
    /// pods, as far as the peers can tell).
    pub blocked_cluster_ports: Vec<u32>,
    /// The kubeconfig's context name, also naming its cluster and user
    /// (`NAME` and `NAME-admin`), so that several sandboxes' kubeconfigs
    /// merge in one `KUBECONFIG`. Default `sandbox`.
    pub context: String,
    /// Serve `metrics.k8s.io/v1beta1` PodMetrics from the pods' processes,
    /// as a cluster with metrics-server does (`kubectl top pods`). Off by
    /// default, like a cluster without metrics-server: the group is then
    /// neither listed nor served.
    pub metrics_server: bool,
}

/// What `helm upgrade` with other values changes in a running StatefulSet:
/// the server config, the replica count and the image. Unset fields keep
/// their value.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Reconfigure {
    pub storage: Option<Storage>,
    pub replicas: Option<u32>,
    pub retry_join: Option<bool>,
    pub set_node_id: Option<bool>,
    pub version: Option<String>,
    /// Pods whose raft port 8201 peers cannot reach (a fault, not a value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_cluster_ports: Option<Vec<u32>>,
}

impl Reconfigure {
    /// `options` with this change applied.
    pub fn apply(&self, mut options: ClusterOptions) -> ClusterOptions {
        if let Some(storage) = self.storage {
            // A chart upgrade keeps the image: a file → raft values change
            // on 2.6.2 stays on 2.6.2.
            if options.version.is_none() {
                options.version = Some(options.server_version().to_owned());
            }
            options.storage = storage;
        }
        if let Some(replicas) = self.replicas {
            options.replicas = replicas;
        }
        if let Some(on) = self.retry_join {
            options.retry_join = on;
        }
        if let Some(on) = self.set_node_id {
            options.set_node_id = on;
        }
        if let Some(version) = &self.version {
            options.version = Some(version.clone());
        }
        if let Some(blocked) = &self.blocked_cluster_ports {
            options.blocked_cluster_ports = blocked.clone();
        }
        options
    }
}

impl ClusterOptions {
    /// Defaults shaped like the openbao/openbao chart (OrderedReady).
    pub fn openbao() -> Self {
        Self::with_flavour(Flavour::OpenBao, PodManagement::OrderedReady)
    }

    /// Defaults shaped like the hashicorp/vault chart (Parallel).
    pub fn vault() -> Self {
        Self::with_flavour(Flavour::Vault, PodManagement::Parallel)
    }

    fn with_flavour(flavour: Flavour, pod_management: PodManagement) -> Self {
        Self {
            name: flavour.app_name().to_string(),
            release: None,
            namespace: "vault".to_string(),
            replicas: 3,
            flavour,
            pod_management,
            retry_join: false,
            storage: Storage::Raft,
            set_node_id: false,
            cluster_dns: crate::pod::running_as_root(),
            loopback_addr: crate::pod::running_as_root(),
            tls: false,
            tls_listener: false,
            listener_ca: ListenerCa::CaCert,
            listener_client_auth: false,
            seal: Seal::Shamir,
            seal_in: SealIn::HclConfig,
            sidecar: false,
            dir: None,
            bin_dir: None,
            port: None,
            version: None,
            blocked_cluster_ports: Vec::new(),
            context: "sandbox".to_string(),
            metrics_server: false,
        }
    }

    /// Serves `metrics.k8s.io` (see [`ClusterOptions::metrics_server`]).
    pub fn metrics_server(mut self, on: bool) -> Self {
        self.metrics_server = on;
        self
    }

    /// Names the kubeconfig's context (and its cluster and user after it).
    pub fn context(mut self, name: impl Into<String>) -> Self {
        self.context = name.into();
        self
    }

    /// Sets the StatefulSet name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Names the cluster the way the upstream chart names a release's
    /// objects: the StatefulSet is the release name when that contains the
    /// chart name (`openbao`, `my-openbao`), else `<release>-<chart>`; the
    /// pods' `app.kubernetes.io/instance` is the release name.
    pub fn release(mut self, release: impl Into<String>) -> Self {
        let release = release.into();
        let chart = self.flavour.app_name();
        self.name = if release.contains(chart) {
            release.clone()
        } else {
            format!("{release}-{chart}")
        };
        self.release = Some(release);
        self
    }

    /// The `app.kubernetes.io/instance` label.
    pub fn instance(&self) -> &str {
        self.release.as_deref().unwrap_or(&self.name)
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the desired number of pods.
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the pod management policy.
    pub fn pod_management(mut self, policy: PodManagement) -> Self {
        self.pod_management = policy;
        self
    }

    /// Pod N+1 waits for pod N to be Ready.
    pub fn ordered_ready(self) -> Self {
        self.pod_management(PodManagement::OrderedReady)
    }

    /// All pods start at once.
    pub fn parallel(self) -> Self {
        self.pod_management(PodManagement::Parallel)
    }

    /// Adds `retry_join` to the raft stanza.
    pub fn retry_join(mut self, on: bool) -> Self {
        self.retry_join = on;
        self
    }

    /// Sets `node_id` to the pod name (on) or lets OpenBao generate one (off).
    pub fn set_node_id(mut self, on: bool) -> Self {
        self.set_node_id = on;
        self
    }

    /// `*_ADDR` on the pod's own 127.0.0.1 (on, needs root) or its IP (off).
    pub fn loopback_addr(mut self, on: bool) -> Self {
        self.loopback_addr = on;
        self
    }

    /// Advertises raft addresses as `<pod>.<sts>-internal` DNS names (needs root).
    pub fn cluster_dns(mut self, on: bool) -> Self {
        self.cluster_dns = on;
        self
    }

    /// The DNS name the headless Service gives pod `pod`: `<pod>.<sts>-internal`.
    pub fn pod_dns_name(&self, pod: &str) -> String {
        format!("{pod}.{}-internal", self.name)
    }

    /// The charts' default mode: one replica on file storage, not HA.
    pub fn standalone(mut self) -> Self {
        self.storage = Storage::File;
        self.replicas = 1;
        self
    }

    /// Serves the API over HTTPS.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// The pods' listeners serve TLS with a generated CA and per-pod
    /// certificates; `BAO_ADDR` is https and `BAO_CACERT` names the CA.
    pub fn tls_listener(mut self, on: bool) -> Self {
        self.tls_listener = on;
        self
    }

    /// How the container names the listener CA (see [`ListenerCa`]).
    pub fn listener_ca(mut self, ca: ListenerCa) -> Self {
        self.listener_ca = ca;
        self
    }

    /// The listeners require client certificates signed by the listener
    /// CA, and the container names its own in `*_CLIENT_CERT`/`*_CLIENT_KEY`,
    /// as a chart user mounts them through `extraVolumes`.
    pub fn listener_client_auth(mut self, on: bool) -> Self {
        self.listener_client_auth = on;
        self
    }

    /// `https` with TLS listeners, else `http`.
    pub fn listener_scheme(&self) -> &'static str {
        if self.tls_listener {
            "https"
        } else {
            "http"
        }
    }

    /// Pods unseal with `seal` (`Seal::Static`: a generated key file, mounted
    /// as a Secret volume).
    pub fn seal(mut self, seal: Seal) -> Self {
        self.seal = seal;
        self
    }

    /// Where a static seal is configured (see [`SealIn`]).
    pub fn seal_in(mut self, place: SealIn) -> Self {
        self.seal_in = place;
        self
    }

    /// Adds the `agent` sidecar container in first position.
    pub fn sidecar(mut self, on: bool) -> Self {
        self.sidecar = on;
        self
    }

    /// Uses (and keeps) this folder instead of a temp dir.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Takes `bao` from this folder.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Listens on this port instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Runs OpenBao `version` (`2.6.2` or `2.7.2`).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The OpenBao version the pods run: the option, else 2.6.2 on file
    /// storage (the openbao chart's app version) and 2.7.2 on raft.
    pub fn server_version(&self) -> &str {
        match (&self.version, self.storage) {
            (Some(v), _) => v,
            (None, Storage::File) => "2.6.2",
            (None, Storage::Raft) => "2.7.2",
        }
    }

    /// The image reported in the pod spec and status.
    pub fn image(&self) -> String {
        match self.flavour {
            Flavour::OpenBao => format!("openbao/openbao:{}", self.server_version()),
            Flavour::Vault => self.flavour.image().to_owned(),
        }
    }

    /// Name of the main container (`openbao` or `vault`).
    pub fn container(&self) -> &'static str {
        self.flavour.app_name()
    }

    /// Name of pod `ordinal`.
    pub fn pod_name(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.name)
    }

    /// Parses `NAME-i` back into the ordinal.
    pub fn ordinal_of(&self, pod: &str) -> Option<u32> {
        pod.strip_prefix(&self.name)?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// The folder holding `bao`: option, `SANDBOX_BIN_DIR`, or the workspace's `.deps/bin`.
    pub fn resolved_bin_dir(&self) -> PathBuf {
        if let Some(dir) = &self.bin_dir {
            return dir.clone();
        }
        if let Some(dir) = std::env::var_os("SANDBOX_BIN_DIR") {
            return PathBuf::from(dir);
        }
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.deps/bin"))
    }

    /// The server binary the pods run: OpenBao 2.6 (`../bao-2.6/bin/bao`
    /// next to the bin folder, from `scripts/install-deps`) for 2.6.x, else
    /// `bao` in the bin folder (2.7.2).
    pub fn server_binary(&self) -> PathBuf {
        let bin = self.resolved_bin_dir();
        if self.server_version().starts_with("2.6") {
            bin.join("..").join("bao-2.6").join("bin").join("bao")
        } else {
            bin.join("bao")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavour_defaults_follow_the_charts() {
        let o = ClusterOptions::openbao();
        assert_eq!(
            (o.name.as_str(), o.pod_management),
            ("openbao", PodManagement::OrderedReady)
        );
        let v = ClusterOptions::vault().replicas(5).retry_join(true);
        assert_eq!(
            (v.name.as_str(), v.replicas, v.retry_join),
            ("vault", 5, true)
        );
        assert_eq!(v.pod_management, PodManagement::Parallel);
        assert!(
            !o.set_node_id,
            "node ids are generated, as setNodeId: false"
        );
        assert_eq!(o.storage, Storage::Raft);
    }

    #[test]
    fn release_names_follow_the_upstream_charts() {
        let o = ClusterOptions::openbao().release("prod");
        assert_eq!((o.name.as_str(), o.instance()), ("prod-openbao", "prod"));
        let o = ClusterOptions::openbao().release("my-openbao");
        assert_eq!(
            (o.name.as_str(), o.instance()),
            ("my-openbao", "my-openbao")
        );
        let v = ClusterOptions::vault().release("vault");
        assert_eq!((v.name.as_str(), v.instance()), ("vault", "vault"));
        assert_eq!(ClusterOptions::vault().instance(), "vault");
    }

    #[test]
    fn a_storage_change_keeps_the_image_as_a_chart_upgrade_does() {
        let file = ClusterOptions::openbao().standalone();
        assert_eq!(file.image(), "openbao/openbao:2.6.2");
        let raft = Reconfigure {
            storage: Some(Storage::Raft),
            replicas: Some(3),
            ..Reconfigure::default()
        }
        .apply(file.clone());
        assert_eq!((raft.storage, raft.replicas), (Storage::Raft, 3));
        assert_eq!(raft.image(), "openbao/openbao:2.6.2");
        let upgraded = Reconfigure {
            version: Some("2.7.2".into()),
            ..Reconfigure::default()
        }
        .apply(file);
        assert_eq!(upgraded.storage, Storage::File);
        assert_eq!(upgraded.image(), "openbao/openbao:2.7.2");
        assert!(upgraded.server_binary().ends_with("bin/bao"));
        assert_eq!(ClusterOptions::openbao().image(), "openbao/openbao:2.7.2");
    }

    #[test]
    fn ordinal_round_trips() {
        let o = ClusterOptions::openbao().name("bao-x");
        assert_eq!(o.ordinal_of(&o.pod_name(7)), Some(7));
        assert_eq!(o.ordinal_of("bao-x-"), None);
        assert_eq!(o.ordinal_of("other-1"), None);
    }
}
