//! WebSocket connections the fast path holds after their 101: registered where the upgrade
//! watcher can close them (replaced container, shutdown), counted, tunnelled, and logged when
//! they end.

use std::time::Instant;

use bytes::BytesMut;

use super::exchange::Switched;
use super::request::Request;
use super::{tunnel, Client, FastPath, Line};
use crate::access::Admitted;
use crate::outcome::Outcome;
use crate::upgrades;
use crate::upstream::UpstreamTarget;

/// A connection whose container has switched protocols, with what it needs once the request's
/// buffers are gone.
#[derive(Debug)]
pub struct Upgraded {
    pub switched: Switched,
    pub session_key: String,
    pub admitted: Admitted,
    pub upstream: UpstreamTarget,
    pub started: Instant,
    pub line: OwnedLine,
}

/// The access log's names of a request that outlives the buffer it was read into.
#[derive(Debug)]
pub struct OwnedLine {
    method: Box<str>,
    host: Box<str>,
    path: Box<str>,
}

impl OwnedLine {
    pub fn of(req: &Request<'_, '_>) -> Self {
        OwnedLine {
            method: req.method.into(),
            host: req.host.into(),
            path: req.path().into(),
        }
    }
}

impl FastPath {
    /// Holds an upgraded connection open until it ends.
    pub(super) async fn hold_websocket(&self, upgraded: Upgraded, client: &mut Client) {
        let Upgraded {
            switched,
            session_key,
            admitted,
            upstream,
            started,
            line,
        } = upgraded;
        // What the client sent after its request head goes to the container; the read buffer
        // goes back to the allocator instead of staying with the socket.
        let from_client = client.buf.to_vec();
        client.buf = BytesMut::new();

        let metrics = &self.shared.metrics;
        self.count_upgrade("ok");
        metrics.websocket_connections.inc();
        let key = session_key.clone();
        let registered = upgrades::Upgraded {
            session_key,
            container_id: upstream.container_id.clone(),
            addr: upstream.addr,
            admitted,
        };
        let id = self
            .shared
            .upgrades
            .register(registered, switched.socket.handle());
        let idle = self.limits.websocket_idle;
        let activity = &self.shared.lifecycle.activity;
        let active = || activity.touch(&key);
        tunnel::run(&mut client.io, &from_client, switched, idle, &active).await;
        self.shared.upgrades.remove(id);
        metrics.websocket_connections.dec();

        let line = Line {
            method: &line.method,
            host: &line.host,
            path: &line.path,
        };
        let elapsed = started.elapsed();
        self.record(&line, Outcome::Routed, 101, elapsed, upstream.addr);
    }

    /// Counts an upgrade by `result`: `ok`, `rejected` by the container, or `failed`.
    pub(super) fn count_upgrade(&self, result: &str) {
        self.shared
            .metrics
            .websocket_upgrades
            .with_label_values(&[result])
            .inc();
    }
}
