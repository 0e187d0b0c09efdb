//! [`QuietStream`]: a unix stream socket that wakes its process only when
//! there is something to read.
//!
//! Why: on a unix stream socket every `read` by the peer frees buffer space
//! on the writer's side, and Linux then signals the writer writable
//! (`EPOLLOUT`) again, whether or not it ever ran out of space (TCP only does
//! so for a writer that did). A socket registered with the reactor for
//! writing as well as reading, as `tokio::net::UnixStream` is, therefore
//! wakes the writing process once for every message the other side reads:
//! on the control link, each report a node sends woke the node again when
//! the controller read it, and each grant woke the controller when the node
//! read it. On a shared core each of those wake-ups is a pair of context
//! switches for nothing.
//!
//! A `QuietStream` is registered for reading only. Writes go straight to
//! the socket; only a write that would block registers a second descriptor
//! for the same socket (a `dup`) for writability, and drops it once a write
//! goes through again, so the costly-but-rare case still waits properly.
//! A [`QuietStream::dormant`] one is not registered at all: for a socket
//! whose incoming data is read only when convenient, or never (the
//! controller's end of the `dispatch` connection socket, on which nodes
//! send nothing). Even a
//! registration for hang-ups alone would not do: Linux wakes a waiter
//! registered for `EPOLLPRI` on every arriving message, only to find
//! nothing to report.
//!
//! Besides `fdpass` and `listen`, the only module of the crate with
//! `unsafe` code: the reactor registration of a descriptor, which the
//! stream owns.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// A unix stream socket registered with the reactor for reading only (or,
/// if dormant, not at all); see the module documentation.
#[derive(Debug)]
pub struct QuietStream {
    io: Io,
    /// A duplicate of the socket registered for writability, while a write
    /// is blocked.
    write_wait: Option<AsyncFd<StdUnixStream>>,
}

#[derive(Debug)]
enum Io {
    /// Registered for reading.
    Reading(AsyncFd<StdUnixStream>),
    /// Not registered for reading at all.
    Dormant(StdUnixStream),
}

impl QuietStream {
    /// Wraps `stream` (made non-blocking), registered for reading.
    pub fn new(stream: StdUnixStream) -> io::Result<QuietStream> {
        stream.set_nonblocking(true)?;
        Ok(QuietStream {
            io: Io::Reading(register(stream, Interest::READABLE)?),
            write_wait: None,
        })
    }

    /// Wraps `stream` (made non-blocking) without registering it: data that
    /// arrives wakes nobody; [`QuietStream::try_read`] takes what is there.
    /// Writes work as on any `QuietStream`; waiting for data does not.
    pub fn dormant(stream: StdUnixStream) -> io::Result<QuietStream> {
        stream.set_nonblocking(true)?;
        Ok(QuietStream {
            io: Io::Dormant(stream),
            write_wait: None,
        })
    }

    /// Converts a tokio unix stream (deregistering it first).
    pub fn from_tokio(stream: tokio::net::UnixStream) -> io::Result<QuietStream> {
        QuietStream::new(stream.into_std()?)
    }

    /// The socket.
    pub fn get_ref(&self) -> &StdUnixStream {
        match &self.io {
            Io::Reading(fd) => fd.get_ref(),
            Io::Dormant(sock) => sock,
        }
    }

    fn read_registration(&self) -> io::Result<&AsyncFd<StdUnixStream>> {
        match &self.io {
            Io::Reading(fd) => Ok(fd),
            Io::Dormant(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a dormant stream does not wait for data",
            )),
        }
    }

    /// Reads what has arrived, without waiting: `WouldBlock` if nothing
    /// has.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.get_ref().read(buf)
    }

    /// Waits until the socket is readable (data, the end of the stream, or
    /// an error).
    pub async fn readable(&self) -> io::Result<()> {
        let mut guard = self.read_registration()?.readable().await?;
        guard.clear_ready();
        Ok(())
    }

    /// Runs the non-blocking read `f` once the socket is readable, waiting
    /// again each time it would block.
    pub async fn read_with<R>(
        &self,
        mut f: impl FnMut(&StdUnixStream) -> io::Result<R>,
    ) -> io::Result<R> {
        let reg = self.read_registration()?;
        loop {
            let mut guard = reg.readable().await?;
            match guard.try_io(|inner| f(inner.get_ref())) {
                Ok(result) => return result,
                Err(_would_block) => continue,
            }
        }
    }

    /// Runs the non-blocking write `f`, waiting for writability (on a
    /// temporary registration) each time it would block.
    pub async fn write_with<R>(
        &mut self,
        mut f: impl FnMut(&StdUnixStream) -> io::Result<R>,
    ) -> io::Result<R> {
        std::future::poll_fn(|cx| self.poll_write_with(cx, &mut f)).await
    }

    fn poll_write_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        f: &mut impl FnMut(&StdUnixStream) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match f(self.get_ref()) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                done => {
                    // Writing again: stop listening for writability.
                    self.write_wait = None;
                    return Poll::Ready(done);
                }
            }
            if self.write_wait.is_none() {
                // Registering reports the current state, so space freed
                // since the failed write is not missed.
                let dup = self.get_ref().try_clone()?;
                self.write_wait = Some(register(dup, Interest::WRITABLE)?);
            }
            let Some(wait) = &self.write_wait else {
                continue;
            };
            let mut guard = ready!(wait.poll_write_ready(cx))?;
            guard.clear_ready();
        }
    }
}

/// std types that own their descriptor, so that registering them with the
/// reactor is sound.
pub(crate) trait OwnsFd: AsRawFd {}
impl OwnsFd for StdUnixStream {}
impl OwnsFd for std::net::TcpListener {}

/// Registers `io` with the reactor for `interest`.
#[allow(unsafe_code)]
pub(crate) fn register<T: OwnsFd>(io: T, interest: Interest) -> io::Result<AsyncFd<T>> {
    // SAFETY: the `AsyncFd` takes `io`, which owns its descriptor (`OwnsFd`
    // is only implemented for such std types): the descriptor stays open
    // and names the same file until the `AsyncFd` (and `io` with it) is
    // dropped, and `as_raw_fd` always returns that one descriptor.
    unsafe { AsyncFd::register_with_interest(io, interest) }.map_err(|e| e.into_parts().1)
}

impl AsRawFd for QuietStream {
    fn as_raw_fd(&self) -> RawFd {
        self.get_ref().as_raw_fd()
    }
}

impl AsFd for QuietStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

impl AsyncRead for QuietStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let reg = self.get_mut().read_registration()?;
        loop {
            let mut guard = ready!(reg.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|inner| inner.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for QuietStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, &mut |s: &StdUnixStream| (&*s).write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_write_with(cx, &mut |s: &StdUnixStream| (&*s).write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_ref().shutdown(std::net::Shutdown::Write) {
            // Already gone: nothing left to shut down.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            other => Poll::Ready(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn pair() -> (QuietStream, QuietStream) {
        let (a, b) = StdUnixStream::pair().expect("socketpair");
        (
            QuietStream::new(a).expect("a"),
            QuietStream::new(b).expect("b"),
        )
    }

    #[tokio::test]
    async fn carries_bytes_both_ways_and_ends_with_eof() {
        let (mut a, mut b) = pair();
        a.write_all(b"hello").await.expect("write");
        let mut buf = [0u8; 5];
        b.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");
        b.write_all(b"back").await.expect("write");
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"back");
        a.shutdown().await.expect("shutdown");
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty());
    }

    /// A writer that fills the socket waits (on the temporary
    /// registration) until the reader makes room, and then goes on.
    #[tokio::test]
    async fn a_blocked_write_waits_for_room() {
        let (mut a, mut b) = pair();
        let total = 4 << 20; // far more than a socket buffer
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 64 << 10];
            let mut sent = 0;
            while sent < total {
                a.write_all(&chunk).await.expect("write");
                sent += chunk.len();
            }
            assert!(
                a.write_wait.is_none(),
                "the writability registration is dropped"
            );
            a
        });
        let mut got = 0;
        let mut buf = vec![0u8; 64 << 10];
        while got < total {
            let n = b.read(&mut buf).await.expect("read");
            assert!(n > 0, "early eof");
            assert!(buf[..n].iter().all(|&x| x == 7));
            got += n;
        }
        writer.await.expect("writer");
    }

    /// A dormant stream takes what has arrived without waiting, and once
    /// woken for reading waits for data and the end of the stream.
    #[tokio::test]
    async fn a_dormant_stream_reads_only_what_is_there() {
        let (a, b) = StdUnixStream::pair().expect("socketpair");
        let mut dormant = QuietStream::dormant(a).expect("dormant");
        let mut peer = QuietStream::new(b).expect("peer");
        let mut buf = [0u8; 8];
        assert_eq!(
            dormant.try_read(&mut buf).expect_err("nothing yet").kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(dormant.readable().await.is_err(), "not registered");
        peer.write_all(b"ack").await.expect("write");
        assert_eq!(dormant.try_read(&mut buf).expect("data"), 3);
        assert_eq!(&buf[..3], b"ack");
        dormant
            .write_all(b"out")
            .await
            .expect("a dormant stream writes");
        let mut got = [0u8; 3];
        peer.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"out");
        drop(peer);
        assert_eq!(dormant.try_read(&mut buf).expect("eof"), 0);
    }
}
