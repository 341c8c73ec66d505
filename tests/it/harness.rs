//! The shared test harness: a sandbox cluster per test, the real plugin
//! binary run against it, and checks on what a user would notice.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sandbox::{Cluster, ClusterOptions};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where `scripts/install-deps` puts the real tools.
pub fn deps_bin() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".deps/bin")
}

pub fn plugin_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kubectl-vault"))
}

/// What one plugin run produced.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(self) -> Self {
        assert_eq!(
            self.code, 0,
            "plugin failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }
}

/// One test's cluster plus everything the plugin printed, for the exposure check.
pub struct Env {
    pub cluster: Cluster,
    pub outputs: std::sync::Mutex<Vec<String>>,
    home: tempfile::TempDir,
}

/// Runs one plugin command for at most 300 s. A run that hangs is killed,
/// and the panic shows what it printed until then (a hang under load is
/// otherwise a timeout with nothing to go on).
async fn bounded(mut command: tokio::process::Command, args: &[&str]) -> std::process::Output {
    use tokio::io::AsyncReadExt;
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("run plugin");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let err = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf).await;
        buf
    });
    match tokio::time::timeout(Duration::from_secs(300), child.wait()).await {
        Ok(status) => std::process::Output {
            status: status.expect("wait for the plugin"),
            stdout: out.await.unwrap_or_default(),
            stderr: err.await.unwrap_or_default(),
        },
        Err(_) => {
            let _ = child.kill().await;
            // A child of the plugin may still hold the pipes: read what came.
            let drain = |task: tokio::task::JoinHandle<Vec<u8>>| async move {
                match tokio::time::timeout(Duration::from_secs(5), task).await {
                    Ok(Ok(buf)) => buf,
                    _ => b"(not closed)".to_vec(),
                }
            };
            let stdout = drain(out).await;
            let stderr = drain(err).await;
            panic!(
                "plugin run {args:?} timed out after 300 s\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        }
    }
}

impl Env {
    pub async fn start(mut opts: ClusterOptions) -> Env {
        // scripts/test runs the lifecycle, rotate and snapshot tests a second
        // time with `IT_LISTENER=tls`: every cluster's pods then serve their
        // API over TLS, as production listeners do.
        if std::env::var("IT_LISTENER").as_deref() == Ok("tls") {
            opts = opts.tls_listener(true);
        }
        let cluster = Cluster::start(opts).await.expect("start sandbox");
        Env {
            cluster,
            outputs: Default::default(),
            home: tempfile::tempdir().expect("tempdir"),
        }
    }

    /// The plugin's HOME and working folder.
    pub fn home(&self) -> &std::path::Path {
        self.home.path()
    }

    pub async fn client(&self) -> kube::Client {
        self.cluster.client().await.expect("client")
    }

    /// Runs the plugin with the cluster's kubeconfig and namespace.
    pub async fn plugin(&self, args: &[&str]) -> Run {
        self.plugin_with_env(args, &[]).await
    }

    pub async fn plugin_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = bounded(self.command(args, env), args).await;
        self.record(out)
    }

    /// Runs the plugin with only `args` and `env` (no --kubeconfig, no -n):
    /// for commands that reach several clusters through `KUBECONFIG` contexts.
    pub async fn plugin_bare(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let out = bounded(self.bare_command(args, env), args).await;
        self.record(out)
    }

    /// [`Self::plugin_bare`] in the background; finish with [`Self::finish_spawned`].
    pub fn spawn_bare(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
        let mut command = self.bare_command(args, env);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn().expect("spawn plugin")
    }

    fn bare_command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(plugin_binary());
        command
            .arg("--no-progress")
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("FAILPOINTS")
            .env("HOME", self.home.path())
            .current_dir(self.home.path());
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    /// The plugin with the cluster's kubeconfig and namespace, a clean
    /// environment plus `env`, and `args`.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(plugin_binary());
        command
            .arg("--kubeconfig")
            .arg(self.cluster.kubeconfig_path())
            .args(["-n", self.cluster.namespace(), "--no-progress"])
            .args(args)
            .env_remove("KUBECONFIG")
            .env_remove("FAILPOINTS")
            .env("HOME", self.home.path())
            .current_dir(self.home.path());
        for (k, v) in env {
            command.env(k, v);
        }
        command
    }

    /// Keeps what a run printed, for the exposure check.
    fn record(&self, out: std::process::Output) -> Run {
        let run = Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        self.outputs
            .lock()
            .unwrap()
            .push(format!("{}\n{}", run.stdout, run.stderr));
        run
    }

    /// Starts the plugin in the background (output piped); the caller waits
    /// for it or kills it, and passes what it printed to [`Self::record_output`].
    pub fn spawn_plugin(&self, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
        let mut command = self.command(args, env);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command.spawn().expect("spawn plugin")
    }

    /// How many `verb` requests on `resource` the API server answered so
    /// far, from its audit log.
    pub fn api_requests(&self, verb: &str, resource: &str) -> usize {
        self.audit_entries()
            .iter()
            .filter(|v| v["verb"] == verb && v["resource"] == resource)
            .count()
    }

    /// The API server's audit log so far, one JSON object per request.
    pub fn audit_entries(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.cluster.audit_log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the API server answered `count` `verb` requests on
    /// `resource`, as [`Self::api_requests`] counts them.
    pub async fn wait_for_api_requests(&self, verb: &str, resource: &str, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while self.api_requests(verb, resource) < count {
            assert!(
                std::time::Instant::now() < deadline,
                "the API server never saw {count} {verb} requests on {resource}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// [`Self::spawn_plugin`] whose stderr is read as it comes, so that a
    /// test waits for what the run reports instead of for a fixed time.
    pub fn spawn_watched(&self, args: &[&str], env: &[(&str, &str)]) -> Watched {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt};
        let mut child = self.spawn_plugin(args, env);
        let mut stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let seen = Arc::new(Mutex::new(String::new()));
        let out = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf).await;
            buf
        });
        let err = {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut seen = seen.lock().unwrap();
                    seen.push_str(&line);
                    seen.push('\n');
                }
            })
        };
        Watched {
            child,
            seen,
            out,
            err,
        }
    }

    /// Ends a [`Watched`] run (it must exit by itself or have been
    /// interrupted) and keeps its output, for the exposure check.
    pub async fn finish_watched(&self, mut watched: Watched) -> Run {
        let status = tokio::time::timeout(Duration::from_secs(300), watched.child.wait())
            .await
            .expect("plugin run timed out")
            .expect("wait for plugin");
        let stdout = watched.out.await.unwrap_or_default();
        let _ = watched.err.await;
        let stderr = watched.seen.lock().unwrap().clone().into_bytes();
        self.record(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Collects a spawned run's output, for the exposure check.
    pub async fn finish_spawned(&self, child: tokio::process::Child) -> Run {
        let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
            .await
            .expect("plugin run timed out")
            .expect("wait for plugin");
        self.record(out)
    }

    /// How many times a server was initialized, from the servers' own logs
    /// (one `security barrier initialized` line per `sys/init` that took).
    pub fn sys_inits(&self) -> usize {
        self.cluster
            .pod_names()
            .iter()
            .map(|name| {
                let log = self
                    .cluster
                    .dir()
                    .join("pods")
                    .join(name)
                    .join("server.log");
                std::fs::read_to_string(log)
                    .unwrap_or_default()
                    .matches("security barrier initialized")
                    .count()
            })
            .sum()
    }

    /// Runs the plugin with a failpoint that kills it (panic) at `name`.
    pub async fn plugin_crashing_at(&self, args: &[&str], failpoint: &str) -> Run {
        let spec = format!("{failpoint}=panic");
        self.plugin_with_env(args, &[("FAILPOINTS", &spec)]).await
    }

    pub fn secret_name(&self) -> String {
        format!("{}-unseal", self.cluster.name())
    }

    /// The stored credentials document, if any.
    pub async fn stored_credentials(&self) -> Option<serde_json::Value> {
        let api: Api<Secret> = Api::namespaced(self.client().await, self.cluster.namespace());
        let secret = api
            .get_opt(&self.secret_name())
            .await
            .expect("get secret")?;
        let bytes = secret.data.as_ref()?.get("credentials.json")?.0.clone();
        Some(serde_json::from_slice(&bytes).expect("credentials.json is JSON"))
    }

    pub async fn secret_exists(&self, name: &str) -> bool {
        let api: Api<Secret> = Api::namespaced(self.client().await, self.cluster.namespace());
        api.get_opt(name).await.expect("get secret").is_some()
    }

    /// Whether the final credentials Secret exists.
    pub async fn has_stored_credentials(&self) -> bool {
        self.secret_exists(&self.secret_name()).await
    }

    pub async fn checkpoint_exists(&self) -> bool {
        self.secret_exists(&format!("{}-checkpoint", self.secret_name()))
            .await
    }

    /// Runs the real `bao` CLI on this machine against pod `ordinal`'s listener,
    /// with the token in the environment (the test's own client, not the plugin).
    pub async fn bao(
        &self,
        ordinal: u32,
        token: Option<&str>,
        args: &[&str],
        stdin: Option<&str>,
    ) -> (i32, String) {
        use tokio::io::AsyncWriteExt;
        let mut command = tokio::process::Command::new(deps_bin().join("bao"));
        command
            .args(args)
            .env_clear()
            .env("BAO_ADDR", self.cluster.pod_api_addr(ordinal))
            .env("HOME", self.home.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            command.env("BAO_TOKEN", t);
        }
        let ca = self.cluster.listener_ca_path();
        if ca.exists() {
            command.env("BAO_CACERT", ca);
        }
        if let Some((cert, key)) = self.cluster.listener_client_cert() {
            command
                .env("BAO_CLIENT_CERT", cert)
                .env("BAO_CLIENT_KEY", key);
        }
        let mut child = command.spawn().expect("spawn bao");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(text.as_bytes()).await.expect("write stdin");
        }
        let out = child.wait_with_output().await.expect("bao output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// `bao status` of one pod. A server between states (restoring, electing)
    /// can answer an error instead of JSON for a moment: retried for up to 10 s.
    pub async fn seal_status(&self, ordinal: u32) -> serde_json::Value {
        let mut last = String::new();
        for _ in 0..40 {
            let (_, out) = self
                .bao(ordinal, None, &["status", "-format=json"], None)
                .await;
            match serde_json::from_str(&out) {
                Ok(v) => return v,
                Err(_) => last = out,
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("bao status on pod {ordinal} never answered JSON: {last}")
    }

    /// Enables a KV mount (once) and writes `value` at `kv/<key>` through the active pod.
    pub async fn write_kv(&self, token: &str, key: &str, value: &str) {
        let leader = self.active_ordinal().await;
        let _ = self
            .bao(
                leader,
                Some(token),
                &["secrets", "enable", "-path=kv", "kv"],
                None,
            )
            .await;
        let (code, out) = self
            .bao(
                leader,
                Some(token),
                &["kv", "put", &format!("kv/{key}"), &format!("value={value}")],
                None,
            )
            .await;
        assert_eq!(code, 0, "kv put failed: {out}");
    }

    pub async fn read_kv(&self, token: &str, key: &str) -> String {
        let leader = self.active_ordinal().await;
        let (code, out) = self
            .bao(
                leader,
                Some(token),
                &["kv", "get", "-field=value", &format!("kv/{key}")],
                None,
            )
            .await;
        assert_eq!(code, 0, "kv get failed: {out}");
        out.trim().to_owned()
    }

    /// The ordinal of the active node, waiting up to 60 s for one.
    pub async fn active_ordinal(&self) -> u32 {
        for _ in 0..240 {
            for (i, _) in self.cluster.pod_names().iter().enumerate() {
                let s = self.seal_status(i as u32).await;
                // The HA leader, or an unsealed standalone server (no HA, no leader).
                if s["sealed"] == false && (s["is_self"] == true || s["ha_enabled"] == false) {
                    return i as u32;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("no active node");
    }

    /// Every pod exists, is unsealed and the raft peer set holds them all.
    pub async fn assert_whole(&self, replicas: u32) {
        let creds = self.stored_credentials().await.expect("credentials stored");
        let token = creds["root_token"].as_str().expect("root token").to_owned();
        assert_eq!(self.cluster.pod_names().len() as u32, replicas, "pods");
        for i in 0..replicas {
            let s = self.seal_status(i).await;
            assert_eq!(s["initialized"], true, "pod {i} initialized: {s}");
            assert_eq!(s["sealed"], false, "pod {i} unsealed: {s}");
        }
        let leader = self.active_ordinal().await;
        let (code, out) = self
            .bao(
                leader,
                Some(&token),
                &["read", "-format=json", "sys/storage/raft/configuration"],
                None,
            )
            .await;
        assert_eq!(code, 0, "{out}");
        let v: serde_json::Value = serde_json::from_str(&out).expect("raft config json");
        let servers = v["data"]["config"]["servers"]
            .as_array()
            .expect("servers")
            .clone();
        for (i, name) in self.cluster.pod_names().iter().enumerate() {
            // By node id (setNodeId) or, for a generated one, by the pod's
            // IP or DNS name (cluster_dns).
            let ip = self
                .cluster
                .pod_api_addr(i as u32)
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches(":8200")
                .to_owned();
            assert!(
                servers.iter().any(|s| s["node_id"] == name.as_str()
                    || s["address"] == format!("{ip}:8201").as_str()
                    || s["address"]
                        == format!("{name}.{}-internal:8201", self.cluster.name()).as_str()),
                "{name} missing from raft peers: {servers:?}"
            );
        }
    }

    /// Restarts every pod (they come back sealed) and unseals them with the
    /// stored credentials through the plugin.
    pub async fn restart_all_and_unseal(&self) {
        self.restart_all_and_unseal_with(&[]).await;
    }

    /// [`Self::restart_all_and_unseal`] with extra plugin arguments (identities).
    pub async fn restart_all_and_unseal_with(&self, extra: &[&str]) {
        self.cluster.restart_all().await.expect("restart all");
        for i in 0..self.cluster.pod_names().len() as u32 {
            assert_eq!(
                self.seal_status(i).await["sealed"],
                true,
                "pod {i} sealed after restart"
            );
        }
        let mut args = vec!["unseal"];
        args.extend_from_slice(extra);
        self.plugin(&args).await.ok();
    }

    /// No share and no token of the stored credentials appears in the audit
    /// log (URLs, exec argv) or in anything the plugin printed.
    pub async fn assert_no_secret_exposed(&self) {
        let Some(creds) = self.stored_credentials().await else {
            return;
        };
        self.assert_no_secret_exposed_in(&creds).await;
    }

    /// The raw `data` value `key` of Secret `name`, as text.
    pub async fn secret_data(&self, name: &str, key: &str) -> Option<String> {
        let api: Api<Secret> = Api::namespaced(self.client().await, self.cluster.namespace());
        let secret = api.get_opt(name).await.expect("get secret")?;
        let bytes = secret.data.as_ref()?.get(key)?.0.clone();
        Some(String::from_utf8(bytes).expect("data is UTF-8"))
    }

    /// The stored credentials of a SOPS-encrypted Secret, decrypted by the
    /// real `sops` with the age key file `identity`.
    pub async fn stored_credentials_sops(&self, identity: &Path) -> Option<serde_json::Value> {
        let doc = self
            .secret_data(&self.secret_name(), "credentials.json")
            .await?;
        Some(sops_decrypt_json(&doc, identity))
    }

    /// [`Env::assert_no_secret_exposed`] for credentials the caller read (for
    /// an encrypted Secret, decrypted); an encrypted Secret or checkpoint must
    /// not hold them in plaintext either.
    pub async fn assert_no_secret_exposed_in(&self, creds: &serde_json::Value) {
        let mut secrets: Vec<String> = vec![creds["root_token"].as_str().unwrap().to_owned()];
        let keys = ["unseal_keys_b64", "recovery_keys_b64"]
            .iter()
            .filter_map(|field| creds[field].as_array())
            .flatten();
        for k in keys {
            let b64 = k.as_str().unwrap();
            // The hex form the init response also carries is as good as the share.
            let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b64)
                .expect("share is base64");
            secrets.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
            secrets.push(b64.to_owned());
        }
        let name = self.secret_name();
        let checkpoint = format!("{name}-checkpoint");
        for (object, key) in [
            (&name, "credentials.json"),
            (&checkpoint, "checkpoint.json"),
        ] {
            let Some(raw) = self.secret_data(object, key).await else {
                continue;
            };
            if serde_json::from_str::<serde_json::Value>(&raw)
                .is_ok_and(|v| v.get("sops").is_some())
            {
                for s in &secrets {
                    assert!(
                        !raw.contains(s.as_str()),
                        "a secret appears in plaintext in the encrypted Secret {object}"
                    );
                }
            }
        }
        let events: Api<k8s_openapi::api::core::v1::Event> =
            Api::namespaced(self.client().await, self.cluster.namespace());
        let events = serde_json::to_string(
            &events
                .list(&Default::default())
                .await
                .expect("events")
                .items,
        )
        .expect("events as JSON");
        for s in &secrets {
            assert!(!events.contains(s.as_str()), "a secret appears in an Event");
        }
        let audit = std::fs::read_to_string(self.cluster.audit_log_path()).expect("audit log");
        assert!(audit.contains("exec"), "audit log records exec requests");
        let outputs = self.outputs.lock().unwrap().join("\n");
        for s in &secrets {
            assert!(
                !audit.contains(s.as_str()),
                "a secret appears in the audit log"
            );
            assert!(
                !outputs.contains(s.as_str()),
                "a secret appears in the plugin's output"
            );
        }
    }
}

/// Decrypts a SOPS JSON document with the real `sops` and the age key file `identity`.
pub fn sops_decrypt_json(doc: &str, identity: &Path) -> serde_json::Value {
    use std::io::Write;
    let mut child = std::process::Command::new(deps_bin().join("sops"))
        .args([
            "-d",
            "--input-type",
            "json",
            "--output-type",
            "json",
            "/dev/stdin",
        ])
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", identity)
        .env_remove("SOPS_AGE_KEY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sops");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(doc.as_bytes())
        .expect("write sops stdin");
    let out = child.wait_with_output().expect("sops output");
    assert!(
        out.status.success(),
        "sops -d failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sops -d prints JSON")
}

/// A plugin run in the background, its stderr read line by line.
pub struct Watched {
    child: tokio::process::Child,
    seen: Arc<Mutex<String>>,
    out: tokio::task::JoinHandle<Vec<u8>>,
    err: tokio::task::JoinHandle<()>,
}

impl Watched {
    /// Waits until a stderr line contains `needle`; fails the test with
    /// what was printed when none did within `within`.
    pub async fn wait_for(&self, needle: &str, within: Duration) {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self
                .seen
                .lock()
                .unwrap()
                .lines()
                .any(|l| l.contains(needle))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no line with {needle:?} within {within:?}:\n{}",
                self.seen.lock().unwrap()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn interrupt(&self) {
        let pid = self.child.id().expect("the run is still going").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill");
        assert!(sent.success());
    }
}
