//! Bytes that go out in front of a stream's next write, in the same system
//! call ([`Ahead`]), and writes held back to go out together ([`Hold`]): a
//! client's VOP line with its TLS ClientHello, and its TLS Finished with
//! the link's first bytes ([`crate::vop_ahead`]); a server's VOP reply
//! with its ServerHello, and its session tickets with the link's first
//! bytes ([`crate::prefixed`]).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::AsyncWrite;

/// What is left to send in front of the stream's own bytes.
#[derive(Debug, Default)]
pub(crate) struct Ahead {
    bytes: Vec<u8>,
    written: usize,
}

impl Ahead {
    pub(crate) fn new(bytes: Vec<u8>) -> Ahead {
        Ahead { bytes, written: 0 }
    }

    /// Whether all of it has gone out (or there was none).
    pub(crate) fn is_done(&self) -> bool {
        self.written == self.bytes.len()
    }

    /// How many bytes are still to go out.
    pub(crate) fn pending(&self) -> usize {
        self.bytes.len() - self.written
    }

    /// Adds `bufs` to the bytes to go out; their length.
    pub(crate) fn hold(&mut self, bufs: &[io::IoSlice<'_>]) -> usize {
        if self.is_done() {
            self.bytes.clear();
            self.written = 0;
        }
        let mut n = 0;
        for b in bufs {
            self.bytes.extend_from_slice(b);
            n += b.len();
        }
        n
    }

    /// Writes what is left of these bytes in front of `bufs`, then `bufs`;
    /// the number of bytes of `bufs` written.
    pub(crate) fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        while !self.is_done() {
            let mut slices = Vec::with_capacity(bufs.len() + 1);
            slices.push(io::IoSlice::new(&self.bytes[self.written..]));
            slices.extend(bufs.iter().map(|b| io::IoSlice::new(b)));
            let n = ready!(Pin::new(&mut *inner).poll_write_vectored(cx, &slices))?;
            if n == 0 {
                return Poll::Ready(Ok(0));
            }
            let ours = n.min(self.bytes.len() - self.written);
            self.written += ours;
            if self.is_done() {
                // Sent: the allocation is not needed any more.
                self.bytes = Vec::new();
                self.written = 0;
            }
            if n > ours {
                return Poll::Ready(Ok(n - ours));
            }
        }
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        Pin::new(inner).poll_write_vectored(cx, bufs)
    }

    /// Writes what is left of these bytes, for a flush or a shutdown.
    pub(crate) fn poll_drain<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        while !self.is_done() {
            if ready!(self.poll_write(inner, cx, &[]))? == 0 && !self.is_done() {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Writes held back while a TLS handshake runs, to go out together: kept
/// while holding and sent when the handshake would wait for the peer (its
/// read finds nothing: call [`Hold::poll_read_pending`]); what the end of
/// the handshake left held (a client's Finished, a server's session
/// tickets) goes out with the first write after the hold ends, or at a
/// flush or shutdown.
///
/// Only for a handshake that, having sent all it will before the peer
/// answers, next reads (TLS does), followed by a caller that writes at
/// once (a link, whose hellos go out when it starts): the held bytes then
/// go out no later than before, and in one system call with the next.
#[derive(Debug, Default)]
pub(crate) struct Hold {
    held: Ahead,
    holding: bool,
}

impl Hold {
    /// Holding, with `first` to go out before anything written.
    pub(crate) fn new(first: Vec<u8>) -> Hold {
        Hold {
            held: Ahead::new(first),
            holding: true,
        }
    }

    /// Ends the hold: what is held goes out with the next write, or at the
    /// next flush, shutdown or read that waits.
    pub(crate) fn stop(&mut self) {
        self.holding = false;
    }

    /// How many bytes are held, not yet sent.
    pub(crate) fn held(&self) -> usize {
        self.held.pending()
    }

    pub(crate) fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.holding {
            return Poll::Ready(Ok(self.held.hold(bufs)));
        }
        if self.held.is_done() {
            return Pin::new(inner).poll_write_vectored(cx, bufs);
        }
        self.held.poll_write(inner, cx, bufs)
    }

    pub(crate) fn poll_flush<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if self.holding {
            // Held on purpose: they go when a read waits or the hold ends.
            return Poll::Ready(Ok(()));
        }
        ready!(self.held.poll_drain(inner, cx))?;
        Pin::new(inner).poll_flush(cx)
    }

    pub(crate) fn poll_shutdown<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        ready!(self.held.poll_drain(inner, cx))?;
        Pin::new(inner).poll_shutdown(cx)
    }

    /// The stream's read found nothing. During the handshake the peer may
    /// be waiting for what is held, so it goes now; after it, the caller
    /// writes next. (The read's waker is registered; the caller returns
    /// `Pending` unless this fails.)
    pub(crate) fn poll_read_pending<S: AsyncWrite + Unpin>(
        &mut self,
        inner: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.holding {
            return Poll::Ready(Ok(()));
        }
        self.held.poll_drain(inner, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `limit` bytes per call.
    struct Trickle {
        got: Vec<u8>,
        limit: usize,
        calls: usize,
    }

    impl AsyncWrite for Trickle {
        fn poll_write(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            let n = buf.len().min(this.limit);
            this.got.extend_from_slice(&buf[..n]);
            Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.calls += 1;
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(this.limit - n);
                this.got.extend_from_slice(&b[..take]);
                n += take;
            }
            Poll::Ready(Ok(n))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write_all(ahead: &mut Ahead, inner: &mut Trickle, mut buf: &[u8]) {
        let waker = std::task::Waker::noop().clone();
        let mut cx = Context::from_waker(&waker);
        while !buf.is_empty() {
            match ahead.poll_write(inner, &mut cx, &[io::IoSlice::new(buf)]) {
                Poll::Ready(Ok(n)) => {
                    assert!(n > 0 && n <= buf.len());
                    buf = &buf[n..];
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn the_bytes_ahead_go_first_in_the_same_write() {
        let mut inner = Trickle {
            got: Vec::new(),
            limit: 1 << 20,
            calls: 0,
        };
        let mut ahead = Ahead::new(b"REPLY\n".to_vec());
        write_all(&mut ahead, &mut inner, b"hello");
        write_all(&mut ahead, &mut inner, b" world");
        assert_eq!(inner.got, b"REPLY\nhello world");
        assert_eq!(inner.calls, 2, "the reply rode on the first write");
        assert!(ahead.is_done());
    }

    #[test]
    fn short_writes_never_count_the_bytes_ahead_as_the_callers() {
        for limit in 1..12 {
            let mut inner = Trickle {
                got: Vec::new(),
                limit,
                calls: 0,
            };
            let mut ahead = Ahead::new(b"REPLY\n".to_vec());
            write_all(&mut ahead, &mut inner, b"hello world");
            assert_eq!(inner.got, b"REPLY\nhello world", "limit {limit}");
        }
    }

    #[test]
    fn a_drain_sends_them_alone() {
        let mut inner = Trickle {
            got: Vec::new(),
            limit: 2,
            calls: 0,
        };
        let mut ahead = Ahead::new(b"REPLY\n".to_vec());
        let waker = std::task::Waker::noop().clone();
        let mut cx = Context::from_waker(&waker);
        assert!(matches!(
            ahead.poll_drain(&mut inner, &mut cx),
            Poll::Ready(Ok(()))
        ));
        assert_eq!(inner.got, b"REPLY\n");
        assert!(ahead.is_done());
    }
}
