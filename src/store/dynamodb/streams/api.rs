//! The four calls the follower makes, each timed into the store metrics, with the SDK's errors
//! sorted by what the follower does about them.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use aws_sdk_dynamodb::types::StreamViewType as TableViewType;
use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{Record, ShardIteratorType, StreamStatus};
use thiserror::Error;

use super::shards::{Listed, Start};
use crate::metrics::Metrics;

/// Records asked for per GetRecords: the service's maximum.
pub(super) const RECORDS_LIMIT: usize = 1000;

/// DescribeStream pages followed at most, so a service that keeps answering with more pages
/// cannot hold the follower: 100 shards a page.
const MAX_SHARD_PAGES: usize = 100;

/// A failed call, by what it means for the follower.
#[derive(Debug, Clone, Error)]
pub(super) enum CallError {
    /// The shard iterator is too old: a new one after the last record read loses nothing.
    #[error("expired iterator: {0}")]
    Expired(String),
    /// The records asked for are gone (trimmed) or the shard or stream no longer exists.
    #[error("{0}")]
    Gone(String),
    /// Too many calls on the shard or the account: back off and retry.
    #[error("throttled: {0}")]
    Throttled(String),
    /// Not allowed: retrying soon will not help.
    #[error("access denied: {0}")]
    Denied(String),
    /// Anything else: timeouts, 5xx, connection failures, after the SDK's own retries.
    #[error("{0}")]
    Failed(String),
}

impl<E, R> From<SdkError<E, R>> for CallError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn from(e: SdkError<E, R>) -> Self {
        let code = e.code().map(str::to_owned);
        let text = DisplayErrorContext(&e).to_string();
        match code.as_deref() {
            Some("ExpiredIteratorException") => CallError::Expired(text),
            Some("TrimmedDataAccessException" | "ResourceNotFoundException") => {
                CallError::Gone(text)
            }
            Some(
                "LimitExceededException"
                | "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "RequestLimitExceeded",
            ) => CallError::Throttled(text),
            Some(
                "AccessDeniedException"
                | "UnrecognizedClientException"
                | "MissingAuthenticationTokenException",
            ) => CallError::Denied(text),
            _ => CallError::Failed(text),
        }
    }
}

/// A table's stream as DescribeTable tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct TableStream {
    /// The stream now written to, when one is enabled.
    pub arn: Option<String>,
    /// Whether its records carry new images (`NEW_IMAGE` or `NEW_AND_OLD_IMAGES`).
    pub new_images: bool,
}

/// The shards of a stream, when it is enabled.
#[derive(Debug)]
pub(super) enum Listing {
    Enabled(Vec<Listed>),
    /// Still being enabled: its shards are not readable yet.
    Enabling,
    Disabled,
}

/// The two clients, built from one AWS config, and the metrics every call is counted in.
pub(super) struct Api {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub metrics: Arc<Metrics>,
}

impl Api {
    async fn timed<T, E: Into<CallError>>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, CallError> {
        let started = Instant::now();
        let result = call.await.map_err(Into::into);
        let seconds = started.elapsed().as_secs_f64();
        self.metrics.store_call(op, result.is_ok(), seconds);
        result
    }

    pub async fn describe_table(&self, table: &str) -> Result<TableStream, CallError> {
        let call = self.dynamodb.describe_table().table_name(table).send();
        let out = self.timed("describe_table", call).await?;
        let Some(table) = out.table else {
            return Err(CallError::Failed(format!(
                "no description of table {table}"
            )));
        };
        let spec = table.stream_specification.filter(|s| s.stream_enabled);
        let new_images = spec.as_ref().is_some_and(|s| {
            matches!(
                s.stream_view_type,
                Some(TableViewType::NewImage | TableViewType::NewAndOldImages)
            )
        });
        Ok(TableStream {
            arn: spec.and(table.latest_stream_arn),
            new_images,
        })
    }

    /// Every shard of the stream, following DescribeStream's pages.
    pub async fn describe_stream(&self, arn: &str) -> Result<Listing, CallError> {
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_SHARD_PAGES {
            let call = self
                .streams
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(after.take())
                .send();
            let out = self.timed("describe_stream", call).await?;
            let Some(description) = out.stream_description else {
                return Err(CallError::Failed(format!("no description of stream {arn}")));
            };
            match description.stream_status {
                Some(StreamStatus::Enabled) => {}
                Some(StreamStatus::Enabling) => return Ok(Listing::Enabling),
                _ => return Ok(Listing::Disabled),
            }
            shards.extend(
                description
                    .shards
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(listed),
            );
            after = description.last_evaluated_shard_id;
            if after.is_none() {
                break;
            }
        }
        Ok(Listing::Enabled(shards))
    }

    pub async fn iterator(
        &self,
        arn: &str,
        shard: &str,
        start: &Start,
    ) -> Result<String, CallError> {
        let (kind, after) = match start {
            Start::Latest => (ShardIteratorType::Latest, None),
            Start::TrimHorizon => (ShardIteratorType::TrimHorizon, None),
            Start::After(seq) => (ShardIteratorType::AfterSequenceNumber, Some(seq.clone())),
        };
        let call = self
            .streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard)
            .shard_iterator_type(kind)
            .set_sequence_number(after)
            .send();
        let out = self.timed("get_shard_iterator", call).await?;
        out.shard_iterator
            .ok_or_else(|| CallError::Failed(format!("no iterator returned for shard {shard}")))
    }

    /// The next records of a shard and the iterator after them; `None` once the shard is
    /// closed and read to its end.
    pub async fn records(
        &self,
        iterator: &str,
    ) -> Result<(Vec<Record>, Option<String>), CallError> {
        let call = self
            .streams
            .get_records()
            .shard_iterator(iterator)
            .limit(RECORDS_LIMIT as i32)
            .send();
        let out = self.timed("get_records", call).await?;
        Ok((out.records.unwrap_or_default(), out.next_shard_iterator))
    }
}

fn listed(shard: aws_sdk_dynamodbstreams::types::Shard) -> Option<Listed> {
    Some(Listed {
        id: shard.shard_id?,
        parent: shard.parent_shard_id,
        closed: shard
            .sequence_number_range
            .is_some_and(|r| r.ending_sequence_number.is_some()),
    })
}
