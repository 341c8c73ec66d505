//! `credentials show`: generation, threshold, fingerprints and recipients;
//! the values only with `--reveal` after a confirmation.

use super::loaded;
use crate::cli::credentials::ShowArgs;
use crate::cmd::{Context, Failure};
use crate::ops::credentials::Credentials;
use crate::ops::secret::Secret;
use crate::ops::store::CredentialStore;
use crate::output::table;
use anyhow::anyhow;
use serde::Serialize;

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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    recovery_keys: Vec<SecretView>,
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
    /// `shamir`, or the auto-unseal provider.
    seal: String,
    shares: Vec<SecretView>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    recovery_keys: Vec<SecretView>,
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
            seal: c.seal.name().to_owned(),
            recovery_keys: c
                .recovery_keys_b64
                .iter()
                .map(|s| SecretView::of(s, reveal))
                .collect(),
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
                    recovery_keys: g
                        .recovery_keys_b64
                        .iter()
                        .map(|s| SecretView::of(s, reveal))
                        .collect(),
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

pub(super) async fn run(ctx: &Context<'_>, args: ShowArgs) -> Result<(), Failure> {
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
        "Credentials in {} ({envelope})\nGeneration {}: threshold {} of {} {}; cluster {}; created {}\n\n",
        v.object,
        v.generation,
        v.key_threshold,
        v.key_shares,
        if v.seal == "shamir" {
            "shares".to_owned()
        } else {
            format!("recovery keys ({} seal)", v.seal)
        },
        v.cluster_id,
        v.created_at
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
    for (i, s) in v.recovery_keys.iter().enumerate() {
        row(v.generation, format!("recovery key {}", i + 1), s);
    }
    for g in &v.history {
        for (i, s) in g.shares.iter().enumerate() {
            row(
                g.generation,
                format!("share {} (retired {})", i + 1, g.retired_at),
                s,
            );
        }
        for (i, s) in g.recovery_keys.iter().enumerate() {
            row(
                g.generation,
                format!("recovery key {} (retired {})", i + 1, g.retired_at),
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
}
