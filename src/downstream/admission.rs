//! How many client connections may be open at once: in all, and from one client address, so one
//! client cannot take every descriptor or every byte of buffer the process has.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntGauge;

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The process holds `max_connections` already.
    Full,
    /// This client address holds `max_connections_per_client` already.
    TooManyFromClient,
}

impl Refused {
    /// The `limit` label of `session_router_client_limit_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refused::Full => "connections",
            Refused::TooManyFromClient => "connections_per_client",
        }
    }
}

/// Counts open client connections.
#[derive(Debug)]
pub struct Admission {
    /// `session_router_client_connections`.
    gauge: IntGauge,
    max: usize,
    max_per_client: usize,
    open: AtomicUsize,
    /// Most connections open at once since [`Admission::take_peak`] last asked.
    peak: AtomicUsize,
    /// Open connections by client address; an address leaves the map with its last connection,
    /// so the map is never larger than the connections open.
    per_client: Mutex<HashMap<IpAddr, usize, foldhash::fast::RandomState>>,
}

/// An admitted connection; counted until dropped.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    client: Option<IpAddr>,
}

impl Admission {
    pub fn new(max: usize, max_per_client: usize, gauge: IntGauge) -> Self {
        Admission {
            gauge,
            max,
            max_per_client,
            open: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            per_client: Mutex::default(),
        }
    }

    /// Admits a connection from `client`, counted against that address unless it is `None` (a
    /// trusted balancer, whose connections carry many clients).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Admitted, Refused> {
        let before = self.open.fetch_add(1, Ordering::AcqRel);
        if before >= self.max {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Full);
        }
        self.peak.fetch_max(before + 1, Ordering::AcqRel);
        self.gauge.inc();
        let mut admitted = Admitted {
            admission: self.clone(),
            client: None,
        };
        let Some(ip) = client else {
            return Ok(admitted);
        };
        let mut per_client = self.lock();
        let count = per_client.entry(ip).or_insert(0);
        if *count >= self.max_per_client {
            return Err(Refused::TooManyFromClient);
        }
        *count += 1;
        admitted.client = Some(ip);
        Ok(admitted)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The most connections open at once since the last call; starts the next count at the
    /// connections open now.
    pub fn take_peak(&self) -> usize {
        self.peak.swap(self.open(), Ordering::AcqRel)
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize, foldhash::fast::RandomState>> {
        // The map is consistent between statements, so a panic elsewhere leaves it usable.
        self.per_client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let admission = &self.admission;
        if let Some(ip) = self.client {
            let mut per_client = admission.lock();
            if let Some(count) = per_client.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    per_client.remove(&ip);
                }
            }
        }
        admission.open.fetch_sub(1, Ordering::AcqRel);
        admission.gauge.dec();
    }
}

impl crate::drain::InFlight for Admission {
    fn in_flight(&self) -> usize {
        self.open()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> IntGauge {
        IntGauge::new("connections", "open").unwrap()
    }

    #[test]
    fn counts_in_all_and_per_client_and_forgets_closed_ones() {
        let admission = Arc::new(Admission::new(3, 2, gauge()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let first = admission.admit(Some(a)).unwrap();
        let _second = admission.admit(Some(a)).unwrap();
        assert_eq!(
            admission.admit(Some(a)).unwrap_err(),
            Refused::TooManyFromClient
        );
        let _third = admission.admit(Some(b)).unwrap();
        assert_eq!(admission.admit(Some(b)).unwrap_err(), Refused::Full);
        assert_eq!(admission.admit(None).unwrap_err(), Refused::Full);
        drop(first);
        assert_eq!(admission.open(), 2);
        let again = admission.admit(Some(a)).unwrap();
        assert_eq!(admission.open(), 3);
        assert_eq!(admission.gauge.get(), 3);
        assert_eq!(admission.take_peak(), 3);
        drop(again);
        assert_eq!(
            admission.take_peak(),
            3,
            "the next count starts at those open then"
        );
        assert_eq!(admission.take_peak(), 2);
    }

    #[test]
    fn an_address_leaves_the_map_with_its_last_connection() {
        let admission = Arc::new(Admission::new(10, 10, gauge()));
        let conns: Vec<_> = (0..5u8)
            .map(|i| admission.admit(Some(IpAddr::from([192, 0, 2, i]))).unwrap())
            .collect();
        assert_eq!(admission.lock().len(), 5);
        drop(conns);
        assert!(admission.lock().is_empty());
        assert_eq!(admission.open(), 0);
    }
}
