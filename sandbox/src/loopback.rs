//! A pod's own loopback: the charts set `VAULT_ADDR`/`BAO_ADDR` to
//! `http://127.0.0.1:8200`, which works because each pod has its own network
//! namespace. Here the servers share the host's network on distinct loopback
//! IPs, so each pod gets a network namespace of its own for what is exec'd
//! into it: its `lo` is up, and `127.0.0.1:8200` there is a listener of this
//! process that relays every connection to the pod's server.
//!
//! # Guarantees
//! - An exec'd process that joined [`PodLoopback::netns`] reaches its own
//!   pod's server at `127.0.0.1:8200` and the services outside the
//!   StatefulSet it was given (the transit seal provider, at its own
//!   address), and nothing else of the host's network.
//! - The namespace and the relay live as long as the pod object (container
//!   restarts keep them, as a pod's network namespace outlives its
//!   containers); dropping the value stops the relay.
//!
//! # Caveats
//! - Root only (`unshare(CLONE_NEWNET)`): without it the sandbox keeps
//!   `*_ADDR` on the pod's IP.
//! - An exec'd process cannot reach other pods, as it could in a cluster.
//!   Nothing the tool runs in a pod needs that: the server makes its own
//!   raft connections. A second server it starts there (the restore-test's
//!   throwaway server) needs the seal provider, which is why that one is
//!   relayed.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A pod's network namespace and the relay of its `127.0.0.1:port`.
pub struct PodLoopback {
    netns: OwnedFd,
    relays: Vec<tokio::task::JoinHandle<()>>,
}

impl PodLoopback {
    /// A new namespace whose `127.0.0.1:port` relays to `pod_ip:port`, and
    /// whose `services` (host loopback addresses outside the StatefulSet,
    /// such as the transit seal provider) relay to the same address on the
    /// host, as a Service of another cluster is reachable from a pod.
    /// Needs a tokio runtime.
    pub fn start(
        pod_ip: Ipv4Addr,
        port: u16,
        services: &[SocketAddrV4],
    ) -> io::Result<PodLoopback> {
        // unshare(CLONE_NEWNET) moves only the calling thread: do it on a
        // thread of its own, keep the namespace by its descriptor, and bind
        // the listeners there (a socket stays in the namespace it was made in).
        let mut binds = vec![(
            SocketAddrV4::new(Ipv4Addr::LOCALHOST, port),
            SocketAddrV4::new(pod_ip, port),
        )];
        binds.extend(services.iter().map(|s| (*s, *s)));
        let (netns, listeners) = std::thread::spawn(move || -> io::Result<_> {
            check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
            let netns = std::fs::File::open("/proc/thread-self/ns/net")?;
            loopback_up()?;
            let mut listeners = Vec::new();
            for (local, target) in binds {
                let listener = std::net::TcpListener::bind(local)?;
                listener.set_nonblocking(true)?;
                listeners.push((listener, target));
            }
            Ok((OwnedFd::from(netns), listeners))
        })
        .join()
        .map_err(|_| io::Error::other("the namespace thread panicked"))??;
        let mut relays = Vec::new();
        for (listener, target) in listeners {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            let target = SocketAddr::from(target);
            relays.push(tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        // Connected from a runtime thread: the host's network.
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                            let _ = inbound.set_nodelay(true);
                            let _ = outbound.set_nodelay(true);
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            }));
        }
        Ok(PodLoopback { netns, relays })
    }

    /// The namespace, for `setns(fd, CLONE_NEWNET)` in an exec'd child.
    pub fn netns(&self) -> RawFd {
        self.netns.as_raw_fd()
    }
}

impl Drop for PodLoopback {
    fn drop(&mut self) {
        for relay in &self.relays {
            relay.abort();
        }
    }
}

/// Joins the namespace `fd`; for a child between fork and exec (async-signal-safe).
pub fn enter(fd: RawFd) -> io::Result<()> {
    // SAFETY: a plain syscall on a descriptor the parent keeps open.
    check(unsafe { libc::setns(fd, libc::CLONE_NEWNET) })
}

/// `ip link set lo up` in the calling thread's namespace.
fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket only used for the two ioctls below, owned
    // by `sock` so it is closed on every path.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which lives
    // across both calls.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))
    }
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A process that joined the namespace reaches the pod at 127.0.0.1 and
    /// nothing at the pod's own address.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pods_loopback_reaches_its_server_and_only_it() {
        if !crate::pod::running_as_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let server = tokio::net::TcpListener::bind((Ipv4Addr::new(127, 93, 4, 5), 0))
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let std::net::IpAddr::V4(ip) = addr.ip() else {
            unreachable!()
        };
        let pod = PodLoopback::start(ip, addr.port(), &[]).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = server.accept().await.unwrap();
            s.write_all(b"pod server").await.unwrap();
        });
        let fd = pod.netns();
        let port = addr.port();
        // A blocking thread of its own: joining the namespace moves only it.
        let joined = std::thread::spawn(move || -> io::Result<(String, bool)> {
            enter(fd)?;
            let mut s = std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut s, &mut text)?;
            let outside = std::net::TcpStream::connect_timeout(
                &SocketAddr::from((ip, port)),
                std::time::Duration::from_secs(2),
            )
            .is_ok();
            Ok((text, outside))
        });
        let joined = tokio::task::spawn_blocking(move || joined.join().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(joined.0, "pod server");
        assert!(
            !joined.1,
            "the host's loopback IPs are not reachable inside"
        );
        drop(pod);
    }
}
