//! The Azure Blob and GCS emulators that `scripts/install-deps` installs
//! (Azurite from npm, fake-gcs-server from PyPI), each on a loopback
//! address of its own: start, buckets, the variables the plugin reads, and
//! the GCS JSON upload (the emulator refuses the XML one); and [`Store`],
//! one of them or moto's S3, as the cases in `object_stores.rs` use it.

use super::{http, Moto};
use crate::harness::{deps_bin, Env, Run};
use futures::TryStreamExt;
use kubectl_vault::snapshot::location::Location;
use object_store::{ObjectStore, ObjectStoreExt};
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

    /// Puts `data` as `object` in `bucket` through the GCS JSON upload API
    /// (`uploadType=media`).
    pub async fn upload_json(&self, bucket: &str, object: &str, data: &[u8]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        assert_eq!(self.kind, Kind::Gcs, "the JSON upload is GCS's");
        let head = format!(
            "POST /upload/storage/v1/b/{bucket}/o?uploadType=media&name={object} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.hostport(),
            data.len()
        );
        let mut conn = tokio::net::TcpStream::connect(self.hostport())
            .await
            .expect("connect the GCS emulator");
        conn.write_all(head.as_bytes()).await.expect("write");
        conn.write_all(data).await.expect("write");
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.expect("read");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "upload {object}: {answer}"
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

/// One object store under test.
pub enum Store {
    S3(Moto),
    Azure(Emulator),
    Gcs(Emulator),
}

impl Store {
    pub fn name(&self) -> &'static str {
        match self {
            Store::S3(_) => "S3",
            Store::Azure(_) => "Azure",
            Store::Gcs(_) => "GCS",
        }
    }

    pub fn url(&self, bucket: &str, prefix: &str) -> String {
        match self {
            Store::S3(_) => format!("s3://{bucket}/{prefix}"),
            Store::Azure(e) | Store::Gcs(e) => e.url(bucket, prefix),
        }
    }

    pub fn env(&self) -> Vec<(String, String)> {
        match self {
            Store::S3(m) => m.env(),
            Store::Azure(e) | Store::Gcs(e) => e.env(),
        }
    }

    pub async fn create_bucket(&self, bucket: &str) {
        match self {
            Store::S3(m) => m.create_bucket(bucket).await,
            Store::Azure(e) | Store::Gcs(e) => e.create_bucket(bucket).await,
        }
    }

    /// The plugin's client for `bucket/prefix`, configured from the
    /// variables [`Store::env`] set in this test process.
    pub fn location(&self, bucket: &str, prefix: &str) -> Location {
        Location::parse(&self.url(bucket, prefix)).expect("a bucket location")
    }

    /// Puts `data` as `prefix + name`: through the plugin's client on S3
    /// and Azure, through the JSON upload API on the GCS emulator (which
    /// refuses the XML PUT the client sends).
    pub async fn put(&self, bucket: &str, prefix: &str, name: &str, data: &[u8]) {
        match self {
            Store::Gcs(e) => {
                e.upload_json(bucket, &format!("{prefix}{name}"), data)
                    .await
            }
            _ => {
                let Location::Bucket { store, prefix, .. } = self.location(bucket, prefix) else {
                    unreachable!()
                };
                store
                    .put(&prefix.clone().join(name), data.to_vec().into())
                    .await
                    .unwrap_or_else(|e| panic!("{}: put {name}: {e}", self.name()));
            }
        }
    }

    /// Every object under `prefix` that a reader can see (committed ones).
    pub async fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let Location::Bucket { store, prefix, .. } = self.location(bucket, prefix) else {
            unreachable!()
        };
        let mut keys: Vec<String> = store
            .list(Some(&prefix))
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap_or_else(|e| panic!("{}: list: {e}", self.name()));
        keys.sort();
        keys
    }

    pub async fn plugin(&self, env: &Env, args: &[&str]) -> Run {
        let vars = self.env();
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.plugin_with_env(args, &pairs).await
    }

    pub async fn plugin_crashing_at(&self, env: &Env, args: &[&str], failpoint: &str) -> Run {
        let mut vars = self.env();
        vars.push(("FAILPOINTS".into(), failpoint.into()));
        let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        env.plugin_with_env(args, &pairs).await
    }
}
