//! The direct transport: the Vault HTTP API spoken to the pod's own
//! listener through `pods/portforward`, over plain HTTP or TLS.
//!
//! Owns the one forwarded keep-alive connection per pod (opened on first use,
//! reopened when it broke, shared by every clone of the node for the life of
//! the command), the HTTP/1.1 framing through hyper and the mapping of
//! Vault's JSON answers to [`NodeError`]. It tells "this cluster offers no
//! usable port-forward" ([`Opened::Unavailable`]) from "this pod did not
//! answer", so that `--transport auto` can fall back to exec. Which CA and
//! server name a TLS listener is checked against is decided in
//! [`crate::transport::trust`]; whether to fall back in [`crate::transport::pod`].
//!
//! Bodies travel as HTTP bodies and tokens in the `X-Vault-Token` header; no
//! secret is in a URL, and neither bodies nor headers are ever logged.

use crate::ops::node::{Method, NodeError, Request};
use crate::ops::secret::{SecretAnswer, SecretBytes};
use crate::transport::trust::PodTrust;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use serde_json::Value;
use std::sync::Arc;

/// Answers larger than this are refused rather than buffered.
const MAX_ANSWER: usize = 16 * 1024 * 1024;

/// A request body: buffered for API calls, streamed for snapshots.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// A buffered request body.
pub fn full(bytes: Vec<u8>) -> Body {
    Full::new(Bytes::from(bytes))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A body streamed from `reader` in chunks of at most 64 KiB: hyper sends
/// each before the next is read, so memory stays bounded.
pub fn streamed(reader: impl tokio::io::AsyncRead + Send + 'static) -> Body {
    use futures::StreamExt;
    let chunks = tokio_util::io::ReaderStream::with_capacity(reader, 64 * 1024)
        .map(|chunk| chunk.map(hyper::body::Frame::data));
    StreamBody::new(chunks).boxed_unsync()
}

/// A buffered body holding a secret: its bytes are zeroized when hyper
/// drops the last reference (hyper may still copy small bodies into its own
/// write buffer).
fn secret_body(bytes: SecretBytes) -> Body {
    struct Owned(SecretBytes);
    impl AsRef<[u8]> for Owned {
        fn as_ref(&self) -> &[u8] {
            self.0.expose()
        }
    }
    Full::new(Bytes::from_owner(Owned(bytes)))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Why no request could be sent.
#[derive(Debug)]
pub enum Opened {
    /// The cluster offers no port-forward this command can use: forbidden by
    /// RBAC, or an API server without WebSocket port-forward. Exec may work.
    Unavailable(String),
    /// Anything else: the pod, its listener or the connection failed.
    Failed(NodeError),
}

impl From<NodeError> for Opened {
    fn from(e: NodeError) -> Self {
        Opened::Failed(e)
    }
}

/// One open forwarded connection. Its stream belongs to hyper's connection
/// task, which ends (and drops the port-forward) with the sender.
struct Connection {
    sender: SendRequest<Body>,
}

/// The way to one pod's listener, shared by every clone of its node.
pub struct DirectLink {
    client: kube::Client,
    namespace: String,
    pod: String,
    port: u16,
    trust: Option<PodTrust>,
    connection: tokio::sync::Mutex<Option<Connection>>,
}

impl DirectLink {
    /// `trust` is `None` for a plain-HTTP listener.
    pub fn new(
        client: kube::Client,
        namespace: String,
        pod: String,
        port: u16,
        trust: Option<PodTrust>,
    ) -> Self {
        DirectLink {
            client,
            namespace,
            pod,
            port,
            trust,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    pub fn pod(&self) -> &str {
        &self.pod
    }

    /// Opens the forwarded connection (and TLS session) to the listener.
    async fn open(&self) -> Result<Connection, Opened> {
        let stream = super::forward::open(&self.client, &self.namespace, &self.pod, self.port)
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 => Opened::Unavailable(format!(
                    "port-forward to pod {} is forbidden (pods/portforward create): {}",
                    self.pod, s.message
                )),
                kube::Error::Api(s) if s.code == 404 => Opened::Failed(NodeError::PodGone(
                    format!("pod {}: {}", self.pod, s.message),
                )),
                // An API server without WebSocket port-forward answers the
                // upgrade with 400 (or some other refusal of the upgrade).
                kube::Error::Api(s) if s.code == 400 => Opened::Unavailable(format!(
                    "the API server refused a WebSocket port-forward to pod {} ({} {})",
                    self.pod, s.code, s.message
                )),
                kube::Error::UpgradeConnection(u) => Opened::Unavailable(format!(
                    "the API server offers no WebSocket port-forward to pod {}: {u}",
                    self.pod
                )),
                other => Opened::Failed(NodeError::Unreachable(format!(
                    "port-forward to pod {}: {}",
                    self.pod,
                    super::api_reason(&other)
                ))),
            })?;
        let sender = match &self.trust {
            None => handshake(stream, &self.pod).await?,
            Some(trust) => {
                let tls = trust.connect(stream).await?;
                handshake(tls, &self.pod).await?
            }
        };
        tracing::debug!(pod = %self.pod, port = self.port, tls = self.trust.is_some(), "direct connection open");
        Ok(Connection { sender })
    }

    /// Sends one request on the pod's connection, opening it first if there
    /// is none or the last one broke, and returns the status and the answer.
    ///
    /// # Guarantees
    /// A request that may have reached the server is never sent twice: only
    /// a connection found closed *before* sending is replaced and the request
    /// sent on the new one.
    pub async fn exchange(
        &self,
        method: hyper::Method,
        path: &str,
        token: Option<&crate::ops::secret::Secret>,
        body: Body,
        length: Option<u64>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, Opened> {
        let mut slot = self.connection.lock().await;
        let reusable = match slot.as_mut() {
            Some(c) => c.sender.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *slot = None;
            *slot = Some(self.open().await?);
        }
        let Some(connection) = slot.as_mut() else {
            return Err(Opened::Failed(NodeError::Unreachable(format!(
                "no connection to pod {}",
                self.pod
            ))));
        };
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(format!("/v1/{path}"))
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json");
        if let Some(length) = length {
            builder = builder.header(hyper::header::CONTENT_LENGTH, length);
        }
        if let Some(token) = token {
            let mut value = hyper::header::HeaderValue::from_str(token.expose()).map_err(|_| {
                NodeError::Malformed("the token is not a valid header value".into())
            })?;
            value.set_sensitive(true);
            builder = builder.header("X-Vault-Token", value);
        }
        let request = builder
            .body(body)
            .map_err(|e| NodeError::Malformed(format!("request for {path}: {e}")))?;
        match connection.sender.send_request(request).await {
            Ok(response) => Ok(response),
            Err(e) => {
                *slot = None;
                if let Some(refused) = self.trust.as_ref().and_then(|t| t.refused_client(&e)) {
                    return Err(Opened::Failed(refused));
                }
                Err(Opened::Failed(NodeError::Unreachable(format!(
                    "the connection to pod {} broke: {e}",
                    self.pod
                ))))
            }
        }
    }

    /// One API request with a buffered answer.
    pub async fn call(&self, req: &Request<'_>) -> Result<Value, Opened> {
        let (status, answer) = self.buffered(req).await?;
        Ok(interpret(status, &answer)?)
    }

    /// One API request whose answer carries secrets: the body is copied
    /// once into zeroizing memory and never parsed into a `Value`.
    pub async fn call_secret(&self, req: &Request<'_>) -> Result<SecretAnswer, Opened> {
        let (status, answer) = self.buffered(req).await?;
        if (200..300).contains(&status) {
            return Ok(SecretAnswer::new(answer.to_vec()));
        }
        Err(Opened::Failed(
            interpret(status, &answer)
                .err()
                .unwrap_or_else(|| NodeError::Malformed(format!("{} answered {status}", req.path))),
        ))
    }

    async fn buffered(&self, req: &Request<'_>) -> Result<(u16, hyper::body::Bytes), Opened> {
        let method = match req.method {
            Method::Read => hyper::Method::GET,
            Method::Write => hyper::Method::PUT,
            Method::Delete => hyper::Method::DELETE,
        };
        let body = match &req.body {
            Some(bytes) => secret_body(bytes.clone()),
            None => full(Vec::new()),
        };
        let response = self
            .exchange(method, req.path, req.token, body, None)
            .await?;
        let status = response.status().as_u16();
        let answer = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                NodeError::Unreachable(format!(
                    "pod {} broke off its answer to {}: {e}",
                    self.pod, req.path
                ))
            })?
            .to_bytes();
        Ok((status, answer))
    }
}

impl DirectLink {
    /// Streams the answer of a `GET` (a raft snapshot) as a reader, in the
    /// chunks hyper receives; an error status is read and mapped instead.
    pub async fn download(
        &self,
        path: &str,
        token: &crate::ops::secret::Secret,
    ) -> Result<impl tokio::io::AsyncRead + Send + Unpin + 'static, Opened> {
        use futures::TryStreamExt;
        let response = self
            .exchange(
                hyper::Method::GET,
                path,
                Some(token),
                full(Vec::new()),
                None,
            )
            .await?;
        let status = response.status().as_u16();
        if !(200..300).contains(&status) {
            let answer = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Opened::Failed(
                interpret(status, &answer)
                    .err()
                    .unwrap_or_else(|| NodeError::Malformed(format!("{path} answered {status}"))),
            ));
        }
        let pod = self.pod.clone();
        let chunks = http_body_util::BodyDataStream::new(response.into_body()).map_err(move |e| {
            std::io::Error::other(format!("pod {pod} broke off the stream: {e}"))
        });
        Ok(tokio_util::io::StreamReader::new(chunks))
    }

    /// `POST`s the `length` bytes of `reader` as the body (a raft snapshot)
    /// and maps the answer. The length is sent: OpenBao 2.7 takes about
    /// 5.5 s longer to restore from a chunked body. A reader that ends
    /// early breaks the request off, so the server never gets a whole body.
    pub async fn upload(
        &self,
        path: &str,
        token: &crate::ops::secret::Secret,
        reader: impl tokio::io::AsyncRead + Send + 'static,
        length: u64,
    ) -> Result<Value, Opened> {
        let response = self
            .exchange(
                hyper::Method::POST,
                path,
                Some(token),
                streamed(reader),
                Some(length),
            )
            .await?;
        let status = response.status().as_u16();
        let answer = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| {
                NodeError::Unreachable(format!(
                    "pod {} broke off its answer to {path}: {e}",
                    self.pod
                ))
            })?
            .to_bytes();
        Ok(interpret(status, &answer)?)
    }
}

/// The HTTP/1.1 handshake over `io`; the connection task runs until the
/// sender and the stream are gone.
async fn handshake<T>(io: T, pod: &str) -> Result<SendRequest<Body>, NodeError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
            .await
            .map_err(|e| NodeError::Unreachable(format!("HTTP to pod {pod}: {e}")))?;
    let pod = pod.to_owned();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(pod = %pod, error = %e, "direct connection closed");
        }
    });
    Ok(sender)
}

/// One pod reached directly; cheap to clone, all clones share the connection.
#[derive(Clone)]
pub struct DirectNode {
    link: Arc<DirectLink>,
}

impl DirectNode {
    pub fn new(link: Arc<DirectLink>) -> Self {
        DirectNode { link }
    }

    pub fn link(&self) -> &DirectLink {
        &self.link
    }

    pub async fn call(&self, req: &Request<'_>) -> Result<Value, Opened> {
        self.link.call(req).await
    }

    pub async fn call_secret(&self, req: &Request<'_>) -> Result<SecretAnswer, Opened> {
        self.link.call_secret(req).await
    }
}

/// Maps Vault's status and JSON body onto the operations' result.
pub fn interpret(status: u16, body: &[u8]) -> Result<Value, NodeError> {
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| {
            NodeError::Malformed(format!(
                "answer is not JSON (status {status}, line {} column {})",
                e.line(),
                e.column()
            ))
        })?
    };
    if (200..300).contains(&status) {
        return Ok(match value.get("data") {
            Some(data) if !data.is_null() => data.clone(),
            _ => value,
        });
    }
    let errors = value
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    Err(NodeError::Api { status, errors })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_onto_data_or_the_servers_errors() {
        assert_eq!(
            interpret(200, br#"{"sealed": false}"#).unwrap(),
            serde_json::json!({"sealed": false})
        );
        assert_eq!(
            interpret(200, br#"{"data": {"keys": 1}}"#).unwrap(),
            serde_json::json!({"keys": 1})
        );
        assert_eq!(interpret(204, b"").unwrap(), Value::Null);
        match interpret(400, br#"{"errors":["no"]}"#) {
            Err(NodeError::Api {
                status: 400,
                errors,
            }) => assert_eq!(errors, vec!["no".to_owned()]),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            interpret(200, b"garbage"),
            Err(NodeError::Malformed(_))
        ));
    }
}
