//! A fenced cluster stays fenced: `unseal`, `unseal --watch` and the hook
//! refuse to unseal a cluster that a failover demoted.
//!
//! Owns only that refusal. A cluster can tell in two ways: its credentials
//! Secret is marked `demoted` (the failover reached it), or its mark names
//! the DR state's location and that state names another primary at a newer
//! epoch (the failover could not reach it; the fence is recorded there).
//! A standby's mark is not refused: unsealing a standby splits no brain.
//! A DR state that cannot be read is logged and does not block an unseal.

use crate::cmd::dr::{
    EPOCH_ANNOTATION, GROUP_ANNOTATION, MEMBER_ANNOTATION, PRIMARY_ANNOTATION, ROLE_ANNOTATION,
    STATE_ANNOTATION,
};
use crate::cmd::Failure;
use crate::ops::dr::state::StateStore;
use anyhow::anyhow;
use k8s_openapi::api::core::v1::Secret as KubeSecret;
use kube::Api;
use std::time::Duration;

/// The role written on a demoted primary's credentials Secret.
pub const DEMOTED: &str = "demoted";

/// Refuses (exit 1) when Secret `namespace/secret` says its cluster was demoted.
/// A Secret that cannot be read is left to the caller's own checks.
pub async fn refuse_if_demoted(
    client: &kube::Client,
    namespace: &str,
    secret: &str,
) -> Result<(), Failure> {
    let api: Api<KubeSecret> = Api::namespaced(client.clone(), namespace);
    let Ok(Some(s)) = api.get_opt(secret).await else {
        return Ok(());
    };
    let Some(a) = s.metadata.annotations else {
        return Ok(());
    };
    let get = |k: &str| a.get(k).cloned().unwrap_or_else(|| "?".to_owned());
    let member = get(MEMBER_ANNOTATION);
    let file = config_hint(a.get(GROUP_ANNOTATION).map(String::as_str));
    let refuse = |epoch: String, primary: String| {
        Failure::refused(anyhow!(
            "{namespace}/{secret} belongs to DR group member {member}, demoted at epoch {epoch}: {primary} is the primary now, and unsealing this cluster would give clients two primaries; nothing was changed. To rejoin it as a standby, run `kubectl vault dr sync --config {file} --standby {member}`"
        ))
    };
    let role = a.get(ROLE_ANNOTATION).map(String::as_str);
    if role == Some(DEMOTED) {
        return Err(refuse(get(EPOCH_ANNOTATION), get(PRIMARY_ANNOTATION)));
    }
    let (Some(location), Some(epoch)) = (
        a.get(STATE_ANNOTATION),
        a.get(EPOCH_ANNOTATION).and_then(|e| e.parse::<u64>().ok()),
    ) else {
        return Ok(());
    };
    if role != Some("primary") {
        return Ok(());
    }
    let state = match crate::snapshot::location::Location::parse(location)
        .ok()
        .as_ref()
        .and_then(crate::store::dr_state::SharedState::of)
    {
        Some(store) => tokio::time::timeout(Duration::from_secs(10), store.load()).await,
        None => return Ok(()),
    };
    match state {
        Ok(Ok(Some(v))) if v.state.primary != member && v.state.epoch > epoch => {
            Err(refuse(v.state.epoch.to_string(), v.state.primary))
        }
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not read the DR state this cluster's Secret names; unsealing as asked");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(state = %location, "the DR state this cluster's Secret names did not answer; unsealing as asked");
            Ok(())
        }
    }
}

/// What to pass to `--config` in a hint: the file defining the group the
/// Secret's mark names (a Secret marked before the group was recorded
/// names no group).
fn config_hint(group: Option<&str>) -> String {
    match group.filter(|g| !g.is_empty()) {
        Some(g) => format!("<the file that defines DR group \"{g}\">"),
        None => "<the DR group file>".to_owned(),
    }
}

/// [`refuse_if_demoted`] for the credentials Secret of `cluster`
/// (`--secret-name` or the workload's default).
pub async fn check(
    ctx: &crate::cmd::Context<'_>,
    cluster: &crate::transport::discover::KubeCluster,
    secret_name: Option<&str>,
) -> Result<(), Failure> {
    let name = secret_name.map_or_else(
        || crate::store::kube_secret::default_secret_name(&cluster.workload_name()),
        str::to_owned,
    );
    refuse_if_demoted(&ctx.client, &ctx.namespace, &name).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_hint_names_the_group_file() {
        assert_eq!(
            super::config_hint(Some("prod")),
            "<the file that defines DR group \"prod\">"
        );
        assert_eq!(super::config_hint(Some("")), "<the DR group file>");
        assert_eq!(super::config_hint(None), "<the DR group file>");
    }
}
