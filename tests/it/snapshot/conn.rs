//! An HTTP/1.1 client for Vault's API (over TLS to a TLS listener) and the emulators: one request
//! on a fresh connection, or many on one keep-alive connection (1,000 KV
//! writes without 1,000 processes).

use crate::harness::Env;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// One HTTP/1.1 request on a fresh connection; returns status and body.
pub(super) async fn http(
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
pub(super) struct Conn {
    stream: BufReader<Box<dyn Io>>,
    host: String,
}

impl Conn {
    /// A plain-HTTP connection to `hostport`.
    pub(super) async fn open(hostport: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(hostport)
            .await
            .unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
        Conn {
            stream: BufReader::new(Box::new(stream)),
            host: hostport.to_owned(),
        }
    }

    /// A connection to the listener of pod `ordinal`, over TLS (the
    /// sandbox's own listener client) when the listener serves TLS.
    pub(super) async fn to_pod(env: &Env, ordinal: u32) -> Conn {
        let addr = env.cluster.pod_api_addr(ordinal);
        let hostport = hostport(&addr);
        let Some(connector) = env.cluster.listener_connector() else {
            return Conn::open(&hostport).await;
        };
        let host = hostport.rsplit_once(':').map_or(&*hostport, |(h, _)| h);
        let name = rustls::pki_types::ServerName::try_from(host.to_owned()).expect("server name");
        let tcp = tokio::net::TcpStream::connect(&hostport)
            .await
            .unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
        let tls = connector
            .connect(name, tcp)
            .await
            .unwrap_or_else(|e| panic!("TLS to {hostport}: {e}"));
        Conn {
            stream: BufReader::new(Box::new(tls)),
            host: hostport.clone(),
        }
    }

    pub(super) async fn request(
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

pub(super) fn hostport(addr: &str) -> String {
    addr.trim_start_matches("http://")
        .trim_start_matches("https://")
        .to_owned()
}
