//! The caches behind the route table for keys it does not hold: one store read per key however
//! many requests wait for it, "absent" remembered for the negative TTL, and each read charged to
//! the miss budget of the request that makes it (see [`MissLimiter`]).

use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use thiserror::Error;

use super::miss_limit::{MissLimiter, MissScope};
use crate::metrics::{LookupResult, Metrics};
use crate::store::StoreError;

/// Why a key missing from memory has no answer.
#[derive(Debug, Error)]
pub enum MissError {
    #[error("store read refused: the {} miss budget is spent", .0.label())]
    Limited(MissScope),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who is asking: whose budget a store read is charged to, and where lookups are counted.
pub struct Asker<'a> {
    pub limiter: &'a MissLimiter,
    pub requester: Option<IpAddr>,
    pub metrics: &'a Metrics,
}

/// Read-through entries live until the next full refresh replaces them; "absent" ones only for
/// the negative TTL, so a session created a moment later is found soon.
struct ReadThroughExpiry {
    positive: Duration,
    negative: Duration,
}

impl<K, V> Expiry<K, Option<V>> for ReadThroughExpiry {
    fn expire_after_create(&self, _: &K, value: &Option<V>, _: Instant) -> Option<Duration> {
        Some(if value.is_some() {
            self.positive
        } else {
            self.negative
        })
    }
}

pub struct ReadThrough<V> {
    cache: Cache<Box<str>, Option<V>>,
}

/// A fill that failed, and whether this request's own read ran (rather than one it waited on).
struct Failed {
    error: Arc<MissError>,
    ran: bool,
}

impl<V: Clone + Send + Sync + 'static> ReadThrough<V> {
    pub fn new(positive: Duration, negative: Duration) -> Self {
        ReadThrough {
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(ReadThroughExpiry { positive, negative })
                .build(),
        }
    }

    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Drops what is remembered of `key`: the table now holds it.
    pub async fn forget(&self, key: &str) {
        self.cache.invalidate(key).await;
    }

    /// Remembers `key` as absent for the negative TTL: the store just said it was deleted, so
    /// the next request for it needs no read to learn that.
    pub async fn remember_absent(&self, key: &str) {
        self.cache.insert(key.into(), None).await;
    }

    /// Serves from the cache, or makes the one store read (`fetch`) that all concurrent
    /// requests for this key wait on, if the asker's budget allows it. Errors are not cached:
    /// the next request tries again.
    pub async fn get<F, Fut>(
        &self,
        key: &str,
        asker: &Asker<'_>,
        fetch: F,
    ) -> Result<Option<V>, Arc<MissError>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, StoreError>>,
    {
        if let Some(hit) = self.cache.get(key).await {
            let result = if hit.is_some() {
                LookupResult::Hit
            } else {
                LookupResult::NegativeHit
            };
            asker.metrics.lookup(result);
            return Ok(hit);
        }
        asker.metrics.lookup(LookupResult::Miss);
        match self.fill(key, asker, &fetch).await {
            // The read this request waited on was another client's, refused by that client's
            // budget: this one's own may allow it.
            Err(Failed { error, ran: false }) if matches!(*error, MissError::Limited(_)) => {
                self.fill(key, asker, &fetch).await.map_err(|f| f.error)
            }
            result => result.map_err(|f| f.error),
        }
    }

    async fn fill<F, Fut>(
        &self,
        key: &str,
        asker: &Asker<'_>,
        fetch: &F,
    ) -> Result<Option<V>, Failed>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<V>, StoreError>>,
    {
        let ran = AtomicBool::new(false);
        // Charged only when it runs, so the requests coalesced on it cost one token, not one each.
        let read = async {
            ran.store(true, Ordering::Relaxed);
            asker
                .limiter
                .admit(asker.requester)
                .map_err(MissError::Limited)?;
            Ok::<_, MissError>(fetch().await?)
        };
        let result = self.cache.try_get_with(key.into(), read).await;
        result.map_err(|error| Failed {
            error,
            ran: ran.load(Ordering::Relaxed),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{MissBudget, MissLimits};
    use std::sync::atomic::AtomicUsize;

    fn limiter(per_client_burst: u32) -> MissLimiter {
        MissLimiter::new(MissLimits {
            per_client: MissBudget {
                per_second: 0.001,
                burst: per_client_burst,
            },
            total: MissBudget {
                per_second: 1000.0,
                burst: 1000,
            },
        })
    }

    fn cache() -> ReadThrough<u32> {
        ReadThrough::new(Duration::from_secs(60), Duration::from_secs(60))
    }

    #[tokio::test]
    async fn requests_waiting_on_one_read_cost_one_token() {
        let (cache, limiter, metrics) = (cache(), limiter(1), Metrics::new().unwrap());
        let asker = Asker {
            limiter: &limiter,
            requester: Some("192.0.2.1".parse().unwrap()),
            metrics: &metrics,
        };
        let reads = AtomicUsize::new(0);
        let fetch = || async {
            reads.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(None)
        };
        let all = (0..20).map(|_| cache.get("acme-new", &asker, fetch));
        let results = futures_util::future::join_all(all).await;
        assert!(results.iter().all(|r| matches!(r, Ok(None))));
        assert_eq!(reads.load(Ordering::Relaxed), 1);
        // The one token is spent: another key is refused, a remembered one is not.
        let other = cache.get("acme-other", &asker, fetch).await.unwrap_err();
        assert!(matches!(*other, MissError::Limited(MissScope::Client)));
        assert!(matches!(
            cache.get("acme-new", &asker, fetch).await,
            Ok(None)
        ));
        assert_eq!(reads.load(Ordering::Relaxed), 1, "no read when refused");
    }
}
