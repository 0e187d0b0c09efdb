//! VOP sent ahead of TLS: a client that offers only TLS knows the only
//! answer that lets it go on is TLS, so it need not wait for it. Its VOP
//! line goes out in the same write as its TLS ClientHello, and the server's
//! VOP reply is read in front of the server's first TLS bytes.
//!
//! The server sees the same bytes as before, only sooner (it already keeps
//! what it read past the VOP line for the transport chosen), so this needs
//! no negotiation: a VPy service or an older vole serves it as it is. A
//! new session costs one round trip less, and the server one wake-up less
//! (the line and the ClientHello arrive together).
//!
//! [`VopAhead`] wraps the socket under the TLS client. A reply that does
//! not choose TLS, or a server that closes before its reply, fails the
//! TLS handshake with an I/O error; [`AheadState::failure`] then says what
//! VOP went wrong, for the caller to report instead.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::ahead::Hold;
use crate::vop::{self, Transport, MAX_LINE};
use crate::Error;

/// What the caller learns after the handshake: whether the reply came and
/// why VOP failed, if it did.
#[derive(Debug, Default)]
pub struct AheadState {
    replied: bool,
    failure: Option<Error>,
}

impl AheadState {
    /// Whether the server's VOP reply (choosing TLS) was read.
    pub fn replied(&self) -> bool {
        self.replied
    }

    /// Why VOP failed, if it did (taken: asked once).
    pub fn failure(&mut self) -> Option<Error> {
        self.failure.take()
    }
}

#[derive(Debug)]
enum Reply {
    /// Reading the reply line: the bytes so far.
    Reading(Vec<u8>),
    /// Read; these bytes came past it and are the caller's first.
    Past(Vec<u8>, usize),
    /// Read and handed over: reads go straight through.
    Through,
}

/// A socket whose first write carries the VOP offer of TLS and whose first
/// reads take the server's VOP reply off the front (see the
/// [module](self) documentation).
#[derive(Debug)]
pub struct VopAhead<S> {
    inner: S,
    /// The VOP line, then the handshake's writes, held (see [`Hold`]).
    hold: Hold,
    reply: Reply,
    state: Arc<Mutex<AheadState>>,
}

impl<S> VopAhead<S> {
    /// Wraps `inner`, offering TLS alone; the state to read after the
    /// handshake.
    pub fn new(inner: S) -> (VopAhead<S>, Arc<Mutex<AheadState>>) {
        let state = Arc::new(Mutex::new(AheadState::default()));
        let ahead = VopAhead {
            inner,
            hold: Hold::new(vop::client_line(&[Transport::Tls])),
            reply: Reply::Reading(Vec::new()),
            state: state.clone(),
        };
        (ahead, state)
    }

    /// Wraps `inner` after VOP was negotiated the usual way: reads and
    /// writes go straight through.
    pub fn through(inner: S) -> VopAhead<S> {
        VopAhead {
            inner,
            hold: Hold::new(Vec::new()),
            reply: Reply::Through,
            state: Arc::new(Mutex::new(AheadState {
                replied: true,
                failure: None,
            })),
        }
    }

    /// The inner stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Ends the hold on writes (after the TLS handshake): what is held
    /// (the client's Finished) goes out with the next write, the link's
    /// first bytes, or at the next flush or shutdown.
    pub fn stop_holding(&mut self) {
        self.hold.stop();
    }

    fn fail(&self, e: Error) -> io::Error {
        let text = e.to_string();
        if let Ok(mut s) = self.state.lock() {
            s.failure.get_or_insert(e);
        }
        io::Error::other(text)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for VopAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.reply {
                Reply::Through => {
                    return match Pin::new(&mut this.inner).poll_read(cx, buf) {
                        Poll::Pending => {
                            ready!(this.hold.poll_read_pending(&mut this.inner, cx))?;
                            Poll::Pending
                        }
                        done => done,
                    };
                }
                Reply::Past(bytes, pos) => {
                    let n = buf.remaining().min(bytes.len() - *pos);
                    buf.put_slice(&bytes[*pos..*pos + n]);
                    *pos += n;
                    if *pos == bytes.len() {
                        this.reply = Reply::Through;
                    }
                    return Poll::Ready(Ok(()));
                }
                Reply::Reading(got) => {
                    let mut chunk = [0u8; MAX_LINE];
                    let room = MAX_LINE.saturating_sub(got.len()).max(1);
                    let mut rb = ReadBuf::new(&mut chunk[..room]);
                    let read = match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                        Poll::Pending => {
                            // The line and the ClientHello, held till now.
                            ready!(this.hold.poll_read_pending(&mut this.inner, cx))?;
                            return Poll::Pending;
                        }
                        Poll::Ready(read) => read,
                    };
                    let closed = match read {
                        Ok(()) if rb.filled().is_empty() => true,
                        Ok(()) => false,
                        // A server that refuses closes with our ClientHello
                        // unread, which the kernel answers with a reset.
                        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => true,
                        Err(e) => return Poll::Ready(Err(e)),
                    };
                    if closed {
                        let e = this.fail(Error::ClosedDuring(vop::STEP));
                        return Poll::Ready(Err(e));
                    }
                    got.extend_from_slice(rb.filled());
                    match vop::parse_server_reply(got, &[Transport::Tls]) {
                        Ok(None) => {}
                        Ok(Some((_, used))) => {
                            let past = got.split_off(used);
                            if let Ok(mut s) = this.state.lock() {
                                s.replied = true;
                            }
                            this.reply = if past.is_empty() {
                                Reply::Through
                            } else {
                                Reply::Past(past, 0)
                            };
                        }
                        Err(e) => return Poll::Ready(Err(this.fail(e))),
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for VopAhead<S> {
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
    use std::time::Duration;
    use tokio::io::{duplex, AsyncReadExt, AsyncWriteExt};

    /// The line goes out in front of the first write; the reply comes off
    /// the front of the first reads, the bytes past it are the caller's.
    #[tokio::test]
    async fn the_line_rides_the_first_write_and_the_reply_is_read_off() {
        let (a, mut b) = duplex(4096);
        let (mut ahead, state) = VopAhead::new(a);
        ahead.write_all(b"\x16hello").await.expect("write");
        ahead.flush().await.expect("flush");
        // Held (the handshake's writes go out when it waits for the server).
        let mut got = vec![0u8; 64];
        let early = tokio::time::timeout(Duration::ZERO, b.read(&mut got)).await;
        assert!(early.is_err(), "nothing sent before the handshake reads");
        let mut out = [0u8; 4];
        let server = async {
            let n = b.read(&mut got).await.expect("read");
            assert_eq!(&got[..n], b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n\x16hello");
            // The reply arrives in pieces, with TLS bytes behind it.
            b.write_all(b"VOP_DRAFT-0.8 USE_TRA").await.expect("w");
            b.write_all(b"NSPORT:TLS\n\x16srv").await.expect("w");
        };
        let (read, ()) = tokio::join!(ahead.read_exact(&mut out), server);
        read.expect("read");
        assert_eq!(&out, b"\x16srv");
        assert!(state.lock().expect("lock").replied());
        // Then straight through.
        b.write_all(b"more").await.expect("w");
        ahead.read_exact(&mut out).await.expect("read");
        assert_eq!(&out, b"more");
    }

    /// After the usual negotiation the wrapper adds and takes nothing.
    #[tokio::test]
    async fn through_passes_bytes_as_they_are() {
        let (a, mut b) = duplex(4096);
        let mut ahead = VopAhead::through(a);
        ahead.write_all(b"\x16hi").await.expect("write");
        // Held until the hold ends (or a read waits).
        ahead.stop_holding();
        ahead.flush().await.expect("flush");
        let mut got = [0u8; 3];
        b.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"\x16hi");
        b.write_all(b"\x16yo").await.expect("w");
        ahead.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"\x16yo");
        assert!(ahead.state.lock().expect("lock").replied());
    }

    /// A reply choosing anything but TLS, or no reply, fails the read and
    /// says why.
    #[tokio::test]
    async fn a_reply_that_is_not_tls_or_none_says_why() {
        for (reply, want) in [
            (&b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\n"[..], "not offered"),
            (&b"HTTP/1.1 400 Bad Request\r\n"[..], "does not start with"),
            (&b""[..], "closed the connection during vop negotiation"),
        ] {
            let (a, mut b) = duplex(4096);
            let (mut ahead, state) = VopAhead::new(a);
            b.write_all(reply).await.expect("w");
            drop(b);
            let mut out = [0u8; 4];
            assert!(ahead.read_exact(&mut out).await.is_err());
            let failure = state.lock().expect("lock").failure().expect("a failure");
            assert!(failure.to_string().contains(want), "{failure}");
        }
    }
}
