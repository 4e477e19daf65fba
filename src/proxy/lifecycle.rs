//! The proxy's answers to containers that change under it: re-reading the store after a failed
//! connect, refusing responses from a container that is not the session's, and registering
//! upgraded connections so they can be closed when their container is replaced.

use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::{RequestCtx, SessionProxy};
use crate::decide::{log_forbidden, resolution_outcome};
use crate::lifecycle::WakeFor;
use crate::outcome::Outcome;
use crate::table::Resolution;
use crate::upgrades::Upgraded;
use crate::upstream::claims_another;

impl SessionProxy {
    /// Lets the upgrade watcher close this connection if its session moves elsewhere.
    pub(super) fn register_upgrade(&self, ctx: &mut RequestCtx) {
        let close = ctx.upgrade_connector.take().and_then(|c| c.connected());
        let (Some(close), Some(upstream), Some(key)) = (close, &ctx.upstream, &ctx.session_key)
        else {
            return;
        };
        let upgraded = Upgraded {
            session_key: key.clone(),
            container_id: upstream.container_id.clone(),
            addr: upstream.addr,
            admitted: ctx.admitted,
        };
        let id = self.shared.upgrades.register(upgraded, close);
        ctx.upgrade_id = Some(id);
    }

    /// A WebSocket's frames, either way, mark its session active.
    pub(super) fn websocket_activity(&self, ctx: &RequestCtx) {
        if let (true, Some(key)) = (ctx.upgraded, &ctx.session_key) {
            self.shared.lifecycle.activity.touch(key);
        }
    }

    /// Refuses a response whose container names itself as another container: the session's
    /// address now belongs to someone else, and their page must not be shown here.
    pub(super) fn check_identity(&self, resp: &ResponseHeader, ctx: &mut RequestCtx) -> Result<()> {
        let (Some(name), Some(upstream)) = (&self.identity_header, &ctx.upstream) else {
            return Ok(());
        };
        let Some(claimed) = resp.headers.get(name) else {
            return Ok(());
        };
        if !claims_another(upstream, claimed.as_bytes()) {
            return Ok(());
        }
        ctx.outcome = Some(Outcome::ContainerMismatch);
        Err(Error::explain(
            ErrorType::HTTPStatus(Outcome::ContainerMismatch.status()),
            "upstream claimed another container's identity",
        ))
    }

    /// After a failed connect: re-read the session from the store and aim the retry at what it
    /// says now. If it says anything but "ready", that is the answer instead of a 502. A
    /// container found stopped only now (the table had not seen it yet) is answered as the
    /// decision answers it: with a waker, the page waits for a wake that a page load asks for.
    pub(super) async fn reresolve(&self, ctx: &mut RequestCtx) -> Result<()> {
        let Some(target) = ctx.target.as_ref() else {
            return Ok(());
        };
        let resolution = self
            .shared
            .resolver
            .reresolve(&target.client, &target.thread)
            .await;
        let wakes = &self.shared.lifecycle.wakes;
        let outcome = match resolution {
            Resolution::Ready(upstream) => {
                ctx.upstream = Some(upstream);
                return Ok(());
            }
            Resolution::Forbidden(ip) => {
                log_forbidden(target, ip);
                Outcome::ForbiddenUpstream
            }
            Resolution::Stopped | Resolution::Absent if wakes.enabled() => {
                match &ctx.session_key {
                    Some(key) if ctx.may_wake => wakes.request(WakeFor {
                        key: key.clone(),
                        client: target.client.clone(),
                        thread: target.thread.clone(),
                    }),
                    _ => wakes.ignore(),
                }
                Outcome::ContainerWaking
            }
            other => resolution_outcome(&other),
        };
        ctx.outcome = Some(outcome);
        Err(Error::explain(
            ErrorType::HTTPStatus(outcome.status()),
            "container not ready after re-reading the store",
        ))
    }
}

/// The `reason` label of `session_router_upstream_retries_total`.
pub(super) fn retry_reason(etype: &ErrorType) -> &'static str {
    match etype {
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectNoRoute => "connect_no_route",
        _ => "connect_error",
    }
}
