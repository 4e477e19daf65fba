//! Store reads for sessions missing from memory are bounded per client address and in total, on
//! both engines: random session ids cost at most the budgets' bursts of GetItem calls on the
//! wire, the rest are answered `rate_limited` (429 + Retry-After), and one client's flood does
//! not starve another's budget.

use crate::common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::wire::CountingRelay;
use common::{Router, RouterOptions, Upstream, PREVIEW_HOSTS};
use futures_util::StreamExt;

/// Budgets small enough to count exactly: refills add a hundredth of a token a second.
const SMALL_BUDGETS: &str = "miss_rate_per_client = 0.01\nmiss_burst_per_client = 10\n\
                             miss_rate_total = 0.01\nmiss_burst_total = 15";

const LIMITED: &str = "session_router_store_misses_limited_total";

/// A session id no store holds, new on every call.
fn random_thread() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("r{}x{n}", std::process::id())
}

/// A client of `router` whose connections come from `local` (any of 127/8 reaches it).
fn client_from(router: &Router, local: &str) -> reqwest::Client {
    let local: IpAddr = local.parse().expect("local address");
    let mut b = reqwest::Client::builder()
        .local_address(local)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for host in PREVIEW_HOSTS {
        b = b.resolve(host, router.proxy);
    }
    b.build().expect("client")
}

struct Answered {
    thread: String,
    status: u16,
    retry_after: Option<String>,
    content_type: Option<String>,
}

async fn get(router: &Router, client: &reqwest::Client, thread: &str, xff: &str) -> Answered {
    let mut req = client.get(router.url("edit.acme.localhost", &format!("/session/{thread}/")));
    if !xff.is_empty() {
        req = req.header("x-forwarded-for", xff);
    }
    let resp = req.send().await.expect("request");
    let header = |name| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Answered {
        thread: thread.to_owned(),
        status: resp.status().as_u16(),
        retry_after: header("retry-after"),
        content_type: header("content-type"),
    }
}

/// `count` random ids from `client`, 16 at a time; `xff(i)` is request i's X-Forwarded-For.
async fn flood(
    router: &Router,
    client: &reqwest::Client,
    count: usize,
    xff: impl Fn(usize) -> String,
) -> Vec<Answered> {
    let requests = (0..count).map(|i| {
        let xff = xff(i);
        async move { get(router, client, &random_thread(), &xff).await }
    });
    futures_util::stream::iter(requests)
        .buffer_unordered(16)
        .collect()
        .await
}

fn statuses(answers: &[Answered]) -> (usize, usize) {
    let count = |s| answers.iter().filter(|a| a.status == s).count();
    assert_eq!(count(404) + count(429), answers.len(), "only 404 or 429");
    (count(404), count(429))
}

async fn moto_with_one_session(upstream: &Upstream) -> Moto {
    let moto = Moto::start().await;
    moto.create_default_tables().await;
    moto.put_session("acme-t1", "c1").await;
    moto.put_container("c1", upstream.addr).await;
    moto
}

fn options(wire: &CountingRelay, listen: &str, store: &str) -> RouterOptions {
    RouterOptions {
        // No refresh or negative-cache expiry during the test: every GetItem is a miss's.
        refresh_interval: "1h",
        negative_ttl: "1h",
        max_staleness: "2h",
        dynamodb_endpoint: Some(wire.endpoint()),
        listen_extra: listen.to_owned(),
        store_extra: store.to_owned(),
        ..RouterOptions::default()
    }
}

async fn budgets_bound_store_reads(fast_path: bool) {
    let a = Upstream::start("a").await;
    let moto = moto_with_one_session(&a).await;
    let wire = CountingRelay::start(moto.addr);
    let listen = format!("fast_path = {fast_path}");
    let router = Router::start("", options(&wire, &listen, SMALL_BUDGETS));
    let (first, second) = (
        client_from(&router, "127.0.0.1"),
        client_from(&router, "127.0.0.2"),
    );

    // X-Forwarded-For from an untrusted peer buys no fresh budget.
    let burst = flood(&router, &first, 60, |i| format!("10.9.{i}.1")).await;
    assert_eq!(statuses(&burst), (10, 50), "the per-client burst is read");
    assert_eq!(wire.count("GetItem"), 10, "GetItem calls on the wire");
    for limited in burst.iter().filter(|a| a.status == 429) {
        assert_eq!(limited.retry_after.as_deref(), Some("1"));
        assert_eq!(
            limited.content_type.as_deref(),
            Some("text/plain; charset=utf-8")
        );
    }
    let page = first
        .get(router.url(
            "edit.acme.localhost",
            &format!("/session/{}/", random_thread()),
        ))
        .header("sec-fetch-mode", "navigate")
        .send()
        .await
        .expect("navigation");
    assert_eq!(page.status().as_u16(), 429);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");

    // Table hits and remembered absences cost nothing, so they are still answered.
    assert_eq!(get(&router, &first, "t1", "").await.status, 200);
    let known_absent = burst.iter().find(|a| a.status == 404).expect("a 404");
    assert_eq!(
        get(&router, &first, &known_absent.thread, "").await.status,
        404
    );
    assert_eq!(
        wire.count("GetItem"),
        10,
        "no read for a remembered absence"
    );

    // Another address has its own budget, until the process's runs out.
    let other = flood(&router, &second, 5, |_| String::new()).await;
    assert_eq!(statuses(&other), (5, 0), "not starved by the first client");
    assert_eq!(
        get(&router, &second, &random_thread(), "").await.status,
        429
    );
    assert_eq!(wire.count("GetItem"), 15, "the total burst is read");

    let client = format!("{LIMITED}{{scope=\"client\"}}");
    let total = format!("{LIMITED}{{scope=\"total\"}}");
    let outcome = "session_router_requests_total{outcome=\"rate_limited\"}";
    assert_eq!(router.metric_eventually(outcome, 52.0).await, 52.0);
    assert_eq!(router.metric(&client).await, 51.0);
    assert_eq!(router.metric(&total).await, 1.0);
}

#[tokio::test]
async fn unknown_sessions_cost_at_most_the_budgets_on_pingora() {
    budgets_bound_store_reads(false).await;
}

#[tokio::test]
async fn unknown_sessions_cost_at_most_the_budgets_on_the_fast_path() {
    budgets_bound_store_reads(true).await;
}

/// Remembered absences answer without a token, however empty the budget.
#[tokio::test]
async fn a_remembered_absence_is_answered_with_an_empty_budget() {
    let a = Upstream::start("a").await;
    let moto = moto_with_one_session(&a).await;
    let wire = CountingRelay::start(moto.addr);
    let store = "miss_rate_per_client = 0.01\nmiss_burst_per_client = 1";
    let router = Router::start("", options(&wire, "", store));
    let client = router.client();
    let thread = random_thread();
    assert_eq!(get(&router, &client, &thread, "").await.status, 404);
    assert_eq!(
        get(&router, &client, &random_thread(), "").await.status,
        429
    );
    for _ in 0..5 {
        assert_eq!(get(&router, &client, &thread, "").await.status, 404);
    }
    assert_eq!(wire.count("GetItem"), 1);
}

/// Behind a trusted balancer each client is the address the balancer appended; the entries a
/// client wrote before it do not buy a fresh budget.
#[tokio::test]
async fn behind_a_trusted_balancer_the_appended_address_is_charged() {
    let a = Upstream::start("a").await;
    let moto = moto_with_one_session(&a).await;
    let wire = CountingRelay::start(moto.addr);
    let listen = "trusted_proxies = [\"127.0.0.1/32\"]";
    let store = "miss_rate_per_client = 0.01\nmiss_burst_per_client = 3";
    let router = Router::start("", options(&wire, listen, store));
    let client = router.client();
    let spoofed = flood(&router, &client, 10, |i| {
        format!("198.51.100.{i}, 203.0.113.1")
    })
    .await;
    assert_eq!(statuses(&spoofed), (3, 7));
    let next = flood(&router, &client, 2, |_| "203.0.113.2".to_owned()).await;
    assert_eq!(
        statuses(&next),
        (2, 0),
        "another client behind the balancer"
    );
    assert_eq!(wire.count("GetItem"), 5);
}

/// The figure of the issue: a flood of random ids from one address, on the default budgets.
#[tokio::test]
async fn a_flood_of_random_ids_costs_the_default_burst() {
    const FLOOD: usize = 300;
    let a = Upstream::start("a").await;
    let moto = moto_with_one_session(&a).await;
    let wire = CountingRelay::start(moto.addr);
    let router = Router::start("", options(&wire, "", ""));
    let started = Instant::now();
    let answers = flood(&router, &router.client(), FLOOD, |_| String::new()).await;
    let elapsed = started.elapsed();
    let (unknown, limited) = statuses(&answers);
    let reads = wire.count("GetItem");
    println!(
        "{FLOOD} random ids in {elapsed:?}: {reads} GetItem, {unknown} x 404, {limited} x 429"
    );
    // 20 at once, then 5 a second.
    let allowed = 20 + (5.0 * elapsed.as_secs_f64()).ceil() as usize;
    assert!(reads <= allowed, "{reads} GetItem, at most {allowed}");
    assert_eq!(reads, unknown);
}
