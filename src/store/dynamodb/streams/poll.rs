//! Reading one table's shards: one GetRecords on every due shard, concurrently, and what each
//! answer does to the shard (next iterator, next poll, backoff) and to the table (a gap, lost).

use std::time::{Duration, Instant};

use aws_sdk_dynamodbstreams::types::Record;
use futures_util::future::join_all;

use super::api::{Api, CallError, RECORDS_LIMIT};
use super::convert::{self, Mapped};
use super::jitter;
use super::shards::{Position, Shard, Start};
use super::table::{TableFollower, Timing, Unusable, MAX_FAILURES};
use crate::metrics::Metrics;
use crate::store::Change;

/// Next poll of a shard whose answer was cut at a page limit: soon, yet within the five reads a
/// second AWS allows a shard.
const AGAIN_AFTER_RECORDS: Duration = Duration::from_millis(200);

/// Longest wait of a throttled or failing shard.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What reading one shard once came to.
enum Read {
    Records {
        records: Vec<Record>,
        ended: bool,
    },
    /// Nothing to hand on: throttled, failed for now, or a new iterator to get.
    Nothing,
    /// The shard's position is lost: the table must be positioned again.
    Gap(String),
    Denied(String),
    /// Calls on the shard failed [`MAX_FAILURES`] times in a row.
    Failing(String),
}

/// Stream records of one table and round, by result, for the metrics.
#[derive(Default)]
struct Tally {
    applied: u64,
    skipped: u64,
    ignored: u64,
}

impl Tally {
    fn count(&self, metrics: &Metrics, table: &str) {
        for (result, n) in [
            ("applied", self.applied),
            ("skipped", self.skipped),
            ("ignored", self.ignored),
        ] {
            if n > 0 {
                metrics.stream_records(table, result, n);
            }
        }
    }
}

impl TableFollower {
    /// Polls every due shard once; returns the changes read, each shard's in stream order.
    /// `started` is when the round began, before any of its calls.
    pub async fn poll(&mut self, api: &Api, started: Instant) -> Vec<Change> {
        let Some(followed) = self.stream.as_mut() else {
            return Vec::new();
        };
        let due = followed.shards.due(Instant::now());
        if due.is_empty() {
            return Vec::new();
        }
        let (arn, timing) = (&followed.arn, self.timing);
        let reads = followed
            .shards
            .pick_mut(&due)
            .into_iter()
            .map(|shard| read(api, arn, shard, timing, started));
        let outcomes = join_all(reads).await;
        let mut changes = Vec::new();
        let mut tally = Tally::default();
        for outcome in outcomes {
            match outcome {
                Read::Records { records, ended } => {
                    if ended {
                        // Its children hold the keys' next records: find them now.
                        self.next_discover = Instant::now();
                    }
                    if !self.apply(records, &mut changes, &mut tally) {
                        self.lose(Unusable::View);
                    }
                }
                Read::Nothing => {}
                Read::Gap(reason) => self.gap(format!("table {}: {reason}", self.name)),
                Read::Denied(detail) => self.lose(Unusable::Denied {
                    table: self.name.clone(),
                    detail,
                }),
                Read::Failing(detail) => self.lose(Unusable::Failing {
                    table: self.name.clone(),
                    detail,
                }),
            }
        }
        tally.count(&api.metrics, self.kind.label());
        changes
    }

    /// Maps records to changes; `false` if one lacked the new image a change needs.
    fn apply(&self, records: Vec<Record>, changes: &mut Vec<Change>, tally: &mut Tally) -> bool {
        for record in records {
            match convert::map(record, self.kind, &self.key_attr) {
                Mapped::Applied(change) => {
                    tally.applied += 1;
                    changes.push(change);
                }
                Mapped::Skipped { change, reason } => {
                    log::warn!("routing as deleted: {} {reason}", self.name);
                    tally.skipped += 1;
                    changes.push(change);
                }
                Mapped::Ignored => tally.ignored += 1,
                Mapped::NoNewImage => return false,
            }
        }
        true
    }
}

async fn read(api: &Api, arn: &str, shard: &mut Shard, timing: Timing, started: Instant) -> Read {
    if shard.done() {
        return Read::Nothing;
    }
    match fetch(api, arn, shard).await {
        Ok((records, next)) => settle(shard, records, next, timing, started),
        Err(e) => failed(shard, e, timing),
    }
}

/// GetRecords on the shard, getting it an iterator first if it has none.
async fn fetch(
    api: &Api,
    arn: &str,
    shard: &mut Shard,
) -> Result<(Vec<Record>, Option<String>), CallError> {
    if shard.position == Position::Pending {
        // Pending shards resume after a record or at their oldest one: the LATEST iterators
        // of positioning are got before the feed announces it, never here.
        let iterator = api.iterator(arn, &shard.id, &shard.resume).await?;
        shard.position = Position::Reading(iterator);
    }
    match &shard.position {
        Position::Reading(iterator) => api.records(iterator).await,
        _ => Ok((Vec::new(), None)),
    }
}

fn settle(
    shard: &mut Shard,
    records: Vec<Record>,
    next: Option<String>,
    timing: Timing,
    started: Instant,
) -> Read {
    let last = records
        .iter()
        .rev()
        .find_map(|r| r.dynamodb.as_ref()?.sequence_number.clone());
    if let Some(sequence) = last {
        shard.resume = Start::After(sequence);
    }
    let full = is_full_page(&records);
    shard.caught_up = (!full).then_some(started);
    shard.failures = 0;
    shard.backoff = None;
    let wait = if full {
        AGAIN_AFTER_RECORDS
    } else {
        timing.poll
    };
    shard.due = Instant::now() + wait;
    let ended = next.is_none();
    shard.position = next.map_or(Position::Ended, Position::Reading);
    Read::Records { records, ended }
}

/// Bytes of records past which an answer is taken as cut at GetRecords' 1 MB limit.
const FULL_PAGE_BYTES: i64 = 900_000;

/// Whether an answer stopped at one of GetRecords' limits, so more records are waiting: only
/// then is the shard read again soon. Any other answer waits the poll interval, so that a shard
/// with steady small writes (activity stamps) costs a router no more calls than an idle one.
fn is_full_page(records: &[Record]) -> bool {
    let bytes: i64 = records
        .iter()
        .filter_map(|r| r.dynamodb.as_ref()?.size_bytes)
        .sum();
    records.len() >= RECORDS_LIMIT || bytes >= FULL_PAGE_BYTES
}

fn failed(shard: &mut Shard, e: CallError, timing: Timing) -> Read {
    match e {
        // Throttling is the service pacing the readers, not failing: never a reason to stop.
        CallError::Throttled(_) => {
            back_off(shard, timing);
            Read::Nothing
        }
        CallError::Expired(detail) => renew(shard, detail),
        CallError::Gone(detail) => Read::Gap(format!("shard {}: {detail}", shard.id)),
        CallError::Denied(detail) => Read::Denied(detail),
        CallError::Failed(detail) => {
            shard.failures += 1;
            if shard.failures >= MAX_FAILURES {
                return Read::Failing(format!(
                    "reading shard {} keeps failing: {detail}",
                    shard.id
                ));
            }
            back_off(shard, timing);
            Read::Nothing
        }
    }
}

/// An expired iterator is replaced by one after the last record read, which loses nothing; a
/// shard positioned at its newest record with nothing read since has no such point.
fn renew(shard: &mut Shard, detail: String) -> Read {
    shard.failures += 1;
    if shard.resume == Start::Latest {
        return Read::Gap(format!(
            "the iterator of shard {} expired before any record was read",
            shard.id
        ));
    }
    if shard.failures >= MAX_FAILURES {
        return Read::Gap(format!(
            "the iterator of shard {} cannot be renewed: {detail}",
            shard.id
        ));
    }
    shard.position = Position::Pending;
    shard.due = Instant::now();
    Read::Nothing
}

fn back_off(shard: &mut Shard, timing: Timing) {
    let wait = shard
        .backoff
        .map_or(timing.poll, |b| b * 2)
        .min(MAX_BACKOFF);
    shard.backoff = Some(wait);
    shard.due = Instant::now() + jitter(wait);
}
