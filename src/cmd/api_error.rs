//! Kubernetes API failures told as one sentence and a hint.
//!
//! Decides the wording of the failures a user meets first: a context that is
//! not in the kubeconfig, an API server that cannot be reached or is not
//! trusted, rejected credentials (401), a missing permission (403), a
//! namespace that does not exist, a selector that matches no pod. `-v` adds
//! the raw API status as the cause. Every other failure is left as it is.

use crate::cmd::{Context, Failure};
use crate::ops::cluster::ClusterError;
use crate::transport::discover::DEFAULT_SELECTOR;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams};
use std::collections::BTreeSet;

/// Where the client connects and as whom, from the kubeconfig; for messages.
#[derive(Clone, Debug, Default)]
pub struct Connection {
    /// The API server URL.
    pub server: String,
    /// The kubeconfig file, or how it was found.
    pub kubeconfig: String,
    pub context: Option<String>,
    pub user: Option<String>,
}

impl Connection {
    /// "context C (user U) in FILE", as far as it is known.
    fn origin(&self) -> String {
        let context = self.context.as_deref().map_or_else(
            || "the in-cluster configuration".to_owned(),
            |c| format!("context {c}"),
        );
        let user = self
            .user
            .as_deref()
            .map(|u| format!(" (user {u})"))
            .unwrap_or_default();
        format!("{context}{user} in {}", self.kubeconfig)
    }

    fn user(&self) -> &str {
        self.user.as_deref().unwrap_or("the configured user")
    }
}

/// The failure, retold when it is one of the known Kubernetes API failures.
pub async fn explain(ctx: &Context<'_>, conn: &Connection, failure: Failure) -> Failure {
    let Failure { exit, error } = failure;
    let told = if let Some(e) = error.chain().find_map(|c| c.downcast_ref::<kube::Error>()) {
        let action = error
            .chain()
            .find_map(|c| match c.downcast_ref::<ClusterError>() {
                Some(ClusterError::Api { action, .. }) => Some(action.clone()),
                _ => None,
            });
        api_failure(ctx, conn, e, action.as_deref()).await
    } else if let Some(ClusterError::NoPods {
        selector,
        namespace,
    }) = error.downcast_ref::<ClusterError>()
    {
        Some(no_pods(ctx, selector, namespace).await)
    } else {
        None
    };
    let Some((sentence, raw)) = told else {
        return Failure { exit, error };
    };
    let error = match raw {
        Some(raw) if ctx.global.verbose > 0 => anyhow::Error::msg(raw).context(sentence),
        _ => anyhow::Error::msg(sentence),
    };
    Failure { exit, error }
}

/// A sentence with its hint, and the raw status for `-v`.
type Told = (String, Option<String>);

async fn api_failure(
    ctx: &Context<'_>,
    conn: &Connection,
    e: &kube::Error,
    action: Option<&str>,
) -> Option<Told> {
    let server = &conn.server;
    if let kube::Error::Api(status) = e {
        let raw = serde_json::to_string(status).unwrap_or_else(|_| status.message.clone());
        let sentence = match status.code {
            401 => format!(
                "the Kubernetes API server at {server} rejected the credentials of {} (401 Unauthorized); log in again or renew that user's token, or pick another context with --context ({})",
                conn.user(),
                conn.origin()
            ),
            403 => {
                let (verb, resource) = forbidden_action(&status.message, action);
                let (user, ns) = (conn.user(), &ctx.namespace);
                format!(
                    "{verb} {resource} in namespace {ns} is forbidden for {user} (403); the chart's Role grants pods get/list/watch, pods/exec get+create, its Secrets and Lease by name, events create and the StatefulSet get: ask for it (or an equal Role) to be bound to {user} in {ns}"
                )
            }
            404 if status.message.starts_with("namespaces ") => {
                return Some((missing_namespace(ctx).await, Some(raw)));
            }
            _ => return None,
        };
        return Some((sentence, Some(raw)));
    }
    let raw = e.to_string();
    let causes: Vec<String> = chain(e).map(|c| c.to_string().to_lowercase()).collect();
    let any = |needle: &str| causes.iter().any(|c| c.contains(needle));
    let tls = chain(e).find_map(|c| {
        c.downcast_ref::<rustls::Error>()
            .map(ToString::to_string)
            .or_else(|| {
                c.downcast_ref::<std::io::Error>()
                    .and_then(|io| io.get_ref())
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                    .map(ToString::to_string)
            })
    });
    let reach_hint = format!(
        "check that the cluster is up and that this is its address ({}), or pick another with --context or --kubeconfig",
        conn.origin()
    );
    let sentence = if let Some(reason) =
        tls.or_else(|| any("certificate").then(|| "invalid certificate".to_owned()))
    {
        format!(
            "the Kubernetes API server at {server} is not trusted: TLS verification failed ({reason}); check the cluster's certificate-authority-data ({}) and that {server} is the server you mean",
            conn.origin()
        )
    } else if any("dns error")
        || any("failed to lookup address")
        || any("name or service not known")
    {
        format!(
            "the host of the Kubernetes API server {server} does not resolve (DNS); {reach_hint}"
        )
    } else if any("connection refused") {
        format!("the Kubernetes API server at {server} refused the connection; {reach_hint}")
    } else if matches!(e, kube::Error::Service(_) | kube::Error::HyperError(_)) {
        let last = chain(e).last().map(ToString::to_string).unwrap_or_default();
        format!("could not reach the Kubernetes API server at {server} ({last}); {reach_hint}")
    } else {
        return None;
    };
    Some((sentence, Some(raw)))
}

/// The error and its causes.
fn chain<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |c| c.source())
}

/// Verb and resource of a 403, from the server's message
/// (`... cannot list resource "pods" in API group ""...`) or else the action.
fn forbidden_action(message: &str, action: Option<&str>) -> (String, String) {
    let parsed = message.split_once("cannot ").and_then(|(_, rest)| {
        let (verb, rest) = rest.split_once(" resource \"")?;
        let (resource, _) = rest.split_once('"')?;
        Some((verb.to_owned(), resource.to_owned()))
    });
    parsed.unwrap_or_else(|| {
        let action = action.unwrap_or("reach");
        match action.split_once(' ') {
            Some((verb, resource)) => (verb.to_owned(), resource.to_owned()),
            None => (action.to_owned(), "this resource".to_owned()),
        }
    })
}

/// No pod matched: is it the namespace or the selector?
async fn no_pods(ctx: &Context<'_>, selector: &str, namespace: &str) -> Told {
    let namespaces: Api<Namespace> = Api::all(ctx.client.clone());
    if let Err(kube::Error::Api(s)) = namespaces.get(namespace).await {
        if s.code == 404 {
            let raw = serde_json::to_string(&s).ok();
            return (missing_namespace(ctx).await, raw);
        }
    }
    let elsewhere = namespaces_with_chart_pods(ctx).await;
    let hint = match elsewhere.as_deref() {
        Some([]) | None => "pass -l with the labels of the Vault/OpenBao server pods".to_owned(),
        Some(list) => format!(
            "pass -l with the labels of the server pods, or -n with their namespace; pods with the charts' labels run in: {}",
            list.join(", ")
        ),
    };
    (
        format!("no pods match {selector} in namespace {namespace}; {hint}"),
        None,
    )
}

async fn missing_namespace(ctx: &Context<'_>) -> String {
    let hint = match namespaces_with_chart_pods(ctx).await.as_deref() {
        Some([]) => "; no namespace has pods with the charts' labels".to_owned(),
        Some(list) => format!("; pods with the charts' labels run in: {}", list.join(", ")),
        None => String::new(),
    };
    format!(
        "namespace {} does not exist; pass the namespace of the Vault/OpenBao pods with -n{hint}",
        ctx.namespace
    )
}

/// Namespaces with server pods of the known charts, if the user may list
/// pods across namespaces.
async fn namespaces_with_chart_pods(ctx: &Context<'_>) -> Option<Vec<String>> {
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let list = pods
        .list(&ListParams::default().labels(DEFAULT_SELECTOR))
        .await
        .ok()?;
    let found: BTreeSet<String> = list
        .items
        .into_iter()
        .filter_map(|p| p.metadata.namespace)
        .collect();
    Some(found.into_iter().collect())
}
