//! The one decision both engines make for a request whose session they have read from its host,
//! path, Referer or cookie: look the session up, decide access, and either forward it to a
//! container or answer it. A request the router's own path hands to Pingora is decided again
//! there; only the engine that acts on a decision counts it.

use std::net::IpAddr;

use crate::access::{link, AccessResult, Admitted, Presented, Verdict};
use crate::metrics::Metrics;
use crate::outcome::Outcome;
use crate::pages::{self, Answer, RequestKind};
use crate::proxy::Shared;
use crate::routing::{Reject, Target};
use crate::store::ShareLevel;
use crate::table::{MissScope, Resolution, Resolved};
use crate::upstream::UpstreamTarget;

/// What the decision reads of a request besides its target.
pub struct Asked<'a> {
    pub target: &'a Target,
    /// The client address the miss budget charges.
    pub requester: Option<IpAddr>,
    pub kind: RequestKind,
    /// GET or HEAD: the only requests a link token is exchanged on.
    pub safe_method: bool,
    /// The request's own path and query, as sent.
    pub path: &'a str,
    pub query: Option<&'a str>,
    /// The client reached the router over TLS (its own, or a trusted balancer's).
    pub tls: bool,
}

/// How a request goes on.
#[derive(Debug)]
pub enum Decision {
    Forward {
        upstream: UpstreamTarget,
        /// How access let it in, for revocation of the WebSocket it may become.
        admitted: Admitted,
        access: AccessResult,
    },
    /// The router answers it itself.
    Answer {
        outcome: Outcome,
        answer: Answer,
        /// The access decision, when one was made.
        access: Option<AccessResult>,
        /// The miss budget that ran out, for a `rate_limited` answer.
        limited: Option<MissScope>,
    },
}

impl Decision {
    /// Counts what the decision says about access and miss budgets; called by the engine that
    /// acts on it, so a request handed from one engine to the other is counted once.
    pub fn count(&self, metrics: &Metrics) {
        let (access, limited) = match self {
            Decision::Forward { access, .. } => (Some(*access), None),
            Decision::Answer {
                access, limited, ..
            } => (*access, *limited),
        };
        if let Some(result) = access {
            metrics.access(result);
        }
        if let Some(scope) = limited {
            metrics.miss_limited(scope);
        }
    }
}

impl Shared {
    /// Decides a request of `asked.target`. `grant` reads the request's grant cookie for that
    /// thread; it is called only for private sessions.
    pub async fn decide<'c>(
        &self,
        asked: &Asked<'_>,
        grant: impl FnOnce(&str) -> Option<&'c str>,
    ) -> Decision {
        let target = asked.target;
        let Resolved { resolution, access } = self
            .resolver
            .resolve(&target.client, &target.thread, asked.requester)
            .await;
        let Some(session) = access else {
            let limited = match resolution {
                Resolution::RateLimited(scope) => Some(scope),
                _ => None,
            };
            let outcome = resolution_outcome(&resolution);
            return Decision::Answer {
                outcome,
                answer: pages::answer(outcome, asked.kind),
                access: None,
                limited,
            };
        };
        let token = link::token_in(asked.query);
        let verdict =
            if token.is_some() && (!asked.safe_method || asked.kind == RequestKind::Upgrade) {
                // A link is exchanged on a page load; anywhere else its token is refused rather than
                // forwarded.
                Verdict::Denied(AccessResult::Invalid)
            } else {
                let grant = match (&token, self.gate.level(session)) {
                    (None, ShareLevel::Private) => grant(&target.thread),
                    _ => None,
                };
                let presented = Presented {
                    token: token.as_deref(),
                    grant,
                };
                self.gate
                    .check(session, &target.client, &target.thread, presented)
            };
        let admitted = match verdict {
            Verdict::Open(AccessResult::Public) => Admitted::Public,
            Verdict::Open(_) => Admitted::Grant(session.generation),
            Verdict::Exchange { grant, result } => {
                return self.exchange(asked, grant, result);
            }
            Verdict::Denied(result) => {
                return self.answer(Outcome::AccessDenied, asked.kind, Some(result));
            }
        };
        let access = verdict.result();
        match resolution {
            Resolution::Ready(upstream) if self.health.is_unhealthy(upstream.addr) => {
                self.answer(Outcome::ContainerUnhealthy, asked.kind, Some(access))
            }
            Resolution::Ready(upstream) => Decision::Forward {
                upstream,
                admitted,
                access,
            },
            Resolution::Forbidden(ip) => {
                log_forbidden(target, ip);
                self.answer(Outcome::ForbiddenUpstream, asked.kind, Some(access))
            }
            other => self.answer(resolution_outcome(&other), asked.kind, Some(access)),
        }
    }

    fn answer(
        &self,
        outcome: Outcome,
        kind: RequestKind,
        access: Option<AccessResult>,
    ) -> Decision {
        Decision::Answer {
            outcome,
            answer: pages::answer(outcome, kind),
            access,
            limited: None,
        }
    }

    /// The 303 of a preview link: to the same URL without its token, with the grant.
    fn exchange(&self, asked: &Asked<'_>, grant: Option<String>, result: AccessResult) -> Decision {
        let cookie = grant.map(|g| {
            let name = self.gate.cookies().grant_name(&asked.target.thread);
            link::grant_cookie(&name, &g, self.gate.grant_ttl(), asked.tls)
        });
        let location = link::without_token(asked.path, asked.query);
        Decision::Answer {
            outcome: Outcome::Redirect,
            answer: pages::token_exchange(location, cookie),
            access: Some(result),
            limited: None,
        }
    }
}

pub fn reject_outcome(reject: &Reject) -> Outcome {
    match reject {
        Reject::NotPreviewHost => Outcome::NotPreviewHost,
        Reject::NoSession => Outcome::NoSession,
        Reject::AddSlash(_) => Outcome::Redirect,
        Reject::BadRequest(_) => Outcome::BadRequest,
    }
}

pub fn resolution_outcome(resolution: &Resolution) -> Outcome {
    match resolution {
        Resolution::Ready(_) => Outcome::Routed,
        Resolution::Unknown => Outcome::UnknownSession,
        Resolution::Starting => Outcome::ContainerStarting,
        Resolution::Stopped => Outcome::ContainerStopped,
        Resolution::StoreUnavailable => Outcome::StoreUnavailable,
        Resolution::RateLimited(_) => Outcome::RateLimited,
        Resolution::Forbidden(_) => Outcome::ForbiddenUpstream,
    }
}

pub fn log_forbidden(target: &Target, ip: IpAddr) {
    log::warn!(
        target: "security",
        "event=forbidden_upstream client={} thread={} address={ip}",
        target.client,
        target.thread
    );
}
