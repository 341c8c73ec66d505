//! The verified backup phase 1 takes before it changes anything: a gzipped
//! tar of the file-storage data, streamed out of pod 0 through exec to the
//! targets `snapshot save` writes to, with a manifest (sha256, size, key
//! generation) beside it, then read back and checked.

use crate::cmd::Failure;
use crate::ops::checkpoint::{now_rfc3339, BackupRef};
use crate::ops::credentials::Credentials;
use crate::ops::node::SealStatus;
use crate::ops::node::VaultNode;
use crate::output::log::Transfer;
use crate::snapshot::location::{Existing, Location};
use crate::snapshot::manifest::{Manifest, MANIFEST_SCHEMA};
use crate::snapshot::stream::{hex, pump};
use crate::snapshot::SnapshotError;
use crate::transport::exec::parse_cli_error;
use crate::transport::file_data::backup_stream;
use crate::transport::pod::PodNode;
use anyhow::anyhow;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// The member every file-storage backup must hold: the barrier keyring.
const KEYRING: &str = "core/_keyring";

/// The name the backup gets: the file's own name, or
/// `<workload>-file-<time>.tar.gz` in a folder or bucket (not `.snap`, so
/// `recover` and snapshot retention never take it for a raft snapshot).
fn backup_name(location: &Location, workload: &str) -> String {
    match location {
        Location::File { path } => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{workload}-file.tar.gz")),
        _ => format!(
            "{workload}-file-{}.tar.gz",
            jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ")
        ),
    }
}

/// Streams the backup of `node`'s data folder to `location`, writes its
/// manifest, reads it back and checks hash, size and content.
///
/// # Guarantees
/// On `Ok` the backup is complete and verified. On `Err` nothing is kept
/// under the backup's name (a partial upload is aborted) and nothing on the
/// pod changed.
pub async fn take(
    text: &str,
    location: &Location,
    workload: &str,
    node: &PodNode,
    credentials: &Credentials,
    status: &SealStatus,
) -> Result<BackupRef, Failure> {
    let name = backup_name(location, workload);
    let object = location.object(&name);
    if let Existing::Yes { object } = location
        .preflight_write(&name)
        .await
        .map_err(Failure::refused)?
    {
        return Err(Failure::refused(anyhow!(
            "{object} exists; a migrate backup never replaces one: choose another --backup-to"
        )));
    }
    tracing::info!(pod = node.name(), to = %object, "backing up the file storage data");
    let mut upload = location.upload(&name).await.map_err(Failure::refused)?;
    let mut streaming = match backup_stream(node).await {
        Ok(s) => s,
        Err(e) => {
            upload.abort().await;
            return Err(Failure::refused(e));
        }
    };
    let pumped = match streaming.stdout.take() {
        Some(stdout) => pump(Transfer::start("backup", None).reader(stdout), &mut upload).await,
        None => Err(SnapshotError::Short { size: 0 }),
    };
    let digested = match (pumped, streaming.wait().await) {
        (Ok(d), Ok((0, _, _))) => d,
        (Err(e), Ok((0, _, _))) => {
            upload.abort().await;
            return Err(Failure::refused(
                anyhow::Error::new(e).context("the backup did not complete; nothing changed"),
            ));
        }
        (_, Ok((code, _, stderr))) => {
            upload.abort().await;
            return Err(Failure::refused(anyhow!(
                "the backup tar stream on pod {} failed: {}; nothing was kept and nothing changed",
                node.name(),
                parse_cli_error(&stderr, code)
            )));
        }
        (_, Err(e)) => {
            upload.abort().await;
            return Err(Failure::refused(
                anyhow::Error::new(e).context("the backup did not complete; nothing changed"),
            ));
        }
    };
    fail::fail_point!("migrate::backup_before_finish", |_| Err(Failure::refused(
        anyhow!("failpoint migrate::backup_before_finish: the backup was not kept")
    )));
    upload.finish().await.map_err(Failure::refused)?;
    let manifest = Manifest {
        schema: MANIFEST_SCHEMA,
        snapshot: name.clone(),
        sha256: digested.sha256.clone(),
        size: digested.size,
        cluster_id: status.cluster_id.clone(),
        raft_committed_index: None,
        raft_term: None,
        server_version: status.version.clone(),
        generation: credentials.generation,
        created_at: now_rfc3339(),
        source_pod: node.name().to_owned(),
        seal: status.seal().name().to_owned(),
        restore_test: None,
    };
    location
        .write_manifest(&manifest)
        .await
        .map_err(Failure::refused)?;
    verify(location, &name, &manifest).await.map_err(|e| {
        Failure::refused(e.context(format!(
            "the backup {object} does not verify; nothing on the cluster changed"
        )))
    })?;
    tracing::info!(to = %object, size = manifest.size, sha256 = %manifest.sha256, "backup verified");
    Ok(BackupRef {
        location: text.to_owned(),
        object,
        name,
        sha256: manifest.sha256,
    })
}

/// Reads the backup back: its manifest names it, size and sha256 match, and
/// it is a gzipped tar holding the barrier keyring.
pub async fn verify(location: &Location, name: &str, expected: &Manifest) -> anyhow::Result<()> {
    let manifest = location
        .read_manifest(name)
        .await?
        .ok_or_else(|| anyhow!("its manifest is missing"))?;
    if &manifest != expected {
        return Err(anyhow!("its manifest differs from the one written"));
    }
    let (mut reader, size) = location.open(name).await?;
    let mut bytes = Vec::with_capacity(size as usize);
    reader.read_to_end(&mut bytes).await?;
    let sha256 = hex(&Sha256::digest(&bytes));
    if bytes.len() as u64 != manifest.size || sha256 != manifest.sha256 {
        return Err(anyhow!(
            "read back {} bytes with sha256 {sha256}, the manifest says {} bytes, {}",
            bytes.len(),
            manifest.size,
            manifest.sha256
        ));
    }
    let found = tokio::task::spawn_blocking(move || -> std::io::Result<(u64, bool)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
        let mut files = 0;
        let mut keyring = false;
        for entry in archive.entries()? {
            let entry = entry?;
            let path = entry.path()?.to_string_lossy().into_owned();
            keyring |= path.trim_start_matches("./") == KEYRING;
            files += u64::from(entry.header().entry_type().is_file());
        }
        Ok((files, keyring))
    })
    .await??;
    if !found.1 {
        return Err(anyhow!(
            "it holds {} files but no {KEYRING}: not file-storage data",
            found.0
        ));
    }
    Ok(())
}
