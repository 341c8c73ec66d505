//! DR on an S3 location (moto): the DR state's conditional writes, and a
//! Vault-shaped group whose primary keeps SOPS-encrypted credentials and
//! whose standby starts uninitialized.

use super::{refused, start, SharedLocation};
use crate::harness::sops_decrypt_json;
use crate::snapshot::{assert_secrets, write_secrets, Moto};
use sandbox::ClusterOptions;
use std::path::Path;
use std::time::Duration;

/// Whether the real `sops` decrypts `doc` with the age key file `identity`.
fn sops_decrypts(doc: &str, identity: &Path) -> bool {
    use std::io::Write;
    let mut child = std::process::Command::new(crate::harness::deps_bin().join("sops"))
        .args([
            "-d",
            "--input-type",
            "json",
            "--output-type",
            "json",
            "/dev/stdin",
        ])
        .env("SOPS_DISABLE_VERSION_CHECK", "1")
        .env("SOPS_AGE_KEY_FILE", identity)
        .env_remove("SOPS_AGE_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sops");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(doc.as_bytes())
        .unwrap();
    child.wait().expect("sops").success()
}

/// The issue's proof on S3 and the hashicorp/vault chart's shape: an
/// uninitialized standby is synced through recover's temporary-init path
/// (killed once it stores the primary's credentials, again after its
/// temporary keys were checkpointed, then resumed), takes
/// the primary's credentials SOPS-encrypted for the primary's recipients,
/// rests sealed, and after a planned failover (killed after taking its
/// epoch, the standby's data then lost, so that the catch-up goes through
/// recover's temporary init, killed again after its checkpoint, and
/// resumed: one more init, no more) reads every secret with the
/// credentials it stores; the old primary is sealed and stays fenced, and
/// the printed patch switches the group's ExternalName Service. Then the
/// old primary rejoins as a standby and `dr watch` fails over to it
/// automatically when the new one stops answering.
#[tokio::test]
async fn dr_on_s3_syncs_an_uninitialized_vault_standby_and_fails_over() {
    let moto = Moto::start().await;
    moto.create_bucket("dr-prod").await;
    let mut vars = moto.env();
    let keys = tempfile::tempdir().unwrap();
    let key = crate::credentials::keygen(keys.path(), "group");
    let other = crate::credentials::keygen(keys.path(), "other");
    let identity = key.file.clone();
    vars.push((
        "SOPS_AGE_KEY_FILE".into(),
        identity.to_str().unwrap().to_owned(),
    ));
    let opts = |replicas: u32| ClusterOptions::vault().parallel().replicas(replicas);
    let g = start(
        vec![("east", opts(1), true), ("west", opts(3), false)],
        SharedLocation::S3 {
            moto,
            bucket: "dr-prod".into(),
        },
        vars,
    )
    .await;
    // The primary's credentials are SOPS-encrypted for the group's age key.
    g.plugin(
        "east",
        &[
            "credentials",
            "encrypt",
            "--age-recipient",
            &key.recipient,
            "--age-identity",
            identity.to_str().unwrap(),
        ],
    )
    .await
    .ok();
    let east_creds = g
        .env("east")
        .stored_credentials_sops(&identity)
        .await
        .expect("east's credentials");
    let east_token = east_creds["root_token"].as_str().unwrap().to_owned();
    write_secrets(g.env("east"), &east_token, 40, "v1").await;
    g.save_snapshot("east").await;
    assert_eq!(g.env("west").sys_inits(), 0);
    assert!(!g.env("west").has_stored_credentials().await);

    // Killed once the standby stores the primary's credentials, before
    // anything is initialized.
    let failpoint = "dr::sync_after_credentials";
    g.dr_killed_at(&["sync", "--standby", "west"], failpoint)
        .await;
    assert_eq!(g.env("west").sys_inits(), 0);
    assert_eq!(
        g.env("west")
            .stored_credentials_sops(&identity)
            .await
            .unwrap()["root_token"],
        east_token.as_str()
    );
    // Then killed after recover's temporary init and its checkpoint.
    let failpoint = "recover::after_temp_checkpoint";
    g.dr_killed_at(&["sync", "--standby", "west"], failpoint)
        .await;
    let checkpoint = g.checkpoint_of("west").await;
    assert!(
        checkpoint.contains("\"sops\""),
        "the checkpoint holding temporary keys is encrypted too"
    );
    assert_eq!(
        sops_decrypt_json(&checkpoint, &identity)["phase"]["phase"],
        "recover_temp_init"
    );
    assert_eq!(g.env("west").sys_inits(), 1, "pod 0 was initialized once");

    let run = g.dr(&["sync", "--standby", "west"]).await.ok();
    assert!(run.stdout.contains("Synced standby west"), "{run:?}");
    assert_eq!(
        g.env("west").sys_inits(),
        1,
        "the re-run resumed; nothing was initialized again"
    );
    assert!(!g.env("west").checkpoint_exists().await);
    assert_eq!(
        g.sealed_pods("west").await,
        [true, true, true],
        "a warm standby rests sealed"
    );
    // The standby's credentials Secret is SOPS-encrypted for the primary's
    // recipient: the group's key decrypts it to the primary's credentials,
    // another key does not.
    let doc = g
        .env("west")
        .secret_data(&g.env("west").secret_name(), "credentials.json")
        .await
        .expect("west's credentials");
    let sops: serde_json::Value = serde_json::from_str(&doc).unwrap();
    let recipients: Vec<&str> = sops["sops"]["age"]
        .as_array()
        .expect("encrypted for age recipients")
        .iter()
        .map(|r| r["recipient"].as_str().unwrap())
        .collect();
    assert_eq!(recipients, [key.recipient.as_str()]);
    assert!(
        !sops_decrypts(&doc, &other.file),
        "a stranger's key decrypts it"
    );
    let west_creds = sops_decrypt_json(&doc, &identity);
    assert_eq!(west_creds["root_token"], east_token.as_str());
    assert_eq!(west_creds["cluster_id"], east_creds["cluster_id"]);
    assert_eq!(west_creds["unseal_keys_b64"], east_creds["unseal_keys_b64"]);
    let state = g.state_at().await;
    assert_eq!(state["standbys"]["west"]["primary"], "east", "{state}");

    // The group file names an ExternalName Service clients go through
    // (in east's cluster, namespace default), still pointing at east.
    let services: kube::Api<k8s_openapi::api::core::v1::Service> =
        kube::Api::namespaced(g.env("east").client().await, "default");
    let service: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "vault-clients"},
        "spec": {"type": "ExternalName", "externalName": "east.vault.svc"},
    }))
    .unwrap();
    services
        .create(&Default::default(), &service)
        .await
        .expect("create the ExternalName Service");
    let mut file = std::fs::read_to_string(&g.config).unwrap();
    file.push_str(
        "  clients:\n    externalName: {context: east, namespace: default, name: vault-clients}\n",
    );
    std::fs::write(&g.config, file).unwrap();

    // More writes after the sync: the failover's catch-up restores them.
    write_secrets(g.env("east"), &east_token, 50, "v2").await;
    g.save_snapshot("east").await;
    // The failover is killed once it took epoch 2; then every pod of west
    // loses its data, so the catch-up must go through recover's
    // temporary-init path; killed again after the temporary keys are
    // checkpointed, the re-run finishes with the same choice and one init.
    let failpoint = "dr::failover_after_epoch";
    g.dr_killed_at(&["failover", "--to", "west", "--yes"], failpoint)
        .await;
    for i in 0..3 {
        g.env("west").cluster.wipe_pod(i).await.unwrap();
    }
    let failpoint = "recover::after_temp_checkpoint";
    g.dr_killed_at(&["failover", "--yes"], failpoint).await;
    let checkpoint = g.checkpoint_of("west").await;
    assert_eq!(
        sops_decrypt_json(&checkpoint, &identity)["phase"]["phase"],
        "recover_temp_init"
    );
    assert_eq!(g.state_at().await["failover"]["to"], "west");
    assert_eq!(
        g.env("west").sys_inits(),
        2,
        "pod 0 was initialized once more"
    );
    let run = g.dr(&["failover", "--yes"]).await.ok();
    assert!(
        run.stdout
            .contains("Failed over to west at epoch 2 (resumed)"),
        "{run:?}"
    );
    assert_eq!(
        g.env("west").sys_inits(),
        2,
        "the re-run resumed recover; nothing was initialized again"
    );
    assert!(!g.env("west").checkpoint_exists().await);
    // Step 6: the address clients must switch to, and the one-line patch of
    // the Service, printed and not run; run as printed, it switches it.
    assert!(
        run.stdout
            .contains("Clients must switch to http://west.vault.svc:8200 (context west)"),
        "{run:?}"
    );
    let patch = run
        .stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("kubectl "))
        .unwrap_or_else(|| panic!("no kubectl line: {run:?}"));
    assert_eq!(
        patch,
        r#"kubectl --context east -n default patch service vault-clients --type merge -p '{"spec":{"externalName":"west.vault.svc"}}'"#
    );
    let external = |s: k8s_openapi::api::core::v1::Service| s.spec.unwrap().external_name;
    assert_eq!(
        external(services.get("vault-clients").await.unwrap()).as_deref(),
        Some("east.vault.svc"),
        "the failover does not switch clients itself"
    );
    let home = tempfile::tempdir().unwrap();
    let patched = std::process::Command::new("sh")
        .args(["-c", patch])
        .env_clear()
        .env("KUBECONFIG", &g.kubeconfig)
        .env("HOME", home.path())
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", crate::harness::deps_bin().display()),
        )
        .output()
        .unwrap();
    assert!(patched.status.success(), "{patched:?}");
    assert_eq!(
        external(services.get("vault-clients").await.unwrap()).as_deref(),
        Some("west.vault.svc")
    );

    assert!(run.stdout.contains("every pod sealed"), "{run:?}");
    assert!(run.stdout.contains("Caught up with"), "{run:?}");
    let state = g.state_at().await;
    assert_eq!(state["primary"], "west", "{state}");
    assert_eq!(state["epoch"], 2);
    assert!(state.get("failover").is_none(), "{state}");
    let claim = g.location.claim(2).await.expect("the claim of epoch 2");
    assert_eq!(claim["to"], "west", "{claim}");
    assert_eq!(g.sealed_pods("west").await, [false, false, false]);
    let west_creds = g
        .env("west")
        .stored_credentials_sops(&identity)
        .await
        .unwrap();
    let west_token = west_creds["root_token"].as_str().unwrap();
    assert_secrets(g.env("west"), west_token, 50, "v2").await;
    assert_eq!(g.sealed_pods("east").await, [true], "the fence sealed east");
    refused(
        &g.plugin("east", &["unseal"]).await,
        &[
            "epoch 2",
            "west is the primary",
            "dr sync --config <the file that defines DR group \"prod\"> --standby east",
        ],
    );
    assert_eq!(g.sealed_pods("east").await, [true]);
    assert_eq!(g.env("east").sys_inits(), 1);
    assert_eq!(
        g.env("west").sys_inits(),
        2,
        "only the temporary init of the catch-up's recover"
    );
    // The credentials west stores unseal every pod after a full restart.
    g.env("west").cluster.restart_all().await.unwrap();
    assert_eq!(g.sealed_pods("west").await, [true, true, true]);
    g.plugin("west", &["unseal"]).await.ok();
    assert_eq!(g.sealed_pods("west").await, [false, false, false]);
    assert_secrets(g.env("west"), west_token, 50, "v2").await;

    // Automatic failover on S3: east rejoins as a standby of west, then
    // west's API stops answering; `dr watch` promotes east after 2 failed
    // probes spanning 2 intervals, and every secret reads there.
    g.save_snapshot("west").await;
    g.dr(&["sync", "--standby", "east"]).await.ok();
    assert_eq!(
        g.sealed_pods("east").await,
        [true],
        "a warm standby rests sealed"
    );
    let (watcher, addr) = g.start_watch(2.0).await;
    let died = std::time::Instant::now();
    g.env("west").cluster.set_latency(Duration::from_secs(600));
    loop {
        let state = g.state_at().await;
        if state["primary"] == "east" && state.get("failover").is_none() {
            assert_eq!(state["epoch"], 3, "{state}");
            assert_eq!(state["fences"]["west"]["how"], "recorded", "{state}");
            assert_eq!(state["decision"]["by"], "auto", "{state}");
            break;
        }
        assert!(
            died.elapsed() < Duration::from_secs(120),
            "the watcher did not fail over: {state}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    eprintln!(
        "dr watch on S3: west unreachable to east promoted in {:?}",
        died.elapsed()
    );
    let metrics = crate::metrics::scrape_until(&addr, "the failover in the metrics", |m| {
        m.get("kubectl_vault_dr_failovers_total{}") == Some(&1.0)
    })
    .await;
    assert_eq!(
        metrics.get("kubectl_vault_dr_cluster_up{cluster=west}"),
        Some(&0.0),
        "{metrics:?}"
    );
    let mut watcher = watcher;
    watcher.start_kill().unwrap();
    let watched = g.envs[0].finish_spawned(watcher).await;
    assert!(
        watched.stderr.contains("the primary failed; failing over"),
        "{watched:?}"
    );
    g.env("west").cluster.set_latency(Duration::ZERO);
    let east_now = g
        .env("east")
        .stored_credentials_sops(&identity)
        .await
        .expect("east's credentials");
    assert_eq!(east_now["cluster_id"], east_creds["cluster_id"]);
    assert_eq!(g.sealed_pods("east").await, [false]);
    assert_secrets(
        g.env("east"),
        east_now["root_token"].as_str().unwrap(),
        50,
        "v2",
    )
    .await;
    assert_eq!(g.env("east").sys_inits(), 1);
    assert_eq!(g.env("west").sys_inits(), 2);

    g.env("east").assert_no_secret_exposed_in(&east_creds).await;
    g.env("west").assert_no_secret_exposed_in(&west_creds).await;
}

/// The DR state in an S3 bucket (moto): created once, and of two runs that
/// read the same version exactly one takes the next epoch (If-Match on the
/// ETag); a write from a stale read is refused, never overwrites.
#[tokio::test]
async fn dr_state_in_s3_takes_each_epoch_once() {
    use kubectl_vault::ops::dr::state::{
        load_or_create, record, take_epoch, Decision, StateStore, TakeEpochError,
    };
    use kubectl_vault::snapshot::location::Location;
    use kubectl_vault::store::dr_state::SharedState;
    let moto = Moto::start().await;
    moto.create_bucket("dr-group").await;
    for (k, v) in moto.env() {
        // nextest runs each test in its own process: nothing else reads these.
        std::env::set_var(k, v);
    }
    let location = Location::parse("s3://dr-group/prod/").unwrap();
    let store = SharedState::of(&location).unwrap();
    assert_eq!(store.object(), "s3://dr-group/prod/dr-state.json");
    let seen = load_or_create(&store, "prod", "east").await.unwrap();
    assert_eq!((seen.state.epoch, seen.state.primary.as_str()), (1, "east"));
    assert!(seen.version.e_tag.is_some(), "the store answers an ETag");
    // A second create finds it: no overwrite.
    let again = load_or_create(&store, "prod", "west").await.unwrap();
    assert_eq!(again.state.primary, "east");
    let decision = |to: &str| Decision {
        at: "t".into(),
        epoch: 0,
        from: "east".into(),
        chosen: to.into(),
        by: "auto".into(),
        scores: vec![],
    };
    let (a, b) = tokio::join!(
        take_epoch(&store, &seen, "west", "a/1", decision("west")),
        take_epoch(&store, &seen, "north", "b/2", decision("north")),
    );
    let (won, lost) = match (a, b) {
        (Ok(w), Err(l)) | (Err(l), Ok(w)) => (w, l),
        (a, b) => panic!("exactly one must win: {a:?} / {b:?}"),
    };
    let TakeEpochError::Lost(lost) = lost else {
        panic!("{lost}")
    };
    let winner = won.state.failover.as_ref().unwrap().to.clone();
    assert_eq!(lost.winner, winner);
    assert_eq!(lost.epoch, 2);
    // moto 5 ignores If-Match on PutObject, so a stale update is not
    // refused here; the epoch above was decided by the create-only claim
    // (If-None-Match: *), which moto honours. AWS S3 honours both.
    let claim = store
        .read_claim(2)
        .await
        .unwrap()
        .expect("the claim of epoch 2");
    assert_eq!(claim.to, winner);
    assert!(
        store.read_claim(3).await.unwrap().is_none(),
        "nobody claimed epoch 3"
    );
    let now = record(&store, |s| {
        s.fences.clear();
        true
    })
    .await
    .unwrap();
    assert_eq!(now.state.epoch, 2);
    assert_eq!(now.state.failover.unwrap().to, winner);
}
