//! The operation lock: one `coordination.k8s.io/v1` Lease per workload.
//!
//! Owns mutual exclusion between a human, the hook Job and its retries, and
//! the fence that keeps a holder that lost the Lease from writing.
//!
//! # Guarantees
//! - Takeover uses the resourceVersion that was read, so two contenders
//!   cannot both win.
//! - Expiry is judged by local observation, as client-go's leader election
//!   does: a Lease held by another holder counts as expired only after this
//!   process has seen the same resourceVersion for a whole lease duration.
//!   Clocks of other hosts are never compared with ours.
//! - A holder that has not renewed for two thirds of the duration (its
//!   renewals failed, or the process was paused) stops: every Secret write
//!   checks [`check_fence`] first, and [`LeaseGuard::fenced`] cancels the
//!   work. Others wait a full duration after the last renewal they saw, so
//!   the two never write at the same time.
//! - Release deletes the Lease only while this process still holds it, with
//!   the resourceVersion of its last renewal as a precondition.
//!
//! # Caveats
//! A holder that dies leaves the Lease until `lease_duration` passes; the next
//! run waits that long.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams, Preconditions};
use std::future::Future;
use std::sync::{Arc, Mutex};
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
    #[error("lost Lease {object} ({reason}); stopped before the next write so that the new holder's work is not overwritten; re-run to resume")]
    Lost { object: String, reason: String },
}

/// What the holder of a Lease knows about its own standing.
struct Fence {
    object: String,
    /// When the last renewal (or the acquisition) succeeded, by this host's
    /// monotonic clock, which also runs while the process is stopped.
    renewed_at: Mutex<Instant>,
    /// The resourceVersion of the last renewal, for a conditional release.
    resource_version: Mutex<Option<String>>,
    /// Set when another holder was seen.
    taken: Mutex<Option<String>>,
    /// How long after a renewal writes are still safe.
    valid_for: Duration,
}

impl Fence {
    fn check(&self) -> Result<(), LockError> {
        let lost = |reason: String| LockError::Lost {
            object: self.object.clone(),
            reason,
        };
        if let Some(holder) = lock(&self.taken).clone() {
            return Err(lost(format!("{holder} holds it now")));
        }
        let since = lock(&self.renewed_at).elapsed();
        if since >= self.valid_for {
            return Err(lost(format!("not renewed for {}s", since.as_secs())));
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fence of the Lease this process holds, if any.
static HELD: Mutex<Option<Arc<Fence>>> = Mutex::new(None);

/// Refuses a write when this process holds a Lease it may have lost. A
/// process that holds none (read-only commands) is not fenced.
pub fn check_fence() -> Result<(), LockError> {
    match lock(&HELD).clone() {
        Some(fence) => fence.check(),
        None => Ok(()),
    }
}

/// A held lock; renewed in the background until [`LeaseGuard::release`].
pub struct LeaseGuard {
    api: Api<Lease>,
    name: String,
    holder: String,
    fence: Arc<Fence>,
    renewer: JoinHandle<()>,
}

pub struct LeaseLock {
    api: Api<Lease>,
    namespace: String,
    name: String,
    holder: String,
    duration: Duration,
    /// Another holder's resourceVersion and when this lock first saw it,
    /// kept across [`Self::acquire`] calls (the watcher tries once a pass).
    seen: Mutex<Option<(String, Instant)>>,
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
            seen: Mutex::new(None),
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
            let mut seen = lock(&self.seen).clone();
            let attempt = self.try_acquire(&mut seen).await;
            *lock(&self.seen) = seen;
            match attempt? {
                Ok(resource_version) => {
                    tracing::debug!(lease = %self.object(), "lock acquired");
                    let fence = Arc::new(Fence {
                        object: self.object(),
                        renewed_at: Mutex::new(Instant::now()),
                        resource_version: Mutex::new(resource_version),
                        taken: Mutex::new(None),
                        valid_for: self.duration * 2 / 3,
                    });
                    *lock(&HELD) = Some(fence.clone());
                    let renewer = tokio::spawn(renew(
                        self.api.clone(),
                        self.name.clone(),
                        self.holder.clone(),
                        self.duration,
                        fence.clone(),
                    ));
                    return Ok(LeaseGuard {
                        api: self.api.clone(),
                        name: self.name.clone(),
                        holder: self.holder.clone(),
                        fence,
                        renewer,
                    });
                }
                Err(holder) if Instant::now() + backoff < deadline => {
                    tracing::info!(lease = %self.object(), %holder, "waiting for the lock");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(holder) => {
                    return Err(LockError::Busy {
                        object: self.object(),
                        holder,
                        waited: timeout,
                    })
                }
            }
        }
    }

    /// `Ok(resourceVersion)` when acquired, else `Err(current holder)`.
    /// `seen` is the resourceVersion of another holder's Lease and when this
    /// process first saw it.
    async fn try_acquire(
        &self,
        seen: &mut Option<(String, Instant)>,
    ) -> Result<Result<Option<String>, String>, LockError> {
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.error(e))?;
        let now = jiff::Timestamp::now();
        if let Some(current) = &existing {
            if let Some(holder) = held_by_another(current, &self.holder, seen) {
                return Ok(Err(holder));
            }
        }
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
            Some(_) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(l) => Ok(Ok(l.metadata.resource_version)),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Err("another contender".to_owned())),
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
                reason: crate::transport::api_reason(&other),
            },
        }
    }
}

/// The other holder of a Lease that has not expired by local observation:
/// its resourceVersion changed within the last lease duration, as this
/// process saw it. Renewal times written by other hosts are not compared
/// with this host's clock.
fn held_by_another(
    lease: &Lease,
    me: &str,
    seen: &mut Option<(String, Instant)>,
) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    if holder == me {
        return None;
    }
    let version = lease.metadata.resource_version.clone().unwrap_or_default();
    let duration =
        Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15));
    match seen {
        Some((v, at)) if *v == version => (at.elapsed() < duration).then_some(holder),
        _ => {
            *seen = Some((version, Instant::now()));
            Some(holder)
        }
    }
}

async fn renew(
    api: Api<Lease>,
    name: String,
    holder: String,
    duration: Duration,
    fence: Arc<Fence>,
) {
    let period = duration / 3;
    loop {
        tokio::time::sleep(period).await;
        let mut lease = match api.get(&name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "could not read the lock to renew it");
                continue;
            }
        };
        let current = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if current != holder || lease.metadata.resource_version != *lock(&fence.resource_version) {
            tracing::warn!(lease = %name, holder = %current, "lost the lock to another holder");
            *lock(&fence.taken) = Some(if current.is_empty() {
                "nobody".to_owned()
            } else {
                current
            });
            return;
        }
        if let Some(spec) = lease.spec.as_mut() {
            spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        }
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(renewed) => {
                *lock(&fence.renewed_at) = Instant::now();
                *lock(&fence.resource_version) = renewed.metadata.resource_version;
            }
            Err(e) => tracing::warn!(lease = %name, error = %e, "could not renew the lock"),
        }
    }
}

impl LeaseGuard {
    /// Runs `work` while the Lease is held. When the Lease is lost (another
    /// holder, or no renewal for two thirds of its duration), `work` is
    /// dropped at its next await point and [`LockError::Lost`] returned.
    /// Releases the Lease either way.
    pub async fn fenced<F: Future>(self, work: F) -> Result<F::Output, LockError> {
        let fence = self.fence.clone();
        let watch = async move {
            loop {
                if let Err(e) = fence.check() {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        let result = tokio::select! {
            out = work => Ok(out),
            lost = watch => Err(lost),
        };
        self.release().await;
        result
    }

    /// Stops renewing and deletes the Lease so the next run need not wait,
    /// only while this process still holds it.
    pub async fn release(self) {
        self.renewer.abort();
        *lock(&HELD) = None;
        if self.fence.check().is_err() {
            tracing::warn!(lease = %self.name, "not releasing a lock this process may have lost; it expires on its own");
            return;
        }
        let held = match self.api.get_opt(&self.name).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "could not read the lock to release it; it expires on its own");
                return;
            }
        };
        let holder = held
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref());
        if holder != Some(self.holder.as_str()) {
            return;
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: held.metadata.resource_version.clone(),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = self.api.delete(&self.name, &params).await {
            tracing::warn!(lease = %self.name, error = %e, "could not release the lock; it expires on its own");
        }
    }
}
