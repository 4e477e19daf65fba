//! The `[store]` section of `router.toml`: where routes come from (a file or DynamoDB), how often
//! they are reloaded, and how hard misses may hit the store.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    File,
    Dynamodb,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub kind: StoreKind,
    /// How often the whole table is reloaded from the store.
    #[serde(with = "humantime_serde")]
    pub refresh_interval: Duration,
    /// How long "no such session" is remembered before the store is asked again.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// With a change feed (DynamoDB streams), how often both tables are still read in full, to
    /// correct anything the streams missed.
    #[serde(with = "humantime_serde")]
    pub reconcile_interval: Duration,
    /// Age of the last good table past which `/readyz` fails.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
    /// Store reads per second, and at once, for sessions missing from memory that one client
    /// address (IPv6: its /64) may cause; past it, `rate_limited` (429).
    pub miss_rate_per_client: f64,
    pub miss_burst_per_client: u32,
    /// The same for the whole process, whoever asks.
    pub miss_rate_total: f64,
    pub miss_burst_total: u32,
    pub file: FileStoreSection,
    pub dynamodb: DynamoDbSection,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            kind: StoreKind::File,
            refresh_interval: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(600),
            negative_ttl: Duration::from_secs(2),
            max_staleness: Duration::from_secs(120),
            miss_rate_per_client: 5.0,
            miss_burst_per_client: 20,
            miss_rate_total: 100.0,
            miss_burst_total: 200,
            file: FileStoreSection::default(),
            dynamodb: DynamoDbSection::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileStoreSection {
    pub path: PathBuf,
}

impl Default for FileStoreSection {
    fn default() -> Self {
        FileStoreSection {
            path: PathBuf::from("conf/sessions.toml"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DynamoDbSection {
    /// Region; unset uses the default AWS chain.
    pub region: Option<String>,
    /// Endpoint override for a local DynamoDB-compatible server.
    pub endpoint_url: Option<String>,
    pub sessions_table: String,
    pub containers_table: String,
    pub session_key_attribute: String,
    pub container_key_attribute: String,
    /// Parallel Scan segments of a full refresh.
    pub scan_segments: u32,
    /// Limit of one attempt of one call (a GetItem, or one Scan page); failed attempts are
    /// retried with exponential backoff and jitter.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Follow both tables' DynamoDB streams and apply each change as it comes; full Scans then
    /// run only every `reconcile_interval` and after a gap. Without a stream on a table the
    /// router warns and scans every `refresh_interval`.
    pub streams: bool,
    /// Wait between GetRecords calls on a shard that had nothing new. AWS allows five calls a
    /// second per shard across all readers.
    #[serde(with = "humantime_serde")]
    pub stream_poll_interval: Duration,
    /// How often the streams and their shards are looked up again, besides whenever a shard
    /// ends, to find a stream replaced while the router followed the old one.
    #[serde(with = "humantime_serde")]
    pub stream_discover_interval: Duration,
}

impl Default for DynamoDbSection {
    fn default() -> Self {
        DynamoDbSection {
            region: None,
            endpoint_url: None,
            sessions_table: "webordinary-edit-sessions".to_owned(),
            containers_table: "webordinary-containers".to_owned(),
            session_key_attribute: "sessionId".to_owned(),
            container_key_attribute: "containerId".to_owned(),
            scan_segments: 4,
            request_timeout: Duration::from_secs(3),
            streams: true,
            stream_poll_interval: Duration::from_millis(500),
            stream_discover_interval: Duration::from_secs(300),
        }
    }
}
