//! One followed table: finding its stream and shards, positioning on them, and the states
//! between following and lost. Reading the shards is in `poll`.

use std::time::{Duration, Instant};

use thiserror::Error;

use super::api::{Api, CallError, Listing};
use super::convert::TableKind;
use super::jitter;
use super::shards::{Listed, Position, ShardSet, Start};

/// Failed calls in a row after which the table counts as lost rather than briefly failing.
pub(super) const MAX_FAILURES: u32 = 3;

/// First wait before a failed discovery is tried again; it doubles from there.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Longest wait between discoveries of a table that cannot be followed.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Wait before looking again for the child of a shard read to its end: the service lists it a
/// moment after the parent closes, and the parent's keys go on in it.
const CHILD_WAIT: Duration = Duration::from_secs(1);

/// The first positioning's reason, sent in the first Gap.
const FIRST_GAP: &str = "following the streams from now";

/// How often the follower polls idle shards and looks for new streams and shards.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub poll: Duration,
    pub discover: Duration,
}

/// Why a table's stream cannot be followed as it is: retrying soon will not help.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(super) enum Unusable {
    #[error("table {0} has no stream enabled")]
    NoStream(String),
    #[error("stream view type must include new images")]
    View,
    #[error("table {table}: access denied: {detail}")]
    Denied { table: String, detail: String },
    #[error("table {table}: {detail}")]
    Failing { table: String, detail: String },
}

#[derive(Debug, Error)]
enum Problem {
    #[error(transparent)]
    Unusable(#[from] Unusable),
    /// A call failed; [`MAX_FAILURES`] in a row make the table lost.
    #[error("{0}")]
    Failed(String),
    /// The account's lookups are over their limit: look again later.
    #[error("{0}")]
    Throttled(String),
}

/// The stream being followed and how far each of its shards is read.
pub(super) struct Followed {
    pub arn: String,
    pub shards: ShardSet,
}

pub(super) struct TableFollower {
    pub kind: TableKind,
    pub name: String,
    pub key_attr: String,
    pub timing: Timing,
    /// `None` until positioned, and again after a gap or while lost.
    pub stream: Option<Followed>,
    /// The reason the next positioning gives, for the Gap the feed then sends.
    gap: String,
    /// The reason of a positioning the feed has not announced yet.
    positioned: Option<String>,
    /// Why the table cannot be followed, once that is settled (not after one failure).
    lost: Option<String>,
    failures: u32,
    pub next_discover: Instant,
    retry: Duration,
}

impl TableFollower {
    pub fn new(kind: TableKind, name: &str, key_attr: &str, timing: Timing) -> Self {
        TableFollower {
            kind,
            name: name.to_owned(),
            key_attr: key_attr.to_owned(),
            timing,
            stream: None,
            gap: FIRST_GAP.to_owned(),
            positioned: None,
            lost: None,
            failures: 0,
            next_discover: Instant::now(),
            retry: FIRST_RETRY,
        }
    }

    pub fn following(&self) -> bool {
        self.stream.is_some()
    }

    pub fn lost(&self) -> Option<&str> {
        self.lost.as_deref()
    }

    pub fn take_positioned(&mut self) -> Option<String> {
        self.positioned.take()
    }

    /// When this table next needs the follower: a shard due or a discovery.
    pub fn next_wake(&self) -> Instant {
        let due = self.stream.as_ref().and_then(|f| f.shards.next_due());
        due.map_or(self.next_discover, |d| d.min(self.next_discover))
    }

    /// Up to when every change of this table has been read, while it is followed and no shard
    /// waits for a child not yet discovered.
    pub fn caught_up(&self) -> Option<Instant> {
        let f = self.stream.as_ref()?;
        if f.shards.awaiting_children() {
            return None;
        }
        f.shards.caught_up()
    }

    /// Looks the stream and its shards up again when that is due, positioning on the stream
    /// if it is new (or after a gap), and settles what a failure means.
    pub async fn maintain(&mut self, api: &Api) {
        let now = Instant::now();
        if now < self.next_discover {
            return;
        }
        match self.discover(api, now).await {
            Ok(()) => {
                self.failures = 0;
                self.retry = FIRST_RETRY;
                let awaiting = self
                    .stream
                    .as_ref()
                    .is_some_and(|f| f.shards.awaiting_children());
                // Spread over the fleet: every router sees the shard end at about the same time,
                // and DescribeStream has one small limit per account.
                let wait = if awaiting {
                    CHILD_WAIT.mul_f64(0.5 + fastrand::f64())
                } else {
                    jitter(self.timing.discover)
                };
                self.next_discover = now + wait;
            }
            Err(Problem::Unusable(why)) => self.lose(why),
            Err(Problem::Throttled(detail)) => {
                log::info!("stream of table {}: {detail}", self.name);
                self.schedule_retry();
            }
            Err(Problem::Failed(detail)) => {
                log::info!("stream of table {}: {detail}", self.name);
                // A failed look while the shards are still being read costs nothing but a later
                // look: only a stream that cannot be found at all is lost.
                if self.stream.is_none() {
                    self.failures += 1;
                }
                if self.failures >= MAX_FAILURES {
                    self.lose(Unusable::Failing {
                        table: self.name.clone(),
                        detail,
                    });
                } else {
                    self.schedule_retry();
                }
            }
        }
    }

    async fn discover(&mut self, api: &Api, now: Instant) -> Result<(), Problem> {
        let table = api
            .describe_table(&self.name)
            .await
            .map_err(|e| self.problem(e))?;
        let arn = table
            .arn
            .ok_or_else(|| Unusable::NoStream(self.name.clone()))?;
        if !table.new_images {
            return Err(Unusable::View.into());
        }
        let listing = api
            .describe_stream(&arn)
            .await
            .map_err(|e| self.problem(e))?;
        let listed = match listing {
            Listing::Enabled(listed) => listed,
            Listing::Enabling => {
                return Err(Problem::Failed("the stream is still being enabled".into()))
            }
            Listing::Disabled => return Err(Unusable::NoStream(self.name.clone()).into()),
        };
        let Some(followed) = self.stream.as_mut() else {
            return self.position(api, arn, listed, now).await;
        };
        if followed.arn != arn {
            self.gap = "stream replaced".to_owned();
            return self.position(api, arn, listed, now).await;
        }
        if let Err(e) = followed.shards.merge(listed.clone(), now) {
            self.gap = format!("table {}: {e}", self.name);
            return self.position(api, arn, listed, now).await;
        }
        Ok(())
    }

    /// Starts following `arn` at its newest records: an iterator for every open shard, got
    /// before the feed announces the positioning, so the full load that follows misses nothing.
    async fn position(
        &mut self,
        api: &Api,
        arn: String,
        listed: Vec<Listed>,
        now: Instant,
    ) -> Result<(), Problem> {
        self.stream = None;
        let mut shards = ShardSet::positioned(listed, now);
        for shard in shards.iter_mut() {
            if shard.position == Position::Pending {
                let iterator = api.iterator(&arn, &shard.id, &Start::Latest).await;
                shard.position = Position::Reading(iterator.map_err(|e| self.problem(e))?);
            }
        }
        log::info!("following the stream of table {}: {arn}", self.name);
        self.stream = Some(Followed { arn, shards });
        self.positioned = Some(std::mem::replace(&mut self.gap, FIRST_GAP.to_owned()));
        self.lost = None;
        Ok(())
    }

    fn problem(&self, e: CallError) -> Problem {
        match e {
            CallError::Throttled(_) => Problem::Throttled(e.to_string()),
            CallError::Denied(detail) => Unusable::Denied {
                table: self.name.clone(),
                detail,
            }
            .into(),
            other => Problem::Failed(other.to_string()),
        }
    }

    /// The table's position is no longer good: positioned again at once, then announced.
    pub fn gap(&mut self, reason: String) {
        log::warn!("stream of table {}: {reason}: positioning again", self.name);
        self.stream = None;
        self.positioned = None;
        self.gap = reason;
        self.next_discover = Instant::now();
    }

    /// The table cannot be followed: its position is dropped, the feed says so once, and the
    /// stream is looked for again with a growing wait.
    pub fn lose(&mut self, why: Unusable) {
        if self.lost.is_none() {
            match why {
                Unusable::View => log::error!("table {}: {why}", self.name),
                _ => log::warn!("{why}: scanning every refresh_interval"),
            }
        }
        if self.stream.take().is_some() {
            self.gap = "following the streams again".to_owned();
        }
        self.positioned = None;
        self.lost = Some(why.to_string());
        self.schedule_retry();
    }

    fn schedule_retry(&mut self) {
        self.next_discover = Instant::now() + jitter(self.retry);
        let cap = self.timing.discover.clamp(FIRST_RETRY, MAX_RETRY);
        self.retry = (self.retry * 2).min(cap);
    }
}
