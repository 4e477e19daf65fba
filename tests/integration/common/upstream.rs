//! A real upstream for tests: answers every HTTP request with a JSON echo of what it received
//! (after `delay_ms` milliseconds when the query asks), and every WebSocket upgrade with an
//! echo socket that first reports its handshake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::json;

use super::served::Served;

/// Served on a thread and runtime of its own, so stopping it ends every connection it holds.
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    served: Served,
}

#[derive(Clone)]
struct AppState {
    name: String,
    hits: Arc<AtomicUsize>,
}

impl Upstream {
    /// Starts an upstream called `name` on a free 127.0.0.1 port.
    pub async fn start(name: &str) -> Upstream {
        Self::start_on(name, "127.0.0.1:0".parse().expect("addr"))
    }

    /// Starts on a given address, e.g. the port of one stopped a moment ago.
    pub fn start_on(name: &str, addr: SocketAddr) -> Upstream {
        let hits = Arc::new(AtomicUsize::new(0));
        let state = AppState {
            name: name.to_owned(),
            hits: hits.clone(),
        };
        let served = Served::start(addr, Router::new().fallback(handle).with_state(state));
        Upstream {
            name: name.to_owned(),
            addr: served.addr,
            hits,
            served,
        }
    }

    /// Stops serving and closes every open connection.
    pub fn stop(&mut self) {
        self.served.stop();
    }

    /// Requests this upstream has answered.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn describe(name: &str, req: &axum::http::request::Parts) -> serde_json::Value {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &req.headers {
        headers
            .entry(k.as_str().to_owned())
            .or_default()
            .push(v.to_str().unwrap_or("<binary>").to_owned());
    }
    json!({ "upstream": name, "method": req.method.as_str(), "uri": req.uri.to_string(), "headers": headers })
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let (mut parts, _body) = req.into_parts();
    let info = describe(&state.name, &parts);
    if parts.headers.contains_key("upgrade") {
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws
                .protocols(["vite-hmr", "vite-ping"])
                .on_upgrade(move |socket| echo(socket, info))
                .into_response(),
            Err(rejection) => rejection.into_response(),
        };
    }
    if let Some(ms) = delay_ms(&parts.uri) {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
    let name = state.name.clone();
    // A container states its id the way the router's identity check expects.
    (
        [("x-upstream", name.clone()), ("x-container-id", name)],
        axum::Json(info),
    )
        .into_response()
}

/// `delay_ms=N` in the query: a slow container, for requests that must be in flight.
fn delay_ms(uri: &axum::http::Uri) -> Option<u64> {
    uri.query()?
        .split('&')
        .find_map(|kv| kv.strip_prefix("delay_ms="))?
        .parse()
        .ok()
}

/// Sends the handshake description, then echoes every frame until either side closes.
/// The text `close-please` makes the upstream close first.
async fn echo(mut socket: WebSocket, info: serde_json::Value) {
    if socket
        .send(Message::Text(info.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(t) if t.as_str() == "close-please" => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            // Reading on lets the socket send its queued close reply before it ends.
            Message::Close(_) => continue,
            other => other,
        };
        if socket.send(reply).await.is_err() {
            return;
        }
    }
}
