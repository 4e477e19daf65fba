//! WebSocket connections the fast path holds after their 101: registered where the upgrade
//! watcher can close them (replaced container, shutdown), counted as open, and tunnelled until
//! they end.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use super::connection::Client;
use super::exchange::Switched;
use super::request::Request;
use super::tunnel;
use crate::access::Admitted;
use crate::shared::Shared;
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
    pub(super) method: Box<str>,
    pub(super) host: Box<str>,
    pub(super) path: Box<str>,
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

/// Holds an upgraded connection open until it ends, idle for at most `idle` if set, registered
/// as `registered`. The caller counts the upgrade and logs it.
pub async fn hold(
    switched: Switched,
    registered: upgrades::Upgraded,
    client: &mut Client,
    shared: &Shared,
    idle: Option<Duration>,
) {
    // What the client sent after its request head goes to the container; the read buffer goes
    // back to the allocator instead of staying with the socket.
    let from_client = client.buf.to_vec();
    client.buf = BytesMut::new();

    let metrics = &shared.metrics;
    metrics.websocket_connections.inc();
    let key = registered.session_key.clone();
    let id = shared
        .upgrades
        .register(registered, switched.socket.handle());
    let activity = &shared.lifecycle.activity;
    let active = || activity.touch(&key);
    tunnel::run(&mut client.io, &from_client, switched, idle, &active).await;
    shared.upgrades.remove(id);
    metrics.websocket_connections.dec();
}
