//! Kubernetes Events on the StatefulSet for every operation that changes a
//! cluster, so that `kubectl get events` tells its history: when init,
//! join, rotate, a snapshot save or restore, recover, a credentials import
//! or a checkpoint abandon started, and how it ended.
//!
//! Owns which commands are recorded and the Event object. Messages are the
//! command's own error texts, which never carry a secret. Recording is best
//! effort: a failure to record is logged and never fails the command.

use crate::cli::checkpoint::CheckpointCommand;
use crate::cli::credentials::CredentialsCommand;
use crate::cli::snapshot::SnapshotCommand;
use crate::cli::Command;
use crate::cmd::{Context, Exit, Failure};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use kube::api::{Api, ObjectMeta, PostParams};

/// The Event reason stem of a command that changes the cluster.
pub fn operation(command: &Command) -> Option<&'static str> {
    match command {
        Command::Init(_) => Some("Init"),
        Command::Join(_) => Some("Join"),
        Command::Rotate(_) => Some("Rotate"),
        Command::Recover(_) => Some("Recover"),
        Command::Migrate(_) => Some("Migrate"),
        Command::Snapshot(SnapshotCommand::Save(_)) => Some("SnapshotSave"),
        Command::Snapshot(SnapshotCommand::Restore(_)) => Some("SnapshotRestore"),
        Command::Snapshot(SnapshotCommand::Verify(v)) if v.restore_test.restore_test => {
            Some("SnapshotRestoreTest")
        }
        Command::Credentials(CredentialsCommand::Import(_)) => Some("CredentialsImport"),
        Command::Checkpoint(CheckpointCommand::Abandon(_)) => Some("CheckpointAbandon"),
        _ => None,
    }
}

/// Runs `work`, recording `<Operation>Started` before it and
/// `<Operation>Succeeded`, `Refused` or `Failed` after it.
pub async fn recorded<F>(ctx: &Context<'_>, operation: &str, work: F) -> Result<(), Failure>
where
    F: std::future::Future<Output = Result<(), Failure>>,
{
    let workload = ctx.cluster().await.ok().map(|c| c.workload_name());
    let command = format!("kubectl vault {}", command_words(operation));
    let by = crate::cmd::holder_identity();
    record(
        ctx,
        workload.as_deref(),
        "Normal",
        &format!("{operation}Started"),
        &format!("{command} started ({by})"),
    )
    .await;
    let result = work.await;
    let (type_, outcome, message) = match &result {
        Ok(()) => ("Normal", "Succeeded", format!("{command} finished")),
        Err(f) if f.exit == Exit::Refused => (
            "Warning",
            "Refused",
            format!("{command} refused: {:#}", f.error),
        ),
        Err(f) => (
            "Warning",
            "Failed",
            format!("{command} failed: {:#}", f.error),
        ),
    };
    record(
        ctx,
        workload.as_deref(),
        type_,
        &format!("{operation}{outcome}"),
        &message,
    )
    .await;
    result
}

/// `SnapshotRestore` → `snapshot restore`.
fn command_words(operation: &str) -> String {
    let mut words = String::new();
    for c in operation.chars() {
        if c.is_uppercase() && !words.is_empty() {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// Records a core/v1 Event on the StatefulSet; a failure to record is
/// logged, not fatal.
pub async fn record(
    ctx: &Context<'_>,
    workload: Option<&str>,
    type_: &str,
    reason: &str,
    message: &str,
) {
    let Some(workload) = workload else { return };
    let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{workload}-kubectl-vault-")),
            namespace: Some(ctx.namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("apps/v1".into()),
            kind: Some("StatefulSet".into()),
            name: Some(workload.to_owned()),
            namespace: Some(ctx.namespace.clone()),
            ..ObjectReference::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some(type_.to_owned()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("kubectl-vault".into()),
        source: Some(EventSource {
            component: Some("kubectl-vault".into()),
            ..Default::default()
        }),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, reason, "could not record an Event");
    }
}

#[cfg(test)]
mod tests {
    use super::command_words;

    #[test]
    fn reason_stems_read_as_the_command() {
        assert_eq!(command_words("Init"), "init");
        assert_eq!(command_words("SnapshotRestore"), "snapshot restore");
        assert_eq!(command_words("CheckpointAbandon"), "checkpoint abandon");
    }
}
