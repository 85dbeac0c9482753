//! The body type inside the proxy.
//!
//! Every proxied request carries a client's body to an upstream and an upstream's body back, so
//! those kinds are held as they are: bodies hyper received (client requests), HTTP/2 response
//! streams and pooled HTTP/1.1 responses. Anything else (bodies the proxy makes, mirrored copies) is
//! boxed. A box per body would be two allocations per request, and a call through a vtable for
//! every frame.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Frame, Incoming, SizeHint};

use crate::BoxError;
use crate::client::{H2Body, PooledBody, WireBody};

/// A request or response body: bytes, with boxed errors.
pub struct Body(Kind);

enum Kind {
    /// A body as hyper received it (a client's request).
    Incoming(Incoming),
    /// An upstream's HTTP/2 response.
    H2(H2Body),
    /// An HTTP/1.1 response that gives its connection back to the pool when it ends.
    Pooled(PooledBody),
    /// An HTTP/1.1 response read from its connection as it is polled, likewise.
    Wire(WireBody),
    /// Any other body.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// Boxes any body of bytes.
    pub fn new<B>(body: B) -> Self
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        Body(Kind::Boxed(body.map_err(Into::into).boxed_unsync()))
    }

    /// A body received by hyper, held without a box.
    pub fn incoming(body: Incoming) -> Self {
        Body(Kind::Incoming(body))
    }

    pub(crate) fn pooled(body: PooledBody) -> Self {
        Body(Kind::Pooled(body))
    }

    pub(crate) fn h2(body: H2Body) -> Self {
        Body(Kind::H2(body))
    }

    pub(crate) fn wire(body: WireBody) -> Self {
        Body(Kind::Wire(body))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.0 {
            Kind::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Kind::H2(b) => Pin::new(b).poll_frame(cx),
            Kind::Pooled(b) => Pin::new(b).poll_frame(cx),
            Kind::Wire(b) => Pin::new(b).poll_frame(cx),
            Kind::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Incoming(b) => b.is_end_stream(),
            Kind::H2(b) => b.is_end_stream(),
            Kind::Pooled(b) => b.is_end_stream(),
            Kind::Wire(b) => b.is_end_stream(),
            Kind::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Incoming(b) => b.size_hint(),
            Kind::H2(b) => b.size_hint(),
            Kind::Pooled(b) => b.size_hint(),
            Kind::Wire(b) => b.size_hint(),
            Kind::Boxed(b) => b.size_hint(),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.0 {
            Kind::Incoming(_) => "incoming",
            Kind::H2(_) => "h2",
            Kind::Pooled(_) => "pooled",
            Kind::Wire(_) => "wire",
            Kind::Boxed(_) => "boxed",
        };
        f.debug_tuple("Body").field(&kind).finish()
    }
}
