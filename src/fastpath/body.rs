//! How much of what a container sends belongs to one response body, by the body's framing, so
//! the connection is clean for the next request when the body ends.

use super::chunked::{ChunkedEnd, Malformed};
use super::response::Framing;

/// How much of what has arrived belongs to the body, by its framing.
pub struct Body {
    framing: Framing,
    left: u64,
    chunked: ChunkedEnd,
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
            chunked: ChunkedEnd::default(),
            done,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    pub fn take(&mut self, available: &[u8]) -> Result<usize, Malformed> {
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
                take
            }
            Framing::Chunked => {
                let take = self.chunked.feed(available)?;
                self.done = self.chunked.is_done();
                take
            }
            Framing::UntilClose => available.len(),
        };
        Ok(take)
    }
}
