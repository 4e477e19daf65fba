//! Following both tables' DynamoDB Streams and turning their records into a change feed.
//!
//! One task follows both streams. Each table is positioned at its stream's newest records (an
//! iterator for every open shard) before the feed announces [`FeedEvent::Gap`], so the full
//! load the table then does misses nothing. Shards are read in lineage order, a child only
//! after its parent has ended, so each key's changes come in the order they were made. What
//! the feed cannot trust (a trimmed shard, a replaced stream) is a gap: positioned again,
//! announced again. A table it cannot follow at all makes it send [`FeedEvent::Lost`] once,
//! and it keeps looking.

mod api;
mod convert;
mod poll;
mod shards;
mod table;

use std::sync::Arc;
use std::time::{Duration, Instant};

use thiserror::Error;
use tokio::sync::mpsc;

use crate::config::DynamoDbSection;
use crate::metrics::Metrics;
use crate::store::{ChangeFeed, FeedEvent, FEED_QUEUE};
use api::Api;
use convert::TableKind;
use table::{TableFollower, Timing};

/// Longest sleep of the follower, whatever is due: it wakes at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Floors under the configured intervals, so a tiny one cannot make the follower spin.
const MIN_POLL: Duration = Duration::from_millis(10);
const MIN_DISCOVER: Duration = Duration::from_millis(100);

/// Starts the follower; its AWS clients are built inside the task, on the caller's runtime.
pub(super) fn spawn(settings: Arc<DynamoDbSection>, metrics: Arc<Metrics>) -> ChangeFeed {
    let (events, receiver) = mpsc::channel(FEED_QUEUE);
    let task = tokio::spawn(async move {
        let config = super::sdk_config(&settings).await;
        let api = Api {
            dynamodb: aws_sdk_dynamodb::Client::new(&config),
            streams: aws_sdk_dynamodbstreams::Client::new(&config),
            metrics,
        };
        Follower::new(&settings, api, events).run().await;
    });
    ChangeFeed::new(receiver, task)
}

/// `d` give or take a tenth, so that routers started together spread their calls.
fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// The receiver of the feed is gone: nothing is left to follow for.
#[derive(Debug, Error)]
#[error("the change feed was dropped")]
struct Closed;

struct Follower {
    api: Api,
    tables: [TableFollower; 2],
    events: mpsc::Sender<FeedEvent>,
    poll: Duration,
    /// The reason of a positioning not announced yet: sent once every table is followed.
    pending_gap: Option<String>,
    /// A Lost was sent and no Gap since.
    lost_sent: bool,
    /// The last CaughtUp sent: its instant, and when it was sent.
    caught_up: Option<(Instant, Instant)>,
}

impl Follower {
    fn new(settings: &DynamoDbSection, api: Api, events: mpsc::Sender<FeedEvent>) -> Self {
        let timing = Timing {
            poll: settings.stream_poll_interval.max(MIN_POLL),
            discover: settings.stream_discover_interval.max(MIN_DISCOVER),
        };
        let sessions = TableFollower::new(
            TableKind::Sessions,
            &settings.sessions_table,
            &settings.session_key_attribute,
            timing,
        );
        let containers = TableFollower::new(
            TableKind::Containers,
            &settings.containers_table,
            &settings.container_key_attribute,
            timing,
        );
        Follower {
            api,
            tables: [sessions, containers],
            events,
            poll: timing.poll,
            pending_gap: None,
            lost_sent: false,
            caught_up: None,
        }
    }

    async fn run(mut self) {
        while self.step().await.is_ok() {}
        log::debug!("stream follower stopped: {Closed}");
    }

    /// Discovers what is due, announces what changed, then polls the due shards or sleeps
    /// until something is due.
    async fn step(&mut self) -> Result<(), Closed> {
        for table in &mut self.tables {
            table.maintain(&self.api).await;
        }
        self.announce().await?;
        let now = Instant::now();
        let wake = self.tables.iter().map(TableFollower::next_wake).min();
        let wake = wake.unwrap_or(now).min(now + MAX_SLEEP);
        if wake > now {
            tokio::time::sleep_until(wake.into()).await;
            return Ok(());
        }
        self.round().await
    }

    /// One poll of every due shard of both tables, their changes sent as one batch.
    async fn round(&mut self) -> Result<(), Closed> {
        let started = Instant::now();
        let [sessions, containers] = &mut self.tables;
        let (mut changes, more) = tokio::join!(
            sessions.poll(&self.api, started),
            containers.poll(&self.api, started)
        );
        changes.extend(more);
        if !changes.is_empty() {
            self.send(FeedEvent::Changes(changes)).await?;
        }
        self.announce().await?;
        self.report_caught_up().await
    }

    /// Sends Lost once while a table cannot be followed, and the Gap of a positioning once
    /// every table is followed again.
    async fn announce(&mut self) -> Result<(), Closed> {
        for table in &mut self.tables {
            if let Some(reason) = table.take_positioned() {
                self.pending_gap.get_or_insert(reason);
            }
        }
        if let Some(reason) = self.tables.iter().find_map(TableFollower::lost) {
            if self.lost_sent {
                return Ok(());
            }
            self.lost_sent = true;
            let event = FeedEvent::Lost(reason.to_owned());
            return self.send(event).await;
        }
        if !self.tables.iter().all(TableFollower::following) {
            return Ok(());
        }
        match self.pending_gap.take() {
            Some(reason) => {
                self.lost_sent = false;
                self.send(FeedEvent::Gap(reason)).await
            }
            None => Ok(()),
        }
    }

    /// Sends CaughtUp when every shard of both tables has been read to its newest record
    /// since the last one, at most about once a poll interval.
    async fn report_caught_up(&mut self) -> Result<(), Closed> {
        if self.pending_gap.is_some() || self.lost_sent {
            return Ok(());
        }
        let Some(at) = self.all_caught_up() else {
            return Ok(());
        };
        let now = Instant::now();
        let due = self.caught_up.is_none_or(|(last, sent)| {
            at > last && now.saturating_duration_since(sent) >= self.poll
        });
        if !due {
            return Ok(());
        }
        self.caught_up = Some((at, now));
        self.send(FeedEvent::CaughtUp(at)).await
    }

    fn all_caught_up(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        for table in &self.tables {
            let table_at = table.caught_up()?;
            at = Some(at.map_or(table_at, |a| a.min(table_at)));
        }
        at
    }

    async fn send(&self, event: FeedEvent) -> Result<(), Closed> {
        self.events.send(event).await.map_err(|_| Closed)
    }
}
