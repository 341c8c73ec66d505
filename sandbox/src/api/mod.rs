//! The HTTP(S) API server: connection handling, authentication, latency,
//! simulated RBAC, the audit log and routing to the resource handlers.
//!
//! Owns the request pipeline. What each resource does lives in the
//! submodules; what a fault is lives in [`crate::faults`].

mod discovery;
mod exec;
mod metrics;
mod objects;
mod portforward;
pub mod request_info;
mod watch;
mod websocket;
mod workloads;

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::control::Control;
use crate::meta;
use crate::state::{Sandbox, USER};
use crate::status::ApiError;
use request_info::RequestInfo;

/// Response body type.
pub type Body = UnsyncBoxBody<Bytes, std::convert::Infallible>;

/// A body holding `bytes`.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// What a handler produced.
pub enum Reply {
    /// A JSON body with a status code.
    Json(u16, Value),
    /// A finished response (WebSocket upgrades).
    Raw(Response<Body>),
    /// Close the connection without answering.
    Drop,
}

/// The request as handlers see it.
#[derive(Clone)]
pub struct Ctx {
    /// HTTP method.
    pub method: Method,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Decoded query pairs (repeated keys kept).
    pub params: Vec<(String, String)>,
    /// Request headers.
    pub headers: HeaderMap,
    /// Parsed target.
    pub info: RequestInfo,
}

impl Ctx {
    fn new<B>(req: &Request<B>) -> Self {
        let query = req.uri().query().unwrap_or_default().to_string();
        let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let watch = params
            .iter()
            .any(|(k, v)| k == "watch" && (v == "true" || v == "1"));
        let path = req.uri().path().to_string();
        Self {
            info: request_info::parse(req.method(), &path, watch),
            method: req.method().clone(),
            path,
            query,
            params,
            headers: req.headers().clone(),
        }
    }

    /// First value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `key`.
    pub fn params_all(&self, key: &str) -> Vec<String> {
        self.params
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// Returned to hyper to close a connection without a response.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

/// Serves connections until the sandbox's shutdown signal.
pub async fn serve(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>, s: Arc<Sandbox>) {
    let mut stop = s.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|v| *v) => break,
        };
        let Ok((stream, _)) = accepted else { continue };
        // As a Go API server's net/http: TCP_NODELAY on every connection,
        // so small frames (a port-forward's requests) are not held back.
        let _ = stream.set_nodelay(true);
        let s = s.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(s.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            let result = match tls {
                Some(acceptor) => match acceptor.accept(stream).await {
                    Ok(tls_stream) => {
                        builder
                            .serve_connection(TokioIo::new(tls_stream), service)
                            .with_upgrades()
                            .await
                    }
                    Err(_) => return,
                },
                None => {
                    builder
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await
                }
            };
            if let Err(e) = result {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// Bearer token check. Over plain HTTP client-go never sends credentials
/// (it only reads auth info for TLS transports), so there, like the old
/// insecure port, a request without `Authorization` is let in; a wrong
/// token is always refused.
fn authorized(s: &Sandbox, headers: &HeaderMap) -> bool {
    match headers.get(http::header::AUTHORIZATION) {
        None => !s.fleet.options().tls,
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == s.token),
    }
}

async fn handle(s: Arc<Sandbox>, req: Request<Incoming>) -> Result<Response<Body>, Dropped> {
    let ctx = Ctx::new(&req);
    let result = if !authorized(&s, &ctx.headers) {
        Err(ApiError::unauthorized())
    } else {
        let latency = s.faults.latency();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let i = &ctx.info;
        if i.is_resource && s.faults.is_forbidden(&i.verb, &i.rbac_resource()) {
            Err(ApiError::forbidden(
                USER,
                &i.verb,
                &i.group,
                &i.resource,
                &i.subresource,
                &i.name,
                &i.namespace,
            ))
        } else {
            route(&s, &ctx, req).await
        }
    };
    let (response, code) = match result {
        Ok(Reply::Json(code, v)) => (Some(json_response(code, &v)), code),
        Ok(Reply::Raw(r)) => {
            let code = r.status().as_u16();
            (Some(r), code)
        }
        Ok(Reply::Drop) => (None, 0),
        Err(e) => (Some(json_response(e.code, &e.to_status())), e.code),
    };
    audit(&s, &ctx, code);
    response.ok_or(Dropped)
}

fn audit(s: &Sandbox, ctx: &Ctx, code: u16) {
    let i = &ctx.info;
    let uri = if ctx.query.is_empty() {
        ctx.path.clone()
    } else {
        format!("{}?{}", ctx.path, ctx.query)
    };
    let mut entry = json!({
        "time": meta::rfc3339(meta::now()), "user": USER, "verb": i.verb, "method": ctx.method.as_str(),
        "requestURI": uri, "path": ctx.path, "query": ctx.query, "code": code,
        "group": i.group, "namespace": i.namespace, "resource": i.resource, "subresource": i.subresource, "name": i.name,
    });
    if code == 0 {
        entry["dropped"] = json!(true);
    }
    entry["userAgent"] = json!(ctx.header("user-agent"));
    if i.subresource == "exec" {
        let opts = s.fleet.options();
        let default = if opts.sidecar {
            crate::render::SIDECAR
        } else {
            opts.container()
        };
        let container = ctx
            .param("container")
            .filter(|c| !c.is_empty())
            .unwrap_or(default);
        entry["exec"] = json!({"container": container, "command": ctx.params_all("command")});
    }
    s.audit.record(&entry);
}

async fn body_bytes(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    req.into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))
}

/// Serves a read (list) for `ctx` without a body: used by `route` and watches.
async fn read(s: &Sandbox, ctx: &Ctx) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    if let Some(kind) =
        crate::kinds::Kind::from_route(&i.group, &i.resource).filter(|_| i.version == "v1")
    {
        return objects::handle(s, ctx, kind, &[]);
    }
    workloads::handle(s, ctx, &[]).await
}

async fn route(s: &Arc<Sandbox>, ctx: &Ctx, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    if !i.is_resource {
        let body = body_bytes(req).await?;
        return non_resource(s, ctx, &body).await;
    }
    if i.resource == "pods" && matches!(i.subresource.as_str(), "exec" | "attach") {
        return exec::handle(s, ctx, req);
    }
    if i.resource == "pods" && i.subresource == "portforward" {
        return portforward::handle(s, ctx, req);
    }
    if i.group == metrics::GROUP && s.fleet.options().metrics_server {
        return metrics::handle(s, ctx);
    }
    if i.verb == "watch" {
        return Ok(watch::respond(s.clone(), ctx.clone()));
    }
    let body = body_bytes(req).await?;
    if let Some(kind) =
        crate::kinds::Kind::from_route(&i.group, &i.resource).filter(|_| i.version == "v1")
    {
        return objects::handle(s, ctx, kind, &body);
    }
    workloads::handle(s, ctx, &body).await
}

async fn non_resource(s: &Sandbox, ctx: &Ctx, body: &[u8]) -> Result<Reply, ApiError> {
    let parts: Vec<&str> = ctx.path.trim_matches('/').split('/').collect();
    let ok = |v: Value| Ok(Reply::Json(200, v));
    let metrics = s.fleet.options().metrics_server;
    match (ctx.method.as_str(), parts.as_slice()) {
        ("GET", ["version"]) => ok(discovery::version()),
        ("GET", ["api"]) => ok(discovery::core_versions(ctx.header("host"))),
        ("GET", ["apis"]) => ok(discovery::groups(metrics)),
        ("GET", ["api", v]) => {
            discovery::resources("", v, metrics).map_or_else(|| Err(ApiError::no_route()), ok)
        }
        ("GET", ["apis", g, v]) => {
            discovery::resources(g, v, metrics).map_or_else(|| Err(ApiError::no_route()), ok)
        }
        ("GET", ["healthz" | "livez" | "readyz"]) => ok(json!("ok")),
        ("POST", ["sandbox", "v1", op]) => {
            let mut v: Value = if body.is_empty() {
                json!({})
            } else {
                serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(format!("control body: {e}")))?
            };
            v["op"] = json!(op);
            let c: Control = serde_json::from_value(v)
                .map_err(|e| ApiError::bad_request(format!("control request: {e}")))?;
            s.control(c)
                .await
                .map_err(|e| ApiError::internal(format!("{e:#}")))?;
            ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}))
        }
        _ => Err(ApiError::no_route()),
    }
}

/// Parses a JSON request body.
pub fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body: {e}")))
}

/// Ensures the namespace exists (404 like the real server otherwise).
pub fn require_namespace(s: &Sandbox, ns: &str) -> Result<(), ApiError> {
    if s.namespaces.iter().any(|n| n == ns) {
        Ok(())
    } else {
        Err(ApiError::not_found("", "namespaces", ns))
    }
}
