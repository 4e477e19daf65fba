//! The DynamoDB backend: the platform's sessions and containers tables, loaded whole by a
//! parallel, projected, consistent Scan and read item by item with consistent GetItem on a table
//! miss.

mod decode;
mod streams;
mod writes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use futures_util::future::try_join_all;
use tokio::sync::OnceCell;

use super::{
    ChangeFeed, ContainerRecord, RouteStore, SessionRecord, Stamp, StoreError, StoreSnapshot,
    TableMap,
};
use crate::config::DynamoDbSection;
use crate::metrics::Metrics;
use decode::{DecodeError, Item};

pub use decode::{
    ACCESS, ACCESS_GENERATION, CLIENT_ID, CONTAINER_ID, CONTAINER_IP, CONTAINER_PORT, EXPIRES_AT,
    STATUS, TTL,
};

/// Calls that fail on throttling, timeouts or 5xx are retried by the SDK's standard strategy:
/// exponential backoff with full jitter, starting here.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
const MAX_ATTEMPTS: u32 = 3;

pub struct DynamoDbStore {
    settings: Arc<DynamoDbSection>,
    /// Built on first use, inside Pingora's runtime: loading the AWS config may start threads,
    /// which must not happen before a daemonizing fork.
    client: OnceCell<Client>,
}

fn unavailable(e: impl std::error::Error) -> StoreError {
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

/// The AWS settings every client of this store is built from: the DynamoDB one and the Streams
/// one share region, endpoint, timeouts and retries. The config's `endpoint_url` applies to
/// both; the SDK's per-service variables (`AWS_ENDPOINT_URL_DYNAMODB`,
/// `AWS_ENDPOINT_URL_DYNAMODB_STREAMS`) still choose a service's endpoint, and do so alone when
/// it is unset, which is how one local server serves both.
async fn sdk_config(settings: &DynamoDbSection) -> aws_config::SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(1))
        .operation_attempt_timeout(settings.request_timeout)
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF);
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(retry)
        .timeout_config(timeouts);
    if let Some(region) = &settings.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &settings.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

async fn build_client(settings: &DynamoDbSection) -> Client {
    Client::new(&sdk_config(settings).await)
}

impl DynamoDbStore {
    pub fn new(settings: DynamoDbSection) -> Self {
        DynamoDbStore {
            settings: Arc::new(settings),
            client: OnceCell::new(),
        }
    }

    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| build_client(&self.settings))
            .await
    }

    async fn get(
        &self,
        table: &str,
        key_attr: &str,
        key: &str,
    ) -> Result<Option<Item>, StoreError> {
        let out = self
            .client()
            .await
            .get_item()
            .table_name(table)
            .key(key_attr, AttributeValue::S(key.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }
}

/// One full load of both tables.
struct FullLoad<'a> {
    client: &'a Client,
    settings: &'a DynamoDbSection,
}

impl FullLoad<'_> {
    async fn run(self) -> Result<StoreSnapshot, StoreError> {
        let s = &self.settings;
        let session_key = s.session_key_attribute.as_str();
        let container_key = s.container_key_attribute.as_str();
        let session_attrs = [
            session_key,
            CONTAINER_ID,
            CLIENT_ID,
            EXPIRES_AT,
            TTL,
            ACCESS,
            ACCESS_GENERATION,
        ];
        let container_attrs = [container_key, CONTAINER_IP, CONTAINER_PORT, STATUS];
        let sessions = self.scan(&s.sessions_table, &session_attrs, |item| {
            decode::session(item, session_key)
        });
        let containers = self.scan(&s.containers_table, &container_attrs, |item| {
            decode::container(item, container_key)
        });
        let ((sessions, bad_sessions), (containers, bad_containers)) =
            tokio::try_join!(sessions, containers)?;
        Ok(StoreSnapshot {
            sessions,
            containers,
            skipped: bad_sessions + bad_containers,
        })
    }

    /// Scans one table with `scan_segments` parallel segments, decoding page by page.
    async fn scan<T>(
        &self,
        table: &str,
        attributes: &[&str],
        decode: impl Fn(&Item) -> Result<(String, T), DecodeError> + Sync,
    ) -> Result<(TableMap<T>, usize), StoreError> {
        let segments = self.settings.scan_segments.max(1) as i32;
        let (projection, names) = projection(attributes);
        let segment_scans = (0..segments).map(|segment| {
            let mut pages = self
                .client
                .scan()
                .table_name(table)
                // Strongly consistent: the load must see every change made before it started,
                // since the streams were positioned after some of those changes' records.
                .consistent_read(true)
                .segment(segment)
                .total_segments(segments)
                .projection_expression(&projection)
                .set_expression_attribute_names(Some(names.clone()))
                .into_paginator()
                .send();
            let decode = &decode;
            async move {
                let mut records = Vec::new();
                let mut skipped = 0;
                while let Some(page) = pages.next().await {
                    for item in page.map_err(unavailable)?.items.unwrap_or_default() {
                        match decode(&item) {
                            Ok(record) => records.push(record),
                            Err(e) => {
                                skipped += 1;
                                log::warn!("skipping {table} {e}");
                            }
                        }
                    }
                }
                Ok::<_, StoreError>((records, skipped))
            }
        });
        let segments = try_join_all(segment_scans).await?;
        // Sized once: growing a large map rehashes it in one stretch that cannot yield.
        let count = segments.iter().map(|(records, _)| records.len()).sum();
        let mut all = TableMap::with_capacity_and_hasher(count, Default::default());
        let mut skipped = 0;
        for (records, bad) in segments {
            skipped += bad;
            all.extend(records.into_iter().map(|(k, v)| (k.into_boxed_str(), v)));
        }
        Ok((all, skipped))
    }
}

/// A projection over placeholders, since `status` and `ttl` are DynamoDB reserved words.
fn projection(attributes: &[&str]) -> (String, HashMap<String, String>) {
    let names: HashMap<String, String> = attributes
        .iter()
        .enumerate()
        .map(|(i, a)| (format!("#a{i}"), (*a).to_owned()))
        .collect();
    let expr = (0..attributes.len())
        .map(|i| format!("#a{i}"))
        .collect::<Vec<_>>()
        .join(", ");
    (expr, names)
}

#[async_trait]
impl RouteStore for DynamoDbStore {
    async fn load_all(&self) -> Result<Option<Arc<StoreSnapshot>>, StoreError> {
        let load = FullLoad {
            client: self.client().await,
            settings: &self.settings,
        };
        Ok(Some(Arc::new(load.run().await?)))
    }

    async fn get_session(&self, key: &str) -> Result<Option<SessionRecord>, StoreError> {
        let attr = &self.settings.session_key_attribute;
        let item = self.get(&self.settings.sessions_table, attr, key).await?;
        decode_one(item, |i| decode::session(i, attr))
    }

    async fn get_container(&self, id: &str) -> Result<Option<ContainerRecord>, StoreError> {
        let attr = &self.settings.container_key_attribute;
        let item = self.get(&self.settings.containers_table, attr, id).await?;
        decode_one(item, |i| decode::container(i, attr))
    }

    /// Follows both tables' streams when `streams` is on; the follower builds its own clients
    /// inside the task, so nothing starts before the caller's runtime runs it.
    async fn follow(&self, metrics: Arc<Metrics>) -> Option<ChangeFeed> {
        self.settings
            .streams
            .then(|| streams::spawn(self.settings.clone(), metrics))
    }

    async fn stamp(
        &self,
        key: &str,
        stamp: Stamp,
        value: u64,
        below: u64,
    ) -> Result<bool, StoreError> {
        writes::stamp(
            self.client().await,
            &self.settings,
            key,
            stamp,
            value,
            below,
        )
        .await
    }
}

/// A single item that does not decode is treated as absent, and logged, like in a full load.
fn decode_one<T>(
    item: Option<Item>,
    decode: impl Fn(&Item) -> Result<(String, T), DecodeError>,
) -> Result<Option<T>, StoreError> {
    Ok(item.and_then(|i| match decode(&i) {
        Ok((_, record)) => Some(record),
        Err(e) => {
            log::warn!("ignoring {e}");
            None
        }
    }))
}
