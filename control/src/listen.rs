//! Binding listening sockets the way a server should: SO_REUSEADDR, a
//! configurable backlog, IPv6 sockets that accept only IPv6, close-on-exec;
//! and accepting in batches without the `accept` that fails.
//!
//! Has `unsafe` code (with `fdpass` and `quiet`): one `getsockopt` into a
//! plain C struct.

#![allow(unsafe_code)]

use std::net::SocketAddr;
use std::task::{Context, Poll};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::Error;

/// Default listen backlog.
pub const DEFAULT_BACKLOG: i32 = 1024;

/// Binds a TCP listener on `addr` with the given backlog.
///
/// The socket is non-blocking and close-on-exec (socket2 sets
/// `SOCK_CLOEXEC`), ready for `tokio::net::TcpListener::from_std`.
pub fn bind(addr: SocketAddr, backlog: i32) -> Result<std::net::TcpListener, Error> {
    let bind_err = |source| Error::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(bind_err)?;
    }
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    socket.listen(backlog).map_err(bind_err)?;
    Ok(socket.into())
}

/// Binds a `SO_REUSEPORT` socket on `addr`; listens with `backlog` if
/// given.
///
/// Without `backlog` the socket only reserves the port (a bound socket that
/// does not listen receives no connections): the controller keeps one so
/// that every node's socket, bound later, gets the same port even when
/// `addr` asked for an ephemeral one.
pub fn bind_reuseport(
    addr: SocketAddr,
    backlog: Option<i32>,
) -> Result<std::net::TcpListener, Error> {
    let bind_err = |source| Error::Bind { addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(bind_err)?;
    socket.set_reuse_address(true).map_err(bind_err)?;
    socket.set_reuse_port(true).map_err(bind_err)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true).map_err(bind_err)?;
    }
    socket.set_nonblocking(true).map_err(bind_err)?;
    socket.bind(&addr.into()).map_err(bind_err)?;
    if let Some(backlog) = backlog {
        socket.listen(backlog).map_err(bind_err)?;
    }
    Ok(socket.into())
}

/// How many connections wait in `listener`'s accept queue, as the kernel
/// counts them (`TCP_INFO` of a listening socket: `tcpi_unacked`), or
/// `None` if it does not say (not a listening TCP socket).
pub fn accept_queue_len(listener: &std::net::TcpListener) -> Option<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: `tcp_info` is plain old data (integers only), so all zeroes
    // is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the buffer is a live `tcp_info` and `len` its size; the
    // kernel writes at most `len` bytes and updates `len`.
    let r = unsafe {
        libc::getsockopt(
            listener.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    // The fields read here are in every kernel's `tcp_info` (and were
    // written if the kernel's struct is at least as long as their offset).
    let needed = std::mem::offset_of!(libc::tcp_info, tcpi_unacked)
        + std::mem::size_of_val(&info.tcpi_unacked);
    if r != 0 || (len as usize) < needed || info.tcpi_state != TCP_LISTEN {
        return None;
    }
    usize::try_from(info.tcpi_unacked).ok()
}

/// `TCP_LISTEN` in the kernel's `enum tcp_state` (`tcpi_state`).
const TCP_LISTEN: u8 = 10;

/// Accepts connections that are passed on, not served here (the
/// controller in `dispatch` mode): accepted sockets are never registered
/// with this process's reactor, which saves registering and deregistering
/// each (two `epoll_ctl` calls per connection), and every connection
/// already waiting is taken per wake-up.
///
/// A batch takes as many connections as the kernel says are queued
/// ([`accept_queue_len`]) and stops there, instead of calling `accept`
/// until it fails: Linux allocates a socket, an inode and a file for every
/// `accept` before it looks at the queue, and frees them again when the
/// queue is empty, so the failing call costs about what a successful one
/// does. A connection that arrives after the count raises a new readiness
/// edge (epoll reports every arrival after the last wait), so nothing is
/// left waiting.
#[derive(Debug)]
pub struct Acceptor {
    listener: AsyncFd<std::net::TcpListener>,
}

impl Acceptor {
    /// Accepts on `listener` (made non-blocking).
    pub fn new(listener: std::net::TcpListener) -> std::io::Result<Acceptor> {
        listener.set_nonblocking(true)?;
        Ok(Acceptor {
            listener: crate::quiet::register(listener, Interest::READABLE)?,
        })
    }

    /// Waits for connections and returns those waiting, at most `max` (at
    /// least one). Accepted sockets are blocking and close-on-exec.
    pub async fn accept_batch(&self, max: usize) -> std::io::Result<Vec<std::net::TcpStream>> {
        let mut batch = Vec::new();
        std::future::poll_fn(|cx| self.poll_accept_batch(cx, max, &mut batch)).await?;
        Ok(batch)
    }

    /// The polling form of [`Acceptor::accept_batch`], for a caller that
    /// waits on several sources in one task: appends the connections
    /// waiting (at most `max`, at least one) to `batch` and returns
    /// `Ready(Ok(n))` with their number, or `Pending` (with the task's waker
    /// registered) while none is waiting.
    pub fn poll_accept_batch(
        &self,
        cx: &mut Context<'_>,
        max: usize,
        batch: &mut Vec<std::net::TcpStream>,
    ) -> Poll<std::io::Result<usize>> {
        let max = max.max(1);
        loop {
            let mut guard = match self.listener.poll_read_ready(cx) {
                Poll::Ready(Ok(guard)) => guard,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            };
            let queued = accept_queue_len(guard.get_inner());
            let want = queued.map_or(max, |q| q.min(max));
            let mut n = 0;
            let mut drained = false;
            while n < want {
                match guard.get_inner().accept() {
                    Ok((tcp, _)) => {
                        batch.push(tcp);
                        n += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
                        drained = true;
                        break;
                    }
                    // The client gave up while queued, or a signal: next.
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) if n == 0 => return Poll::Ready(Err(e)),
                    // Report it on the next call; hand over what we have.
                    Err(_) => break,
                }
            }
            if !drained && queued.is_some_and(|q| q <= max) && n == want {
                // All the kernel counted are taken: the queue is empty as
                // far as this wake-up knows (see the type's documentation).
                guard.clear_ready();
            }
            if n > 0 {
                return Poll::Ready(Ok(n));
            }
            // Readiness cleared and nothing taken: poll again, which
            // registers the waker.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_acceptor_takes_every_waiting_connection_at_once() {
        let l = bind("127.0.0.1:0".parse().expect("addr"), 16).expect("bind");
        let addr = l.local_addr().expect("addr");
        let acceptor = Acceptor::new(l).expect("acceptor");
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let mut got = Vec::new();
        while got.len() < clients.len() {
            let batch = acceptor.accept_batch(64).await.expect("accept");
            assert!(!batch.is_empty());
            got.extend(batch);
        }
        assert_eq!(got.len(), 3);
        let _more: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        queued_reaches(&acceptor, 3).await;
        let two_at_most = acceptor.accept_batch(2).await.expect("accept").len();
        assert_eq!(two_at_most, 2, "the batch stops at its limit");
        // The third is still there, and readiness was kept for it.
        let last =
            tokio::time::timeout(std::time::Duration::from_secs(5), acceptor.accept_batch(64))
                .await
                .expect("the one left is taken without a new arrival")
                .expect("accept");
        assert_eq!(last.len(), 1);
        assert_eq!(accept_queue_len(acceptor.listener.get_ref()), Some(0));
    }

    /// Waits (boundedly) until the kernel counts `n` connections queued:
    /// the handshake's last ACK may still be on its way when `connect`
    /// returns.
    async fn queued_reaches(acceptor: &Acceptor, n: usize) {
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while accept_queue_len(acceptor.listener.get_ref()) != Some(n) {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the connections reach the accept queue");
    }

    #[tokio::test]
    async fn the_accept_queue_is_counted_and_only_for_listening_sockets() {
        let l = bind("127.0.0.1:0".parse().expect("addr"), 16).expect("bind");
        let addr = l.local_addr().expect("addr");
        assert_eq!(accept_queue_len(&l), Some(0));
        let acceptor = Acceptor::new(l).expect("acceptor");
        let _clients: Vec<_> = (0..2)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        queued_reaches(&acceptor, 2).await;
        assert_eq!(acceptor.accept_batch(64).await.expect("accept").len(), 2);
        assert_eq!(accept_queue_len(acceptor.listener.get_ref()), Some(0));
        // Bound but not listening: the kernel has no queue to count.
        let reserve = bind_reuseport("127.0.0.1:0".parse().expect("addr"), None).expect("reserve");
        assert_eq!(accept_queue_len(&reserve), None);
    }

    #[tokio::test]
    async fn polling_waits_registered_and_appends_to_the_batch() {
        let l = bind("127.0.0.1:0".parse().expect("addr"), 16).expect("bind");
        let addr = l.local_addr().expect("addr");
        let acceptor = Acceptor::new(l).expect("acceptor");
        let keep = std::net::TcpStream::connect(addr).expect("connect");
        let mut batch = acceptor.accept_batch(8).await.expect("accept");
        assert_eq!(batch.len(), 1);
        // Nothing waiting: Pending, and the waker is registered, so a new
        // connection completes the same wait.
        let mut polls = 0;
        let waiting = std::future::poll_fn(|cx| {
            polls += 1;
            acceptor.poll_accept_batch(cx, 8, &mut batch)
        });
        let connect = async {
            tokio::task::yield_now().await;
            std::net::TcpStream::connect(addr).expect("connect")
        };
        let (n, _second) = tokio::time::timeout(std::time::Duration::from_secs(5), async {
            tokio::join!(waiting, connect)
        })
        .await
        .expect("woken by the new connection");
        assert_eq!(n.expect("accept"), 1);
        assert!(polls >= 2, "the first poll found nothing");
        assert_eq!(batch.len(), 2, "appended to what was there");
        drop(keep);
    }

    #[test]
    fn binds_ephemeral_ports_and_reports_busy_ones() {
        let a = bind("127.0.0.1:0".parse().expect("addr"), 16).expect("bind");
        let addr = a.local_addr().expect("addr");
        assert_ne!(addr.port(), 0);
        match bind(addr, 16) {
            Err(Error::Bind { addr: busy, source }) => {
                assert_eq!(busy, addr);
                assert_eq!(source.kind(), std::io::ErrorKind::AddrInUse);
            }
            other => panic!("expected a bind error, got {other:?}"),
        }
    }

    #[test]
    fn reuseport_sockets_share_a_reserved_port() {
        let reserve = bind_reuseport("127.0.0.1:0".parse().expect("addr"), None).expect("reserve");
        let addr = reserve.local_addr().expect("addr");
        let a = bind_reuseport(addr, Some(16)).expect("first listener");
        let b = bind_reuseport(addr, Some(16)).expect("second listener");
        assert_eq!(a.local_addr().expect("a"), addr);
        assert_eq!(b.local_addr().expect("b"), addr);
        // A plain socket cannot take the port.
        assert!(bind(addr, 16).is_err());
    }
}
