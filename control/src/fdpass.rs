//! Passing file descriptors between the controller and its nodes over unix
//! stream sockets (SCM_RIGHTS).
//!
//! Every message is a small fixed-size frame of data with descriptors
//! attached to it. Received descriptors are always close-on-exec: they are
//! received with `MSG_CMSG_CLOEXEC`, so there is no window in which an
//! `exec` elsewhere in the process could inherit them. A frame that arrives
//! with more descriptors than expected has the extra ones closed, and a
//! truncated control message (`MSG_CTRUNC`) is never a silent fd leak:
//! [`recv`] reports it as an error (closing what did arrive), and
//! [`recv_frame`] hands over what did arrive and says that some were lost.
//!
//! The kernel truncates a frame's descriptors when the receiver's
//! descriptor table is full (`EMFILE`): it installs as many as fit and
//! closes the rest, which are lost to both sides. A receiver that must not
//! lose any (a node in `dispatch` mode) keeps room for a whole frame
//! ([`MAX_FDS`]) before it receives.
//!
//! One of the three modules of the crate with `unsafe` code (with `quiet`'s
//! reactor registration and `listen`'s `getsockopt`): adopting a raw
//! descriptor that the kernel just handed us as an `OwnedFd`.

#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

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

/// A frame's descriptors, as [`recv_frame`] received them.
#[derive(Debug, Default)]
pub struct Frame {
    /// The descriptors that arrived (close-on-exec).
    pub fds: Vec<OwnedFd>,
    /// The kernel truncated the descriptors (`MSG_CTRUNC`): some that were
    /// sent did not arrive and are closed (lost). Happens when this
    /// process's descriptor table is full.
    pub truncated: bool,
}

/// Receives one frame of exactly `buf.len()` bytes and the descriptors that
/// came with it. Returns `Ok(None)` on a clean end of stream before the
/// frame started. A truncated frame is an error (`InvalidData`), and what
/// did arrive of it is closed.
pub async fn recv(sock: &QuietStream, buf: &mut [u8]) -> io::Result<Option<Vec<OwnedFd>>> {
    match recv_frame(sock, buf).await? {
        Some(frame) if frame.truncated => Err(truncated_error()),
        Some(frame) => Ok(Some(frame.fds)),
        None => Ok(None),
    }
}

/// As [`recv`], but a truncated frame is not an error: the descriptors that
/// did arrive are returned with [`Frame::truncated`] set, so that the
/// caller can still use them.
pub async fn recv_frame(sock: &QuietStream, buf: &mut [u8]) -> io::Result<Option<Frame>> {
    let mut frame = Frame::default();
    let n = sock
        .read_with(|s| {
            let got = recv_flags(s.as_raw_fd(), buf, 0)?;
            frame.add(got.fds, got.truncated);
            Ok(got.bytes)
        })
        .await?;
    finish(sock, buf, n, frame).await
}

/// As [`recv`], but only if a frame has begun to arrive: `WouldBlock` if
/// nothing is there (a frame that has begun is waited for whole).
pub async fn try_recv(sock: &QuietStream, buf: &mut [u8]) -> io::Result<Option<Vec<OwnedFd>>> {
    let got = recv_flags(sock.as_raw_fd(), buf, 0)?;
    let mut frame = Frame::default();
    frame.add(got.fds, got.truncated);
    match finish(sock, buf, got.bytes, frame).await? {
        Some(frame) if frame.truncated => Err(truncated_error()),
        Some(frame) => Ok(Some(frame.fds)),
        None => Ok(None),
    }
}

fn truncated_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        "control message truncated (descriptors lost: too many, or the descriptor table is full)",
    )
}

impl Frame {
    fn add(&mut self, mut fds: Vec<OwnedFd>, truncated: bool) {
        self.fds.append(&mut fds);
        self.truncated |= truncated;
    }
}

/// The rest of a frame of which `filled` bytes (and `frame`'s descriptors)
/// came.
async fn finish(
    sock: &QuietStream,
    buf: &mut [u8],
    mut filled: usize,
    mut frame: Frame,
) -> io::Result<Option<Frame>> {
    if filled == 0 && !buf.is_empty() {
        return Ok(None);
    }
    while filled < buf.len() {
        check_count(&frame.fds)?;
        let n = sock
            .read_with(|s| {
                let got = recv_flags(s.as_raw_fd(), &mut buf[filled..], 0)?;
                frame.add(got.fds, got.truncated);
                Ok(got.bytes)
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
    check_count(&frame.fds)?;
    Ok(Some(frame))
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
        match recv_flags(sock.as_raw_fd(), &mut buf, libc::MSG_DONTWAIT) {
            Ok(got) if got.bytes == 0 => {
                all.extend(got.fds);
                return Ok(all);
            }
            // A truncated frame: what did arrive is kept; go on.
            Ok(got) => all.extend(got.fds),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(all),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// What one `recvmsg` brought.
struct Got {
    bytes: usize,
    fds: Vec<OwnedFd>,
    truncated: bool,
}

/// A buffer for the control message of a frame, at least `CMSG_SPACE` of
/// [`MAX_FDS`] descriptors, in `u64`s for the alignment `cmsghdr` needs.
const CMSG_WORDS: usize =
    (std::mem::size_of::<libc::cmsghdr>() + MAX_FDS * std::mem::size_of::<RawFd>()).div_ceil(8) + 1;

/// One `recvmsg` with `MSG_CMSG_CLOEXEC`, adopting every descriptor the
/// kernel installed, also when it truncated the control message. (nix's
/// `RecvMsg::cmsgs` refuses to parse a truncated one, `ENOBUFS`, which
/// leaked the descriptors that did arrive; the kernel writes a well-formed
/// header for exactly those, so they are read here.)
fn recv_flags(sock: RawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<Got> {
    let mut space = [0u64; CMSG_WORDS];
    let mut iov = [IoSliceMut::new(buf)];
    // SAFETY: all zeroes is a valid `msghdr` (null pointers, zero lengths).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr().cast();
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    // Room for exactly `MAX_FDS`: more are truncated, not taken.
    // SAFETY: CMSG_SPACE only computes a size.
    let room = unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) };
    msg.msg_controllen = (room as usize).min(std::mem::size_of_val(&space)) as _;
    // SAFETY: `msg` points at a live iovec (of `buf`, via `IoSliceMut`,
    // which is ABI-compatible with `iovec`) and a live control buffer of
    // the length given; the kernel writes within those lengths.
    let n = unsafe { libc::recvmsg(sock, &mut msg, flags | libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel set `msg_controllen` to what it wrote into
    // `space`, which is aligned for `cmsghdr`; the CMSG macros stay within
    // it. Each SCM_RIGHTS entry holds `(cmsg_len - CMSG_LEN(0)) / 4`
    // descriptors that the kernel just installed in our table for us:
    // nothing else owns them, so adopting each is sound and guarantees it
    // is closed exactly once.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            let header = &*cmsg;
            if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
                let data_len =
                    (header.cmsg_len as usize).saturating_sub(libc::CMSG_LEN(0) as usize);
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..data_len / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(Got {
        bytes: n as usize,
        fds,
        truncated: msg.msg_flags & libc::MSG_CTRUNC != 0,
    })
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

    /// Sends `n` unix sockets in one frame, past [`send`]'s limit, and keeps
    /// their peers: a peer reads end-of-stream once every copy of the sent
    /// socket is closed.
    fn send_many(a: &QuietStream, n: usize) -> Vec<std::os::unix::net::UnixStream> {
        let (mut peers, sent): (Vec<_>, Vec<_>) = (0..n)
            .map(|_| std::os::unix::net::UnixStream::pair().expect("pair"))
            .unzip();
        let raw: Vec<RawFd> = sent.iter().map(AsRawFd::as_raw_fd).collect();
        let iov = [IoSlice::new(b"x")];
        sendmsg::<()>(
            a.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        drop(sent); // in flight now: the frame holds the only copies
        for p in &mut peers {
            p.set_nonblocking(true).expect("nonblocking");
        }
        peers
    }

    fn closed(peer: &mut std::os::unix::net::UnixStream) -> bool {
        use std::io::Read;
        matches!(peer.read(&mut [0u8; 1]), Ok(0))
    }

    /// A truncated frame (more descriptors than the receiver takes; the
    /// kernel does the same when the receiver's table is full): what
    /// arrived is handed over by `recv_frame`, and `recv` closes it with an
    /// error; nothing leaks either way (nix refused to parse the truncated
    /// message and leaked what had arrived).
    #[tokio::test]
    async fn truncated_frames_keep_or_close_what_arrived_and_leak_nothing() {
        let (a, b) = pair();
        let mut peers = send_many(&a, MAX_FDS + 4);
        let mut buf = [0u8; 1];
        let frame = recv_frame(&b, &mut buf)
            .await
            .expect("recv")
            .expect("frame");
        assert!(frame.truncated);
        assert_eq!(frame.fds.len(), MAX_FDS, "what arrived is handed over");
        for fd in &frame.fds {
            assert!(is_cloexec(fd.as_fd()).expect("fcntl"));
        }
        for p in &mut peers[MAX_FDS..] {
            assert!(closed(p), "the kernel closed what did not fit");
        }
        for p in &mut peers[..MAX_FDS] {
            assert!(!closed(p), "what arrived is open");
        }
        drop(frame);
        for p in &mut peers[..MAX_FDS] {
            assert!(closed(p), "and closed once dropped");
        }
        let mut peers = send_many(&a, MAX_FDS + 1);
        let err = recv(&b, &mut buf).await.expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("truncated"), "{err}");
        for p in &mut peers {
            assert!(closed(p), "recv closed what arrived: nothing leaks");
        }
        let mut peers = send_many(&a, MAX_FDS + 2);
        let back = drain(b.as_fd()).expect("drain");
        assert_eq!(back.len(), MAX_FDS, "drain keeps what arrived");
        drop(back);
        for p in &mut peers {
            assert!(closed(p));
        }
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
