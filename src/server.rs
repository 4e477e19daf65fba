//! Wiring: builds the store, table, proxy, admin and refresh services from the configuration and
//! hands them to a Pingora server.

use std::sync::Arc;

use pingora::apps::http_app::HttpServer;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use thiserror::Error;

use ring::rand::{SecureRandom, SystemRandom};

use crate::access::{grant, Gate, Grants};
use crate::access_log::{AccessLog, AccessLogFlusher, DEFAULT_BUFFER_BYTES};
use crate::admin::AdminApp;
use crate::cli::Cli;
use crate::config::{AccessConfig, Config, ConfigError, ConfigSource, StoreKind};
use crate::downstream::{Admission, DownstreamLimits, MemoryRelease};
use crate::drain::{Draining, ShutdownWatcher};
use crate::fastpath::{Engine, FastPath, PoolSweeper, UpstreamPool};
use crate::headers::OwnCookies;
use crate::health::{Health, HealthChecker};
use crate::lifecycle::{Activity, ActivityWriter, Lifecycle, Waker, Wakes, Watch, WatchPoller};
use crate::metrics::Metrics;
use crate::pages::{self, Answer};
use crate::proxy::SessionProxy;
use crate::routing::HostPattern;
use crate::shared::Shared;
use crate::store::{DynamoDbStore, FileStore, RouteStore, ShareLevel};
use crate::table::{Refresher, Resolver, ResolverSettings};
use crate::upgrades::{UpgradeWatcher, Upgrades};
use crate::upstream::AddressPolicy;

/// The Pingora YAML shipped in `conf/`, used when `-c` is not given.
pub const EMBEDDED_PINGORA_YAML: &str = include_str!("../conf/pingora.yaml");

#[derive(Debug, Error)]
pub enum StartError {
    #[error("config: {0}")]
    Config(#[from] ConfigError),
    #[error("pingora config: {0}")]
    Pingora(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("access: {0}")]
    Access(String),
}

/// Loads and validates both configuration files.
pub fn load(cli: &Cli) -> Result<(Config, ServerConf), StartError> {
    let source = match &cli.config {
        Some(path) => ConfigSource::File(path),
        None => ConfigSource::Embedded,
    };
    let config = Config::load(source)?;
    let server_conf = match &cli.server.conf {
        Some(path) => ServerConf::load_from_yaml(path),
        None => ServerConf::from_yaml(EMBEDDED_PINGORA_YAML),
    }
    .map_err(|e| StartError::Pingora(e.to_string()))?;
    Ok((config, server_conf))
}

/// The access gate. Without a configured grant secret each process makes one up: grants then
/// hold only on the router that issued them, which suits one router, not a fleet.
fn build_gate(config: &AccessConfig, cookies: OwnCookies) -> Result<Gate, StartError> {
    let verifier = config
        .verifier()
        .map_err(|e| StartError::Access(e.to_string()))?;
    if verifier.is_none() && config.default == ShareLevel::Private {
        log::warn!(
            "access: no JWKS configured (access.jwks_path): private sessions cannot be opened"
        );
    }
    let secret = match &config.grant_secret {
        Some(secret) => secret.as_bytes().to_vec(),
        None => {
            log::warn!(
                "access: SESSION_ROUTER__ACCESS__GRANT_SECRET is not set: grants are signed with \
                 a key of this process only, and other routers of a fleet refuse them"
            );
            let mut secret = vec![0; grant::MIN_SECRET_BYTES];
            SystemRandom::new()
                .fill(&mut secret)
                .map_err(|_| StartError::Access("no randomness for a grant secret".into()))?;
            secret
        }
    };
    let grants =
        Grants::new(&secret, config.grant_ttl).map_err(|e| StartError::Access(e.to_string()))?;
    Ok(Gate::new(config.default, verifier, grants, cookies))
}

fn build_lifecycle(config: &Config, resolver: &Resolver, metrics: &Arc<Metrics>) -> Arc<Lifecycle> {
    let activity = Activity::new(
        config.activity.interval,
        config.activity.queue,
        metrics.clone(),
    );
    let wakes = Wakes::new(
        Waker::from_config(&config.wake),
        resolver.store().clone(),
        config.wake.cooldown,
        metrics.clone(),
    );
    Arc::new(Lifecycle {
        activity: Arc::new(activity),
        wakes: Arc::new(wakes),
        watch: Arc::new(Watch::default()),
        wait_limit: config.wake.wait_timeout,
    })
}

fn build_store(config: &Config) -> Result<Arc<dyn RouteStore>, StartError> {
    match config.store.kind {
        StoreKind::File => Ok(Arc::new(FileStore::new(config.store.file.path.clone()))),
        StoreKind::Dynamodb => Ok(Arc::new(DynamoDbStore::new(config.store.dynamodb.clone()))),
    }
}

/// Builds the server with every service added, ready for `run_forever`.
pub fn build(cli: Cli, config: Config, server_conf: ServerConf) -> Result<Server, StartError> {
    // The YAML named by -c is already loaded into `server_conf`.
    let mut opt = Opt::from(cli.server);
    opt.conf = None;
    let mut server = Server::new_with_opt_and_conf(opt, server_conf);
    server.bootstrap();

    if !config.routing.session_key.includes_client() {
        log::warn!(
            "routing.session_key does not name {{client}}: a session is routed only when its \
             clientId attribute names the host's client; items without one are refused"
        );
    }
    let metrics = Arc::new(Metrics::new()?);
    let store = build_store(&config)?;
    let settings = ResolverSettings {
        session_key: config.routing.session_key.clone(),
        container_port: config.routing.container_port,
        refresh_interval: config.store.refresh_interval,
        reconcile_interval: config.store.reconcile_interval,
        negative_ttl: config.store.negative_ttl,
        max_staleness: config.store.max_staleness,
        policy: AddressPolicy::new(config.upstream.allowed_cidrs.clone()),
        miss_limits: config.store.miss_limits(),
    };
    let resolver = Arc::new(Resolver::new(store, metrics.clone(), settings));

    let health = Arc::new(Health::new(&config.health, metrics.clone()));
    let checker = background_service(
        "health checks",
        HealthChecker::new(health.clone(), &config.health),
    );
    let gate = Arc::new(build_gate(&config.access, config.routing.cookies.clone())?);
    let upgrades = Arc::new(Upgrades::default());
    let watcher = background_service(
        "upgrade watcher",
        UpgradeWatcher::new(
            upgrades.clone(),
            resolver.clone(),
            gate.clone(),
            metrics.clone(),
        ),
    );
    let draining = Arc::new(Draining::default());
    let access_log = Arc::new(AccessLog::new(config.log.format, DEFAULT_BUFFER_BYTES));
    let flusher = background_service(
        "access log flush",
        AccessLogFlusher::new(access_log.clone()),
    );
    let lifecycle = build_lifecycle(&config, &resolver, &metrics);
    let activity_writer = background_service(
        "activity writer",
        ActivityWriter::new(
            lifecycle.activity.clone(),
            resolver.store().clone(),
            metrics.clone(),
        ),
    );
    let watch_poller = background_service(
        "waiting watch",
        WatchPoller::new(
            lifecycle.watch.clone(),
            resolver.clone(),
            config.wake.watch_interval,
        ),
    );
    let shared = Shared {
        resolver: resolver.clone(),
        gate,
        lifecycle,
        metrics: metrics.clone(),
        health,
        upgrades,
        draining,
        access_log,
    };
    let admission = add_proxy_service(&mut server, &config, shared.clone());
    let shutdown_watcher = background_service(
        "shutdown watcher",
        ShutdownWatcher::new(
            shared.draining.clone(),
            vec![
                admission,
                shared.lifecycle.activity.clone(),
                shared.lifecycle.wakes.clone(),
            ],
            shared.access_log.clone(),
            server.watch_execution_phase(),
        ),
    );

    let admin = HttpServer::new_app(AdminApp::new(shared));
    let mut admin_service = Service::new("admin".to_owned(), admin);
    admin_service.add_tcp(&config.listen.admin.to_string());

    let refresher = background_service("route refresh", Refresher::new(resolver, metrics));

    server.add_service(admin_service);
    server.add_service(refresher);
    server.add_service(watcher);
    server.add_service(checker);
    server.add_service(shutdown_watcher);
    server.add_service(flusher);
    server.add_service(activity_writer);
    server.add_service(watch_poller);
    log::info!(
        "listening: previews on http://{}, admin on http://{} (/metrics, /healthz, /readyz); \
         store: {}",
        config.listen.proxy,
        config.listen.admin,
        describe_store(&config)
    );
    Ok(server)
}

/// The store as the start-up log names it: where the routes come from.
fn describe_store(config: &Config) -> String {
    let store = &config.store;
    match store.kind {
        StoreKind::File => format!("file {}", store.file.path.display()),
        StoreKind::Dynamodb => {
            let d = &store.dynamodb;
            let streams = if d.streams { "on" } else { "off" };
            let endpoint = d.endpoint_url.as_deref().unwrap_or("AWS");
            format!(
                "dynamodb tables {} and {} at {endpoint}, streams {streams}",
                d.sessions_table, d.containers_table
            )
        }
    }
}

/// The proxy listener: every connection's heads read under the downstream limits, then the
/// router's own HTTP/1.1 path in front of Pingora's proxy, or Pingora's proxy alone for each
/// request when `listen.fast_path` is off. Returns the count of client connections.
fn add_proxy_service(server: &mut Server, config: &Config, shared: Shared) -> Arc<Admission> {
    let limits = DownstreamLimits::from(&config.listen);
    let proxy = SessionProxy::new(
        config.routing.clone(),
        &config.upstream,
        limits.clone(),
        shared.clone(),
        wrong_host_answer(config),
    );
    let admission = Arc::new(Admission::new(
        config.listen.max_connections,
        config.listen.max_connections_per_client,
        shared.metrics.client_connections.clone(),
    ));
    server.add_service(background_service(
        "memory release",
        MemoryRelease::new(admission.clone()),
    ));
    let pool = Arc::new(UpstreamPool::new(config.upstream.idle_timeout));
    let engine = Engine {
        own_path: config.listen.fast_path,
        routing: config.routing.clone(),
        upstream: &config.upstream,
        limits,
        admission: admission.clone(),
    };
    let app = FastPath::new(
        pingora::proxy::http_proxy(&server.configuration, proxy),
        engine,
        shared,
        pool.clone(),
    );
    let mut service = Service::new("session proxy".to_owned(), app);
    service.add_listener(proxy_listener(&config.listen.proxy.to_string()));
    server.add_service(service);
    server.add_service(background_service(
        "upstream pool sweep",
        PoolSweeper::new(pool),
    ));
    admission
}

/// The 404 for hosts no pattern serves, naming those that are.
fn wrong_host_answer(config: &Config) -> Answer {
    fn patterns(p: &[HostPattern]) -> Vec<&str> {
        p.iter().map(HostPattern::as_str).collect()
    }
    pages::wrong_host(
        &patterns(&config.routing.hosts.path_hosts),
        &patterns(&config.routing.hosts.host_patterns),
        config.listen.proxy.port(),
    )
}

/// The public listener, plain TCP without a read buffer under the HTTP layer: both engines read
/// into buffers of their own, so Pingora's default 64 KiB per connection would only be a second
/// copy, held for as long as a connection (an idle WebSocket above all) stays open.
fn proxy_listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::default().read(0))
}
