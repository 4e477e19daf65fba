//! The `[activity]` and `[wake]` sections checked: a waker names where it sends, and every
//! interval is above zero.

use super::model::{ActivitySection, WakeKind, WakeSection};
use super::ConfigError;

/// Shortest HMAC key accepted for signed wake requests.
const MIN_WAKE_SECRET_BYTES: usize = 16;

pub(super) fn validate_activity(a: &ActivitySection) -> Result<(), ConfigError> {
    super::first_failed(&[
        (
            "activity.interval",
            !a.interval.is_zero(),
            "must be above zero",
        ),
        ("activity.queue", a.queue > 0, "must be at least 1"),
    ])
}

pub(super) fn validate_wake(w: &WakeSection) -> Result<(), ConfigError> {
    super::first_failed(&[
        ("wake.cooldown", !w.cooldown.is_zero(), "must be above zero"),
        ("wake.timeout", !w.timeout.is_zero(), "must be above zero"),
        (
            "wake.watch_interval",
            !w.watch_interval.is_zero(),
            "must be above zero",
        ),
        (
            "wake.wait_timeout",
            !w.wait_timeout.is_zero(),
            "must be above zero",
        ),
    ])?;
    match w.kind {
        WakeKind::None => Ok(()),
        WakeKind::Sqs => match w.queue_url.as_deref() {
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => Ok(()),
            _ => Err(ConfigError::invalid(
                "wake.queue_url",
                "kind = \"sqs\" needs the queue's URL",
            )),
        },
        WakeKind::Http => {
            let url_ok = w
                .url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://") || u.starts_with("http://"));
            if !url_ok {
                return Err(ConfigError::invalid(
                    "wake.url",
                    "kind = \"http\" needs an http(s) URL to POST to",
                ));
            }
            match &w.secret {
                Some(s) if s.len() >= MIN_WAKE_SECRET_BYTES => Ok(()),
                _ => Err(ConfigError::invalid(
                    "wake.secret",
                    format!(
                        "kind = \"http\" signs each wake: set SESSION_ROUTER__WAKE__SECRET \
                         ({MIN_WAKE_SECRET_BYTES} bytes or more)"
                    ),
                )),
            }
        }
    }
}
