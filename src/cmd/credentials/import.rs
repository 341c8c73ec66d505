//! `credentials import`: read a (SOPS) manifest or document, prove it against
//! the live cluster, and store it; different credentials need `--force`.

use crate::cli::credentials::ImportArgs;
use crate::cmd::{Context, Failure};
use crate::ops::credentials::Credentials;
use crate::ops::import::{prove, Proof};
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};
use crate::store::envelope::Sealing;
use crate::store::kube_secret::SecretStore;
use crate::store::manifest;
use crate::store::sops::Recipient;
use crate::transport::discover::KubeCluster;
use anyhow::anyhow;
use serde::Serialize;
use std::io::Read as _;
use std::path::Path;

#[derive(Debug, Serialize)]
struct ImportReport {
    object: String,
    result: &'static str,
    generation: u32,
    proof: Option<Proof>,
    recipients: Vec<String>,
}

pub(super) async fn run(ctx: &Context<'_>, args: ImportArgs) -> Result<(), Failure> {
    let file = args.file.display().to_string();
    let text = read_input(&args.file)
        .map_err(|e| Failure::refused(anyhow!("could not read {file}: {e}")))?;
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let object = store.credentials_object();
    let ids = store
        .envelope()
        .identities(&file)
        .await
        .map_err(Failure::refused)?;
    let imported = manifest::import(&text, &file, ids).map_err(|e| {
        Failure::refused(
            anyhow::Error::new(e).context(format!("nothing was imported into {object}")),
        )
    })?;
    let mut candidate = imported.credentials;
    candidate.validate().map_err(|e| {
        Failure::refused(anyhow!(
            "{file} holds unusable credentials: {e}; nothing was imported"
        ))
    })?;
    if imported.recipients.is_empty() {
        tracing::warn!("{file} is not encrypted; delete it once the import is done");
    }

    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let result = guard
        .fenced(import_locked(
            ctx,
            &cluster,
            store,
            &mut candidate,
            imported.recipients,
            args.force,
        ))
        .await
        .map_err(Failure::failed)?;
    let report = result?;
    ctx.printer
        .value(&report, |r| {
            let how = match &r.proof {
                Some(Proof::Unsealed { pods }) => {
                    format!("its shares unsealed {}", pods.join(", "))
                }
                Some(Proof::MatchesStored { generation }) => {
                    format!("its shares match stored generation {generation}")
                }
                Some(Proof::RekeyProbe { pod }) => {
                    format!("the active node {pod} took its shares in a rekey probe (cancelled; nothing changed)")
                }
                None => "they are the credentials already stored".to_owned(),
            };
            let envelope = if r.recipients.is_empty() {
                "plaintext".to_owned()
            } else {
                format!("encrypted for {}", r.recipients.join(", "))
            };
            format!(
                "Credentials generation {} {} in {} ({envelope}): {how}.\n",
                r.generation, r.result, r.object
            )
        })
        .map_err(Failure::failed)
}

async fn import_locked(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    store: SecretStore,
    candidate: &mut Credentials,
    file_recipients: Vec<Recipient>,
    force: bool,
) -> Result<ImportReport, Failure> {
    let object = store.credentials_object();
    // An operation in flight may hold newer keys than any file: importing
    // now could make stale shares current.
    match store.load_checkpoint().await {
        Ok(None) => {}
        Ok(Some(c)) => {
            return Err(Failure::refused(crate::ops::operation::OtherOperation::new(store.checkpoint_object(), &c)))
        }
        Err(e) => {
            return Err(Failure::refused(anyhow::Error::new(e).context(
                "an unreadable checkpoint may belong to an operation in flight; nothing was imported (`kubectl vault checkpoint show`)",
            )))
        }
    }
    let stored = match store.load_credentials().await {
        Ok(stored) => stored,
        Err(e) if force => {
            tracing::warn!("the stored credentials cannot be read ({e}); --force replaces them");
            None
        }
        Err(e) => {
            return Err(Failure::refused(anyhow::Error::new(e).context(format!(
                "cannot compare with what {object} holds; nothing was imported (re-run with --force to replace it)"
            ))))
        }
    };
    let differs = stored.as_ref().is_some_and(|s| !s.same_secrets(candidate));
    if let Some(s) = stored.as_ref().filter(|_| differs && !force) {
        return Err(Failure::refused(anyhow!(
            "{object} holds different credentials (generation {}, root token sha256 {}); nothing was imported; re-run with --force to replace them (the replaced shares are kept in the history)",
            s.generation,
            s.root_token.fingerprint()
        )));
    }
    if stored.is_some() && !differs {
        return Ok(ImportReport {
            object,
            result: "already stored",
            generation: candidate.generation,
            proof: None,
            recipients: store
                .recorded_recipients()
                .await
                .map_err(Failure::refused)?
                .iter()
                .map(ToString::to_string)
                .collect(),
        });
    }
    let proof = prove(cluster, candidate, stored.as_ref())
        .await
        .map_err(|e| {
            Failure::refused(
                anyhow::Error::new(e).context(format!("nothing was imported into {object}")),
            )
        })?;
    if let Some(old) = stored.filter(|_| differs) {
        if !ctx.confirm(&format!(
            "Replace the credentials in {object} (generation {}) with those from the file (generation {})?",
            old.generation, candidate.generation
        ))? {
            return Err(Failure::refused(anyhow!("the replacement was not confirmed; nothing was imported")));
        }
        keep_in_history(candidate, &old);
    }
    // Explicit recipients win; otherwise keep what the Secret records; a new
    // Secret is encrypted for whoever the file was encrypted for.
    let store = match store.envelope().sealing() {
        Sealing::Inherit
            if store
                .recorded_recipients()
                .await
                .map_err(Failure::refused)?
                .is_empty()
                && !file_recipients.is_empty() =>
        {
            store.with_sealing(Sealing::Encrypt(file_recipients))
        }
        _ => store,
    };
    let recipients = store.write_recipients().await.map_err(Failure::refused)?;
    persist(
        &store,
        Record::Credentials(candidate),
        RetryBudget::default(),
    )
    .await
    .map_err(|e| match e {
        StoreError::Unverifiable { .. } => Failure::refused(
            anyhow::Error::new(e).context(format!("nothing was imported into {object}")),
        ),
        e => Failure::failed(
            anyhow::Error::new(e)
                .context("the import did not finish; re-run `kubectl vault credentials import`"),
        ),
    })?;
    if recipients.is_empty() {
        tracing::warn!("{object} holds the credentials as plaintext; `kubectl vault credentials encrypt --age-recipient AGE1...` encrypts them");
    }
    Ok(ImportReport {
        object,
        result: if differs { "replaced" } else { "imported" },
        generation: candidate.generation,
        proof: Some(proof),
        recipients: recipients.iter().map(ToString::to_string).collect(),
    })
}

/// Keeps the shares being replaced as a retired generation, unless the
/// candidate already holds them.
fn keep_in_history(candidate: &mut Credentials, old: &Credentials) {
    if crate::ops::import::matching_generation(old, candidate).is_some() {
        return;
    }
    candidate.history.insert(0, old.retire());
}

fn read_input(path: &Path) -> std::io::Result<zeroize::Zeroizing<String>> {
    let mut text = zeroize::Zeroizing::new(String::new());
    if path == Path::new("-") {
        std::io::stdin().read_to_string(&mut text)?;
    } else {
        std::fs::File::open(path)?.read_to_string(&mut text)?;
    }
    Ok(text)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::ops::credentials::{sample, KeyGeneration};
    use crate::ops::secret::Secret;

    fn with_history() -> Credentials {
        let mut c = sample(3, 2);
        c.generation = 2;
        c.history.push(KeyGeneration {
            recovery_keys_b64: vec![],
            generation: 1,
            unseal_keys_b64: vec![Secret::new("old-0"), Secret::new("old-1")],
            key_threshold: 1,
            key_shares: 2,
            retired_at: "2026-11-24T00:00:00Z".into(),
            root_token: None,
            cluster_id: String::new(),
        });
        c
    }

    #[test]
    fn a_replaced_generation_is_kept_once() {
        let old = with_history();
        let mut new = sample(3, 2);
        new.unseal_keys_b64 = vec![Secret::new("n0"), Secret::new("n1"), Secret::new("n2")];
        keep_in_history(&mut new, &old);
        assert_eq!(new.history.len(), 1);
        assert_eq!(new.history[0].generation, 2);
        keep_in_history(&mut new, &old);
        assert_eq!(new.history.len(), 1, "not added twice");
    }
}
