//! Session activity written back to the store (contract section 1.7) through the real router
//! binary, against moto: `lastActivityAt` follows routed requests and WebSocket frames, at most
//! once per interval, never moves back, never creates an item, and a store whose writes hang
//! never slows a request.

use crate::common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
use common::moto::{n, s, Moto};
use common::wire::CountingRelay;
use common::{Router, RouterOptions, Upstream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const SESSIONS: &str = "webordinary-edit-sessions";
const STAMP: &str = "lastActivityAt";

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Moto with the default tables and session acme-t1 on container c1, running at `up`.
async fn seeded(up: &Upstream) -> Moto {
    let moto = Moto::start().await;
    moto.create_default_tables().await;
    moto.put_session("acme-t1", "c1").await;
    moto.put_container("c1", up.addr).await;
    moto
}

/// A router on the store at `endpoint` writing activity every second.
fn stamping(endpoint: String) -> RouterOptions {
    RouterOptions {
        dynamodb_endpoint: Some(endpoint),
        extra_toml: "\n[activity]\ninterval = \"1s\"\n".to_owned(),
        ..RouterOptions::default()
    }
}

/// ... that learns of no change by itself during the test.
fn stamping_without_refresh(endpoint: String) -> RouterOptions {
    RouterOptions {
        refresh_interval: "1h",
        negative_ttl: "1h",
        max_staleness: "2h",
        ..stamping(endpoint)
    }
}

async fn get(router: &Router, thread: &str) -> u16 {
    let url = router.url("edit.acme.localhost", &format!("/session/{thread}/"));
    let resp = router.client().get(url).send().await.expect("request");
    resp.status().as_u16()
}

fn write_series(result: &str) -> String {
    format!("session_router_activity_writes_total{{result=\"{result}\"}}")
}

/// A router's activity writes: written, skipped, dropped, failed.
async fn writes(router: &Router) -> [f64; 4] {
    let scrape = router.metrics().await;
    ["written", "skipped", "dropped", "failed"]
        .map(|r| common::metric_value(&scrape, &write_series(r)))
}

/// The writes of a router once they have stopped changing for 300 ms (at most 5 s).
async fn settled_writes(router: &Router) -> [f64; 4] {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = writes(router).await;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = writes(router).await;
        if now == last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

/// The session's stamp once `done` says so, or its last value after `limit`.
async fn stamp_when(
    moto: &Moto,
    key: &str,
    limit: Duration,
    done: impl Fn(Option<u64>) -> bool,
) -> Option<u64> {
    let deadline = Instant::now() + limit;
    loop {
        let stamp = moto.session_number(key, STAMP).await;
        if done(stamp) || Instant::now() > deadline {
            return stamp;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn routed_requests_stamp_last_activity_once_per_interval() {
    let up = Upstream::start("a").await;
    let moto = seeded(&up).await;
    // Two routers of a fleet; the relay applies store calls one at a time, as DynamoDB applies
    // the conditional writes of one item.
    let wire = CountingRelay::serial(moto.addr);
    let routers = [
        Router::start("", stamping(wire.endpoint())),
        Router::start("", stamping(wire.endpoint())),
    ];
    assert_eq!(moto.session_number("acme-t1", STAMP).await, None);

    let before = epoch_secs();
    let sent = Instant::now();
    assert_eq!(get(&routers[0], "t1").await, 200);
    let first = stamp_when(&moto, "acme-t1", Duration::from_secs(3), |s| s.is_some()).await;
    let took = sent.elapsed();
    let first = first.expect("lastActivityAt written");
    println!("lastActivityAt written {took:?} after the request");
    assert!((before..=epoch_secs()).contains(&first), "{first}");
    assert!(took < Duration::from_millis(1500), "written after {took:?}");
    assert_eq!(
        routers[0]
            .metric_eventually(&write_series("written"), 1.0)
            .await,
        1.0
    );

    // A request every 50 ms to either router for 2.5 s: each router writes at most once a
    // second, and only a later second moves the stamp.
    let ahead = [
        settled_writes(&routers[0]).await,
        settled_writes(&routers[1]).await,
    ];
    let start = epoch_secs();
    let deadline = Instant::now() + Duration::from_millis(2500);
    let mut sent = 0;
    while Instant::now() < deadline && sent < 100 {
        assert_eq!(get(&routers[sent % 2], "t1").await, 200);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = epoch_secs();
    let seconds = (end - start + 1) as f64;
    let mut written = 0.0;
    for (router, ahead) in routers.iter().zip(ahead) {
        let [w, skipped, dropped, failed] = settled_writes(router).await;
        let (w, skipped) = (w - ahead[0], skipped - ahead[1]);
        println!("{sent} requests over {seconds} s: written {w}, skipped {skipped}");
        assert!(
            w + skipped <= seconds,
            "{w} + {skipped} writes in {seconds} s"
        );
        assert!(w + skipped >= 1.0, "the router's own activity was written");
        assert_eq!((dropped, failed), (0.0, 0.0));
        written += w;
    }
    assert!(
        written <= seconds,
        "the stamp only moves forward: {written}"
    );
    assert!(written >= 2.0, "the stamp followed the requests: {written}");
    let last = moto.session_number("acme-t1", STAMP).await.unwrap();
    assert!(last > first && last <= end, "{first} → {last}, ended {end}");
}

#[tokio::test]
async fn last_activity_never_moves_back() {
    let up = Upstream::start("a").await;
    let moto = seeded(&up).await;
    let later = (epoch_secs() + 3600).to_string();
    moto.put(
        SESSIONS,
        &[
            ("sessionId", s("acme-t1")),
            ("containerId", s("c1")),
            (STAMP, n(&later)),
        ],
    )
    .await;
    let router = Router::start("", stamping(moto.endpoint()));
    // Three requests in three different seconds: three writes are due.
    for i in 0..3 {
        if i > 0 {
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        assert_eq!(get(&router, "t1").await, 200);
    }
    let skipped = router
        .metric_eventually(&write_series("skipped"), 3.0)
        .await;
    assert_eq!(skipped, 3.0, "{}", router.log());
    assert_eq!(router.metric(&write_series("written")).await, 0.0);
    let stamp = moto.session_number("acme-t1", STAMP).await;
    assert_eq!(stamp, Some(later.parse().unwrap()), "the later stamp stays");
}

#[tokio::test]
async fn activity_of_a_deleted_session_creates_no_item() {
    let up = Upstream::start("a").await;
    let moto = seeded(&up).await;
    let router = Router::start("", stamping_without_refresh(moto.endpoint()));
    moto.delete_session("acme-t1").await;
    // The router still routes it from the table it loaded; the write must not recreate it.
    assert_eq!(get(&router, "t1").await, 200);
    let skipped = router
        .metric_eventually(&write_series("skipped"), 1.0)
        .await;
    assert_eq!(skipped, 1.0, "{}", router.log());
    assert_eq!(router.metric(&write_series("written")).await, 0.0);
    assert!(moto.session_item("acme-t1").await.is_none());
}

async fn next(ws: &mut WebSocketStream<TcpStream>) -> String {
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

async fn websocket_frames_mark_activity(pingora: bool) {
    let up = Upstream::start("hmr").await;
    let moto = seeded(&up).await;
    let mut opts = stamping(moto.endpoint());
    if pingora {
        opts.listen_extra = "fast_path = false\n".to_owned();
    }
    let router = Router::start("", opts);
    let host = format!("edit.acme.localhost:{}", router.proxy.port());
    let req = format!("ws://{host}/session/t1/")
        .into_client_request()
        .unwrap();
    let tcp = TcpStream::connect(router.proxy).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(req, tcp)
        .await
        .expect("upgrade");
    let _hello = next(&mut ws).await;
    let limit = Duration::from_secs(3);
    let opened = stamp_when(&moto, "acme-t1", limit, |s| s.is_some()).await;
    assert!(opened.is_some(), "the upgrade was stamped");
    // The hello frame may have been read a second later than the upgrade: settle first.
    let [ahead, ..] = settled_writes(&router).await;
    let opened = moto.session_number("acme-t1", STAMP).await.unwrap();

    // Quiet for two seconds: nothing moves the stamp.
    let deadline = Instant::now() + Duration::from_secs(4);
    while epoch_secs() < opened + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let quiet = moto.session_number("acme-t1", STAMP).await;
    assert_eq!(quiet, Some(opened), "nothing happened on the socket");
    assert_eq!(writes(&router).await[0], ahead);

    ws.send(Message::Text("{\"type\":\"ping\"}".into()))
        .await
        .unwrap();
    assert_eq!(next(&mut ws).await, "{\"type\":\"ping\"}");
    let framed = stamp_when(&moto, "acme-t1", limit, |s| s > Some(opened)).await;
    let framed = framed.unwrap();
    assert!(framed >= opened + 2, "{opened} → {framed}");
    // The frame's write, and the echo's if it was read in the next second.
    let written = router.metric(&write_series("written")).await;
    assert!(
        written > ahead && written <= ahead + 2.0,
        "{ahead} → {written}: {}",
        router.log()
    );
}

#[tokio::test]
async fn websocket_frames_mark_activity_on_the_fast_path() {
    websocket_frames_mark_activity(false).await;
}

#[tokio::test]
async fn websocket_frames_mark_activity_on_pingoras_path() {
    websocket_frames_mark_activity(true).await;
}

/// The 99th percentile of `times`.
fn p99(times: &mut [Duration]) -> Duration {
    times.sort();
    times[(times.len() * 99).div_ceil(100) - 1]
}

/// One timed GET of session acme-w{i}.
async fn timed_get(router: &Router, client: &reqwest::Client, i: usize) -> Duration {
    let url = router.url("edit.acme.localhost", &format!("/session/w{i}/"));
    let started = Instant::now();
    let resp = client.get(url).send().await.expect("request");
    let status = resp.status().as_u16();
    resp.bytes().await.expect("body");
    let took = started.elapsed();
    assert_eq!(status, 200);
    took
}

/// Sessions acme-w0 … on container c1.
async fn put_sessions(moto: &Moto, count: usize) {
    let keys: Vec<String> = (0..count).map(|i| format!("acme-w{i}")).collect();
    for chunk in keys.chunks(25) {
        let writes = chunk.iter().map(|key| {
            let put = PutRequest::builder()
                .item("sessionId", s(key))
                .item("containerId", s("c1"))
                .build()
                .unwrap();
            WriteRequest::builder().put_request(put).build()
        });
        moto.client
            .batch_write_item()
            .request_items(SESSIONS, writes.collect())
            .send()
            .await
            .expect("batch write");
    }
}

/// Two routers on the same tables side by side, one whose store answers writes and one whose
/// store never does; their requests alternate, so both see the same noise of a busy machine.
#[tokio::test]
async fn a_store_whose_writes_hang_never_slows_a_request() {
    // Each request is to a session of its own, so each queues a write.
    const WARM: usize = 50;
    const COUNT: usize = 500;
    let up = Upstream::start("a").await;
    let moto = Moto::start().await;
    moto.create_default_tables().await;
    moto.put_container("c1", up.addr).await;
    put_sessions(&moto, WARM + COUNT).await;
    let healthy_wire = CountingRelay::start(moto.addr);
    let hanging_wire = CountingRelay::start(moto.addr);
    // Reads are answered, writes never (the SDK gives up on each attempt after 2 s).
    hanging_wire.hold("UpdateItem");
    // The working store's queue holds every write, so none is dropped there; the hanging
    // store's fills, so writes are dropped too. A request pays one `try_send` either way.
    let opts = |wire: &CountingRelay, queue: usize| RouterOptions {
        store_request_timeout: "2s",
        extra_toml: format!("\n[activity]\ninterval = \"1s\"\nqueue = {queue}\n"),
        ..stamping_without_refresh(wire.endpoint())
    };
    let healthy_opts = opts(&healthy_wire, 2 * (WARM + COUNT));
    let hanging_opts = opts(&hanging_wire, 32);
    let healthy = tokio::task::spawn_blocking(|| Router::start("", healthy_opts));
    let hanging = tokio::task::spawn_blocking(|| Router::start("", hanging_opts));
    let (healthy, hanging) = (healthy.await.unwrap(), hanging.await.unwrap());
    let (healthy_client, hanging_client) = (healthy.client(), hanging.client());

    for i in 0..WARM {
        timed_get(&healthy, &healthy_client, i).await;
        timed_get(&hanging, &hanging_client, i).await;
    }
    let mut times = (Vec::with_capacity(COUNT), Vec::with_capacity(COUNT));
    for i in WARM..WARM + COUNT {
        // Alternating which goes first, so neither is always the one after the other.
        if i % 2 == 0 {
            times.0.push(timed_get(&healthy, &healthy_client, i).await);
            times.1.push(timed_get(&hanging, &hanging_client, i).await);
        } else {
            times.1.push(timed_get(&hanging, &hanging_client, i).await);
            times.0.push(timed_get(&healthy, &healthy_client, i).await);
        }
    }
    let (healthy_p99, hanging_p99) = (p99(&mut times.0), p99(&mut times.1));
    let median = |t: &[Duration]| t[t.len() / 2];
    // A hung write fails once its three attempts have timed out; the full queue dropped the
    // rest.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut failed = 0.0;
    while failed == 0.0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        failed = hanging.metric(&write_series("failed")).await;
    }
    let [written, _, healthy_dropped, healthy_failed] = writes(&healthy).await;
    let [hung_written, _, dropped, _] = writes(&hanging).await;
    println!(
        "{COUNT} requests each: p99 {healthy_p99:?} (median {:?}) with writes working, \
         {hanging_p99:?} (median {:?}) with writes hanging; working: written {written}, \
         dropped {healthy_dropped}; hanging: dropped {dropped}, failed {failed}",
        median(&times.0),
        median(&times.1),
    );
    assert!(written > 0.0, "{}", healthy.log());
    assert_eq!((healthy_dropped, healthy_failed), (0.0, 0.0));
    assert_eq!(hung_written, 0.0);
    assert!(dropped > 0.0, "a full queue drops: {}", hanging.log());
    assert!(failed > 0.0, "hung writes fail: {}", hanging.log());
    assert!(
        hanging_wire.count("UpdateItem") > 0,
        "writes reached the store"
    );
    assert!(
        hanging_p99 < healthy_p99 * 2 + Duration::from_millis(5),
        "p99 {hanging_p99:?} with writes hanging, {healthy_p99:?} without"
    );
}
