//! The operation lock: one `coordination.k8s.io/v1` Lease per workload.
//!
//! Owns mutual exclusion between a human, the hook Job and its retries. A
//! holder renews the Lease while it works; a Lease whose holder stopped
//! renewing is taken over once it has expired. Takeover uses the
//! resourceVersion that was read, so two contenders cannot both win.
//!
//! # Caveats
//! A holder that dies leaves the Lease until `lease_duration` passes; the next
//! run waits that long at most.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// How long a Lease stays held without renewal: the longest a re-run waits
/// after a run that died holding it. Renewed every third of it.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("Lease {object} is held by {holder}; gave up after {waited:?} (another kubectl-vault run or the hook Job is working; retry when it has finished)")]
    Busy {
        object: String,
        holder: String,
        waited: Duration,
    },
    #[error("not allowed to use Lease {object}: {reason}")]
    Forbidden { object: String, reason: String },
    #[error("could not use Lease {object}: {reason}")]
    Unavailable { object: String, reason: String },
}

/// A held lock; renewed in the background until [`LeaseGuard::release`].
pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    renewer: JoinHandle<()>,
}

pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    holder: String,
    duration: Duration,
}

impl LeaseLock {
    pub fn new(
        client: kube::Client,
        namespace: &str,
        workload: &str,
        holder: &str,
        duration: Duration,
    ) -> Self {
        LeaseLock {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: format!("{workload}-kubectl-vault"),
            holder: holder.to_owned(),
            duration,
        }
    }

    fn object(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Waits up to `timeout` for the lock.
    pub async fn acquire(&self, timeout: Duration) -> Result<LeaseGuard, LockError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.try_acquire().await? {
                None => {
                    tracing::debug!(lease = %self.object(), "lock acquired");
                    let renewer = tokio::spawn(renew(
                        self.api.clone(),
                        self.name.clone(),
                        self.holder.clone(),
                        self.duration,
                    ));
                    return Ok(LeaseGuard {
                        api: self.api.clone(),
                        name: self.name.clone(),
                        renewer,
                    });
                }
                Some(holder) if Instant::now() + backoff < deadline => {
                    tracing::info!(lease = %self.object(), %holder, "waiting for the lock");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Some(holder) => {
                    return Err(LockError::Busy {
                        object: self.object(),
                        holder,
                        waited: timeout,
                    })
                }
            }
        }
    }

    /// `None` when acquired, else the current holder.
    async fn try_acquire(&self) -> Result<Option<String>, LockError> {
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?;
        let now = jiff::Timestamp::now();
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: existing
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.holder.clone()),
                lease_duration_seconds: Some(
                    i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX),
                ),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                ..LeaseSpec::default()
            }),
        };
        let result = match &existing {
            None => self.api.create(&PostParams::default(), &lease).await,
            Some(current) => {
                if let Some(holder) = live_holder(current, now) {
                    if holder != self.holder {
                        return Ok(Some(holder));
                    }
                }
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => Ok(None),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Some("another contender".to_owned())),
            Err(e) => Err(self.error(e)),
        }
    }

    fn error(&self, e: kube::Error) -> LockError {
        match e {
            kube::Error::Api(s) if s.code == 403 => LockError::Forbidden {
                object: self.object(),
                reason: s.message,
            },
            other => LockError::Unavailable {
                object: self.object(),
                reason: other.to_string(),
            },
        }
    }
}

/// The holder of an unexpired, held Lease.
fn live_holder(lease: &Lease, now: jiff::Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let duration =
        jiff::SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
    (renewed.checked_add(duration).ok()? > now).then_some(holder)
}

async fn renew(api: Api<Lease>, name: String, holder: String, duration: Duration) {
    let period = duration / 3;
    loop {
        tokio::time::sleep(period).await;
        let Ok(mut lease) = api.get(&name).await else {
            continue;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(holder.as_str()) {
            tracing::warn!(lease = %name, "lost the lock to another holder");
            return;
        }
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(e) = api.replace(&name, &PostParams::default(), &lease).await {
            tracing::warn!(lease = %name, error = %e, "could not renew the lock");
        }
    }
}

impl LeaseGuard {
    /// Stops renewing and deletes the Lease so the next run need not wait.
    pub async fn release(self) {
        self.renewer.abort();
        if let Err(e) = self.api.delete(&self.name, &DeleteParams::default()).await {
            tracing::warn!(lease = %self.name, error = %e, "could not release the lock; it expires on its own");
        }
    }
}
