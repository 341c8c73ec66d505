//! Operator actions on a running sandbox: faults and pod lifecycle.
//!
//! Owns the one implementation behind both the library's `Cluster` methods
//! and the `POST /sandbox/v1/<op>` endpoints the CLI calls. The wire shape is
//! `{"op": "<op>", ...fields}`.

use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::faults::SecretFault;
use crate::state::Sandbox;

/// One operator action.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Control {
    /// SIGKILL and restart a pod's server (comes back sealed).
    RestartPod { pod: String },
    /// Restart every pod.
    RestartAll,
    /// Kill, delete data, start again uninitialized.
    WipePod { pod: String },
    /// The pod disappears until scale/restore.
    RemovePod { pod: String },
    /// A removed pod comes back.
    RestorePod { pod: String },
    /// Set spec.replicas.
    Scale { replicas: u32 },
    /// `helm upgrade` with new values: config, replicas and image change,
    /// every pod is recreated on the new spec with its PVC kept.
    Reconfigure(crate::options::Reconfigure),
    /// The next `count` writes to Secret `name` fail (`mode`: 500, 409, drop).
    FailSecretWrites {
        name: String,
        count: u32,
        mode: String,
    },
    /// The next `count` exec streams close before their status frame.
    DropExec { count: u32 },
    /// Delay added to every API request.
    Latency { ms: u64 },
    /// Deny `verb` on `resource`.
    Forbid { verb: String, resource: String },
    /// Lift every denial.
    AllowAll,
    /// Stop (`up: false`) or start the transit seal provider.
    SealProvider { up: bool },
    /// Stop the server (the CLI's `down`).
    Shutdown,
}

impl Sandbox {
    fn ordinal(&self, pod: &str) -> anyhow::Result<u32> {
        let opts = self.fleet.options();
        opts.ordinal_of(pod)
            .or_else(|| pod.parse().ok())
            .with_context(|| format!("{pod:?} is not a pod of StatefulSet {}", opts.name))
    }

    /// Performs one operator action.
    pub async fn control(&self, c: Control) -> anyhow::Result<()> {
        match c {
            Control::RestartPod { pod } => self.fleet.restart_pod(self.ordinal(&pod)?).await,
            Control::RestartAll => self.fleet.restart_all().await,
            Control::WipePod { pod } => self.fleet.wipe_pod(self.ordinal(&pod)?).await,
            Control::RemovePod { pod } => self.fleet.remove_pod(self.ordinal(&pod)?).await,
            Control::RestorePod { pod } => self.fleet.restore_pod(self.ordinal(&pod)?).await,
            Control::Scale { replicas } => self.fleet.scale(replicas).await,
            Control::Reconfigure(change) => self.fleet.reconfigure(&change).await,
            Control::FailSecretWrites { name, count, mode } => {
                let fault = SecretFault::parse(&mode)
                    .with_context(|| format!("unknown fault mode {mode:?} (500, 409, drop)"))?;
                self.faults.fail_secret_writes(&name, count, fault);
                Ok(())
            }
            Control::DropExec { count } => {
                self.faults.drop_exec_streams(count);
                Ok(())
            }
            Control::Latency { ms } => {
                self.faults.set_latency(Duration::from_millis(ms));
                Ok(())
            }
            Control::Forbid { verb, resource } => {
                self.faults.forbid(&verb, &resource);
                Ok(())
            }
            Control::AllowAll => {
                self.faults.allow_all();
                Ok(())
            }
            Control::SealProvider { up } => self.fleet.seal_provider(up).await,
            Control::Shutdown => {
                // Signal a moment later so the caller still gets its answer.
                let tx = self.shutdown.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    tx.send_replace(true);
                });
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_is_op_plus_fields() {
        let c: Control = serde_json::from_str(
            r#"{"op":"fail-secret-writes","name":"s","count":2,"mode":"drop"}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Control::FailSecretWrites {
                name: "s".into(),
                count: 2,
                mode: "drop".into()
            }
        );
        let c: Control = serde_json::from_str(
            r#"{"op":"reconfigure","storage":"raft","replicas":3,"retry_join":true}"#,
        )
        .unwrap();
        assert_eq!(
            c,
            Control::Reconfigure(crate::options::Reconfigure {
                storage: Some(crate::Storage::Raft),
                replicas: Some(3),
                retry_join: Some(true),
                ..Default::default()
            })
        );
        assert_eq!(
            serde_json::to_value(Control::AllowAll).unwrap(),
            serde_json::json!({"op": "allow-all"})
        );
    }
}
