//! A pod's health: the last answer of `GET /v1/sys/health`, the probe that
//! asks it (plain or TLS), and the charts' readiness rule.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::API_PORT;

/// A connection to a listener, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// The last answer of `GET /v1/sys/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Not probed since the last (re)start.
    Unknown,
    /// No HTTP answer.
    Unreachable,
    /// The HTTP status: 200 active, 429 standby, 501 uninitialized, 503 sealed.
    Code(u16),
}

impl Health {
    /// The chart's readiness rule: initialized, unsealed, active or standby.
    pub fn is_ready(self) -> bool {
        matches!(self, Health::Code(200) | Health::Code(429))
    }

    /// `GET /v1/sys/health` over a raw HTTP/1.1 connection with short timeouts.
    pub async fn probe(ip: Ipv4Addr, tls: bool, client_auth: bool) -> Health {
        let probe = async {
            let tcp = tokio::net::TcpStream::connect((ip, API_PORT)).await.ok()?;
            let mut s: Box<dyn Stream> = if tls {
                let connector = crate::listener_tls::probe_connector(client_auth)?;
                let name =
                    rustls::pki_types::ServerName::IpAddress(std::net::IpAddr::V4(ip).into());
                Box::new(connector.connect(name, tcp).await.ok()?)
            } else {
                Box::new(tcp)
            };
            let req = format!(
                "GET /v1/sys/health HTTP/1.1\r\nHost: {ip}:{API_PORT}\r\nConnection: close\r\n\r\n"
            );
            s.write_all(req.as_bytes()).await.ok()?;
            let mut buf = Vec::with_capacity(64);
            let mut chunk = [0u8; 64];
            while buf.len() < 12 {
                let n = s.read(&mut chunk).await.ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let head = String::from_utf8_lossy(&buf);
            head.split_whitespace().nth(1)?.parse::<u16>().ok()
        };
        match tokio::time::timeout(Duration::from_millis(1500), probe).await {
            Ok(Some(code)) => Health::Code(code),
            _ => Health::Unreachable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_the_chart() {
        assert!(Health::Code(200).is_ready());
        assert!(Health::Code(429).is_ready());
        for h in [
            Health::Code(501),
            Health::Code(503),
            Health::Unreachable,
            Health::Unknown,
        ] {
            assert!(!h.is_ready());
        }
    }
}
