//! RequestMirror: a copy of each (sampled) request to another service, fire and forget.
//!
//! The main request is never held back: its body streams on as usual through a [`Tee`] that
//! keeps a copy up to the filter's `maxBodyBytes`. Only once the main body has ended does the
//! copy leave, from its own task, through the mirror service's balancer; its response is
//! dropped. A body over the limit, a main request that fails mid-body, or no free mirror slot
//! means no copy (counted in `kapal_proxy_mirrored_requests_total` by `result`).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header;
use hyper::body::{Body as _, Frame, SizeHint};
use rand::Rng;
use tokio::sync::oneshot;
use tower::Service;

use super::{Balance, Inner, ProxyError, Req, Res, RouteCtx, Routed, full, layer_service};
use crate::config::RequestMirror;
use crate::metrics::MirrorLabels;
use crate::state::Shared;
use crate::{Body, BoxError};

/// How long a mirrored request may take before it is abandoned (and its slot freed).
pub const MIRROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends copies of requests as the rule's RequestMirror filters say.
#[derive(Clone)]
pub struct Mirror<S> {
    shared: Arc<Shared>,
    inner: S,
}

impl<S: Inner> Mirror<S> {
    /// Wraps `inner`.
    pub fn new(shared: Arc<Shared>, inner: S) -> Self {
        Mirror { shared, inner }
    }

    /// Only for requests to mirror: the others (no mirrors on the route, or an upgrade) went
    /// straight to the inner service (`layer_service!` below).
    async fn run(mut self, mut routed: Routed) -> Result<Res, ProxyError> {
        let Routed { ctx, req, .. } = &mut routed;
        let snapshot = self.shared.snapshot();
        for m in &ctx.rule.mirrors {
            if rand::rng().random::<f64>() * 100.0 >= f64::from(m.percent) {
                continue;
            }
            let Some(target) = snapshot.services.get(&m.backend_ref.name) else { continue };
            let count = Count { shared: self.shared.clone(), labels: labels(ctx, m) };
            if req.body().size_hint().lower() > m.max_body_bytes {
                count.inc("body_too_large");
                continue;
            }
            let Ok(slot) = self.shared.mirror_slots.clone().try_acquire_owned() else {
                count.inc("overloaded");
                continue;
            };
            let (body, copy) = Tee::wrap(std::mem::replace(req.body_mut(), full("")), m.max_body_bytes);
            *req.body_mut() = body;
            let head = head_of(req);
            let copy_ctx = RouteCtx { backend: target.clone(), ..ctx.clone() };
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let _slot = slot;
                count.inc(send_copy(shared, copy_ctx, head, copy).await);
            });
        }
        self.inner.call(routed).await
    }
}

// Upgrades (WebSocket, …) are a conversation, not a request: never mirrored.
layer_service!(Mirror, idle: |ctx, req| ctx.rule.mirrors.is_empty() || req.headers().contains_key(header::UPGRADE));

fn labels(ctx: &RouteCtx, m: &RequestMirror) -> MirrorLabels {
    MirrorLabels {
        service: ctx.service.cfg.name.clone(),
        route: ctx.rule.name.clone(),
        mirror: m.backend_ref.name.clone(),
        result: "",
    }
}

struct Count {
    shared: Arc<Shared>,
    labels: MirrorLabels,
}

impl Count {
    fn inc(&self, result: &'static str) {
        self.shared.metrics.mirrored.get_or_create(&MirrorLabels { result, ..self.labels.clone() }).inc();
    }
}

/// The request without its body.
fn head_of(req: &Req) -> http::Request<()> {
    let mut head = http::Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    *head.headers_mut() = req.headers().clone();
    head
}

/// Waits for the copied body and sends the copy along `ctx` (routed to the mirror service);
/// the result label.
async fn send_copy(
    shared: Arc<Shared>,
    ctx: RouteCtx,
    head: http::Request<()>,
    copy: oneshot::Receiver<Copied>,
) -> &'static str {
    let send = async move {
        let body = match copy.await {
            Ok(Copied::Whole(body)) => body,
            Ok(Copied::TooLarge) => return "body_too_large",
            Err(_) => return "failed",
        };
        let (parts, ()) = head.into_parts();
        let backend = ctx.backend.clone();
        let req = http::Request::from_parts(parts, full(body));
        match Balance::new(shared).call(Routed::new(ctx, req)).await {
            Ok(_) => "sent",
            Err(error) => {
                let mirror = &backend.cfg.name;
                tracing::debug!(%mirror, %error, "mirrored request failed");
                "failed"
            }
        }
    };
    tokio::time::timeout(MIRROR_TIMEOUT, send).await.unwrap_or("failed")
}

/// What a [`Tee`] hands over when the body has ended.
#[derive(Debug)]
pub enum Copied {
    /// The whole body.
    Whole(Bytes),
    /// The body was longer than the limit.
    TooLarge,
}

/// A body that passes its frames through unchanged and keeps a copy of the data, up to a limit,
/// which it sends once the body has ended.
pub struct Tee {
    inner: Body,
    buf: BytesMut,
    limit: u64,
    tx: Option<oneshot::Sender<Copied>>,
}

impl Tee {
    /// Wraps `inner`; the receiver gets the copy (or nothing if the body fails or is dropped
    /// unfinished).
    pub fn wrap(inner: Body, limit: u64) -> (Body, oneshot::Receiver<Copied>) {
        let (tx, rx) = oneshot::channel();
        let mut tee = Tee { inner, buf: BytesMut::new(), limit, tx: Some(tx) };
        // A body that is already complete (no body at all) is never polled.
        if tee.inner.is_end_stream() {
            tee.finish();
        }
        (Body::new(tee), rx)
    }

    fn finish(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Copied::Whole(self.buf.split().freeze()));
        }
    }

    fn keep(&mut self, data: &Bytes) {
        if self.tx.is_none() {
            return;
        }
        if (self.buf.len() + data.len()) as u64 > self.limit {
            self.buf = BytesMut::new();
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Copied::TooLarge);
            }
        } else {
            self.buf.extend_from_slice(data);
        }
    }
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.keep(data);
                }
                // hyper stops polling once a body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(None) => this.finish(),
            Poll::Ready(Some(Err(_))) => this.tx = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn chunks(parts: &[&'static str]) -> Body {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes())))).collect();
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(frames)))
    }

    #[tokio::test]
    async fn tee_passes_the_body_through_and_copies_it_within_the_limit() {
        let (body, copy) = Tee::wrap(chunks(&["hello ", "mirror"]), 64);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "hello mirror");
        assert!(matches!(copy.await.unwrap(), Copied::Whole(b) if b == "hello mirror"));
    }

    #[tokio::test]
    async fn tee_gives_up_the_copy_over_the_limit_but_not_the_body() {
        let (body, copy) = Tee::wrap(chunks(&["0123456789", "0123456789"]), 15);
        assert_eq!(body.collect().await.unwrap().to_bytes().len(), 20);
        assert!(matches!(copy.await.unwrap(), Copied::TooLarge));
    }

    #[tokio::test]
    async fn tee_of_an_empty_body_is_complete_at_once_and_an_abandoned_body_sends_nothing() {
        let (_body, copy) = Tee::wrap(full(""), 10);
        assert!(matches!(copy.await.unwrap(), Copied::Whole(b) if b.is_empty()));
        let (body, copy) = Tee::wrap(chunks(&["part"]), 10);
        drop(body);
        assert!(copy.await.is_err());
    }
}
