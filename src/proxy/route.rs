//! The proxy's side of the one decision (see [`crate::decide`]): what it reads of Pingora's
//! request, and how it acts on the answer: forward, answer, or hold the waking page's request.

use http::header::{COOKIE, USER_AGENT};
use http::Method;
use pingora::proxy::Session;
use pingora::Result;

use super::headers::requester_from;
use super::{RequestCtx, SessionProxy};
use crate::decide::{Answered, Asked, Decision};
use crate::lifecycle::is_bot;
use crate::outcome::Outcome;
use crate::pages::{self, RequestKind, WAIT_HEADER};
use crate::routing::Target;

impl SessionProxy {
    /// Decides the request of `target`; true when it has been answered here.
    pub(super) async fn route(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        target: &Target,
    ) -> Result<bool> {
        let (peer, trusted) = self.peer(session);
        let tls = self.forwarded(session).client_tls();
        let req = session.req_header();
        let get = req.method == Method::GET;
        let user_agent = req.headers.get(USER_AGENT).map(|v| v.as_bytes());
        let asked = Asked {
            target,
            requester: requester_from(req, peer, trusted),
            kind: ctx.kind,
            safe_method: get || req.method == Method::HEAD,
            path: req.uri.path(),
            query: req.uri.query(),
            tls,
            may_wake: get && ctx.kind == RequestKind::Navigation && !is_bot(user_agent),
            waiting: req.headers.contains_key(WAIT_HEADER),
        };
        ctx.may_wake = asked.may_wake;
        let cookies = req.headers.get_all(COOKIE);
        let mut decision = self
            .shared
            .decide(&asked, |thread| {
                let values = cookies.iter().map(|v| v.as_bytes());
                self.routing.cookies.grant_in(values, thread)
            })
            .await;
        decision.settle(&self.shared);
        match decision {
            Decision::Forward {
                upstream,
                key,
                admitted,
                ..
            } => {
                self.shared.health.note_used(upstream.addr);
                let lifecycle = &self.shared.lifecycle;
                lifecycle.activity.touch(&key);
                ctx.upstream = Some(upstream);
                ctx.admitted = admitted;
                ctx.session_key = Some(key);
                Ok(false)
            }
            Decision::Answer(Answered {
                outcome, answer, ..
            }) => self.answer(session, ctx, outcome, answer).await,
            Decision::Wait { .. } => {
                let lifecycle = &self.shared.lifecycle;
                let routable = lifecycle
                    .watch
                    .until_routable(
                        &self.shared.resolver,
                        &target.client,
                        &target.thread,
                        lifecycle.wait_limit,
                        &self.shared.draining,
                    )
                    .await;
                let answer = pages::wait_answer(routable);
                self.answer(session, ctx, Outcome::ContainerWaking, answer)
                    .await
            }
        }
    }
}
