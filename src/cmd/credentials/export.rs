//! `credentials export`: a Secret manifest, SOPS-encrypted for the recorded
//! (or given) recipients the way Flux decrypts it; `-f` files are 0600.

use super::loaded;
use crate::cli::credentials::ExportArgs;
use crate::cmd::{Context, Failure};
use crate::ops::store::CredentialStore;
use crate::store::envelope::format_recipients;
use crate::store::manifest;
use anyhow::anyhow;
use std::io::Write as _;
use std::path::Path;

pub(super) async fn run(ctx: &Context<'_>, args: ExportArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let (c, _) = loaded(&store).await?;
    let recipients = store.write_recipients().await.map_err(Failure::refused)?;
    if recipients.is_empty() && !args.plaintext {
        return Err(Failure::refused(anyhow!(
            "{} is not encrypted and no age recipient was given: pass --age-recipient AGE1... (or set SOPS_AGE_RECIPIENTS), or --plaintext to export it unencrypted",
            store.credentials_object()
        )));
    }
    let name = args.store.secret_name.clone().unwrap_or_else(|| {
        crate::store::kube_secret::default_secret_name(&cluster.workload_name())
    });
    let text = manifest::export(&c, &name, &ctx.namespace, &recipients).map_err(Failure::failed)?;
    let encryption = if recipients.is_empty() {
        "unencrypted".to_owned()
    } else {
        format!("encrypted for {}", format_recipients(&recipients))
    };
    match &args.file {
        Some(path) => {
            write_private(path, text.as_bytes()).map_err(|e| {
                Failure::refused(anyhow!(
                    "could not create {}: {e}; choose a path that does not exist yet",
                    path.display()
                ))
            })?;
            tracing::info!(file = %path.display(), "wrote the credentials manifest ({encryption})");
        }
        None => {
            ctx.printer.raw(&text).map_err(Failure::failed)?;
            tracing::info!("printed the credentials manifest ({encryption})");
        }
    }
    Ok(())
}

/// Creates `path` with mode 0600; never replaces an existing file.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
