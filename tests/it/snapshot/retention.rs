//! Retention in a bucket: `snapshot save --keep N` leaves exactly N, and
//! the newest is the verified one.

use super::{init, plugin_s3, snapshots_in, Moto};
use crate::harness::Env;
use sandbox::ClusterOptions;
use std::time::Duration;

#[tokio::test]
async fn retention_keeps_exactly_n_in_the_bucket_and_the_newest_verified() {
    let moto = Moto::start().await;
    moto.create_bucket("keep").await;
    let env = Env::start(ClusterOptions::openbao().parallel().replicas(1)).await;
    init(&env).await;
    for _ in 0..4 {
        plugin_s3(
            &env,
            &moto,
            &[
                "snapshot",
                "save",
                "--to",
                "s3://keep/daily/",
                "--keep",
                "2",
            ],
        )
        .await
        .ok();
        // Names carry the second they were taken.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let listed = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "list",
            "--from",
            "s3://keep/daily/",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    let newest = names[0].to_owned();

    // A local folder with retention: exactly N there as well.
    let dir = tempfile::tempdir().unwrap();
    let to = format!("file://{}/", dir.path().display());
    for _ in 0..3 {
        env.plugin(&["snapshot", "save", "--to", &to, "--keep", "1"])
            .await
            .ok();
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    assert_eq!(snapshots_in(dir.path()).len(), 1);

    // --max-age 0s would delete everything, but never the newest verified.
    plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "save",
            "--to",
            "s3://keep/daily/",
            "--max-age",
            "0s",
        ],
    )
    .await
    .ok();
    let listed = plugin_s3(
        &env,
        &moto,
        &[
            "snapshot",
            "list",
            "--from",
            "s3://keep/daily/",
            "--verify",
            "-o",
            "json",
        ],
    )
    .await
    .ok()
    .json();
    let left = listed.as_array().unwrap();
    assert_eq!(left.len(), 1, "{listed}");
    assert_ne!(left[0]["name"], newest.as_str());
    assert_eq!(left[0]["status"], "verified");
}
