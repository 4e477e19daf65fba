//! The router's configuration: the TOML file model, environment overrides, and validation into
//! the typed [`Config`] the rest of the crate reads.

mod access;
mod lifecycle;
mod model;
mod session_key;

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use ipnet::IpNet;
use thiserror::Error;

pub use access::AccessConfig;
pub use model::{
    AccessSection, ActivitySection, DynamoDbSection, FileStoreSection, HealthSection,
    ListenSection, LogFormat, LogSection, RouterFile, RoutingSection, StoreKind, StoreSection,
    UpstreamSection, WakeKind, WakeSection,
};
pub use session_key::SessionKeyTemplate;

use crate::headers::OwnCookies;
use crate::routing::{HostPattern, PatternError, PreviewHosts};
use crate::table::{MissBudget, MissLimits};

/// The router TOML shipped in `conf/`, compiled in so the binary runs with no arguments.
pub const EMBEDDED_ROUTER_TOML: &str = include_str!("../../conf/router.toml");

/// Prefix of environment overrides: `SESSION_ROUTER__STORE__KIND=dynamodb`.
pub const ENV_PREFIX: &str = "SESSION_ROUTER__";

/// Keys whose environment values are taken as they are. figment reads the others as TOML-like
/// values: it trims them, unquotes `"…"`, and turns `true`, numbers, `[…]` and `{k=v}` into
/// booleans, numbers, arrays and tables, which would change a secret or refuse it at start-up.
const VERBATIM_ENV_KEYS: [&str; 3] = ["access.jwks", "access.grant_secret", "wake.secret"];

#[derive(Debug, Error)]
pub enum ConfigError {
    /// Parse, unknown-key and type errors; figment's message names the key and the source.
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl ConfigError {
    fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// Where the router TOML comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource<'a> {
    File(&'a Path),
    Embedded,
}

/// The validated configuration. Everything here has been checked; consumers do not re-validate.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: ListenSection,
    pub routing: Routing,
    pub store: StoreSection,
    pub upstream: Upstream,
    pub health: HealthSection,
    pub log: LogSection,
    pub access: AccessConfig,
    pub activity: ActivitySection,
    pub wake: WakeSection,
}

/// Routing settings with the host patterns compiled.
#[derive(Debug, Clone)]
pub struct Routing {
    pub hosts: PreviewHosts,
    pub session_key: SessionKeyTemplate,
    pub container_port: u16,
    pub affinity_cookie: String,
    /// The affinity cookie and the grant cookies: stripped from requests, refused from
    /// containers.
    pub cookies: OwnCookies,
    pub preserve_host: bool,
}

/// Upstream settings with the allowlist parsed.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub allowed_cidrs: Vec<IpNet>,
    pub identity_header: Option<http::HeaderName>,
    pub max_interim_responses: u32,
}

impl Config {
    /// Reads the TOML, applies `SESSION_ROUTER__*` overrides from the process environment, and
    /// validates the result.
    pub fn load(source: ConfigSource<'_>) -> Result<Config, ConfigError> {
        Self::load_with_env(source, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_with_env(source: ConfigSource<'_>, env: Env) -> Result<Config, ConfigError> {
        let figment = match source {
            ConfigSource::File(path) => Figment::from(Toml::file_exact(path)),
            ConfigSource::Embedded => Figment::from(Toml::string(EMBEDDED_ROUTER_TOML)),
        };
        let mut figment = figment.merge(env.clone().ignore(&VERBATIM_ENV_KEYS));
        for (key, value) in env.only(&VERBATIM_ENV_KEYS).iter() {
            figment = figment.merge(Serialized::default(key.as_str(), value));
        }
        let file: RouterFile = figment.extract().map_err(Box::new)?;
        Config::validate(file)
    }

    /// Turns the file model into the typed configuration, naming the key of the first problem.
    pub fn validate(file: RouterFile) -> Result<Config, ConfigError> {
        let access = access::validate_access(file.access)?;
        let mut routing = validate_routing(file.routing)?;
        routing.cookies = OwnCookies::new(&routing.affinity_cookie, &access.grant_cookie);
        let upstream = validate_upstream(file.upstream)?;
        validate_store(&file.store)?;
        validate_listen(&file.listen)?;
        lifecycle::validate_activity(&file.activity)?;
        lifecycle::validate_wake(&file.wake)?;
        if file.health.interval.is_zero() {
            return Err(ConfigError::invalid(
                "health.interval",
                "must be above zero",
            ));
        }
        Ok(Config {
            health: file.health,
            log: file.log,
            listen: file.listen,
            routing,
            store: file.store,
            upstream,
            access,
            activity: file.activity,
            wake: file.wake,
        })
    }
}

impl StoreSection {
    /// The budgets of store reads for sessions missing from memory.
    pub fn miss_limits(&self) -> MissLimits {
        MissLimits {
            per_client: MissBudget {
                per_second: self.miss_rate_per_client,
                burst: self.miss_burst_per_client,
            },
            total: MissBudget {
                per_second: self.miss_rate_total,
                burst: self.miss_burst_total,
            },
        }
    }
}

fn compile_patterns(
    key: &'static str,
    patterns: &[String],
    needs_thread: bool,
) -> Result<Vec<HostPattern>, ConfigError> {
    patterns
        .iter()
        .map(|p| HostPattern::parse(p, needs_thread))
        .collect::<Result<_, PatternError>>()
        .map_err(|e| ConfigError::invalid(key, e.to_string()))
}

/// Cookie names the router sets: plain tokens, so no browser reads them differently.
fn check_cookie_name(key: &'static str, name: &str) -> Result<(), ConfigError> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
    if name.is_empty() || !name.bytes().all(plain) {
        return Err(ConfigError::invalid(
            key,
            "must be a non-empty name of letters, digits, '_' or '-'",
        ));
    }
    Ok(())
}

fn validate_routing(section: RoutingSection) -> Result<Routing, ConfigError> {
    let path_hosts = compile_patterns("routing.path_hosts", &section.path_hosts, false)?;
    let host_patterns = compile_patterns("routing.host_patterns", &section.host_patterns, true)?;
    if path_hosts.is_empty() && host_patterns.is_empty() {
        return Err(ConfigError::invalid(
            "routing.path_hosts",
            "no host patterns: set path_hosts, host_patterns or both",
        ));
    }
    let session_key = SessionKeyTemplate::parse(&section.session_key)
        .map_err(|reason| ConfigError::invalid("routing.session_key", reason))?;
    if section.container_port == 0 {
        return Err(ConfigError::invalid(
            "routing.container_port",
            "must be 1-65535",
        ));
    }
    check_cookie_name("routing.affinity_cookie", &section.affinity_cookie)?;
    Ok(Routing {
        hosts: PreviewHosts {
            path_hosts,
            host_patterns,
        },
        session_key,
        container_port: section.container_port,
        cookies: OwnCookies::new(&section.affinity_cookie, ""),
        affinity_cookie: section.affinity_cookie,
        preserve_host: section.preserve_host,
    })
}

fn validate_upstream(section: UpstreamSection) -> Result<Upstream, ConfigError> {
    let allowed_cidrs = section
        .allowed_cidrs
        .iter()
        .map(|c| allowed_cidr(c))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|reason| ConfigError::invalid("upstream.allowed_cidrs", reason))?;
    if section.connect_timeout.is_zero() {
        return Err(ConfigError::invalid(
            "upstream.connect_timeout",
            "must be above zero",
        ));
    }
    let identity_header = section
        .identity_header
        .as_deref()
        .map(http::HeaderName::try_from)
        .transpose()
        .map_err(|e| ConfigError::invalid("upstream.identity_header", e.to_string()))?;
    Ok(Upstream {
        identity_header,
        connect_timeout: section.connect_timeout,
        read_timeout: section.read_timeout,
        idle_timeout: section.idle_timeout,
        allowed_cidrs,
        max_interim_responses: section.max_interim_responses,
    })
}

/// One allowlist entry. An entry the policy would never use is an error rather than a silent
/// no-op, so the operator learns that listing, say, 169.254.0.0/16 does not open it. A mapped
/// entry (`::ffff:10.0.0.0/104`) is accepted: the policy reads it as the IPv4 range it names.
fn allowed_cidr(entry: &str) -> Result<IpNet, String> {
    let net = entry
        .parse::<IpNet>()
        .map_err(|e| format!("`{entry}`: {e}"))?;
    match crate::upstream::dead_entry(net) {
        Some(range) => Err(format!(
            "`{entry}` lies in {range}, which is always refused"
        )),
        None => Ok(net),
    }
}

fn validate_listen(l: &ListenSection) -> Result<(), ConfigError> {
    const ABOVE_ZERO: &str = "must be above zero";
    first_failed(&[
        ("listen.head_timeout", !l.head_timeout.is_zero(), ABOVE_ZERO),
        ("listen.max_connections", l.max_connections > 0, ABOVE_ZERO),
        (
            "listen.max_connections_per_client",
            l.max_connections_per_client > 0,
            ABOVE_ZERO,
        ),
        // A head holds at least a request line, a Host line and the blank line.
        (
            "listen.max_head_line",
            l.max_head_line >= 64,
            "must be at least 64 bytes",
        ),
        (
            "listen.max_head_size",
            l.max_head_size >= l.max_head_line,
            "must be at least listen.max_head_line",
        ),
    ])
}

fn validate_store(s: &StoreSection) -> Result<(), ConfigError> {
    first_failed(&[
        (
            "store.refresh_interval",
            !s.refresh_interval.is_zero(),
            "must be above zero",
        ),
        (
            "store.reconcile_interval",
            !s.reconcile_interval.is_zero(),
            "must be above zero",
        ),
        (
            "store.dynamodb.stream_poll_interval",
            !s.dynamodb.stream_poll_interval.is_zero(),
            "must be above zero",
        ),
        (
            "store.dynamodb.stream_discover_interval",
            s.dynamodb.stream_discover_interval >= s.dynamodb.stream_poll_interval,
            "must be at least store.dynamodb.stream_poll_interval",
        ),
        (
            "store.max_staleness",
            s.max_staleness >= s.refresh_interval,
            "must be at least store.refresh_interval",
        ),
        (
            "store.file.path",
            s.kind != StoreKind::File || !s.file.path.as_os_str().is_empty(),
            "must name a file",
        ),
        (
            "store.miss_rate_per_client",
            positive_rate(s.miss_rate_per_client),
            RATE,
        ),
        (
            "store.miss_rate_total",
            positive_rate(s.miss_rate_total),
            RATE,
        ),
        (
            "store.miss_burst_per_client",
            s.miss_burst_per_client > 0,
            "must be above zero",
        ),
        (
            "store.miss_burst_total",
            s.miss_burst_total > 0,
            "must be above zero",
        ),
    ])
}

const RATE: &str = "must be a number above zero";

fn positive_rate(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0
}

/// The first of `checks` (key, holds, reason) that does not hold, as the error naming its key.
fn first_failed(checks: &[(&'static str, bool, &str)]) -> Result<(), ConfigError> {
    match checks.iter().find(|(_, holds, _)| !holds) {
        Some((key, _, reason)) => Err(ConfigError::invalid(key, *reason)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
