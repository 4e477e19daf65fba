//! HTTP routing through the real router: by thread, by client, by Referer and cookie, in path
//! and host mode, with the forwarded request checked at real upstreams.

use crate::common;

use common::{one_session, session, sessions_toml, Router, RouterOptions, Session, Upstream};
use serde_json::Value;

struct Fixture {
    router: Router,
    acme_t1: Upstream,
    acme_t2: Upstream,
    globex_t1: Upstream,
}

async fn fixture() -> Fixture {
    let acme_t1 = Upstream::start("acme-t1").await;
    let acme_t2 = Upstream::start("acme-t2").await;
    let globex_t1 = Upstream::start("globex-t1").await;
    let sessions = [
        session("acme-t1", "c1"),
        session("acme-t2", "c2"),
        Session {
            client: Some("globex"),
            ..session("globex-t1", "c3")
        },
    ];
    let containers = [
        ("c1", Some(acme_t1.addr), "running"),
        ("c2", Some(acme_t2.addr), "running"),
        ("c3", Some(globex_t1.addr), "running"),
    ];
    let router = Router::start(
        &sessions_toml(&sessions, &containers),
        RouterOptions::default(),
    );
    Fixture {
        router,
        acme_t1,
        acme_t2,
        globex_t1,
    }
}

async fn get_json(
    router: &Router,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (reqwest::StatusCode, Value) {
    let mut req = router.client().get(router.url(host, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn header<'v>(echo: &'v Value, name: &str) -> Option<&'v str> {
    echo["headers"][name][0].as_str()
}

#[tokio::test]
async fn routes_by_thread_and_by_client() {
    let f = fixture().await;
    for (host, path, want) in [
        ("edit.acme.localhost", "/session/t1/a", "acme-t1"),
        ("edit.acme.localhost", "/session/t2/a", "acme-t2"),
        ("edit.globex.localhost", "/session/t1/a", "globex-t1"),
    ] {
        let (status, echo) = get_json(&f.router, host, path, &[]).await;
        assert_eq!(status, 200, "{host}{path}");
        assert_eq!(echo["upstream"], want, "{host}{path}");
        assert_eq!(echo["uri"], "/a");
    }
    assert_eq!(
        (f.acme_t1.hits(), f.acme_t2.hits(), f.globex_t1.hits()),
        (1, 1, 1)
    );
}

#[tokio::test]
async fn strips_prefix_keeps_query_and_sets_forwarding_headers() {
    let f = fixture().await;
    let (status, echo) = get_json(
        &f.router,
        "edit.acme.localhost",
        "/session/t1/src/a.js?v=1&t=x%20y",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(echo["uri"], "/src/a.js?v=1&t=x%20y");
    let public_host = format!("edit.acme.localhost:{}", f.router.proxy.port());
    assert_eq!(header(&echo, "host"), Some(public_host.as_str()));
    assert_eq!(
        header(&echo, "x-forwarded-host"),
        Some(public_host.as_str())
    );
    assert_eq!(header(&echo, "x-forwarded-prefix"), Some("/session/t1"));
    assert_eq!(header(&echo, "x-forwarded-proto"), Some("http"));
    assert_eq!(header(&echo, "x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test]
async fn client_sent_forwarding_headers_are_replaced() {
    let f = fixture().await;
    let spoofed = [
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-prefix", "/evil"),
    ];
    let (_, echo) = get_json(&f.router, "edit.acme.localhost", "/session/t1/", &spoofed).await;
    assert_eq!(
        echo["headers"]["x-forwarded-for"],
        serde_json::json!(["127.0.0.1"])
    );
    assert_eq!(header(&echo, "x-forwarded-prefix"), Some("/session/t1"));
}

#[tokio::test]
async fn navigation_sets_host_only_affinity_cookie() {
    let f = fixture().await;
    let client = f.router.client();
    let url = f.router.url("edit.acme.localhost", "/session/t1/");
    let nav = client
        .get(&url)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(nav.status(), 200);
    let cookie = nav.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert_eq!(cookie, "sr_session=t1; Path=/; HttpOnly; SameSite=Lax");
    let asset = client
        .get(&url)
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    assert!(asset.headers().get("set-cookie").is_none());
    let again = client
        .get(&url)
        .header("accept", "text/html")
        .header("cookie", "sr_session=t1")
        .send()
        .await
        .unwrap();
    assert!(
        again.headers().get("set-cookie").is_none(),
        "cookie already right"
    );
}

#[tokio::test]
async fn root_absolute_requests_follow_referer_then_cookie() {
    let f = fixture().await;
    let port = f.router.proxy.port();
    let referer = format!("http://edit.acme.localhost:{port}/session/t2/page");
    let (_, echo) = get_json(
        &f.router,
        "edit.acme.localhost",
        "/@vite/client",
        &[("referer", &referer)],
    )
    .await;
    assert_eq!(echo["upstream"], "acme-t2");
    assert_eq!(echo["uri"], "/@vite/client");

    let cookie = [("cookie", "theme=dark; sr_session=t1")];
    let (_, echo) = get_json(
        &f.router,
        "edit.acme.localhost",
        "/src/main.ts?t=1",
        &cookie,
    )
    .await;
    assert_eq!(echo["upstream"], "acme-t1");
    assert_eq!(echo["uri"], "/src/main.ts?t=1");
    assert_eq!(echo["headers"]["cookie"], serde_json::json!(["theme=dark"]));

    let both = [("cookie", "sr_session=t1"), ("referer", referer.as_str())];
    let (_, echo) = get_json(&f.router, "edit.acme.localhost", "/@id/x", &both).await;
    assert_eq!(echo["upstream"], "acme-t2", "Referer wins over the cookie");
}

#[tokio::test]
async fn another_clients_thread_never_routes() {
    let f = fixture().await;
    let port = f.router.proxy.port();
    // globex has no t2: acme's t2 must not be reachable from globex's host by any hint.
    let (status, _) = get_json(&f.router, "edit.globex.localhost", "/session/t2/", &[]).await;
    assert_eq!(status, 404);
    let (status, _) = get_json(
        &f.router,
        "edit.globex.localhost",
        "/x",
        &[("cookie", "sr_session=t2")],
    )
    .await;
    assert_eq!(status, 404);
    let referer = format!("http://edit.acme.localhost:{port}/session/t2/");
    let (status, _) = get_json(
        &f.router,
        "edit.globex.localhost",
        "/x",
        &[("referer", &referer)],
    )
    .await;
    assert_eq!(status, 404);
    // acme's t1 exists, but globex-t1 names globex: acme's host gets acme's own t1.
    let (_, echo) = get_json(&f.router, "edit.acme.localhost", "/session/t1/", &[]).await;
    assert_eq!(echo["upstream"], "acme-t1");
    assert_eq!(f.acme_t2.hits(), 0);
}

#[tokio::test]
async fn host_mode_routes_without_prefix_or_cookie() {
    let f = fixture().await;
    let resp = f
        .router
        .client()
        .get(f.router.url("t2.edit.acme.localhost", "/@vite/client?x=1"))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get("set-cookie").is_none());
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["upstream"], "acme-t2");
    assert_eq!(echo["uri"], "/@vite/client?x=1");
    assert_eq!(header(&echo, "x-forwarded-prefix"), None);
    let (_, echo) = get_json(&f.router, "t1.edit.globex.localhost", "/", &[]).await;
    assert_eq!(echo["upstream"], "globex-t1");
}

#[tokio::test]
async fn trusted_balancer_forwarding_headers_are_extended() {
    let up = Upstream::start("up").await;
    let opts = RouterOptions {
        listen_extra: "trusted_proxies = [\"127.0.0.0/8\"]".into(),
        ..RouterOptions::default()
    };
    let sessions = one_session(Some(up.addr), "running");
    let router = Router::start(&sessions, opts);
    let from_alb = [
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ];
    let (_, echo) = get_json(&router, "edit.acme.localhost", "/session/t1/", &from_alb).await;
    assert_eq!(
        header(&echo, "x-forwarded-for"),
        Some("203.0.113.7, 127.0.0.1")
    );
    assert_eq!(header(&echo, "x-forwarded-proto"), Some("https"));
}
