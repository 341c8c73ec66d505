//! `pods/portforward` over WebSocket `v4.channel.k8s.io`: port i uses data
//! channel 2i and error channel 2i+1, each opened with a 3-byte frame
//! (channel, port little-endian), relayed to the pod's IP.
//!
//! Owns the relay; the socket closes when every pod-side connection closed.
//! Plain-HTTP request lines that start a client frame (`PUT /v1/sys/unseal
//! HTTP/1.1`) are written to the audit log as `forwarded` entries, so tests
//! see what went through the direct transport; headers and bodies never are,
//! and TLS streams stay opaque.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use http::Request;
use hyper::body::Incoming;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::websocket::{self, normal_close, V4};
use super::{Ctx, Reply};
use crate::state::Sandbox;
use crate::status::ApiError;

/// Validates the request, answers 101 and relays the ports.
pub fn handle(s: &Arc<Sandbox>, ctx: &Ctx, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let i = &ctx.info;
    let opts = s.fleet.options();
    let pod = s
        .fleet
        .pod(&i.name)
        .filter(|p| p.running && i.namespace == opts.namespace)
        .ok_or_else(|| ApiError::not_found("", "pods", &i.name))?;
    let mut ports = Vec::new();
    for v in ctx.params_all("ports") {
        for p in v.split(',').filter(|p| !p.trim().is_empty()) {
            let port: u16 = p
                .trim()
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid port {p:?}")))?;
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err(ApiError::bad_request("at least one port must be specified"));
    }
    if s.faults.take_portforward_refusal() {
        return Err(ApiError::bad_request(
            "Upgrade request required: this API server serves port-forward over SPDY only",
        ));
    }
    let (response, _) = websocket::accept(ctx, &[V4])?;
    let ip = pod.ip;
    let name = pod.name.clone();
    let sandbox = s.clone();
    tokio::spawn(async move {
        if let Some(socket) = websocket::upgraded(req).await {
            relay(&sandbox, socket, ip, name, ports).await;
        }
    });
    Ok(Reply::Raw(response))
}

fn frame(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::binary(v)
}

/// The HTTP request line `payload` starts with, if it starts one.
fn request_line(payload: &[u8]) -> Option<&str> {
    let end = payload.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&payload[..end]).ok()?;
    let method = line.split(' ').next()?;
    (matches!(method, "GET" | "PUT" | "POST" | "DELETE" | "LIST" | "HEAD")
        && line.ends_with(" HTTP/1.1"))
    .then_some(line)
}

async fn relay(
    s: &Sandbox,
    socket: websocket::Socket,
    ip: std::net::Ipv4Addr,
    pod: String,
    ports: Vec<u16>,
) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let mut writers = Vec::new();
    let mut readers = Vec::new();
    for (idx, port) in ports.iter().enumerate() {
        let Ok(data_ch) = u8::try_from(idx * 2) else {
            break;
        };
        let err_ch = data_ch + 1;
        let lo_hi = port.to_le_bytes();
        let _ = tx.send(frame(data_ch, &lo_hi)).await;
        let _ = tx.send(frame(err_ch, &lo_hi)).await;
        match TcpStream::connect((ip, *port)).await {
            Ok(conn) => {
                // Go dials with TCP_NODELAY, as the kubelet's port-forward does.
                let _ = conn.set_nodelay(true);
                let (mut r, w) = conn.into_split();
                writers.push(Some(w));
                let tx = tx.clone();
                readers.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match r.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(frame(data_ch, &buf[..n])).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }));
            }
            Err(e) => {
                let msg = format!("error forwarding port {port} to pod {pod}: {e}");
                let _ = tx.send(frame(err_ch, msg.as_bytes())).await;
                writers.push(None);
            }
        }
    }
    let closer = {
        let tx = tx.clone();
        tokio::spawn(async move {
            for r in readers {
                let _ = r.await;
            }
            let _ = tx.send(normal_close()).await;
        })
    };
    drop(tx);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(Ok(msg)) = stream.next().await {
        let data = match msg {
            Message::Binary(b) => b,
            Message::Close(_) => break,
            _ => continue,
        };
        let Some((&ch, payload)) = data.split_first() else {
            continue;
        };
        if ch % 2 != 0 {
            continue;
        }
        if let Some(line) = request_line(payload) {
            s.audit.record(&serde_json::json!({
                "time": crate::meta::rfc3339(crate::meta::now()),
                "pod": pod, "forwarded": line,
            }));
        }
        if let Some(Some(w)) = writers.get_mut(usize::from(ch / 2)) {
            if w.write_all(payload).await.is_err() {
                writers[usize::from(ch / 2)] = None;
            }
        }
    }
    for w in writers.iter_mut().flatten() {
        let _ = w.shutdown().await;
    }
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), closer).await;
    let _ = writer.await;
}
