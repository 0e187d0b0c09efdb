//! VOP transport negotiation: the one text line each side sends before the
//! chosen transport (TLS or PLAIN) starts on the same TCP stream.
//!
//! The client offers its transports with `VOP_DRAFT-0.8 TRANSPORTS:<T>...\n`
//! and the server answers `VOP_DRAFT-0.8 USE_TRANSPORT:<T>\n`, choosing by
//! its own preference, or closes without a word when nothing matches. Both
//! lines are at most [`MAX_LINE`] bytes, newline included.
//!
//! The core ([`client_line`], [`parse_client_line`], [`choose`],
//! [`server_reply`], [`parse_server_reply`]) does no I/O. The async helpers
//! [`negotiate_server`] and [`negotiate_client`] run it over any byte stream
//! under a handshake timeout and hand back the bytes read past the line,
//! which belong to the transport that follows.

use std::fmt;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

/// The longest negotiation line accepted in either direction, newline
/// included.
pub const MAX_LINE: usize = 64;

/// How much one read of a VOP line may take: the line and a TLS
/// ClientHello behind it.
const READ_SIZE: usize = 4096;

/// What every client line starts with (the first token follows a `:`).
const CLIENT_PREFIX: &[u8] = b"VOP_DRAFT-0.8 TRANSPORTS";

/// What every server reply starts with (28 bytes).
const SERVER_PREFIX: &[u8] = b"VOP_DRAFT-0.8 USE_TRANSPORT:";

/// The label of negotiation timeouts and early closes.
/// The label of negotiation timeouts and early closes.
pub const STEP: &str = "vop negotiation";

/// A transport that can be named in VOP negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Versile Transport Security, VPy's default (`crate::vts`); a legacy
    /// transport vole offers only to reach VPy peers.
    Vts,
    /// TLS (1.3 only in vole).
    Tls,
    /// No transport security: VEC directly on TCP.
    Plain,
}

impl Transport {
    /// The token as it appears on the wire.
    pub fn token(self) -> &'static str {
        match self {
            Transport::Vts => "VTS",
            Transport::Tls => "TLS",
            Transport::Plain => "PLAIN",
        }
    }

    /// The transport a wire token names, if it is one of the three known.
    pub fn from_token(token: &[u8]) -> Option<Transport> {
        match token {
            b"VTS" => Some(Transport::Vts),
            b"TLS" => Some(Transport::Tls),
            b"PLAIN" => Some(Transport::Plain),
            _ => None,
        }
    }

    /// Whether vole has an implementation of this transport.
    pub fn is_implemented(self) -> bool {
        true
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.token())
    }
}

/// Which transports a server accepts, most preferred first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerPolicy {
    /// Enabled transports in the server's order of preference. The client's
    /// order does not matter.
    pub preference: Vec<Transport>,
}

impl ServerPolicy {
    /// The vole policy for the given switches: TLS preferred over PLAIN.
    pub fn new(tls: bool, plain: bool) -> ServerPolicy {
        ServerPolicy::with_vts(tls, false, plain)
    }

    /// The vole policy with VTS too: TLS, then VTS, then PLAIN.
    pub fn with_vts(tls: bool, vts: bool, plain: bool) -> ServerPolicy {
        let mut preference = Vec::with_capacity(3);
        if tls {
            preference.push(Transport::Tls);
        }
        if vts {
            preference.push(Transport::Vts);
        }
        if plain {
            preference.push(Transport::Plain);
        }
        ServerPolicy { preference }
    }

    /// Whether the policy enables `t`.
    pub fn allows(&self, t: Transport) -> bool {
        self.preference.contains(&t)
    }
}

impl Default for ServerPolicy {
    /// TLS only.
    fn default() -> ServerPolicy {
        ServerPolicy::new(true, false)
    }
}

/// Tokens joined with `:`, for messages.
fn tokens(ts: &[Transport]) -> String {
    let names: Vec<&str> = ts.iter().map(|t| t.token()).collect();
    names.join(":")
}

/// The line a client sends to offer `offer` (duplicates are dropped, order
/// kept). An empty offer gives a line every server refuses; the async helper
/// refuses to send it.
pub fn client_line(offer: &[Transport]) -> Vec<u8> {
    let mut line = CLIENT_PREFIX.to_vec();
    for (i, t) in offer.iter().enumerate() {
        if offer[..i].contains(t) {
            continue;
        }
        line.push(b':');
        line.extend_from_slice(t.token().as_bytes());
    }
    line.push(b'\n');
    line
}

/// Finds the line at the front of `buf`.
///
/// `Ok(None)` while no newline has arrived and the bytes so far can still be
/// the start of a line beginning with `prefix`; otherwise the line without
/// its newline, and the bytes it took.
fn find_line<'a>(buf: &'a [u8], prefix: &[u8]) -> Result<Option<(&'a [u8], usize)>, Error> {
    let window = &buf[..buf.len().min(MAX_LINE)];
    let nl = window.iter().position(|&b| b == b'\n');
    let text = &window[..nl.unwrap_or(window.len())];
    let common = text.len().min(prefix.len());
    if text[..common] != prefix[..common] {
        return Err(Error::BadVopLine(format!(
            "does not start with {:?}: {:?}",
            String::from_utf8_lossy(prefix),
            String::from_utf8_lossy(text)
        )));
    }
    match nl {
        Some(nl) => Ok(Some((text, nl + 1))),
        None if buf.len() >= MAX_LINE => Err(Error::BadVopLine(format!(
            "no newline within {MAX_LINE} bytes"
        ))),
        None => Ok(None),
    }
}

/// Parses a client's offer at the front of `buf` (server side).
///
/// Returns `Ok(None)` while the line is incomplete, otherwise the offered
/// transports in the client's order and the number of bytes the line took.
/// Refuses a line that is malformed, longer than [`MAX_LINE`], names an
/// unknown token or repeats one.
pub fn parse_client_line(buf: &[u8]) -> Result<Option<(Vec<Transport>, usize)>, Error> {
    let Some((text, used)) = find_line(buf, CLIENT_PREFIX)? else {
        return Ok(None);
    };
    // `find_line` checked the prefix only as far as the line reaches.
    let Some(list) = text
        .strip_prefix(CLIENT_PREFIX)
        .and_then(|rest| rest.strip_prefix(b":"))
    else {
        return Err(Error::BadVopLine(format!(
            "no transport offered: {:?}",
            String::from_utf8_lossy(text)
        )));
    };
    let mut offered = Vec::with_capacity(3);
    for token in list.split(|&b| b == b':') {
        let t = Transport::from_token(token)
            .ok_or_else(|| Error::UnknownTransport(String::from_utf8_lossy(token).into_owned()))?;
        if offered.contains(&t) {
            return Err(Error::BadVopLine(format!("transport {t} offered twice")));
        }
        offered.push(t);
    }
    Ok(Some((offered, used)))
}

/// The transport a server with `policy` uses for `offered`: its own most
/// preferred one that the client offered. VTS is never chosen.
pub fn choose(offered: &[Transport], policy: &ServerPolicy) -> Result<Transport, Error> {
    policy
        .preference
        .iter()
        .copied()
        .find(|t| t.is_implemented() && offered.contains(t))
        .ok_or_else(|| Error::NoCommonTransport {
            offered: tokens(offered),
            allowed: tokens(&policy.preference),
        })
}

/// The reply a server sends after choosing `t`.
pub fn server_reply(t: Transport) -> Vec<u8> {
    let mut line = SERVER_PREFIX.to_vec();
    line.extend_from_slice(t.token().as_bytes());
    line.push(b'\n');
    line
}

/// Parses the server's reply at the front of `buf` (client side).
///
/// Returns `Ok(None)` while the line is incomplete, otherwise the chosen
/// transport and the number of bytes the line took. Refuses a reply with the
/// wrong prefix, an unknown token, or a transport not in `offered`.
pub fn parse_server_reply(
    buf: &[u8],
    offered: &[Transport],
) -> Result<Option<(Transport, usize)>, Error> {
    let Some((text, used)) = find_line(buf, SERVER_PREFIX)? else {
        return Ok(None);
    };
    // `find_line` checked the prefix only as far as the line reaches.
    let Some(token) = text.strip_prefix(SERVER_PREFIX) else {
        return Err(Error::BadVopLine(format!(
            "reply too short: {:?}",
            String::from_utf8_lossy(text)
        )));
    };
    let t = Transport::from_token(token)
        .ok_or_else(|| Error::UnknownTransport(String::from_utf8_lossy(token).into_owned()))?;
    if !offered.contains(&t) {
        return Err(Error::BadVopLine(format!(
            "server chose {t}, which was not offered"
        )));
    }
    Ok(Some((t, used)))
}

/// Reads one negotiation line with `parse`, at most [`MAX_LINE`] bytes in
/// all. Returns the parsed value and the bytes read past the line.
async fn read_line<S, T, P>(io: &mut S, parse: P) -> Result<(T, Vec<u8>), Error>
where
    S: AsyncRead + Unpin,
    P: Fn(&[u8]) -> Result<Option<(T, usize)>, Error>,
{
    // Room for what a client sends with its line (a TLS ClientHello, see
    // `vop_ahead`), so one read takes both.
    let mut buf = Vec::with_capacity(READ_SIZE);
    loop {
        // `parse` fails once MAX_LINE bytes hold no newline, so the buffer
        // always has room here (an empty read would look like EOF).
        let n = io.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(Error::ClosedDuring(STEP));
        }
        if let Some((value, used)) = parse(&buf)? {
            if used == buf.len() {
                // Nothing came past the line: keep no buffer for it.
                return Ok((value, Vec::new()));
            }
            buf.drain(..used);
            return Ok((value, buf));
        }
    }
}

/// Runs the server side of VOP on `io`: reads the client's offer, chooses
/// by `policy` and sends the reply.
///
/// Returns the chosen transport and any bytes read past the client's line
/// (they belong to that transport). On [`Error::NoCommonTransport`] nothing
/// has been sent and the caller should just close, as VOP prescribes. The
/// whole exchange must finish within `timeout`.
pub async fn negotiate_server<S>(
    io: &mut S,
    policy: &ServerPolicy,
    timeout: Duration,
) -> Result<(Transport, Vec<u8>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let started = tokio::time::Instant::now();
    let (chosen, leftover) = read_offer(io, policy, timeout).await?;
    let reply = async {
        io.write_all(&server_reply(chosen)).await?;
        io.flush().await
    };
    tokio::time::timeout_at(started + timeout, reply)
        .await
        .map_err(|_| Error::Timeout(STEP))??;
    Ok((chosen, leftover))
}

/// The server side of VOP up to its reply: reads the client's offer and
/// chooses by `policy`, within `timeout`. Returns the transport chosen and
/// any bytes read past the offer; the caller sends
/// [`server_reply`]`(chosen)` (with its own first bytes, when the client
/// did not wait for it).
pub async fn read_offer<S>(
    io: &mut S,
    policy: &ServerPolicy,
    timeout: Duration,
) -> Result<(Transport, Vec<u8>), Error>
where
    S: AsyncRead + Unpin,
{
    let exchange = async {
        let (offered, leftover) = read_line(io, parse_client_line).await?;
        Ok((choose(&offered, policy)?, leftover))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Timeout(STEP))?
}

/// Runs the client side of VOP on `io`: sends the offer and reads the reply.
///
/// Returns the transport the server chose and any bytes read past its reply
/// (a PLAIN server may send its VEC hello at once). The whole exchange must
/// finish within `timeout`. An empty offer, or one naming a transport vole
/// does not implement, is refused before anything is sent.
pub async fn negotiate_client<S>(
    io: &mut S,
    offer: &[Transport],
    timeout: Duration,
) -> Result<(Transport, Vec<u8>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    check_enabled(offer)?;
    let exchange = async {
        io.write_all(&client_line(offer)).await?;
        io.flush().await?;
        read_line(io, |buf| parse_server_reply(buf, offer)).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| Error::Timeout(STEP))?
}

/// Refuses a list of enabled transports (a client's offer or a server's
/// policy) that is empty or names an unimplemented transport.
pub(crate) fn check_enabled(enabled: &[Transport]) -> Result<(), Error> {
    if enabled.is_empty() {
        return Err(Error::TransportConfig("no transport enabled".into()));
    }
    if let Some(t) = enabled.iter().find(|t| !t.is_implemented()) {
        return Err(Error::TransportConfig(format!(
            "transport {t} is not implemented"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    const ALL: [Transport; 3] = [Transport::Vts, Transport::Tls, Transport::Plain];
    const T: Duration = Duration::from_secs(5);

    #[test]
    fn tokens_round_trip() {
        for t in ALL {
            assert_eq!(Transport::from_token(t.token().as_bytes()), Some(t));
            assert_eq!(t.to_string(), t.token());
        }
        assert_eq!(Transport::from_token(b"tls"), None);
        assert_eq!(Transport::from_token(b""), None);
    }

    #[test]
    fn client_lines_match_vpy() {
        assert_eq!(
            client_line(&ALL),
            b"VOP_DRAFT-0.8 TRANSPORTS:VTS:TLS:PLAIN\n"
        );
        assert_eq!(
            client_line(&[Transport::Vts]),
            b"VOP_DRAFT-0.8 TRANSPORTS:VTS\n"
        );
        assert_eq!(
            client_line(&[Transport::Tls, Transport::Plain, Transport::Tls]),
            b"VOP_DRAFT-0.8 TRANSPORTS:TLS:PLAIN\n"
        );
        assert_eq!(client_line(&[]), b"VOP_DRAFT-0.8 TRANSPORTS\n");
    }

    #[test]
    fn server_replies_match_vpy() {
        assert_eq!(
            server_reply(Transport::Vts),
            b"VOP_DRAFT-0.8 USE_TRANSPORT:VTS\n"
        );
        assert_eq!(
            server_reply(Transport::Tls),
            b"VOP_DRAFT-0.8 USE_TRANSPORT:TLS\n"
        );
        assert_eq!(
            server_reply(Transport::Plain),
            b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\n"
        );
        assert_eq!(SERVER_PREFIX.len(), 28);
    }

    #[test]
    fn parses_client_lines_and_reports_consumed_bytes() {
        let line = b"VOP_DRAFT-0.8 TRANSPORTS:VTS:TLS:PLAIN\nrest";
        assert_eq!(
            parse_client_line(line).expect("ok"),
            Some((ALL.to_vec(), 39))
        );
        assert_eq!(
            parse_client_line(b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN:TLS\n").expect("ok"),
            Some((vec![Transport::Plain, Transport::Tls], 35))
        );
    }

    #[test]
    fn every_prefix_of_a_valid_line_needs_more() {
        for full in [
            &b"VOP_DRAFT-0.8 TRANSPORTS:VTS:TLS:PLAIN\n"[..],
            b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n",
        ] {
            for cut in 0..full.len() {
                assert_eq!(parse_client_line(&full[..cut]).expect("prefix"), None);
            }
        }
        let reply = server_reply(Transport::Plain);
        for cut in 0..reply.len() {
            assert_eq!(
                parse_server_reply(&reply[..cut], &ALL).expect("prefix"),
                None
            );
        }
    }

    #[test]
    fn a_line_of_exactly_64_bytes_is_accepted_and_65_is_not() {
        // The longest legal offer is 39 bytes, so the length rule is
        // checked on lines whose token is junk: a 64-byte line gets as far
        // as token checking, a 65-byte one does not.
        let mut long = b"VOP_DRAFT-0.8 TRANSPORTS:".to_vec();
        long.resize(63, b'X');
        long.push(b'\n');
        assert_eq!(long.len(), 64);
        // 64 bytes with newline: parsed (and refused for its token, not its length).
        assert!(matches!(
            parse_client_line(&long),
            Err(Error::UnknownTransport(_))
        ));
        let mut longer = long.clone();
        longer.insert(30, b'X');
        assert_eq!(longer.len(), 65);
        assert!(matches!(
            parse_client_line(&longer),
            Err(Error::BadVopLine(m)) if m.contains("no newline")
        ));
        // Without any newline: refused once 64 bytes are in.
        assert_eq!(parse_client_line(&longer[..63]).expect("short"), None);
        assert!(parse_client_line(&longer[..64]).is_err());
    }

    #[test]
    fn refuses_garbage_lines() {
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"VOP_DRAFT-0.9 TRANSPORTS:TLS\n",
            b"VOP_DRAFT-0.8 TRANSPORTS\n",
            b"VOP_DRAFT-0.8 TRANSPORTSX\n",
            b"VOP_DRAFT-0.8 TRANSPORT\n",
            b"VOP\n",
            b"\n",
            b"\x16\x03\x01\x02\x00",
        ] {
            assert!(
                matches!(parse_client_line(bad), Err(Error::BadVopLine(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn refuses_unknown_and_duplicate_tokens() {
        for (bad, token) in [
            (&b"VOP_DRAFT-0.8 TRANSPORTS:TLS:QUIC\n"[..], "QUIC"),
            (b"VOP_DRAFT-0.8 TRANSPORTS:tls\n", "tls"),
            (b"VOP_DRAFT-0.8 TRANSPORTS:\n", ""),
            (b"VOP_DRAFT-0.8 TRANSPORTS:TLS:\n", ""),
            (b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\r\n", "PLAIN\r"),
        ] {
            match parse_client_line(bad) {
                Err(Error::UnknownTransport(t)) => assert_eq!(t, token),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
            }
        }
        assert!(matches!(
            parse_client_line(b"VOP_DRAFT-0.8 TRANSPORTS:TLS:PLAIN:TLS\n"),
            Err(Error::BadVopLine(m)) if m.contains("TLS offered twice")
        ));
    }

    #[test]
    fn chooses_by_server_preference() {
        let both = ServerPolicy::new(true, true);
        assert_eq!(both.preference, [Transport::Tls, Transport::Plain]);
        assert_eq!(
            choose(&[Transport::Plain, Transport::Tls], &both).expect("tls"),
            Transport::Tls
        );
        assert_eq!(
            choose(&[Transport::Vts, Transport::Plain], &both).expect("plain"),
            Transport::Plain
        );
        let plain_first = ServerPolicy {
            preference: vec![Transport::Plain, Transport::Tls],
        };
        assert_eq!(choose(&ALL, &plain_first).expect("plain"), Transport::Plain);
        // VTS is chosen where the server prefers it.
        let with_vts = ServerPolicy {
            preference: vec![Transport::Vts, Transport::Tls],
        };
        assert_eq!(choose(&ALL, &with_vts).expect("vts"), Transport::Vts);
        let tls_first = ServerPolicy::with_vts(true, true, true);
        assert_eq!(
            tls_first.preference,
            [Transport::Tls, Transport::Vts, Transport::Plain]
        );
        assert_eq!(
            choose(&[Transport::Vts], &tls_first).expect("vts"),
            Transport::Vts
        );
        assert_eq!(ServerPolicy::default().preference, [Transport::Tls]);
    }

    #[test]
    fn no_common_transport() {
        match choose(
            &[Transport::Vts, Transport::Plain],
            &ServerPolicy::default(),
        ) {
            Err(Error::NoCommonTransport { offered, allowed }) => {
                assert_eq!(offered, "VTS:PLAIN");
                assert_eq!(allowed, "TLS");
            }
            other => panic!("{other:?}"),
        }
        assert!(choose(
            &[Transport::Vts],
            &ServerPolicy {
                preference: vec![Transport::Plain]
            }
        )
        .is_err());
    }

    #[test]
    fn parses_server_replies() {
        let offered = [Transport::Tls, Transport::Plain];
        assert_eq!(
            parse_server_reply(
                b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\nVEC_DRAFT-0.8-utf8\n",
                &offered
            )
            .expect("ok"),
            Some((Transport::Plain, 34))
        );
        assert_eq!(
            parse_server_reply(b"VOP_DRAFT-0.8 USE_TRANSPORT:TLS\n", &offered).expect("ok"),
            Some((Transport::Tls, 32))
        );
    }

    #[test]
    fn refuses_bad_server_replies() {
        let offered = [Transport::Tls];
        for bad in [
            &b"VOP_DRAFT-0.8 USE_TRANSPORTS:TLS\n"[..],
            b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n",
            b"VOP_DRAFT-0.8 USE_TRANSPORT\n",
            b"HTTP/1.1 400 Bad Request\r\n",
        ] {
            assert!(
                matches!(parse_server_reply(bad, &offered), Err(Error::BadVopLine(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            parse_server_reply(b"VOP_DRAFT-0.8 USE_TRANSPORT:FOO\n", &offered),
            Err(Error::UnknownTransport(t)) if t == "FOO"
        ));
        // A transport the client did not offer.
        assert!(matches!(
            parse_server_reply(b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\n", &offered),
            Err(Error::BadVopLine(m)) if m.contains("not offered")
        ));
        // Too long.
        let mut long = SERVER_PREFIX.to_vec();
        long.resize(MAX_LINE, b'A');
        assert!(matches!(
            parse_server_reply(&long, &offered),
            Err(Error::BadVopLine(m)) if m.contains("no newline")
        ));
    }

    #[tokio::test]
    async fn negotiates_over_a_stream_and_returns_leftovers() {
        let (mut c, mut s) = duplex(1024);
        let server = tokio::spawn(async move {
            let policy = ServerPolicy::new(false, true);
            let got = negotiate_server(&mut s, &policy, T).await;
            // Like VPy's PLAIN server: the VEC hello right after the reply.
            s.write_all(b"VEC_DRAFT-0.8-utf8\n")
                .await
                .expect("write hello");
            got
        });
        let (t, leftover) = negotiate_client(&mut c, &[Transport::Tls, Transport::Plain], T)
            .await
            .expect("client");
        assert_eq!(t, Transport::Plain);
        let (st, sleft) = server.await.expect("join").expect("server");
        assert_eq!(st, Transport::Plain);
        assert!(sleft.is_empty());
        // Whatever part of the hello came with the reply is in `leftover`,
        // the rest is still on the stream.
        let mut rest = vec![0u8; 19 - leftover.len()];
        c.read_exact(&mut rest).await.expect("rest");
        assert_eq!([leftover, rest].concat(), b"VEC_DRAFT-0.8-utf8\n");
    }

    #[tokio::test]
    async fn server_hands_back_bytes_after_the_line() {
        let (mut c, mut s) = duplex(1024);
        c.write_all(b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n\x16\x03\x01")
            .await
            .expect("write");
        let (t, leftover) = negotiate_server(&mut s, &ServerPolicy::default(), T)
            .await
            .expect("server");
        assert_eq!(t, Transport::Tls);
        assert_eq!(leftover, b"\x16\x03\x01");
        let mut reply = [0u8; 32];
        c.read_exact(&mut reply).await.expect("reply");
        assert_eq!(&reply, b"VOP_DRAFT-0.8 USE_TRANSPORT:TLS\n");
    }

    #[tokio::test]
    async fn server_reads_the_line_and_what_came_with_it_in_one_read() {
        // A ClientHello-sized burst after the line: one read takes it all
        // (READ_SIZE at most), and every byte past the line is handed back,
        // the rest stays on the stream.
        let (mut c, mut s) = duplex(8192);
        let mut burst = b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n".to_vec();
        burst.extend_from_slice(&[7u8; 6000]);
        c.write_all(&burst).await.expect("write");
        let (_, leftover) = read_offer(&mut s, &ServerPolicy::default(), T)
            .await
            .expect("server");
        assert_eq!(leftover.len(), READ_SIZE - 29);
        let mut rest = vec![0u8; 6000 - leftover.len()];
        s.read_exact(&mut rest).await.expect("rest");
        assert!(leftover.iter().chain(&rest).all(|&b| b == 7));
    }

    #[tokio::test]
    async fn nothing_past_the_line_keeps_no_buffer() {
        let (mut c, mut s) = duplex(1024);
        c.write_all(b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\n")
            .await
            .expect("write");
        let policy = ServerPolicy::new(false, true);
        let (t, leftover) = read_offer(&mut s, &policy, T).await.expect("server");
        assert_eq!(t, Transport::Plain);
        assert_eq!(leftover.capacity(), 0);
    }

    #[tokio::test]
    async fn server_sends_nothing_without_common_transport() {
        let (mut c, mut s) = duplex(1024);
        c.write_all(b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\n")
            .await
            .expect("write");
        let err = negotiate_server(&mut s, &ServerPolicy::default(), T)
            .await
            .expect_err("no common");
        assert!(matches!(err, Error::NoCommonTransport { .. }), "{err:?}");
        drop(s);
        let mut rest = Vec::new();
        c.read_to_end(&mut rest).await.expect("read");
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn server_refuses_bad_offers() {
        for line in [
            &b"VOP_DRAFT-0.8 TRANSPORTS:TLS:TLS\n"[..],
            b"VOP_DRAFT-0.8 TRANSPORTS:SSH\n",
            &[b'V'; 100],
        ] {
            let (mut c, mut s) = duplex(1024);
            c.write_all(line).await.expect("write");
            let err = negotiate_server(&mut s, &ServerPolicy::default(), T)
                .await
                .expect_err("refused");
            assert!(err.is_peer_fault(), "{err:?}");
        }
    }

    #[tokio::test]
    async fn client_refuses_a_transport_it_did_not_offer() {
        let (mut c, mut s) = duplex(1024);
        s.write_all(b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\n")
            .await
            .expect("write");
        let err = negotiate_client(&mut c, &[Transport::Tls], T)
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::BadVopLine(_)), "{err:?}");
        let mut line = [0u8; 29];
        s.read_exact(&mut line).await.expect("offer");
        assert_eq!(&line, b"VOP_DRAFT-0.8 TRANSPORTS:TLS\n");
    }

    #[tokio::test]
    async fn client_refuses_a_wrong_prefix() {
        let (mut c, mut s) = duplex(1024);
        s.write_all(b"VOP_DRAFT-0.8 USE_TRANSPORTS:TLS\n")
            .await
            .expect("write");
        let err = negotiate_client(&mut c, &[Transport::Tls], T)
            .await
            .expect_err("refused");
        assert!(matches!(err, Error::BadVopLine(_)), "{err:?}");
    }

    #[tokio::test]
    async fn client_refuses_bad_offers_before_sending() {
        // Every known transport is implemented now; only an empty offer is
        // refused.
        for offer in [&[][..]] {
            let (mut c, s) = duplex(1024);
            let err = negotiate_client(&mut c, offer, T)
                .await
                .expect_err("refused");
            assert!(matches!(err, Error::TransportConfig(_)), "{err:?}");
            drop(c);
            let mut s = s;
            let mut sent = Vec::new();
            s.read_to_end(&mut sent).await.expect("read");
            assert!(sent.is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn server_times_out_on_a_silent_client() {
        let (_c, mut s) = duplex(1024);
        let err = negotiate_server(&mut s, &ServerPolicy::default(), Duration::from_secs(10))
            .await
            .expect_err("timeout");
        assert!(matches!(err, Error::Timeout("vop negotiation")), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn client_times_out_on_a_silent_server() {
        let (mut c, _s) = duplex(1024);
        let started = tokio::time::Instant::now();
        let err = negotiate_client(&mut c, &[Transport::Tls], Duration::from_secs(10))
            .await
            .expect_err("timeout");
        assert!(matches!(err, Error::Timeout("vop negotiation")), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test]
    async fn eof_during_negotiation() {
        let (mut c, mut s) = duplex(1024);
        c.write_all(b"VOP_DRAFT-0.8 TRANS").await.expect("write");
        drop(c);
        let err = negotiate_server(&mut s, &ServerPolicy::default(), T)
            .await
            .expect_err("eof");
        assert!(
            matches!(err, Error::ClosedDuring("vop negotiation")),
            "{err:?}"
        );

        let (mut c, s) = duplex(1024);
        let server = tokio::spawn(async move {
            let mut s = s;
            let mut line = [0u8; 29];
            s.read_exact(&mut line).await.expect("offer");
            // Close without replying, as a VPy server with no match does.
        });
        let err = negotiate_client(&mut c, &[Transport::Tls], T)
            .await
            .expect_err("eof");
        assert!(
            matches!(err, Error::ClosedDuring("vop negotiation")),
            "{err:?}"
        );
        server.await.expect("join");
    }
}
