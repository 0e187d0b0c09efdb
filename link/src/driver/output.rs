//! Writing the core's output to the connection: partial writes, dropping
//! what was written, flushing, and noticing a peer that stopped reading.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use tokio::time::Instant;

use crate::model::Error;

/// How far the core's output buffer has been written.
#[derive(Debug, Default)]
pub(super) struct Output {
    /// Bytes at the start of the buffer already written.
    written: usize,
    /// Written since the last flush.
    need_flush: bool,
    /// Since when a write has been refused (the peer is not reading).
    stall_since: Option<Instant>,
}

impl Output {
    /// Bytes of `out` still to write.
    pub(super) fn pending(&self, out: &[u8]) -> usize {
        out.len() - self.written
    }

    /// Whether all of `out` is written and flushed.
    pub(super) fn is_done(&self, out: &[u8]) -> bool {
        self.pending(out) == 0 && !self.need_flush
    }

    /// Since when the peer has refused writes, if it does.
    pub(super) fn stalled_since(&self) -> Option<Instant> {
        self.stall_since
    }

    /// Writes what it can of `out` (the core's output buffer) to `io`,
    /// dropping what is written from the buffer now and then. Returns
    /// whether any byte was written.
    pub(super) fn write<IO: AsyncWrite + Unpin>(
        &mut self,
        io: &mut IO,
        out: &mut Vec<u8>,
        cx: &mut Context<'_>,
        now: Instant,
    ) -> Result<bool, Error> {
        let mut progress = false;
        loop {
            if self.written >= out.len() {
                break;
            }
            match Pin::new(&mut *io).poll_write(cx, &out[self.written..]) {
                Poll::Ready(Ok(0)) => {
                    return Err(Error::Transport(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into(),
                    ))
                }
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.need_flush = true;
                    self.stall_since = None;
                    progress = true;
                }
                Poll::Ready(Err(e)) => return Err(Error::Transport(e.into())),
                Poll::Pending => {
                    if self.stall_since.is_none() {
                        self.stall_since = Some(now);
                    }
                    break;
                }
            }
        }
        if self.written > 0 && self.written == out.len() {
            out.clear();
            self.written = 0;
        } else if self.written > 64 * 1024 && self.written * 2 > out.len() {
            out.drain(..self.written);
            self.written = 0;
        }
        if self.need_flush {
            match Pin::new(&mut *io).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.need_flush = false,
                Poll::Ready(Err(e)) => return Err(Error::Transport(e.into())),
                Poll::Pending => {}
            }
        }
        Ok(progress)
    }
}
