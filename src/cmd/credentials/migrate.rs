//! `credentials encrypt|decrypt`: move the stored Secret between plaintext
//! and SOPS in one atomic, read-back write.

use super::loaded;
use crate::cli::credentials::MigrateArgs;
use crate::cmd::{Context, Failure};
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};
use crate::store::envelope::Sealing;
use crate::store::kube_secret::SecretStore;
use crate::store::sops::Recipient;
use anyhow::anyhow;
use serde::Serialize;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Direction {
    Encrypt,
    Decrypt,
}

#[derive(Debug, Serialize)]
struct MigrateReport {
    object: String,
    result: &'static str,
    recipients: Vec<String>,
}

/// Re-writes the stored credentials in the other envelope.
///
/// # Expected flow
/// Take the lock; refuse while a checkpoint exists (an operation is in
/// flight); read and open the current document; replace the Secret in one
/// write (data and annotation together, with the resourceVersion read); read
/// it back, open it and compare.
///
/// # Guarantees
/// A crash at any point leaves the Secret holding either the old or the new
/// form, complete: the replace is one atomic write, so no checkpoint is
/// needed. The store refuses to encrypt for recipients no identity here
/// holds, so the new form is always one this run has opened.
pub(super) async fn run(
    ctx: &Context<'_>,
    args: MigrateArgs,
    direction: Direction,
) -> Result<(), Failure> {
    let recipients = ctx.global.envelope.age_recipients.clone();
    if direction == Direction::Encrypt && recipients.is_empty() {
        return Err(Failure::refused(anyhow!(
            "no age recipient given: pass --age-recipient AGE1... (repeatable) or set SOPS_AGE_RECIPIENTS"
        )));
    }
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let result = guard
        .fenced(migrate_locked(ctx, store, direction, recipients))
        .await
        .map_err(Failure::failed)?;
    let report = result?;
    ctx.printer
        .value(&report, |r| {
            let form = if r.recipients.is_empty() {
                "plaintext JSON".to_owned()
            } else {
                format!("SOPS-encrypted for {}", r.recipients.join(", "))
            };
            format!("{} {}: {form}.\n", r.object, r.result)
        })
        .map_err(Failure::failed)
}

async fn migrate_locked(
    ctx: &Context<'_>,
    store: SecretStore,
    direction: Direction,
    recipients: Vec<Recipient>,
) -> Result<MigrateReport, Failure> {
    let object = store.credentials_object();
    if let Some(checkpoint) = store.load_checkpoint().await.map_err(Failure::refused)? {
        return Err(Failure::refused(anyhow!(
            "an operation is in flight ({} exists); finish it with `{}` first",
            store.checkpoint_object(),
            checkpoint.resume_command()
        )));
    }
    let (credentials, current) = loaded(&store).await?;
    let target: Vec<String> = recipients.iter().map(ToString::to_string).collect();
    let same_set = {
        let (mut a, mut b) = (current.clone(), target.clone());
        a.sort();
        b.sort();
        a == b
    };
    if same_set {
        return Ok(MigrateReport {
            object,
            result: "is already in that form",
            recipients: target,
        });
    }
    let sealing = match direction {
        Direction::Decrypt => {
            if !ctx.confirm(&format!(
                "Store {object} as plaintext, readable by anyone who can read Secrets in namespace {}?",
                ctx.namespace
            ))? {
                return Err(Failure::refused(anyhow!("decrypt was not confirmed; nothing was changed")));
            }
            Sealing::Plaintext
        }
        Direction::Encrypt => Sealing::Encrypt(recipients.clone()),
    };
    let store = store.with_sealing(sealing);
    persist(
        &store,
        Record::Credentials(&credentials),
        RetryBudget::default(),
    )
    .await
    .map_err(|e| match e {
        StoreError::Unverifiable { .. } => {
            Failure::refused(anyhow::Error::new(e).context(format!("{object} was not changed")))
        }
        e => Failure::failed(anyhow::Error::new(e).context(format!(
            "re-run `kubectl vault credentials {}`",
            direction.verb()
        ))),
    })?;
    Ok(MigrateReport {
        object,
        result: match direction {
            Direction::Encrypt => "was re-written",
            Direction::Decrypt => "was decrypted",
        },
        recipients: target,
    })
}

impl Direction {
    fn verb(self) -> &'static str {
        match self {
            Direction::Encrypt => "encrypt",
            Direction::Decrypt => "decrypt",
        }
    }
}
