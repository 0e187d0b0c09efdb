//! Keep-alive: the periods the two sides agreed, when this side must send
//! one, when the peer is overdue, and a peer that sends them far too often.
//!
//! Either side may ask the other (in the handshake) to send keep-alives at
//! a period; a side that asked closes the link when nothing at all arrives
//! for 1.5 periods. Any message counts as a sign of life, so a keep-alive
//! is sent only when nothing else was for a whole period.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::violation::ProtocolViolation;

/// Silence from the peer beyond this many periods closes the link.
const EXPIRE: f64 = 1.5;
/// Keep-alives whose median gap is below this many periods are a flood.
const FLOOD: f64 = 0.5;
/// The gaps the flood check takes the median of.
const WINDOW: usize = 5;

/// The keep-alive state of one link.
pub(super) struct KeepAlive {
    /// Send one after this long without sending (the period granted to the
    /// peer), if it asked.
    pub(super) send: Option<Duration>,
    /// Expect something from the peer at this period (granted by it), if
    /// this side asked.
    pub(super) recv: Option<Duration>,
    /// When this side last sent a message.
    pub(super) last_sent: Instant,
    /// When bytes last arrived from the peer.
    pub(super) last_recv: Instant,
    /// When the last keep-alives arrived, for the flood check.
    times: VecDeque<Instant>,
}

/// A period in whole milliseconds, as the handshakes carry it.
pub(super) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl KeepAlive {
    /// The peer asked for keep-alives every `asked_ms` (> 0): this side
    /// sends them at that period, or at `min_send` if that is longer, from
    /// `now`. Returns the period granted, in ms (the answer the peer gets).
    pub(super) fn grant(&mut self, asked_ms: i64, min_send: Duration, now: Instant) -> i64 {
        let granted = asked_ms.max(millis(min_send));
        self.send = Some(Duration::from_millis(granted as u64));
        self.last_sent = now;
        granted
    }

    /// Nothing agreed yet; the link starts at `now`.
    pub(super) fn new(now: Instant) -> Self {
        KeepAlive {
            send: None,
            recv: None,
            last_sent: now,
            last_recv: now,
            times: VecDeque::new(),
        }
    }

    /// When the next keep-alive is due or the peer becomes overdue.
    pub(super) fn deadline(&self) -> Option<Instant> {
        let send = self.send.map(|period| self.last_sent + period);
        let recv = self.recv.map(|period| self.expiry(period));
        match (send, recv) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the peer has been silent too long at `now`.
    pub(super) fn expired(&self, now: Instant) -> bool {
        self.recv.is_some_and(|period| now >= self.expiry(period))
    }

    /// Whether this side must send a keep-alive at `now`.
    pub(super) fn send_due(&self, now: Instant) -> bool {
        self.send
            .is_some_and(|period| now >= self.last_sent + period)
    }

    fn expiry(&self, period: Duration) -> Instant {
        self.last_recv + period.mul_f64(EXPIRE)
    }

    /// A keep-alive arrived at `now`.
    pub(super) fn received(&mut self, now: Instant) -> Result<(), ProtocolViolation> {
        let Some(agreed) = self.recv else {
            // VPy accepts unrequested keep-alives; so do we.
            return Ok(());
        };
        self.times.push_back(now);
        if self.times.len() > WINDOW + 1 {
            self.times.pop_front();
        }
        if self.times.len() == WINDOW + 1 {
            let mut gaps: Vec<Duration> = self
                .times
                .iter()
                .zip(self.times.iter().skip(1))
                .map(|(a, b)| b.duration_since(*a))
                .collect();
            gaps.sort();
            let median_gap = gaps[gaps.len() / 2];
            if median_gap < agreed.mul_f64(FLOOD) {
                return Err(ProtocolViolation::KeepAliveFlood { agreed, median_gap });
            }
        }
        Ok(())
    }

    /// Entries kept (for the fuzz harness's bound on the core's size).
    pub(super) fn footprint(&self) -> usize {
        self.times.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_keep_alives_is_a_violation_and_a_steady_stream_is_not() {
        let t0 = Instant::now();
        let period = Duration::from_millis(100);
        let mut steady = KeepAlive::new(t0);
        steady.recv = Some(period);
        for i in 0..20 {
            steady
                .received(t0 + period * i)
                .expect("at the agreed period");
        }
        let mut flood = KeepAlive::new(t0);
        flood.recv = Some(period);
        let gap = Duration::from_millis(10);
        let mut result = Ok(());
        for i in 0..=WINDOW as u32 {
            result = flood.received(t0 + gap * i);
        }
        assert_eq!(
            result,
            Err(ProtocolViolation::KeepAliveFlood {
                agreed: period,
                median_gap: gap,
            })
        );
    }
}
