//! The Lease between concurrent runs: a run paused while it holds the
//! Lease cannot overwrite what the next holder stored, and a Lease renewed
//! by a host with a skewed clock is not taken over.

use crate::harness::Env;
use sandbox::ClusterOptions;
use std::time::{Duration, Instant};

/// A run stopped (SIGSTOP) while it holds the Lease, past the Lease's
/// duration: the next run takes over and finishes the work. When the stopped
/// run continues, it stops before writing anything, and what the new holder
/// stored stays.
#[tokio::test]
async fn a_paused_rotate_cannot_overwrite_what_the_next_holder_stored() {
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(3)).await;
    env.plugin(&["init", "--yes", "--key-shares", "3", "--key-threshold", "2"])
        .await
        .ok();
    let paused = env.spawn_plugin(
        &["rotate", "--yes"],
        &[("FAILPOINTS", "rotate::after_checkpoint=sleep(2000)")],
    );
    let pid = paused.id().expect("pid");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !env.checkpoint_exists().await {
        assert!(Instant::now() < deadline, "no rotate checkpoint");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(pid, "-STOP");
    let next = env.plugin(&["rotate", "--yes"]).await.ok();
    assert!(!env.checkpoint_exists().await, "{next:?}");
    let stored = env.stored_credentials().await.unwrap();
    assert_eq!(stored["generation"], 2);
    signal(pid, "-CONT");
    let resumed = env.finish_spawned(paused).await;
    assert_eq!(resumed.code, 2, "{resumed:?}");
    assert!(resumed.stderr.contains("lost Lease"), "{resumed:?}");
    assert_eq!(
        env.stored_credentials().await.unwrap(),
        stored,
        "nothing overwritten"
    );
    assert!(!env.checkpoint_exists().await);
    env.restart_all_and_unseal().await;
    env.assert_whole(3).await;
}

fn signal(pid: u32, which: &str) {
    let status = std::process::Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which} {pid}");
}

/// A Lease renewed by a host whose clock is an hour behind looks expired by
/// its renewTime, but it is alive: no second run takes it while it changes.
/// Once it stops changing, a run takes it after one lease duration.
#[tokio::test]
async fn a_lease_renewed_with_a_skewed_clock_is_not_taken_over() {
    use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    let leases: kube::Api<Lease> =
        kube::Api::namespaced(env.client().await, env.cluster.namespace());
    let name = format!("{}-kubectl-vault", env.cluster.name());
    let skewed = || {
        let then = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
        LeaseSpec {
            holder_identity: Some("kubectl-vault@elsewhere/1".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(then)),
            acquire_time: Some(MicroTime(then)),
            ..LeaseSpec::default()
        }
    };
    let lease = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some(name.clone()),
            ..Default::default()
        },
        spec: Some(skewed()),
    };
    leases.create(&Default::default(), &lease).await.unwrap();
    let renewer = {
        let leases = leases.clone();
        let name = name.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut l = leases.get(&name).await.unwrap();
                l.spec = Some(skewed());
                leases
                    .replace(&name, &Default::default(), &l)
                    .await
                    .unwrap();
            }
        })
    };
    let busy = env
        .plugin(&["checkpoint", "abandon", "--yes", "--lock-timeout", "20s"])
        .await;
    assert_eq!(busy.code, 1, "{busy:?}");
    assert!(busy.stderr.contains("elsewhere"), "{busy:?}");
    renewer.abort();
    let started = Instant::now();
    env.plugin(&["checkpoint", "abandon", "--yes", "--lock-timeout", "60s"])
        .await
        .ok();
    assert!(
        started.elapsed() >= Duration::from_secs(14),
        "taken over only after a whole lease duration unchanged: {:?}",
        started.elapsed()
    );
}
