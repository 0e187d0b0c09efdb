//! Calls that outlive the host they started on: a [`Failover`] keeps one
//! link to an object of a service that runs on several hosts (a
//! [`Pool`]), makes calls on it, and when a call fails because its link or
//! host went away, makes a new link (to the next host that connects) and
//! tries the call again, **if that is safe**:
//!
//! * a call that provably never ran ([`Error::never_ran`]: refused as
//!   closing or overloaded, or not yet sent when its link closed) is tried
//!   again whatever it does;
//! * a call cut off in flight ([`Error::Interrupted`]) or past its
//!   deadline ([`Error::DeadlineExceeded`]) may have run: it is tried
//!   again only if the caller said it is idempotent ([`Retry::Idempotent`]),
//!   and otherwise fails with that error;
//! * an answer of the peer (an exception, a call error) is final.
//!
//! A link whose call failed that way is given up (a closing host's link is
//! closed gracefully, any other aborted), and a host whose call passed its
//! deadline is set aside in the pool like one that refused a connection:
//! it may be frozen.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::pool::Pool;
use crate::resolve::resolve_path;
use crate::{Error, Link, RemoteObject, Value};

/// What may be tried again after a failure (see the [module](self)
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Only calls that provably never ran.
    NeverRan,
    /// Also calls that may have run: the call is idempotent.
    Idempotent,
}

/// How a [`Failover`] behaves.
#[derive(Debug, Clone)]
pub struct FailoverConfig {
    /// The path of the object called, resolved on each new link's gateway
    /// (empty: the gateway itself).
    pub path: Vec<String>,
    /// Tries of one call in all, the first included.
    pub attempts: u32,
    /// A deadline for each try (`None`: as long as the link lives).
    pub call_timeout: Option<Duration>,
    /// How long to go on trying to make a link, over every host, before a
    /// call fails with the last connection error.
    pub connect_patience: Duration,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        FailoverConfig {
            path: Vec::new(),
            attempts: 4,
            call_timeout: None,
            connect_patience: Duration::from_secs(5),
        }
    }
}

/// The outcome of one [`Failover::call`].
#[derive(Debug)]
pub struct Outcome {
    /// The answer, or why there is none.
    pub result: Result<Value, Error>,
    /// How many times the call was tried again.
    pub retries: u32,
}

/// One link in use, with the object called on it.
#[derive(Debug)]
struct Current {
    link: Link,
    target: RemoteObject,
    addr: SocketAddr,
    /// Held so that the gateway stays referenced for the link's life.
    _gateway: RemoteObject,
}

/// Calls on one object of a service over a [`Pool`] of hosts, made again
/// on another link when that is safe (see the [module](self)
/// documentation). Calls may be made concurrently; they share the link.
#[derive(Debug)]
pub struct Failover {
    pool: Arc<Pool>,
    config: FailoverConfig,
    current: tokio::sync::Mutex<Option<Arc<Current>>>,
}

/// The first pause when no host connects.
const FIRST_PAUSE: Duration = Duration::from_millis(20);
/// The longest pause between rounds of connecting.
const MAX_PAUSE: Duration = Duration::from_millis(500);

impl Failover {
    /// Calls over `pool`, as `config` says.
    pub fn new(pool: Arc<Pool>, config: FailoverConfig) -> Failover {
        Failover {
            pool,
            config,
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The host of the link in use, if there is one.
    pub async fn current_addr(&self) -> Option<SocketAddr> {
        self.current.lock().await.as_ref().map(|c| c.addr)
    }

    /// Calls `method` with `args`, trying again on a new link where
    /// `retry` allows it (see the [module](self) documentation).
    pub async fn call(&self, method: &str, args: Vec<Value>, retry: Retry) -> Outcome {
        let mut retries = 0;
        loop {
            let current = match self.link().await {
                Ok(c) => c,
                Err(e) => {
                    return Outcome {
                        result: Err(e),
                        retries,
                    }
                }
            };
            let result = match self.config.call_timeout {
                Some(t) => {
                    current
                        .target
                        .with_timeout(t)
                        .call(method, args.clone())
                        .await
                }
                None => current.target.call(method, args.clone()).await,
            };
            let e = match result {
                Ok(v) => {
                    return Outcome {
                        result: Ok(v),
                        retries,
                    }
                }
                Err(e) => e,
            };
            match disposition(&e, retry) {
                Disposition::Final => {
                    return Outcome {
                        result: Err(e),
                        retries,
                    }
                }
                Disposition::Again { give_up_link } => {
                    if give_up_link {
                        self.give_up(&current, &e).await;
                    }
                    if retries + 1 >= self.config.attempts {
                        return Outcome {
                            result: Err(e),
                            retries,
                        };
                    }
                    retries += 1;
                    if matches!(e, Error::Overloaded(_)) {
                        // The same host, a moment later.
                        tokio::time::sleep(FIRST_PAUSE * retries).await;
                    }
                }
                Disposition::GiveUp => {
                    self.give_up(&current, &e).await;
                    return Outcome {
                        result: Err(e),
                        retries,
                    };
                }
            }
        }
    }

    /// Closes the link in use, if any.
    pub async fn close(&self) {
        let current = self.current.lock().await.take();
        if let Some(c) = current {
            c.link.close().await;
        }
    }

    /// The link in use, or a new one.
    async fn link(&self) -> Result<Arc<Current>, Error> {
        let mut slot = self.current.lock().await;
        if let Some(c) = slot.as_ref() {
            if !c.link.is_closed() {
                return Ok(c.clone());
            }
        }
        *slot = None;
        let deadline = Instant::now() + self.config.connect_patience;
        let mut pause = FIRST_PAUSE;
        loop {
            match self.connect().await {
                Ok(c) => {
                    let c = Arc::new(c);
                    *slot = Some(c.clone());
                    return Ok(c);
                }
                Err(e) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(e);
                    }
                    let pause_now = pause.min(deadline - now);
                    tracing::debug!(error = %e, pause = ?pause_now, "no host connects; trying again");
                    tokio::time::sleep(pause_now).await;
                    pause = (pause * 2).min(MAX_PAUSE);
                }
            }
        }
    }

    async fn connect(&self) -> Result<Current, Error> {
        let (link, gateway, addr) = self.pool.connect().await?;
        let target = if self.config.path.is_empty() {
            gateway.clone()
        } else {
            let resolving = resolve_path(&gateway, &self.config.path);
            let resolved = match self.config.call_timeout {
                Some(t) => tokio::time::timeout(t, resolving)
                    .await
                    .unwrap_or(Err(Error::Timeout("resolving the path"))),
                None => resolving.await,
            };
            match resolved {
                Ok(t) => t,
                Err(e) => {
                    link.abort();
                    if !e.is_remote() {
                        self.pool.set_aside(addr);
                    }
                    return Err(e);
                }
            }
        };
        Ok(Current {
            link,
            target,
            addr,
            _gateway: gateway,
        })
    }

    /// Stops using `current`'s link (if it is still the one in use) after
    /// its call failed with `e`.
    async fn give_up(&self, current: &Arc<Current>, e: &Error) {
        {
            let mut slot = self.current.lock().await;
            if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, current)) {
                *slot = None;
            }
        }
        match e {
            // A closing host closes the link itself; let it finish.
            Error::Closing(_) => {
                let link = current.link.clone();
                tokio::spawn(async move { link.close().await });
            }
            Error::DeadlineExceeded { .. } => {
                // No answer in time: the host may be frozen.
                self.pool.set_aside(current.addr);
                current.link.abort();
            }
            _ => current.link.abort(),
        }
        tracing::debug!(addr = %current.addr, error = %e, "link given up");
    }
}

/// What a failed call means for trying again.
#[derive(Debug, PartialEq, Eq)]
enum Disposition {
    /// The answer stands (the peer answered, or the caller erred).
    Final,
    /// Try again (on a new link if `give_up_link`).
    Again { give_up_link: bool },
    /// Not safe to try again, and the link is no good.
    GiveUp,
}

fn disposition(e: &Error, retry: Retry) -> Disposition {
    match e {
        Error::Overloaded(_) => Disposition::Again {
            give_up_link: false,
        },
        Error::Closing(_) | Error::Closed(_) => Disposition::Again { give_up_link: true },
        Error::Interrupted(_) | Error::DeadlineExceeded { .. } => match retry {
            Retry::Idempotent => Disposition::Again { give_up_link: true },
            Retry::NeverRan => Disposition::GiveUp,
        },
        Error::Transport(_) | Error::Protocol(_) | Error::Timeout(_) | Error::Handshake(_) => {
            Disposition::GiveUp
        }
        _ => Disposition::Final,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_never_ran_is_tried_again_unless_idempotent() {
        let closing = Error::Closing("stop".into());
        let closed = Error::Closed("gone".into());
        let cut = Error::Interrupted("reset".into());
        let late = Error::DeadlineExceeded {
            method: "echo".into(),
            timeout: Duration::from_secs(1),
        };
        for e in [&closing, &closed] {
            for r in [Retry::NeverRan, Retry::Idempotent] {
                assert_eq!(disposition(e, r), Disposition::Again { give_up_link: true });
            }
        }
        for e in [&cut, &late] {
            assert_eq!(disposition(e, Retry::NeverRan), Disposition::GiveUp);
            assert_eq!(
                disposition(e, Retry::Idempotent),
                Disposition::Again { give_up_link: true }
            );
        }
        assert_eq!(
            disposition(&Error::Overloaded(String::new()), Retry::NeverRan),
            Disposition::Again {
                give_up_link: false
            }
        );
        for e in [
            Error::Exception(vec![]),
            Error::CallError,
            Error::Cancelled("x".into()),
            Error::Convert("x".into()),
        ] {
            assert_eq!(disposition(&e, Retry::Idempotent), Disposition::Final);
        }
    }
}
