//! Bytes that go out in front of a stream's first write, in the same
//! system call: a client's VOP line ahead of its TLS ClientHello
//! ([`crate::vop_ahead`]), a server's VOP reply ahead of its ServerHello
//! ([`crate::stream::Prefixed::with_reply`]).

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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

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

    #[tokio::test]
    async fn over_a_real_pipe() {
        let (a, mut b) = tokio::io::duplex(4);
        let mut w = crate::stream::Prefixed::with_reply(Vec::new(), b"VOP\n".to_vec(), a);
        let writer = tokio::spawn(async move {
            w.write_all(b"tls bytes").await.expect("write");
            w.shutdown().await.expect("shutdown");
        });
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        writer.await.expect("writer");
        assert_eq!(got, b"VOP\ntls bytes");
    }
}
