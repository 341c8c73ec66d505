//! The `kube-sandbox` command line: `up` runs a cluster in the foreground;
//! every other subcommand calls the running server's control API using
//! `DIR/sandbox.json`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use sandbox::{
    Cluster, ClusterOptions, Control, Flavour, PodManagement, Reconfigure, Seal, Storage,
};
use serde::{Deserialize, Serialize};

/// A Kubernetes API server double whose pods are real OpenBao processes.
#[derive(Parser, Debug)]
#[command(name = "kube-sandbox", version)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum FlavourArg {
    Openbao,
    Vault,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum PolicyArg {
    #[value(name = "Parallel", alias = "parallel")]
    Parallel,
    #[value(name = "OrderedReady", alias = "ordered-ready")]
    OrderedReady,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    /// Raft storage, `--replicas` pods (the charts' `server.ha.raft`).
    Ha,
    /// File storage, one pod, not HA (the charts' default `server.standalone`).
    Standalone,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum StorageArg {
    /// Integrated storage (the charts' `server.ha.raft`).
    Raft,
    /// `storage "file"` (the charts' default `server.standalone`).
    File,
}

impl From<StorageArg> for Storage {
    fn from(s: StorageArg) -> Self {
        match s {
            StorageArg::Raft => Storage::Raft,
            StorageArg::File => Storage::File,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ListenerCaArg {
    Cacert,
    Capath,
    ServerConfig,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SealArg {
    /// Shamir unseal shares (the charts' default).
    Shamir,
    /// OpenBao's `seal "static"`: a generated 32-byte key file, mounted as
    /// a Secret; pods unseal themselves.
    Static,
    /// `seal "transit"`: one more server outside the StatefulSet holds the
    /// transit key; `seal-provider down|up` stops and starts it.
    Transit,
}

#[derive(clap::Args, Debug)]
struct UpArgs {
    /// Folder for pods, kubeconfig, audit log and sandbox.json (kept; reused by a later `up`).
    #[arg(long)]
    dir: PathBuf,
    /// StatefulSet name (default: openbao or vault).
    #[arg(long, conflicts_with = "release")]
    name: Option<String>,
    /// Helm release name: names the StatefulSet as the chart does (the
    /// release if it contains the chart name, else `<release>-<chart>`) and
    /// sets `app.kubernetes.io/instance`.
    #[arg(long)]
    release: Option<String>,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "vault")]
    namespace: String,
    #[arg(long, default_value_t = 3)]
    replicas: u32,
    #[arg(long, value_enum, default_value = "openbao")]
    flavour: FlavourArg,
    /// Default: OrderedReady for openbao, Parallel for vault.
    #[arg(long, value_enum)]
    pod_management: Option<PolicyArg>,
    #[arg(long)]
    retry_join: bool,
    /// `ha`: raft storage; `standalone`: file storage on OpenBao 2.6, one pod.
    #[arg(long, value_enum, default_value = "ha", conflicts_with = "storage")]
    mode: ModeArg,
    /// `file` is `--mode standalone` (one pod on OpenBao 2.6.2); `raft` is `--mode ha`.
    #[arg(long, value_enum)]
    storage: Option<StorageArg>,
    /// OpenBao version the pods run: 2.6.2 or 2.7.2 (default: 2.6.2 on
    /// file storage, 2.7.2 on raft).
    #[arg(long)]
    version: Option<String>,
    /// Set each raft node id to the pod name (the charts' `setNodeId: true`);
    /// by default OpenBao generates one, as the charts do.
    #[arg(long)]
    set_node_id: bool,
    /// Raft addresses as the charts advertise them, `<pod>.<sts>-internal`
    /// names resolved by a per-pod /etc/hosts (servers run under
    /// `unshare -m`). The default as root; `false` advertises pod IPs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    cluster_dns: Option<bool>,
    /// `*_ADDR=http://127.0.0.1:8200` in exec'd commands, as the charts set
    /// it, through a per-pod network namespace. The default as root;
    /// `false` names the pod's IP.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    loopback_addr: Option<bool>,
    /// Serve HTTPS with a generated CA.
    #[arg(long)]
    tls: bool,
    /// The pods' listeners serve TLS: a generated CA, per-pod certificates,
    /// `*_CACERT` in the container env.
    #[arg(long)]
    tls_listener: bool,
    /// With --tls-listener: where the container names the CA (`cacert`:
    /// `*_CACERT`; `capath`: `*_CAPATH`; `server-config`: only the listener
    /// stanza's `tls_client_ca_file`).
    #[arg(long, value_enum, default_value = "cacert")]
    listener_ca: ListenerCaArg,
    /// With --tls-listener: listeners require client certificates, and the
    /// container names its own in `*_CLIENT_CERT`/`*_CLIENT_KEY`.
    #[arg(long)]
    listener_client_auth: bool,
    /// How the pods unseal.
    #[arg(long, value_enum, default_value = "shamir")]
    seal: SealArg,
    /// Add the `agent` sidecar container.
    #[arg(long)]
    sidecar: bool,
    /// API server port (default: any free port).
    #[arg(long)]
    port: Option<u16>,
    /// The kubeconfig's context name (its cluster and user are named after
    /// it), so that several sandboxes' kubeconfigs merge in one KUBECONFIG.
    #[arg(long, default_value = "sandbox")]
    context: String,
    /// Serve metrics.k8s.io/v1beta1 PodMetrics from the pods' processes
    /// (CPU and RSS), as metrics-server does, for `kubectl top pods`.
    #[arg(long)]
    metrics_server: bool,
}

#[derive(clap::Args, Debug)]
struct DirArg {
    /// The folder given to `up`.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a cluster in the foreground until SIGINT/SIGTERM or `down`.
    Up(UpArgs),
    /// Stop the running cluster.
    Down(DirArg),
    /// SIGKILL a pod's server and start it again (sealed).
    RestartPod {
        pod: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Delete a pod's data and start it again (uninitialized).
    WipePod {
        pod: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// SIGKILL and restart every pod's server.
    RestartAll(DirArg),
    /// Let a removed pod come back with its data.
    RestorePod {
        pod: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Make a pod disappear until `scale` or `restore-pod`.
    RemovePod {
        pod: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Set the StatefulSet's replicas.
    Scale {
        replicas: u32,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Do what `helm upgrade` with other values does: change the storage,
    /// replicas, joins or image, and recreate every pod on the new spec
    /// (highest ordinal first; PVC folders kept).
    Reconfigure {
        #[command(flatten)]
        dir: DirArg,
        #[arg(long, value_enum)]
        storage: Option<StorageArg>,
        #[arg(long)]
        replicas: Option<u32>,
        /// Add `retry_join` (pointing at pod 0) to every pod's raft stanza.
        #[arg(long)]
        retry_join: bool,
        /// Set each raft node id to the pod name (`setNodeId: true`).
        #[arg(long)]
        set_node_id: bool,
        /// OpenBao version: 2.6.2 or 2.7.2 (default: unchanged).
        #[arg(long)]
        version: Option<String>,
    },
    /// Make the next writes to a Secret fail.
    FailSecretWrites {
        name: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// 500, 409 or drop.
        #[arg(long, default_value = "500")]
        mode: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Close the next N exec streams before their status frame.
    DropExec {
        count: u32,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Add latency (milliseconds) to every API request.
    Latency {
        ms: u64,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Answer 403 to VERB on RESOURCE.
    Forbid {
        verb: String,
        resource: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Lift every `forbid`.
    AllowAll(DirArg),
    /// Stop or start the transit seal provider of an `up --seal transit` cluster.
    SealProvider {
        state: ProviderState,
        #[command(flatten)]
        dir: DirArg,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProviderState {
    Down,
    Up,
}

/// What `up` writes to `DIR/sandbox.json` for the other subcommands.
#[derive(Serialize, Deserialize)]
struct Handle {
    server: String,
    token: String,
    pid: u32,
    kubeconfig: PathBuf,
    namespace: String,
    name: String,
}

/// Runs one subcommand.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (dir, control) = match args.command {
        Command::Up(up) => return run_up(up).await,
        Command::Down(d) => (d.dir, Control::Shutdown),
        Command::RestartPod { pod, dir } => (dir.dir, Control::RestartPod { pod }),
        Command::WipePod { pod, dir } => (dir.dir, Control::WipePod { pod }),
        Command::RemovePod { pod, dir } => (dir.dir, Control::RemovePod { pod }),
        Command::RestartAll(d) => (d.dir, Control::RestartAll),
        Command::RestorePod { pod, dir } => (dir.dir, Control::RestorePod { pod }),
        Command::Scale { replicas, dir } => (dir.dir, Control::Scale { replicas }),
        Command::Reconfigure {
            dir,
            storage,
            replicas,
            retry_join,
            set_node_id,
            version,
        } => (
            dir.dir,
            Control::Reconfigure(Reconfigure {
                storage: storage.map(Storage::from),
                replicas,
                retry_join: retry_join.then_some(true),
                set_node_id: set_node_id.then_some(true),
                version,
                blocked_cluster_ports: None,
            }),
        ),
        Command::FailSecretWrites {
            name,
            count,
            mode,
            dir,
        } => (dir.dir, Control::FailSecretWrites { name, count, mode }),
        Command::DropExec { count, dir } => (dir.dir, Control::DropExec { count }),
        Command::Latency { ms, dir } => (dir.dir, Control::Latency { ms }),
        Command::Forbid {
            verb,
            resource,
            dir,
        } => (dir.dir, Control::Forbid { verb, resource }),
        Command::AllowAll(d) => (d.dir, Control::AllowAll),
        Command::SealProvider { state, dir } => (
            dir.dir,
            Control::SealProvider {
                up: matches!(state, ProviderState::Up),
            },
        ),
    };
    send(&dir, control).await
}

async fn run_up(up: UpArgs) -> anyhow::Result<()> {
    let mut opts = match up.flavour {
        FlavourArg::Openbao => ClusterOptions::openbao(),
        FlavourArg::Vault => ClusterOptions::vault(),
    };
    if let Some(name) = up.name {
        opts = opts.name(name);
    }
    if let Some(release) = up.release {
        opts = opts.release(release);
    }
    if let Some(p) = up.pod_management {
        opts = opts.pod_management(match p {
            PolicyArg::Parallel => PodManagement::Parallel,
            PolicyArg::OrderedReady => PodManagement::OrderedReady,
        });
    }
    opts = opts
        .namespace(up.namespace)
        .replicas(up.replicas)
        .retry_join(up.retry_join)
        .set_node_id(up.set_node_id)
        .cluster_dns(up.cluster_dns.unwrap_or_else(sandbox::running_as_root))
        .loopback_addr(up.loopback_addr.unwrap_or_else(sandbox::running_as_root))
        .tls(up.tls)
        .tls_listener(up.tls_listener)
        .listener_ca(match up.listener_ca {
            ListenerCaArg::Cacert => sandbox::ListenerCa::CaCert,
            ListenerCaArg::Capath => sandbox::ListenerCa::CaPath,
            ListenerCaArg::ServerConfig => sandbox::ListenerCa::ServerConfig,
        })
        .listener_client_auth(up.listener_client_auth)
        .seal(match up.seal {
            SealArg::Shamir => Seal::Shamir,
            SealArg::Static => Seal::Static,
            SealArg::Transit => Seal::Transit,
        })
        .sidecar(up.sidecar)
        .context(up.context)
        .metrics_server(up.metrics_server)
        .dir(&up.dir);
    let standalone = match up.storage {
        Some(storage) => matches!(storage, StorageArg::File),
        None => matches!(up.mode, ModeArg::Standalone),
    };
    if standalone {
        opts = opts.standalone();
    }
    if let Some(version) = up.version {
        opts = opts.version(version);
    }
    if let Some(port) = up.port {
        opts = opts.port(port);
    }
    debug_assert!(matches!(opts.flavour, Flavour::OpenBao | Flavour::Vault));
    let cluster = Cluster::start(opts).await?;
    let handle = Handle {
        server: cluster.server_url().to_string(),
        token: cluster.token().to_string(),
        pid: std::process::id(),
        kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        namespace: cluster.namespace().to_string(),
        name: cluster.name().to_string(),
    };
    let state = cluster.dir().join("sandbox.json");
    std::fs::write(&state, serde_json::to_vec_pretty(&handle)?).context("write sandbox.json")?;
    println!("export KUBECONFIG={}", cluster.kubeconfig_path().display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = cluster.shutdown_requested() => {}
    }
    let _ = std::fs::remove_file(&state);
    drop(cluster);
    Ok(())
}

async fn send(dir: &Path, control: Control) -> anyhow::Result<()> {
    let path = dir.join("sandbox.json");
    let text = std::fs::read(&path).with_context(|| {
        format!(
            "read {} (is `kube-sandbox up --dir {}` running?)",
            path.display(),
            dir.display()
        )
    })?;
    let handle: Handle = serde_json::from_slice(&text).context("parse sandbox.json")?;
    let kc = kube::config::Kubeconfig::read_from(&handle.kubeconfig)?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await?;
    config.read_timeout = Some(Duration::from_secs(120));
    let client = kube::Client::try_from(config)?;
    let body = serde_json::to_value(&control)?;
    let op = body["op"].as_str().unwrap_or_default().to_string();
    let req = http::Request::post(format!("/sandbox/v1/{op}"))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body)?)?;
    client
        .request_text(req)
        .await
        .with_context(|| format!("{op} failed"))?;
    Ok(())
}
