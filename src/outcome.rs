//! The one outcome every proxied request ends in: a bounded label for metrics and logs, and the
//! status the client sees when the router answers itself.

/// How a request ended. See the outcome table in the README; labels are part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Routed,
    Redirect,
    NotPreviewHost,
    NoSession,
    UnknownSession,
    ContainerStarting,
    ContainerStopped,
    /// The container is stopped or absent and a wake was asked for (or is under way): the page
    /// shows the preview by itself once the container is routable.
    ContainerWaking,
    /// The container fails its health checks: answered at once rather than after a timeout.
    ContainerUnhealthy,
    StoreUnavailable,
    /// The session is not in memory and this client address, or the process, has used up its
    /// budget of store reads for sessions not in memory.
    RateLimited,
    UpstreamUnreachable,
    ForbiddenUpstream,
    /// The container answered with another container's identity: its address was reused.
    ContainerMismatch,
    BadRequest,
    /// A private session, and the request has no valid grant (or link token) for it.
    AccessDenied,
    /// The client went away before an answer could be written.
    ClientClosed,
}

impl Outcome {
    pub const ALL: [Outcome; 17] = [
        Outcome::Routed,
        Outcome::Redirect,
        Outcome::NotPreviewHost,
        Outcome::NoSession,
        Outcome::UnknownSession,
        Outcome::ContainerStarting,
        Outcome::ContainerStopped,
        Outcome::ContainerWaking,
        Outcome::ContainerUnhealthy,
        Outcome::StoreUnavailable,
        Outcome::RateLimited,
        Outcome::UpstreamUnreachable,
        Outcome::ForbiddenUpstream,
        Outcome::ContainerMismatch,
        Outcome::BadRequest,
        Outcome::AccessDenied,
        Outcome::ClientClosed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Outcome::Routed => "routed",
            Outcome::Redirect => "redirect",
            Outcome::NotPreviewHost => "not_preview_host",
            Outcome::NoSession => "no_session",
            Outcome::UnknownSession => "unknown_session",
            Outcome::ContainerStarting => "container_starting",
            Outcome::ContainerStopped => "container_stopped",
            Outcome::ContainerWaking => "container_waking",
            Outcome::ContainerUnhealthy => "container_unhealthy",
            Outcome::StoreUnavailable => "store_unavailable",
            Outcome::RateLimited => "rate_limited",
            Outcome::UpstreamUnreachable => "upstream_unreachable",
            Outcome::ForbiddenUpstream => "forbidden_upstream",
            Outcome::ContainerMismatch => "container_mismatch",
            Outcome::BadRequest => "bad_request",
            Outcome::AccessDenied => "access_denied",
            Outcome::ClientClosed => "client_closed",
        }
    }

    /// Index into per-outcome metric arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The status the router answers with when it answers itself.
    pub fn status(self) -> u16 {
        match self {
            Outcome::Routed => 200,
            Outcome::Redirect => 308,
            Outcome::NotPreviewHost | Outcome::NoSession | Outcome::UnknownSession => 404,
            Outcome::ContainerStarting
            | Outcome::ContainerStopped
            | Outcome::ContainerWaking
            | Outcome::ContainerUnhealthy
            | Outcome::StoreUnavailable => 503,
            Outcome::UpstreamUnreachable
            | Outcome::ForbiddenUpstream
            | Outcome::ContainerMismatch => 502,
            Outcome::BadRequest => 400,
            Outcome::AccessDenied => 401,
            Outcome::RateLimited => 429,
            Outcome::ClientClosed => 499,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_match_the_list() {
        for (i, o) in Outcome::ALL.iter().enumerate() {
            assert_eq!(o.index(), i);
        }
    }
}
