//! WATCH: a chunked stream of newline-separated watch events, served from the watch cache.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Response, StatusCode, header};
use kapal_api::ApiError;
use rand::Rng;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use super::Ctx;
use super::list::{Filter, too_large_rv};
use crate::ApiServer;
use crate::cache::{CacheEvent, Cached, Change, Subscription, WatchStartError};
use crate::output::{IncludeObject, Output, negotiate, partial_metadata, present, row};
use crate::resources::Served;

/// How often an idle watch with bookmarks allowed gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// Encodes events for one watcher.
struct Encoder {
    served: Arc<Served>,
    output: Output,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, c: &Cached) -> Vec<u8> {
        if self.output == Output::Object && c.api_version() == self.served.info.api_version() {
            // The common case: splice the cached encoding into the event line.
            let mut buf = Vec::with_capacity(c.bytes.len() + 32);
            buf.extend_from_slice(b"{\"type\":\"");
            buf.extend_from_slice(kind.as_bytes());
            buf.extend_from_slice(b"\",\"object\":");
            buf.extend_from_slice(&c.bytes);
            buf.extend_from_slice(b"}\n");
            return buf;
        }
        let obj = c.object();
        let obj = obj.as_ref();
        let object = match &self.output {
            Output::Object => present(&self.served, obj).into_owned(),
            Output::PartialMetadata { version } => partial_metadata(version, obj),
            Output::Table { version, include } => {
                let columns = if self.sent_columns { Vec::new() } else { crate::output::columns(&self.served) };
                self.sent_columns = true;
                let rv = obj.get("metadata").and_then(|m| m.get("resourceVersion")).cloned().unwrap_or(Value::Null);
                json!({
                    "kind": "Table",
                    "apiVersion": format!("meta.k8s.io/{version}"),
                    "metadata": {"resourceVersion": rv},
                    "columnDefinitions": columns,
                    "rows": [row(&self.served, *include, version, obj, jiff::Timestamp::now())],
                })
            }
        };
        line(&json!({"type": kind, "object": object}))
    }

    fn bookmark(&self, rev: i64, initial_end: bool) -> Vec<u8> {
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let info = &self.served.info;
        line(
            &json!({"type": "BOOKMARK", "object": {"kind": info.kind, "apiVersion": info.api_version(), "metadata": meta}}),
        )
    }
}

fn line(v: &Value) -> Vec<u8> {
    let mut buf = serde_json::to_vec(v).unwrap_or_default();
    buf.push(b'\n');
    buf
}

/// Which event type, if any, a change shows as to a watcher with `filter`.
fn visible(filter: &Filter, ev: &CacheEvent) -> Option<&'static str> {
    let now = filter.matches(&ev.object);
    match ev.change {
        Change::Added => now.then_some("ADDED"),
        Change::Deleted => now.then_some("DELETED"),
        Change::Modified => {
            // Without the previous version (kinds the cache does not hold: Events), a change
            // that matches now is taken to have matched before.
            let before = ev.prev.as_ref().map_or(now, |p| filter.matches(p));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

impl ApiServer {
    pub(crate) async fn watch(&self, ctx: &Ctx) -> Result<Response<Body>, ApiError> {
        let output = negotiate(&ctx.headers, &ctx.query)?;
        let output = match output {
            Output::Table { version, .. } => Output::Table { version, include: table_include(ctx)? },
            o => o,
        };
        let filter = Filter::from_ctx(ctx)?;
        let info = &ctx.served.info;
        let prefix = match (filter.exact_name(), ctx.namespace()) {
            (Some(name), Some(ns)) => info.key(Some(ns), name),
            (Some(name), None) if !info.namespaced() => info.key(None, name),
            _ => info.namespace_prefix(ctx.namespace()),
        };
        let send_initial = ctx.query.flag("sendInitialEvents");
        if send_initial && ctx.query.get("resourceVersionMatch") != Some("NotOlderThan") {
            return Err(ApiError::invalid(
                "meta.k8s.io",
                "ListOptions",
                "",
                vec![kapal_api::Cause::forbidden(
                    "sendInitialEvents",
                    "sendInitialEvents is forbidden unless resourceVersionMatch=NotOlderThan",
                )],
            ));
        }
        let bookmarks = ctx.query.flag("allowWatchBookmarks");
        let timeout = match ctx.query.int("timeoutSeconds")? {
            Some(t) if t > 0 => Duration::from_secs(t as u64),
            _ => Duration::from_secs(rand::rng().random_range(1800..3600)),
        };
        let mut enc = Encoder { served: ctx.served.clone(), output, sent_columns: false };
        let mut first: Vec<Vec<u8>> = Vec::new();
        let rv = ctx.query.get("resourceVersion").unwrap_or_default();
        let sub = if rv.is_empty() || rv == "0" || send_initial {
            if rv.is_empty() || send_initial {
                self.cache.sync().await;
            }
            let (objects, sub) = self.cache.subscribe_with_state_current(&prefix).await.map_err(crate::store_error)?;
            for c in objects.iter().filter(|c| c.key.starts_with(prefix.as_str()) && filter.matches(c)) {
                first.push(enc.event("ADDED", c));
            }
            if send_initial && bookmarks {
                first.push(enc.bookmark(sub.after, true));
            }
            sub
        } else {
            let rev: i64 = rv.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
            if rev > self.cache.revision() && !self.cache.wait_for(rev, Duration::from_secs(3)).await {
                return Err(too_large_rv(rev, self.cache.revision()));
            }
            match self.cache.subscribe(rev) {
                Ok(sub) => sub,
                Err(WatchStartError::TooOld { requested, oldest }) => {
                    let status = ApiError::gone_too_old(requested, oldest).to_status();
                    first.push(line(&json!({"type": "ERROR", "object": status})));
                    return Ok(stream_response(first, None));
                }
            }
        };
        let (tx, rx) = mpsc::channel::<Vec<u8>>(256);
        let metrics = self.metrics.clone();
        let watcher = Watcher { prefix, filter, enc, bookmarks, timeout };
        tokio::spawn(async move {
            metrics.watchers.inc();
            watcher.run(sub, tx).await;
            metrics.watchers.dec();
        });
        Ok(stream_response(first, Some(rx)))
    }
}

fn table_include(ctx: &Ctx) -> Result<IncludeObject, ApiError> {
    Ok(match ctx.query.get("includeObject") {
        Some("None") => IncludeObject::None,
        Some("Object") => IncludeObject::Object,
        _ => IncludeObject::Metadata,
    })
}

struct Watcher {
    prefix: String,
    filter: Filter,
    enc: Encoder,
    bookmarks: bool,
    timeout: Duration,
}

impl Watcher {
    async fn run(mut self, mut sub: Subscription, tx: mpsc::Sender<Vec<u8>>) {
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let mut last_rev = sub.after;
        for ev in std::mem::take(&mut sub.replay) {
            last_rev = ev.revision;
            if !self.send_event(&ev, &tx).await {
                return;
            }
        }
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = bookmark.tick(), if self.bookmarks => {
                    if tx.send(self.enc.bookmark(last_rev, false)).await.is_err() {
                        return;
                    }
                }
                msg = sub.live.recv() => match msg {
                    Ok(ev) => {
                        if ev.revision == 0 && ev.key.is_empty() {
                            return; // the cache reset: the client resumes or relists
                        }
                        if ev.revision <= sub.after {
                            continue;
                        }
                        last_rev = ev.revision;
                        if !self.send_event(&ev, &tx).await {
                            return;
                        }
                    }
                    // Too slow: end the stream; the client resumes from its last resourceVersion.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    async fn send_event(&mut self, ev: &CacheEvent, tx: &mpsc::Sender<Vec<u8>>) -> bool {
        if !ev.key.starts_with(self.prefix.as_str()) {
            return true;
        }
        match visible(&self.filter, ev) {
            Some(kind) => tx.send(self.enc.event(kind, &ev.object)).await.is_ok(),
            None => true,
        }
    }
}

fn stream_response(first: Vec<Vec<u8>>, rest: Option<mpsc::Receiver<Vec<u8>>>) -> Response<Body> {
    let head = futures::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>));
    let body = match rest {
        Some(rx) => {
            let tail = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok(b), rx)) });
            Body::from_stream(futures::StreamExt::chain(head, tail))
        }
        None => Body::from_stream(head),
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
