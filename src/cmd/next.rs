//! The one command that is right next, from what the pods and the store say.
//!
//! Decides the "run X next" hint of `status` and of the commands that stop
//! because the cluster is not in the state they need, so that following
//! the hints ends at a healthy cluster, or at a step a person must decide
//! (which snapshot, where the keys are), never in a circle. Knows nothing
//! about how the facts were read.

use crate::ops::status::NodeObservation;

/// What the store holds, as far as the next step depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stored<'a> {
    pub credentials: bool,
    /// The resume command of a pending checkpoint.
    pub resume: Option<&'a str>,
}

/// The hint for a pod crash-looping because its image no longer serves
/// file storage (OpenBao 2.7 removed it).
pub fn pin_file_storage_image(pod: &str) -> String {
    format!(
        "pod {pod} crash-loops: its image (OpenBao 2.7 or later) refuses `storage \"file\"` (`unknown storage type file`). The data is intact on its volume. Pin the image back to 2.6.x (openbao chart: server.image.tag=2.6.2), then run `kubectl vault migrate --to raft --backup-to LOCATION` before upgrading"
    )
}

/// The next command to run, with why; `None` when every pod is initialized
/// and unsealed (or the pods could not be read: nothing to advise then).
pub fn next_step(pods: &[NodeObservation], stored: Stored<'_>) -> Option<String> {
    if let Some(resume) = stored.resume {
        return Some(format!(
            "an interrupted operation is pending: run `{resume}` to finish it"
        ));
    }
    let seals: Vec<_> = pods.iter().filter_map(|p| p.seal.as_ref()).collect();
    if seals.is_empty() || seals.len() < pods.len() {
        return None;
    }
    let initialized = seals.iter().filter(|s| s.initialized).count();
    let sealed = seals.iter().filter(|s| s.initialized && s.sealed).count();
    Some(match (stored.credentials, initialized) {
        (false, 0) => "the cluster is not initialized: run `kubectl vault init`".to_owned(),
        (false, _) => "the cluster is initialized but no credentials are stored: run `kubectl vault credentials import` with the keys you hold".to_owned(),
        (true, 0) => RECOVER.to_owned(),
        (true, _) if sealed > 0 => "pods are sealed: run `kubectl vault unseal`".to_owned(),
        (true, n) if n < seals.len() => {
            "pods are not initialized: run `kubectl vault join`".to_owned()
        }
        (true, _) => return None,
    })
}

/// The data of every pod is gone while the keys survived: only a person
/// knows which snapshot to bring back.
pub const RECOVER: &str = "no pod is initialized but the keys survived (the data was lost): choose a snapshot and run `kubectl vault recover --from LOCATION`";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::node::SealStatus;

    fn pod(initialized: bool, sealed: bool) -> NodeObservation {
        NodeObservation {
            pod: "p".into(),
            seal: Some(SealStatus {
                initialized,
                sealed,
                ..Default::default()
            }),
            leader: None,
            error: None,
        }
    }

    fn keys(credentials: bool) -> Stored<'static> {
        Stored {
            credentials,
            resume: None,
        }
    }

    #[test]
    fn each_state_names_one_command() {
        let step = |pods: &[NodeObservation], s| next_step(pods, s).unwrap_or_default();
        let fresh = [pod(false, true), pod(false, true)];
        assert!(step(&fresh, keys(false)).contains("`kubectl vault init`"));
        assert!(step(&fresh, keys(true)).contains("`kubectl vault recover --from"));
        let sealed = [pod(true, true), pod(true, false)];
        assert!(step(&sealed, keys(true)).contains("`kubectl vault unseal`"));
        assert!(step(&sealed, keys(false)).contains("credentials import"));
        let half = [pod(true, false), pod(false, true)];
        assert!(step(&half, keys(true)).contains("`kubectl vault join`"));
        let whole = [pod(true, false), pod(true, false)];
        assert_eq!(next_step(&whole, keys(true)), None);
        let pending = Stored {
            credentials: true,
            resume: Some("kubectl vault rotate"),
        };
        assert!(step(&whole, pending).contains("`kubectl vault rotate`"));
    }
}
