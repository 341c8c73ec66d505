//! GCS writes through the JSON API: a snapshot is one resumable upload
//! (`uploadType=resumable`), a manifest one media upload.
//!
//! `object_store`'s GCS client writes through the XML API, which the GCS
//! emulators do not serve; the JSON API is the one Google documents for
//! large uploads, and both GCS and `fake-gcs-server` serve it. Reads,
//! lists and deletes stay on `object_store`.
//!
//! # Expected flow of a snapshot upload
//! 1. `POST /upload/storage/v1/b/<bucket>/o?uploadType=resumable&name=…`
//!    opens a session; its URI (answered in `Location`) carries the upload.
//! 2. Every full [`CHUNK`] is `PUT` to the session with
//!    `Content-Range: bytes <start>-<end>/*`; the server answers 308
//!    (more expected). One chunk is in flight while the next fills.
//! 3. [`Resumable::finish`] sends the rest with the total
//!    (`bytes <start>-<end>/<total>`, or `bytes */<total>` when nothing is
//!    left) and checks that the object's size is the total.
//!
//! # Guarantees
//! - The object is visible only after step 3: a stream that fails, a
//!   process that is killed, or [`Resumable::abort`] (which `DELETE`s the
//!   session) leaves nothing under the name.
//! - At most two chunks are held in memory.
//! - The session URI is a capability for the upload: it is never logged
//!   and never part of an error (`reqwest`'s errors are stripped of URLs).

use object_store::gcp::GcpCredentialProvider;
use std::sync::Arc;
use std::time::Duration;

/// The chunk size: a multiple of 256 KiB, as resumable uploads require.
pub const CHUNK: usize = 8 * 1024 * 1024;

/// How to reach one bucket's JSON API.
pub struct GcsJson {
    http: reqwest::Client,
    base: String,
    bucket: String,
    credentials: GcpCredentialProvider,
}

impl std::fmt::Debug for GcsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsJson")
            .field("base", &self.base)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl GcsJson {
    /// `base` is the API's root (`https://storage.googleapis.com`, or the
    /// emulator's); `credentials` are the GCS client's own, so that both
    /// authenticate the same way.
    pub fn new(
        base: &str,
        bucket: &str,
        credentials: GcpCredentialProvider,
    ) -> Result<GcsJson, String> {
        let http = reqwest::Client::builder()
            // A 308 is "more expected", never a redirect to follow.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| format!("could not build the GCS upload client: {e}"))?;
        Ok(GcsJson {
            http,
            base: base.trim_end_matches('/').to_owned(),
            bucket: bucket.to_owned(),
            credentials,
        })
    }

    fn upload_url(&self, kind: &str, name: &str) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o?uploadType={kind}&name={}",
            self.base,
            percent(&self.bucket),
            percent(name)
        )
    }

    async fn bearer(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, String> {
        let credential = self
            .credentials
            .get_credential()
            .await
            .map_err(|e| format!("could not get GCS credentials: {e}"))?;
        Ok(if credential.bearer.is_empty() {
            // An emulator's key document disables OAuth.
            request
        } else {
            request.bearer_auth(&credential.bearer)
        })
    }

    /// Writes `name` whole in one media upload (manifests: small).
    pub async fn put(&self, name: &str, body: Vec<u8>) -> Result<(), String> {
        let request = self
            .http
            .post(self.upload_url("media", name))
            .header("Content-Type", "application/json")
            .body(body);
        let response = self.send(request).await?;
        expect_object(response, None).await
    }

    /// Opens a resumable upload of `name`.
    pub async fn start(self: &Arc<Self>, name: &str) -> Result<Resumable, String> {
        let request = self
            .http
            .post(self.upload_url("resumable", name))
            .header("X-Upload-Content-Type", "application/octet-stream")
            .header("Content-Length", "0");
        let response = self.send(request).await?;
        let status = response.status();
        if !status.is_success() {
            return Err(refusal("opening the upload", response).await);
        }
        let session = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or("the store opened no upload session (no Location in its answer)")?;
        Ok(Resumable {
            api: self.clone(),
            session,
            buffer: Vec::with_capacity(CHUNK),
            sent: 0,
            in_flight: None,
        })
    }
}

/// One snapshot being uploaded; see the module's flow and guarantees.
pub struct Resumable {
    api: Arc<GcsJson>,
    session: String,
    buffer: Vec<u8>,
    /// Bytes handed to chunks so far (sent or in flight).
    sent: u64,
    in_flight: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

impl Resumable {
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        while !bytes.is_empty() {
            let room = CHUNK - self.buffer.len();
            let (now, later) = bytes.split_at(room.min(bytes.len()));
            self.buffer.extend_from_slice(now);
            bytes = later;
            if self.buffer.len() == CHUNK {
                self.settle().await?;
                let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
                let start = self.sent;
                self.sent += chunk.len() as u64;
                let range = format!("bytes {start}-{}/*", self.sent - 1);
                let api = self.api.clone();
                let session = self.session.clone();
                self.in_flight = Some(tokio::spawn(async move {
                    let response = api.send_chunk(&session, range, chunk).await?;
                    if response.status().as_u16() == 308 {
                        Ok(())
                    } else {
                        Err(refusal("a part of the upload", response).await)
                    }
                }));
            }
        }
        Ok(())
    }

    /// Waits for the chunk in flight.
    async fn settle(&mut self) -> Result<(), String> {
        match self.in_flight.take() {
            Some(task) => task
                .await
                .map_err(|e| format!("the upload task stopped: {e}"))?,
            None => Ok(()),
        }
    }

    /// Sends the rest with the total: the object appears.
    pub async fn finish(mut self) -> Result<(), String> {
        self.settle().await?;
        let rest = std::mem::take(&mut self.buffer);
        let total = self.sent + rest.len() as u64;
        let range = if rest.is_empty() {
            format!("bytes */{total}")
        } else {
            format!("bytes {}-{}/{total}", self.sent, total - 1)
        };
        let response = self.api.send_chunk(&self.session, range, rest).await?;
        expect_object(response, Some(total)).await
    }

    /// Cancels the session; the store keeps nothing.
    pub async fn abort(mut self) -> Result<(), String> {
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
        let response = self.api.send(self.api.http.delete(&self.session)).await?;
        // GCS answers 499 to a cancelled session.
        match response.status().as_u16() {
            499 | 200 | 204 | 404 | 410 => Ok(()),
            _ => Err(refusal("cancelling the upload", response).await),
        }
    }
}

impl GcsJson {
    async fn send_chunk(
        &self,
        session: &str,
        range: String,
        body: Vec<u8>,
    ) -> Result<reqwest::Response, String> {
        let request = self
            .http
            .put(session)
            .header("Content-Range", range)
            .body(body);
        self.send(request).await
    }

    /// Sends `request` with the bearer token; an error never carries the
    /// URL (a session URI is a capability for the upload).
    async fn send(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        self.bearer(request)
            .await?
            .send()
            .await
            .map_err(|e| e.without_url().to_string())
    }
}

/// A finished upload's answer: 200 or 201 with the object, whose size is
/// `size` when given.
async fn expect_object(response: reqwest::Response, size: Option<u64>) -> Result<(), String> {
    let status = response.status();
    if !(status == reqwest::StatusCode::OK || status == reqwest::StatusCode::CREATED) {
        return Err(refusal("the end of the upload", response).await);
    }
    let Some(expected) = size else {
        return Ok(());
    };
    let body = response.bytes().await.map_err(|e| {
        format!(
            "the store's answer to the upload was cut: {}",
            e.without_url()
        )
    })?;
    let object: serde_json::Value = serde_json::from_slice(&body)
        .map_err(|e| format!("the store's answer to the upload is not an object: {e}"))?;
    let stored = object.get("size").and_then(|s| {
        s.as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .or(s.as_u64())
    });
    match stored {
        Some(n) if n == expected => Ok(()),
        other => Err(format!(
            "the store holds {} bytes after the upload, not the {expected} sent",
            other.map_or("an unknown number of".to_owned(), |n| n.to_string())
        )),
    }
}

/// The store's refusal, with the start of its answer (GCS's error
/// documents name the reason; they hold no secret of ours).
async fn refusal(during: &str, response: reqwest::Response) -> String {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let body: String = body.trim().chars().take(300).collect();
    format!("the store answered {status} to {during}: {body}")
}

/// Percent-encodes everything but unreserved characters (object names in
/// a query string).
fn percent(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_encoded_for_the_query() {
        assert_eq!(percent("p/vault-1.snap"), "p%2Fvault-1.snap");
        assert_eq!(percent("a b&c=d"), "a%20b%26c%3Dd");
        assert_eq!(CHUNK % (256 * 1024), 0);
    }
}
