//! Passing file descriptors between the controller and its nodes over unix
//! stream sockets (SCM_RIGHTS).
//!
//! Every message is a small fixed-size frame of data with descriptors
//! attached to it. Received descriptors are always close-on-exec: they are
//! received with `MSG_CMSG_CLOEXEC`, so there is no window in which an
//! `exec` elsewhere in the process could inherit them. A frame that arrives
//! with more descriptors than expected has the extra ones closed, and a
//! truncated control message (`MSG_CTRUNC`) is an error, never a silent fd
//! leak.
//!
//! One of the three modules of the crate with `unsafe` code (with `quiet`'s
//! reactor registration and `listen`'s `getsockopt`): adopting a raw
//! descriptor that the kernel just handed us as an `OwnedFd`.

#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::quiet::QuietStream;

/// Most descriptors one frame may carry.
pub const MAX_FDS: usize = 16;

/// Sends `data` as one frame with `fds` attached.
///
/// `data` must be non-empty (descriptors ride on data bytes) and small
/// enough to be sent in one piece (frames here are at most a few dozen
/// bytes; a unix stream socket never splits those).
pub async fn send(sock: &mut QuietStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if data.is_empty() || fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "frame must carry data and at most 16 fds",
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let sent = sock
        .write_with(|s| {
            let iov = [IoSlice::new(data)];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage<'_>] = if raw.is_empty() { &[] } else { &cmsg };
            sendmsg::<()>(s.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None)
                .map_err(io::Error::from)
        })
        .await?;
    if sent == data.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("frame of {} bytes sent only in part ({sent})", data.len()),
        ))
    }
}

/// Receives one frame of exactly `buf.len()` bytes and the descriptors that
/// came with it. Returns `Ok(None)` on a clean end of stream before the
/// frame started.
pub async fn recv(sock: &QuietStream, buf: &mut [u8]) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut fds = Vec::new();
    let n = sock
        .read_with(|s| {
            let (n, mut more) = recv_some(s.as_raw_fd(), buf)?;
            fds.append(&mut more);
            Ok(n)
        })
        .await?;
    finish(sock, buf, n, fds).await
}

/// As [`recv`], but only if a frame has begun to arrive: `WouldBlock` if
/// nothing is there (a frame that has begun is waited for whole).
pub async fn try_recv(sock: &QuietStream, buf: &mut [u8]) -> io::Result<Option<Vec<OwnedFd>>> {
    let (n, fds) = recv_some(sock.as_raw_fd(), buf)?;
    finish(sock, buf, n, fds).await
}

/// The rest of a frame of which `filled` bytes (and `fds`) came.
async fn finish(
    sock: &QuietStream,
    buf: &mut [u8],
    mut filled: usize,
    mut fds: Vec<OwnedFd>,
) -> io::Result<Option<Vec<OwnedFd>>> {
    if filled == 0 && !buf.is_empty() {
        return Ok(None);
    }
    while filled < buf.len() {
        check_count(&fds)?;
        let n = sock
            .read_with(|s| {
                let (n, mut more) = recv_some(s.as_raw_fd(), &mut buf[filled..])?;
                fds.append(&mut more);
                Ok(n)
            })
            .await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream ended inside a frame",
            ));
        }
        filled += n;
    }
    check_count(&fds)?;
    Ok(Some(fds))
}

fn check_count(fds: &[OwnedFd]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many descriptors in one frame",
        ));
    }
    Ok(())
}

/// Takes every descriptor waiting in `sock`'s receive queue, without
/// waiting, and discards the data bytes they came with.
///
/// For the controller, which keeps a copy of a node's end of the `dispatch`
/// connection socket: once the node is gone, what it never received is
/// still queued there, and comes back this way. A descriptor is received
/// by exactly one reader, so nothing a node took can come back as well.
pub fn drain(sock: BorrowedFd<'_>) -> io::Result<Vec<OwnedFd>> {
    let mut all = Vec::new();
    let mut buf = [0u8; 64];
    loop {
        match recv_flags(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
            Ok((0, fds)) => {
                all.extend(fds);
                return Ok(all);
            }
            Ok((_, fds)) => all.extend(fds),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(all),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // A truncated frame: what did arrive was closed; go on.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {}
            Err(e) => return Err(e),
        }
    }
}

fn recv_some(sock: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    recv_flags(sock, buf, MsgFlags::empty())
}

fn recv_flags(sock: RawFd, buf: &mut [u8], flags: MsgFlags) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut space),
        flags | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            for fd in received {
                // SAFETY: the kernel just installed `fd` in our table for us
                // (SCM_RIGHTS); nothing else owns it, so adopting it is sound
                // and guarantees it is closed exactly once.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
        // Whatever did arrive is in `fds` and gets closed on return.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "control message truncated (too many descriptors)",
        ));
    }
    Ok((msg.bytes, fds))
}

/// Takes ownership of an inherited descriptor that must be a unix stream
/// socket, sets close-on-exec on it and registers it with tokio (for
/// reading only: see [`QuietStream`]).
///
/// The descriptor number comes from the command line the controller wrote;
/// it is checked (it must be open and a unix stream socket) before it is
/// adopted, so a wrong number fails cleanly instead of taking over some
/// other file.
pub fn adopt_unix_stream(fd: RawFd) -> io::Result<QuietStream> {
    use nix::sys::socket::{getsockname, getsockopt, sockopt, SockType, UnixAddr};
    if fd < 3 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is a standard stream"),
        ));
    }
    // SAFETY: only borrowed for the checks below; ownership is taken after
    // they prove the descriptor is an open unix stream socket.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind = getsockopt(&borrowed, sockopt::SockType).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a socket: {e}"),
        )
    })?;
    if kind != SockType::Stream || getsockname::<UnixAddr>(fd).is_err() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("descriptor {fd} is not a unix stream socket"),
        ));
    }
    set_cloexec(borrowed)?;
    // SAFETY: the descriptor is open (checked above), was left for this
    // process by its parent, and nothing else in the process refers to it:
    // it is adopted exactly once, at start-up.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    QuietStream::new(std::os::unix::net::UnixStream::from(owned))
}

/// Whether `fd` has close-on-exec set.
pub fn is_cloexec(fd: BorrowedFd<'_>) -> io::Result<bool> {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD)?;
    Ok(nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC))
}

/// Sets close-on-exec on `fd`.
pub fn set_cloexec(fd: BorrowedFd<'_>) -> io::Result<()> {
    nix::fcntl::fcntl(
        fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn pair() -> (QuietStream, QuietStream) {
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        (
            QuietStream::new(a).expect("a"),
            QuietStream::new(b).expect("b"),
        )
    }

    #[tokio::test]
    async fn passes_descriptors_with_cloexec() {
        let (mut a, b) = pair();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        send(&mut a, b"L", &[listener.as_fd()]).await.expect("send");
        let mut buf = [0u8; 1];
        let fds = recv(&b, &mut buf).await.expect("recv").expect("frame");
        assert_eq!(&buf, b"L");
        assert_eq!(fds.len(), 1);
        assert!(
            is_cloexec(fds[0].as_fd()).expect("fcntl"),
            "received fds are close-on-exec"
        );
        // It is the same socket.
        let received = std::net::TcpListener::from(fds.into_iter().next().expect("one"));
        assert_eq!(received.local_addr().expect("addr"), addr);
    }

    /// What the reader never received comes back whole and in order, and
    /// nothing it did receive comes back too.
    #[tokio::test]
    async fn drain_takes_back_exactly_what_was_not_received() {
        let (mut a, b) = pair();
        let listeners: Vec<std::net::TcpListener> = (0..5)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let port = |fd: &OwnedFd| {
            let l = std::net::TcpListener::from(fd.try_clone().expect("dup"));
            l.local_addr().expect("addr").port()
        };
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        send(&mut a, &[2], &[listeners[0].as_fd(), listeners[1].as_fd()])
            .await
            .expect("send");
        send(&mut a, &[1], &[listeners[2].as_fd()])
            .await
            .expect("send");
        send(&mut a, &[2], &[listeners[3].as_fd(), listeners[4].as_fd()])
            .await
            .expect("send");
        let mut count = [0u8; 1];
        let taken = recv(&b, &mut count).await.expect("recv").expect("frame");
        assert_eq!(taken.iter().map(port).collect::<Vec<_>>(), ports[..2]);
        let back = drain(b.as_fd()).expect("drain");
        assert_eq!(back.iter().map(port).collect::<Vec<_>>(), ports[2..]);
        for fd in &back {
            assert!(
                is_cloexec(fd.as_fd()).expect("fcntl"),
                "drained fds are close-on-exec"
            );
        }
        assert!(drain(b.as_fd()).expect("drain again").is_empty());
        // The end of the stream ends a drain too.
        send(&mut a, &[1], &[listeners[0].as_fd()])
            .await
            .expect("send");
        drop(a);
        assert_eq!(drain(b.as_fd()).expect("drain at EOF").len(), 1);
    }

    #[tokio::test]
    async fn frames_without_descriptors_and_several_at_once() {
        let (mut a, b) = pair();
        let f1 = std::fs::File::open("/dev/null").expect("open");
        let f2 = std::fs::File::open("/dev/null").expect("open");
        send(&mut a, b"ab", &[f1.as_fd(), f2.as_fd()])
            .await
            .expect("send");
        send(&mut a, b"cd", &[]).await.expect("send");
        let mut buf = [0u8; 2];
        assert_eq!(
            recv(&b, &mut buf)
                .await
                .expect("recv")
                .expect("frame")
                .len(),
            2
        );
        assert_eq!(&buf, b"ab");
        assert_eq!(
            recv(&b, &mut buf)
                .await
                .expect("recv")
                .expect("frame")
                .len(),
            0
        );
        assert_eq!(&buf, b"cd");
    }

    #[tokio::test]
    async fn try_recv_takes_only_what_has_arrived() {
        let (mut a, b) = pair();
        let mut buf = [0u8; 1];
        assert_eq!(
            try_recv(&b, &mut buf)
                .await
                .expect_err("nothing yet")
                .kind(),
            io::ErrorKind::WouldBlock
        );
        let f = std::fs::File::open("/dev/null").expect("open");
        send(&mut a, b"x", &[f.as_fd(), f.as_fd()])
            .await
            .expect("send");
        send(&mut a, b"y", &[f.as_fd()]).await.expect("send");
        // One frame per call, each with its own descriptors.
        let first = try_recv(&b, &mut buf).await.expect("first").expect("frame");
        assert_eq!((&buf, first.len()), (b"x", 2));
        let second = try_recv(&b, &mut buf)
            .await
            .expect("second")
            .expect("frame");
        assert_eq!((&buf, second.len()), (b"y", 1));
        assert_eq!(
            try_recv(&b, &mut buf).await.expect_err("drained").kind(),
            io::ErrorKind::WouldBlock
        );
        drop(a);
        assert!(try_recv(&b, &mut buf).await.expect("eof").is_none());
    }

    #[tokio::test]
    async fn end_of_stream_is_reported() {
        let (a, b) = pair();
        drop(a);
        let mut buf = [0u8; 4];
        assert!(recv(&b, &mut buf).await.expect("recv").is_none());
        let (mut a, b) = pair();
        send(&mut a, b"xy", &[]).await.expect("send");
        drop(a);
        let err = recv(&b, &mut buf).await.expect_err("short frame");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn adopting_checks_the_descriptor() {
        use std::os::fd::IntoRawFd;
        assert!(adopt_unix_stream(1).is_err(), "stdout is refused");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let raw = tcp.as_fd().as_raw_fd();
        assert!(adopt_unix_stream(raw).is_err(), "a tcp socket is refused");
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let raw = a.into_raw_fd();
        let adopted = adopt_unix_stream(raw).expect("a unix stream socket is adopted");
        assert!(is_cloexec(adopted.as_fd()).expect("fcntl"));
    }

    #[tokio::test]
    async fn empty_frames_are_refused() {
        let (mut a, _b) = pair();
        assert_eq!(
            send(&mut a, b"", &[]).await.expect_err("empty").kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
