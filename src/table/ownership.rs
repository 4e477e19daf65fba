//! Whose session a store item is. The key template may render one key for two (client, thread)
//! pairs, or leave the client out of the key altogether; then only the item's `clientId` says
//! which client's host may reach its container, and an item without one reaches no one.

use std::time::Duration;

use log::Level;
use moka::sync::Cache;
use thiserror::Error;

use crate::config::SessionKeyTemplate;

/// Why an item found under a request's key is not that request's session. The request then
/// resolves as an unknown session, exactly as if there were no item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Error)]
pub enum Refusal {
    /// The item names another client as its owner.
    #[error("client_mismatch")]
    ClientMismatch,
    /// The item names no owner, and its key is not this request's alone.
    #[error("ambiguous_session_key")]
    AmbiguousKey,
}

/// Checks that `owner` (the item's `clientId`) may be reached by `client`'s request for `thread`:
/// an owner must be that client; without one, the key must be unambiguous for the request.
pub fn check(
    template: &SessionKeyTemplate,
    client: &str,
    thread: &str,
    owner: Option<&str>,
) -> Result<(), Refusal> {
    match owner {
        Some(owner) if owner == client => Ok(()),
        Some(_) => Err(Refusal::ClientMismatch),
        None if template.is_unambiguous(client, thread) => Ok(()),
        None => Err(Refusal::AmbiguousKey),
    }
}

/// Keys remembered as already reported; beyond this the oldest are forgotten, which only means
/// a repeat warning, never unbounded memory.
const REMEMBERED_KEYS: u64 = 10_000;
/// A key still refused after this long is reported again, so a lasting misconfiguration stays
/// visible in recent logs.
const REPORT_AGAIN_AFTER: Duration = Duration::from_secs(3600);

/// Security warnings about refused items: one per refusal and key, then debug lines, so that
/// requests repeated at a refused session cannot flood the log.
pub struct RefusalLog {
    reported: Cache<(Refusal, Box<str>), ()>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        RefusalLog {
            reported: Cache::builder()
                .max_capacity(REMEMBERED_KEYS)
                .time_to_live(REPORT_AGAIN_AFTER)
                .build(),
        }
    }
}

impl RefusalLog {
    pub fn report(&self, refusal: Refusal, key: &str, client: &str, owner: Option<&str>) {
        let level = if self.is_first(refusal, key) {
            Level::Warn
        } else {
            Level::Debug
        };
        log::log!(target: "security", level,
            "event={refusal} key={key} client={client} session_client={}",
            owner.unwrap_or("-"));
    }

    /// Whether this refusal of this key is not remembered yet; remembers it.
    fn is_first(&self, refusal: Refusal, key: &str) -> bool {
        self.reported
            .entry((refusal, key.into()))
            .or_insert(())
            .is_fresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(t: &str) -> SessionKeyTemplate {
        SessionKeyTemplate::parse(t).unwrap()
    }

    #[test]
    fn an_owner_other_than_the_client_is_always_refused() {
        for t in ["{client}-{thread}", "{thread}"] {
            let t = template(t);
            assert_eq!(
                check(&t, "acme", "t1", Some("globex")),
                Err(Refusal::ClientMismatch)
            );
            assert_eq!(check(&t, "acme", "t1", Some("acme")), Ok(()));
        }
    }

    #[test]
    fn an_ownerless_item_needs_a_key_only_this_request_renders() {
        let t = template("{client}-{thread}");
        assert_eq!(check(&t, "acme", "t1", None), Ok(()));
        for (client, thread) in [("acme", "x-1"), ("acme-x", "1")] {
            assert_eq!(check(&t, client, thread, None), Err(Refusal::AmbiguousKey));
        }
        assert_eq!(check(&t, "acme", "x-1", Some("acme")), Ok(()));
        assert_eq!(
            check(&t, "acme-x", "1", Some("acme")),
            Err(Refusal::ClientMismatch)
        );
    }

    #[test]
    fn a_thread_keyed_item_needs_its_owner() {
        let t = template("{thread}");
        assert_eq!(check(&t, "acme", "t1", None), Err(Refusal::AmbiguousKey));
        assert_eq!(check(&t, "acme", "t1", Some("acme")), Ok(()));
    }

    #[test]
    fn each_refusal_of_a_key_warns_once() {
        let log = RefusalLog::default();
        assert!(log.is_first(Refusal::AmbiguousKey, "acme-x-1"));
        assert!(!log.is_first(Refusal::AmbiguousKey, "acme-x-1"));
        assert!(log.is_first(Refusal::ClientMismatch, "acme-x-1"));
        assert!(log.is_first(Refusal::AmbiguousKey, "acme-t1"));
    }
}
