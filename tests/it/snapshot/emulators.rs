//! The S3 cases against the Azure Blob and GCS emulators that
//! `scripts/install-deps` installs (Azurite from npm, fake-gcs-server from
//! PyPI): on Azurite save with retention, list and verify, restore, and
//! recover of a wiped cluster with 1,000 KV secrets read back; on the GCS
//! emulator list, verify and restore (see the test for why not save).

use super::{assert_secrets, http, init, root_token, write_secrets};
use crate::harness::{deps_bin, Env, Run};
use sandbox::ClusterOptions;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// An emulator process on a loopback address of its own, killed on drop.
pub struct Emulator {
    child: std::process::Child,
    host: std::net::Ipv4Addr,
    port: u16,
    kind: Kind,
    _data: tempfile::TempDir,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Gcs,
    Azure,
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Azurite's well-known development account.
const AZURITE_ACCOUNT: &str = "devstoreaccount1";
const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

impl Emulator {
    pub async fn start(kind: Kind) -> Emulator {
        let data = tempfile::tempdir().expect("emulator folder");
        let log = tempfile::NamedTempFile::new().expect("emulator log");
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
            let mut command = match kind {
                Kind::Gcs => {
                    let mut c = std::process::Command::new(deps_bin().join("fake-gcs-server"));
                    c.args([
                        "-scheme",
                        "http",
                        "-backend",
                        "memory",
                        "-log-level",
                        "warn",
                    ])
                    .args(["-host", &host.to_string(), "-port", &port.to_string()])
                    .arg("-external-url")
                    .arg(format!("http://{host}:{port}"))
                    .arg("-public-host")
                    .arg(format!("{host}:{port}"));
                    c
                }
                Kind::Azure => {
                    let mut c = std::process::Command::new(deps_bin().join("azurite-blob"));
                    c.args([
                        "--blobHost",
                        &host.to_string(),
                        "--blobPort",
                        &port.to_string(),
                    ])
                    .args([
                        "--inMemoryPersistence",
                        "--skipApiVersionCheck",
                        "--silent",
                    ]);
                    c
                }
            };
            let child = command
                .current_dir(data.path())
                .stdout(std::process::Stdio::null())
                .stderr(log.reopen().expect("log"))
                .spawn()
                .expect("start the emulator (run scripts/install-deps)");
            let mut emulator = Emulator {
                child,
                host,
                port,
                kind,
                _data: tempfile::tempdir().expect("tempdir"),
            };
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while std::time::Instant::now() < deadline {
                if emulator.child.try_wait().expect("status").is_some() {
                    break;
                }
                if tokio::net::TcpStream::connect((host, port)).await.is_ok() {
                    emulator._data = data;
                    return emulator;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = emulator.child.kill();
        }
        panic!(
            "the {kind:?} emulator did not listen; its output:\n{}",
            std::fs::read_to_string(log.path()).unwrap_or_default()
        );
    }

    fn hostport(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `gs://bucket/prefix/` or `az://container/prefix/`.
    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        match self.kind {
            Kind::Gcs => format!("gs://{bucket}/{prefix}"),
            Kind::Azure => format!("az://{bucket}/{prefix}"),
        }
    }

    pub async fn create_bucket(&self, bucket: &str) {
        match self.kind {
            Kind::Gcs => {
                let body = format!("{{\"name\":\"{bucket}\"}}");
                let (status, text) = http(
                    &self.hostport(),
                    "POST",
                    "/storage/v1/b?project=test",
                    None,
                    Some(&body),
                )
                .await;
                assert_eq!(status, 200, "create bucket {bucket}: {text}");
            }
            Kind::Azure => self.create_container(bucket).await,
        }
    }

    /// `PUT ?restype=container`, signed with the development account's
    /// SharedKey (Azurite accepts no anonymous writes).
    async fn create_container(&self, container: &str) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let date = jiff::Timestamp::now()
            .strftime("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let to_sign = format!(
            "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n/{AZURITE_ACCOUNT}/{AZURITE_ACCOUNT}/{container}\nrestype:container"
        );
        let key = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, AZURITE_KEY)
            .expect("key");
        let signature = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            hmac_sha256(&key, to_sign.as_bytes()),
        );
        let request = format!(
            "PUT /{AZURITE_ACCOUNT}/{container}?restype=container HTTP/1.1\r\nHost: {}\r\nx-ms-date: {date}\r\nx-ms-version: {version}\r\nAuthorization: SharedKey {AZURITE_ACCOUNT}:{signature}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.hostport()
        );
        let mut conn = tokio::net::TcpStream::connect(self.hostport())
            .await
            .expect("connect Azurite");
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 201"),
            "create container {container}: {answer}"
        );
    }

    /// The variables the plugin's client reads, as users set them.
    pub fn env(&self) -> Vec<(String, String)> {
        match self.kind {
            Kind::Gcs => vec![(
                "STORAGE_EMULATOR_HOST".into(),
                format!("http://{}", self.hostport()),
            )],
            Kind::Azure => vec![
                ("AZURE_STORAGE_USE_EMULATOR".into(), "true".into()),
                (
                    "AZURITE_BLOB_STORAGE_URL".into(),
                    format!("http://{}", self.hostport()),
                ),
            ],
        }
    }
}

fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

async fn plugin_on(env: &Env, emulator: &Emulator, args: &[&str]) -> Run {
    let vars = emulator.env();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    env.plugin_with_env(args, &pairs).await
}

fn names(listed: &serde_json::Value) -> Vec<String> {
    listed
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Save (with retention), list, verify, restore, then recover a wiped
/// cluster, all through one emulator.
async fn round_trip(kind: Kind) {
    let emulator = Emulator::start(kind).await;
    emulator.create_bucket("vault-snaps").await;
    emulator.create_bucket("empty").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(2)).await;
    init(&env).await;
    let token = root_token(&env).await;
    write_secrets(&env, &token, 1000, "v1").await;
    let creds_before = env.stored_credentials().await.unwrap();
    let to = emulator.url("vault-snaps", "prod/");

    // Three saves with --keep 2: exactly two stay, the newest first.
    let mut saved = Vec::new();
    for _ in 0..3 {
        let out = plugin_on(
            &env,
            &emulator,
            &["snapshot", "save", "--to", &to, "--keep", "2", "-o", "json"],
        )
        .await
        .ok()
        .json();
        assert!(out["manifest"]["size"].as_u64().unwrap() > 1024, "{out}");
        saved.push(out["manifest"]["snapshot"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let listed = plugin_on(
        &env,
        &emulator,
        &["snapshot", "list", "--from", &to, "--verify", "-o", "json"],
    )
    .await
    .ok()
    .json();
    assert_eq!(
        names(&listed),
        [saved[2].clone(), saved[1].clone()],
        "{listed}"
    );
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["status"] == "verified"),
        "{listed}"
    );
    plugin_on(
        &env,
        &emulator,
        &["snapshot", "verify", "--from", &to, "--snapshot", &saved[1]],
    )
    .await
    .ok();
    // Restore into the running cluster after more writes.
    env.write_kv(&token, "probe", "after").await;
    plugin_on(
        &env,
        &emulator,
        &["snapshot", "restore", "--from", &to, "--yes"],
    )
    .await
    .ok();
    assert_eq!(env.read_kv(&token, "probe").await, "v1");

    // Nothing to recover from: recover stops and initializes nothing.
    for i in 0..2 {
        env.cluster.wipe_pod(i).await.unwrap();
    }
    let empty = emulator.url("empty", "");
    let none = plugin_on(&env, &emulator, &["recover", "--from", &empty, "--yes"]).await;
    assert_eq!(none.code, 1, "{none:?}");
    assert!(none.stderr.contains("initialized nothing"), "{none:?}");
    assert_eq!(env.seal_status(0).await["initialized"], false);

    let recovered = plugin_on(&env, &emulator, &["recover", "--from", &to, "--yes"])
        .await
        .ok();
    assert!(recovered.stdout.contains("generation 1"), "{recovered:?}");
    env.assert_whole(2).await;
    assert_secrets(&env, &token, 1000, "v1").await;
    assert_eq!(env.stored_credentials().await.unwrap(), creds_before);
    assert!(!env.checkpoint_exists().await);
    env.assert_no_secret_exposed().await;
}

/// fake-gcs-server (the build the PyPI wheel bundles) answers the XML-API
/// object PUT and multipart upload that `object_store`'s GCS client sends
/// with 400 "invalid uploadType", so a save cannot be proven against it.
/// What is proven: the gs:// client configured from STORAGE_EMULATOR_HOST
/// lists, verifies and restores snapshots put into the bucket through the
/// emulator's JSON upload API.
#[tokio::test]
async fn gcs_emulator_lists_verifies_and_restores() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let emulator = Emulator::start(Kind::Gcs).await;
    emulator.create_bucket("vault-snaps").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    init(&env).await;
    let token = root_token(&env).await;
    env.write_kv(&token, "probe", "saved").await;
    let dir = tempfile::tempdir().unwrap();
    env.plugin(&[
        "snapshot",
        "save",
        "--to",
        &format!("{}/", dir.path().display()),
    ])
    .await
    .ok();
    env.write_kv(&token, "probe", "after").await;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&path).unwrap();
        let head = format!(
            "POST /upload/storage/v1/b/vault-snaps/o?uploadType=media&name=prod/{name} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            emulator.hostport(),
            body.len()
        );
        let mut conn = tokio::net::TcpStream::connect(emulator.hostport())
            .await
            .unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        conn.write_all(&body).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "upload {name}: {answer}"
        );
    }
    let from = emulator.url("vault-snaps", "prod/");
    let listed = plugin_on(
        &env,
        &emulator,
        &[
            "snapshot", "list", "--from", &from, "--verify", "-o", "json",
        ],
    )
    .await
    .ok()
    .json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["status"], "verified", "{listed}");
    plugin_on(&env, &emulator, &["snapshot", "verify", "--from", &from])
        .await
        .ok();
    plugin_on(
        &env,
        &emulator,
        &["snapshot", "restore", "--from", &from, "--yes"],
    )
    .await
    .ok();
    assert_eq!(env.read_kv(&token, "probe").await, "saved");
    env.assert_no_secret_exposed().await;
}

#[tokio::test]
async fn round_trip_through_azurite() {
    round_trip(Kind::Azure).await;
}
