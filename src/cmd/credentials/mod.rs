//! `kubectl vault credentials show|export|import|encrypt|decrypt`.
//!
//! Wires the credentials Secret, its SOPS envelope, manifests and the import
//! proof together, and owns every prompt around them. Secrets reach stdout
//! only through `show --reveal` or an explicit `export`; a file written with
//! `-f` is created with mode 0600 and never overwritten.

mod export;
mod import;
mod migrate;
mod show;

use crate::cli::credentials::CredentialsCommand;
use crate::cmd::{Context, Failure};
use crate::ops::credentials::Credentials;
use crate::ops::store::CredentialStore;
use crate::store::kube_secret::SecretStore;
use anyhow::anyhow;

pub async fn run(ctx: &Context<'_>, command: CredentialsCommand) -> Result<(), Failure> {
    match command {
        CredentialsCommand::Show(args) => show::run(ctx, args).await,
        CredentialsCommand::Export(args) => export::run(ctx, args).await,
        CredentialsCommand::Import(args) => import::run(ctx, args).await,
        CredentialsCommand::Encrypt(args) => {
            migrate::run(ctx, args, migrate::Direction::Encrypt).await
        }
        CredentialsCommand::Decrypt(args) => {
            migrate::run(ctx, args, migrate::Direction::Decrypt).await
        }
    }
}

pub(super) async fn loaded(store: &SecretStore) -> Result<(Credentials, Vec<String>), Failure> {
    store
        .load_credentials_opened()
        .await
        .map_err(Failure::refused)?
        .ok_or_else(|| {
            Failure::refused(anyhow!(
                "no credentials in {}; run `kubectl vault init`, or `kubectl vault credentials import -f FILE` if you hold them elsewhere",
                store.credentials_object()
            ))
        })
}
