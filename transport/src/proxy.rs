//! The PROXY protocol (HAProxy's, versions 1 and 2) on accepted
//! connections: a TCP balancer in front of vole (HAProxy `send-proxy-v2`,
//! nginx `proxy_protocol on`, a cloud NLB) writes one header before the
//! client's bytes, naming the client's address and the address it
//! connected to. Without it every client looks like the balancer.
//!
//! Sans-IO: [`parse`] looks at the bytes read so far and says whether a
//! whole header is there (and how long it is: the bytes after it are the
//! client's and go to VOP), whether more bytes are needed, or what is wrong.
//! [`trusted`] is the policy for who may send a header at all. The decoding
//! itself is the `ppp` crate's. [`read_header`] is the thin I/O around
//! them: it peeks, so it consumes exactly the header and not a byte of what
//! follows.
//!
//! A header is at most [`MAX_HEADER`] bytes (a v1 line is at most 107; a v2
//! header with its TLVs is capped here, far above what balancers send).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

pub use ipnet::IpNet;
use ppp::{v1, v2};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;

use crate::Error;

/// The largest header taken, v2 TLVs included.
pub const MAX_HEADER: usize = 4096;

/// The 12-byte signature a v2 header starts with.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// What a v1 header starts with.
const V1_PREFIX: &[u8] = b"PROXY ";

/// What a header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The balancer relays a client: the client's address, and the address
    /// the client connected to (the balancer's front end).
    Proxied {
        /// The client.
        client: SocketAddr,
        /// Where the client connected.
        destination: SocketAddr,
    },
    /// A connection of the balancer's own (v2 `LOCAL`, as health checks
    /// send), or one whose addresses are not TCP over IP (v1 `UNKNOWN`,
    /// v2 unspecified or UNIX): the socket's own addresses stand.
    Local,
}

/// How far [`parse`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// The bytes so far are the start of a header: read more (and call
    /// again with all of them).
    NeedMore,
    /// A whole header, `len` bytes long; the bytes after it belong to the
    /// client.
    Header {
        /// What it says.
        header: ProxyHeader,
        /// Its length in bytes.
        len: usize,
    },
}

fn bad(reason: impl Into<String>) -> Error {
    Error::ProxyHeader(reason.into())
}

/// Parses the PROXY header at the start of `buf` (v1 or v2, whichever it
/// is). An error means the connection cannot carry a valid header, however
/// many more bytes come: close it.
pub fn parse(buf: &[u8]) -> Result<Parsed, Error> {
    let starts = |prefix: &[u8]| {
        let n = buf.len().min(prefix.len());
        buf[..n] == prefix[..n]
    };
    if starts(V2_SIGNATURE) {
        if buf.len() < V2_SIGNATURE.len() {
            return Ok(Parsed::NeedMore);
        }
        return parse_v2(buf);
    }
    if starts(V1_PREFIX) {
        if buf.len() < V1_PREFIX.len() {
            return Ok(Parsed::NeedMore);
        }
        return parse_v1(buf);
    }
    Err(bad(
        "no PROXY header (the connection did not start with one)",
    ))
}

/// The longest v1 line, CRLF included.
const V1_MAX: usize = 107;

fn parse_v1(buf: &[u8]) -> Result<Parsed, Error> {
    // The line is parsed whole: `ppp` takes a line cut inside a number for
    // a bad one.
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= V1_MAX {
            return Err(bad(format!("v1: no line end within {V1_MAX} bytes")));
        }
        return Ok(Parsed::NeedMore);
    };
    let line = &buf[..end + 2];
    match v1::Header::try_from(line) {
        Ok(h) => {
            let header = match h.addresses {
                v1::Addresses::Tcp4(a) => ProxyHeader::Proxied {
                    client: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v1::Addresses::Tcp6(a) => ProxyHeader::Proxied {
                    client: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                v1::Addresses::Unknown => ProxyHeader::Local,
            };
            Ok(Parsed::Header {
                header,
                len: h.header.len(),
            })
        }
        Err(e) if ppp::PartialResult::is_incomplete(&e) => Ok(Parsed::NeedMore),
        Err(e) => Err(bad(format!("v1: {e}"))),
    }
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, Error> {
    // The declared length is known from byte 16 on: refuse an oversized
    // header before waiting for it.
    if let Some(declared) = buf.get(14..16) {
        let total = 16 + usize::from(u16::from_be_bytes([declared[0], declared[1]]));
        if total > MAX_HEADER {
            return Err(bad(format!(
                "v2: header of {total} bytes exceeds the cap of {MAX_HEADER}"
            )));
        }
    }
    match v2::Header::try_from(buf) {
        Ok(h) => {
            let header = match (h.command, h.addresses) {
                (v2::Command::Local, _) => ProxyHeader::Local,
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => ProxyHeader::Proxied {
                    client: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => ProxyHeader::Proxied {
                    client: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (v2::Command::Proxy, v2::Addresses::Unspecified | v2::Addresses::Unix(_)) => {
                    ProxyHeader::Local
                }
            };
            if h.command == v2::Command::Proxy && h.protocol == v2::Protocol::Datagram {
                return Err(bad("v2: a datagram (UDP) connection"));
            }
            Ok(Parsed::Header {
                header,
                len: h.len(),
            })
        }
        Err(e) if ppp::PartialResult::is_incomplete(&e) => Ok(Parsed::NeedMore),
        Err(e) => Err(bad(format!("v2: {e}"))),
    }
}

/// Reads the PROXY header at the start of `tcp` within `limit`, consuming
/// exactly its bytes: what the client sent after it stays in the socket
/// for VOP. A connection that closes, sends something else, or stalls
/// gets an error (close it).
pub async fn read_header(tcp: &mut TcpStream, limit: Duration) -> Result<ProxyHeader, Error> {
    let work = async {
        let mut buf = vec![0u8; MAX_HEADER];
        let mut seen = 0;
        let mut pause = Duration::from_millis(1);
        loop {
            let n = tcp.peek(&mut buf).await?;
            if n == 0 {
                return Err(bad("the connection closed before its PROXY header"));
            }
            match parse(&buf[..n])? {
                Parsed::Header { header, len } => {
                    tcp.read_exact(&mut buf[..len]).await?;
                    return Ok(header);
                }
                Parsed::NeedMore if n == seen => {
                    // Peeking again returns at once with the same bytes:
                    // wait a little for the rest (balancers send a header in
                    // one segment, so this is rare).
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(20));
                }
                Parsed::NeedMore => seen = n,
            }
        }
    };
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(bad(format!("no whole PROXY header within {limit:?}"))),
    }
}

/// Whether a connection from `peer` may send a PROXY header: `from` lists
/// the balancers' networks. An IPv4 peer seen as an IPv4-mapped IPv6
/// address (a dual-stack socket) matches IPv4 networks.
pub fn trusted(peer: IpAddr, from: &[IpNet]) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    from.iter().any(|net| net.contains(&peer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("address")
    }

    fn v2_header(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        let len = (addresses.len() + tlvs.len()) as u16;
        h.extend_from_slice(&len.to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    fn v2_tcp4() -> Vec<u8> {
        let mut a = vec![192, 0, 2, 7, 198, 51, 100, 1];
        a.extend_from_slice(&40000u16.to_be_bytes());
        a.extend_from_slice(&4433u16.to_be_bytes());
        v2_header(0x1, 0x11, &a, &[])
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 4433\r\nVOP_DRAFT";
        assert_eq!(
            parse(line).expect("v1"),
            Parsed::Header {
                header: ProxyHeader::Proxied {
                    client: addr("192.0.2.7:40000"),
                    destination: addr("198.51.100.1:4433"),
                },
                len: line.len() - "VOP_DRAFT".len(),
            }
        );
        let six = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 4433\r\n";
        assert!(matches!(
            parse(six),
            Ok(Parsed::Header { header: ProxyHeader::Proxied { client, .. }, len })
                if client == addr("[2001:db8::7]:40000") && len == six.len()
        ));
        let unknown = b"PROXY UNKNOWN\r\n";
        assert_eq!(
            parse(unknown).expect("unknown"),
            Parsed::Header {
                header: ProxyHeader::Local,
                len: unknown.len()
            }
        );
    }

    #[test]
    fn v2_proxy_local_and_tlvs() {
        let h = v2_tcp4();
        let mut with_data = h.clone();
        with_data.extend_from_slice(b"VOP");
        assert_eq!(
            parse(&with_data).expect("v2"),
            Parsed::Header {
                header: ProxyHeader::Proxied {
                    client: addr("192.0.2.7:40000"),
                    destination: addr("198.51.100.1:4433"),
                },
                len: h.len(),
            }
        );
        let local = v2_header(0x0, 0x00, &[], &[]);
        assert_eq!(
            parse(&local).expect("local"),
            Parsed::Header {
                header: ProxyHeader::Local,
                len: 16
            }
        );
        // A TLV (type 0x04 NOOP, 3 bytes) after the addresses is skipped.
        let mut a = vec![192, 0, 2, 7, 198, 51, 100, 1];
        a.extend_from_slice(&1u16.to_be_bytes());
        a.extend_from_slice(&2u16.to_be_bytes());
        let tlv = [0x04, 0x00, 0x03, 1, 2, 3];
        let with_tlv = v2_header(0x1, 0x11, &a, &tlv);
        assert!(matches!(
            parse(&with_tlv),
            Ok(Parsed::Header { len, .. }) if len == with_tlv.len()
        ));
    }

    /// Every prefix of a valid header asks for more; none is an error.
    #[test]
    fn split_reads_ask_for_more() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 4433\r\n".to_vec();
        for h in [v1, v2_tcp4()] {
            for n in 0..h.len() {
                assert_eq!(
                    parse(&h[..n]).expect("a prefix"),
                    Parsed::NeedMore,
                    "{n} of {} bytes",
                    h.len()
                );
            }
            assert!(matches!(parse(&h), Ok(Parsed::Header { .. })));
        }
    }

    #[test]
    fn bad_headers_are_errors() {
        for (what, bytes) in [
            ("no header", b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n".to_vec()),
            (
                "v1 bad address",
                b"PROXY TCP4 999.0.2.7 198.51.100.1 1 2\r\n".to_vec(),
            ),
            (
                "v1 bad protocol",
                b"PROXY UDP4 192.0.2.7 198.51.100.1 1 2\r\n".to_vec(),
            ),
            ("v1 too long", {
                let mut l = b"PROXY TCP4 ".to_vec();
                l.resize(200, b'1');
                l
            }),
            ("v1 line end too late", {
                let mut l = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 4433".to_vec();
                l.resize(120, b' ');
                l.extend_from_slice(b"\r\n");
                l
            }),
            ("v2 bad version", {
                let mut h = v2_tcp4();
                h[12] = 0x11;
                h
            }),
            ("v2 datagram", {
                let mut h = v2_tcp4();
                h[13] = 0x12;
                h
            }),
        ] {
            let e = parse(&bytes).expect_err(what);
            assert!(matches!(e, Error::ProxyHeader(_)), "{what}: {e:?}");
            assert!(e.to_string().contains("PROXY"), "{what}: {e}");
        }
    }

    #[test]
    fn an_oversized_v2_header_is_refused_before_it_arrives() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11]);
        h.extend_from_slice(&(MAX_HEADER as u16).to_be_bytes());
        let e = parse(&h).expect_err("oversized");
        assert!(e.to_string().contains("exceeds"), "{e}");
        // At the cap exactly, it waits for the rest.
        let mut ok = V2_SIGNATURE.to_vec();
        ok.extend_from_slice(&[0x21, 0x11]);
        ok.extend_from_slice(&((MAX_HEADER - 16) as u16).to_be_bytes());
        assert_eq!(parse(&ok).expect("at the cap"), Parsed::NeedMore);
    }

    async fn pair() -> (TcpStream, TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), l.accept());
        (client.expect("connect"), accepted.expect("accept").0)
    }

    /// A header split over two writes is read whole, and the client's bytes
    /// after it stay in the socket.
    #[tokio::test]
    async fn read_header_consumes_exactly_the_header() {
        use tokio::io::AsyncWriteExt as _;
        let (mut client, mut server) = pair().await;
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 4433\r\n";
        let writer = tokio::spawn(async move {
            client.write_all(&line[..10]).await.expect("write");
            tokio::time::sleep(Duration::from_millis(30)).await;
            client.write_all(&line[10..]).await.expect("write");
            client.write_all(b"VOP_DRAFT").await.expect("write");
            client
        });
        let header = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect("a header");
        assert_eq!(
            header,
            ProxyHeader::Proxied {
                client: addr("192.0.2.7:40000"),
                destination: addr("198.51.100.1:4433"),
            }
        );
        let _client = writer.await.expect("writer");
        let mut rest = [0u8; 9];
        server.read_exact(&mut rest).await.expect("the rest");
        assert_eq!(&rest, b"VOP_DRAFT");
    }

    /// Stalling, closing, or sending something else: an error each.
    #[tokio::test]
    async fn read_header_fails_on_stall_close_and_garbage() {
        use tokio::io::AsyncWriteExt as _;
        let (mut client, mut server) = pair().await;
        client.write_all(b"PROXY TCP4 1").await.expect("write");
        let e = read_header(&mut server, Duration::from_millis(100))
            .await
            .expect_err("stalled");
        assert!(e.to_string().contains("within"), "{e}");

        let (client, mut server) = pair().await;
        drop(client);
        let e = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect_err("closed");
        assert!(e.to_string().contains("closed"), "{e}");

        let (mut client, mut server) = pair().await;
        client
            .write_all(b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\n")
            .await
            .expect("write");
        let e = read_header(&mut server, Duration::from_secs(5))
            .await
            .expect_err("no header");
        assert!(e.to_string().contains("did not start"), "{e}");
    }

    #[test]
    fn trust_is_by_network_and_sees_through_mapped_addresses() {
        let from: Vec<IpNet> = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .map(|s| s.parse().expect("net"))
            .collect();
        for (peer, want) in [
            ("10.1.2.3", true),
            ("11.1.2.3", false),
            ("::ffff:10.1.2.3", true),
            ("2001:db8::9", true),
            ("2001:db9::9", false),
        ] {
            let ip: IpAddr = peer.parse().expect("ip");
            assert_eq!(trusted(ip, &from), want, "{peer}");
        }
        assert!(!trusted("10.1.2.3".parse().expect("ip"), &[]));
    }
}
