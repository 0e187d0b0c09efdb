//! Readiness, and the not-ready period before a drain: on SIGTERM or
//! `vole drain` the service first reports not-ready for
//! `shutdown_delay` while it serves on (new connections included), so
//! that balancers and Kubernetes endpoints stop sending it connections
//! before it drains; then it stops gracefully as it always did.

use std::time::Instant;

use super::event::{Command, RequestId, Timer};
use super::state::NotReady;
use super::SupervisorCore;
use crate::admin::{AdminResponse, HealthReport};

impl<C> SupervisorCore<C> {
    /// Begins a graceful stop: at once without a shutdown delay, else after
    /// it (not ready meanwhile). `req` is a `vole drain` to answer when the
    /// drain begins; `asked` says it came from one. Idempotent.
    pub(super) fn drain(&mut self, now: Instant, req: Option<RequestId>, asked: bool) {
        self.drain_asked |= asked;
        if self.stopping.is_some() {
            self.reply(req, AdminResponse::ok());
            return;
        }
        if let Some(not_ready) = &mut self.not_ready {
            not_ready.replies.extend(req);
            tracing::info!("already not ready; draining when the shutdown delay ends");
            return;
        }
        let delay = self.config.shutdown_delay;
        let by = if asked { "vole drain" } else { "SIGTERM" };
        if delay.is_zero() {
            tracing::info!(by, "stopping gracefully (a second SIGTERM forces)");
            self.begin_stop(now, false, self.config.grace);
            self.reply(req, AdminResponse::ok());
            return;
        }
        tracing::info!(
            by,
            ?delay,
            "not ready: serving on for the shutdown delay, then draining"
        );
        self.not_ready = Some(NotReady {
            replies: req.into_iter().collect(),
        });
        // External nodes have no control link to be told on.
        let external = self.config.node_command.is_some();
        let linked: Vec<_> = self
            .slots
            .values()
            .filter(|s| s.linked && !external)
            .map(|s| s.key())
            .collect();
        for node in linked {
            self.commands.push_back(Command::NotReady { node });
        }
        self.commands.push_back(Command::Timer {
            at: now + delay,
            timer: Timer::ShutdownDelay,
        });
    }

    /// The shutdown delay is over: drain.
    pub(super) fn shutdown_delay_over(&mut self, now: Instant) {
        if self.not_ready.is_some() && self.stopping.is_none() {
            tracing::info!("shutdown delay over: draining");
            // Answers the waiting `vole drain` requests.
            self.begin_stop(now, false, self.config.grace);
        }
    }

    /// Whether the service serves and wants new connections.
    pub(super) fn health(&self) -> HealthReport {
        let serving = u32::try_from(self.serving()).unwrap_or(u32::MAX);
        let state = if self.stopping.is_some() || self.not_ready.is_some() {
            "draining"
        } else if serving == 0 {
            "not_serving"
        } else {
            "serving"
        };
        HealthReport {
            state: state.to_owned(),
            serving,
            nodes: self.config.nodes,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use vole_control::control::Balance;

    use super::super::event::{Command, Event, Sig, Timer};
    use super::super::scenarios::{commands, config, serving};
    use super::super::SupervisorCore;
    use crate::admin::{AdminRequest, AdminResponse};

    const DELAY: Duration = Duration::from_secs(2);

    fn core(delay: Duration) -> (SupervisorCore<u32>, Instant) {
        let t0 = Instant::now();
        let mut cfg = config(2, Balance::Grant);
        cfg.shutdown_delay = delay;
        let mut core = SupervisorCore::new(cfg, 1, t0);
        serving(&mut core, t0, 2);
        commands(&mut core);
        (core, t0)
    }

    fn ask(core: &mut SupervisorCore<u32>, now: Instant, req: u64, request: AdminRequest) {
        core.handle(now, Event::Admin { req, request });
    }

    fn reply(out: &[Command<u32>], req: u64) -> Option<AdminResponse> {
        out.iter().find_map(|c| match c {
            Command::Reply { req: r, response } if *r == req => Some(response.clone()),
            _ => None,
        })
    }

    fn state(core: &mut SupervisorCore<u32>, now: Instant) -> String {
        ask(core, now, 999, AdminRequest::Health);
        let out = commands(core);
        reply(&out, 999)
            .and_then(|r| r.health)
            .map(|h| h.state)
            .unwrap_or_default()
    }

    fn stops(out: &[Command<u32>]) -> Vec<bool> {
        out.iter()
            .filter_map(|c| match c {
                Command::Stop { graceful, .. } => Some(*graceful),
                _ => None,
            })
            .collect()
    }

    /// SIGTERM with a shutdown delay: not ready at once, still serving and
    /// accepting, a second SIGTERM changes nothing; the drain begins when
    /// the delay ends.
    #[test]
    fn sigterm_reports_not_ready_for_the_delay_then_drains() {
        let (mut core, t0) = core(DELAY);
        assert_eq!(state(&mut core, t0), "serving");
        core.handle(t0, Event::Signal(Sig::Term));
        let out = commands(&mut core);
        assert!(stops(&out).is_empty(), "nodes serve on: {out:?}");
        assert!(
            !out.iter().any(|c| matches!(c, Command::StopAccepting)),
            "{out:?}"
        );
        assert_eq!(
            out.iter()
                .filter(|c| matches!(c, Command::NotReady { .. }))
                .count(),
            2,
            "every node is told (meta.health): {out:?}"
        );
        assert!(
            out.iter().any(|c| matches!(
                c,
                Command::Timer { at, timer: Timer::ShutdownDelay } if *at == t0 + DELAY
            )),
            "{out:?}"
        );
        assert_eq!(state(&mut core, t0), "draining");
        core.handle(t0 + DELAY / 2, Event::Signal(Sig::Term));
        assert!(stops(&commands(&mut core)).is_empty(), "not forced");
        core.handle(t0 + DELAY, Event::Timer(Timer::ShutdownDelay));
        let out = commands(&mut core);
        assert_eq!(stops(&out), [true, true], "a graceful drain: {out:?}");
        assert!(out.iter().any(|c| matches!(c, Command::StopAccepting)));
        assert_eq!(state(&mut core, t0 + DELAY), "draining");
    }

    /// `vole drain` is idempotent and answered when the drain begins; the
    /// orchestrator's SIGTERM after it does not force the stop.
    #[test]
    fn vole_drain_is_answered_when_the_drain_begins() {
        let (mut core, t0) = core(DELAY);
        ask(&mut core, t0, 1, AdminRequest::Drain);
        ask(&mut core, t0 + DELAY / 4, 2, AdminRequest::Drain);
        let out = commands(&mut core);
        assert!(
            reply(&out, 1).is_none() && reply(&out, 2).is_none(),
            "{out:?}"
        );
        assert!(stops(&out).is_empty());
        core.handle(t0 + DELAY, Event::Timer(Timer::ShutdownDelay));
        let out = commands(&mut core);
        assert!(reply(&out, 1).is_some_and(|r| r.ok), "{out:?}");
        assert!(reply(&out, 2).is_some_and(|r| r.ok), "{out:?}");
        assert_eq!(stops(&out), [true, true]);
        core.handle(t0 + DELAY, Event::Signal(Sig::Term));
        let out = commands(&mut core);
        assert!(stops(&out).is_empty(), "SIGTERM after vole drain: {out:?}");
        ask(&mut core, t0 + DELAY, 3, AdminRequest::Drain);
        assert!(reply(&commands(&mut core), 3).is_some_and(|r| r.ok));
    }

    /// Without a delay SIGTERM drains at once, and a second one forces.
    #[test]
    fn without_a_delay_sigterm_drains_at_once() {
        let (mut core, t0) = core(Duration::ZERO);
        core.handle(t0, Event::Signal(Sig::Term));
        let out = commands(&mut core);
        assert_eq!(stops(&out), [true, true], "{out:?}");
        assert_eq!(state(&mut core, t0), "draining");
        core.handle(t0, Event::Signal(Sig::Term));
        assert_eq!(stops(&commands(&mut core)), [false, false], "forced");
    }

    /// A forced stop during the delay answers waiting `vole drain`s.
    #[test]
    fn a_forced_stop_during_the_delay_answers_the_drains() {
        let (mut core, t0) = core(DELAY);
        ask(&mut core, t0, 1, AdminRequest::Drain);
        commands(&mut core);
        core.handle(t0, Event::Signal(Sig::Int));
        let out = commands(&mut core);
        assert!(reply(&out, 1).is_some_and(|r| r.ok), "{out:?}");
        assert_eq!(stops(&out), [false, false]);
        core.handle(t0 + DELAY, Event::Timer(Timer::ShutdownDelay));
        assert!(
            stops(&commands(&mut core)).is_empty(),
            "the late timer does nothing"
        );
    }

    /// Before any node serves, the service is not serving (nor ready).
    #[test]
    fn no_node_serving_is_not_serving() {
        let t0 = Instant::now();
        let mut core = SupervisorCore::<u32>::new(config(2, Balance::Grant), 1, t0);
        core.start(t0, None);
        commands(&mut core);
        assert_eq!(state(&mut core, t0), "not_serving");
    }
}
