//! `?watch=true` on any list: a chunked stream of `{"type","object"}` lines.
//!
//! Owns change detection: the list is re-read every 200 ms and compared by
//! resourceVersion, emitting ADDED, MODIFIED and DELETED. With
//! `resourceVersion` empty or "0" every current object starts as ADDED; with
//! a newer one, only objects changed since are sent. `sendInitialEvents=true`
//! ends the initial ADDED burst with the `k8s.io/initial-events-end` BOOKMARK.
//! `timeoutSeconds` ends the stream (default 30 minutes).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::Response;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

use super::{read, Body, Ctx, Reply};
use crate::state::Sandbox;
use crate::table;

const PERIOD: Duration = Duration::from_millis(200);

struct Watch {
    s: Arc<Sandbox>,
    ctx: Ctx,
    known: BTreeMap<String, (String, Value)>,
    pending: VecDeque<Bytes>,
    deadline: Instant,
    first: bool,
    since: u64,
    bookmark: bool,
    kind: String,
    api_version: String,
    table: bool,
    columns_sent: bool,
}

fn key(o: &Value) -> String {
    let ns = o
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let name = o
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    format!("{ns}/{name}")
}

fn rv(o: &Value) -> String {
    o.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn line(ty: &str, object: &Value) -> Bytes {
    let mut l = json!({"type": ty, "object": object}).to_string();
    l.push('\n');
    Bytes::from(l)
}

impl Watch {
    async fn snapshot(&mut self) -> Option<Vec<Value>> {
        let mut ctx = self.ctx.clone();
        ctx.info.verb = "list".into();
        ctx.headers.remove(http::header::ACCEPT);
        match read(&self.s, &ctx).await {
            Ok(Reply::Json(200, list)) => {
                if let Some(k) = list["kind"].as_str() {
                    self.kind = k.trim_end_matches("List").to_string();
                }
                if let Some(v) = list["apiVersion"].as_str() {
                    self.api_version = v.to_string();
                }
                list["items"].as_array().cloned()
            }
            _ => None,
        }
    }

    /// The event object: the object itself, or a one-row Table when kubectl
    /// asked for tables (column definitions only in the first such event).
    fn render(&mut self, o: &Value) -> Value {
        if !self.table {
            return o.clone();
        }
        let mut t = table::table(&self.ctx.info.resource, std::slice::from_ref(o), &rv(o));
        if self.columns_sent {
            t["columnDefinitions"] = json!([]);
        }
        self.columns_sent = true;
        t
    }

    async fn poll(&mut self) -> bool {
        let Some(items) = self.snapshot().await else {
            return false;
        };
        let mut seen = BTreeMap::new();
        for o in items {
            let (k, r) = (key(&o), rv(&o));
            let ty = match self.known.get(&k) {
                None if self.first
                    && self.since > 0
                    && r.parse::<u64>().unwrap_or(0) <= self.since =>
                {
                    None
                }
                None => Some("ADDED"),
                Some((old, _)) if *old != r => Some("MODIFIED"),
                Some(_) => None,
            };
            if let Some(ty) = ty {
                let ev = self.render(&o);
                self.pending.push_back(line(ty, &ev));
            }
            seen.insert(k, (r, o));
        }
        let gone: Vec<Value> = self
            .known
            .iter()
            .filter(|(k, _)| !seen.contains_key(*k))
            .map(|(_, (_, o))| o.clone())
            .collect();
        for o in gone {
            let ev = self.render(&o);
            self.pending.push_back(line("DELETED", &ev));
        }
        if self.first && self.bookmark {
            let mark = json!({
                "kind": self.kind, "apiVersion": self.api_version,
                "metadata": {"resourceVersion": self.s.revisions.current().to_string(),
                             "annotations": {"k8s.io/initial-events-end": "true"}},
            });
            self.pending.push_back(line("BOOKMARK", &mark));
        }
        self.known = seen;
        self.first = false;
        true
    }

    async fn next(mut self) -> Option<(Bytes, Self)> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some((b, self));
            }
            if Instant::now() >= self.deadline {
                return None;
            }
            if !self.first {
                tokio::time::sleep(PERIOD).await;
            }
            if !self.poll().await {
                return None;
            }
        }
    }
}

/// Starts a watch stream for the list `ctx` names.
pub fn respond(s: Arc<Sandbox>, ctx: Ctx) -> Reply {
    let timeout = ctx
        .param("timeoutSeconds")
        .and_then(|t| t.parse().ok())
        .unwrap_or(1800u64);
    let since = ctx
        .param("resourceVersion")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0u64);
    let bookmark = ctx.param("sendInitialEvents") == Some("true");
    let table = table::wants_table(ctx.header("accept"));
    let w = Watch {
        table,
        columns_sent: false,
        s,
        ctx,
        known: BTreeMap::new(),
        pending: VecDeque::new(),
        deadline: Instant::now() + Duration::from_secs(timeout),
        first: true,
        since: if bookmark { 0 } else { since },
        bookmark,
        kind: String::new(),
        api_version: String::new(),
    };
    let stream = futures::stream::unfold(w, Watch::next)
        .map(|b| Ok::<_, std::convert::Infallible>(Frame::data(b)));
    let body: Body = StreamBody::new(stream).boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    Reply::Raw(r)
}
