//! How routing and store answers map onto outcomes, and the log lines of security events.

use std::net::IpAddr;

use pingora::ErrorType;

use crate::outcome::Outcome;
use crate::routing::{Reject, Target};
use crate::table::Resolution;

pub(super) fn reject_outcome(reject: &Reject) -> Outcome {
    match reject {
        Reject::NotPreviewHost => Outcome::NotPreviewHost,
        Reject::NoSession => Outcome::NoSession,
        Reject::AddSlash(_) => Outcome::Redirect,
        Reject::BadRequest(_) => Outcome::BadRequest,
    }
}

pub(super) fn resolution_outcome(resolution: &Resolution) -> Outcome {
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

pub(super) fn retry_reason(etype: &ErrorType) -> &'static str {
    match etype {
        ErrorType::ConnectRefused => "connect_refused",
        ErrorType::ConnectTimedout => "connect_timeout",
        ErrorType::ConnectNoRoute => "connect_no_route",
        _ => "connect_error",
    }
}

pub(super) fn log_forbidden(target: &Target, ip: IpAddr) {
    log::warn!(
        target: "security",
        "event=forbidden_upstream client={} thread={} address={ip}",
        target.client,
        target.thread
    );
}
