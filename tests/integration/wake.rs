//! Waking stopped containers (contract section 1.7) through the real router binary, against moto's
//! DynamoDB and SQS: what a visitor sees, what lands in the queue or at the HTTP endpoint, and the
//! waking page's held request.

use crate::common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use common::moto::{s, Moto};
use common::served::Served;
use common::wire::CountingRelay;
use common::{Router, RouterOptions, Upstream};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const SESSIONS: &str = "webordinary-edit-sessions";

/// A desktop browser: its navigations may wake a container.
const BROWSER: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
    Chrome/131.0.0.0 Safari/537.36";

fn now_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    u64::try_from(since.as_millis()).unwrap()
}

/// Moto with the default tables and session acme-t1 (client acme) on container c1, stopped.
pub(crate) async fn stopped_session() -> Moto {
    let moto = Moto::start().await;
    moto.create_default_tables().await;
    moto.put(
        SESSIONS,
        &[
            ("sessionId", s("acme-t1")),
            ("containerId", s("c1")),
            ("clientId", s("acme")),
        ],
    )
    .await;
    moto.put_stopped_container("c1").await;
    moto
}

/// A router on moto's tables whose `[wake]` section is `wake`; `env` reaches its process.
fn waking(moto: &Moto, wake: &str, env: Vec<(String, String)>) -> RouterOptions {
    RouterOptions {
        dynamodb_endpoint: Some(moto.endpoint()),
        extra_toml: format!("\n[wake]\n{wake}\n"),
        env,
        ..RouterOptions::default()
    }
}

/// The SDK's own variable points the router's SQS client at moto.
fn sqs_env(moto: &Moto) -> Vec<(String, String)> {
    vec![("AWS_ENDPOINT_URL_SQS".to_owned(), moto.endpoint())]
}

fn sqs_wake(queue_url: &str) -> String {
    format!("kind = \"sqs\"\nqueue_url = \"{queue_url}\"\n")
}

pub(crate) async fn create_queue(moto: &Moto, name: &str) -> String {
    let mut create = moto.sqs().create_queue().queue_name(name);
    if name.ends_with(".fifo") {
        create = create.attributes(QueueAttributeName::FifoQueue, "true");
    }
    create
        .send()
        .await
        .expect("create queue")
        .queue_url
        .unwrap()
}

/// A received message: its body and, for FIFO queues, its group.
#[derive(Debug)]
pub(crate) struct Received {
    body: Value,
    group: Option<String>,
}

/// Every message in the queue: receives until one receive comes back empty (at most 5 times),
/// hiding each message for a minute so none is counted twice.
pub(crate) async fn drain(moto: &Moto, url: &str) -> Vec<Received> {
    let sqs = moto.sqs();
    let mut all = Vec::new();
    for _ in 0..5 {
        let got = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId)
            .send()
            .await
            .expect("receive");
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            break;
        }
        for m in messages {
            let group = m
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
                .cloned();
            let body = serde_json::from_str(m.body.as_deref().unwrap_or("")).expect("json body");
            all.push(Received { body, group });
        }
    }
    all
}

/// A browser's page load.
fn navigate(client: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    navigate_as(client, url, BROWSER)
}

/// A page load by `user_agent`.
fn navigate_as(client: &reqwest::Client, url: &str, user_agent: &str) -> reqwest::RequestBuilder {
    client
        .get(url)
        .header("user-agent", user_agent)
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-dest", "document")
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
}

/// What a visitor got.
#[derive(Debug)]
struct Seen {
    status: u16,
    retry_after: Option<String>,
    content_type: Option<String>,
    body: String,
}

async fn seen(req: reqwest::RequestBuilder) -> Seen {
    let resp = req.send().await.expect("request");
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    Seen {
        status: resp.status().as_u16(),
        retry_after: header("retry-after"),
        content_type: header("content-type"),
        body: resp.text().await.expect("body"),
    }
}

/// What a browser's page load got.
async fn seen_page(client: &reqwest::Client, url: &str) -> Seen {
    seen(navigate(client, url)).await
}

/// The waking page: 503, `Retry-After`, HTML that holds a request until the preview is routable.
fn assert_waking_page(seen: &Seen) {
    assert_eq!(seen.status, 503, "{seen:?}");
    assert_eq!(seen.retry_after.as_deref(), Some("2"), "{seen:?}");
    assert_eq!(
        seen.content_type.as_deref(),
        Some("text/html; charset=utf-8")
    );
    assert!(seen.body.contains("Waking your preview"), "{}", seen.body);
    assert!(seen.body.contains("X-Session-Router-Wait"), "{}", seen.body);
}

fn wake_series(result: &str) -> String {
    format!("session_router_wake_requests_total{{result=\"{result}\"}}")
}

/// Every wake result of a router, once `total` visits have been counted (or after 5 s).
async fn wake_counts(router: &Router, total: f64) -> [f64; 5] {
    let results = ["sent", "deduplicated", "cooldown", "ignored", "failed"];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let scrape = router.metrics().await;
        let counts = results.map(|r| common::metric_value(&scrape, &wake_series(r)));
        if counts.iter().sum::<f64>() >= total || Instant::now() > deadline {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The body of the contract: type, the session's ids, and the time asked (epoch ms).
fn assert_wake_body(body: &Value, asked_from: u64, asked_until: u64) {
    assert_eq!(body["type"], "session.wake", "{body}");
    assert_eq!(body["sessionId"], "acme-t1", "{body}");
    assert_eq!(body["clientId"], "acme", "{body}");
    assert_eq!(body["threadId"], "t1", "{body}");
    let at = body["requestedAt"]
        .as_u64()
        .expect("requestedAt in epoch ms");
    assert!(
        (asked_from..=asked_until).contains(&at),
        "requestedAt {at} outside {asked_from}..={asked_until}"
    );
    assert_eq!(body.as_object().unwrap().len(), 5, "nothing else: {body}");
}

/// Starts routers side by side (each start blocks until it is ready).
async fn start_routers(opts: Vec<RouterOptions>) -> Vec<Router> {
    let starts = opts
        .into_iter()
        .map(|o| tokio::task::spawn_blocking(move || Router::start("", o)));
    futures_util::future::join_all(starts)
        .await
        .into_iter()
        .map(|r| r.expect("router start"))
        .collect()
}

const VISITS_PER_ROUTER: usize = 10;

/// Three routers on the same tables, a burst of visits at all of them: every visitor sees the
/// waking page, and exactly one message lands in the queue.
async fn one_wake_for_a_burst_across_three_routers(queue: &str) {
    let moto = stopped_session().await;
    let url = create_queue(&moto, queue).await;
    // One store call at a time, as DynamoDB applies the conditional writes of one item.
    let wire = CountingRelay::serial(moto.addr);
    let opts = (0..3)
        .map(|_| RouterOptions {
            dynamodb_endpoint: Some(wire.endpoint()),
            ..waking(&moto, &sqs_wake(&url), sqs_env(&moto))
        })
        .collect();
    let routers = start_routers(opts).await;

    let asked_from = now_ms();
    let visits = routers.iter().flat_map(|router| {
        let client = router.client();
        let url = router.url("edit.acme.localhost", "/session/t1/");
        (0..VISITS_PER_ROUTER).map(move |_| {
            let req = navigate(&client, &url);
            tokio::spawn(seen(req))
        })
    });
    let seen_all: Vec<Seen> = futures_util::future::join_all(visits.collect::<Vec<_>>())
        .await
        .into_iter()
        .map(|r| r.expect("visit"))
        .collect();
    for seen in &seen_all {
        assert_waking_page(seen);
    }

    let mut totals = [0.0; 5];
    for router in &routers {
        let [sent, dedup, cooldown, ignored, failed] =
            wake_counts(router, VISITS_PER_ROUTER as f64).await;
        // Each router asks once; its other visits inside the cooldown go no further.
        assert_eq!(sent + dedup, 1.0, "{}", router.log());
        assert_eq!(cooldown, (VISITS_PER_ROUTER - 1) as f64);
        assert_eq!((ignored, failed), (0.0, 0.0), "{}", router.log());
        let waking = router
            .metric_eventually(
                "session_router_requests_total{outcome=\"container_waking\"}",
                VISITS_PER_ROUTER as f64,
            )
            .await;
        assert_eq!(waking, VISITS_PER_ROUTER as f64);
        for (t, c) in totals
            .iter_mut()
            .zip([sent, dedup, cooldown, ignored, failed])
        {
            *t += c;
        }
    }
    let asked_until = now_ms();
    assert_eq!(totals[0], 1.0, "one router sent the wake: {totals:?}");
    assert_eq!(totals[1], 2.0, "the two others lost the claim: {totals:?}");
    assert_eq!(wire.count("UpdateItem"), 3, "one claim per router");

    let messages = drain(&moto, &url).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let wake = &messages[0];
    assert_wake_body(&wake.body, asked_from, asked_until);
    let fifo = queue.ends_with(".fifo");
    assert_eq!(wake.group.as_deref(), fifo.then_some("acme-t1"));
    // The claim on the item is the time in the message.
    let claimed = moto.session_number("acme-t1", "wakeRequestedAt").await;
    assert_eq!(claimed, wake.body["requestedAt"].as_u64());
}

#[tokio::test]
async fn a_burst_of_visits_across_three_routers_sends_one_wake() {
    one_wake_for_a_burst_across_three_routers("wakes").await;
}

#[tokio::test]
async fn a_fifo_queue_gets_one_wake_grouped_by_session() {
    one_wake_for_a_burst_across_three_routers("wakes.fifo").await;
}

/// A WebSocket upgrade of the HMR client, by a browser; its status and body.
async fn upgrade_status(router: &Router) -> (u16, usize) {
    let host = format!("edit.acme.localhost:{}", router.proxy.port());
    let mut req = format!("ws://{host}/session/t1/")
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert("user-agent", BROWSER.parse().unwrap());
    headers.insert("sec-websocket-protocol", "vite-hmr".parse().unwrap());
    let tcp = tokio::net::TcpStream::connect(router.proxy).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            resp.body().as_ref().map_or(0, Vec::len),
        ),
        other => panic!("the upgrade was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn bots_heads_assets_and_upgrades_never_wake() {
    let moto = stopped_session().await;
    let queue = create_queue(&moto, "wakes").await;
    let router = Router::start("", waking(&moto, &sqs_wake(&queue), sqs_env(&moto)));
    let client = router.client();
    let page = router.url("edit.acme.localhost", "/session/t1/");

    for bot in [
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "curl/8.5.0",
    ] {
        let seen = seen(navigate_as(&client, &page, bot)).await;
        assert_eq!(seen.status, 503, "{bot}: {seen:?}");
        assert_eq!(seen.retry_after.as_deref(), Some("2"), "{bot}");
    }
    let head = client
        .head(&page)
        .header("user-agent", BROWSER)
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 503);
    assert_eq!(head.headers()["retry-after"], "2");

    // Assets and upgrades get the bare status.
    let asset = router.url("edit.acme.localhost", "/session/t1/src/main.ts");
    let asset = client
        .get(asset)
        .header("user-agent", BROWSER)
        .header("sec-fetch-mode", "no-cors")
        .header("accept", "*/*");
    let seen = seen(asset).await;
    assert_eq!(seen.status, 503, "{seen:?}");
    assert_eq!(seen.retry_after.as_deref(), Some("2"));
    assert_eq!(seen.content_type, None, "{seen:?}");
    assert!(seen.body.is_empty(), "bare for an asset: {seen:?}");
    assert_eq!(upgrade_status(&router).await, (503, 0));

    let [sent, dedup, cooldown, ignored, failed] = wake_counts(&router, 6.0).await;
    assert_eq!(ignored, 6.0, "{}", router.log());
    assert_eq!((sent, dedup, cooldown, failed), (0.0, 0.0, 0.0, 0.0));
    let waking = "session_router_requests_total{outcome=\"container_waking\"}";
    assert_eq!(router.metric_eventually(waking, 6.0).await, 6.0);
    assert!(drain(&moto, &queue).await.is_empty());
    assert_eq!(
        moto.session_number("acme-t1", "wakeRequestedAt").await,
        None,
        "nothing was claimed"
    );

    // The same router wakes for a person: the quiet above was not a broken waker.
    assert_waking_page(&seen_page(&client, &page).await);
    assert_eq!(wake_counts(&router, 7.0).await[0], 1.0, "{}", router.log());
    assert_eq!(drain(&moto, &queue).await.len(), 1);
}

#[tokio::test]
async fn without_a_waker_a_stopped_session_stays_paused() {
    let moto = stopped_session().await;
    // A session whose container is not recorded at all: taken to be starting, as before.
    moto.put(
        SESSIONS,
        &[("sessionId", s("acme-t2")), ("containerId", s("c-none"))],
    )
    .await;
    let opts = RouterOptions {
        dynamodb_endpoint: Some(moto.endpoint()),
        ..RouterOptions::default()
    };
    let router = Router::start("", opts);
    let client = router.client();

    let paused = seen_page(&client, &router.url("edit.acme.localhost", "/session/t1/")).await;
    assert_eq!(paused.status, 503, "{paused:?}");
    assert!(paused.body.contains("Session paused"), "{}", paused.body);
    assert!(!paused.body.contains("X-Session-Router-Wait"));
    assert_eq!(paused.retry_after, None);
    let starting = seen_page(&client, &router.url("edit.acme.localhost", "/session/t2/")).await;
    assert_eq!(starting.status, 503);
    assert!(starting.body.contains("Starting your preview"));

    let stopped = "session_router_requests_total{outcome=\"container_stopped\"}";
    assert_eq!(router.metric_eventually(stopped, 1.0).await, 1.0);
    let scrape = router.metrics().await;
    for result in ["sent", "deduplicated", "cooldown", "ignored", "failed"] {
        assert_eq!(common::metric_value(&scrape, &wake_series(result)), 0.0);
    }
    assert_eq!(
        common::metric_value(
            &scrape,
            "session_router_requests_total{outcome=\"container_waking\"}"
        ),
        0.0
    );
    assert_eq!(
        moto.session_number("acme-t1", "wakeRequestedAt").await,
        None
    );
}

/// What an HTTP wake endpoint received: each request's headers and body.
type Posts = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

fn wake_endpoint(posts: Posts) -> Served {
    async fn receive(State(posts): State<Posts>, headers: HeaderMap, body: Bytes) -> &'static str {
        posts.lock().unwrap().push((headers, body));
        "ok"
    }
    let app = axum::Router::new()
        .route("/wake", axum::routing::post(receive))
        .with_state(posts);
    Served::start(SocketAddr::from(([127, 0, 0, 1], 0)), app)
}

fn hex_decode(hex: &str) -> Vec<u8> {
    assert_eq!(hex.len() % 2, 0, "{hex}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

#[tokio::test]
async fn http_wakes_are_signed_posts() {
    const SECRET: &str = "wake-secret-of-this-test";
    let moto = stopped_session().await;
    // This session's container is not recorded at all: with a waker, it is woken too.
    moto.put(
        SESSIONS,
        &[
            ("sessionId", s("acme-t2")),
            ("containerId", s("c-none")),
            ("clientId", s("acme")),
        ],
    )
    .await;
    let posts = Posts::default();
    let endpoint = wake_endpoint(posts.clone());
    let wake = format!("kind = \"http\"\nurl = \"http://{}/wake\"\n", endpoint.addr);
    // The secret comes from the environment, as the contract says.
    let env = vec![("SESSION_ROUTER__WAKE__SECRET".to_owned(), SECRET.to_owned())];
    let router = Router::start("", waking(&moto, &wake, env));
    let client = router.client();

    let asked_from = now_ms();
    let page = seen_page(&client, &router.url("edit.acme.localhost", "/session/t1/")).await;
    assert_waking_page(&page);
    let absent = seen_page(&client, &router.url("edit.acme.localhost", "/session/t2/")).await;
    assert_waking_page(&absent);
    let [sent, ..] = wake_counts(&router, 2.0).await;
    let asked_until = now_ms();
    assert_eq!(sent, 2.0, "{}", router.log());

    let posts = std::mem::take(&mut *posts.lock().unwrap());
    assert_eq!(posts.len(), 2, "{posts:?}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let mut threads = Vec::new();
    for (headers, body) in &posts {
        assert_eq!(headers["content-type"], "application/json");
        let signature = headers["x-session-router-signature"].to_str().unwrap();
        let hex = signature.strip_prefix("sha256=").expect("sha256= prefix");
        assert_eq!(hex.len(), 64, "{signature}");
        assert_eq!(hex, hex.to_ascii_lowercase(), "lower-case hex");
        ring::hmac::verify(&key, body, &hex_decode(hex)).expect("HMAC-SHA256 of the body");
        let wrong = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"another secret");
        assert!(ring::hmac::verify(&wrong, body, &hex_decode(hex)).is_err());

        let json: Value = serde_json::from_slice(body).expect("json body");
        threads.push(json["threadId"].as_str().unwrap().to_owned());
        if json["threadId"] == "t1" {
            assert_wake_body(&json, asked_from, asked_until);
        }
    }
    threads.sort();
    assert_eq!(threads, ["t1", "t2"]);
}

/// A held request of the waking page: its status, `Retry-After` and when it was answered.
pub(crate) async fn held(client: reqwest::Client, url: String) -> (u16, Option<String>, Instant) {
    let resp = client
        .get(url)
        .header("user-agent", BROWSER)
        .header("x-session-router-wait", "1")
        .send()
        .await
        .expect("held request");
    let answered = Instant::now();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (resp.status().as_u16(), retry_after, answered)
}

/// A router that learns of the container only by watching: no full refresh during the test.
pub(crate) fn watching(moto: &Moto, queue_url: &str, wait_timeout: &str) -> RouterOptions {
    let wake = format!("{}wait_timeout = \"{wait_timeout}\"\n", sqs_wake(queue_url));
    RouterOptions {
        refresh_interval: "1h",
        negative_ttl: "1h",
        max_staleness: "2h",
        ..waking(moto, &wake, sqs_env(moto))
    }
}

#[tokio::test]
async fn the_waiting_page_shows_the_preview_once_the_container_runs() {
    let up = Upstream::start("woken").await;
    let moto = stopped_session().await;
    let queue = create_queue(&moto, "wakes").await;
    let router = Router::start("", watching(&moto, &queue, "10s"));
    let client = router.client();
    let url = router.url("edit.acme.localhost", "/session/t1/");

    assert_waking_page(&seen_page(&client, &url).await);
    assert_eq!(wake_counts(&router, 1.0).await[0], 1.0, "{}", router.log());

    let wait = tokio::spawn(held(client.clone(), url.clone()));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!wait.is_finished(), "answered before the container ran");

    // The platform started the container and recorded it.
    moto.put_container("c1", up.addr).await;
    let written = Instant::now();
    let (status, _, answered) = wait.await.unwrap();
    let delay = answered.saturating_duration_since(written);
    println!("wait answered {delay:?} after the container was written running");
    assert_eq!(status, 204, "{}", router.log());
    assert!(
        delay < Duration::from_millis(1500),
        "answered after {delay:?}"
    );

    let resp = navigate(&client, &url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let echo: Value = resp.json().await.unwrap();
    assert_eq!(echo["upstream"], "woken");
    let cold = router
        .metric_eventually("session_router_cold_start_seconds_count", 1.0)
        .await;
    assert_eq!(cold, 1.0, "{}", router.log());
    let routed = "session_router_requests_total{outcome=\"routed\"}";
    assert_eq!(router.metric_eventually(routed, 1.0).await, 1.0);
}

#[tokio::test]
async fn a_held_wait_asks_for_a_lost_wake_then_runs_out() {
    let moto = stopped_session().await;
    let queue = create_queue(&moto, "wakes").await;
    let router = Router::start("", watching(&moto, &queue, "500ms"));
    let url = router.url("edit.acme.localhost", "/session/t1/");
    let started = Instant::now();
    let (status, retry_after, answered) = held(router.client(), url).await;
    let held_for = answered - started;
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")));
    assert!(
        held_for >= Duration::from_millis(450) && held_for < Duration::from_secs(3),
        "held for {held_for:?}"
    );
    // No visit asked for this container (or its wake was lost): the waiting page's own
    // request asks, so that a lost wake is asked for again once the cooldown has passed.
    let sent = router.metric_eventually(&wake_series("sent"), 1.0).await;
    assert_eq!(sent, 1.0, "{}", router.log());
    assert_eq!(drain(&moto, &queue).await.len(), 1);
}
