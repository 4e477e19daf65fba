//! The one decision both engines make for a request whose session they have read from its host,
//! path, Referer or cookie: look the session up, decide access, and either forward it to a
//! container or answer it. A request the router's own path hands to Pingora is decided again
//! there; only the engine that acts on a decision counts it.

use std::net::IpAddr;

use crate::access::{link, AccessResult, Admitted, Presented, Verdict};
use crate::lifecycle::WakeFor;
use crate::outcome::Outcome;
use crate::pages::{self, Answer, RequestKind};
use crate::routing::{Reject, Target};
use crate::shared::Shared;
use crate::store::{SessionAccess, ShareLevel};
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
    /// A person's page load (a GET navigation from a browser, not a bot): it may wake a
    /// stopped container.
    pub may_wake: bool,
    /// The waking page's own request ([`pages::WAIT_HEADER`]): held until the session is
    /// routable, never forwarded.
    pub waiting: bool,
}

/// How a request goes on.
#[derive(Debug)]
pub enum Decision {
    Forward {
        upstream: UpstreamTarget,
        /// The session's store key, for its activity.
        key: String,
        /// How access let it in, for revocation of the WebSocket it may become.
        admitted: Admitted,
        access: AccessResult,
    },
    /// The router answers it itself.
    Answer(Answered),
    /// The waking page's request, let in: hold it until the session is routable. It asks for
    /// the wake again while the container is still down, so a lost wake is asked for once the
    /// cooldown has passed rather than never.
    Wait { access: AccessResult, wake: Wake },
}

/// The router's own answer to a request, and what led to it.
#[derive(Debug)]
pub struct Answered {
    pub outcome: Outcome,
    pub answer: Answer,
    /// The access decision, when one was made.
    pub access: Option<AccessResult>,
    /// The miss budget that ran out, for a `rate_limited` answer.
    pub limited: Option<MissScope>,
    /// A wake to ask for, for `container_waking`.
    pub wake: Wake,
}

/// What a `container_waking` answer does about the wake.
#[derive(Debug, Default)]
pub enum Wake {
    #[default]
    None,
    Ask(WakeFor),
    /// A visit that does not wake: a bot, HEAD, an asset or an upgrade.
    Ignore,
}

impl Decision {
    /// Counts what the decision says (access, miss budgets) and starts what it asks for (a
    /// wake); called by the engine that acts on it, so a request handed from one engine to the
    /// other is counted once.
    pub fn settle(&mut self, shared: &Shared) {
        let (access, limited, wake) = match self {
            Decision::Forward { access, .. } => (Some(*access), None, Wake::None),
            Decision::Wait { access, wake } => (Some(*access), None, std::mem::take(wake)),
            Decision::Answer(Answered {
                access,
                limited,
                wake,
                ..
            }) => (*access, *limited, std::mem::take(wake)),
        };
        match wake {
            Wake::Ask(to) => shared.lifecycle.wakes.request(to),
            Wake::Ignore => shared.lifecycle.wakes.ignore(),
            Wake::None => {}
        }
        if let Some(result) = access {
            shared.metrics.access(result);
        }
        if let Some(scope) = limited {
            shared.metrics.miss_limited(scope);
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
        let Resolved {
            resolution,
            access,
            key,
        } = self
            .resolver
            .resolve(&target.client, &target.thread, asked.requester)
            .await;
        let Some(session) = access else {
            let limited = match resolution {
                Resolution::RateLimited(scope) => Some(scope),
                _ => None,
            };
            let outcome = resolution_outcome(&resolution);
            return Decision::Answer(Answered {
                limited,
                ..self.answered(outcome, asked.kind, None)
            });
        };
        let admitted = match self.verdict(asked, session, grant) {
            Verdict::Open(AccessResult::Public) => Admitted::Public,
            Verdict::Open(_) => Admitted::Grant(session.generation),
            Verdict::Exchange { grant, result } => {
                return self.exchange(asked, grant, result);
            }
            Verdict::Denied(result) => {
                return self.answer(Outcome::AccessDenied, asked.kind, Some(result));
            }
        };
        let access = match admitted {
            Admitted::Public => AccessResult::Public,
            Admitted::Grant(_) => AccessResult::Grant,
        };
        let wakes = &self.lifecycle.wakes;
        let down = matches!(resolution, Resolution::Stopped | Resolution::Absent);
        let wake_for = || WakeFor {
            key: key.clone(),
            client: target.client.clone(),
            thread: target.thread.clone(),
        };
        // Only a router that wakes holds requests: otherwise the header means nothing here.
        if asked.waiting && wakes.enabled() {
            let wake = if down {
                Wake::Ask(wake_for())
            } else {
                Wake::None
            };
            return Decision::Wait { access, wake };
        }
        let answer = |outcome| self.answer(outcome, asked.kind, Some(access));
        match resolution {
            Resolution::Ready(upstream) if self.health.is_unhealthy(upstream.addr) => {
                answer(Outcome::ContainerUnhealthy)
            }
            Resolution::Ready(upstream) => Decision::Forward {
                upstream,
                key,
                admitted,
                access,
            },
            Resolution::Forbidden(ip) => {
                log_forbidden(target, ip);
                answer(Outcome::ForbiddenUpstream)
            }
            _ if down && wakes.enabled() => {
                let wake = if asked.may_wake {
                    Wake::Ask(wake_for())
                } else {
                    Wake::Ignore
                };
                Decision::Answer(Answered {
                    wake,
                    ..self.answered(Outcome::ContainerWaking, asked.kind, Some(access))
                })
            }
            other => answer(resolution_outcome(&other)),
        }
    }

    /// The access decision for a known session. A link's token is never forwarded: on a
    /// private session it is exchanged on a page load (GET or HEAD) and refused anywhere else;
    /// on a public one every request carrying it is sent to the URL without it.
    fn verdict<'c>(
        &self,
        asked: &Asked<'_>,
        session: SessionAccess,
        grant: impl FnOnce(&str) -> Option<&'c str>,
    ) -> Verdict {
        let target = asked.target;
        let token = link::token_in(asked.query);
        let level = self.gate.level(session);
        let exchangeable = asked.safe_method && asked.kind != RequestKind::Upgrade;
        if token.is_some() && !exchangeable && level == ShareLevel::Private {
            return Verdict::Denied(AccessResult::Invalid);
        }
        let grant = match (&token, level) {
            (None, ShareLevel::Private) => grant(&target.thread),
            _ => None,
        };
        let presented = Presented {
            token: token.as_deref(),
            grant,
        };
        self.gate
            .check(session, &target.client, &target.thread, presented)
    }

    fn answer(
        &self,
        outcome: Outcome,
        kind: RequestKind,
        access: Option<AccessResult>,
    ) -> Decision {
        Decision::Answer(self.answered(outcome, kind, access))
    }

    fn answered(
        &self,
        outcome: Outcome,
        kind: RequestKind,
        access: Option<AccessResult>,
    ) -> Answered {
        Answered {
            outcome,
            answer: pages::answer(outcome, kind),
            access,
            limited: None,
            wake: Wake::None,
        }
    }

    /// The 303 of a preview link: to the same URL without its token, with the grant.
    fn exchange(&self, asked: &Asked<'_>, grant: Option<String>, result: AccessResult) -> Decision {
        let cookie = grant.map(|g| {
            let name = self.gate.cookies().grant_name(&asked.target.thread);
            link::grant_cookie(&name, &g, self.gate.grant_ttl(), asked.tls)
        });
        let location = link::without_token(asked.path, asked.query);
        Decision::Answer(Answered {
            outcome: Outcome::Redirect,
            answer: pages::token_exchange(location, cookie),
            access: Some(result),
            limited: None,
            wake: Wake::None,
        })
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
        // Without a waker, a container not recorded yet is taken to be starting, as before.
        Resolution::Starting | Resolution::Absent => Outcome::ContainerStarting,
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
