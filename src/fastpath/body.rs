//! How much of what a container sends belongs to one response body, by the body's framing, and
//! the form the client gets it in: as it came when its length is known, re-chunked when chunked,
//! so the connection is clean for the next request when the body ends.

use super::chunked::{Malformed, Rechunker};
use super::response::Framing;

/// Follows one response body.
pub struct Body {
    framing: Framing,
    left: u64,
    chunked: Rechunker,
    done: bool,
}

impl Body {
    pub fn new(framing: Framing) -> Self {
        let (left, done) = match framing {
            Framing::Length(n) => (n, n == 0),
            Framing::Empty => (0, true),
            Framing::Chunked | Framing::UntilClose => (0, false),
        };
        Body {
            framing,
            left,
            chunked: Rechunker::default(),
            done,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Appends the client's form of what `available` holds of the body to `out`; returns how
    /// many bytes of `available` were used.
    pub fn take(&mut self, available: &[u8], out: &mut Vec<u8>) -> Result<usize, Malformed> {
        if self.done {
            return Ok(0);
        }
        let take = match self.framing {
            Framing::Empty => 0,
            Framing::Length(_) => {
                let take = available
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                self.left -= take as u64;
                self.done = self.left == 0;
                out.extend_from_slice(&available[..take]);
                take
            }
            Framing::Chunked => {
                let take = self.chunked.feed(available, out)?;
                self.done = self.chunked.is_done();
                take
            }
            Framing::UntilClose => {
                out.extend_from_slice(available);
                available.len()
            }
        };
        Ok(take)
    }
}
