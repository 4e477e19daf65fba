//! A session's life as the router sees it (contract section 1.7): activity reported back to the
//! store ([`activity`]), stopped containers woken on a visit ([`wake`]), and visitors of a waking
//! session held until it is routable ([`watch`]).

pub mod activity;
pub mod wake;
pub mod watch;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

pub use activity::{Activity, ActivityWriter};
pub use wake::{WakeBody, WakeFor, Waker, Wakes};
pub use watch::{Watch, WatchPoller};

/// The lifecycle state both engines and the admin listener share.
pub struct Lifecycle {
    pub activity: Arc<Activity>,
    pub wakes: Arc<Wakes>,
    pub watch: Arc<Watch>,
    /// How long one wait of the waking page is held.
    pub wait_limit: std::time::Duration,
}

/// Whether a User-Agent is a crawler, link unfurler or command-line client rather than a person
/// in a browser: such a visit never wakes a container.
pub fn is_bot(user_agent: Option<&[u8]>) -> bool {
    const MARKERS: [&[u8]; 9] = [
        b"bot",
        b"crawl",
        b"spider",
        b"slurp",
        b"facebookexternalhit",
        b"whatsapp",
        b"preview",
        b"curl",
        b"wget",
    ];
    let Some(ua) = user_agent else {
        return true;
    };
    MARKERS
        .iter()
        .any(|m| ua.windows(m.len()).any(|w| w.eq_ignore_ascii_case(m)))
}

pub(crate) fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn epoch_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crawlers_and_unfurlers_are_bots_browsers_are_not() {
        let chrome = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
            HeadlessChrome/120.0 Safari/537.36";
        assert!(!is_bot(Some(chrome)));
        for ua in [
            &b"Slackbot-LinkExpanding 1.0"[..],
            b"Mozilla/5.0 (compatible; Googlebot/2.1)",
            b"facebookexternalhit/1.1",
            b"curl/8.0",
        ] {
            assert!(is_bot(Some(ua)), "{}", String::from_utf8_lossy(ua));
        }
        assert!(is_bot(None), "no User-Agent: not a browser");
    }
}
