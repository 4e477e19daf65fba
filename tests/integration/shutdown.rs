//! SIGTERM: what it does to requests, WebSockets and held waits, and when the process exits,
//! measured on the real binary.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::time::{Duration, Instant};

use crate::wake::{create_queue, drain, held, stopped_session, watching};
use common::{one_session, Router, RouterOptions, Upstream};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// Opens a WebSocket through the router the way Vite's client does from a path-mode page:
/// `vite-hmr` with the token for the HMR socket, `vite-ping` without it for the reconnect probe.
pub(crate) async fn connect_ws(proxy: SocketAddr, protocol: &str) -> Result<Ws, String> {
    let host = format!("edit.acme.localhost:{}", proxy.port());
    let query = if protocol == "vite-hmr" {
        "?token=tok"
    } else {
        ""
    };
    let mut req = format!("ws://{host}/{query}")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let headers = req.headers_mut();
    headers.insert(
        "sec-websocket-protocol",
        protocol.parse().map_err(|_| "protocol")?,
    );
    headers.insert("cookie", "sr_session=t1".parse().map_err(|_| "cookie")?);
    let tcp = TcpStream::connect(proxy).await.map_err(|e| e.to_string())?;
    let (ws, _) = client_async(req, tcp).await.map_err(|e| e.to_string())?;
    Ok(ws)
}

/// Opens the HMR socket and reads the upstream's hello.
pub(crate) async fn connect_hmr(proxy: SocketAddr) -> Ws {
    let mut ws = connect_ws(proxy, "vite-hmr").await.expect("hmr upgrade");
    match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
        Ok(Some(Ok(Message::Text(_)))) => ws,
        other => panic!("no hello from upstream: {other:?}"),
    }
}

/// Waits for the end of a WebSocket: the close code when a close frame came, else what did.
pub(crate) async fn socket_end(ws: &mut Ws, limit: Duration) -> Result<CloseCode, String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => return Ok(frame.code),
            Ok(Some(Ok(Message::Close(None)))) => return Err("close frame without code".into()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("error without close frame: {e}")),
            Ok(None) => return Err("stream ended without close frame".into()),
            Err(_) => return Err(format!("still open after {limit:?}")),
        }
    }
}

/// A raw HTTP/1.1 keep-alive connection that has completed one request and now sits idle.
fn idle_keepalive_connection(proxy: SocketAddr) -> StdTcpStream {
    let mut s = StdTcpStream::connect(proxy).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET /session/t1/idle HTTP/1.1\r\nHost: edit.acme.localhost\r\nCookie: sr_session=t1\r\n\r\n"
    )
    .expect("write");
    // Read the head, then exactly Content-Length bytes of body.
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).expect("head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("body");
    s
}

/// Polls until connecting to `addr` is refused; when, measured from `since`.
fn refused_after(addr: SocketAddr, since: Instant, limit: Duration) -> Option<Duration> {
    while since.elapsed() < limit {
        match StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Some(since.elapsed())
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_drains_in_flight_requests_closes_websockets_and_exits_in_time() {
    const GRACE: u64 = 3;
    const SHUTDOWN_TIMEOUT: u64 = 2;
    let up = Upstream::start("slow").await;
    let mut router = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions {
            grace_period_seconds: GRACE,
            graceful_shutdown_timeout_seconds: SHUTDOWN_TIMEOUT,
            ..RouterOptions::default()
        },
    );
    let proxy = router.proxy;
    let mut idle = idle_keepalive_connection(proxy);
    let mut ws = connect_hmr(proxy).await;

    // Four requests that need 1.5 s at the container, and one that needs longer than the grace.
    let hits_before = up.hits();
    let spawn_get = |delay_ms: u64| {
        let client = router.client();
        let url = router.url(
            "edit.acme.localhost",
            &format!("/session/t1/slow?delay_ms={delay_ms}"),
        );
        tokio::spawn(async move {
            let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
            let connection = resp
                .headers()
                .get("connection")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let status = resp.status().as_u16();
            resp.text().await.map_err(|e| e.to_string())?;
            Ok::<_, String>((status, connection, Instant::now()))
        })
    };
    let in_flight: Vec<_> = (0..4).map(|_| spawn_get(1500)).collect();
    let too_slow = spawn_get(8000);
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.hits() < hits_before + 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.hits(), hits_before + 5, "all five reached the container");

    let term = Instant::now();
    router.signal(libc::SIGTERM);

    // New connections: refused as soon as the listener closes, at the start of the grace period.
    let refused = tokio::task::spawn_blocking(move || {
        refused_after(proxy, term, Duration::from_secs(GRACE + 2))
    });
    // An idle keep-alive connection is closed by the router, not left to race a new request.
    let idle_closed = tokio::task::spawn_blocking(move || {
        let mut b = [0u8; 1];
        let n = idle.read(&mut b);
        (matches!(n, Ok(0)), term.elapsed())
    });
    // The open WebSocket gets a close frame with 1001 Going Away.
    let ws_end = socket_end(&mut ws, Duration::from_secs(GRACE + 2)).await;
    let ws_closed = term.elapsed();

    let mut finished = Vec::new();
    for task in in_flight {
        let (status, connection, at) = task.await.expect("join").expect("in-flight request");
        assert_eq!(status, 200);
        assert_eq!(
            connection.as_deref(),
            Some("close"),
            "answered during drain"
        );
        finished.push(at.duration_since(term));
    }
    let too_slow = too_slow.await.expect("join");
    let too_slow_end = term.elapsed();
    let exit = tokio::task::spawn_blocking(move || {
        let status = router.wait_exit(Duration::from_secs(GRACE + SHUTDOWN_TIMEOUT + 3));
        (status, term.elapsed(), router)
    });
    let (status, exited, router) = exit.await.expect("join");
    let refused = refused.await.expect("join");
    let (idle_eof, idle_at) = idle_closed.await.expect("join");

    println!(
        "SIGTERM (grace {GRACE}s, shutdown timeout {SHUTDOWN_TIMEOUT}s): listener refused after \
         {refused:?}; idle keep-alive closed (eof={idle_eof}) after {idle_at:?}; websocket \
         {ws_end:?} after {ws_closed:?}; 4 in-flight finished after {finished:?}; request \
         longer than the grace: {too_slow:?} after {too_slow_end:?}; exited {status:?} after \
         {exited:?}"
    );
    let log = router.log();
    let refused = refused.expect("new connections refused");
    assert!(refused < Duration::from_secs(1), "{refused:?}");
    assert!(idle_eof && idle_at < Duration::from_secs(1), "{idle_at:?}");
    assert_eq!(ws_end, Ok(CloseCode::Away), "{log}");
    assert!(ws_closed < Duration::from_secs(1), "{ws_closed:?}");
    assert!(
        too_slow.is_err(),
        "a request longer than the grace period is cut: {too_slow:?}"
    );
    assert!(
        too_slow_end >= Duration::from_secs(GRACE) - Duration::from_millis(200),
        "cut before the grace period ended: {too_slow_end:?}"
    );
    let status = status.expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(
        exited >= Duration::from_secs(GRACE) - Duration::from_millis(200)
            && exited <= Duration::from_secs(GRACE + SHUTDOWN_TIMEOUT + 1),
        "{exited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_once_nothing_is_in_flight_not_at_the_end_of_the_grace_period() {
    const GRACE: u64 = 10;
    let up = Upstream::start("slow").await;
    let mut router = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions {
            grace_period_seconds: GRACE,
            graceful_shutdown_timeout_seconds: 2,
            ..RouterOptions::default()
        },
    );
    let proxy = router.proxy;
    let _idle = idle_keepalive_connection(proxy);
    let mut ws = connect_hmr(proxy).await;
    let hits_before = up.hits();
    let client = router.client();
    let url = router.url("edit.acme.localhost", "/session/t1/slow?delay_ms=1000");
    let in_flight = tokio::spawn(async move {
        let resp = client.get(url).send().await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let body = resp.text().await.map_err(|e| e.to_string())?;
        Ok::<_, String>((status, body))
    });
    let deadline = Instant::now() + Duration::from_secs(5);
    while up.hits() == hits_before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let term = Instant::now();
    router.signal(libc::SIGTERM);
    let ws_end = socket_end(&mut ws, Duration::from_secs(GRACE)).await;
    let answered = in_flight.await.expect("join");
    let answered_after = term.elapsed();
    let exit = tokio::task::spawn_blocking(move || {
        let status = router.wait_exit(Duration::from_secs(GRACE + 3));
        (status, term.elapsed(), router)
    });
    let (status, exited, router) = exit.await.expect("join");
    println!(
        "SIGTERM (grace {GRACE}s) with a 1 s request in flight: answered {:?} after \
         {answered_after:?}; websocket {ws_end:?}; exited {status:?} after {exited:?}",
        answered.as_ref().map(|(code, _)| code)
    );
    let log = router.log();
    let (code, body) = answered.expect("the request in flight is answered");
    assert_eq!(code, 200, "{body}");
    assert_eq!(ws_end, Ok(CloseCode::Away), "{log}");
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{log}");
    assert!(
        exited >= answered_after,
        "exited before the request in flight was answered: {exited:?} < {answered_after:?}"
    );
    assert!(
        exited < Duration::from_secs(3),
        "waited for the grace period with nothing in flight: {exited:?}\n{log}"
    );
    assert!(
        log.contains("nothing left in flight"),
        "the early exit is logged:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_answers_a_held_wait_at_once_and_still_sends_its_wake() {
    let moto = stopped_session().await;
    let queue = create_queue(&moto, "wakes").await;
    // The wait may hold a request for longer than the whole grace period.
    let mut router = Router::start(
        "",
        RouterOptions {
            grace_period_seconds: 10,
            graceful_shutdown_timeout_seconds: 2,
            ..watching(&moto, &queue, "30s")
        },
    );
    let url = router.url("edit.acme.localhost", "/session/t1/");
    let wait = tokio::spawn(held(router.client(), url));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !wait.is_finished(),
        "the wait is held while the container is stopped"
    );

    let term = Instant::now();
    router.signal(libc::SIGTERM);
    let (status, retry_after, answered) = wait.await.expect("join");
    let answered_after = answered.duration_since(term);
    let exit = tokio::task::spawn_blocking(move || {
        let status = router.wait_exit(Duration::from_secs(15));
        (status, term.elapsed(), router)
    });
    let (exit_status, exited, router) = exit.await.expect("join");
    println!(
        "SIGTERM with a held wait (wait_timeout 30s, grace 10s): answered {status} after \
         {answered_after:?}; exited {exit_status:?} after {exited:?}"
    );
    let log = router.log();
    // Answered as a wait that ran out: the page asks again, through the balancer, of a router
    // that is not stopping.
    assert_eq!((status, retry_after.as_deref()), (503, Some("1")), "{log}");
    assert!(
        answered_after < Duration::from_secs(1),
        "{answered_after:?}"
    );
    assert!(
        exit_status.is_some_and(|s| s.success()),
        "{exit_status:?}\n{log}"
    );
    assert!(
        exited < Duration::from_secs(3),
        "held up by the wait: {exited:?}\n{log}"
    );
    // The wake the held request asked for went out before the process left.
    assert_eq!(drain(&moto, &queue).await.len(), 1, "{log}");
}
