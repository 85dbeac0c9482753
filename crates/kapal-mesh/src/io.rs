//! Stream wrappers: replaying bytes read during detection, and counting bytes for metrics.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Anything the proxy can carry bytes over.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A stream that first yields `prefix` (bytes already read, e.g. by protocol detection) and
/// counts bytes read and written.
pub struct ServerIo<S> {
    prefix: Bytes,
    inner: S,
    read: Counter,
    written: Counter,
}

impl<S> ServerIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, read: Counter, written: Counter) -> Self {
        ServerIo { prefix: Bytes::new(), inner, read, written }
    }

    /// Puts bytes back in front of the stream.
    pub fn rewind(&mut self, prefix: Bytes) {
        self.prefix = prefix;
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ServerIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        self.read.inc_by((buf.filled().len() - before) as u64);
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ServerIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = res {
            self.written.inc_by(n as u64);
        }
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            self.written.inc_by(n as u64);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Vectored writes up to this many bytes are copied into one buffer and written with `write`.
const COALESCED_WRITE: usize = 1024;

/// A vectored write that goes out as one plain `write` when it is one buffer (written as it is)
/// or small (copied into one: a response head with a short body, HTTP/2's frames of one small
/// message): the kernel's `writev` path, which imports the iovecs, costs more than copying a few
/// hundred bytes (0.8 % of a throughput round's CPU). Larger writes stay vectored. Nothing is
/// kept: a write that cannot finish now is copied again when it is retried. Over TLS the copy
/// gains nothing (rustls packs the buffers into records itself) and costs little.
pub fn poll_write_coalesced<W: AsyncWrite + Unpin + ?Sized>(
    io: &mut W,
    cx: &mut Context<'_>,
    bufs: &[io::IoSlice<'_>],
) -> Poll<io::Result<usize>> {
    if let [one] = bufs {
        return Pin::new(io).poll_write(cx, one);
    }
    if bufs.iter().map(|b| b.len()).sum::<usize>() > COALESCED_WRITE {
        return Pin::new(io).poll_write_vectored(cx, bufs);
    }
    let mut one = [0u8; COALESCED_WRITE];
    let mut at = 0;
    for b in bufs {
        one[at..at + b.len()].copy_from_slice(b);
        at += b.len();
    }
    Pin::new(io).poll_write(cx, &one[..at])
}

/// A stream whose vectored writes go out as [`poll_write_coalesced`] does them.
pub struct Coalesced<S>(pub S);

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_write_coalesced(&mut self.0, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that records how it was written to, taking at most `limit` bytes per call, or
    /// none while `full`.
    #[derive(Default)]
    struct Recorder {
        plain: Vec<Vec<u8>>,
        vectored: Vec<Vec<Vec<u8>>>,
        limit: Option<usize>,
        full: bool,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            if self.full {
                return Poll::Pending;
            }
            let n = self.limit.unwrap_or(data.len()).min(data.len());
            self.plain.push(data[..n].to_vec());
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            self.vectored.push(bufs.iter().map(|b| b.to_vec()).collect());
            Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn poll(w: &mut Recorder, bufs: &[&[u8]]) -> Poll<io::Result<usize>> {
        let slices: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
        poll_write_coalesced(w, &mut Context::from_waker(std::task::Waker::noop()), &slices)
    }

    fn write(w: &mut Recorder, bufs: &[&[u8]]) -> usize {
        match poll(w, bufs) {
            Poll::Ready(Ok(n)) => n,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn small_vectored_writes_go_out_as_one_plain_write() {
        let mut w = Recorder::default();
        assert_eq!(write(&mut w, &[b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok"]), 40);
        assert_eq!(w.plain, [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec()]);
        // One buffer, of any size, is written as it is.
        let big = vec![7u8; 4 * COALESCED_WRITE];
        assert_eq!(write(&mut w, &[&big]), big.len());
        assert_eq!(w.plain[1], big);
        // Exactly the limit is still copied; empty buffers are harmless.
        let half = vec![1u8; COALESCED_WRITE / 2];
        assert_eq!(write(&mut w, &[&half, b"", &half]), COALESCED_WRITE);
        assert_eq!(w.plain[2], [half.clone(), half.clone()].concat());
        assert!(w.vectored.is_empty());
    }

    #[test]
    fn larger_vectored_writes_stay_vectored() {
        let mut w = Recorder::default();
        let (head, body) = (b"HTTP/1.1 200 OK\r\n\r\n".to_vec(), vec![2u8; COALESCED_WRITE]);
        assert_eq!(write(&mut w, &[&head, &body]), head.len() + body.len());
        assert_eq!(w.vectored, [vec![head, body]]);
        assert!(w.plain.is_empty());
    }

    #[test]
    fn a_short_write_reports_what_went_out_of_the_joined_buffers() {
        let mut w = Recorder { limit: Some(5), ..Recorder::default() };
        assert_eq!(write(&mut w, &[b"abc", b"defg"]), 5);
        assert_eq!(w.plain, [b"abcde".to_vec()]);
    }

    #[test]
    fn a_write_that_must_wait_is_copied_again_when_retried() {
        let mut w = Recorder { full: true, ..Recorder::default() };
        assert!(poll(&mut w, &[b"abc", b"defg"]).is_pending());
        w.full = false;
        assert_eq!(write(&mut w, &[b"abc", b"defg"]), 7);
        assert_eq!(w.plain, [b"abcdefg".to_vec()]);
        // Nothing to write is written as nothing.
        assert_eq!(write(&mut w, &[]), 0);
    }

    #[test]
    fn the_wrapper_still_says_it_writes_vectored() {
        // hyper and h2 choose how to queue their buffers by this; it must not change.
        assert!(Coalesced(Recorder::default()).is_write_vectored());
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().enable_io().build().unwrap();
        rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(tcp.local_addr().unwrap()).await.unwrap();
            assert!(Coalesced(stream).is_write_vectored());
        });
    }
}
