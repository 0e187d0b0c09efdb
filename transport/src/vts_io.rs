//! A VTS connection over an async byte stream: drives the sans-IO
//! [`Vts`] core (docs/vts.md) the way tokio-rustls drives a TLS session.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::vts::Vts;
use crate::Error;

/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Plaintext accepted per write call (four records).
const WRITE_CHUNK: usize = 64 * 1024;

/// A connection after a completed VTS handshake.
///
/// The side that sent the last handshake message (a client without a key,
/// a server whose client sent one) holds what it writes until the peer's
/// first record has arrived (see [`Vts::send`]); a protocol in which that
/// side must speak first while the other waits would stall. VOL is not
/// one: both ends start with their VEC hello.
#[derive(Debug)]
pub struct VtsStream<S> {
    io: S,
    vts: Vts,
    /// Ciphertext not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
    /// Plaintext not yet read, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    eof: bool,
}

/// Turns a VTS protocol error into the I/O error a stream reports; the
/// crate error stays reachable as its source.
fn io_error(e: Error) -> io::Error {
    match e {
        Error::Io(e) => e,
        e => io::Error::new(io::ErrorKind::InvalidData, e),
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> VtsStream<S> {
    /// Runs the handshake of `vts` (a client or server core) over `io`.
    /// The caller bounds it in time.
    pub async fn handshake(mut io: S, mut vts: Vts) -> Result<VtsStream<S>, Error> {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let out = vts.take_output();
            if !out.is_empty() {
                io.write_all(&out).await?;
                io.flush().await?;
            }
            if vts.is_established() {
                break;
            }
            let n = io.read(&mut buf).await?;
            if n == 0 {
                vts.receive_eof()?;
                return Err(Error::ClosedDuring("the VTS handshake"));
            }
            vts.receive(&buf[..n])?;
        }
        let plain = vts.take_plaintext();
        Ok(VtsStream {
            io,
            vts,
            out: Vec::new(),
            out_pos: 0,
            plain,
            plain_pos: 0,
            eof: false,
        })
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The VTS core (suite, peer key).
    pub fn session(&self) -> &Vts {
        &self.vts
    }

    /// Writes pending ciphertext; `Ready(Ok)` once none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = match Pin::new(&mut self.io).poll_write(cx, &self.out[self.out_pos..]) {
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for VtsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // Records released by the core on reading (see `Vts::send`) go out
        // here; a socket not ready for them wakes this task again.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            if rb.filled().is_empty() {
                this.eof = true;
                if let Err(e) = this.vts.receive_eof() {
                    return Poll::Ready(Err(io_error(e)));
                }
                continue;
            }
            if let Err(e) = this.vts.receive(rb.filled()) {
                return Poll::Ready(Err(io_error(e)));
            }
            this.plain = this.vts.take_plaintext();
            this.plain_pos = 0;
            if this.vts.has_output() {
                this.out.extend(this.vts.take_output());
                if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                    return Poll::Ready(Err(e));
                }
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for VtsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other.map(|r| r.map(|()| 0)),
        }
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(WRITE_CHUNK);
        if let Err(e) = this.vts.send(&buf[..n]) {
            return Poll::Ready(Err(io_error(e)));
        }
        this.out = this.vts.take_output();
        this.out_pos = 0;
        // The plaintext is taken; what the socket does not take now goes
        // out on the next write, flush or shutdown.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_drain(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.io).poll_shutdown(cx),
            other => other,
        }
    }
}
