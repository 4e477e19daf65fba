//! A counting relay in front of the DynamoDB-compatible server: every call the router makes is
//! forwarded unchanged and counted by its `X-Amz-Target` operation, so tests count calls on the
//! wire rather than trusting the router's own metrics.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::response::Response;
use tokio::sync::oneshot;

type Calls = Arc<Mutex<HashMap<String, usize>>>;

#[derive(Clone)]
struct Relay {
    target: SocketAddr,
    client: reqwest::Client,
    calls: Calls,
}

/// Runs on a thread and runtime of its own, stopped when dropped (a runtime cannot be dropped
/// inside the test's own async context).
pub struct CountingRelay {
    pub addr: SocketAddr,
    calls: Calls,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CountingRelay {
    /// Relays 127.0.0.1:<free port> to `target`.
    pub fn start(target: SocketAddr) -> CountingRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("relay addr");
        let calls = Calls::default();
        let relay = Relay {
            target,
            client: reqwest::Client::new(),
            calls: calls.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(relay);
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("relay runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
        });
        CountingRelay {
            addr,
            calls,
            stop: Some(stop),
            thread: Some(thread),
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

impl Drop for CountingRelay {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
