//! A counting relay in front of the DynamoDB-compatible server: every call the router makes is
//! forwarded unchanged and counted by its `X-Amz-Target` operation, so tests count calls on the
//! wire rather than trusting the router's own metrics. An operation can also be held: its calls
//! are never answered, as by a store that hangs. A serial relay forwards one call at a time.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::response::Response;

use super::served::Served;

type Calls = Arc<Mutex<HashMap<String, usize>>>;
type Held = Arc<Mutex<HashSet<String>>>;

#[derive(Clone)]
struct Relay {
    target: SocketAddr,
    client: reqwest::Client,
    calls: Calls,
    held: Held,
    /// Taken for each call of a serial relay.
    one_at_a_time: Option<Arc<tokio::sync::Mutex<()>>>,
}

pub struct CountingRelay {
    pub addr: SocketAddr,
    calls: Calls,
    held: Held,
    _served: Served,
}

impl CountingRelay {
    /// Relays 127.0.0.1:<free port> to `target`.
    pub fn start(target: SocketAddr) -> CountingRelay {
        Self::start_with(target, None)
    }

    /// Relays one call at a time. moto checks a conditional write's condition and applies it
    /// without a lock, so two concurrent writes whose conditions exclude each other can both
    /// succeed (a few rounds in thirty of three racing claims did); DynamoDB serializes the
    /// writes of an item. Tests of races between routers put this relay in front of moto.
    pub fn serial(target: SocketAddr) -> CountingRelay {
        Self::start_with(target, Some(Arc::default()))
    }

    fn start_with(
        target: SocketAddr,
        one_at_a_time: Option<Arc<tokio::sync::Mutex<()>>>,
    ) -> CountingRelay {
        let calls = Calls::default();
        let held = Held::default();
        let relay = Relay {
            target,
            client: reqwest::Client::new(),
            calls: calls.clone(),
            held: held.clone(),
            one_at_a_time,
        };
        let app = axum::Router::new().fallback(forward).with_state(relay);
        let served = Served::start(SocketAddr::from(([127, 0, 0, 1], 0)), app);
        CountingRelay {
            addr: served.addr,
            calls,
            held,
            _served: served,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// How many calls of `op` (e.g. `GetItem`) went through.
    pub fn count(&self, op: &str) -> usize {
        let calls = self.calls.lock().expect("calls");
        calls.get(op).copied().unwrap_or(0)
    }

    /// From now on, calls of `op` are counted and never answered (until the relay stops).
    pub fn hold(&self, op: &str) {
        self.held.lock().expect("held").insert(op.to_owned());
    }
}

async fn forward(State(relay): State<Relay>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let op = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .unwrap_or("-")
        .to_owned();
    *relay
        .calls
        .lock()
        .expect("calls")
        .entry(op.clone())
        .or_default() += 1;
    let held = relay.held.lock().expect("held").contains(&op);
    if held {
        std::future::pending::<()>().await;
    }
    let body = to_bytes(body, 16 << 20).await.expect("request body");
    let _turn = match &relay.one_at_a_time {
        Some(lock) => Some(lock.lock().await),
        None => None,
    };
    let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers.clone();
    headers.remove(http::header::HOST);
    let upstream = relay
        .client
        .request(parts.method, format!("http://{}{uri}", relay.target))
        .headers(headers)
        .body(body)
        .send()
        .await
        .expect("relay to the store");
    let mut resp = Response::builder().status(upstream.status());
    for (k, v) in upstream.headers() {
        // Framing is the relay's own: the body is re-sent whole.
        if k != http::header::CONTENT_LENGTH && k != http::header::TRANSFER_ENCODING {
            resp = resp.header(k, v);
        }
    }
    let bytes = upstream.bytes().await.expect("store response body");
    resp.body(Body::from(bytes)).expect("relayed response")
}
