//! The Pingora proxy: each hook of [`ProxyHttp`] for a preview request, from routing it to a
//! session's container to recording how it ended.

mod ctx;
mod headers;
mod lifecycle;
mod respond;
mod response;
mod route;

use std::net::IpAddr;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HOST, SET_COOKIE};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorSource, ErrorType, Result};

use crate::config::{Routing, Upstream};
use crate::decide::reject_outcome;
use crate::downstream::DownstreamLimits;
use crate::outcome::Outcome;
use crate::pages::{self, Answer, RequestKind};
use crate::routing::Reject;
use crate::shared::Shared;
use crate::upstream::PeerFactory;

use crate::headers::{affinity_cookie, forwarded_prefix, wants_affinity, Forwarded};
use headers::{
    classify_request, cookie_value, drop_unnamed_upgrade, forwarded_from, request_kind,
    set_forwarding_headers, strip_own_cookies,
};
use lifecycle::retry_reason;
use respond::write_answer;
use response::ResponseRules;

pub use ctx::RequestCtx;

pub struct SessionProxy {
    routing: Routing,
    /// Response header in which containers state their id, when configured.
    identity_header: Option<http::HeaderName>,
    /// What a container's response head may not do: see [`ResponseRules::check`].
    response_rules: ResponseRules,
    peers: PeerFactory,
    limits: DownstreamLimits,
    shared: Shared,
    /// The answer to a host no pattern serves: [`pages::wrong_host`].
    wrong_host: Answer,
}

impl SessionProxy {
    pub fn new(
        routing: Routing,
        upstream: &Upstream,
        limits: DownstreamLimits,
        shared: Shared,
        wrong_host: Answer,
    ) -> Self {
        SessionProxy {
            wrong_host,
            identity_header: upstream.identity_header.clone(),
            response_rules: ResponseRules {
                max_interim: upstream.max_interim_responses,
                read_timeout: upstream.read_timeout,
                own_cookies: routing.cookies.clone(),
            },
            peers: PeerFactory::new(upstream),
            routing,
            limits,
            shared,
        }
    }

    /// Ends the request with the router's own answer.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        outcome: Outcome,
        answer: Answer,
    ) -> Result<bool> {
        ctx.outcome = Some(outcome);
        write_answer(session, answer).await?;
        Ok(true)
    }

    /// Where the request came from, for the forwarding headers and the cookie's Secure flag.
    fn forwarded<'s>(&self, session: &'s Session) -> Forwarded<'s> {
        let (peer, trusted) = self.peer(session);
        let tls =
            self.limits.behind_tls || session.digest().is_some_and(|d| d.ssl_digest.is_some());
        forwarded_from(session.req_header(), peer, trusted, tls)
    }

    /// The address that connected, and whether it is a balancer whose X-Forwarded-* is believed.
    fn peer(&self, session: &Session) -> (Option<IpAddr>, bool) {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        (peer, peer.is_some_and(|ip| self.limits.trusts(ip)))
    }

    /// Keeps the client connection alive for its next request, except once this process is
    /// draining (SIGTERM, or SIGQUIT during an upgrade handover): then the answer carries
    /// `Connection: close`, so the client sends its next request on a new connection (to the
    /// new process, or another instance behind the balancer) rather than on one that this
    /// process is about to close under it.
    ///
    /// Never turns keep-alive back on once Pingora turned it off (Connection: close, HTTP/1.0,
    /// or both Content-Length and Transfer-Encoding, after which RFC 9112 section 6.1 says close).
    fn apply_keepalive(&self, session: &mut Session) {
        if self.shared.draining.is_set() || session.is_process_shutting_down() {
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.limits.keepalive.as_secs().max(1)));
        }
    }
}

#[async_trait]
impl ProxyHttp for SessionProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        self.apply_keepalive(session);
        drop_unnamed_upgrade(session.req_header_mut());
        let upgrade = session.is_upgrade_req();
        ctx.kind = request_kind(session.req_header(), upgrade);
        let target = match classify_request(&self.routing, session.req_header()) {
            Ok(t) => t,
            Err(reject) => {
                let outcome = reject_outcome(&reject);
                let answer = match reject {
                    Reject::AddSlash(location) => pages::redirect(location),
                    // Only someone on this machine is told which hosts are served: a scanner
                    // calling the balancer's address learns nothing of the deployment.
                    Reject::NotPreviewHost
                        if ctx.kind != RequestKind::Upgrade
                            && self.peer(session).0.is_some_and(|ip| ip.is_loopback()) =>
                    {
                        self.wrong_host.clone()
                    }
                    _ => pages::answer(outcome, ctx.kind),
                };
                return self.answer(session, ctx, outcome, answer).await;
            }
        };
        if self.route(session, ctx, &target).await? {
            return Ok(true);
        }
        let read_timeout = if upgrade {
            self.limits.websocket_idle
        } else {
            Some(self.limits.read_timeout)
        };
        session.set_read_timeout(read_timeout);
        let cookie = cookie_value(&session.req_header().headers, &self.routing.affinity_cookie);
        ctx.set_affinity = wants_affinity(&target, ctx.kind, cookie);
        ctx.target = Some(target);
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if ctx.retry_pending {
            ctx.retry_pending = false;
            self.reresolve(ctx).await?;
        }
        let upstream = ctx.upstream.as_ref().ok_or_else(|| {
            Error::explain(
                ErrorType::InternalError,
                "upstream_peer without a resolved route",
            )
        })?;
        if !session.is_upgrade_req() {
            return Ok(Box::new(self.peers.peer(upstream)));
        }
        let (peer, connector) = self.peers.upgrade_peer(upstream);
        ctx.upgrade_connector = Some(connector);
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(target) = ctx.target.as_ref() else {
            return Ok(());
        };
        if target.strip > 0 {
            let original = req.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let uri = http::Uri::try_from(target.upstream_target(original)).map_err(|e| {
                Error::because(ErrorType::InvalidHTTPHeader, "stripped request path", e)
            })?;
            req.set_uri(uri);
        }
        strip_own_cookies(req, &self.routing.cookies);
        set_forwarding_headers(req, &self.forwarded(session), forwarded_prefix(target))?;
        if !self.routing.preserve_host {
            if let Some(up) = &ctx.upstream {
                req.insert_header(HOST, up.addr.to_string())?;
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.response_rules
            .check(resp, session.is_upgrade_req(), ctx)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // Interim answers carry none of the router's additions; the final one follows.
        if resp.status.is_informational() && resp.status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Ok(());
        }
        // Shutdown may have begun while this request was with the container.
        self.apply_keepalive(session);
        self.check_identity(resp, ctx)?;
        if session.is_upgrade_req() {
            let switched = resp.status == http::StatusCode::SWITCHING_PROTOCOLS;
            let result = if switched { "ok" } else { "rejected" };
            self.shared
                .metrics
                .websocket_upgrades
                .with_label_values(&[result])
                .inc();
            if switched {
                ctx.upgraded = true;
                self.shared.metrics.websocket_connections.inc();
                self.register_upgrade(ctx);
            }
        }
        if ctx.set_affinity {
            if let Some(target) = &ctx.target {
                let secure = self.forwarded(session).client_tls();
                let cookie = affinity_cookie(&self.routing.affinity_cookie, &target.thread, secure);
                resp.append_header(SET_COOKIE, cookie)?;
            }
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.websocket_activity(ctx);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        self.websocket_activity(ctx);
        Ok(None)
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.outcome = Some(Outcome::UpstreamUnreachable);
        if let Some(upstream) = &ctx.upstream {
            self.shared.health.report(upstream.addr, false);
        }
        if !ctx.retried {
            ctx.retried = true;
            ctx.retry_pending = true;
            self.shared
                .metrics
                .upstream_retries
                .with_label_values(&[retry_reason(e.etype())])
                .inc();
            e.set_retry(true);
        }
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let outcome = match e.esource() {
            // The router chose the answer itself (the re-read found the container not ready).
            _ if matches!(e.etype(), ErrorType::HTTPStatus(_)) && ctx.outcome.is_some() => {
                ctx.outcome.unwrap_or(Outcome::UpstreamUnreachable)
            }
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => {
                    Outcome::ClientClosed
                }
                _ => Outcome::BadRequest,
            },
            _ => Outcome::UpstreamUnreachable,
        };
        ctx.outcome = Some(outcome);
        let mut code = 0;
        // After interim (1xx) answers the client still waits for a final one.
        let answered = session
            .response_written()
            .is_some_and(|r| !r.status.is_informational());
        if outcome != Outcome::ClientClosed && !answered {
            code = outcome.status();
            // The connection is not reused after this (can_reuse_downstream below), so the
            // answer must say so; otherwise a keep-alive client sends its next request into
            // a closing socket and gets a reset.
            session.set_keepalive(None);
            if let Err(write_err) = write_answer(session, pages::answer(outcome, ctx.kind)).await {
                log::debug!("could not write error answer: {write_err}");
            }
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(id) = ctx.upgrade_id.take() {
            self.shared.upgrades.remove(id);
        }
        let outcome = ctx.outcome.unwrap_or(match e {
            Some(err) if err.esource() == &ErrorSource::Upstream => Outcome::UpstreamUnreachable,
            Some(_) => Outcome::ClientClosed,
            None => Outcome::Routed,
        });
        let elapsed = ctx.started.elapsed();
        self.shared
            .metrics
            .observe_request(outcome, elapsed.as_secs_f64());
        if let (Outcome::Routed, Some(key)) = (outcome, &ctx.session_key) {
            self.shared.lifecycle.wakes.routed(key);
        }
        if ctx.upgraded {
            self.shared.metrics.websocket_connections.dec();
        } else if ctx.kind == RequestKind::Upgrade && outcome != Outcome::Routed {
            self.shared
                .metrics
                .websocket_upgrades
                .with_label_values(&["failed"])
                .inc();
        }
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        self.log_access(session, ctx, outcome, status, elapsed);
    }
}
