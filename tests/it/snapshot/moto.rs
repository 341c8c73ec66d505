//! A moto S3 server for the tests: on a loopback address of its own,
//! retried on another when it cannot listen, killed on drop, with the
//! environment the plugin's S3 client reads.

use super::conn::http;
use crate::harness::deps_bin;
use std::time::Duration;

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
