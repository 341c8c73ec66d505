//! The WebSocket handshake for exec and port-forward (GET or POST upgrade),
//! with Kubernetes channel subprotocol negotiation.
//!
//! Owns the 101 response and turning the upgraded connection into a
//! tungstenite stream; the channel protocols live in `exec` and `portforward`.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

use super::{Body, Ctx};
use crate::status::ApiError;

/// The server side of an upgraded connection.
pub type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// `v5.channel.k8s.io`: v4 plus the close signal on channel 255.
pub const V5: &str = "v5.channel.k8s.io";
/// `v4.channel.k8s.io`: binary channels, JSON Status on channel 3.
pub const V4: &str = "v4.channel.k8s.io";

/// Picks the first protocol the client offers that `supported` contains.
pub fn choose(ctx: &Ctx, supported: &[&'static str]) -> Option<&'static str> {
    ctx.headers
        .get_all(http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find_map(|offered| supported.iter().find(|s| **s == offered).copied())
}

/// Validates the upgrade request and builds the 101 answer.
pub fn accept(
    ctx: &Ctx,
    supported: &[&'static str],
) -> Result<(Response<Body>, &'static str), ApiError> {
    let is_ws = ctx.header("upgrade").eq_ignore_ascii_case("websocket");
    let key = ctx.header("sec-websocket-key");
    if !is_ws || key.is_empty() {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let protocol = choose(ctx, supported).ok_or_else(|| {
        ApiError::bad_request(format!(
            "unable to upgrade: no supported subprotocol offered; supported: {}",
            supported.join(", ")
        ))
    })?;
    let response = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(http::header::UPGRADE, "websocket")
        .header(http::header::CONNECTION, "Upgrade")
        .header(
            http::header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .header(http::header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(super::full(bytes::Bytes::new()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    Ok((response, protocol))
}

/// Waits for hyper to hand over the connection and wraps it.
pub async fn upgraded(req: Request<Incoming>) -> Option<Socket> {
    let up = hyper::upgrade::on(req).await.ok()?;
    Some(WebSocketStream::from_raw_socket(TokioIo::new(up), Role::Server, None).await)
}

/// A close frame with code 1000: client-go reports 1005 (no status) as an error.
pub fn normal_close() -> tokio_tungstenite::tungstenite::Message {
    use tokio_tungstenite::tungstenite::protocol::frame::{coding::CloseCode, CloseFrame};
    tokio_tungstenite::tungstenite::Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}
