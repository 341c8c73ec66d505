//! Injected faults and simulated RBAC: what the API server should do wrong next.
//!
//! Owns the counters (failing Secret writes, dropped exec streams), the added
//! latency and the forbidden (verb, resource) pairs. The API layer asks here
//! before serving a request; it decides how each fault looks on the wire.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// How a failing Secret write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretFault {
    /// 500 InternalError Status.
    ServerError,
    /// 409 Conflict Status.
    Conflict,
    /// The TCP connection closes without any response.
    DropConnection,
}

impl SecretFault {
    /// Parses the CLI/control-API spelling: `500`, `409`, `drop`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "500" | "server-error" | "ServerError" => Some(Self::ServerError),
            "409" | "conflict" | "Conflict" => Some(Self::Conflict),
            "drop" | "drop-connection" | "DropConnection" => Some(Self::DropConnection),
            _ => None,
        }
    }

    /// The spelling [`SecretFault::parse`] accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ServerError => "500",
            Self::Conflict => "409",
            Self::DropConnection => "drop",
        }
    }
}

#[derive(Default)]
struct Inner {
    secret_writes: HashMap<String, (u32, SecretFault)>,
    drop_exec: u32,
    latency: Duration,
    forbidden: BTreeSet<(String, String)>,
    /// Answer WebSocket port-forward upgrades with 400, as API servers
    /// without WebSocket port-forward do; and how many were refused.
    no_ws_portforward: bool,
    refused_portforwards: u32,
}

/// The fault switchboard shared by the library API and the control endpoints.
#[derive(Default)]
pub struct Faults {
    inner: Mutex<Inner>,
}

impl Faults {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// The next `count` writes to Secret `name` fail with `fault`.
    pub fn fail_secret_writes(&self, name: &str, count: u32, fault: SecretFault) {
        self.with(|i| {
            if count == 0 {
                i.secret_writes.remove(name);
            } else {
                i.secret_writes.insert(name.to_string(), (count, fault));
            }
        });
    }

    /// Consumes one pending failure for a write to Secret `name`, if any.
    pub fn take_secret_write_fault(&self, name: &str) -> Option<SecretFault> {
        self.with(|i| {
            let (left, fault) = i.secret_writes.get_mut(name)?;
            let fault = *fault;
            *left -= 1;
            if *left == 0 {
                i.secret_writes.remove(name);
            }
            Some(fault)
        })
    }

    /// The next `count` exec streams close before their status frame.
    pub fn drop_exec_streams(&self, count: u32) {
        self.with(|i| i.drop_exec = count);
    }

    /// Consumes one pending exec drop, if any.
    pub fn take_exec_drop(&self) -> bool {
        self.with(|i| {
            if i.drop_exec > 0 {
                i.drop_exec -= 1;
                true
            } else {
                false
            }
        })
    }

    /// Sets the delay added to every API request.
    pub fn set_latency(&self, d: Duration) {
        self.with(|i| i.latency = d);
    }

    /// The delay added to every API request.
    pub fn latency(&self) -> Duration {
        self.with(|i| i.latency)
    }

    /// Denies `verb` on `resource` (`secrets`, `pods/exec`, ...); `*` matches any verb.
    pub fn forbid(&self, verb: &str, resource: &str) {
        self.with(|i| i.forbidden.insert((verb.to_string(), resource.to_string())));
    }

    /// Whether `verb` on `resource` is denied.
    pub fn is_forbidden(&self, verb: &str, resource: &str) -> bool {
        self.with(|i| {
            i.forbidden
                .contains(&(verb.to_string(), resource.to_string()))
                || i.forbidden
                    .contains(&("*".to_string(), resource.to_string()))
        })
    }

    /// Lifts every `forbid`.
    pub fn allow_all(&self) {
        self.with(|i| i.forbidden.clear());
    }

    /// Serves (`true`) or refuses with 400 (`false`) WebSocket port-forward.
    pub fn serve_websocket_portforward(&self, serve: bool) {
        self.with(|i| i.no_ws_portforward = !serve);
    }

    /// Whether this port-forward upgrade is refused; counts the refusals.
    pub fn take_portforward_refusal(&self) -> bool {
        self.with(|i| {
            if i.no_ws_portforward {
                i.refused_portforwards += 1;
            }
            i.no_ws_portforward
        })
    }

    /// How many port-forward upgrades were refused with 400 so far.
    pub fn refused_portforwards(&self) -> u32 {
        self.with(|i| i.refused_portforwards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_write_faults_count_down_per_name() {
        let f = Faults::default();
        f.fail_secret_writes("a", 2, SecretFault::Conflict);
        assert_eq!(f.take_secret_write_fault("b"), None);
        assert_eq!(f.take_secret_write_fault("a"), Some(SecretFault::Conflict));
        assert_eq!(f.take_secret_write_fault("a"), Some(SecretFault::Conflict));
        assert_eq!(f.take_secret_write_fault("a"), None);
    }

    #[test]
    fn forbid_and_allow_all() {
        let f = Faults::default();
        f.forbid("get", "secrets");
        assert!(f.is_forbidden("get", "secrets"));
        assert!(!f.is_forbidden("list", "secrets"));
        f.forbid("*", "pods/exec");
        assert!(f.is_forbidden("create", "pods/exec"));
        f.allow_all();
        assert!(!f.is_forbidden("get", "secrets"));
    }
}
