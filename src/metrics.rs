//! Prometheus metrics of the router, in a registry owned by one router instance. Per-request
//! series are resolved to handles up front so the request path never hashes a label set.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    Opts, Registry, TextEncoder,
};

use crate::access::AccessResult;
use crate::outcome::Outcome;
use crate::table::MissScope;

/// Result of one route lookup, as counted by `session_router_route_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupResult {
    Hit,
    Miss,
    NegativeHit,
    Stale,
}

impl LookupResult {
    const ALL: [LookupResult; 4] = [Self::Hit, Self::Miss, Self::NegativeHit, Self::Stale];

    fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::NegativeHit => "negative_hit",
            Self::Stale => "stale",
        }
    }
}

pub struct Metrics {
    registry: Registry,
    requests: Vec<IntCounter>,
    durations: Vec<Histogram>,
    lookups: Vec<IntCounter>,
    store_requests: IntCounterVec,
    store_durations: HistogramVec,
    /// Store reads for sessions missing from memory refused by a miss budget, by scope.
    misses_limited: Vec<IntCounter>,
    pub table_sessions: IntGauge,
    pub table_containers: IntGauge,
    pub last_refresh: Gauge,
    pub table_skipped: IntGauge,
    stream_records: IntCounterVec,
    /// How far behind the streams the table may be: time since every shard was last read to its
    /// end with nothing missed since the last full load.
    pub stream_lag: Gauge,
    pub upstream_retries: IntCounterVec,
    pub websocket_connections: IntGauge,
    pub websocket_upgrades: IntCounterVec,
    pub websocket_replaced: IntCounter,
    pub websocket_shutdown: IntCounter,
    /// Upgraded connections closed because their session's access was revoked.
    pub websocket_revoked: IntCounter,
    /// Access decisions by result.
    access: Vec<IntCounter>,
    activity_writes: IntCounterVec,
    wake_requests: IntCounterVec,
    cold_starts: Histogram,
    pub containers_unhealthy: IntGauge,
    pub health_checks: IntCounterVec,
    /// Requests the router's own HTTP/1.1 path served, or handed to Pingora's proxy and why.
    pub fast_path: IntCounterVec,
    /// Client connections open now.
    pub client_connections: IntGauge,
    /// Client connections closed by a downstream limit, by which.
    pub client_limits: IntCounterVec,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

impl Metrics {
    /// Builds and registers every series. Fails only on a programming error (a duplicate name),
    /// so callers treat it as a start-up failure.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("session_router_requests_total", "Requests by outcome"),
            &["outcome"],
        )?;
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "session_router_request_duration_seconds",
                "Time from request to end of response, by outcome",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )?;
        let lookups = IntCounterVec::new(
            Opts::new(
                "session_router_route_lookups_total",
                "Route lookups by result",
            ),
            &["result"],
        )?;
        let store_requests = IntCounterVec::new(
            Opts::new(
                "session_router_store_requests_total",
                "Calls to the route store",
            ),
            &["op", "result"],
        )?;
        let store_durations = HistogramVec::new(
            HistogramOpts::new(
                "session_router_store_request_duration_seconds",
                "Duration of calls to the route store",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["op"],
        )?;
        let misses_limited = IntCounterVec::new(
            Opts::new(
                "session_router_store_misses_limited_total",
                "Requests answered rate_limited instead of reading the store for a session \
                 missing from memory, by the budget that ran out (scope: client, total)",
            ),
            &["scope"],
        )?;
        let access = IntCounterVec::new(
            Opts::new(
                "session_router_access_total",
                "Access decisions for requests of known sessions (result: public, token, \
                 grant, missing, invalid, expired, revoked)",
            ),
            &["result"],
        )?;
        let activity_writes = IntCounterVec::new(
            Opts::new(
                "session_router_activity_writes_total",
                "Activity stamps by result (written, skipped: the store held a later one, \
                 dropped: the queue was full, failed)",
            ),
            &["result"],
        )?;
        let wake_requests = IntCounterVec::new(
            Opts::new(
                "session_router_wake_requests_total",
                "Visits to a stopped session by what came of the wake (sent, deduplicated: \
                 another router won it, cooldown: this router asked lately, ignored: a bot, \
                 HEAD or asset, failed)",
            ),
            &["result"],
        )?;
        for r in ["written", "skipped", "dropped", "failed"] {
            activity_writes.with_label_values(&[r]);
        }
        for r in ["sent", "deduplicated", "cooldown", "ignored", "failed"] {
            wake_requests.with_label_values(&[r]);
        }
        let stream_records = IntCounterVec::new(
            Opts::new(
                "session_router_stream_records_total",
                "Stream records read, by table (sessions, containers) and result (applied, \
                 skipped: the item did not decode and is routed as deleted, ignored: not a \
                 change of anything routed)",
            ),
            &["table", "result"],
        )?;
        // Every series from the start, so dashboards and alerts find them before a first record
        // (and on a router without streams).
        for table in ["sessions", "containers"] {
            for r in ["applied", "skipped", "ignored"] {
                stream_records.with_label_values(&[table, r]);
            }
        }
        let cold_starts = Histogram::with_opts(
            HistogramOpts::new(
                "session_router_cold_start_seconds",
                "From a wake this router sent to the session's first routed response",
            )
            .buckets(vec![1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0]),
        )?;
        let m = Metrics {
            activity_writes,
            wake_requests,
            cold_starts,
            access: AccessResult::ALL
                .iter()
                .map(|r| access.with_label_values(&[r.label()]))
                .collect(),
            requests: Outcome::ALL
                .iter()
                .map(|o| requests.with_label_values(&[o.label()]))
                .collect(),
            durations: Outcome::ALL
                .iter()
                .map(|o| durations.with_label_values(&[o.label()]))
                .collect(),
            lookups: LookupResult::ALL
                .iter()
                .map(|r| lookups.with_label_values(&[r.label()]))
                .collect(),
            misses_limited: MissScope::ALL
                .iter()
                .map(|s| misses_limited.with_label_values(&[s.label()]))
                .collect(),
            store_requests,
            store_durations,
            table_sessions: IntGauge::new(
                "session_router_route_table_sessions",
                "Sessions in the route table",
            )?,
            table_containers: IntGauge::new(
                "session_router_route_table_containers",
                "Containers in the route table",
            )?,
            last_refresh: Gauge::new(
                "session_router_route_table_last_refresh_timestamp_seconds",
                "Unix time up to which the route table held every change of the store: the start of \
                 the last full load, or of the last stream poll that read every shard to its end",
            )?,
            table_skipped: IntGauge::new(
                "session_router_route_table_skipped_items",
                "Store items left out of the last full load because they did not decode",
            )?,
            stream_records,
            stream_lag: Gauge::new(
                "session_router_stream_lag_seconds",
                "Seconds since the route table last held every change the streams carried",
            )?,
            upstream_retries: IntCounterVec::new(
                Opts::new(
                    "session_router_upstream_retries_total",
                    "Upstream retries by reason",
                ),
                &["reason"],
            )?,
            websocket_connections: IntGauge::new(
                "session_router_websocket_connections",
                "Upgraded connections open now",
            )?,
            websocket_upgrades: IntCounterVec::new(
                Opts::new(
                    "session_router_websocket_upgrades_total",
                    "Upgrade attempts by result",
                ),
                &["result"],
            )?,
            websocket_replaced: IntCounter::new(
                "session_router_websocket_closed_on_replace_total",
                "Upgraded connections closed because their session moved to another container",
            )?,
            websocket_shutdown: IntCounter::new(
                "session_router_websocket_closed_on_shutdown_total",
                "Upgraded connections asked to close (1001 Going Away) because the process shuts down",
            )?,
            websocket_revoked: IntCounter::new(
                "session_router_websocket_closed_on_revoke_total",
                "Upgraded connections closed (1008) because their session's access was revoked",
            )?,
            containers_unhealthy: IntGauge::new(
                "session_router_containers_unhealthy",
                "Containers currently failing their health checks",
            )?,
            health_checks: IntCounterVec::new(
                Opts::new(
                    "session_router_health_checks_total",
                    "Active health checks by result",
                ),
                &["result"],
            )?,
            fast_path: IntCounterVec::new(
                Opts::new(
                    "session_router_fast_path_requests_total",
                    "Requests served on the router's own HTTP/1.1 path, or handed to Pingora's \
                     proxy (result: served, declined, not_routed, upstream_failed)",
                ),
                &["result"],
            )?,
            client_connections: IntGauge::new(
                "session_router_client_connections",
                "Client connections open now",
            )?,
            client_limits: IntCounterVec::new(
                Opts::new(
                    "session_router_client_limit_total",
                    "Client connections or requests stopped by a downstream limit (limit: \
                     connections, connections_per_client, head_size, head_line, head_timeout)",
                ),
                &["limit"],
            )?,
            registry,
        };
        m.registry.register(Box::new(requests))?;
        m.registry.register(Box::new(durations))?;
        m.registry.register(Box::new(lookups))?;
        m.registry.register(Box::new(misses_limited))?;
        m.registry.register(Box::new(access))?;
        m.registry.register(Box::new(m.activity_writes.clone()))?;
        m.registry.register(Box::new(m.wake_requests.clone()))?;
        m.registry.register(Box::new(m.cold_starts.clone()))?;
        m.registry.register(Box::new(m.websocket_revoked.clone()))?;
        m.registry.register(Box::new(m.store_requests.clone()))?;
        m.registry.register(Box::new(m.store_durations.clone()))?;
        m.registry.register(Box::new(m.table_sessions.clone()))?;
        m.registry.register(Box::new(m.table_containers.clone()))?;
        m.registry.register(Box::new(m.last_refresh.clone()))?;
        m.registry.register(Box::new(m.table_skipped.clone()))?;
        m.registry.register(Box::new(m.stream_records.clone()))?;
        m.registry.register(Box::new(m.stream_lag.clone()))?;
        m.registry.register(Box::new(m.upstream_retries.clone()))?;
        m.registry
            .register(Box::new(m.websocket_connections.clone()))?;
        m.registry
            .register(Box::new(m.websocket_upgrades.clone()))?;
        m.registry
            .register(Box::new(m.websocket_replaced.clone()))?;
        m.registry
            .register(Box::new(m.websocket_shutdown.clone()))?;
        m.registry
            .register(Box::new(m.containers_unhealthy.clone()))?;
        m.registry.register(Box::new(m.health_checks.clone()))?;
        m.registry.register(Box::new(m.fast_path.clone()))?;
        m.registry
            .register(Box::new(m.client_connections.clone()))?;
        m.registry.register(Box::new(m.client_limits.clone()))?;
        // Resident memory, CPU and open descriptors of this process, for capacity planning.
        #[cfg(target_os = "linux")]
        m.registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(m)
    }

    pub fn observe_request(&self, outcome: Outcome, seconds: f64) {
        // Histogram first: a scrape that sees the counter moved also sees the duration.
        self.durations[outcome.index()].observe(seconds);
        self.requests[outcome.index()].inc();
    }

    pub fn lookup(&self, result: LookupResult) {
        self.lookups[result as usize].inc();
    }

    pub fn access(&self, result: AccessResult) {
        self.access[result as usize].inc();
    }

    pub fn activity_write(&self, result: &str) {
        self.activity_writes.with_label_values(&[result]).inc();
    }

    pub fn wake_request(&self, result: &str) {
        self.wake_requests.with_label_values(&[result]).inc();
    }

    pub fn cold_start(&self, seconds: f64) {
        self.cold_starts.observe(seconds);
    }

    /// `count` stream records of `table` ("sessions" or "containers") with `result`.
    pub fn stream_records(&self, table: &str, result: &str, count: u64) {
        self.stream_records
            .with_label_values(&[table, result])
            .inc_by(count);
    }

    pub fn miss_limited(&self, scope: MissScope) {
        self.misses_limited[scope as usize].inc();
    }

    pub fn store_call(&self, op: &'static str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.store_requests.with_label_values(&[op, result]).inc();
        self.store_durations
            .with_label_values(&[op])
            .observe(seconds);
    }

    /// The text exposition of every series.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(8192);
        // Encoding into a Vec cannot fail on I/O; a failure would only drop the scrape body.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}
