//! Binding listening sockets the way a server should: SO_REUSEADDR, a
//! configurable backlog, IPv6 sockets that accept only IPv6, close-on-exec.

use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

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

#[cfg(test)]
mod tests {
    use super::*;

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
