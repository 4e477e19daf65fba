//! A store's change feed: single-record changes pushed to the route table as they happen, so that
//! a full load is needed only to start, after a gap, and as a periodic reconcile.

use std::time::Instant;

use tokio::sync::mpsc;

use super::{ContainerRecord, SessionRecord};

/// One record's state after a change: its new value, or `None` once deleted (or no longer
/// decodable, which routes it as if deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Session {
        key: Box<str>,
        record: Option<SessionRecord>,
    },
    Container {
        id: Box<str>,
        record: Option<ContainerRecord>,
    },
}

/// What a feed tells the route table, in the order it learned it. Changes of one key arrive in
/// the order the store made them.
#[derive(Debug)]
pub enum FeedEvent {
    /// Changes read from the streams, in order.
    Changes(Vec<Change>),
    /// Every open shard of every followed stream was read up to its newest record by polls that
    /// all started after `at`: the table held every change made before `at`.
    CaughtUp(Instant),
    /// The feed is positioned at the newest records of every stream, and changes made before
    /// that may have been missed (the first positioning, an expired iterator, a trimmed or lost
    /// shard, a replaced stream): the table must be loaded in full. Changes sent after this
    /// event are newer than the positioning.
    Gap(String),
    /// The feed cannot follow the streams at the moment (none enabled, no permission, the
    /// service failing); it keeps trying and sends [`FeedEvent::Gap`] once it follows again.
    /// Until then the table is kept fresh by full loads.
    Lost(String),
}

/// The receiving end of a running feed. Dropping it stops the feed.
pub struct ChangeFeed {
    pub events: mpsc::Receiver<FeedEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl ChangeFeed {
    /// A feed whose events come from `task`, which is aborted when the feed is dropped.
    pub fn new(events: mpsc::Receiver<FeedEvent>, task: tokio::task::JoinHandle<()>) -> Self {
        ChangeFeed { events, task }
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Events a feed may queue before it waits for the table to take them. An event is one polling
/// round's changes (up to 1,000 records a shard), so a stalled table holds few of them.
pub const FEED_QUEUE: usize = 16;
