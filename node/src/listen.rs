//! Binding listening sockets the way a server should: SO_REUSEADDR, a
//! configurable backlog, IPv6 sockets that accept only IPv6, close-on-exec.

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

/// Accepts connections that are passed on, not served here (the
/// controller in `dispatch` mode): accepted sockets are never registered
/// with this process's reactor, which saves registering and deregistering
/// each (two `epoll_ctl` calls per connection), and every connection
/// already waiting is taken per wake-up.
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
            let mut n = 0;
            while n < max {
                match guard.get_inner().accept() {
                    Ok((tcp, _)) => {
                        batch.push(tcp);
                        n += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        guard.clear_ready();
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
        let two_at_most = {
            let _more: Vec<_> = (0..3)
                .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
                .collect();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            acceptor.accept_batch(2).await.expect("accept").len()
        };
        assert_eq!(two_at_most, 2, "the batch stops at its limit");
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
