//! The driver's tasks: one per node for its process (reaping), its control
//! link, its heartbeat and, in `dispatch` mode, the hand-over of
//! connections; one for signals; the bridge from the admin socket. Each
//! reports what it sees as a [`Msg`] to the driver's loop and decides
//! nothing.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use vole_control::control::{NodeStatus, HANDOFF_DISPATCH, HANDOFF_LISTENERS};
use vole_control::fdpass;
use vole_control::quiet::QuietStream;
use vole_link::publish::Published;
use vole_link::{CallError, Link, LinkConfig, LinkInfo, LinkSetup, Object, RemoteObject};

use crate::admin::{AdminHandler, AdminRequest, AdminResponse};
use crate::balance::{Handoff, NodeId};
use crate::core::{DeathCause, Event, NodeKey, Sig};
use crate::spawn;

/// What the driver's loop hears from its tasks.
pub(super) enum Msg {
    /// An event for the core as it is.
    Core(Event<OwnedFd>),
    /// A node's control link is up.
    LinkUp {
        node: NodeKey,
        control: RemoteObject,
        link: Link,
    },
    /// A request on the admin socket.
    Admin(AdminRequest, oneshot::Sender<AdminResponse>),
    /// Node statuses polled for metrics.
    Metrics(Vec<(NodeId, NodeStatus)>),
    /// Time to replace the TLS ticket key.
    RotateTickets,
}

/// Sends a one-way call on a node's control link, off the loop.
pub(super) fn call_oneway<A>(control: &RemoteObject, method: &'static str, args: A)
where
    A: vole_link::IntoArgs + Send + 'static,
{
    let control = control.clone();
    tokio::spawn(async move {
        let _ = control.call_oneway(method, args).await;
    });
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Option<tokio::signal::unix::Signal> {
    match tokio::signal::unix::signal(kind) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(error = %e, "cannot install a signal handler");
            None
        }
    }
}

async fn recv_signal(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

/// Turns signals into supervisor events, until the supervisor is gone.
pub(super) async fn forward_signals(tx: mpsc::UnboundedSender<Msg>) {
    use tokio::signal::unix::SignalKind;
    let mut term = signal(SignalKind::terminate());
    let mut int = signal(SignalKind::interrupt());
    let mut quit = signal(SignalKind::quit());
    let mut hup = signal(SignalKind::hangup());
    let mut usr1 = signal(SignalKind::user_defined1());
    let mut usr2 = signal(SignalKind::user_defined2());
    let mut ttin = signal(SignalKind::from_raw(libc::SIGTTIN));
    let mut ttou = signal(SignalKind::from_raw(libc::SIGTTOU));
    loop {
        let sig = tokio::select! {
            _ = recv_signal(&mut term) => Sig::Term,
            _ = recv_signal(&mut int) => Sig::Int,
            _ = recv_signal(&mut quit) => Sig::Quit,
            _ = recv_signal(&mut hup) => Sig::Hup,
            _ = recv_signal(&mut usr1) => Sig::Usr1,
            _ = recv_signal(&mut usr2) => Sig::Usr2,
            _ = recv_signal(&mut ttin) => Sig::Ttin,
            _ = recv_signal(&mut ttou) => Sig::Ttou,
        };
        if tx.send(Msg::Core(Event::Signal(sig))).is_err() {
            return;
        }
    }
}

/// Polls every acceptor in turn; the first with connections waiting adds
/// them to `batch`.
pub(super) fn poll_accept_any(
    acceptors: &[vole_control::listen::Acceptor],
    cx: &mut std::task::Context<'_>,
    max: usize,
    batch: &mut Vec<std::net::TcpStream>,
) -> std::task::Poll<std::io::Result<()>> {
    for a in acceptors {
        match a.poll_accept_batch(cx, max, batch) {
            std::task::Poll::Ready(Ok(_)) => return std::task::Poll::Ready(Ok(())),
            std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
            std::task::Poll::Pending => {}
        }
    }
    std::task::Poll::Pending
}

/// Waits for the node process and reports its exit (reaping it).
pub(super) async fn reap(
    tx: mpsc::UnboundedSender<Msg>,
    node: NodeKey,
    mut child: tokio::process::Child,
) {
    use std::os::unix::process::ExitStatusExt as _;
    let (code, signal) = match child.wait().await {
        Ok(status) => (status.code(), status.signal()),
        Err(e) => {
            tracing::error!(node = node.id, error = %e, "cannot wait for node");
            (None, None)
        }
    };
    let _ = tx.send(Msg::Core(Event::Exited { node, code, signal }));
}

/// The controller's control object for one node.
fn controller_object(
    tx: mpsc::UnboundedSender<Msg>,
    node: NodeKey,
    config_json: String,
) -> Arc<dyn Object> {
    struct State {
        tx: mpsc::UnboundedSender<Msg>,
        node: NodeKey,
        config_json: String,
    }
    Published::with_state(
        "VoleController",
        State {
            tx,
            node,
            config_json,
        },
    )
    .method(
        "hello",
        "hello(pid): the node's configuration (JSON).",
        |s: Arc<State>, (_pid,): (u32,)| async move { Ok::<_, CallError>(s.config_json.clone()) },
    )
    .method(
        "sessions",
        "sessions(opened, closed): connections since the last report.",
        |s: Arc<State>, (opened, closed): (u64, u64)| async move {
            let _ = s.tx.send(Msg::Core(Event::Sessions {
                node: s.node,
                opened,
                closed,
            }));
            Ok::<_, CallError>(())
        },
    )
    .method(
        "capacity",
        "capacity(n): the node can hold at most n connections at once.",
        |s: Arc<State>, (connections,): (u64,)| async move {
            let _ = s.tx.send(Msg::Core(Event::Capacity {
                node: s.node,
                connections,
            }));
            Ok::<_, CallError>(())
        },
    )
    .method(
        "ready",
        "The node serves.",
        |s: Arc<State>, (): ()| async move {
            let _ = s.tx.send(Msg::Core(Event::Ready(s.node)));
            Ok::<_, CallError>(())
        },
    )
    .into_object()
}

fn died(tx: &mpsc::UnboundedSender<Msg>, node: NodeKey, cause: DeathCause) {
    let _ = tx.send(Msg::Core(Event::Died { node, cause }));
}

/// Hands the sockets to the node and runs the control link until it
/// closes.
pub(super) async fn run_control(
    tx: mpsc::UnboundedSender<Msg>,
    node: NodeKey,
    mut control: QuietStream,
    listeners: Vec<OwnedFd>,
    handoff: Handoff,
    config_json: String,
) {
    let tag = if handoff == Handoff::Dispatch {
        HANDOFF_DISPATCH
    } else {
        HANDOFF_LISTENERS
    };
    let borrowed: Vec<_> = listeners.iter().map(AsFd::as_fd).collect();
    if let Err(e) = fdpass::send(&mut control, &[tag], &borrowed).await {
        died(&tx, node, DeathCause::Handoff(e.to_string()));
        return;
    }
    // Our copies of per-node sockets (reuseport) are closed here.
    drop(borrowed);
    drop(listeners);
    let setup = LinkSetup {
        config: LinkConfig {
            hold_peer: true,
            handshake_timeout: Duration::from_secs(10),
            ..LinkConfig::default()
        },
        gateway: controller_object(tx.clone(), node, config_json),
        info: LinkInfo {
            node_id: Some(node.id),
            ..LinkInfo::default()
        },
    };
    match vole_link::connect(control, setup).await {
        Ok((link, remote)) => {
            let _ = tx.send(Msg::LinkUp {
                node,
                control: remote,
                link: link.clone(),
            });
            let reason = link.closed().await;
            died(&tx, node, DeathCause::Link(format!("closed: {reason}")));
        }
        Err(e) => died(&tx, node, DeathCause::Link(format!("failed: {e}"))),
    }
}

/// Asks a node that holds grants whether it answers within `limit` (see
/// [`crate::balance`]); a failing link counts as no answer.
pub(super) async fn probe(
    tx: mpsc::UnboundedSender<Msg>,
    node: NodeKey,
    control: RemoteObject,
    limit: Duration,
) {
    let alive = matches!(
        tokio::time::timeout(limit, control.call("ping", ())).await,
        Ok(Ok(_))
    );
    let _ = tx.send(Msg::Core(Event::Probed { node, alive }));
}

/// Pings the node; a missed answer means it is hung.
pub(super) async fn heartbeat(
    tx: mpsc::UnboundedSender<Msg>,
    node: NodeKey,
    control: RemoteObject,
    interval: Duration,
    limit: Duration,
) {
    let link = control.link();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = link.closed() => return,
        }
        match tokio::time::timeout(limit, control.call("ping", ())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return, // the link is failing; that is reported separately
            Err(_) => {
                died(&tx, node, DeathCause::Hung);
                return;
            }
        }
    }
}

/// The supervisor's side of one node's dispatcher.
#[derive(Debug)]
pub(super) struct DispatchHandle {
    /// Connections for the node.
    pub(super) tx: mpsc::UnboundedSender<OwnedFd>,
    /// Answered once every connection sent before the request was passed
    /// on and the node received it (or the node is gone): what must reach
    /// the node before its `stop` (see [`stop_after_received`]).
    pub(super) flush: mpsc::UnboundedSender<oneshot::Sender<()>>,
    /// Dropped (with `tx`) when the node is gone: wakes a dispatcher that
    /// waits for room in a socket the dead node no longer reads.
    pub(super) _gone: oneshot::Sender<()>,
}

/// How long a `stop` waits at most for the node to receive the
/// connections passed to it before the stop.
const RECEIVE_WAIT: Duration = Duration::from_secs(2);

/// Sends `stop` to a `dispatch` node once it has received every connection
/// the controller passed it before: a node stops taking connections when
/// told to stop, and the frames still in its socket would come back to a
/// controller that is stopping, which can only close them. (The core
/// orders the dispatches before the stop; the two travel on different
/// sockets, so the order is kept here.)
pub(super) fn stop_after_received(
    dispatch: &DispatchHandle,
    control: &RemoteObject,
    args: (bool, u64),
) {
    let (done, received) = oneshot::channel();
    let _ = dispatch.flush.send(done);
    let control = control.clone();
    tokio::spawn(async move {
        // (An error: the dispatcher is gone, and so is the node.)
        let _ = received.await;
        let _ = control.call_oneway("stop", args).await;
    });
}

/// Waits (within [`RECEIVE_WAIT`]) until the node has received every frame
/// sent so far, or is gone.
async fn until_received(conn: &spawn::ConnSocket, gone: &mut oneshot::Receiver<()>) -> bool {
    let deadline = tokio::time::Instant::now() + RECEIVE_WAIT;
    loop {
        match conn.unreceived() {
            Ok(0) | Err(_) => return true,
            Ok(_) if tokio::time::Instant::now() >= deadline => return true,
            Ok(_) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            _ = &mut *gone => return false,
        }
    }
}

/// `dispatch` mode: passes connections to one node, several per frame when
/// several are waiting, and closes its copies once a frame is sent.
///
/// The frame itself keeps each connection until the node receives it, and
/// the controller holds a copy of the node's end of the socket
/// ([`spawn::ConnSocket::node_end`]), so a node that dies leaves the frames
/// it never received where the controller can take them back
/// ([`fdpass::drain`]) for another node. A descriptor is received by
/// exactly one reader: nothing the node took comes back, and no
/// acknowledgment is needed. The node's death is learnt from the supervisor
/// (which drops the sender), or from a failed send.
pub(super) async fn dispatcher(
    tx: mpsc::UnboundedSender<Msg>,
    node: NodeKey,
    conn: spawn::ConnSocket,
    mut rx: mpsc::UnboundedReceiver<OwnedFd>,
    mut flush: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
    mut gone: oneshot::Receiver<()>,
) {
    let mut conn = conn;
    let mut batch: Vec<OwnedFd> = Vec::with_capacity(fdpass::MAX_FDS);
    let mut flush_open = true;
    loop {
        // `gone` first: once the node is dead, what is still queued is not
        // sent. (Each branch on `gone` ends the loop: it is never polled
        // again once it has fired.) Connections before flush requests: a
        // request is answered only once nothing is queued.
        tokio::select! {
            biased;
            _ = &mut gone => break,
            n = rx.recv_many(&mut batch, fdpass::MAX_FDS) => {
                if n == 0 {
                    break; // the node died (as the supervisor saw it)
                }
            }
            waiter = flush.recv(), if flush_open => {
                match waiter {
                    Some(waiter) => {
                        if !until_received(&conn, &mut gone).await {
                            break;
                        }
                        let _ = waiter.send(());
                    }
                    None => flush_open = false,
                }
                continue;
            }
        }
        let frame = [batch.len() as u8];
        let sent = {
            let fds: Vec<_> = batch.iter().map(AsFd::as_fd).collect();
            tokio::select! {
                r = fdpass::send(&mut conn.ours, &frame, &fds) => Some(r),
                // The socket is full and the node will never read it.
                _ = &mut gone => None,
            }
        };
        match sent {
            // The frame holds them now.
            Some(Ok(())) => batch.clear(),
            Some(Err(e)) => {
                tracing::warn!(node = node.id, error = %e, "cannot pass connections to the node");
                break;
            }
            None => break,
        }
    }
    rx.close();
    let spawn::ConnSocket {
        ours: _ours,
        node_end,
    } = conn;
    // In the order they were accepted: the frames the node never received,
    // a batch that could not be sent, then what was still queued.
    let mut fds = match fdpass::drain(node_end.as_fd()) {
        Ok(fds) => fds,
        Err(e) => {
            tracing::error!(node = node.id, error = %e, "cannot take back the connections the node never received");
            Vec::new()
        }
    };
    fds.append(&mut batch);
    while let Ok(fd) = rx.try_recv() {
        fds.push(fd);
    }
    drop(node_end);
    let _ = tx.send(Msg::Core(Event::Undelivered { node, conns: fds }));
}

/// Turns admin requests into supervisor events.
pub(super) struct AdminBridge {
    pub(super) tx: mpsc::UnboundedSender<Msg>,
}

impl AdminHandler for AdminBridge {
    fn handle(
        &self,
        request: AdminRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = AdminResponse> + Send + '_>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            if self.tx.send(Msg::Admin(request, reply)).is_err() {
                return AdminResponse::error("the service is shutting down");
            }
            rx.await
                .unwrap_or_else(|_| AdminResponse::error("the service is shutting down"))
        })
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    fn key(id: NodeId) -> NodeKey {
        NodeKey { id, gen: 1 }
    }

    fn devnull() -> OwnedFd {
        OwnedFd::from(std::fs::File::open("/dev/null").expect("open"))
    }

    fn conn_socket() -> (spawn::ConnSocket, QuietStream) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().expect("pair");
        let node_end = OwnedFd::from(theirs.try_clone().expect("dup"));
        let conn = spawn::ConnSocket {
            ours: QuietStream::dormant(ours).expect("dormant"),
            node_end,
        };
        (conn, QuietStream::new(theirs).expect("node end"))
    }

    fn port(fd: &OwnedFd) -> u16 {
        let l = std::net::TcpListener::from(fd.try_clone().expect("dup"));
        l.local_addr().expect("addr").port()
    }

    async fn undelivered(events: &mut mpsc::UnboundedReceiver<Msg>) -> (NodeKey, Vec<OwnedFd>) {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("in time")
            .expect("an event");
        match event {
            Msg::Core(Event::Undelivered { node, conns }) => (node, conns),
            _ => panic!("expected Undelivered"),
        }
    }

    /// Connections travel several per frame; those the node received are
    /// not handed back when it dies, those still in its socket are, in the
    /// order they were accepted.
    #[tokio::test]
    async fn a_dead_node_s_unreceived_connections_come_back() {
        let (conn, node) = conn_socket();
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (conns, rx) = mpsc::unbounded_channel();
        let (gone_tx, gone) = oneshot::channel();
        let listeners: Vec<std::net::TcpListener> = (0..6)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().expect("addr").port())
            .collect();
        let mut listeners = listeners.into_iter().map(OwnedFd::from);
        for fd in listeners.by_ref().take(3) {
            conns.send(fd).expect("queue");
        }
        let (_flush, flush_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(dispatcher(events_tx, key(7), conn, rx, flush_rx, gone));
        let mut got = Vec::new();
        let mut frames = 0;
        while got.len() < 3 {
            let mut count = [0u8; 1];
            let fds =
                tokio::time::timeout(Duration::from_secs(10), fdpass::recv(&node, &mut count))
                    .await
                    .expect("in time")
                    .expect("recv")
                    .expect("frame");
            assert_eq!(fds.len(), usize::from(count[0]));
            got.extend(fds);
            frames += 1;
        }
        assert!(
            frames < 3,
            "queued connections share frames ({frames} frames)"
        );
        assert_eq!(got.iter().map(port).collect::<Vec<_>>(), ports[..3]);
        // Three more; the node dies (as the supervisor sees it) without
        // reading them. The dispatcher sends what was queued before it saw
        // that, so all three come back out of the node's socket.
        for fd in listeners {
            conns.send(fd).expect("queue");
        }
        drop(conns);
        let (id, back) = undelivered(&mut events).await;
        assert_eq!(id, key(7));
        assert_eq!(
            back.iter().map(port).collect::<Vec<_>>(),
            ports[3..],
            "exactly the three it never received, in order"
        );
        task.await.expect("dispatcher ends");
        drop((node, gone_tx));
    }

    /// A flush request (what a `stop` waits for) is answered only once
    /// every connection queued before it was sent and the node received it.
    #[tokio::test]
    async fn a_flush_is_answered_once_the_node_received_what_came_before() {
        let (conn, node) = conn_socket();
        let (events_tx, _events) = mpsc::unbounded_channel();
        let (conns, rx) = mpsc::unbounded_channel();
        let (flush, flush_rx) = mpsc::unbounded_channel();
        let (_gone_tx, gone) = oneshot::channel();
        for _ in 0..3 {
            conns.send(devnull()).expect("queue");
        }
        let (done, mut received) = oneshot::channel();
        flush.send(done).expect("flush");
        let task = tokio::spawn(dispatcher(events_tx, key(5), conn, rx, flush_rx, gone));
        // Sent (the dispatcher runs meanwhile), not received: no answer.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            received.try_recv().is_err(),
            "answered before the node received"
        );
        let mut got = 0;
        while got < 3 {
            let mut count = [0u8; 1];
            let fds =
                tokio::time::timeout(Duration::from_secs(10), fdpass::recv(&node, &mut count))
                    .await
                    .expect("in time")
                    .expect("recv")
                    .expect("frame");
            got += fds.len();
        }
        tokio::time::timeout(Duration::from_secs(10), received)
            .await
            .expect("answered once received")
            .expect("answer");
        drop((conns, flush));
        task.await.expect("dispatcher ends");
    }

    /// A node that stops reading fills its socket; when it is found dead,
    /// the dispatcher waiting for room lets go and every connection comes
    /// back: those in the socket, the batch it could not send, the queue.
    #[tokio::test]
    async fn a_dispatcher_blocked_on_a_full_socket_lets_go_when_its_node_dies() {
        let (conn, node) = conn_socket();
        // The smallest send buffer: a few frames fill it.
        nix::sys::socket::setsockopt(&conn.ours, nix::sys::socket::sockopt::SndBuf, &1)
            .expect("SO_SNDBUF");
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let (conns, rx) = mpsc::unbounded_channel();
        let (gone_tx, gone) = oneshot::channel();
        const N: usize = 200;
        let (_flush, flush_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(dispatcher(events_tx, key(3), conn, rx, flush_rx, gone));
        for _ in 0..N {
            conns.send(devnull()).expect("queue");
            // One frame per connection while the socket has room.
            tokio::task::yield_now().await;
        }
        // The node's socket holds some frames, and the rest cannot follow.
        tokio::time::timeout(Duration::from_secs(10), node.readable())
            .await
            .expect("in time")
            .expect("readable");
        drop(node);
        drop((conns, gone_tx));
        let (id, back) = undelivered(&mut events).await;
        assert_eq!(id, key(3));
        assert_eq!(back.len(), N, "every connection comes back");
        task.await.expect("dispatcher ends");
    }
}
