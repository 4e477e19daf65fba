//! The admin listener: `/metrics` for Prometheus, `/healthz` (the process answers) and `/readyz`
//! (a route table is loaded and fresh enough) for the balancer.

use std::sync::Arc;

use async_trait::async_trait;
use http::{header, Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::table::Resolver;

pub struct AdminApp {
    metrics: Arc<Metrics>,
    resolver: Arc<Resolver>,
}

impl AdminApp {
    pub fn new(metrics: Arc<Metrics>, resolver: Arc<Resolver>) -> Self {
        AdminApp { metrics, resolver }
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
        const PLAIN: &str = "text/plain; charset=utf-8";
        match session.req_header().uri.path() {
            "/metrics" => text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.encode(),
            ),
            "/healthz" => text(StatusCode::OK, PLAIN, b"ok\n".to_vec()),
            "/readyz" if self.resolver.is_ready() => {
                text(StatusCode::OK, PLAIN, b"ready\n".to_vec())
            }
            "/readyz" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                b"route table not loaded or stale\n".to_vec(),
            ),
            _ => text(StatusCode::NOT_FOUND, PLAIN, b"not found\n".to_vec()),
        }
    }
}
