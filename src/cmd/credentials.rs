//! `kubectl vault credentials show|export|import|encrypt|decrypt`.
//!
//! Wires the credentials Secret, its SOPS envelope, manifests and the import
//! proof together, and owns every prompt around them. Secrets reach stdout
//! only through `show --reveal` or an explicit `export`; a file written with
//! `-f` is created with mode 0600 and never overwritten.

use crate::cli::credentials::{CredentialsCommand, ExportArgs, ImportArgs, MigrateArgs, ShowArgs};
use crate::cmd::{holder_identity, Context, Failure};
use crate::ops::credentials::{Credentials, KeyGeneration};
use crate::ops::import::{prove, Proof};
use crate::ops::secret::Secret;
use crate::ops::store::{persist, CredentialStore, Record, RetryBudget, StoreError};
use crate::output::table;
use crate::store::envelope::{format_recipients, Sealing};
use crate::store::kube_secret::SecretStore;
use crate::store::lease::{LeaseGuard, LeaseLock};
use crate::store::manifest;
use crate::store::sops::Recipient;
use crate::transport::discover::KubeCluster;
use anyhow::anyhow;
use serde::Serialize;
use std::io::{Read as _, Write as _};
use std::path::Path;
use std::time::Duration;

pub async fn run(ctx: &Context<'_>, command: CredentialsCommand) -> Result<(), Failure> {
    match command {
        CredentialsCommand::Show(args) => show(ctx, args).await,
        CredentialsCommand::Export(args) => export(ctx, args).await,
        CredentialsCommand::Import(args) => import(ctx, args).await,
        CredentialsCommand::Encrypt(args) => migrate(ctx, args, Direction::Encrypt).await,
        CredentialsCommand::Decrypt(args) => migrate(ctx, args, Direction::Decrypt).await,
    }
}

/// One secret as `show` prints it: always its fingerprint, its value only on `--reveal`.
#[derive(Debug, Serialize)]
struct SecretView {
    sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

impl SecretView {
    fn of(secret: &Secret, reveal: bool) -> Self {
        SecretView {
            sha256: secret.fingerprint(),
            value: reveal.then(|| secret.expose().to_owned()),
        }
    }
}

#[derive(Debug, Serialize)]
struct GenerationView {
    generation: u32,
    key_threshold: u8,
    key_shares: u8,
    retired_at: String,
    shares: Vec<SecretView>,
}

#[derive(Debug, Serialize)]
struct CredentialsView {
    object: String,
    encrypted: bool,
    recipients: Vec<String>,
    generation: u32,
    key_threshold: u8,
    key_shares: u8,
    cluster_id: String,
    created_at: String,
    server_version: String,
    shares: Vec<SecretView>,
    root_token: SecretView,
    history: Vec<GenerationView>,
}

impl CredentialsView {
    fn new(object: String, recipients: Vec<String>, c: &Credentials, reveal: bool) -> Self {
        CredentialsView {
            object,
            encrypted: !recipients.is_empty(),
            recipients,
            generation: c.generation,
            key_threshold: c.key_threshold,
            key_shares: c.key_shares,
            cluster_id: c.cluster_id.clone(),
            created_at: c.created_at.clone(),
            server_version: c.server_version.clone(),
            shares: c
                .unseal_keys_b64
                .iter()
                .map(|s| SecretView::of(s, reveal))
                .collect(),
            root_token: SecretView::of(&c.root_token, reveal),
            history: c
                .history
                .iter()
                .map(|g| GenerationView {
                    generation: g.generation,
                    key_threshold: g.key_threshold,
                    key_shares: g.key_shares,
                    retired_at: g.retired_at.clone(),
                    shares: g
                        .unseal_keys_b64
                        .iter()
                        .map(|s| SecretView::of(s, reveal))
                        .collect(),
                })
                .collect(),
        }
    }
}

async fn loaded(store: &SecretStore) -> Result<(Credentials, Vec<String>), Failure> {
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

async fn show(ctx: &Context<'_>, args: ShowArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let (c, recipients) = loaded(&store).await?;
    let object = store.credentials_object();
    if args.reveal
        && !ctx.confirm(&format!(
            "Print the unseal shares and root token of {object} to this terminal?"
        ))?
    {
        return Err(Failure::refused(anyhow!(
            "--reveal was not confirmed; nothing was printed"
        )));
    }
    let view = CredentialsView::new(object, recipients, &c, args.reveal);
    ctx.printer
        .value(&view, show_table)
        .map_err(Failure::failed)
}

fn show_table(v: &CredentialsView) -> String {
    let envelope = if v.encrypted {
        format!("SOPS/age, for {}", v.recipients.join(", "))
    } else {
        "plaintext JSON".to_owned()
    };
    let mut text = format!(
        "Credentials in {} ({envelope})\nGeneration {}: threshold {} of {} shares; cluster {}; created {}\n\n",
        v.object, v.generation, v.key_threshold, v.key_shares, v.cluster_id, v.created_at
    );
    let reveal = v.root_token.value.is_some();
    let mut rows = Vec::new();
    let mut row = |generation: u32, what: String, s: &SecretView| {
        let mut cells = vec![generation.to_string(), what, s.sha256.clone()];
        if reveal {
            cells.push(s.value.clone().unwrap_or_default());
        }
        rows.push(cells);
    };
    row(v.generation, "root token".into(), &v.root_token);
    for (i, s) in v.shares.iter().enumerate() {
        row(v.generation, format!("share {}", i + 1), s);
    }
    for g in &v.history {
        for (i, s) in g.shares.iter().enumerate() {
            row(
                g.generation,
                format!("share {} (retired {})", i + 1, g.retired_at),
                s,
            );
        }
    }
    let headers: &[&str] = if reveal {
        &["GENERATION", "SECRET", "SHA256", "VALUE"]
    } else {
        &["GENERATION", "SECRET", "SHA256"]
    };
    text.push_str(&table(headers, &rows));
    if !reveal {
        text.push_str(
            "\nValues are hidden; `kubectl vault credentials show --reveal` prints them.\n",
        );
    }
    text
}

async fn export(ctx: &Context<'_>, args: ExportArgs) -> Result<(), Failure> {
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
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())
                .and_then(|()| out.flush())
                .map_err(Failure::failed)?;
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

#[derive(Debug, Serialize)]
struct ImportReport {
    object: String,
    result: &'static str,
    generation: u32,
    proof: Option<Proof>,
    recipients: Vec<String>,
}

async fn import(ctx: &Context<'_>, args: ImportArgs) -> Result<(), Failure> {
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

    let guard = lock(ctx, &cluster, &args.store.lock_timeout).await?;
    let result = import_locked(
        ctx,
        &cluster,
        store,
        &mut candidate,
        imported.recipients,
        args.force,
    )
    .await;
    guard.release().await;
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
                Some(Proof::RootTokenAccepted { pod }) => {
                    format!("its root token is accepted by {pod}")
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
    candidate.history.insert(
        0,
        KeyGeneration {
            generation: old.generation,
            unseal_keys_b64: old.unseal_keys_b64.clone(),
            key_threshold: old.key_threshold,
            key_shares: old.key_shares,
            retired_at: crate::ops::checkpoint::now_rfc3339(),
        },
    );
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
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
async fn migrate(
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
    let guard = lock(ctx, &cluster, &args.store.lock_timeout).await?;
    let result = migrate_locked(ctx, store, direction, recipients).await;
    guard.release().await;
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

async fn lock(
    ctx: &Context<'_>,
    cluster: &KubeCluster,
    timeout: &Duration,
) -> Result<LeaseGuard, Failure> {
    LeaseLock::new(
        ctx.client.clone(),
        &ctx.namespace,
        &cluster.workload_name(),
        &holder_identity(),
        Duration::from_secs(30),
    )
    .acquire(*timeout)
    .await
    .map_err(Failure::refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::credentials::sample;

    fn with_history() -> Credentials {
        let mut c = sample(3, 2);
        c.generation = 2;
        c.history.push(KeyGeneration {
            generation: 1,
            unseal_keys_b64: vec![Secret::new("old-0"), Secret::new("old-1")],
            key_threshold: 1,
            key_shares: 2,
            retired_at: "2026-11-24T00:00:00Z".into(),
        });
        c
    }

    #[test]
    fn show_is_redacted_unless_revealed() {
        let c = with_history();
        let object = "Secret vault/openbao-unseal".to_owned();
        let recipients = vec!["age1example".to_owned()];
        let hidden = CredentialsView::new(object.clone(), recipients.clone(), &c, false);
        let table = show_table(&hidden);
        assert!(
            !table.contains("share-0") && !table.contains("s.root"),
            "{table}"
        );
        insta::assert_snapshot!("show-redacted", table);
        let json = serde_json::to_string(&hidden).unwrap();
        assert!(
            !json.contains("share-0") && !json.contains("\"value\""),
            "{json}"
        );
        let shown = show_table(&CredentialsView::new(object, recipients, &c, true));
        insta::assert_snapshot!("show-revealed", shown);
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
