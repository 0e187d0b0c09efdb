//! [`Prefixed`]: the socket under a transport, with the bytes VOP read past
//! its line returned first, and, on a server's TLS handshake, its writes
//! held back to go out together.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ahead::Hold;

/// A stream with some bytes already read from it: reads return `prefix`
/// first, then read from the inner stream.
///
/// Writes go straight through, except while it holds them
/// ([`Prefixed::holding`], a server's TLS handshake): then they are kept
/// and sent together, in one system call, when the handshake would wait
/// for the peer (a read that finds nothing); what is held when the hold
/// ends goes out with the next write, or at a flush or shutdown. So a
/// server's VOP reply and ServerHello go out in one write, and its session
/// tickets in the same write as the link's first bytes.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    pos: usize,
    /// Writes held back, if any.
    hold: Hold,
    inner: S,
}

impl<S> Prefixed<S> {
    /// Wraps `inner`, with `prefix` to be read before anything from it.
    pub fn new(prefix: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            pos: 0,
            hold: Hold::default(),
            inner,
        }
    }

    /// Wraps `inner`, with `prefix` to be read before anything from it,
    /// `first` to be sent before anything written, and writes held until
    /// [`Prefixed::stop_holding`] (see the type's documentation). Only for
    /// a conversation in which this side, whenever it has sent all it
    /// will before the peer answers, next reads (a TLS handshake): held
    /// bytes are sent when such a read would wait.
    pub fn holding(prefix: Vec<u8>, first: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed {
            prefix,
            pos: 0,
            hold: Hold::new(first),
            inner,
        }
    }

    /// Ends the hold: bytes still held go out with the next write, or at
    /// the next flush or shutdown (so the caller must write or flush next:
    /// a link does, its hellos).
    pub fn stop_holding(&mut self) {
        self.hold.stop();
    }

    /// How many written bytes are held, not yet sent.
    pub fn held(&self) -> usize {
        self.hold.held()
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner stream, mutably. Reading from it directly skips the
    /// prefix bytes not yet returned, writing to it the bytes held.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The prefix bytes not yet returned by a read.
    pub fn buffered(&self) -> &[u8] {
        &self.prefix[self.pos..]
    }

    /// The unread prefix bytes and the inner stream. (Bytes held and not
    /// yet sent are dropped: take the parts of a stream made with
    /// [`Prefixed::new`], or flushed.)
    pub fn into_parts(mut self) -> (Vec<u8>, S) {
        self.prefix.drain(..self.pos);
        (self.prefix, self.inner)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = buf.remaining().min(this.prefix.len() - this.pos);
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            if this.pos == this.prefix.len() {
                this.prefix = Vec::new();
                this.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Pending => {
                ready!(this.hold.poll_read_pending(&mut this.inner, cx))?;
                Poll::Pending
            }
            done => done,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.hold.poll_write(&mut this.inner, cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.hold.poll_flush(&mut this.inner, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.hold.poll_shutdown(&mut this.inner, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefixed_returns_the_prefix_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"world").await.expect("write");
        drop(a);
        let mut p = Prefixed::new(b"hello ".to_vec(), b);
        let mut small = [0u8; 4];
        p.read_exact(&mut small).await.expect("read");
        assert_eq!(&small, b"hell");
        assert_eq!(p.buffered(), b"o ");
        let mut rest = Vec::new();
        p.read_to_end(&mut rest).await.expect("read");
        assert_eq!(rest, b"o world");
        assert!(p.buffered().is_empty());
        let (left, _) = Prefixed::new(b"abc".to_vec(), tokio::io::empty()).into_parts();
        assert_eq!(left, b"abc");
    }

    /// Reads whatever the peer has sent so far, without waiting.
    async fn sent_so_far(peer: &mut tokio::io::DuplexStream) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        while let Ok(Ok(n)) =
            tokio::time::timeout(std::time::Duration::ZERO, peer.read(&mut buf)).await
        {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[tokio::test]
    async fn held_writes_go_when_a_read_would_wait() {
        let (mut peer, ours) = tokio::io::duplex(4096);
        let mut p = Prefixed::holding(Vec::new(), b"REPLY\n".to_vec(), ours);
        p.write_all(b"server hello").await.expect("write");
        p.flush()
            .await
            .expect("a flush while holding sends nothing");
        assert_eq!(p.held(), 18);
        assert!(sent_so_far(&mut peer).await.is_empty());
        // The handshake reads next: nothing has come, so what is held goes.
        let mut buf = [0u8; 8];
        let read = tokio::time::timeout(std::time::Duration::ZERO, p.read(&mut buf)).await;
        assert!(read.is_err(), "nothing to read yet");
        assert_eq!(sent_so_far(&mut peer).await, b"REPLY\nserver hello");
        assert_eq!(p.held(), 0);
        // The peer answers; the hold goes on (session tickets).
        peer.write_all(b"finished").await.expect("peer");
        let n = p.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"finished");
        p.write_all(b"tickets").await.expect("tickets");
        p.flush().await.expect("flush");
        assert!(sent_so_far(&mut peer).await.is_empty());
        // The hold ends; a read that waits leaves them (the link writes
        // next), and the next write carries them.
        p.stop_holding();
        let read = tokio::time::timeout(std::time::Duration::ZERO, p.read(&mut buf)).await;
        assert!(read.is_err(), "nothing to read yet");
        assert!(sent_so_far(&mut peer).await.is_empty());
        p.write_all(b" + link hello").await.expect("write");
        assert_eq!(sent_so_far(&mut peer).await, b"tickets + link hello");
        p.write_all(b"!").await.expect("write");
        assert_eq!(sent_so_far(&mut peer).await, b"!");
    }

    #[tokio::test]
    async fn held_writes_go_at_a_flush_or_shutdown_after_the_hold() {
        let (mut peer, ours) = tokio::io::duplex(4096);
        let mut p = Prefixed::holding(Vec::new(), b"R".to_vec(), ours);
        p.write_all(b"tickets").await.expect("write");
        p.stop_holding();
        p.flush().await.expect("flush");
        assert_eq!(sent_so_far(&mut peer).await, b"Rtickets");
        let mut q = Prefixed::holding(Vec::new(), b"alert".to_vec(), p);
        q.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.expect("eof");
        assert_eq!(rest, b"alert");
    }

    #[tokio::test]
    async fn a_prefix_is_read_before_anything_held_is_sent() {
        // A ClientHello that came with the VOP line: read from the prefix
        // without waiting, so the reply stays held for the ServerHello.
        let (mut peer, ours) = tokio::io::duplex(4096);
        let mut p = Prefixed::holding(b"client hello".to_vec(), b"REPLY\n".to_vec(), ours);
        let mut buf = [0u8; 64];
        let n = p.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"client hello");
        assert!(sent_so_far(&mut peer).await.is_empty());
        p.write_all(b"server hello").await.expect("write");
        let read = tokio::time::timeout(std::time::Duration::ZERO, p.read(&mut buf)).await;
        assert!(read.is_err());
        assert_eq!(sent_so_far(&mut peer).await, b"REPLY\nserver hello");
    }
}
