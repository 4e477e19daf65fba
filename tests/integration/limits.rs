//! Downstream limits on both engines: a head too large or too slow is cut off, an idle
//! connection is closed at the keep-alive timeout, and connections beyond the process's or one
//! client's limit are refused, while other clients are still served.

use crate::common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{one_session, Router, RouterOptions, Upstream};

const ENGINES: [bool; 2] = [true, false];

async fn router(fast_path: bool, listen: &str) -> (Router, Upstream) {
    let up = Upstream::start("up").await;
    let router = Router::start(
        &one_session(Some(up.addr), "running"),
        RouterOptions {
            listen_extra: format!("fast_path = {fast_path}\n{listen}"),
            ..RouterOptions::default()
        },
    );
    (router, up)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

const GET: &[u8] = b"GET /session/t1/ HTTP/1.1\r\nHost: edit.acme.localhost\r\n\r\n";

/// Reads until the router closes the connection; what it sent.
fn until_closed(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one answer with a Content-Length body.
fn one_answer(conn: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            1,
            "{:?}",
            String::from_utf8_lossy(&out)
        );
        out.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&out).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; length];
    conn.read_exact(&mut body).unwrap();
    head
}

#[tokio::test]
async fn heads_too_large_or_with_a_line_too_long_get_431() {
    for fast_path in ENGINES {
        let (router, _up) = router(fast_path, "").await;
        let big = format!(
            "GET /session/t1/ HTTP/1.1\r\nHost: edit.acme.localhost\r\n{}\r\n",
            "X-Fill: 0123456789012345678901234567890123456789\r\n".repeat(800)
        );
        let long_line = format!(
            "GET /session/t1/ HTTP/1.1\r\nHost: edit.acme.localhost\r\nX-Long: {}\r\n\r\n",
            "a".repeat(9000)
        );
        for head in [big, long_line] {
            let mut conn = connect(router.proxy);
            // The router may close before taking all of it; what it answered is what counts.
            let _ = conn.write_all(head.as_bytes());
            let answer = until_closed(&mut conn);
            assert!(
                answer.starts_with("HTTP/1.1 431"),
                "fast_path={fast_path}: {answer}"
            );
        }
        let metrics = router.metrics().await;
        assert!(metrics.contains("session_router_client_limit_total{limit=\"head_size\"} 1"));
        assert!(metrics.contains("session_router_client_limit_total{limit=\"head_line\"} 1"));
        // Heads within the limits still pass.
        let mut conn = connect(router.proxy);
        conn.write_all(GET).unwrap();
        assert!(one_answer(&mut conn).starts_with("http/1.1 200"));
    }
}

/// A client trickling its head a byte at a time is closed at the head deadline, which the bytes
/// do not renew; without it, 200 such clients held their connections past every timeout.
#[tokio::test]
async fn a_head_sent_a_byte_at_a_time_is_cut_off_at_its_deadline() {
    for fast_path in ENGINES {
        let (router, _up) = router(fast_path, "head_timeout = \"1s\"").await;
        let mut conn = connect(router.proxy);
        let started = Instant::now();
        // 40 bytes of the head, one every 100 ms: the head is never complete.
        for byte in &GET[..40] {
            if conn.write_all(&[*byte]).is_err() || started.elapsed() > Duration::from_secs(4) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let rest = until_closed(&mut conn);
        let elapsed = started.elapsed();
        assert_eq!(rest, "", "fast_path={fast_path}");
        assert!(
            elapsed < Duration::from_secs(5),
            "fast_path={fast_path}: open for {elapsed:?}"
        );
        assert!(router
            .metrics()
            .await
            .contains("session_router_client_limit_total{limit=\"head_timeout\"} 1"));
    }
}

#[tokio::test]
async fn an_idle_connection_is_closed_at_the_keepalive_timeout_on_both_engines() {
    for fast_path in ENGINES {
        let (router, _up) = router(fast_path, "keepalive_timeout = \"1s\"").await;
        let mut conn = connect(router.proxy);
        conn.write_all(GET).unwrap();
        assert!(one_answer(&mut conn).starts_with("http/1.1 200"));
        let idle = Instant::now();
        assert_eq!(until_closed(&mut conn), "", "fast_path={fast_path}");
        let waited = idle.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(4),
            "fast_path={fast_path}: closed after {waited:?}"
        );
    }
}

/// `n` open connections, each answered once, so the router has surely admitted them.
fn answered_connections(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held: Vec<TcpStream> = (0..n).map(|_| connect(addr)).collect();
    for conn in &mut held {
        conn.write_all(GET).unwrap();
    }
    for conn in &mut held {
        assert!(one_answer(conn).starts_with("http/1.1 200"));
    }
    held
}

#[tokio::test]
async fn one_client_cannot_take_more_than_its_connections() {
    for fast_path in ENGINES {
        let (router, _up) = router(fast_path, "max_connections_per_client = 3").await;
        let held = answered_connections(router.proxy, 3);
        let mut fourth = connect(router.proxy);
        let _ = fourth.write_all(GET);
        let answer = until_closed(&mut fourth);
        assert!(
            answer.starts_with("HTTP/1.1 429"),
            "fast_path={fast_path}: {answer}"
        );
        assert!(answer.contains("Retry-After: 1"), "{answer}");
        // A closed connection makes room again.
        drop(held);
        let mut conn = reconnect_until_admitted(router.proxy);
        assert!(one_answer(&mut conn).starts_with("http/1.1 200"));
    }
}

#[tokio::test]
async fn the_process_refuses_connections_past_its_limit() {
    for fast_path in ENGINES {
        let (router, _up) = router(
            fast_path,
            "max_connections = 2\nmax_connections_per_client = 10",
        )
        .await;
        let _held = answered_connections(router.proxy, 2);
        let mut third = connect(router.proxy);
        let answer = until_closed(&mut third);
        assert!(
            answer.starts_with("HTTP/1.1 503"),
            "fast_path={fast_path}: {answer}"
        );
        assert_eq!(
            router.metric("session_router_client_connections").await,
            2.0,
            "fast_path={fast_path}"
        );
    }
}

/// A new connection that the router admits, once it has noticed the ones closed before; tries
/// for up to 2 s. The answer to a first request was read; a second one is on its way.
fn reconnect_until_admitted(addr: SocketAddr) -> TcpStream {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut conn = connect(addr);
        conn.write_all(GET).unwrap();
        let mut status_line = [0u8; 12];
        if conn.read_exact(&mut status_line).is_ok() && &status_line[9..12] == b"200" {
            one_answer(&mut conn);
            conn.write_all(GET).unwrap();
            return conn;
        }
        assert!(Instant::now() < deadline, "never admitted again");
        std::thread::sleep(Duration::from_millis(50));
    }
}
