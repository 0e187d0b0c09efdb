//! What a link holds of the peer's calls (its input buffer and the
//! arguments of the calls it runs), charged to the shared budget, and the
//! question the driver asks before each read: may it read? The policy is
//! [`crate::budget::decide`]; this applies it.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::task::Context;

use bytes::BytesMut;

use crate::budget::{Charge, LinkView};
use crate::core::LinkConfig;
use crate::shared::LinkStats;

/// Calls smaller than this are not tracked (their bytes are noise next to
/// the input buffer, and most finish as they start).
const TRACK_MIN: usize = 1024;

/// Read at least this much at a time (the driver's read chunk; also what
/// [`Buffered::make_room`] reserves beyond a message).
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// An input buffer with more capacity than this, three quarters unused
/// once the messages in it are taken, is reallocated to fit: a large
/// message must not keep its buffer after it is decoded.
const SHRINK_ABOVE: usize = 64 * 1024;

/// The buffered bytes of one link.
pub(super) struct Buffered {
    /// Bytes of each running call (those of at least [`TRACK_MIN`]).
    held: HashMap<u64, usize>,
    /// Their sum.
    calls: usize,
    limit: usize,
    charge: Charge,
    /// What was last published in the link's stats.
    published: usize,
    /// The size of the input buffer's allocation. A `BytesMut` from which
    /// a message was taken reports as its capacity only what follows the
    /// message, but holds the whole allocation until it is replaced.
    alloc: usize,
}

impl Buffered {
    pub(super) fn new(config: &LinkConfig, link_id: u64) -> Self {
        Buffered {
            held: HashMap::new(),
            calls: 0,
            limit: config.max_buffered,
            charge: Charge::new(config.budget.clone(), link_id),
            published: 0,
            alloc: READ_CHUNK,
        }
    }

    /// A call of `bytes` went on running.
    pub(super) fn started(&mut self, call_id: u64, bytes: usize) {
        if bytes >= TRACK_MIN {
            self.calls += bytes;
            if let Some(old) = self.held.insert(call_id, bytes) {
                self.calls -= old;
            }
        }
    }

    /// A running call finished (or was cancelled).
    pub(super) fn finished(&mut self, call_id: u64) {
        if let Some(bytes) = self.held.remove(&call_id) {
            self.calls -= bytes;
        }
    }

    /// Every running call was cancelled.
    pub(super) fn cancelled_all(&mut self) {
        self.held.clear();
        self.calls = 0;
    }

    /// A message was taken whole from the input buffer: a link that was
    /// finishing it on the shared budget's allowance is done.
    pub(super) fn message_done(&mut self) {
        self.charge.message_done();
    }

    /// Makes room in `inbuf` for the next read: for the whole message
    /// being received if its length (`pending`) is known, at once and
    /// exactly (plus `chunk` for what follows it), rather than doubling the
    /// buffer as the message arrives (which copies it over and over, and
    /// leaves up to half the buffer unused); otherwise `chunk` more.
    pub(super) fn make_room(&mut self, inbuf: &mut BytesMut, pending: Option<usize>, chunk: usize) {
        let want = match pending {
            Some(total) if total > inbuf.len() => total + chunk,
            _ => 0,
        };
        if want > inbuf.capacity() {
            let mut fresh = BytesMut::with_capacity(want);
            fresh.extend_from_slice(inbuf);
            *inbuf = fresh;
            self.alloc = inbuf.capacity();
        } else if inbuf.capacity() - inbuf.len() < chunk / 4 {
            inbuf.reserve(chunk);
            // A new allocation, if it made one; the same one otherwise.
            self.alloc = self.alloc.max(inbuf.capacity());
        }
    }

    /// Gives back the allocation a large message left in `inbuf` once it
    /// was decoded (see [`SHRINK_ABOVE`]).
    pub(super) fn shrink(&mut self, inbuf: &mut BytesMut, min_capacity: usize) {
        if self.alloc > SHRINK_ABOVE && inbuf.len() <= self.alloc / 4 {
            let mut fresh = BytesMut::with_capacity(min_capacity.max(inbuf.len() * 2));
            fresh.extend_from_slice(inbuf);
            *inbuf = fresh;
            self.alloc = inbuf.capacity();
        }
    }

    /// Gives back the input buffer's allocation if it holds nothing: the
    /// driver calls this when its link has been idle a while (see
    /// `driver::idle`), so an idle link holds no read buffer (the next read
    /// allocates one again, in [`Buffered::make_room`]).
    pub(super) fn release_idle(&mut self, inbuf: &mut BytesMut) {
        if inbuf.is_empty() && inbuf.capacity() > 0 {
            *inbuf = BytesMut::new();
            self.alloc = 0;
        }
    }

    /// Charges what the link holds now (`inbuf`, and its calls; `running`
    /// is how many calls run, to forget any not seen finishing) and says
    /// whether it may read, judging by what it will hold once it has
    /// reserved room for the message being received (`pending`, its
    /// length, if known). A link paused on the shared budget is woken when
    /// others release memory.
    pub(super) fn may_read(
        &mut self,
        inbuf: &BytesMut,
        pending: Option<usize>,
        running: usize,
        stats: &LinkStats,
        cx: &Context<'_>,
    ) -> bool {
        if running == 0 && self.calls > 0 {
            self.cancelled_all();
        }
        // The buffer's capacity: room reserved for a message being
        // received is held (allocators reuse memory, so it is resident).
        self.alloc = self.alloc.max(inbuf.capacity());
        let held = self.alloc + self.calls;
        self.charge.set(held, self.calls);
        if held != self.published {
            stats.buffered.store(held as u64, Ordering::Relaxed);
            self.published = held;
        }
        let reserved = pending.map_or(0, |total| total + READ_CHUNK);
        if pending.is_some() && inbuf.capacity() >= reserved {
            // Room for the whole message is reserved, and charged:
            // receiving the rest of it costs nothing more.
            return true;
        }
        let view = LinkView {
            held: held.max(reserved + self.calls),
            calls: self.calls,
            partial: !inbuf.is_empty(),
            link_limit: self.limit,
        };
        self.charge.may_read(view, cx.waker())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_buffer_is_given_back_once_its_message_is_taken() {
        let mut b = Buffered::new(&LinkConfig::default(), 1);
        let mut buf = BytesMut::new();
        b.make_room(&mut buf, Some(4 << 20), 16 * 1024);
        assert_eq!(b.alloc, (4 << 20) + 16 * 1024);
        buf.extend_from_slice(&vec![1u8; 4 << 20]);
        buf.extend_from_slice(&[7u8; 100]);
        // A buffer still mostly full is kept.
        b.shrink(&mut buf, 16 * 1024);
        assert_eq!(b.alloc, (4 << 20) + 16 * 1024);
        // The message is taken: the buffer reports only what follows it
        // as its capacity, but still holds the allocation, until shrunk.
        let _message = buf.split_to(4 << 20);
        drop(_message);
        assert!(buf.capacity() < 64 * 1024);
        b.shrink(&mut buf, 16 * 1024);
        assert!(b.alloc < 64 * 1024, "{}", b.alloc);
        assert_eq!(&buf[..], &[7u8; 100][..]);
    }

    #[test]
    fn an_empty_buffer_is_given_back_when_idle() {
        let mut b = Buffered::new(&LinkConfig::default(), 1);
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // A partial message is kept.
        buf.extend_from_slice(&[1u8; 10]);
        b.release_idle(&mut buf);
        assert_eq!((buf.len(), b.alloc), (10, READ_CHUNK));
        buf.clear();
        b.release_idle(&mut buf);
        assert_eq!((buf.capacity(), b.alloc), (0, 0));
        // The next read gets a whole chunk again.
        b.make_room(&mut buf, None, READ_CHUNK);
        assert!(buf.capacity() >= READ_CHUNK);
        assert_eq!(b.alloc, buf.capacity());
    }

    #[test]
    fn room_is_made_for_a_whole_message_at_once() {
        let mut b = Buffered::new(&LinkConfig::default(), 1);
        let mut buf = BytesMut::with_capacity(1024);
        buf.extend_from_slice(&[1u8; 100]);
        b.make_room(&mut buf, Some(5_000_000), 16 * 1024);
        assert_eq!(buf.capacity(), 5_000_000 + 16 * 1024);
        assert_eq!(&buf[..], &[1u8; 100][..]);
        // Known and already room: unchanged.
        b.make_room(&mut buf, Some(5_000_000), 16 * 1024);
        assert_eq!(buf.capacity(), 5_000_000 + 16 * 1024);
        // Unknown: a chunk more when nearly full.
        let mut small = BytesMut::with_capacity(1024);
        small.extend_from_slice(&[0u8; 1020]);
        b.make_room(&mut small, None, 16 * 1024);
        assert!(small.capacity() >= 1020 + 16 * 1024);
    }

    #[test]
    fn small_calls_are_not_tracked_and_running_none_forgets_all() {
        let config = LinkConfig::default();
        let mut b = Buffered::new(&config, 1);
        b.started(1, 100);
        b.started(2, 5000);
        b.started(3, 7000);
        assert_eq!(b.calls, 12000);
        b.finished(2);
        assert_eq!(b.calls, 7000);
        let stats = LinkStats::default();
        let waker = futures_util::task::noop_waker();
        let cx = Context::from_waker(&waker);
        assert!(b.may_read(&BytesMut::new(), None, 0, &stats, &cx));
        assert_eq!(b.calls, 0, "no call runs: none is held");
    }

    #[test]
    fn a_link_over_its_limit_with_calls_running_pauses() {
        let config = LinkConfig {
            max_buffered: 10_000,
            ..LinkConfig::default()
        };
        let mut b = Buffered::new(&config, 1);
        let stats = LinkStats::default();
        let waker = futures_util::task::noop_waker();
        let cx = Context::from_waker(&waker);
        b.started(1, 12_000);
        assert!(!b.may_read(&BytesMut::new(), None, 1, &stats, &cx));
        // The calls, and the input buffer's allocation.
        let base = READ_CHUNK as u64;
        assert_eq!(stats.buffered.load(Ordering::Relaxed), 12_000 + base);
        b.finished(1);
        assert!(b.may_read(&BytesMut::new(), None, 0, &stats, &cx));
        assert_eq!(stats.buffered.load(Ordering::Relaxed), base);
    }
}
