//! Raft followers joining in phase 2: a one-node raft cluster growing to
//! three voters (no copy; followers that have not joined are not
//! unsealed), and a follower the leader cannot reach on 8201, whose join
//! ends in a timed refusal that names the ports.

use super::must;
use crate::harness::Env;
use sandbox::{ClusterOptions, Reconfigure};
use std::time::Instant;

/// A one-node raft cluster growing to 3 is phase 2 without the copy. Before
/// it, `unseal` refuses the followers that have not joined (unsealing one
/// first is a risk of the runbook) and changes nothing.
#[tokio::test]
async fn a_one_node_raft_cluster_grows_to_three_voters_and_unjoined_followers_are_not_unsealed() {
    let env = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(1)
            .cluster_dns(true),
    )
    .await;
    must(&env.plugin(&["init", "--yes", "--timeout", "30s"]).await, 0);
    let token = env.stored_credentials().await.unwrap()["root_token"]
        .as_str()
        .unwrap()
        .to_owned();
    env.write_kv(&token, "probe", "grown").await;
    env.cluster
        .reconfigure(Reconfigure {
            replicas: Some(3),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    env.cluster
        .wait_for_pods(3, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let unseal = env.plugin(&["unseal", "--timeout", "20s"]).await;
    must(&unseal, 1);
    assert!(unseal.stderr.contains("join"), "{}", unseal.stderr);
    for ordinal in [1, 2] {
        assert_eq!(
            env.seal_status(ordinal).await["initialized"],
            false,
            "pod {ordinal} untouched"
        );
    }
    let even = env
        .plugin(&["migrate", "--to", "raft", "--replicas", "4"])
        .await;
    must(&even, 1);
    let grow = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--replicas",
            "3",
            "--timeout",
            "120s",
        ])
        .await;
    must(&grow, 0);
    assert!(grow.stdout.contains("3 voters"), "{}", grow.stdout);
    env.assert_whole(3).await;
    assert_eq!(env.read_kv(&token, "probe").await, "grown");
    assert_eq!(env.sys_inits(), 1);
    env.assert_no_secret_exposed().await;
}

/// A follower whose raft port 8201 the leader cannot reach: the join is
/// timed and ends with exit 1 and a hint naming 8200 and 8201, not a hang.
#[tokio::test]
async fn a_follower_the_leader_cannot_reach_on_8201_ends_in_a_timed_refusal_naming_the_ports() {
    let env = Env::start(
        ClusterOptions::openbao()
            .parallel()
            .replicas(1)
            .cluster_dns(true),
    )
    .await;
    must(&env.plugin(&["init", "--yes", "--timeout", "30s"]).await, 0);
    env.cluster
        .reconfigure(Reconfigure {
            replicas: Some(3),
            blocked_cluster_ports: Some(vec![1]),
            ..Reconfigure::default()
        })
        .await
        .unwrap();
    let config =
        std::fs::read_to_string(env.cluster.dir().join("pods/openbao-1/config.hcl")).unwrap();
    assert!(config.contains(":18201"), "the fault is in place: {config}");
    env.cluster
        .wait_for_pods(3, std::time::Duration::from_secs(30))
        .await
        .unwrap();
    let started = Instant::now();
    let run = env
        .plugin(&[
            "migrate",
            "--to",
            "raft",
            "--replicas",
            "3",
            "--timeout",
            "30s",
        ])
        .await;
    must(&run, 1);
    assert!(started.elapsed().as_secs() < 150, "timed, not a hang");
    assert!(run.stderr.contains("openbao-1"), "{}", run.stderr);
    assert!(
        run.stderr.contains("8200") && run.stderr.contains("8201"),
        "{}",
        run.stderr
    );
    env.assert_no_secret_exposed().await;
}
