//! `kubectl vault checkpoint show|abandon`: look at, or let go of, an
//! interrupted operation's checkpoint.
//!
//! Owns the wording and the confirmation. Whether a checkpoint may be let go
//! of is decided by [`Checkpoint::abandon_risk`].

use crate::cli::checkpoint::{CheckpointArgs, CheckpointCommand};
use crate::cmd::{Context, Failure};
use crate::ops::checkpoint::Checkpoint;
use crate::ops::store::{CredentialStore, StoreError};
use crate::output::table;

#[derive(Debug, serde::Serialize)]
struct Shown {
    object: String,
    present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    holder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    updated_at: Option<String>,
    /// Key generations it holds (numbers only).
    generations: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resume_command: Option<String>,
    /// Why `abandon` would refuse, if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    keeps: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    unreadable: Option<String>,
}

pub async fn run(ctx: &Context<'_>, command: CheckpointCommand) -> Result<(), Failure> {
    match command {
        CheckpointCommand::Show(args) => show(ctx, args).await,
        CheckpointCommand::Abandon(args) => abandon(ctx, args).await,
    }
}

async fn show(ctx: &Context<'_>, args: CheckpointArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let stored = store.load_credentials().await.ok().flatten();
    let mut shown = Shown {
        object: store.checkpoint_object(),
        present: true,
        operation: None,
        phase: None,
        holder: None,
        updated_at: None,
        generations: vec![],
        resume_command: None,
        keeps: None,
        unreadable: None,
    };
    match store.load_checkpoint().await {
        Ok(None) => shown.present = false,
        Ok(Some(c)) => {
            shown.operation = Some(c.operation().to_string());
            shown.phase = Some(c.phase.name().to_owned());
            shown.holder = Some(c.holder.clone());
            shown.updated_at = Some(c.updated_at.clone());
            shown.generations = c
                .candidate_credentials()
                .iter()
                .map(|k| k.generation)
                .collect();
            shown.resume_command = Some(c.resume_command().to_owned());
            shown.keeps = c.abandon_risk(stored.as_ref()).map(str::to_owned);
        }
        Err(e) => shown.unreadable = Some(e.to_string()),
    }
    ctx.printer
        .value(&shown, |s| {
            let row = |k: &str, v: String| vec![k.to_owned(), v];
            let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
            let mut rows = vec![row("OBJECT", s.object.clone())];
            if !s.present {
                rows.push(row("STATE", "no operation is in flight".into()));
            } else if let Some(why) = &s.unreadable {
                rows.push(row("STATE", format!("unreadable: {why}")));
                rows.push(row(
                    "NEXT",
                    "`kubectl vault checkpoint abandon` clears it".into(),
                ));
            } else {
                rows.push(row("OPERATION", or_dash(&s.operation)));
                rows.push(row("PHASE", or_dash(&s.phase)));
                rows.push(row("HOLDER", or_dash(&s.holder)));
                rows.push(row("UPDATED", or_dash(&s.updated_at)));
                let generations = s.generations.iter().map(u32::to_string).collect::<Vec<_>>();
                rows.push(row(
                    "KEY GENERATIONS",
                    if generations.is_empty() {
                        "-".into()
                    } else {
                        generations.join(", ")
                    },
                ));
                rows.push(row("RESUME", or_dash(&s.resume_command)));
                if let Some(keeps) = &s.keeps {
                    rows.push(row("HOLDS", keeps.clone()));
                }
            }
            table(&["FIELD", "VALUE"], &rows)
        })
        .map_err(Failure::failed)
}

async fn abandon(ctx: &Context<'_>, args: CheckpointArgs) -> Result<(), Failure> {
    let cluster = ctx.cluster().await?;
    let store = ctx.store(&cluster, args.store.secret_name.as_deref());
    let guard = ctx.lock(&cluster, args.store.lock_timeout).await?;
    let result = guard
        .fenced(abandon_locked(ctx, &store))
        .await
        .map_err(Failure::failed)?;
    result
}

async fn abandon_locked(ctx: &Context<'_>, store: &impl CredentialStore) -> Result<(), Failure> {
    let object = store.checkpoint_object();
    let question = match store.load_checkpoint().await {
        Ok(None) => {
            ctx.printer
                .line(&format!("{object} does not exist: nothing to abandon"));
            return Ok(());
        }
        Ok(Some(c)) => {
            let stored = store.load_credentials().await.map_err(Failure::refused)?;
            refuse_if_needed(&c, stored.as_ref(), &object)?;
            format!(
                "Abandon the interrupted {} in {object} (phase {})? `{}` can then no longer resume it",
                c.operation(),
                c.phase.name(),
                c.resume_command()
            )
        }
        // Only a document that cannot be parsed is let go of; one that is
        // encrypted for a key this run lacks may hold keys.
        Err(e @ StoreError::Corrupt { .. }) => {
            format!("Delete {object}, which cannot be read ({e})?")
        }
        Err(e) => {
            return Err(Failure::refused(anyhow::Error::new(e).context(format!(
                "{object} cannot be opened here, so what it holds is unknown; not abandoning it"
            ))))
        }
    };
    if !ctx.confirm(&question)? {
        return Err(Failure::refused(anyhow::anyhow!(
            "not confirmed; {object} is unchanged"
        )));
    }
    store.delete_checkpoint().await.map_err(Failure::failed)?;
    ctx.printer.line(&format!("abandoned: {object} deleted"));
    Ok(())
}

fn refuse_if_needed(
    c: &Checkpoint,
    stored: Option<&crate::ops::credentials::Credentials>,
    object: &str,
) -> Result<(), Failure> {
    match c.abandon_risk(stored) {
        None => Ok(()),
        Some(keeps) => Err(Failure::refused(anyhow::anyhow!(
            "{object} holds {keeps}; abandoning it could lose them. Finish the {} with `{}` instead",
            c.operation(),
            c.resume_command()
        ))),
    }
}
