//! The serde model of `router.toml`: every section and key, its default, and nothing else.
//! Unknown keys are rejected so a typo never silently falls back to a default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

mod store;

pub use store::{DynamoDbSection, FileStoreSection, StoreKind, StoreSection};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterFile {
    pub listen: ListenSection,
    pub routing: RoutingSection,
    pub store: StoreSection,
    pub upstream: UpstreamSection,
    pub health: HealthSection,
    pub log: LogSection,
    pub access: AccessSection,
    pub activity: ActivitySection,
    pub wake: WakeSection,
}

/// Activity write-back (contract section 1.7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivitySection {
    /// At most one `lastActivityAt` write per session per router this often.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Writes waiting at most; past it a write is dropped and counted, never waited for.
    pub queue: usize,
}

impl Default for ActivitySection {
    fn default() -> Self {
        ActivitySection {
            interval: Duration::from_secs(60),
            queue: 1024,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WakeKind {
    #[default]
    None,
    Sqs,
    Http,
}

/// Waking stopped containers on a visit (contract section 1.7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WakeSection {
    pub kind: WakeKind,
    /// `sqs`: the queue's URL; a `.fifo` queue gets the session id as message group.
    pub queue_url: Option<String>,
    /// `http`: where the wake is POSTed.
    pub url: Option<String>,
    /// `http`: HMAC key of the signature header; from `SESSION_ROUTER__WAKE__SECRET`.
    pub secret: Option<String>,
    /// One wake per session this often, across the fleet.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Longest a wake's send (SQS or HTTP) may take.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// While someone waits for a session, how often its route is re-read from the store.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
    /// How long one wait of the waking page is held open before the page asks again.
    #[serde(with = "humantime_serde")]
    pub wait_timeout: Duration,
}

impl Default for WakeSection {
    fn default() -> Self {
        WakeSection {
            kind: WakeKind::None,
            queue_url: None,
            url: None,
            secret: None,
            cooldown: Duration::from_secs(30),
            timeout: Duration::from_secs(5),
            watch_interval: Duration::from_millis(250),
            wait_timeout: Duration::from_secs(25),
        }
    }
}

/// Private previews (contract section 1.6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessSection {
    /// Share level of a session whose item does not say: `private` or `public`.
    pub default: String,
    /// The `aud` claim a preview-link token must carry.
    pub audience: String,
    /// A JWKS file of the editing app's Ed25519 public keys.
    pub jwks_path: Option<PathBuf>,
    /// The same JWKS inline (an environment variable fed from a secret store); not with
    /// `jwks_path`.
    pub jwks: Option<String>,
    /// How long a grant cookie lasts.
    #[serde(with = "humantime_serde")]
    pub grant_ttl: Duration,
    /// Prefix of grant cookie names: the grant of thread T is cookie `{grant_cookie}_T`.
    pub grant_cookie: String,
    /// Key that signs grant cookies, shared by every router of the fleet; from the environment
    /// (`SESSION_ROUTER__ACCESS__GRANT_SECRET`), never from a file in the repository.
    pub grant_secret: Option<String>,
}

impl Default for AccessSection {
    fn default() -> Self {
        AccessSection {
            default: "private".to_owned(),
            audience: "session-router".to_owned(),
            jwks_path: None,
            jwks: None,
            grant_ttl: Duration::from_secs(12 * 3600),
            grant_cookie: "sr_grant".to_owned(),
            grant_secret: None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `text` (env_logger's lines) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthSection {
    /// How often containers that served traffic recently are checked (a TCP connect).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Limit of one check.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Failed checks or connects in a row after which a container is answered with a fast 503.
    pub failures_to_unhealthy: u32,
    /// Checks in flight at once.
    pub concurrency: usize,
    /// A container not used for this long is no longer checked.
    #[serde(with = "humantime_serde")]
    pub recent_window: Duration,
}

impl Default for HealthSection {
    fn default() -> Self {
        HealthSection {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            failures_to_unhealthy: 2,
            concurrency: 32,
            recent_window: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenSection {
    /// Address of the proxy listener the balancer sends preview traffic to.
    pub proxy: SocketAddr,
    /// Address of the admin listener: `/metrics`, `/healthz`, `/readyz`.
    pub admin: SocketAddr,
    /// How long a client may take to send a request (and, in Pingora, any read on the socket).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Idle time between requests on a kept-alive client connection; keep it above the
    /// balancer's idle timeout (ALB: 60 s) so the router is never the side that closes first.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// Idle limit of an upgraded (WebSocket) client connection; unset means none, which is what
    /// an HMR socket that is quiet between edits needs.
    #[serde(with = "humantime_serde")]
    pub websocket_idle_timeout: Option<Duration>,
    /// Balancers whose X-Forwarded-* headers are believed (e.g. the ALB's subnets). From any
    /// other peer those headers are replaced, never trusted.
    pub trusted_proxies: Vec<IpNet>,
    /// Proxy plain keep-alive requests on the router's own HTTP/1.1 path, which costs less CPU per
    /// request than Pingora's proxy (BENCHMARKS.md); everything else goes through Pingora's proxy
    /// either way.
    pub fast_path: bool,
    /// Time from a request's first byte (or the connection's start) to the end of its head; not
    /// renewed by each byte, so a client trickling a head is closed at this deadline.
    #[serde(with = "humantime_serde")]
    pub head_timeout: Duration,
    /// Longest request line or header line; longer gets 431 (nginx: 8k).
    pub max_head_line: usize,
    /// Largest request head, lines together; larger gets 431 (nginx: 4 x 8k).
    pub max_head_size: usize,
    /// Client connections open at once; past it new ones get 503 and are closed.
    pub max_connections: usize,
    /// Client connections open at once from one address (a trusted balancer is not counted as
    /// one); past it new ones get 429 and are closed.
    pub max_connections_per_client: usize,
    /// Clients reach this listener through a balancer that ends TLS but sends no
    /// X-Forwarded-Proto (an NLB TLS listener): cookies are then Secure, and grants
    /// `SameSite=None; Partitioned`, as behind any other TLS.
    pub behind_tls: bool,
}

impl Default for ListenSection {
    fn default() -> Self {
        ListenSection {
            proxy: SocketAddr::from(([0, 0, 0, 0], 8080)),
            admin: SocketAddr::from(([0, 0, 0, 0], 9091)),
            read_timeout: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(75),
            websocket_idle_timeout: None,
            trusted_proxies: Vec::new(),
            fast_path: true,
            head_timeout: Duration::from_secs(10),
            max_head_line: 8 * 1024,
            max_head_size: 32 * 1024,
            max_connections: 16_384,
            max_connections_per_client: 256,
            behind_tls: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    /// Hosts served in path mode, e.g. `edit.{client}.example.com`.
    pub path_hosts: Vec<String>,
    /// Hosts served in host mode, e.g. `{thread}.edit.{client}.example.com`.
    pub host_patterns: Vec<String>,
    /// How a session's store key is made from the host's client and the thread.
    pub session_key: String,
    /// Port of the container's dev server when the store names none.
    pub container_port: u16,
    /// Name of the path-mode affinity cookie.
    pub affinity_cookie: String,
    /// Forward the public Host header (true) or the container's address (false).
    pub preserve_host: bool,
}

impl Default for RoutingSection {
    fn default() -> Self {
        RoutingSection {
            path_hosts: vec!["edit.{client}.localhost".to_owned()],
            host_patterns: Vec::new(),
            session_key: "{client}-{thread}".to_owned(),
            container_port: 4321,
            affinity_cookie: "sr_session".to_owned(),
            preserve_host: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSection {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the dev server's next bytes on a plain request (not on WebSockets).
    #[serde(with = "humantime_serde")]
    pub read_timeout: Duration,
    /// How long a pooled upstream connection may sit idle; below Node's 5 s keep-alive so the
    /// router never reuses a socket the dev server is closing.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Ranges the store may point at; anything else is refused before connecting. Addresses are
    /// compared in canonical form, so an IPv4-mapped one (`::ffff:10.0.0.5`) must be inside an
    /// IPv4 entry; an entry written mapped (`::ffff:10.0.0.0/104`) means that IPv4 range.
    pub allowed_cidrs: Vec<String>,
    /// Response header in which a container may state its id. When a response carries it and
    /// it names another container, the address was reused: the response is refused with 502.
    pub identity_header: Option<String>,
    /// Interim (1xx) answers passed on before the final one; past this, or past `read_timeout`
    /// from the request, the container gets a 502 instead of holding the request open.
    pub max_interim_responses: u32,
}

impl Default for UpstreamSection {
    fn default() -> Self {
        UpstreamSection {
            connect_timeout: Duration::from_secs(2),
            read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(4),
            // No IPv6 range: ULA space also holds cloud services (AWS's fd00:ec2::254 metadata),
            // so a deployment whose containers use IPv6 names its own prefix.
            allowed_cidrs: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"]
                .map(String::from)
                .to_vec(),
            identity_header: None,
            max_interim_responses: 8,
        }
    }
}
