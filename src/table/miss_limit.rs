//! How many store reads sessions missing from memory may cost. Anyone can name a session id, so
//! without a bound random ids turn the router into a load generator against the store. A read is
//! allowed only while both the requesting client address and the whole process have a token
//! left; table hits and remembered "no such session" answers never take one.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moka::sync::Cache;

/// Client addresses whose buckets are kept. Past it moka evicts, so an attacker with many
/// addresses gets fresh buckets but costs at most this much memory (a few MB); the total
/// budget bounds the store reads they can make either way.
const TRACKED_ADDRESSES: u64 = 65_536;

/// Which budget refused a store read: the `scope` label of
/// `session_router_store_misses_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MissScope {
    Client,
    Total,
}

impl MissScope {
    pub const ALL: [MissScope; 2] = [MissScope::Client, MissScope::Total];

    pub fn label(self) -> &'static str {
        match self {
            MissScope::Client => "client",
            MissScope::Total => "total",
        }
    }
}

/// A token bucket's size: `burst` reads at once, refilled at `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MissBudget {
    pub per_second: f64,
    pub burst: u32,
}

impl MissBudget {
    /// How long an untouched bucket takes to fill up, after which forgetting it loses nothing.
    fn refill_time(&self) -> Duration {
        Duration::from_secs_f64(f64::from(self.burst) / self.per_second)
    }
}

/// The budgets of store reads for sessions missing from memory.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MissLimits {
    pub per_client: MissBudget,
    pub total: MissBudget,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(budget: &MissBudget, now: Instant) -> Self {
        Bucket {
            tokens: f64::from(budget.burst),
            at: now,
        }
    }

    fn refill(&mut self, budget: &MissBudget, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * budget.per_second).min(f64::from(budget.burst));
        self.at = now;
    }

    fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }
}

/// The buckets: one per client address (IPv6 by /64) and one for the process.
pub struct MissLimiter {
    limits: MissLimits,
    clients: Cache<IpAddr, Arc<Mutex<Bucket>>>,
    total: Mutex<Bucket>,
}

/// The address a client's bucket is kept under. An IPv6 host is given a whole /64 (the
/// smallest prefix a subnet gets), so it cannot take a fresh bucket per address it owns; an
/// IPv4-mapped address counts as the IPv4 address it names.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !u128::from(u64::MAX);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn lock(bucket: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    // A bucket is consistent between statements, so a panic elsewhere leaves it usable.
    bucket.lock().unwrap_or_else(PoisonError::into_inner)
}

impl MissLimiter {
    pub fn new(limits: MissLimits) -> Self {
        Self::with_capacity(limits, TRACKED_ADDRESSES)
    }

    fn with_capacity(limits: MissLimits, capacity: u64) -> Self {
        let idle = limits.per_client.refill_time().max(Duration::from_secs(1));
        MissLimiter {
            limits,
            clients: Cache::builder()
                .max_capacity(capacity)
                .time_to_idle(idle)
                .build(),
            total: Mutex::new(Bucket::full(&limits.total, Instant::now())),
        }
    }

    /// Takes a token from `requester`'s bucket and the process's, or from neither when either
    /// is empty. `None` (no client address known) is held to the process's budget alone.
    pub fn admit(&self, requester: Option<IpAddr>) -> Result<(), MissScope> {
        self.admit_at(requester, Instant::now())
    }

    fn admit_at(&self, requester: Option<IpAddr>, now: Instant) -> Result<(), MissScope> {
        let bucket = requester.map(|ip| self.bucket_of(ip, now));
        let mut client = bucket.as_deref().map(lock);
        if let Some(bucket) = client.as_mut() {
            bucket.refill(&self.limits.per_client, now);
            if !bucket.has_token() {
                return Err(MissScope::Client);
            }
        }
        let mut total = lock(&self.total);
        total.refill(&self.limits.total, now);
        if !total.has_token() {
            return Err(MissScope::Total);
        }
        total.tokens -= 1.0;
        if let Some(bucket) = client.as_mut() {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }

    fn bucket_of(&self, ip: IpAddr, now: Instant) -> Arc<Mutex<Bucket>> {
        let budget = &self.limits.per_client;
        self.clients.get_with(client_key(ip), || {
            Arc::new(Mutex::new(Bucket::full(budget, now)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(client: (f64, u32), total: (f64, u32)) -> MissLimits {
        let budget = |(per_second, burst)| MissBudget { per_second, burst };
        MissLimits {
            per_client: budget(client),
            total: budget(total),
        }
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn admitted(l: &MissLimiter, who: Option<IpAddr>, at: Instant, n: usize) -> usize {
        (0..n).filter(|_| l.admit_at(who, at).is_ok()).count()
    }

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate() {
        let l = MissLimiter::new(limits((2.0, 5), (1000.0, 1000)));
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(admitted(&l, a, t0, 10), 5);
        assert_eq!(l.admit_at(a, t0), Err(MissScope::Client));
        // 2 per second: one more token after half a second, two after one.
        assert_eq!(admitted(&l, a, t0 + Duration::from_millis(500), 3), 1);
        assert_eq!(admitted(&l, a, t0 + Duration::from_millis(1500), 3), 2);
        // Never more than the burst, however long it waited.
        assert_eq!(admitted(&l, a, t0 + Duration::from_secs(3600), 10), 5);
    }

    #[test]
    fn addresses_have_their_own_buckets_and_share_the_total() {
        let l = MissLimiter::new(limits((1.0, 3), (1.0, 5)));
        let t0 = Instant::now();
        assert_eq!(admitted(&l, ip("192.0.2.1"), t0, 10), 3);
        assert_eq!(admitted(&l, ip("192.0.2.2"), t0, 1), 1, "not starved by .1");
        assert_eq!(
            admitted(&l, ip("192.0.2.3"), t0, 10),
            1,
            "the total ran out"
        );
        assert_eq!(l.admit_at(ip("192.0.2.4"), t0), Err(MissScope::Total));
        assert_eq!(l.admit_at(None, t0), Err(MissScope::Total));
    }

    #[test]
    fn a_refusal_takes_no_token_from_the_other_bucket() {
        let l = MissLimiter::new(limits((1.0, 2), (1.0, 3)));
        let t0 = Instant::now();
        assert_eq!(admitted(&l, ip("192.0.2.1"), t0, 2), 2);
        // .1's own bucket is empty: refused without spending the total's last token.
        assert_eq!(admitted(&l, ip("192.0.2.1"), t0, 5), 0);
        assert_eq!(admitted(&l, ip("192.0.2.2"), t0, 1), 1);
        // The total is empty: .3's bucket keeps both tokens for later.
        assert_eq!(admitted(&l, ip("192.0.2.3"), t0, 1), 0);
        let later = t0 + Duration::from_secs(2);
        assert_eq!(admitted(&l, ip("192.0.2.3"), later, 1), 1);
        assert_eq!(admitted(&l, ip("192.0.2.3"), later, 1), 1);
    }

    #[test]
    fn ipv6_addresses_of_one_64_share_a_bucket() {
        let l = MissLimiter::new(limits((1.0, 4), (100.0, 100)));
        let t0 = Instant::now();
        assert_eq!(admitted(&l, ip("2001:db8:1:2::1"), t0, 2), 2);
        assert_eq!(
            admitted(&l, ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), t0, 9),
            2
        );
        assert_eq!(
            admitted(&l, ip("2001:db8:1:3::1"), t0, 9),
            4,
            "the next /64"
        );
        assert_eq!(
            client_key("::ffff:192.0.2.7".parse().unwrap()),
            ip("192.0.2.7").unwrap()
        );
        assert_eq!(
            client_key("2001:db8::aa:bb".parse().unwrap()),
            ip("2001:db8::").unwrap()
        );
    }

    #[test]
    fn the_addresses_kept_are_bounded() {
        let l = MissLimiter::with_capacity(limits((1.0, 2), (1e9, u32::MAX)), 100);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let v6 = Ipv6Addr::from(u128::from(i) << 64);
            assert!(l.admit_at(Some(IpAddr::V6(v6)), t0).is_ok());
        }
        l.clients.run_pending_tasks();
        assert!(
            l.clients.entry_count() <= 100,
            "{} addresses kept",
            l.clients.entry_count()
        );
    }

    #[test]
    fn an_idle_bucket_is_forgotten_once_it_would_be_full() {
        let l = MissLimiter::new(limits((10.0, 5), (100.0, 100)));
        assert_eq!(
            l.clients.policy().time_to_idle(),
            Some(Duration::from_secs(1))
        );
        let slow = MissLimiter::new(limits((0.1, 5), (100.0, 100)));
        assert_eq!(
            slow.clients.policy().time_to_idle(),
            Some(Duration::from_secs(50))
        );
    }
}
