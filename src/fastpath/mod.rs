//! The router's own HTTP/1.1 path. Pingora's proxy spends more CPU on every request than this
//! routing needs (BENCHMARKS.md), and most of a preview's traffic is plain keep-alive GETs of the dev
//! server's pages and modules, so those are proxied here: parsed in place, routed with the same
//! table, sent over pooled connections, counted and logged as Pingora's are. WebSocket upgrades
//! are too, so that each open HMR socket holds one small buffer instead of Pingora's.
//! Everything else on the connection (other upgrades, bodies, the router's own answers, failures
//! before the container answered) is handed to the Pingora proxy with the bytes already read put
//! back; the connection comes back here for its next request. Every plain-TCP connection of the
//! proxy listener comes through here, on either engine, so each head is read under the same
//! limits (see `connection`).

mod body;
mod chunked;
mod connection;
mod exchange;
mod pool;
mod request;
mod response;
mod tunnel;
mod upgrade;
mod write;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::protocols::l4::stream::Stream as TcpClient;
use pingora::proxy::HttpProxy;
use prometheus::IntCounter;

pub use pool::{PoolSweeper, UpstreamPool};

use crate::access_log::{AccessLog, AccessRecord};
use crate::config::{Routing, Upstream};
use crate::decide::{Asked, Decision};
use crate::downstream::{Admission, DownstreamLimits};
use crate::headers::{self, affinity_cookie, forwarded_prefix, wants_affinity, Forwarded};
use crate::outcome::Outcome;
use crate::pages::WAIT_HEADER;
use crate::proxy::SessionProxy;
use crate::routing::{classify, RequestParts};
use crate::shared::Shared;
use crate::upgrades;
use connection::{Client, Stop};
use exchange::{Ask, Exchange, Exchanged};
use request::{Request, Rewrite};
use upgrade::Upgraded;

/// What to do with the connection after one request.
#[derive(Debug)]
enum Next {
    Again,
    /// Close it, answering a broken limit first.
    Stop(Stop),
    /// Hand the connection, with every byte read so far, to the Pingora proxy.
    Delegate(Handoff),
    /// The container switched protocols: hold the connection as a WebSocket until it ends.
    Upgraded(Box<Upgraded>),
}

/// Why a request went to Pingora's proxy: the `result` label of
/// `session_router_fast_path_requests_total`, beside `served`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handoff {
    /// Not a plain request: an upgrade to anything but a WebSocket, a body, an unsafe method,
    /// HTTP/1.0, or unparseable.
    Declined,
    /// The router answers it itself (unknown session, starting container, bad request, ...).
    NotRouted,
    /// Connecting to the container failed: Pingora retries with a fresh lookup.
    UpstreamFailed,
}

/// The `result` labels, `served` first, then each [`Handoff`] in its declaration order.
const RESULTS: [&str; 4] = ["served", "declined", "not_routed", "upstream_failed"];

impl Handoff {
    fn counter(self) -> usize {
        1 + self as usize
    }
}

/// The proxy service's application: this path first, Pingora's proxy for the rest.
pub struct FastPath {
    proxy: Arc<HttpProxy<SessionProxy>>,
    /// Serve plain requests here (`listen.fast_path`); when false every request goes to
    /// Pingora's proxy, after its head is read under the same limits.
    own_path: bool,
    admission: Arc<Admission>,
    routing: Routing,
    limits: DownstreamLimits,
    shared: Shared,
    exchange: Exchange,
    /// `session_router_fast_path_requests_total` by result, resolved once.
    results: [IntCounter; 4],
}

impl FastPath {
    pub fn new(
        proxy: HttpProxy<SessionProxy>,
        engine: Engine,
        shared: Shared,
        pool: Arc<UpstreamPool>,
    ) -> Self {
        let results = RESULTS.map(|r| shared.metrics.fast_path.with_label_values(&[r]));
        let exchange = Exchange::new(
            engine.upstream,
            engine.routing.cookies.clone(),
            pool,
            shared.draining.clone(),
        );
        FastPath {
            results,
            proxy: Arc::new(proxy),
            own_path: engine.own_path,
            admission: engine.admission,
            routing: engine.routing,
            limits: engine.limits,
            exchange,
            shared,
        }
    }
}

/// How the proxy listener's connections are served.
pub struct Engine<'a> {
    /// Plain requests on the router's own path (`listen.fast_path`).
    pub own_path: bool,
    pub routing: Routing,
    pub upstream: &'a Upstream,
    pub limits: DownstreamLimits,
    pub admission: Arc<Admission>,
}

/// Buffers reused from one request to the next on a connection.
#[derive(Default)]
struct Scratch {
    upstream_head: Vec<u8>,
    exchange: exchange::Buffers,
}

impl FastPath {
    /// Proxies one request this path takes; anything it cannot route is delegated.
    async fn serve_request(
        &self,
        req: &Request<'_, '_>,
        peer: Option<IpAddr>,
        trusted_peer: bool,
        io: &mut TcpClient,
        scratch: &mut Scratch,
    ) -> Next {
        let started = Instant::now();
        let cookie_name = self.routing.affinity_cookie.as_str();
        let cookie_thread = headers::cookie_in(req.all("cookie"), cookie_name);
        let parts = RequestParts {
            host: req.host,
            path: req.path(),
            query: req.query(),
            referer: req
                .header("referer")
                .and_then(|r| std::str::from_utf8(r).ok()),
            cookie_thread,
        };
        let Ok(target) = classify(&self.routing.hosts, &parts) else {
            return Next::Delegate(Handoff::NotRouted);
        };
        let kind = headers::request_kind(
            req.upgrade.is_some(),
            req.method == "GET",
            req.header("sec-fetch-mode"),
            req.header("accept"),
        );
        let forwarded = Forwarded {
            peer,
            trusted_peer,
            tls: self.limits.behind_tls,
            sent_for: req
                .header("x-forwarded-for")
                .and_then(|v| std::str::from_utf8(v).ok()),
            sent_proto: req.header("x-forwarded-proto"),
            sent_host: req.header("x-forwarded-host"),
            host: Some(req.host.as_bytes()),
        };
        let asked = Asked {
            target: &target,
            requester: headers::requester(peer, trusted_peer, req.all("x-forwarded-for")),
            kind,
            safe_method: req.method != "OPTIONS",
            path: req.path(),
            query: req.query(),
            tls: forwarded.client_tls(),
            // Answers, wakes included, are Pingora's to give: this path only forwards.
            may_wake: false,
            waiting: req.header(WAIT_HEADER).is_some(),
        };
        let decision = self
            .shared
            .decide(&asked, |thread| {
                self.routing.cookies.grant_in(req.all("cookie"), thread)
            })
            .await;
        // Pingora's proxy decides again and answers: a refused miss took no token here, so it
        // and the access decision are counted there alone.
        let Decision::Forward {
            upstream,
            key,
            admitted,
            access,
        } = decision
        else {
            return Next::Delegate(Handoff::NotRouted);
        };
        self.shared.metrics.access(access);
        self.shared.health.note_used(upstream.addr);
        let lifecycle = &self.shared.lifecycle;
        lifecycle.activity.touch(&key);

        let set_cookie = wants_affinity(&target, kind, cookie_thread)
            .then(|| affinity_cookie(cookie_name, &target.thread, forwarded.client_tls()));
        let container_host = (!self.routing.preserve_host).then(|| upstream.addr.to_string());
        request::write_upstream_head(
            &mut scratch.upstream_head,
            req,
            &Rewrite {
                target: (target.strip > 0).then(|| target.upstream_target(req.target)),
                host: container_host.as_deref(),
                forwarded,
                prefix: forwarded_prefix(&target),
                cookies: &self.routing.cookies,
            },
        );
        let ask = Ask {
            head: &scratch.upstream_head,
            head_request: req.method == "HEAD",
            kind,
            set_cookie: set_cookie.as_deref(),
            closing: req.close,
            upgrade: req.upgrade.is_some(),
            started,
        };
        let done = self
            .exchange
            .run(&upstream, &ask, io, &mut scratch.exchange)
            .await;
        match done {
            Exchanged::Delegate => Next::Delegate(Handoff::UpstreamFailed),
            Exchanged::Switched(switched) => {
                self.shared.lifecycle.wakes.routed(&key);
                Next::Upgraded(Box::new(Upgraded {
                    switched,
                    session_key: key,
                    admitted,
                    upstream,
                    started,
                    line: upgrade::OwnedLine::of(req),
                }))
            }
            Exchanged::Done {
                outcome,
                status,
                keep_alive,
            } => {
                if req.upgrade.is_some() {
                    let refused = outcome == Outcome::Routed;
                    self.count_upgrade(if refused { "rejected" } else { "failed" });
                }
                if outcome == Outcome::Routed {
                    self.shared.lifecycle.wakes.routed(&key);
                }
                self.log(req, outcome, status, started.elapsed(), upstream.addr);
                if keep_alive {
                    Next::Again
                } else {
                    Next::Stop(Stop::Done)
                }
            }
        }
    }

    /// Holds an upgraded connection open until it ends, then logs it.
    async fn hold_websocket(&self, upgraded: Upgraded, client: &mut Client) {
        let Upgraded {
            switched,
            session_key,
            admitted,
            upstream,
            started,
            line,
        } = upgraded;
        self.count_upgrade("ok");
        let registered = upgrades::Upgraded {
            session_key,
            container_id: upstream.container_id.clone(),
            addr: upstream.addr,
            admitted,
        };
        let idle = self.limits.websocket_idle;
        upgrade::hold(switched, registered, client, &self.shared, idle).await;
        let line = Line {
            method: &line.method,
            host: &line.host,
            path: &line.path,
        };
        self.record(
            &line,
            Outcome::Routed,
            101,
            started.elapsed(),
            upstream.addr,
        );
    }

    /// Counts an upgrade by `result`: `ok`, `rejected` by the container, or `failed`.
    fn count_upgrade(&self, result: &str) {
        self.shared
            .metrics
            .websocket_upgrades
            .with_label_values(&[result])
            .inc();
    }

    fn log(
        &self,
        req: &Request<'_, '_>,
        outcome: Outcome,
        status: u16,
        elapsed: Duration,
        upstream: std::net::SocketAddr,
    ) {
        let line = Line {
            method: req.method,
            host: req.host,
            path: req.path(),
        };
        self.record(&line, outcome, status, elapsed, upstream);
    }

    /// Counts one request served here and writes its access line.
    fn record(
        &self,
        line: &Line<'_>,
        outcome: Outcome,
        status: u16,
        elapsed: Duration,
        upstream: std::net::SocketAddr,
    ) {
        self.results[0].inc();
        self.shared
            .metrics
            .observe_request(outcome, elapsed.as_secs_f64());
        if AccessLog::enabled() {
            self.shared.access_log.record(&AccessRecord {
                outcome,
                status,
                method: line.method,
                host: line.host,
                path: line.path,
                elapsed,
                upstream: Some(upstream),
            });
        }
    }
}

/// What the access log names a request by.
struct Line<'a> {
    method: &'a str,
    host: &'a str,
    path: &'a str,
}
