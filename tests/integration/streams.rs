//! The DynamoDB Streams follower against moto, driven as a library: positioning and the first
//! Gap, changes in stream order, CaughtUp, a replaced stream, and tables it cannot follow.

use crate::common;

use std::sync::{Arc, Once};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{StreamSpecification, StreamViewType};
use common::moto::{n, s, Moto, TEST_ENV};
use session_router::config::DynamoDbSection;
use session_router::metrics::Metrics;
use session_router::store::{
    Change, ChangeFeed, ContainerStatus, DynamoDbStore, FeedEvent, RouteStore,
};

const SESSIONS: &str = "webordinary-edit-sessions";
const CONTAINERS: &str = "webordinary-containers";

/// Longest wait for any one event.
const WAIT: Duration = Duration::from_secs(10);

/// The follower runs in this process, so the SDK's default chain finds moto's dummy
/// credentials here rather than in a child's environment. Every test sets the same values.
fn credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (key, value) in TEST_ENV {
            if std::env::var_os(key).is_none() {
                std::env::set_var(key, value);
            }
        }
    });
}

/// Both tables, each with a stream of `view` or none.
async fn moto_with(sessions: Option<StreamViewType>, containers: Option<StreamViewType>) -> Moto {
    credentials();
    let moto = Moto::start().await;
    moto.create_table_streamed(SESSIONS, "sessionId", sessions)
        .await;
    moto.create_table_streamed(CONTAINERS, "containerId", containers)
        .await;
    moto
}

fn images() -> Option<StreamViewType> {
    Some(StreamViewType::NewAndOldImages)
}

async fn follow(moto: &Moto, discover: Duration) -> (ChangeFeed, Arc<Metrics>) {
    let settings = DynamoDbSection {
        region: Some("us-east-1".into()),
        endpoint_url: Some(moto.endpoint()),
        stream_poll_interval: Duration::from_millis(100),
        stream_discover_interval: discover,
        ..DynamoDbSection::default()
    };
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let feed = DynamoDbStore::new(settings)
        .follow(metrics.clone())
        .await
        .expect("streams are on");
    (feed, metrics)
}

async fn next(feed: &mut ChangeFeed) -> FeedEvent {
    next_by(feed, Instant::now() + WAIT).await
}

async fn next_by(feed: &mut ChangeFeed, deadline: Instant) -> FeedEvent {
    tokio::time::timeout_at(deadline.into(), feed.events.recv())
        .await
        .expect("an event in time")
        .expect("the feed is open")
}

/// The next event that is not a CaughtUp, within [`WAIT`].
async fn next_news(feed: &mut ChangeFeed) -> FeedEvent {
    let deadline = Instant::now() + WAIT;
    loop {
        match next_by(feed, deadline).await {
            FeedEvent::CaughtUp(_) => continue,
            other => return other,
        }
    }
}

/// Changes until `count` have come, within [`WAIT`]; any Gap or Lost on the way fails the test.
async fn changes(feed: &mut ChangeFeed, count: usize) -> Vec<Change> {
    let deadline = Instant::now() + WAIT;
    let mut all = Vec::new();
    while all.len() < count {
        match next_by(feed, deadline).await {
            FeedEvent::Changes(batch) => all.extend(batch),
            FeedEvent::CaughtUp(_) => {}
            other => panic!("expected changes, got {other:?} after {all:?}"),
        }
    }
    assert_eq!(all.len(), count, "{all:?}");
    all
}

fn session_of(change: &Change) -> Option<(&str, Option<&str>)> {
    match change {
        Change::Session { key, record } => {
            Some((&**key, record.as_ref().map(|r| &*r.container_id)))
        }
        Change::Container { .. } => None,
    }
}

async fn put_session(moto: &Moto, key: &str, container: &str) {
    moto.put(
        SESSIONS,
        &[("sessionId", s(key)), ("containerId", s(container))],
    )
    .await;
}

/// Changes come in stream order per key, a bad item routes as deleted, and CaughtUp follows.
#[tokio::test]
async fn changes_arrive_in_order_after_the_first_gap() {
    let moto = moto_with(images(), images()).await;
    put_session(&moto, "before", "c0").await;
    let (mut feed, metrics) = follow(&moto, Duration::from_secs(300)).await;
    match next(&mut feed).await {
        FeedEvent::Gap(reason) => assert_eq!(reason, "following the streams from now"),
        other => panic!("first event {other:?}"),
    }

    put_session(&moto, "acme-t1", "c1").await;
    moto.put(
        CONTAINERS,
        &[
            ("containerId", s("c1")),
            ("containerIp", s("10.0.0.7")),
            ("containerPort", n("4321")),
            ("status", s("running")),
        ],
    )
    .await;
    put_session(&moto, "acme-t1", "c2").await;
    moto.delete_session("acme-t1").await;
    moto.put(
        SESSIONS,
        &[("sessionId", s("bad")), ("containerId", n("5"))],
    )
    .await;
    let written = Instant::now();

    let got = changes(&mut feed, 5).await;
    let sessions: Vec<_> = got.iter().filter_map(session_of).collect();
    assert_eq!(
        sessions,
        [
            ("acme-t1", Some("c1")),
            ("acme-t1", Some("c2")),
            ("acme-t1", None),
            ("bad", None),
        ],
        "the item written before following is not among them"
    );
    let container = got.iter().find_map(|c| match c {
        Change::Container { id, record } => Some((id.clone(), record.clone())),
        Change::Session { .. } => None,
    });
    let (id, record) = container.expect("the container's change");
    let record = record.expect("a record");
    assert_eq!(&*id, "c1");
    assert_eq!(record.ip, Some("10.0.0.7".parse().unwrap()));
    assert_eq!(
        (record.port, record.status),
        (Some(4321), ContainerStatus::Running)
    );

    // A CaughtUp later than the writes: every change before it has been delivered.
    let deadline = Instant::now() + WAIT;
    loop {
        match next_by(&mut feed, deadline).await {
            FeedEvent::CaughtUp(at) if at >= written => break,
            FeedEvent::CaughtUp(_) => {}
            other => panic!("expected CaughtUp, got {other:?}"),
        }
    }
    let scrape = String::from_utf8(metrics.encode()).expect("utf-8");
    let series = |table: &str, result: &str| {
        common::metric_value(
            &scrape,
            &format!(
                "session_router_stream_records_total{{result=\"{result}\",table=\"{table}\"}}"
            ),
        )
    };
    assert_eq!(series("sessions", "applied"), 3.0, "{scrape}");
    assert_eq!(series("sessions", "skipped"), 1.0);
    assert_eq!(series("containers", "applied"), 1.0);
}

/// A table recreated under the follower has a new stream: found by re-discovery, it is a gap,
/// and the follower goes on with the new stream.
#[tokio::test]
async fn a_replaced_stream_is_a_gap() {
    let moto = moto_with(images(), images()).await;
    let (mut feed, _metrics) = follow(&moto, Duration::from_secs(1)).await;
    assert!(matches!(next(&mut feed).await, FeedEvent::Gap(_)));

    // moto cannot re-enable a stream (its UpdateTable refuses once a table has had one), so
    // the stream is replaced by recreating the table.
    moto.client
        .delete_table()
        .table_name(SESSIONS)
        .send()
        .await
        .expect("delete table");
    moto.create_table_streamed(SESSIONS, "sessionId", images())
        .await;
    match next_news(&mut feed).await {
        FeedEvent::Gap(reason) => assert_eq!(reason, "stream replaced"),
        other => panic!("expected a gap, got {other:?}"),
    }

    put_session(&moto, "acme-t2", "c9").await;
    let got = changes(&mut feed, 1).await;
    assert_eq!(session_of(&got[0]), Some(("acme-t2", Some("c9"))));
}

/// A table without a stream makes the feed lost, once; enabling one brings it back with a Gap.
#[tokio::test]
async fn a_table_without_a_stream_is_lost_until_one_is_enabled() {
    let moto = moto_with(images(), None).await;
    let (mut feed, _metrics) = follow(&moto, Duration::from_secs(1)).await;
    match next(&mut feed).await {
        FeedEvent::Lost(reason) => {
            assert_eq!(reason, format!("table {CONTAINERS} has no stream enabled"))
        }
        other => panic!("first event {other:?}"),
    }

    let spec = StreamSpecification::builder()
        .stream_enabled(true)
        .stream_view_type(StreamViewType::NewImage)
        .build()
        .unwrap();
    moto.client
        .update_table()
        .table_name(CONTAINERS)
        .stream_specification(spec)
        .send()
        .await
        .expect("enable the stream");
    // Neither a second Lost nor a CaughtUp before it follows again.
    match next(&mut feed).await {
        FeedEvent::Gap(reason) => assert_eq!(reason, "following the streams from now"),
        other => panic!("expected a gap, got {other:?}"),
    }
    moto.put(
        CONTAINERS,
        &[("containerId", s("c3")), ("status", s("stopped"))],
    )
    .await;
    let got = changes(&mut feed, 1).await;
    assert!(
        matches!(&got[0], Change::Container { id, record: Some(r) }
            if &**id == "c3" && r.status == ContainerStatus::Stopped),
        "{got:?}"
    );
}

/// A stream whose records leave the new image out cannot say what an item became.
#[tokio::test]
async fn a_stream_without_new_images_is_lost() {
    let moto = moto_with(images(), Some(StreamViewType::KeysOnly)).await;
    let (mut feed, _metrics) = follow(&moto, Duration::from_secs(1)).await;
    match next(&mut feed).await {
        FeedEvent::Lost(reason) => {
            assert_eq!(reason, "stream view type must include new images")
        }
        other => panic!("first event {other:?}"),
    }
}
