//! A counting relay in front of the DynamoDB-compatible server: every call the router makes is
//! forwarded unchanged and counted by its `X-Amz-Target` operation, so tests count calls on the
//! wire rather than trusting the router's own metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::response::Response;

use super::served::Served;

type Calls = Arc<Mutex<HashMap<String, usize>>>;

#[derive(Clone)]
struct Relay {
    target: SocketAddr,
    client: reqwest::Client,
    calls: Calls,
}

pub struct CountingRelay {
    pub addr: SocketAddr,
    calls: Calls,
    _served: Served,
}

impl CountingRelay {
    /// Relays 127.0.0.1:<free port> to `target`.
    pub fn start(target: SocketAddr) -> CountingRelay {
        let calls = Calls::default();
        let relay = Relay {
            target,
            client: reqwest::Client::new(),
            calls: calls.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(relay);
        let served = Served::start(SocketAddr::from(([127, 0, 0, 1], 0)), app);
        CountingRelay {
            addr: served.addr,
            calls,
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
    *relay.calls.lock().expect("calls").entry(op).or_default() += 1;
    let body = to_bytes(body, 16 << 20).await.expect("request body");
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
