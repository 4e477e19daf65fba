//! The shards of one followed stream and the order they may be read in. Pure bookkeeping: which
//! shard is due, which must wait for its parent, where a new iterator starts, and up to when
//! every shard has been read.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// Where a shard's next iterator starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// At the newest record: for the shards open when the stream is positioned.
    Latest,
    /// At the oldest record: for shards created after positioning, all of whose records are new.
    TrimHorizon,
    /// After the last record read.
    After(String),
}

/// How far a shard has been read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Position {
    /// Needs an iterator from its `resume` point before it is read.
    Pending,
    Reading(String),
    /// Read to its end.
    Ended,
    /// Closed before the stream was positioned: it holds only records older than that.
    Skipped,
}

/// A shard as DescribeStream lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listed {
    pub id: String,
    pub parent: Option<String>,
    /// The shard has an ending sequence number: nothing is written to it any more.
    pub closed: bool,
}

#[derive(Debug)]
pub(super) struct Shard {
    pub id: String,
    pub parent: Option<String>,
    pub position: Position,
    /// Where a new iterator starts when the current one expires.
    pub resume: Start,
    /// When the shard may be polled next.
    pub due: Instant,
    /// The wait after a throttled or failed call, doubled while they go on.
    pub backoff: Option<Duration>,
    /// Failed calls in a row, throttling aside.
    pub failures: u32,
    /// When the last poll that read the shard up to its newest record started; `None` while
    /// the shard is behind or not read yet.
    pub caught_up: Option<Instant>,
}

impl Shard {
    fn new(listed: Listed, position: Position, resume: Start, now: Instant) -> Shard {
        Shard {
            id: listed.id,
            parent: listed.parent,
            position,
            resume,
            due: now,
            backoff: None,
            failures: 0,
            caught_up: None,
        }
    }

    pub fn done(&self) -> bool {
        matches!(self.position, Position::Ended | Position::Skipped)
    }
}

/// A shard was listed whose parent this follower never saw: it may hold records from before
/// or after the positioning, so neither LATEST nor TRIM_HORIZON is right for it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard {0} appeared without a known parent")]
pub(super) struct UnknownLineage(pub String);

#[derive(Debug, Default)]
pub(super) struct ShardSet {
    shards: Vec<Shard>,
}

impl ShardSet {
    /// The shards of a stream being positioned: open ones start at their newest record (the
    /// caller gets their iterators before announcing the positioning), closed ones are skipped.
    pub fn positioned(listed: Vec<Listed>, now: Instant) -> ShardSet {
        let shards = listed
            .into_iter()
            .map(|l| {
                let position = if l.closed {
                    Position::Skipped
                } else {
                    Position::Pending
                };
                Shard::new(l, position, Start::Latest, now)
            })
            .collect();
        ShardSet { shards }
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Shard> {
        self.shards.iter_mut()
    }

    fn get(&self, id: &str) -> Option<&Shard> {
        self.shards.iter().find(|s| s.id == id)
    }

    /// Takes in a later listing: shards born since (children of shards already known) are read
    /// from their oldest record; finished shards no longer listed are forgotten. Returns how
    /// many shards were added.
    pub fn merge(&mut self, listed: Vec<Listed>, now: Instant) -> Result<usize, UnknownLineage> {
        let ids: HashSet<String> = listed.iter().map(|l| l.id.clone()).collect();
        let mut fresh: Vec<Listed> = listed
            .into_iter()
            .filter(|l| self.get(&l.id).is_none())
            .collect();
        let mut added = 0;
        // Parents first: a child listed with its new parent is added once the parent is.
        while let Some(i) = fresh
            .iter()
            .position(|l| l.parent.as_deref().is_some_and(|p| self.get(p).is_some()))
        {
            let l = fresh.swap_remove(i);
            self.shards
                .push(Shard::new(l, Position::Pending, Start::TrimHorizon, now));
            added += 1;
        }
        if let Some(open) = fresh.iter().find(|l| !l.closed) {
            return Err(UnknownLineage(open.id.clone()));
        }
        for l in fresh {
            self.shards
                .push(Shard::new(l, Position::Skipped, Start::Latest, now));
        }
        self.shards.retain(|s| !s.done() || ids.contains(&s.id));
        Ok(added)
    }

    /// Whether `shard` may be read: its parent, if still known, has been read to its end, so
    /// every key's records come in stream order.
    fn readable(&self, shard: &Shard) -> bool {
        let parent = shard.parent.as_deref().and_then(|p| self.get(p));
        !shard.done() && parent.is_none_or(Shard::done)
    }

    /// The shards to poll now, by index.
    pub fn due(&self, now: Instant) -> Vec<usize> {
        (0..self.shards.len())
            .filter(|&i| {
                let s = &self.shards[i];
                s.due <= now && self.readable(s)
            })
            .collect()
    }

    /// The shards at `indices`, mutably, in order.
    pub fn pick_mut(&mut self, indices: &[usize]) -> Vec<&mut Shard> {
        self.shards
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| indices.contains(i))
            .map(|(_, s)| s)
            .collect()
    }

    /// When the next readable shard is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.shards
            .iter()
            .filter(|s| self.readable(s))
            .map(|s| s.due)
            .min()
    }

    /// A shard was read to its end and no child of it is known yet: its keys' next records are
    /// in a shard still to be discovered.
    pub fn awaiting_children(&self) -> bool {
        self.shards.iter().any(|s| {
            s.position == Position::Ended
                && !self
                    .shards
                    .iter()
                    .any(|c| c.parent.as_deref() == Some(s.id.as_str()))
        })
    }

    /// The instant up to which every unfinished shard has been read to its newest record;
    /// `None` while any of them is behind or there is none.
    pub fn caught_up(&self) -> Option<Instant> {
        let mut open = self.shards.iter().filter(|s| !s.done()).peekable();
        open.peek()?;
        open.map(|s| s.caught_up).min().flatten()
    }
}

#[cfg(test)]
mod tests;
