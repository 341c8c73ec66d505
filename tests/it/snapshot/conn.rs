//! A plain HTTP/1.1 client for Vault's API and the emulators: one request
//! on a fresh connection, or many on one keep-alive connection (1,000 KV
//! writes without 1,000 processes).

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

/// A keep-alive HTTP/1.1 connection: 1,000 KV writes without 1,000 processes.
pub(super) struct Conn {
    stream: BufReader<tokio::net::TcpStream>,
    host: String,
}

impl Conn {
    pub(super) async fn open(hostport: &str) -> Conn {
        let stream = tokio::net::TcpStream::connect(hostport)
            .await
            .unwrap_or_else(|e| panic!("connect {hostport}: {e}"));
        Conn {
            stream: BufReader::new(stream),
            host: hostport.to_owned(),
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
    addr.trim_start_matches("http://").to_owned()
}
