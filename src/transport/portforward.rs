//! The port-forward transport: a Vault API request becomes one HTTP/1.1
//! request to the pod's listener through `pods/portforward`.
//!
//! Owns the HTTP framing and the mapping of Vault's JSON answers to
//! [`NodeError`]. Bodies travel as the HTTP body and tokens in the
//! `X-Vault-Token` header, so no secret is in a URL. It skips the container
//! CLI's start-up (about 90 ms of CPU per request), which is what makes
//! unsealing many pods fast. It speaks plain HTTP only: a listener with TLS
//! needs the exec transport, which uses the container's own CA settings.

use crate::ops::node::{Method, NodeError, Request, VaultNode};
use crate::ops::secret::SecretBytes;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Answers larger than this are refused rather than buffered.
const MAX_ANSWER: u64 = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct PortForwardNode {
    pods: Api<Pod>,
    pod: String,
    port: u16,
}

impl PortForwardNode {
    pub fn new(pods: Api<Pod>, pod: String, port: u16) -> Self {
        PortForwardNode { pods, pod, port }
    }

    pub fn name(&self) -> &str {
        &self.pod
    }

    /// Sends one request on a fresh forwarded connection and returns the
    /// status code and body.
    async fn exchange(&self, req: &Request<'_>) -> Result<(u16, Vec<u8>), NodeError> {
        let mut forwarder = self
            .pods
            .portforward(&self.pod, &[self.port])
            .await
            .map_err(|e| match e {
                kube::Error::Api(s) if s.code == 403 => NodeError::Forbidden(format!(
                    "port-forward to pod {} (pods/portforward create): {}",
                    self.pod, s.message
                )),
                kube::Error::Api(s) if s.code == 404 => {
                    NodeError::PodGone(format!("pod {}: {}", self.pod, s.message))
                }
                other => NodeError::Unreachable(format!(
                    "port-forward to pod {}: {}",
                    self.pod,
                    super::api_reason(&other)
                )),
            })?;
        let mut stream = forwarder.take_stream(self.port).ok_or_else(|| {
            NodeError::Unreachable(format!("port-forward to pod {} opened no stream", self.pod))
        })?;
        let request = http_request(req);
        let broke = |e: std::io::Error| {
            NodeError::Unreachable(format!("port-forward to pod {} broke: {e}", self.pod))
        };
        stream.write_all(request.expose()).await.map_err(broke)?;
        let mut answer = Vec::new();
        (&mut stream)
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(broke)?;
        drop(stream);
        forwarder.abort();
        parse_response(&answer).ok_or_else(|| NodeError::Unreachable(format!("pod {} closed the connection without an HTTP answer (is the listener on port {} plain HTTP?)", self.pod, self.port)))
    }
}

/// Frames `req` as HTTP/1.1 with `Connection: close`.
fn http_request(req: &Request<'_>) -> SecretBytes {
    let method = match (req.method, req.body.is_some()) {
        (Method::Read, _) => "GET",
        (Method::Write, _) => "PUT",
        (Method::Delete, _) => "DELETE",
    };
    let body = req
        .body
        .as_ref()
        .map(SecretBytes::expose)
        .unwrap_or_default();
    let mut head = format!("{method} /v1/{} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n", req.path, body.len());
    let mut bytes = Vec::with_capacity(head.len() + body.len() + 128);
    if let Some(token) = req.token {
        bytes.extend_from_slice(head.as_bytes());
        bytes.extend_from_slice(b"X-Vault-Token: ");
        bytes.extend_from_slice(token.expose().as_bytes());
        bytes.extend_from_slice(b"\r\n\r\n");
    } else {
        head.push_str("\r\n");
        bytes.extend_from_slice(head.as_bytes());
    }
    bytes.extend_from_slice(body);
    SecretBytes::new(bytes)
}

/// Splits an HTTP/1.1 answer into status and (de-chunked) body.
fn parse_response(answer: &[u8]) -> Option<(u16, Vec<u8>)> {
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&answer[..split]).ok()?;
    let body = &answer[split + 4..];
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase().starts_with("transfer-encoding:")
            && l.to_ascii_lowercase().contains("chunked")
    });
    Some((
        status,
        if chunked {
            dechunk(body)?
        } else {
            body.to_vec()
        },
    ))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&body[..line_end])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(body.get(..size)?);
        body = body.get(size + 2..)?;
    }
}

/// Maps Vault's status and JSON body onto the operations' result.
fn interpret(status: u16, body: &[u8]) -> Result<Value, NodeError> {
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

impl VaultNode for PortForwardNode {
    fn name(&self) -> &str {
        &self.pod
    }

    async fn call(&self, req: Request<'_>) -> Result<Value, NodeError> {
        let (status, body) = self.exchange(&req).await?;
        interpret(status, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::secret::Secret;

    #[test]
    fn tokens_go_in_a_header_and_bodies_in_the_body() {
        let token = Secret::new("s.tok");
        let req = Request::write("sys/unseal", SecretBytes::new(br#"{"key":"k"}"#.to_vec()))
            .with_token(&token);
        let text = String::from_utf8(http_request(&req).expose().to_vec()).unwrap();
        assert!(text.starts_with("PUT /v1/sys/unseal HTTP/1.1\r\n"));
        assert!(text.contains("\r\nX-Vault-Token: s.tok\r\n\r\n{\"key\":\"k\"}"));
        assert!(!text.lines().next().unwrap().contains("s.tok"));
    }

    #[test]
    fn answers_are_parsed_plain_and_chunked() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 17\r\n\r\n{\"sealed\": false}";
        let (status, body) = parse_response(plain).unwrap();
        assert_eq!(
            interpret(status, &body).unwrap(),
            serde_json::json!({"sealed": false})
        );
        let chunked = b"HTTP/1.1 400 Bad Request\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"err\r\nc\r\nors\":[\"no\"]}\r\n0\r\n\r\n";
        let (status, body) = parse_response(chunked).unwrap();
        match interpret(status, &body) {
            Err(NodeError::Api {
                status: 400,
                errors,
            }) => assert_eq!(errors, vec!["no".to_owned()]),
            other => panic!("{other:?}"),
        }
        assert!(parse_response(b"garbage").is_none());
    }
}
