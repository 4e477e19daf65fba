//! The admin listener: `/metrics` for Prometheus, `/healthz` (the process answers) and `/readyz`
//! (a route table is loaded and fresh enough) for the balancer, and `/sessions/{sessionId}`, what
//! this router holds and knows about one session, for operators. Never on the proxy listener.

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;
use serde_json::{json, Value};

use crate::shared::Shared;
use crate::store::{ContainerStatus, ShareLevel};

const PLAIN: &str = "text/plain; charset=utf-8";
const SESSIONS: &str = "/sessions/";

pub struct AdminApp {
    shared: Shared,
}

impl AdminApp {
    pub fn new(shared: Shared) -> Self {
        AdminApp { shared }
    }

    /// `GET /sessions/{sessionId}`: the route, share level, activity, open WebSockets and wake
    /// state of one session; 404 if the store has no such session.
    async fn session(&self, key: &str) -> Response<Vec<u8>> {
        let plain_key = !key.is_empty()
            && key.len() <= 256
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:#".contains(&b));
        if !plain_key {
            return text(StatusCode::BAD_REQUEST, PLAIN, b"bad session id\n".to_vec());
        }
        let shared = &self.shared;
        let inspection = match shared.resolver.inspect(key).await {
            Ok(Some(i)) => i,
            Ok(None) => return text(StatusCode::NOT_FOUND, PLAIN, b"no such session\n".to_vec()),
            Err(e) => {
                let body = format!("store unavailable: {e}\n").into_bytes();
                return text(StatusCode::SERVICE_UNAVAILABLE, PLAIN, body);
            }
        };
        let session = &inspection.session;
        let container = inspection.container.as_ref().map(|c| {
            json!({
                "address": c.ip.map(|ip| {
                    let port = c.port.unwrap_or(shared.resolver.settings().container_port);
                    std::net::SocketAddr::new(ip.to_canonical(), port).to_string()
                }),
                "status": status_label(c.status),
            })
        });
        let lifecycle = &shared.lifecycle;
        let level = match shared.gate.level(session.access) {
            ShareLevel::Private => "private",
            ShareLevel::Public => "public",
        };
        let body = json!({
            "sessionId": key,
            "clientId": session.client_id.as_deref(),
            "expiresAt": session.expires_at,
            "route": {
                "containerId": &*session.container_id,
                "container": container.unwrap_or(Value::Null),
                "source": inspection.source,
                "ageSeconds": inspection.age.map(|a| a.as_secs_f64()),
            },
            "access": {
                "level": level,
                "levelFromItem": session.access.level.is_some(),
                "generation": session.access.generation,
            },
            "lastActivityAt": lifecycle.activity.last_used(key),
            "openWebSockets": shared.upgrades.count_for(key),
            "wake": {
                "enabled": lifecycle.wakes.enabled(),
                "askedSecondsAgo": lifecycle.wakes.asked_ago(key).map(|d| d.as_secs_f64()),
            },
        });
        let mut bytes = serde_json::to_vec_pretty(&body).unwrap_or_default();
        bytes.push(b'\n');
        text(StatusCode::OK, "application/json", bytes)
    }
}

fn status_label(status: ContainerStatus) -> &'static str {
    match status {
        ContainerStatus::Starting => "starting",
        ContainerStatus::Running => "running",
        ContainerStatus::Stopping => "stopping",
        ContainerStatus::Stopped => "stopped",
    }
}

fn text(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    if let Ok(v) = content_type.parse() {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    let len = resp.body().len();
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, len.into());
    resp
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_owned();
        match path.as_str() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.shared.metrics.encode(),
            ),
            "/healthz" => text(StatusCode::OK, PLAIN, b"ok\n".to_vec()),
            "/readyz" if self.shared.resolver.is_ready() => {
                text(StatusCode::OK, PLAIN, b"ready\n".to_vec())
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                b"route table not loaded or stale\n".to_vec(),
            ),
            p if p.starts_with(SESSIONS) => self.session(&p[SESSIONS.len()..]).await,
            _ => text(StatusCode::NOT_FOUND, PLAIN, b"not found\n".to_vec()),
        }
    }
}
