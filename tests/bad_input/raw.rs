//! A hand-rolled peer that speaks VOP, VEC and VOL byte by byte, so tests
//! can get a connection to any point of the protocol and then misbehave.
//! Every read is bounded by [`PROMPT`].

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use vole_transport::entity::RawRefs;
use vole_transport::vec::{encode_to_vec, Codec, DecodeConfig, Decoder, EncodeConfig};
use vole_transport::{Entity, Owner, WireRef};

use super::server::PROMPT;

/// VOL message codes used here.
pub mod code {
    /// METHOD_CALL.
    pub const CALL: i64 = 1;
    /// CALL_RESULT.
    pub const RESULT: i64 = 4;
    /// NOTIFY_DEREF.
    pub const NOTIFY_DEREF: i64 = 7;
    /// CONFIRM_DEREF.
    pub const CONFIRM_DEREF: i64 = 8;
}

/// A reference to an object of the message's sender (ours in what we
/// send, the server's in what we receive).
pub fn sender(id: i64) -> Entity {
    Entity::Ref(WireRef {
        owner: Owner::Sender,
        id,
    })
}

/// A reference to an object of the message's receiver (the server's in
/// what we send).
pub fn receiver(id: i64) -> Entity {
    Entity::Ref(WireRef {
        owner: Owner::Receiver,
        id,
    })
}

/// The encoding of `e` (strings in UTF-8, the codec our VEC hello names).
pub fn encode(e: &Entity) -> Vec<u8> {
    encode_to_vec(e, EncodeConfig::default()).expect("test entity encodes")
}

/// The encoding of the VOL message `(id, code, payload)`.
pub fn message(id: i64, code: i64, payload: Entity) -> Vec<u8> {
    encode(&Entity::Tuple(vec![
        Entity::Int(id),
        Entity::Int(code),
        payload,
    ]))
}

/// A raw connection to the server.
pub struct RawPeer {
    tcp: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
    /// Our local port: the server logs it as the peer address.
    pub port: u16,
    /// Our next VOL message id.
    next_id: i64,
    /// The id of the server's gateway, once the handshake is done.
    pub gateway: i64,
}

impl RawPeer {
    /// Connects over TCP and does nothing else.
    pub async fn connect(server_port: u16) -> RawPeer {
        let tcp = timeout(PROMPT, TcpStream::connect(("127.0.0.1", server_port)))
            .await
            .expect("connect in time")
            .expect("connect");
        let port = tcp.local_addr().expect("local address").port();
        let mut decoder = Decoder::new(DecodeConfig {
            max_message: 1 << 24,
            max_depth: 256,
        });
        decoder.set_peer_codec(Some(Codec::Utf8));
        RawPeer {
            tcp,
            buf: BytesMut::new(),
            decoder,
            port,
            next_id: 1,
            gateway: 0,
        }
    }

    /// Connects and negotiates PLAIN with VOP.
    pub async fn vop(server_port: u16) -> RawPeer {
        let mut peer = RawPeer::connect(server_port).await;
        peer.send_raw(b"VOP_DRAFT-0.8 TRANSPORTS:PLAIN\n").await;
        assert_eq!(peer.line().await, b"VOP_DRAFT-0.8 USE_TRANSPORT:PLAIN\n");
        peer
    }

    /// Negotiates PLAIN and exchanges VEC hellos.
    pub async fn vec(server_port: u16) -> RawPeer {
        let mut peer = RawPeer::vop(server_port).await;
        assert_eq!(peer.line().await, b"VEC_DRAFT-0.8-utf8\n");
        peer.send_raw(b"VEC_DRAFT-0.8-utf8\n").await;
        peer
    }

    /// Gets through the whole VOL handshake: hellos, handshake objects,
    /// the server's `finish()` answered with our gateway (id 2), ours
    /// answered with the server's gateway.
    pub async fn linked(server_port: u16) -> RawPeer {
        let (mut peer, finish_id) = RawPeer::opened(server_port).await;
        peer.answer_finish(finish_id).await;
        peer.finish().await;
        peer
    }

    /// Answers the server's `finish()` (message `finish_id`) with our
    /// gateway (id 2).
    pub async fn answer_finish(&mut self, finish_id: i64) {
        self.send_msg(
            code::RESULT,
            Entity::Tuple(vec![Entity::Int(finish_id), sender(2)]),
        )
        .await;
    }

    /// Calls `finish()` on the server's handshake object and keeps the
    /// server's gateway it answers with.
    pub async fn finish(&mut self) {
        let finish = self
            .send_msg(
                code::CALL,
                Entity::Tuple(vec![
                    receiver(1),
                    Entity::Tuple(vec![Entity::str("finish")]),
                ]),
            )
            .await;
        let result = self.result_of(finish).await;
        let Entity::Ref(WireRef {
            owner: Owner::Sender,
            id,
        }) = result
        else {
            panic!("finish() returned {result:?}, not the server's object");
        };
        self.gateway = id;
    }

    /// Hellos and handshake objects exchanged, the server's keep-alive
    /// request granted; returns the peer and the id of the server's
    /// `finish()` call, not answered yet.
    pub async fn opened(server_port: u16) -> (RawPeer, i64) {
        let mut peer = RawPeer::vec(server_port).await;
        let hello = Entity::Tuple(vec![
            Entity::Bytes(b"VOL_DRAFT".to_vec()),
            Entity::Tuple(vec![Entity::Bool(false), Entity::None, Entity::None]),
            Entity::Tuple(vec![Entity::Int(0), Entity::Int(8)]),
        ]);
        peer.send_raw(&encode(&hello)).await;
        peer.send_raw(&encode(&sender(1))).await;
        let server_hello = peer.recv().await;
        assert_eq!(
            server_hello.as_tuple().and_then(|t| t.first()),
            Some(&Entity::Bytes(b"VOL_DRAFT".to_vec())),
            "{server_hello:?}"
        );
        assert_eq!(
            peer.recv().await,
            sender(1),
            "the server's handshake object"
        );
        // The server asks for keep-alives first (`keep-alive`, 30 s by
        // default; its msg 1): granted as asked, as VPy does for any period
        // above its minimum.
        let mut call = peer.recv().await;
        let mut finish_id = 1;
        let ask = |ms: i64| {
            Entity::Tuple(vec![
                Entity::Int(1),
                Entity::Int(code::CALL),
                Entity::Tuple(vec![
                    receiver(1),
                    Entity::Tuple(vec![Entity::str("keep_alive"), Entity::Int(ms)]),
                ]),
            ])
        };
        if call == ask(30_000) {
            peer.send_msg(
                code::RESULT,
                Entity::Tuple(vec![Entity::Int(1), Entity::Int(30_000)]),
            )
            .await;
            call = peer.recv().await;
            finish_id = 2;
        }
        // Then it calls finish() on our handshake object.
        let expected = Entity::Tuple(vec![
            Entity::Int(finish_id),
            Entity::Int(code::CALL),
            Entity::Tuple(vec![
                receiver(1),
                Entity::Tuple(vec![Entity::str("finish")]),
            ]),
        ]);
        assert_eq!(call, expected);
        (peer, finish_id)
    }

    /// Sends bytes as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        timeout(PROMPT, self.tcp.write_all(bytes))
            .await
            .expect("write in time")
            .expect("write");
    }

    /// Sends bytes, tolerating the server closing meanwhile (it may refuse
    /// the start of what we send and close before we are done).
    pub async fn send_raw_lossy(&mut self, bytes: &[u8]) {
        let _ = timeout(PROMPT, self.tcp.write_all(bytes)).await;
    }

    /// Sends a VOL message with the next id and returns the id.
    pub async fn send_msg(&mut self, code: i64, payload: Entity) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.send_raw(&message(id, code, payload)).await;
        id
    }

    /// Calls `method(args...)` on the server's gateway; returns the call id.
    pub async fn call_gateway(&mut self, args: Vec<Entity>) -> i64 {
        let target = receiver(self.gateway);
        self.send_msg(code::CALL, Entity::Tuple(vec![target, Entity::Tuple(args)]))
            .await
    }

    async fn fill(&mut self) {
        let n = timeout(PROMPT, self.tcp.read_buf(&mut self.buf))
            .await
            .expect("server answers in time")
            .expect("read");
        assert!(n > 0, "server closed the connection unexpectedly");
    }

    /// Reads one text line (VOP reply, VEC hello).
    pub async fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(nl) = self.buf.iter().position(|&b| b == b'\n') {
                return self.buf.split_to(nl + 1).to_vec();
            }
            assert!(self.buf.len() < 64, "no line: {:?}", self.buf);
            self.fill().await;
        }
    }

    /// Reads the next entity.
    pub async fn recv(&mut self) -> Entity {
        loop {
            if let Some(e) = self
                .decoder
                .decode(&mut self.buf, &mut RawRefs)
                .expect("server sends valid entities")
            {
                return e;
            }
            self.fill().await;
        }
    }

    /// Reads messages until the CALL_RESULT for `call`, answering nothing
    /// else (dereference notices are left unconfirmed).
    pub async fn result_of(&mut self, call: i64) -> Entity {
        loop {
            let msg = self.recv().await;
            if let Some([_, Entity::Int(code::RESULT), Entity::Tuple(p)]) = msg.as_tuple() {
                if let [Entity::Int(id), value] = p.as_slice() {
                    if *id == call {
                        return value.clone();
                    }
                }
            }
        }
    }

    /// Reads messages until one with code `code`, skipping the others
    /// (dereference notices after the handshake, for instance).
    pub async fn recv_code(&mut self, code: i64) -> Entity {
        loop {
            let msg = self.recv().await;
            if msg.as_tuple().and_then(|t| t.get(1)) == Some(&Entity::Int(code)) {
                return msg;
            }
        }
    }

    /// Shuts our sending side down (EOF for the server).
    pub async fn shutdown_write(&mut self) {
        timeout(PROMPT, self.tcp.shutdown())
            .await
            .expect("shutdown in time")
            .expect("shutdown");
    }

    /// Asserts the server closes the connection: reads (discarding) until
    /// EOF or a reset, within [`PROMPT`].
    pub async fn expect_closed(mut self) {
        let mut sink = vec![0u8; 64 * 1024];
        let closed = timeout(PROMPT, async {
            loop {
                match self.tcp.read(&mut sink).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the server did not close the connection");
    }

    /// The socket, for tests that drive it themselves.
    pub fn tcp(&mut self) -> &mut TcpStream {
        &mut self.tcp
    }
}
