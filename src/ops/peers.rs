//! Which raft peer is which pod.
//!
//! Owns the matching rule: a peer belongs to a pod when its node id is the
//! pod's name (the charts' `setNodeId: true`) or when the host of its cluster
//! address is one of the pod's hosts (its IP, or a DNS name such as
//! `<pod>.<sts>-internal`, with or without the namespace and cluster domain
//! after it). The charts default to generated node ids (a UUID kept in the
//! data directory), so the address is what identifies a pod there. Where the
//! hosts come from is the transport's business.

use crate::ops::node::RaftPeer;

/// The host part of a raft address: `10.0.0.5:8201`, `[fd00::5]:8201`,
/// `https://vault-0.vault-internal:8201` → `10.0.0.5`, `fd00::5`,
/// `vault-0.vault-internal`.
pub fn address_host(address: &str) -> &str {
    let rest = address.split_once("://").map_or(address, |(_, rest)| rest);
    let rest = rest.split('/').next().unwrap_or(rest);
    if let Some(v6) = rest.strip_prefix('[') {
        return v6.split(']').next().unwrap_or(v6);
    }
    match rest.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address.
        Some((host, _)) if !host.contains(':') => host,
        _ => rest,
    }
}

/// Whether `host` (from a peer address) names the same server as `known`
/// (one of a pod's hosts): equal, or `known` followed by more DNS labels
/// (`vault-0.vault-internal` matches `vault-0.vault-internal.ns.svc.cluster.local`).
fn host_matches(host: &str, known: &str) -> bool {
    let host = host.trim_end_matches('.');
    let known = known.trim_end_matches('.');
    if known.is_empty() {
        return false;
    }
    host.eq_ignore_ascii_case(known)
        || (host.len() > known.len()
            && host.as_bytes()[known.len()] == b'.'
            && host[..known.len()].eq_ignore_ascii_case(known)
            && !is_ip(known))
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

/// Whether `peer` is the server of pod `pod`, reachable at `hosts`.
pub fn is_peer_of(peer: &RaftPeer, pod: &str, hosts: &[String]) -> bool {
    if peer.node_id == pod {
        return true;
    }
    let host = address_host(&peer.address);
    !host.is_empty() && hosts.iter().any(|known| host_matches(host, known))
}

/// The peer of pod `pod`, if it is in `peers`.
pub fn peer_of<'a>(peers: &'a [RaftPeer], pod: &str, hosts: &[String]) -> Option<&'a RaftPeer> {
    peers.iter().find(|p| is_peer_of(p, pod, hosts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(node_id: &str, address: &str) -> RaftPeer {
        RaftPeer {
            node_id: node_id.into(),
            address: address.into(),
            leader: false,
            voter: true,
        }
    }

    fn hosts(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn hosts_are_cut_out_of_addresses() {
        assert_eq!(address_host("10.0.0.5:8201"), "10.0.0.5");
        assert_eq!(address_host("[fd00::5]:8201"), "fd00::5");
        assert_eq!(address_host("fd00::5"), "fd00::5");
        assert_eq!(
            address_host("https://vault-0.vault-internal:8201"),
            "vault-0.vault-internal"
        );
        assert_eq!(address_host("vault-0"), "vault-0");
    }

    #[test]
    fn a_generated_node_id_is_matched_by_ip_or_dns_name() {
        let pod_hosts = hosts(&["10.0.0.5", "openbao-0", "openbao-0.openbao-internal"]);
        let uuid = "d39bc9e8-aa36-ec9c-d87d-58f2461380bf";
        assert!(is_peer_of(
            &peer(uuid, "10.0.0.5:8201"),
            "openbao-0",
            &pod_hosts
        ));
        assert!(is_peer_of(
            &peer(uuid, "openbao-0.openbao-internal:8201"),
            "openbao-0",
            &pod_hosts
        ));
        assert!(is_peer_of(
            &peer(
                uuid,
                "openbao-0.openbao-internal.vault.svc.cluster.local.:8201"
            ),
            "openbao-0",
            &pod_hosts
        ));
        assert!(!is_peer_of(
            &peer(uuid, "10.0.0.50:8201"),
            "openbao-0",
            &pod_hosts
        ));
        assert!(!is_peer_of(
            &peer(uuid, "openbao-01.openbao-internal:8201"),
            "openbao-0",
            &pod_hosts
        ));
        assert!(!is_peer_of(
            &peer(uuid, "openbao-1.openbao-internal:8201"),
            "openbao-0",
            &pod_hosts
        ));
    }

    #[test]
    fn a_node_id_equal_to_the_pod_name_matches_without_hosts() {
        assert!(is_peer_of(&peer("vault-2", "x:8201"), "vault-2", &[]));
        assert!(!is_peer_of(&peer("vault-2", "x:8201"), "vault-1", &[]));
        assert!(!is_peer_of(&peer("u", ":8201"), "vault-1", &hosts(&[""])));
    }

    #[test]
    fn an_ip_never_matches_by_prefix() {
        assert!(!is_peer_of(
            &peer("u", "10.0.0.5.nip.io:8201"),
            "p",
            &hosts(&["10.0.0.5"])
        ));
    }
}
