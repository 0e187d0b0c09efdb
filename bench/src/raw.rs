//! The baseline protocol: length-prefixed echo over plain TCP or TLS.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes; the
//! server answers every frame with the same frame. Both sides handle
//! pipelining: the server answers all complete frames of one read with one
//! write, and the client ([`drive`]) keeps M frames in flight and matches
//! answers to requests in order.
//!
//! This is the floor vole is measured against: the same sockets, the same
//! rustls configuration (TLS 1.3, aws-lc-rs, the dev certificate), the same
//! tokio runtime, and no VOP, VEC or VOL.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::record::{Progress, Recorder, Watchdog};

/// Largest frame body either side accepts.
pub const MAX_FRAME: usize = 16 << 20;
/// Bytes of the length prefix.
const HEADER: usize = 4;
/// Read at least this much at a time.
const READ_CHUNK: usize = 16 * 1024;

/// The length of the body of the frame at the start of `buf`, if its header
/// is complete.
fn body_len(buf: &[u8]) -> io::Result<Option<usize>> {
    let Some(header) = buf.get(..HEADER) else {
        return Ok(None);
    };
    let mut len = [0u8; HEADER];
    len.copy_from_slice(header);
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {MAX_FRAME}"),
        ));
    }
    Ok(Some(len))
}

/// The length of the run of complete frames at the start of `buf`.
fn complete_frames(buf: &[u8]) -> io::Result<usize> {
    let mut pos = 0;
    while let Some(len) = body_len(&buf[pos..])? {
        if buf.len() - pos - HEADER < len {
            break;
        }
        pos += HEADER + len;
    }
    Ok(pos)
}

/// A frame carrying `body`.
pub fn frame(body: &[u8]) -> io::Result<Vec<u8>> {
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut out = Vec::with_capacity(HEADER + body.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    Ok(out)
}

fn make_room(buf: &mut Vec<u8>) {
    if buf.capacity() - buf.len() < READ_CHUNK / 4 {
        buf.reserve(READ_CHUNK);
    }
}

/// Echoes frames on one connection until the peer closes it.
pub async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> io::Result<()> {
    let mut inbuf = Vec::with_capacity(READ_CHUNK);
    loop {
        make_room(&mut inbuf);
        if stream.read_buf(&mut inbuf).await? == 0 {
            return if inbuf.is_empty() {
                // Closed in turn (with TLS, a close_notify), as vole's
                // links close.
                stream.shutdown().await
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
        let done = complete_frames(&inbuf)?;
        if done > 0 {
            // An echo answers each frame with itself.
            stream.write_all(&inbuf[..done]).await?;
            stream.flush().await?;
            inbuf.drain(..done);
        }
    }
}

/// Accepts connections forever and echoes on each (TLS if `tls` is given).
pub async fn serve(listener: TcpListener, tls: Option<Arc<rustls::ServerConfig>>) {
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let result = async {
                tcp.set_nodelay(true)?;
                match acceptor {
                    Some(acceptor) => echo(acceptor.accept(tcp).await?).await,
                    None => echo(tcp).await,
                }
            }
            .await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended on error");
            }
        });
    }
}

/// A client connection to a baseline server.
pub enum RawStream {
    /// Plain TCP.
    Tcp(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to `host:port`, with TLS if `tls` is given, within `limit`.
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    limit: Duration,
) -> anyhow::Result<RawStream> {
    let work = async {
        let tcp = TcpStream::connect((host, port))
            .await
            .context("tcp connect")?;
        tcp.set_nodelay(true)?;
        match tls {
            None => Ok(RawStream::Tcp(tcp)),
            Some(config) => {
                let name = ServerName::try_from(host.to_owned())
                    .with_context(|| format!("{host:?} is not a valid TLS server name"))?;
                let stream = TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .context("tls handshake")?;
                Ok(RawStream::Tls(Box::new(stream)))
            }
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| anyhow::anyhow!("timed out after {limit:?}"))?
}

/// One new session against a baseline server, bounded by `limit`: connect
/// (and the TLS handshake if `tls` is given), one echo of `payload`
/// (checked), then a graceful close that waits for the server's side to
/// close, as a `vole bench --sessions` session does on a link. Returns
/// whether the TLS session was resumed.
pub async fn session(
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    payload: &[u8],
    limit: Duration,
) -> Result<bool, SessionError> {
    let work = async {
        let stream = connect(host, port, tls, limit)
            .await
            .map_err(SessionError::Connect)?;
        let resumed = match &stream {
            RawStream::Tcp(_) => false,
            RawStream::Tls(s) => {
                s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
            }
        };
        match stream {
            RawStream::Tcp(s) => echo_once(s, payload).await,
            RawStream::Tls(s) => echo_once(*s, payload).await,
        }
        .map_err(SessionError::Call)?;
        Ok(resumed)
    };
    tokio::time::timeout(limit, work)
        .await
        .map_err(|_| SessionError::Timeout)?
}

/// Why a baseline session failed.
#[derive(Debug)]
pub enum SessionError {
    /// The TCP connect or the TLS handshake.
    Connect(anyhow::Error),
    /// The echo or the close.
    Call(io::Error),
    /// The session took longer than its bound.
    Timeout,
}

/// Sends one frame of `payload`, checks its echo, then closes the write
/// side and waits for the server to close its own.
async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    payload: &[u8],
) -> io::Result<()> {
    stream.write_all(&frame(payload)?).await?;
    stream.flush().await?;
    let mut inbuf = Vec::with_capacity(HEADER + payload.len());
    loop {
        if let Some(len) = body_len(&inbuf)? {
            if let Some(body) = inbuf.get(HEADER..HEADER + len) {
                if body != payload || inbuf.len() != HEADER + len {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "wrong answer"));
                }
                break;
            }
        }
        make_room(&mut inbuf);
        if stream.read_buf(&mut inbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    stream.shutdown().await?;
    // The server closes once it has read our close.
    let mut rest = [0u8; 64];
    if stream.read(&mut rest).await? != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bytes after the answer",
        ));
    }
    Ok(())
}

/// Keeps `inflight` echo requests of `payload` in flight on `stream` until
/// `stop_at`, then waits for the answers still due. Every answer is
/// recorded in `rec`; if the connection fails, the requests in flight are
/// recorded as errors and the error is returned.
pub async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    payload: &[u8],
    inflight: usize,
    rec: &mut Recorder,
    stop_at: Instant,
    limit: Duration,
) -> io::Result<()> {
    let request = frame(payload)?;
    let mut sent: VecDeque<Instant> = VecDeque::with_capacity(inflight);
    let mut out: Vec<u8> = Vec::with_capacity(request.len() * inflight);
    let mut inbuf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut to_send = inflight;
    let mut watchdog = Watchdog::new(limit);
    let progress = Progress::new();
    let result = async {
        loop {
            let now = Instant::now();
            if now < stop_at {
                for _ in 0..to_send {
                    out.extend_from_slice(&request);
                    sent.push_back(now);
                }
            }
            to_send = 0;
            if !out.is_empty() {
                stream.write_all(&out).await?;
                stream.flush().await?;
                out.clear();
            }
            if sent.is_empty() {
                return Ok(());
            }
            make_room(&mut inbuf);
            let n = tokio::select! {
                biased;
                n = stream.read_buf(&mut inbuf) => n?,
                () = watchdog.expired(&progress) => {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no answer in time"));
                }
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let now = Instant::now();
            progress.note(now);
            let mut pos = 0;
            while let Some(len) = body_len(&inbuf[pos..])? {
                let Some(body) = inbuf.get(pos + HEADER..pos + HEADER + len) else {
                    break;
                };
                let Some(t0) = sent.pop_front() else {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "an answer nobody asked for",
                    ));
                };
                rec.record(t0, now, body == payload);
                pos += HEADER + len;
                to_send += 1;
            }
            inbuf.drain(..pos);
        }
    }
    .await;
    if result.is_err() {
        let now = Instant::now();
        for t0 in sent.drain(..) {
            rec.record(t0, now, false);
        }
    }
    result
}

/// [`drive`] over either kind of stream.
pub async fn drive_stream(
    stream: RawStream,
    payload: &[u8],
    inflight: usize,
    rec: &mut Recorder,
    stop_at: Instant,
    limit: Duration,
) -> io::Result<()> {
    match stream {
        RawStream::Tcp(s) => drive(s, payload, inflight, rec, stop_at, limit).await,
        RawStream::Tls(s) => drive(*s, payload, inflight, rec, stop_at, limit).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Counters, Window};

    #[test]
    fn frames() {
        let f = frame(b"abc").expect("frame");
        assert_eq!(f, [0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(body_len(&f).expect("len"), Some(3));
        assert_eq!(body_len(&f[..3]).expect("len"), None);
        let mut two = f.clone();
        two.extend_from_slice(&frame(b"").expect("frame"));
        two.extend_from_slice(&f[..5]);
        assert_eq!(complete_frames(&two).expect("frames"), 11);
        assert_eq!(complete_frames(&[]).expect("frames"), 0);
    }

    #[test]
    fn oversized_frames_are_refused() {
        let header = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert_eq!(
            body_len(&header).expect_err("too big").kind(),
            io::ErrorKind::InvalidData
        );
        assert!(complete_frames(&header).is_err());
        assert!(frame(&vec![0; MAX_FRAME + 1]).is_err());
    }

    fn recorder(counters: &Arc<Counters>) -> Recorder {
        let now = Instant::now();
        Recorder::new(
            Window {
                start: now,
                end: now + Duration::from_secs(60),
            },
            counters.clone(),
        )
    }

    async fn server(tls: bool) -> (std::net::SocketAddr, Option<Arc<rustls::ClientConfig>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (server_tls, client_tls) = if tls {
            let dir = std::env::temp_dir().join(format!(
                "vole-bench-raw-{}-{}",
                std::process::id(),
                addr.port()
            ));
            let identity = vole_transport::tls::ServerIdentity::Dev {
                state_dir: dir.clone(),
            };
            let server = vole_transport::tls::server_config(&identity).expect("server tls");
            let client = vole_transport::tls::client_config(
                &vole_transport::tls::ServerTrust::Pinned(server.fingerprint),
            )
            .expect("client tls");
            let _ = std::fs::remove_dir_all(&dir);
            (Some(server.config), Some(client))
        } else {
            (None, None)
        };
        tokio::spawn(serve(listener, server_tls));
        (addr, client_tls)
    }

    async fn pipelined(tls: bool) {
        let (addr, client_tls) = server(tls).await;
        let stream = connect("127.0.0.1", addr.port(), client_tls, Duration::from_secs(5))
            .await
            .expect("connect");
        let counters = Arc::new(Counters::default());
        let mut rec = recorder(&counters);
        let stop_at = Instant::now() + Duration::from_millis(200);
        drive_stream(
            stream,
            &[7u8; 100],
            8,
            &mut rec,
            stop_at,
            Duration::from_secs(5),
        )
        .await
        .expect("drive");
        assert!(rec.calls > 8, "{} calls", rec.calls);
        assert_eq!(rec.errors, 0);
        assert_eq!(rec.hist.len(), rec.calls);
    }

    #[tokio::test]
    async fn pipelined_plain() {
        tokio::time::timeout(Duration::from_secs(20), pipelined(false))
            .await
            .expect("in time");
    }

    #[tokio::test]
    async fn pipelined_tls() {
        tokio::time::timeout(Duration::from_secs(20), pipelined(true))
            .await
            .expect("in time");
    }

    async fn sessions(tls: bool) {
        let (addr, client_tls) = server(tls).await;
        let limit = Duration::from_secs(5);
        for i in 0..3 {
            let resumed = session(
                "127.0.0.1",
                addr.port(),
                client_tls.clone(),
                b"hello",
                limit,
            )
            .await
            .expect("session");
            assert!(i > 0 || !resumed, "the first session has nothing to resume");
        }
    }

    #[tokio::test]
    async fn sessions_plain_and_tls() {
        tokio::time::timeout(Duration::from_secs(20), async {
            sessions(false).await;
            sessions(true).await;
        })
        .await
        .expect("in time");
    }

    #[tokio::test]
    async fn a_wrong_echo_fails_the_session() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let work = async {
            let server = async {
                let (mut s, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await.expect("read");
                s.write_all(&frame(b"other").expect("frame"))
                    .await
                    .expect("write");
                s
            };
            let (_s, result) = tokio::join!(
                server,
                session("127.0.0.1", port, None, b"hello", Duration::from_secs(5))
            );
            assert!(matches!(result, Err(SessionError::Call(_))), "{result:?}");
            let refused = session("127.0.0.1", 1, None, b"x", Duration::from_secs(5)).await;
            assert!(
                matches!(refused, Err(SessionError::Connect(_))),
                "{refused:?}"
            );
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("in time");
    }

    #[tokio::test]
    async fn server_refuses_oversized_frames() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let work = async {
            let accepting = async { listener.accept().await.expect("accept").0 };
            let (server_side, mut client) = tokio::join!(accepting, async {
                TcpStream::connect(addr).await.expect("connect")
            });
            client
                .write_all(&((MAX_FRAME + 1) as u32).to_be_bytes())
                .await
                .expect("write");
            let err = echo(server_side).await.expect_err("refused");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .expect("in time");
    }

    #[tokio::test]
    async fn truncated_frame_at_close_is_an_error() {
        let (a, mut b) = tokio::io::duplex(64);
        b.write_all(&[0, 0, 0, 9, 1]).await.expect("write");
        drop(b);
        let err = tokio::time::timeout(Duration::from_secs(5), echo(a))
            .await
            .expect("in time")
            .expect_err("truncated");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn lost_connection_counts_errors() {
        let (a, b) = tokio::io::duplex(4096);
        // A server that reads the requests and closes without answering.
        let server = tokio::spawn(async move {
            let mut b = b;
            let mut buf = [0u8; 64];
            let _ = b.read(&mut buf).await;
        });
        let counters = Arc::new(Counters::default());
        let mut rec = recorder(&counters);
        let stop_at = Instant::now() + Duration::from_secs(60);
        let result = tokio::time::timeout(
            Duration::from_secs(5),
            drive(a, b"x", 4, &mut rec, stop_at, Duration::from_secs(5)),
        )
        .await
        .expect("in time");
        assert!(result.is_err());
        assert_eq!(rec.errors, 4);
        assert_eq!(rec.calls, 0);
        server.await.expect("server task");
    }

    #[tokio::test]
    async fn silent_server_times_out() {
        let (a, _b) = tokio::io::duplex(4096);
        let counters = Arc::new(Counters::default());
        let mut rec = recorder(&counters);
        let stop_at = Instant::now() + Duration::from_secs(60);
        let err = drive(a, b"x", 2, &mut rec, stop_at, Duration::from_millis(50))
            .await
            .expect_err("timed out");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(rec.errors, 2);
    }

    #[tokio::test]
    async fn unasked_answer_is_an_error() {
        let (a, mut b) = tokio::io::duplex(4096);
        let counters = Arc::new(Counters::default());
        let mut rec = recorder(&counters);
        let stop_at = Instant::now() + Duration::from_secs(60);
        let mut answers = frame(b"x").expect("frame");
        answers.extend_from_slice(&frame(b"x").expect("frame"));
        b.write_all(&answers).await.expect("write");
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            drive(a, b"x", 1, &mut rec, stop_at, Duration::from_secs(5)),
        )
        .await
        .expect("in time")
        .expect_err("extra answer");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
