//! One pod port through `pods/portforward`, as a byte stream read and
//! written in place on the WebSocket (`v4.channel.k8s.io`).
//!
//! Owns the port-forward protocol for a single port: the data channel 0 and
//! error channel 1, the two-byte port each opens with, and the error text
//! the API server (kubelet) sends when the pod's port cannot be reached.
//! Bytes are handed to the reader straight from the WebSocket frame that
//! carried them: no pipe and no task stand between the socket and the
//! reader (kube's `Portforwarder` copies each frame into an in-memory pipe,
//! through a channel and a second task, which cost a save a fifth of its
//! CPU). Which errors mean "no usable port-forward here" is decided by the
//! caller, [`crate::transport::direct`].

use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The largest frame written: big enough that a streamed restore is not cut
/// into thousands of tiny frames, small enough for any API server.
const MAX_FRAME: usize = 64 * 1024;

/// The data channel and the error channel of the one forwarded port.
const DATA: u8 = 0;
const ERROR: u8 = 1;

/// A forwarded port; dropping it drops the WebSocket and its connection.
/// `S` is the upgraded connection to the API server (a pipe in tests).
pub struct ForwardedPort<S = TokioIo<hyper::upgrade::Upgraded>> {
    ws: WebSocketStream<S>,
    port: u16,
    /// Received and not yet read.
    unread: Bytes,
    /// Whether the data / error channel sent its opening port number.
    data_opened: bool,
    error_opened: bool,
    /// What the error channel said, if anything.
    error: String,
    /// The peer closed the socket (or it ended).
    ended: bool,
}

/// Opens the WebSocket port-forward to `port` of `pod`. Errors are the API
/// server's refusal (403, 404, 400) or a failed upgrade, as `kube` reports
/// them.
pub async fn open(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    port: u16,
) -> Result<ForwardedPort, kube::Error> {
    let url = <Pod as kube::Resource>::url_path(&(), Some(namespace));
    let request = kube::core::Request::new(url)
        .portforward(pod, &[port])
        .map_err(kube::Error::BuildRequest)?;
    Ok(ForwardedPort::new(
        client.connect(request).await?.into_stream(),
        port,
    ))
}

impl<S> ForwardedPort<S> {
    fn new(ws: WebSocketStream<S>, port: u16) -> Self {
        ForwardedPort {
            ws,
            port,
            unread: Bytes::new(),
            data_opened: false,
            error_opened: false,
            error: String::new(),
            ended: false,
        }
    }

    /// Takes one received frame apart: data becomes readable, error text is
    /// kept, the opening port numbers are checked.
    fn receive(&mut self, frame: Bytes) -> std::io::Result<()> {
        let Some((&channel, _)) = frame.split_first() else {
            return Ok(());
        };
        let payload = frame.slice(1..);
        let opened = match channel {
            DATA => &mut self.data_opened,
            ERROR => &mut self.error_opened,
            other => {
                return Err(std::io::Error::other(format!(
                    "port-forward sent a frame on channel {other}, which no port was given"
                )))
            }
        };
        if !*opened {
            // Each channel opens with the port it carries, little-endian.
            let port = match payload.as_ref() {
                [lo, hi] => u16::from_le_bytes([*lo, *hi]),
                _ => {
                    return Err(std::io::Error::other(
                        "port-forward opened a channel without its port number",
                    ))
                }
            };
            if port != self.port {
                return Err(std::io::Error::other(format!(
                    "port-forward opened port {port}, not {}",
                    self.port
                )));
            }
            *opened = true;
            return Ok(());
        }
        if channel == DATA {
            self.unread = payload;
        } else {
            self.error.push_str(&String::from_utf8_lossy(&payload));
        }
        Ok(())
    }

    /// The error channel's text as an I/O error, when it said anything.
    fn forward_error(&self) -> Option<std::io::Error> {
        let text = self.error.trim();
        (!text.is_empty()).then(|| std::io::Error::other(format!("port-forward: {text}")))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ForwardedPort<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        use futures::Stream;
        let this = &mut *self;
        loop {
            if !this.unread.is_empty() {
                let n = this.unread.len().min(buf.remaining());
                buf.put_slice(&this.unread[..n]);
                this.unread = this.unread.slice(n..);
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.forward_error() {
                return Poll::Ready(Err(e));
            }
            if this.ended || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.ws).poll_next(cx)) {
                Some(Ok(Message::Binary(frame))) => this.receive(frame)?,
                Some(Ok(Message::Close(_))) | None => this.ended = true,
                // Pings are answered by the WebSocket itself.
                Some(Ok(_)) => {}
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ForwardedPort<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        use futures::Sink;
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        ready!(Pin::new(&mut this.ws).poll_ready(cx)).map_err(std::io::Error::other)?;
        let n = buf.len().min(MAX_FRAME);
        let mut frame = Vec::with_capacity(n + 1);
        frame.push(DATA);
        frame.extend_from_slice(&buf[..n]);
        Pin::new(&mut this.ws)
            .start_send(Message::binary(frame))
            .map_err(std::io::Error::other)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        use futures::Sink;
        Pin::new(&mut self.ws)
            .poll_flush(cx)
            .map_err(std::io::Error::other)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        use futures::Sink;
        // The protocol has no half-close: closing the socket ends the port.
        match ready!(Pin::new(&mut self.ws).poll_close(cx)) {
            Ok(()) | Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(std::io::Error::other(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::protocol::Role;

    /// A forwarded port to 8200 and the API server's end of its socket.
    async fn pair() -> (
        ForwardedPort<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (ours, theirs) = tokio::io::duplex(1024 * 1024);
        let client = WebSocketStream::from_raw_socket(ours, Role::Client, None).await;
        let server = WebSocketStream::from_raw_socket(theirs, Role::Server, None).await;
        (ForwardedPort::new(client, 8200), server)
    }

    fn frame(channel: u8, data: &[u8]) -> Message {
        let mut v = vec![channel];
        v.extend_from_slice(data);
        Message::binary(v)
    }

    async fn open_channels(server: &mut WebSocketStream<tokio::io::DuplexStream>, port: u16) {
        server.send(frame(DATA, &port.to_le_bytes())).await.unwrap();
        server
            .send(frame(ERROR, &port.to_le_bytes()))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn data_frames_read_back_in_order_and_the_close_ends_the_stream() {
        let (mut port, mut server) = pair().await;
        open_channels(&mut server, 8200).await;
        server
            .send(frame(DATA, b"HTTP/1.1 200 OK\r\n"))
            .await
            .unwrap();
        server.send(frame(DATA, &[7u8; 100_000])).await.unwrap();
        server.close(None).await.unwrap();
        let mut read = Vec::new();
        port.read_to_end(&mut read).await.unwrap();
        assert_eq!(&read[..17], b"HTTP/1.1 200 OK\r\n");
        assert_eq!(read.len(), 17 + 100_000);
        assert!(read[17..].iter().all(|b| *b == 7));
    }

    #[tokio::test]
    async fn the_error_channel_s_text_is_the_read_error() {
        let (mut port, mut server) = pair().await;
        open_channels(&mut server, 8200).await;
        server
            .send(frame(
                ERROR,
                b"error forwarding port 8200 to pod p: connection refused",
            ))
            .await
            .unwrap();
        let e = port.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "port-forward: error forwarding port 8200 to pod p: connection refused"
        );
    }

    #[tokio::test]
    async fn a_channel_opened_for_another_port_is_refused() {
        let (mut port, mut server) = pair().await;
        open_channels(&mut server, 8201).await;
        let e = port.read(&mut [0u8; 16]).await.unwrap_err();
        assert_eq!(e.to_string(), "port-forward opened port 8201, not 8200");
    }

    #[tokio::test]
    async fn writes_go_out_on_the_data_channel_in_frames_of_at_most_64_kib() {
        let (mut port, mut server) = pair().await;
        let body = vec![9u8; 150_000];
        let writer = tokio::spawn(async move {
            port.write_all(&body).await.unwrap();
            port.flush().await.unwrap();
            port
        });
        let mut sizes = Vec::new();
        let mut total = 0;
        while total < 150_000 {
            let Some(Ok(Message::Binary(b))) = server.next().await else {
                panic!("no frame");
            };
            assert_eq!(b[0], DATA);
            assert!(b[1..].iter().all(|x| *x == 9));
            sizes.push(b.len() - 1);
            total += b.len() - 1;
        }
        assert_eq!(sizes, vec![65_536, 65_536, 150_000 - 2 * 65_536]);
        drop(writer.await.unwrap());
    }
}
