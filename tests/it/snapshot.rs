//! Raft snapshots and recovery against real OpenBao pods: save to a folder
//! and to a real S3-compatible server (moto), wipe every pod, `recover`;
//! restore into another cluster; crash matrices over restore and recover;
//! guards; retention. The bucket cases on S3, Azure and GCS together are in
//! `object_stores.rs`.

mod emulators;
mod guards;
mod keyring;
mod keys;
mod object_stores;
pub(crate) mod restore_test;

use crate::harness::{deps_bin, Env, Run};
use sandbox::ClusterOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// A moto S3 server on a free loopback port, killed on drop.
pub struct Moto {
    child: std::process::Child,
    host: std::net::Ipv4Addr,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto on a random loopback address of its own, so that no other
    /// process of a parallel test can hold its port, and waits until it
    /// answers. moto is a Python server: on a loaded machine it takes many
    /// seconds to import, so the deadline is generous, and a server that
    /// exits (its address was taken after all) is retried on another one.
    pub async fn start() -> Moto {
        let log = tempfile::NamedTempFile::new().expect("moto log");
        for _attempt in 0..5 {
            let host = std::net::Ipv4Addr::new(
                127,
                rand::random_range(8..64),
                rand::random(),
                rand::random_range(1..255),
            );
            let Ok(listener) = std::net::TcpListener::bind((host, 0)) else {
                continue;
            };
            let port = listener.local_addr().expect("local addr").port();
            drop(listener);
            let child = std::process::Command::new(deps_bin().join("moto_server"))
                .args(["-H", &host.to_string(), "-p", &port.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(log.reopen().expect("moto log"))
                .spawn()
                .expect("start moto_server (run scripts/install-deps)");
            let mut moto = Moto { child, host, port };
            let deadline = std::time::Instant::now() + Duration::from_secs(90);
            while std::time::Instant::now() < deadline {
                if moto.child.try_wait().expect("moto status").is_some() {
                    break;
                }
                if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
                    return moto;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = moto.child.kill();
        }
        panic!(
            "moto_server did not listen; its output:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
    }

    /// `host:port` of the server.
    pub fn hostport(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub async fn create_bucket(&self, bucket: &str) {
        let (status, _) = http(&self.hostport(), "PUT", &format!("/{bucket}"), None, None).await;
        assert_eq!(status, 200, "create bucket {bucket}");
    }

    /// The variables the plugin's S3 client reads.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            (
                "AWS_ENDPOINT_URL".into(),
                format!("http://{}", self.hostport()),
            ),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            ("AWS_REGION".into(), "us-east-1".into()),
        ]
    }
}

/// One HTTP/1.1 request on a fresh connection; returns status and body.
async fn http(
    hostport: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut conn = Conn::open(hostport).await;
    conn.request(method, path, token, body).await
}

/// What a [`Conn`] reads and writes: TCP, or TLS over it.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A keep-alive HTTP/1.1 connection: 1,000 KV writes without 1,000 processes.
struct Conn {
    stream: BufReader<Box<dyn Io>>,
    host: String,
}

impl Conn {
    /// A plain-HTTP connection to `hostport`.
    async fn open(hostport: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(hostport)
            .await
            .unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
        Conn {
            stream: BufReader::new(Box::new(stream)),
            host: hostport.to_owned(),
        }
    }

    /// A connection to the listener of pod `ordinal`, over TLS checked
    /// against the sandbox's listener CA when the listener serves TLS.
    async fn to_pod(env: &Env, ordinal: u32) -> Conn {
        let addr = env.cluster.pod_api_addr(ordinal);
        let Some(hostport) = addr.strip_prefix("https://") else {
            return Conn::open(&hostport(&addr)).await;
        };
        use rustls::pki_types::pem::PemObject;
        let ca = std::fs::read(env.cluster.listener_ca_path()).expect("listener CA");
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert.expect("CA PEM")).expect("CA");
        }
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        let host = hostport.rsplit_once(':').map_or(hostport, |(h, _)| h);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("server name");
        let tcp = tokio::net::TcpStream::connect(hostport)
            .await
            .unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
        let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS to {hostport}: {e}"));
        Conn {
            stream: BufReader::new(Box::new(tls)),
            host: hostport.to_owned(),
        }
    }

    async fn request(
        &mut self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, String) {
        let body = body.unwrap_or("");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.host,
            body.len()
        );
        if let Some(t) = token {
            head.push_str(&format!("X-Vault-Token: {t}\r\n"));
        }
        head.push_str("\r\n");
        let s = self.stream.get_mut();
        s.write_all(head.as_bytes()).await.expect("write head");
        s.write_all(body.as_bytes()).await.expect("write body");
        let mut status_line = String::new();
        self.stream
            .read_line(&mut status_line)
            .await
            .expect("status line");
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut length = 0usize;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            self.stream.read_line(&mut line).await.expect("header");
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.stream.read_line(&mut size).await.expect("chunk size");
                let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
                let mut chunk = vec![0u8; n + 2];
                self.stream.read_exact(&mut chunk).await.expect("chunk");
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..n]);
            }
        } else {
            out.resize(length, 0);
            self.stream.read_exact(&mut out).await.expect("body");
        }
        (status, String::from_utf8_lossy(&out).into_owned())
    }
}

fn hostport(addr: &str) -> String {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}

/// Writes `kv/s-0..n` (KV v1) through the active pod on one connection.
pub(crate) async fn write_secrets(env: &Env, token: &str, n: usize, tag: &str) {
    env.write_kv(token, "probe", tag).await;
    let leader = env.active_ordinal().await;
    let mut conn = Conn::to_pod(env, leader).await;
    for i in 0..n {
        let body = format!("{{\"value\":\"{tag}-{i}\"}}");
        let (status, text) = conn
            .request("POST", &format!("/v1/kv/s-{i}"), Some(token), Some(&body))
            .await;
        assert!(
            status == 204 || status == 200,
            "write s-{i}: {status} {text}"
        );
    }
}

/// Reads `kv/s-0..n` back and checks every value.
pub(crate) async fn assert_secrets(env: &Env, token: &str, n: usize, tag: &str) {
    let leader = env.active_ordinal().await;
    let mut conn = Conn::to_pod(env, leader).await;
    for i in 0..n {
        let (status, text) = conn
            .request("GET", &format!("/v1/kv/s-{i}"), Some(token), None)
            .await;
        assert_eq!(status, 200, "read s-{i}: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).expect("kv json");
        assert_eq!(v["data"]["value"], format!("{tag}-{i}"), "s-{i}");
    }
}

/// Every pod reads through the restored keyring: `sys/leader` (served from
/// the pod's own storage) and a KV read with `token`, each through that pod.
async fn assert_every_pod_reads(env: &Env, token: &str, key: &str, want: &str) {
    for i in 0..env.cluster.pod_names().len() as u32 {
        let (code, out) = env
            .bao(i, None, &["read", "-format=json", "sys/leader"], None)
            .await;
        assert_eq!(code, 0, "pod {i} sys/leader: {out}");
        let (code, out) = env
            .bao(
                i,
                Some(token),
                &["kv", "get", "-field=value", &format!("kv/{key}")],
                None,
            )
            .await;
        assert_eq!(code, 0, "pod {i} kv get: {out}");
        assert_eq!(out.trim(), want, "pod {i}");
    }
}

pub(crate) async fn root_token(env: &Env) -> String {
    env.stored_credentials().await.expect("credentials")["root_token"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) async fn init(env: &Env) {
    env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
        .await
        .ok();
}

async fn plugin_s3(env: &Env, moto: &Moto, args: &[&str]) -> Run {
    let vars = moto.env();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.plugin_with_env(args, &pairs).await
}

pub(crate) fn snapshots_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "snap"));
    v.sort();
    v
}

#[tokio::test]
async fn round_trip_to_a_folder_and_s3_then_recover_after_every_pod_was_wiped() {
    let moto = Moto::start().await;
    moto.create_bucket("vault-snaps").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    init(&env).await;
    let token = root_token(&env).await;
    write_secrets(&env, &token, 1000, "v1").await;
    let creds_before = env.stored_credentials().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let to_dir = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to_dir])
        .await
        .ok();
    let saved = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "save",
            "--to",
            "s3://vault-snaps/prod/",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(saved["manifest"]["generation"], 1, "{saved}");
    assert!(
        saved["manifest"]["size"].as_u64().unwrap() > 1024,
        "{saved}"
    );
    assert!(
        saved["manifest"]["raft_committed_index"].as_u64().is_some(),
        "{saved}"
    );
    assert_eq!(snapshots_in(dir.path()).len(), 1);

    // Both copies list as verified.
    let listed = env
        .plugin(&[
            "snapshot", "list", "--from", &to_dir, "--verify", "-o", "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(listed[0]["status"], "verified", "{listed}");
    let listed = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "list",
            "--from",
            "s3://vault-snaps/prod/",
            "--verify",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["status"], "verified", "{listed}");
    assert_eq!(listed[0]["manifest"]["sha256"], saved["manifest"]["sha256"]);

    // Every pod loses its data; init refuses and points to recover.
    for i in 0..3 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    let refused = env.plugin(&["init", "--yes"]).await;
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("kubectl vault recover"),
        "{refused:?}"
    );

    let recovered = plugin_s3(
        &env,
        &moto,
        &["recover", "--from", "s3://vault-snaps/prod/", "--yes"],
    )
    .await
    .ok();
    assert!(recovered.stdout.contains("generation 1"), "{recovered:?}");
    env.assert_whole(3).await;
    assert_secrets(&env, &token, 1000, "v1").await;
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        creds_before,
        "credentials untouched"
    );
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn restore_into_a_second_cluster_unseals_with_the_source_credentials() {
    let source = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(1)
            .name("source"),
    )
    .await;
    init(&source).await;
    let token = root_token(&source).await;
    write_secrets(&source, &token, 50, "src").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("source.snap");
    source
        .plugin(&["snapshot", "save", "--to", file.to_str().unwrap()])
        .await
        .ok();
    let exported = dir.path().join("source-credentials.yaml");
    source
        .plugin(&[
            "credentials",
            "export",
            "--plaintext",
            "-f",
            exported.to_str().unwrap(),
        ])
        .await
        .ok();

    let target = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(3)
            .name("target"),
    )
    .await;
    init(&target).await;
    let target_creds = target.stored_credentials().await.unwrap();
    let out = target
        .plugin(&[
            "snapshot",
            "restore",
            "--from",
            file.to_str().unwrap(),
            "--credentials",
            exported.to_str().unwrap(),
            "--yes",
        ])
        .await
        .ok();
    // Shows in the test log whether a pod needed the keyring remedy.
    eprintln!("restore said: {}", out.stdout);
    assert!(out.stdout.contains("(forced)"), "{out:?}");
    assert!(out.stdout.contains("--credentials"), "{out:?}");
    // Item 11: the restore ends with every pod reading through the restored
    // keyring, standbys included, right away (no restart by the test).
    assert_every_pod_reads(&target, &token, "probe", "src").await;
    target.assert_whole(3).await;
    assert_secrets(&target, &token, 50, "src").await;
    let now = target.stored_credentials().await.unwrap();
    assert_ne!(now["root_token"], target_creds["root_token"]);
    assert_eq!(now["root_token"], token.as_str());
    // Item 4: the replaced credentials of the target moved into the history.
    let kept = now["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|g| g["root_token"] == target_creds["root_token"])
        .unwrap_or_else(|| panic!("the target's credentials are kept: {now}"));
    assert_eq!(kept["unseal_keys_b64"], target_creds["unseal_keys_b64"]);
    // The stored credentials unseal the restored data after a restart.
    target.restart_all_and_unseal().await;
    target.assert_whole(3).await;
    target.assert_no_secret_exposed().await;
}

/// Guards: each refusal changes nothing.
#[tokio::test]
async fn guards_refuse_bad_snapshots_and_recover_without_one_never_inits() {
    let moto = Moto::start().await;
    moto.create_bucket("empty").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    init(&env).await;
    let token = root_token(&env).await;
    env.write_kv(&token, "probe", "before").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.snap");
    env.plugin(&["snapshot", "save", "--to", good.to_str().unwrap()])
        .await
        .ok();
    env.write_kv(&token, "probe", "after").await;
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("good.snap.json")).unwrap()).unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let variant = |name: &str, data: &[u8], manifest: &serde_json::Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let mut m = manifest.clone();
        m["snapshot"] = name.into();
        std::fs::write(dir.path().join(format!("{name}.json")), m.to_string()).unwrap();
        path
    };
    let truncated = variant("truncated.snap", &bytes[..bytes.len() / 2], &manifest);
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let corrupt = variant("corrupt.snap", &flipped, &manifest);
    let mut newer = manifest.clone();
    newer["generation"] = 7.into();
    let newer = variant("newer.snap", &bytes, &newer);

    for (path, words) in [
        (&truncated, "truncated"),
        (&corrupt, "sha256"),
        (&newer, "newer than any stored"),
    ] {
        let run = env
            .plugin(&[
                "snapshot",
                "restore",
                "--from",
                path.to_str().unwrap(),
                "--yes",
            ])
            .await;
        assert_eq!(run.code, 1, "{}: {run:?}", path.display());
        assert!(run.stderr.contains(words), "{}: {run:?}", path.display());
        assert!(run.stderr.contains("nothing was changed"), "{run:?}");
    }
    let verify = env
        .plugin(&["snapshot", "verify", "--from", corrupt.to_str().unwrap()])
        .await;
    assert_eq!(verify.code, 1, "{verify:?}");
    // Nothing changed: the newest write is still there, no checkpoint.
    assert_eq!(env.read_kv(&token, "probe").await, "after");
    assert!(!env.checkpoint_exists().await);

    // Empty bucket, then no snapshot at all: recover stops and does not init.
    let creds = env.stored_credentials().await.unwrap();
    env.cluster.wipe_pod(0).await.unwrap();
    let run = plugin_s3(&env, &moto, &["recover", "--from", "s3://empty/", "--yes"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("initialized nothing"), "{run:?}");
    let empty = tempfile::tempdir().unwrap();
    let run = env
        .plugin(&[
            "recover",
            "--from",
            &format!("{}/", empty.path().display()),
            "--yes",
        ])
        .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(env.seal_status(0).await["initialized"], false);
    assert_eq!(env.stored_credentials().await.unwrap(), creds);
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn retention_keeps_exactly_n_in_the_bucket_and_the_newest_verified() {
    let moto = Moto::start().await;
    moto.create_bucket("keep").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    init(&env).await;
    for _ in 0..4 {
        plugin_s3(
            &env,
            &moto,
            &[
                "snapshot",
                "save",
                "--to",
                "s3://keep/daily/",
                "--keep",
                "2",
            ],
        )
        .await
        .ok();
        // Names carry the second they were taken.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let listed = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "list",
            "--from",
            "s3://keep/daily/",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    let newest = names[0].to_owned();

    // A local folder with retention: exactly N there as well.
    let dir = tempfile::tempdir().unwrap();
    let to = format!("file://{}/", dir.path().display());
    for _ in 0..3 {
        env.plugin(&["snapshot", "save", "--to", &to, "--keep", "1"])
            .await
            .ok();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(snapshots_in(dir.path()).len(), 1);

    // --max-age 0s would delete everything, but never the newest verified.
    plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "save",
            "--to",
            "s3://keep/daily/",
            "--max-age",
            "0s",
        ],
    )
    .await
    .ok();
    let listed = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "list",
            "--from",
            "s3://keep/daily/",
            "--verify",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let left = listed.as_array().unwrap();
    assert_eq!(left.len(), 1, "{listed}");
    assert_ne!(left[0]["name"], newest.as_str());
    assert_eq!(left[0]["status"], "verified");
}

/// Saves, writes more, restores crashing at `failpoint`, re-runs: the data is
/// the snapshot's and the credentials are unchanged.
async fn crash_restore_at(failpoint: &str) {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(2)).await;
    init(&env).await;
    let token = root_token(&env).await;
    env.write_kv(&token, "probe", "before").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("s.snap");
    env.plugin(&["snapshot", "save", "--to", file.to_str().unwrap()])
        .await
        .ok();
    env.write_kv(&token, "probe", "after").await;
    let creds = env.stored_credentials().await.unwrap();
    let args = [
        "snapshot",
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--yes",
    ];
    let crashed = env.plugin_crashing_at(&args, failpoint).await;
    assert_ne!(
        crashed.code, 0,
        "{failpoint} must stop the run: {crashed:?}"
    );
    let status = env.plugin(&["status", "-o", "json"]).await.ok().json();
    if env.checkpoint_exists().await {
        // The resume command names the snapshot, and runs as printed.
        let resume = status["credentials"]["checkpoint"]["resume_command"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            resume,
            format!("kubectl vault snapshot restore --from {}", file.display()),
            "{status}"
        );
        let mut printed: Vec<&str> = resume.split_whitespace().skip(2).collect();
        printed.push("--yes");
        env.plugin(&printed).await.ok();
    } else {
        env.plugin(&args).await.ok();
    }
    env.assert_whole(2).await;
    assert_eq!(env.read_kv(&token, "probe").await, "before");
    assert_eq!(env.stored_credentials().await.unwrap(), creds);
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

/// Wipes every pod, recovers crashing at `failpoint`, re-runs.
async fn crash_recover_at(failpoint: &str) {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(2)).await;
    init(&env).await;
    let token = root_token(&env).await;
    write_secrets(&env, &token, 20, failpoint).await;
    let dir = tempfile::tempdir().unwrap();
    let to = format!("{}/", dir.path().display());
    env.plugin(&["snapshot", "save", "--to", &to]).await.ok();
    let creds = env.stored_credentials().await.unwrap();
    for i in 0..2 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    let args = ["recover", "--from", to.as_str(), "--yes"];
    let crashed = env.plugin_crashing_at(&args, failpoint).await;
    assert_ne!(
        crashed.code, 0,
        "{failpoint} must stop the run: {crashed:?}"
    );
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        creds,
        "credentials untouched by the crash"
    );
    // init must not take over a half-done recover.
    let init = env.plugin(&["init", "--yes"]).await;
    assert_eq!(init.code, 1, "{init:?}");
    assert!(init.stderr.contains("kubectl vault recover"), "{init:?}");
    env.plugin(&args).await.ok();
    env.assert_whole(2).await;
    assert_secrets(&env, &token, 20, failpoint).await;
    assert_eq!(env.stored_credentials().await.unwrap(), creds);
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

macro_rules! crash_cases {
    ($run:ident: $($name:ident: $failpoint:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            $run($failpoint).await;
        }
    )*};
}

crash_cases! { crash_restore_at:
    restore_crash_after_pending_checkpoint: "restore::after_pending_checkpoint";
    restore_crash_after_apply: "restore::after_apply";
    restore_crash_after_applied_checkpoint: "restore::after_applied_checkpoint";
    restore_crash_after_unseal: "restore::after_unseal";
}

crash_cases! { crash_recover_at:
    recover_crash_after_preflight: "recover::after_preflight";
    recover_crash_after_temp_init: "recover::after_temp_init";
    recover_crash_after_temp_checkpoint: "recover::after_temp_checkpoint";
    recover_crash_after_temp_leader: "recover::after_temp_leader";
    recover_crash_after_restore: "recover::after_restore";
    recover_crash_after_applied_checkpoint: "recover::after_applied_checkpoint";
    recover_crash_after_reconcile: "recover::after_reconcile";
}
