//! The handle tests and the CLI hold: starts a sandbox, exposes its
//! kubeconfig and client, injects faults, and tears everything down on drop.
//!
//! Owns the sandbox's private tokio runtime (so the server keeps running
//! whatever runtime the caller uses, e.g. a current-thread `#[tokio::test]`),
//! the folder and the kubeconfig. Behaviour lives in the parts it wires.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use crate::control::Control;
use crate::faults::SecretFault;
use crate::options::{ClusterOptions, PodManagement};
use crate::state::Sandbox;
use crate::{api, kubeconfig, pod, tls};

/// A running sandbox cluster. Dropping it kills every server process.
pub struct Cluster {
    sandbox: Arc<Sandbox>,
    runtime: BackgroundRuntime,
    dir: PathBuf,
    temp: Option<tempfile::TempDir>,
    kubeconfig: PathBuf,
    server_url: String,
    ca_pem: Option<String>,
}

/// The private runtime; dropping it never blocks, so a `Cluster` (or a failed
/// `Cluster::start`) can be dropped inside any async context.
struct BackgroundRuntime(Option<tokio::runtime::Runtime>);

impl Drop for BackgroundRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

const HEALTH_PERIOD: Duration = Duration::from_millis(200);

impl Cluster {
    /// Starts the API server and the first pod(s): all replicas for Parallel,
    /// pod 0 for OrderedReady. Returns once their servers listen.
    pub async fn start(opts: ClusterOptions) -> anyhow::Result<Cluster> {
        crate::tls::install_default_crypto_provider();
        let runtime = BackgroundRuntime(Some(
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .thread_name("kube-sandbox")
                .build()
                .context("start the sandbox runtime")?,
        ));
        let Some(rt) = runtime.0.as_ref() else {
            anyhow::bail!("the sandbox runtime is gone");
        };
        let (temp, dir) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
                (None, std::fs::canonicalize(d)?)
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix("kube-sandbox-")
                    .tempdir()
                    .context("create a temp dir")?;
                let d = t.path().to_path_buf();
                // The pods' user walks through it to its volumes.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))
                    .context("open the sandbox folder to the pods' user")?;
                (Some(t), d)
            }
        };
        let first = match opts.pod_management {
            PodManagement::Parallel => opts.replicas,
            PodManagement::OrderedReady => opts.replicas.min(1),
        };
        let sandbox = Arc::new(Sandbox::new(opts.clone(), &dir)?);
        let listener = std::net::TcpListener::bind(("127.0.0.1", opts.port.unwrap_or(0)))
            .context("bind the API server")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let material = if opts.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let scheme = if opts.tls { "https" } else { "http" };
        let server_url = format!("{scheme}://127.0.0.1:{port}");
        let ca_pem = material.as_ref().map(|m| m.ca_pem.clone());
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            kubeconfig::render(
                &opts.context,
                &server_url,
                &sandbox.token,
                &opts.namespace,
                ca_pem.as_deref(),
            ),
        )
        .context("write the kubeconfig")?;
        {
            let _enter = rt.enter();
            let listener = tokio::net::TcpListener::from_std(listener)?;
            rt.spawn(api::serve(
                listener,
                material.map(|m| m.acceptor),
                sandbox.clone(),
            ));
        }
        let cluster = Cluster {
            sandbox: sandbox.clone(),
            runtime,
            dir,
            temp,
            kubeconfig,
            server_url,
            ca_pem,
        };
        let s = sandbox.clone();
        cluster
            .on_runtime(async move { s.fleet.reconcile().await })
            .await?;
        cluster
            .wait_for_pods(first as usize, Duration::from_secs(60))
            .await?;
        let s = sandbox;
        cluster.spawn(async move {
            loop {
                s.fleet.tick().await;
                tokio::time::sleep(HEALTH_PERIOD).await;
            }
        });
        Ok(cluster)
    }

    fn spawn<F>(&self, fut: F) -> Option<tokio::task::JoinHandle<F::Output>>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.0.as_ref().map(|rt| rt.spawn(fut))
    }

    async fn on_runtime<T: Send + 'static>(
        &self,
        fut: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    ) -> anyhow::Result<T> {
        self.spawn(fut)
            .context("the sandbox is shut down")?
            .await
            .context("sandbox task failed")?
    }

    async fn control(&self, c: Control) -> anyhow::Result<()> {
        let s = self.sandbox.clone();
        self.on_runtime(async move { s.control(c).await }).await
    }

    /// The kubeconfig (context `sandbox` unless named, the cluster namespace, bearer token).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kube client configured from the kubeconfig.
    pub async fn client(&self) -> anyhow::Result<kube::Client> {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config =
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// The cluster namespace.
    pub fn namespace(&self) -> &str {
        self.sandbox.namespace()
    }

    /// The StatefulSet name.
    pub fn name(&self) -> &str {
        &self.sandbox.fleet.options().name
    }

    /// The cluster folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `http(s)://127.0.0.1:PORT`.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The bearer token the kubeconfig carries.
    pub fn token(&self) -> &str {
        &self.sandbox.token
    }

    /// The CA certificate (PEM) when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Names of the pods that currently exist.
    pub fn pod_names(&self) -> Vec<String> {
        self.sandbox
            .fleet
            .pods()
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    /// Pids of the running server processes.
    pub fn server_pids(&self) -> Vec<u32> {
        self.sandbox
            .fleet
            .pods()
            .into_iter()
            .filter_map(|p| p.pid)
            .collect()
    }

    /// `http://IP:8200` of pod `ordinal` (stable across restarts); https
    /// with TLS listeners.
    pub fn pod_api_addr(&self, ordinal: u32) -> String {
        let scheme = self.sandbox.fleet.options().listener_scheme();
        self.sandbox
            .fleet
            .ip_of(ordinal)
            .map(|ip| format!("{scheme}://{ip}:{}", pod::API_PORT))
            .unwrap_or_default()
    }

    /// The CA file of the pods' TLS listeners (what `BAO_CACERT` names).
    pub fn listener_ca_path(&self) -> PathBuf {
        crate::listener_tls::ca_file(&self.dir, self.name())
    }

    /// The client certificate and key the pods' containers present, when
    /// their listeners require one.
    pub fn listener_client_cert(&self) -> Option<(PathBuf, PathBuf)> {
        let opts = self.sandbox.fleet.options();
        (opts.tls_listener && opts.listener_client_auth)
            .then(|| crate::listener_tls::client_files(&self.dir, self.name()))
    }

    /// A TLS client for the pods' listeners, the one the readiness probe
    /// uses: it trusts the listener CA and presents the client certificate
    /// where the listeners require one. `None` for plain-HTTP listeners.
    pub fn listener_connector(&self) -> Option<tokio_rustls::TlsConnector> {
        let opts = self.sandbox.fleet.options();
        if !opts.tls_listener {
            return None;
        }
        crate::listener_tls::probe_connector(opts.listener_client_auth)
    }

    /// Gives pod `ordinal`'s listener a certificate from a CA nobody
    /// trusts and makes its server reload it (SIGHUP), still unsealed. A
    /// later restart of the pod issues a trusted one again.
    pub fn serve_foreign_listener_cert(&self, ordinal: u32) -> anyhow::Result<()> {
        let opts = self.sandbox.fleet.options();
        let name = opts.pod_name(ordinal);
        let view = self
            .sandbox
            .fleet
            .pods()
            .into_iter()
            .find(|p| p.ordinal == ordinal)
            .ok_or_else(|| anyhow::anyhow!("no pod {name}"))?;
        let pid = view
            .pid
            .ok_or_else(|| anyhow::anyhow!("pod {name} runs no server"))?;
        let dir = self.sandbox.fleet.layout(&name).dir;
        crate::listener_tls::issue_from_foreign_ca(
            &dir,
            pod::listener_names(opts, &name),
            view.ip,
        )?;
        let pid = i32::try_from(pid)?;
        // SAFETY: kill(2) on a pid this sandbox started.
        if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
            anyhow::bail!("SIGHUP to {name}: {}", std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits until at least `n` pods exist with their servers listening.
    pub async fn wait_for_pods(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let s = self.sandbox.clone();
        self.on_runtime(async move { s.fleet.wait_for_pods(n, timeout).await })
            .await
    }

    /// SIGKILLs the pod's server and starts it again: sealed, restartCount+1.
    pub async fn restart_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        self.control(Control::RestartPod {
            pod: self.pod_name(ordinal),
        })
        .await
    }

    /// Restarts every pod.
    pub async fn restart_all(&self) -> anyhow::Result<()> {
        self.control(Control::RestartAll).await
    }

    /// Kills the pod, deletes its data and starts it again uninitialized.
    pub async fn wipe_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        self.control(Control::WipePod {
            pod: self.pod_name(ordinal),
        })
        .await
    }

    /// The pod disappears (process killed, object gone) until `scale`/`restore_pod`.
    pub async fn remove_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        self.control(Control::RemovePod {
            pod: self.pod_name(ordinal),
        })
        .await
    }

    /// A removed pod comes back with its data.
    pub async fn restore_pod(&self, ordinal: u32) -> anyhow::Result<()> {
        self.control(Control::RestorePod {
            pod: self.pod_name(ordinal),
        })
        .await
    }

    /// Sets spec.replicas.
    pub async fn scale(&self, replicas: u32) -> anyhow::Result<()> {
        self.control(Control::Scale { replicas }).await
    }

    /// What `helm upgrade` with new values does: see [`crate::fleet::Fleet::reconfigure`].
    /// Returns once the recreated pods were started (a server that cannot
    /// start is left crash-looping).
    pub async fn reconfigure(&self, change: crate::options::Reconfigure) -> anyhow::Result<()> {
        self.control(Control::Reconfigure(change)).await
    }

    /// The options as last reconfigured (storage, version, replicas).
    pub fn spec(&self) -> ClusterOptions {
        self.sandbox.fleet.spec()
    }

    /// The next `count` writes to Secret `secret` fail with `fault`.
    pub fn fail_secret_writes(&self, secret: &str, count: u32, fault: SecretFault) {
        self.sandbox.faults.fail_secret_writes(secret, count, fault);
    }

    /// The next `count` exec streams close before their status frame.
    pub fn drop_exec_streams(&self, count: u32) {
        self.sandbox.faults.drop_exec_streams(count);
    }

    /// Adds `d` to every API request.
    pub fn set_latency(&self, d: Duration) {
        self.sandbox.faults.set_latency(d);
    }

    /// Answers 403 to `verb` on `resource` (e.g. `("create", "pods/exec")`).
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.sandbox.faults.forbid(verb, resource);
    }

    /// Lifts every `forbid`.
    pub fn allow_all(&self) {
        self.sandbox.faults.allow_all();
    }

    /// `false`: answer `pods/portforward` WebSocket upgrades with 400, as an
    /// API server without WebSocket port-forward (before Kubernetes 1.30)
    /// does; kubectl's SPDY port-forward is not served here either way.
    pub fn serve_websocket_portforward(&self, serve: bool) {
        self.sandbox.faults.serve_websocket_portforward(serve);
    }

    /// How many port-forward upgrades were refused with 400.
    pub fn refused_portforwards(&self) -> u32 {
        self.sandbox.faults.refused_portforwards()
    }

    /// The key file of a `Seal::Static` cluster (the Secret every pod mounts).
    /// Replacing its bytes and restarting a pod makes that pod's seal refuse.
    pub fn static_seal_key_path(&self) -> PathBuf {
        crate::seal::key_file(&self.dir, self.name())
    }

    /// Stops the transit seal provider (`Seal::Transit`): pods that restart
    /// stay sealed until [`Self::seal_provider_up`].
    pub async fn seal_provider_down(&self) -> anyhow::Result<()> {
        self.control(Control::SealProvider { up: false }).await
    }

    /// Starts the transit seal provider again; returns once it is unsealed.
    pub async fn seal_provider_up(&self) -> anyhow::Result<()> {
        self.control(Control::SealProvider { up: true }).await
    }

    /// `http://<ip>:8200` of the transit seal provider, if there is one.
    pub fn seal_provider_address(&self) -> Option<String> {
        self.sandbox.fleet.seal_provider_address()
    }

    /// `<dir>/audit.jsonl`.
    pub fn audit_log_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Resolves when the `shutdown` control endpoint was called.
    pub async fn shutdown_requested(&self) {
        let mut rx = self.sandbox.shutdown.subscribe();
        let _ = rx.wait_for(|v| *v).await;
    }

    fn pod_name(&self, ordinal: u32) -> String {
        self.sandbox.fleet.options().pod_name(ordinal)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.sandbox.shutdown.send_replace(true);
        self.sandbox.fleet.shutdown();
        if let Some(rt) = self.runtime.0.take() {
            rt.shutdown_background();
        }
        if let Some(t) = self.temp.take() {
            let _ = t.close();
        }
    }
}
