//! Private previews through the real router, on both engines: a link token exchanged for a grant
//! cookie, grants that open their own session only, refusals as a person and a script see them,
//! neither credential reaching the container, and revocation by access generation, from the
//! file store and from DynamoDB (moto).

use crate::common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::moto::{n, s, Moto};
use common::{Router, RouterOptions, Upstream};
use futures_util::StreamExt;
use serde_json::Value;
use session_router::access::mint::{self, Link};
use tokio::net::TcpStream;
use tokio_tungstenite::client_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const HOST: &str = "edit.acme.localhost";
const SECRET: &str = "grant secret of the access tests, 32+ bytes";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    FastPath,
    Pingora,
}

const ENGINES: [Engine; 2] = [Engine::FastPath, Engine::Pingora];

/// The editing app's side: a signing key, and the JWKS the router is given.
struct Signer {
    private_key: String,
}

impl Signer {
    fn new(dir: &Path) -> Signer {
        let key = mint::new_key("k1").expect("key");
        let jwks = serde_json::json!({ "keys": [key["jwk"]] });
        std::fs::write(dir.join("jwks.json"), jwks.to_string()).expect("jwks");
        Signer {
            private_key: key["private_key"].as_str().expect("private key").to_owned(),
        }
    }

    fn token(&self, thread: &str, ttl: Duration, gen: u64) -> String {
        let link = Link {
            audience: "session-router",
            client: "acme",
            thread,
            ttl,
            gen,
        };
        mint::token(&self.private_key, "k1", &link).expect("token")
    }

    fn link(&self, thread: &str) -> String {
        self.token(thread, Duration::from_secs(300), 0)
    }
}

/// Router options for private previews on `engine`, with the JWKS in `keys`.
fn private_opts(engine: Engine, keys: &Path) -> RouterOptions {
    let mut opts = RouterOptions {
        access_toml: format!(
            "default = \"private\"\njwks_path = \"{}\"\ngrant_secret = \"{SECRET}\"\n",
            keys.join("jwks.json").display()
        ),
        ..RouterOptions::default()
    };
    if engine == Engine::Pingora {
        opts.listen_extra = "fast_path = false\n".to_owned();
    }
    opts
}

/// Threads t1 and t2 of acme on one container; t1 at access generation `gen`, `public` says
/// whether t2 is public (t1 takes the default).
fn sessions(addr: SocketAddr, gen: u64, t2_public: bool) -> String {
    let t2_access = if t2_public {
        "access = \"public\"\n"
    } else {
        ""
    };
    format!(
        "[sessions.\"acme-t1\"]\ncontainer_id = \"c1\"\naccess_generation = {gen}\n\n\
         [sessions.\"acme-t2\"]\ncontainer_id = \"c1\"\n{t2_access}\n\
         [containers.\"c1\"]\nip = \"{}\"\nport = {}\n",
        addr.ip(),
        addr.port()
    )
}

struct Staged {
    router: Router,
    up: Upstream,
    signer: Signer,
    _keys: tempfile::TempDir,
}

async fn stage(engine: Engine) -> Staged {
    let keys = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(keys.path());
    let up = Upstream::start("c1").await;
    let router = Router::start(
        &sessions(up.addr, 0, true),
        private_opts(engine, keys.path()),
    );
    Staged {
        router,
        up,
        signer,
        _keys: keys,
    }
}

/// A GET as a browser's navigation or script would send it.
async fn get(router: &Router, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = router.client().get(router.url(HOST, path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("request")
}

const NAVIGATE: (&str, &str) = ("sec-fetch-mode", "navigate");

/// Exchanges a link for its grant cookie; returns the cookie's `name=value`.
async fn exchange(staged: &Staged, thread: &str) -> String {
    let path = format!(
        "/session/{thread}/?x=1&sr_token={}",
        staged.signer.link(thread)
    );
    let resp = get(&staged.router, &path, &[NAVIGATE]).await;
    assert_eq!(resp.status(), 303, "{}", staged.router.log());
    let location = resp.headers()["location"].to_str().unwrap();
    assert_eq!(
        location,
        format!("/session/{thread}/?x=1"),
        "the same URL, no token"
    );
    let set = resp.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "Path=/", "SameSite=Lax", "Max-Age="] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    assert!(!set.contains("Domain"), "host-only: {set}");
    assert!(set.starts_with(&format!("sr_grant_{thread}=")), "{set}");
    set.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn without_a_grant_a_private_preview_is_refused_as_each_kind_of_request_expects() {
    for engine in ENGINES {
        let staged = stage(engine).await;
        let router = &staged.router;
        let page = get(router, "/session/t1/", &[NAVIGATE]).await;
        assert_eq!(page.status(), 401, "{engine:?}");
        assert_eq!(page.headers()["cache-control"], "no-store");
        let body = page.text().await.unwrap();
        assert!(body.contains("Open the preview from your editor"), "{body}");
        let asset = get(
            router,
            "/@vite/client",
            &[("referer", "http://edit.acme.localhost/session/t1/")],
        )
        .await;
        assert_eq!(asset.status(), 401);
        assert!(asset.text().await.unwrap().is_empty(), "bare for assets");
        let upgrade = raw_upgrade(router, "/?token=t", "sr_session=t1").await;
        assert!(upgrade.starts_with("HTTP/1.1 401"), "{engine:?}: {upgrade}");
        assert_eq!(staged.up.hits(), 0, "nothing reached the container");
        let missing = "session_router_access_total{result=\"missing\"}";
        assert_eq!(
            router.metric_eventually(missing, 3.0).await,
            3.0,
            "{engine:?}"
        );
        let denied = "session_router_requests_total{outcome=\"access_denied\"}";
        assert_eq!(router.metric(denied).await, 3.0);
    }
}

#[tokio::test]
async fn a_link_becomes_a_grant_that_opens_its_session_and_reaches_no_container() {
    for engine in ENGINES {
        let staged = stage(engine).await;
        let router = &staged.router;
        let cookie = exchange(&staged, "t1").await;
        let with_cookie = format!("a=1; {cookie}; sr_session=t1");
        let page = get(
            router,
            "/session/t1/?x=1",
            &[NAVIGATE, ("cookie", &with_cookie)],
        )
        .await;
        assert_eq!(page.status(), 200, "{engine:?}: {}", router.log());
        let echo: Value = page.json().await.unwrap();
        assert_eq!(echo["uri"], "/?x=1");
        assert_eq!(
            echo["headers"]["cookie"][0], "a=1",
            "neither grant nor affinity forwarded"
        );
        let referer = format!("http://{HOST}/session/t1/");
        let asset_headers = [("referer", referer.as_str()), ("cookie", cookie.as_str())];
        let asset = get(router, "/@vite/client", &asset_headers).await;
        assert_eq!(
            asset.status(),
            200,
            "root-absolute assets pass on the grant"
        );
        let other = get(router, "/session/t3/", &[NAVIGATE, ("cookie", &cookie)]).await;
        assert_eq!(
            other.status(),
            404,
            "t3 does not exist: unknown, whatever the grant"
        );
        let t1_grant_value = cookie.split_once('=').unwrap().1;
        let renamed = format!("sr_grant_t2={t1_grant_value}; {cookie}");
        let foreign = get(router, "/session/t2/", &[NAVIGATE, ("cookie", &renamed)]).await;
        assert_eq!(foreign.status(), 200, "t2 is public");
        let private_t2 = stage_private_t2(&staged).await;
        let refused = get(
            &private_t2,
            "/session/t2/",
            &[NAVIGATE, ("cookie", &renamed)],
        )
        .await;
        assert_eq!(
            refused.status(),
            401,
            "a grant for t1 renamed for t2 opens nothing"
        );
        let token = "session_router_access_total{result=\"token\"}";
        assert_eq!(router.metric_eventually(token, 1.0).await, 1.0);
        let grant = "session_router_access_total{result=\"grant\"}";
        assert_eq!(router.metric(grant).await, 2.0, "{engine:?}");
    }
}

/// A second router on the same keys and grant secret, where t2 is private too: a grant from
/// one router of the fleet is good on another.
async fn stage_private_t2(staged: &Staged) -> Router {
    let dir = staged._keys.path();
    let text = sessions(staged.up.addr, 0, false);
    Router::start(&text, private_opts(Engine::FastPath, dir))
}

#[tokio::test]
async fn expired_foreign_and_misplaced_tokens_are_refused() {
    for engine in ENGINES {
        let staged = stage(engine).await;
        let router = &staged.router;
        // Expiring now is still within the 30 s leeway for clocks apart; an hour ago is not.
        let expired = staged.signer.token("t1", Duration::ZERO, 0);
        let stale = mint_expired(&staged.signer);
        for (token, result) in [
            (stale.as_str(), "expired"),
            ("not-a-jwt", "invalid"),
            (&staged.signer.link("t2"), "invalid"),
        ] {
            let path = format!("/session/t1/?sr_token={token}");
            let resp = get(router, &path, &[NAVIGATE]).await;
            assert_eq!(resp.status(), 401, "{engine:?} {result}");
            let series = format!("session_router_access_total{{result=\"{result}\"}}");
            assert!(
                router.metric_eventually(&series, 1.0).await >= 1.0,
                "{series}"
            );
        }
        // Within the leeway an expired-just-now token is still taken.
        let path = format!("/session/t1/?sr_token={expired}");
        assert_eq!(get(router, &path, &[NAVIGATE]).await.status(), 303);
        let upgrade = raw_upgrade(router, &format!("/?sr_token={expired}"), "sr_session=t1").await;
        assert!(
            upgrade.starts_with("HTTP/1.1 401"),
            "no exchange on an upgrade: {upgrade}"
        );
        assert_eq!(staged.up.hits(), 0, "no token reached the container");
    }
}

/// A token signed with the right key whose `exp` is an hour ago.
fn mint_expired(signer: &Signer) -> String {
    use base64::Engine as _;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"aud": "session-router", "client": "acme", "thread": "t1",
        "iat": now - 3660, "exp": now - 3600});
    let der = base64::engine::general_purpose::STANDARD
        .decode(&signer.private_key)
        .unwrap();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some("k1".to_owned());
    jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_ed_der(&der),
    )
    .unwrap()
}

#[tokio::test]
async fn public_sessions_need_nothing_and_drop_a_stray_token() {
    for engine in ENGINES {
        let staged = stage(engine).await;
        let router = &staged.router;
        let page = get(router, "/session/t2/", &[NAVIGATE]).await;
        assert_eq!(page.status(), 200, "{engine:?}");
        let path = "/session/t2/?sr_token=whatever&y=2";
        let resp = get(router, path, &[NAVIGATE]).await;
        assert_eq!(resp.status(), 303);
        assert_eq!(resp.headers()["location"], "/session/t2/?y=2");
        assert!(
            resp.headers().get("set-cookie").is_none(),
            "no grant for a bad token"
        );
        let public = "session_router_access_total{result=\"public\"}";
        assert_eq!(router.metric_eventually(public, 2.0).await, 2.0);
    }
}

#[tokio::test]
async fn behind_tls_the_grant_can_be_framed_by_another_site() {
    let keys = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(keys.path());
    let up = Upstream::start("c1").await;
    let mut opts = private_opts(Engine::Pingora, keys.path());
    opts.listen_extra += "trusted_proxies = [\"127.0.0.1/32\"]\n";
    let router = Router::start(&sessions(up.addr, 0, true), opts);
    let path = format!("/session/t1/?sr_token={}", signer.link("t1"));
    let resp = get(&router, &path, &[NAVIGATE, ("x-forwarded-proto", "https")]).await;
    assert_eq!(resp.status(), 303);
    let set = resp.headers()["set-cookie"].to_str().unwrap();
    for attribute in ["Secure", "SameSite=None", "Partitioned", "HttpOnly"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
}

#[tokio::test]
async fn raising_the_access_generation_revokes_grants_and_closes_hmr_sockets() {
    for engine in ENGINES {
        let staged = stage(engine).await;
        let router = &staged.router;
        let cookie = exchange(&staged, "t1").await;
        let mut ws = open_hmr(router, &cookie).await;
        let public_ws = open_hmr(router, "sr_session=t2").await;
        router.write_sessions(&sessions(staged.up.addr, 1, true));
        let started = Instant::now();
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                assert_eq!(u16::from(frame.code), 1008, "policy violation")
            }
            other => panic!("{engine:?}: expected a close frame, got {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        let revoked = "session_router_websocket_closed_on_revoke_total";
        assert_eq!(
            router.metric_eventually(revoked, 1.0).await,
            1.0,
            "only t1's socket"
        );
        drop(public_ws);
        let page = get(router, "/session/t1/", &[NAVIGATE, ("cookie", &cookie)]).await;
        assert_eq!(page.status(), 401, "{engine:?}: the old grant is revoked");
        let result = "session_router_access_total{result=\"revoked\"}";
        assert_eq!(router.metric_eventually(result, 1.0).await, 1.0);
        let old_link = staged.signer.token("t1", Duration::from_secs(300), 0);
        let path = format!("/session/t1/?sr_token={old_link}");
        assert_eq!(
            get(router, &path, &[NAVIGATE]).await.status(),
            401,
            "older links too"
        );
        let new_link = staged.signer.token("t1", Duration::from_secs(300), 1);
        let path = format!("/session/t1/?sr_token={new_link}");
        assert_eq!(
            get(router, &path, &[NAVIGATE]).await.status(),
            303,
            "a new link works"
        );
    }
}

#[tokio::test]
async fn access_and_generation_come_from_dynamodb_items() {
    let keys = tempfile::tempdir().expect("tempdir");
    let signer = Signer::new(keys.path());
    let up = Upstream::start("c1").await;
    let moto = Moto::start().await;
    moto.create_default_tables().await;
    let item = |gen: &str| {
        vec![
            ("sessionId", s("acme-t1")),
            ("containerId", s("c1")),
            ("access", s("private")),
            ("accessGeneration", n(gen)),
        ]
    };
    moto.put("webordinary-edit-sessions", &item("4")).await;
    let public = [
        ("sessionId", s("acme-t2")),
        ("containerId", s("c1")),
        ("access", s("public")),
    ];
    moto.put("webordinary-edit-sessions", &public).await;
    moto.put_container("c1", up.addr).await;
    let mut opts = private_opts(Engine::FastPath, keys.path());
    opts.access_toml = opts.access_toml.replace("\"private\"", "\"public\"");
    opts.dynamodb_endpoint = Some(moto.endpoint());
    opts.refresh_interval = "300ms";
    let router = Router::start_without_sessions(opts);
    let staged_get = |path: String, cookie: Option<String>| {
        let router = &router;
        async move {
            let mut headers = vec![NAVIGATE];
            let cookie = cookie.unwrap_or_default();
            if !cookie.is_empty() {
                headers.push(("cookie", cookie.as_str()));
            }
            get(router, &path, &headers).await
        }
    };
    assert_eq!(staged_get("/session/t2/".into(), None).await.status(), 200);
    assert_eq!(
        staged_get("/session/t1/".into(), None).await.status(),
        401,
        "item says private"
    );
    let old = signer.token("t1", Duration::from_secs(300), 3);
    let resp = staged_get(format!("/session/t1/?sr_token={old}"), None).await;
    assert_eq!(resp.status(), 401, "a link below generation 4");
    let link = signer.token("t1", Duration::from_secs(300), 4);
    let resp = staged_get(format!("/session/t1/?sr_token={link}"), None).await;
    assert_eq!(resp.status(), 303);
    let cookie = resp.headers()["set-cookie"].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let page = staged_get("/session/t1/".into(), Some(cookie.clone())).await;
    assert_eq!(page.status(), 200);
    moto.put("webordinary-edit-sessions", &item("5")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = staged_get("/session/t1/".into(), Some(cookie.clone()))
            .await
            .status();
        if status == 401 {
            break;
        }
        assert!(Instant::now() < deadline, "grant still accepted: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Opens the HMR socket as the Vite client of a path-mode page does, with `cookie`.
async fn open_hmr(router: &Router, cookie: &str) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let host = format!("{HOST}:{}", router.proxy.port());
    let mut req = format!("ws://{host}/?token=tok")
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    let affinity = if cookie.contains("sr_session") {
        cookie.to_owned()
    } else {
        format!("{cookie}; sr_session=t1")
    };
    headers.insert("cookie", affinity.parse().unwrap());
    let tcp = TcpStream::connect(router.proxy).await.unwrap();
    let (mut ws, _) = client_async(req, tcp).await.expect("upgrade with a grant");
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(hello)))) => {
            let hello: Value = serde_json::from_str(&hello).unwrap();
            assert!(
                hello["headers"].get("cookie").is_none(),
                "no router cookie reaches the container: {hello}"
            );
        }
        other => panic!("expected the container's hello, got {other:?}"),
    }
    ws
}

/// Sends a WebSocket upgrade by hand and returns the head of the answer.
async fn raw_upgrade(router: &Router, path: &str, cookie: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = TcpStream::connect(router.proxy).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Protocol: vite-hmr\r\nCookie: {cookie}\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
