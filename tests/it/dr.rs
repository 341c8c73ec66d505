//! `kubectl vault dr`: sandboxes named by context in one KUBECONFIG,
//! sharing a snapshot location.
//!
//! - `story`: three OpenBao sandboxes on a folder, the whole story on shared
//!   clusters (bad input, scoring by lag, a concurrent automatic failover,
//!   fencing, a planned failover, a hand-edited DR state, a crash at each
//!   failover step, `dr watch`).
//! - `s3`: the DR state's conditional writes in S3 (moto), and a Vault-shaped
//!   group on S3 with SOPS-encrypted credentials whose standby starts
//!   uninitialized.

mod s3;
mod story;

use crate::harness::{Env, Run};
use crate::snapshot::{init, Moto};
use kubectl_vault::ops::dr::state::StateStore;
use sandbox::ClusterOptions;
use std::path::{Path, PathBuf};

/// A DR group of sandboxes, its file and its snapshot location.
struct Group {
    names: Vec<&'static str>,
    envs: Vec<Env>,
    kubeconfig: String,
    config: PathBuf,
    location: SharedLocation,
    /// Variables every plugin run of the test gets (the S3 client's, an age key).
    vars: Vec<(String, String)>,
}

/// Where the group's snapshots and DR state live.
enum SharedLocation {
    Folder(tempfile::TempDir),
    S3 { moto: Moto, bucket: String },
}

impl SharedLocation {
    /// `spec.snapshots` of the group file.
    fn url(&self) -> String {
        match self {
            SharedLocation::Folder(dir) => format!("{}/", dir.path().display()),
            SharedLocation::S3 { bucket, .. } => format!("s3://{bucket}/prod/"),
        }
    }

    /// The DR state as stored, read by the test itself.
    async fn state(&self) -> serde_json::Value {
        match self {
            SharedLocation::Folder(dir) => {
                let text = std::fs::read(dir.path().join("dr-state.json")).expect("dr state");
                serde_json::from_slice(&text).unwrap()
            }
            SharedLocation::S3 { .. } => {
                let found = self.s3_store().load().await.expect("read the dr state");
                serde_json::to_value(found.expect("dr state").state).unwrap()
            }
        }
    }

    /// The claim of `epoch` (`None`: nobody took it).
    async fn claim(&self, epoch: u64) -> Option<serde_json::Value> {
        match self {
            SharedLocation::Folder(dir) => {
                let text = std::fs::read(dir.path().join(format!("dr-epochs/{epoch}.json")));
                text.ok().map(|t| serde_json::from_slice(&t).unwrap())
            }
            SharedLocation::S3 { .. } => self
                .s3_store()
                .read_claim(epoch)
                .await
                .expect("read a claim")
                .map(|c| serde_json::to_value(c).unwrap()),
        }
    }

    /// The plugin's own reader of the bucket (objects there need signed
    /// requests); the test process carries moto's variables for it.
    fn s3_store(&self) -> kubectl_vault::store::dr_state::SharedState {
        let SharedLocation::S3 { moto, .. } = self else {
            panic!("not on S3")
        };
        for (k, v) in moto.env() {
            // nextest runs each test in its own process: nothing else reads these.
            std::env::set_var(k, v);
        }
        let location = kubectl_vault::snapshot::location::Location::parse(&self.url()).unwrap();
        kubectl_vault::store::dr_state::SharedState::of(&location).unwrap()
    }
}

impl Group {
    fn env(&self, name: &str) -> &Env {
        &self.envs[self.names.iter().position(|n| *n == name).unwrap()]
    }

    /// The snapshot folder of a group on a folder.
    fn folder(&self) -> &Path {
        match &self.location {
            SharedLocation::Folder(dir) => dir.path(),
            SharedLocation::S3 { .. } => panic!("the group is on S3"),
        }
    }

    fn vars(&self) -> Vec<(&str, &str)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    async fn dr(&self, args: &[&str]) -> Run {
        self.dr_with(args, &[]).await
    }

    async fn dr_with(&self, args: &[&str], env: &[(&str, &str)]) -> Run {
        let mut all = vec!["dr"];
        all.extend_from_slice(args);
        let cfg = self.config.to_str().unwrap().to_owned();
        all.extend_from_slice(&["--config", &cfg, "--probe-timeout", "1s", "--probes", "3"]);
        let mut vars = vec![("KUBECONFIG", self.kubeconfig.as_str())];
        vars.extend(self.vars());
        vars.extend_from_slice(env);
        self.envs[0].plugin_bare(&all, &vars).await
    }

    /// `dr ARGS` killed at `failpoint` (a panic: exit 101, named in the
    /// output, so the kill is proven to have fired there).
    async fn dr_killed_at(&self, args: &[&str], failpoint: &str) -> Run {
        let crashed = self
            .dr_with(args, &[("FAILPOINTS", &format!("{failpoint}=panic"))])
            .await;
        assert_eq!(
            crashed.code, 101,
            "{failpoint} must kill the run: {crashed:?}"
        );
        assert!(crashed.stderr.contains(failpoint), "{crashed:?}");
        crashed
    }

    /// The checkpoint document an interrupted operation left on `member`.
    async fn checkpoint_of(&self, member: &str) -> String {
        let env = self.env(member);
        env.secret_data(
            &format!("{}-checkpoint", env.secret_name()),
            "checkpoint.json",
        )
        .await
        .unwrap_or_else(|| panic!("no checkpoint on {member}"))
    }

    /// Starts `dr watch` (interval 2 s, threshold 2) with its metrics on a
    /// free port, and waits (60 s) until they show `epoch`: the watcher is
    /// then probing. Returns the watcher and its metrics address.
    async fn start_watch(&self, epoch: f64) -> (tokio::process::Child, String) {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let cfg = self.config.to_str().unwrap().to_owned();
        let mut env = vec![("KUBECONFIG", self.kubeconfig.as_str())];
        env.extend(self.vars());
        let args = [
            "dr",
            "watch",
            "--config",
            &cfg,
            "--probe-timeout",
            "1s",
            "--probes",
            "3",
            "--interval",
            "2s",
            "--failure-threshold",
            "2",
            "--metrics-addr",
            &addr,
        ];
        let watcher = self.envs[0].spawn_bare(&args, &env);
        crate::metrics::scrape_until(&addr, "the watcher's metrics at this epoch", |m| {
            m.get("kubectl_vault_dr_epoch{}") == Some(&epoch)
        })
        .await;
        (watcher, addr)
    }

    /// Runs the plugin against one member, with the test's variables.
    async fn plugin(&self, name: &str, args: &[&str]) -> Run {
        self.env(name).plugin_with_env(args, &self.vars()).await
    }

    async fn state_at(&self) -> serde_json::Value {
        self.location.state().await
    }

    /// The DR state of a group on a folder.
    fn state(&self) -> serde_json::Value {
        let text = std::fs::read(self.folder().join("dr-state.json")).expect("dr state");
        serde_json::from_slice(&text).unwrap()
    }

    async fn save_snapshot(&self, from: &str) {
        let to = self.location.url();
        self.plugin(from, &["snapshot", "save", "--to", &to])
            .await
            .ok();
    }

    async fn sealed_pods(&self, name: &str) -> Vec<bool> {
        let env = self.env(name);
        let mut out = vec![];
        for i in 0..env.cluster.pod_names().len() as u32 {
            out.push(env.seal_status(i).await["sealed"] == true);
        }
        out
    }

    async fn annotation(&self, name: &str, key: &str) -> Option<String> {
        let env = self.env(name);
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(env.client().await, env.cluster.namespace());
        let s = api.get(&env.secret_name()).await.unwrap();
        s.metadata.annotations?.get(key).cloned()
    }
}

/// A DRGroup file: `clusters` as (name, context, role, statefulset).
fn group_file(location: &str, clusters: &[(&str, &str, &str, Option<&str>)]) -> String {
    let mut text = format!(
        "apiVersion: kubectl-vault.io/v1alpha1\nkind: DRGroup\nmetadata: {{name: prod}}\nspec:\n  snapshots: {location}\n  clusters:\n"
    );
    for (name, context, role, sts) in clusters {
        let sts = sts.map_or_else(String::new, |s| format!(", statefulset: {s}"));
        text.push_str(&format!(
            "  - {{name: {name}, context: {context}, namespace: vault, role: {role}{sts}}}\n"
        ));
    }
    text
}

/// Starts one sandbox per `(name, options)`, initializes those marked, and
/// writes the group file; the first is the primary.
async fn start(
    members: Vec<(&'static str, ClusterOptions, bool)>,
    location: SharedLocation,
    vars: Vec<(String, String)>,
) -> Group {
    let names: Vec<&'static str> = members.iter().map(|m| m.0).collect();
    let envs = futures::future::join_all(
        members
            .iter()
            .map(|(name, opts, _)| Env::start(opts.clone().name(*name).context(*name))),
    )
    .await;
    futures::future::join_all(
        members
            .iter()
            .zip(&envs)
            .filter(|((_, _, initialized), _)| *initialized)
            .map(|(_, env)| init(env)),
    )
    .await;
    let kubeconfig = std::env::join_paths(
        envs.iter()
            .map(|e| e.cluster.kubeconfig_path().to_path_buf()),
    )
    .unwrap()
    .into_string()
    .unwrap();
    let config = envs[0].home().join("dr.yaml");
    let clusters: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, *n, if i == 0 { "primary" } else { "standby" }, None))
        .collect();
    std::fs::write(&config, group_file(&location.url(), &clusters)).unwrap();
    Group {
        names,
        envs,
        kubeconfig,
        config,
        location,
        vars,
    }
}

fn refused(run: &Run, words: &[&str]) {
    assert_eq!(run.code, 1, "{run:?}");
    for w in words {
        assert!(run.stderr.contains(w), "{w:?} missing: {run:?}");
    }
}
