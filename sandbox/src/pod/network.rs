//! A pod's network: the ports its server listens on, the loopback IP it
//! gets (a free one in 127.64.0.0/10), and whether something listens there.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::time::Duration;

use rand::Rng;

/// Vault API port inside the pod.
pub const API_PORT: u16 = 8200;
/// Raft cluster port inside the pod.
pub const CLUSTER_PORT: u16 = 8201;

/// Picks a random free loopback IP in 127.64.0.0/10, or keeps `preferred` if still free.
pub fn allocate_ip(preferred: Option<Ipv4Addr>) -> io::Result<Ipv4Addr> {
    if let Some(ip) = preferred {
        if ports_free(ip) {
            return Ok(ip);
        }
    }
    let mut rng = rand::rng();
    for _ in 0..200 {
        let ip = Ipv4Addr::new(
            127,
            rng.random_range(64..128),
            rng.random(),
            rng.random_range(1..255),
        );
        if ports_free(ip) {
            return Ok(ip);
        }
    }
    Err(io::Error::other("no free loopback IP in 127.64.0.0/10"))
}

fn ports_free(ip: Ipv4Addr) -> bool {
    let a = TcpListener::bind(SocketAddr::from((ip, API_PORT)));
    let b = TcpListener::bind(SocketAddr::from((ip, CLUSTER_PORT)));
    a.is_ok() && b.is_ok()
}

/// Whether something accepts TCP connections on `ip:port`.
pub async fn is_listening(ip: Ipv4Addr, port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(300),
            tokio::net::TcpStream::connect((ip, port))
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_ips_are_in_the_range() {
        let ip = allocate_ip(None).unwrap();
        let o = ip.octets();
        assert_eq!(o[0], 127);
        assert!((64..128).contains(&o[1]));
    }
}
