//! Hostile containers, on both engines: whatever bytes a container sends, the client gets
//! responses the router framed, never one container's bytes as the answer to another request,
//! never the router's own cookie set by a container, and never an unasked protocol switch.
//! Hostile clients' framing tricks get the answer RFC 9112 and RFC 9110 give them.

use crate::common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw::{RawUpstream, Reply};
use common::{session, sessions_toml, Router, RouterOptions};

const ENGINES: [bool; 2] = [true, false];

fn options(fast_path: bool) -> RouterOptions {
    RouterOptions {
        listen_extra: format!("fast_path = {fast_path}"),
        ..RouterOptions::default()
    }
}

/// A router with thread `mal` on a container that answers `malicious` and thread `t2` on an
/// honest one that answers `t2-real`.
struct Stage {
    router: Router,
    _mal: RawUpstream,
    _honest: RawUpstream,
}

fn stage(fast_path: bool, malicious: Vec<u8>) -> Stage {
    let mal = RawUpstream::start(Box::new(move |_, _, _| Reply::Send(malicious.clone())));
    let honest = RawUpstream::start(Box::new(|_, _, _| {
        Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nt2-real".to_vec())
    }));
    let sessions = sessions_toml(
        &[session("acme-mal", "cm"), session("acme-t2", "c2")],
        &[
            ("cm", Some(mal.addr), "running"),
            ("c2", Some(honest.addr), "running"),
        ],
    );
    Stage {
        router: Router::start(&sessions, options(fast_path)),
        _mal: mal,
        _honest: honest,
    }
}

fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    conn
}

fn get(conn: &mut TcpStream, thread: &str) {
    let head = format!("GET /session/{thread}/ HTTP/1.1\r\nHost: edit.acme.localhost\r\n\r\n");
    conn.write_all(head.as_bytes()).unwrap();
}

/// One response as a lenient client reads it: lines end at LF (a CR before it is dropped), as
/// browsers and curl read them. `None` once the connection is closed.
fn lenient_response(reader: &mut impl BufRead) -> Option<(u16, Vec<String>, Vec<u8>)> {
    let line = |r: &mut dyn BufRead| {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(n) if n > 0 => Some(l.trim_end_matches(['\r', '\n']).to_owned()),
            _ => None,
        }
    };
    let status_line = line(reader)?;
    let status = status_line.split(' ').nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let h = line(reader)?;
        if h.is_empty() {
            break;
        }
        headers.push(h.to_ascii_lowercase());
    }
    let value = |name: &str| {
        headers
            .iter()
            .find_map(|h| h.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    let mut body = Vec::new();
    if value("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
        loop {
            let size_line = line(reader)?;
            let size = usize::from_str_radix(size_line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                while !line(reader)?.is_empty() {}
                break;
            }
            let mut data = vec![0; size];
            reader.read_exact(&mut data).ok()?;
            body.extend_from_slice(&data);
            line(reader)?;
        }
    } else if let Some(length) = value("content-length") {
        body.resize(length.parse().ok()?, 0);
        reader.read_exact(&mut body).ok()?;
    }
    Some((status, headers, body))
}

/// The response to thread `mal`, then the response to thread `t2` on the same connection, as a
/// lenient client reads them.
fn mal_then_t2(addr: SocketAddr) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let mut conn = connect(addr);
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    get(&mut conn, "mal");
    let first = lenient_response(&mut reader).map(|(_, _, body)| body);
    get(&mut conn, "t2");
    let second = lenient_response(&mut reader).map(|(_, _, body)| body);
    (first, second)
}

/// A chunk-size line that httparse reads up to its CRLF but a browser ends at the bare LF: what
/// httparse takes for an extension, the browser takes for the chunk, and the rest of the chunk
/// for the next response.
fn smuggling_chunk() -> Vec<u8> {
    let injected = b"\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED";
    let mut data = injected.to_vec();
    data.resize(0x58, b' ');
    let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n58;x\n".to_vec();
    out.extend(std::iter::repeat_n(b'a', 0x58 - 2));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&data);
    out.extend_from_slice(b"\r\n0\r\n\r\n");
    out
}

#[test]
fn a_chunk_extension_never_answers_another_sessions_request() {
    for fast_path in ENGINES {
        let stage = stage(fast_path, smuggling_chunk());
        let (first, second) = mal_then_t2(stage.router.proxy);
        let first = first.expect("the first answer");
        assert!(
            !first.starts_with(b"aaaa"),
            "fast_path={fast_path}: the container's size line reached the client"
        );
        if let Some(second) = second {
            assert_eq!(
                String::from_utf8_lossy(&second),
                "t2-real",
                "fast_path={fast_path}: thread t2 got another container's bytes"
            );
        }
    }
}

#[test]
fn a_trailer_ending_in_a_bare_lf_never_answers_another_request() {
    let malicious = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\
        X: y\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nINJECTED\r\n\r\n"
        .to_vec();
    for fast_path in ENGINES {
        let stage = stage(fast_path, malicious.clone());
        let (_, second) = mal_then_t2(stage.router.proxy);
        if let Some(second) = second {
            assert_eq!(
                String::from_utf8_lossy(&second),
                "t2-real",
                "fast_path={fast_path}"
            );
        }
    }
}

/// The whole answer to one request on a connection that closes after it.
fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut conn = connect(addr);
    conn.write_all(request).unwrap();
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn answer_to(fast_path: bool, malicious: &[u8]) -> String {
    let stage = stage(fast_path, malicious.to_vec());
    exchange(
        stage.router.proxy,
        b"GET /session/mal/ HTTP/1.1\r\nHost: edit.acme.localhost\r\nSec-Fetch-Mode: navigate\r\n\
          Connection: close\r\n\r\n",
    )
}

#[test]
fn a_container_cannot_set_the_routers_cookie() {
    let malicious =
        b"HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nSet-Cookie: sr_session=t2; Path=/\r\n\
        Set-Cookie: sr_session=t2; Domain=localhost; Path=/\r\nContent-Length: 2\r\n\r\nok";
    for fast_path in ENGINES {
        let answer = answer_to(fast_path, malicious);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let cookies: Vec<&str> = answer
            .lines()
            .filter_map(|l| {
                l.strip_prefix("set-cookie: ")
                    .or(l.strip_prefix("Set-Cookie: "))
            })
            .collect();
        assert!(
            cookies.contains(&"app=1"),
            "fast_path={fast_path}: {cookies:?}"
        );
        assert!(
            cookies
                .iter()
                .filter(|c| c.starts_with("sr_session="))
                .all(|c| c.starts_with("sr_session=mal;")),
            "fast_path={fast_path}: {cookies:?}"
        );
    }
}

#[test]
fn a_response_framed_two_ways_loses_its_content_length() {
    let malicious = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n\
        2\r\nok\r\n0\r\n\r\n";
    for fast_path in ENGINES {
        let answer = answer_to(fast_path, malicious).to_ascii_lowercase();
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        assert!(
            !answer.contains("content-length"),
            "fast_path={fast_path}: {answer}"
        );
        assert!(
            answer.ends_with("2\r\nok\r\n0\r\n\r\n"),
            "fast_path={fast_path}: {answer}"
        );
    }
}

/// A container's Connection header may name headers to drop on the way, but not the ones that
/// say where its body ends: without them the client would read to the close of a connection
/// the router keeps, and take the next request's answer for the rest of this body.
#[test]
fn a_connection_header_drops_hop_by_hop_headers_but_never_the_framing() {
    let cases: [&[u8]; 2] = [
        b"HTTP/1.1 200 OK\r\nConnection: content-length, x-hop\r\nX-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nConnection: transfer-encoding, x-hop\r\nX-Hop: 1\r\n\
          Keep-Alive: timeout=5\r\nUpgrade: h2c\r\nTransfer-Encoding: chunked\r\n\r\n\
          2\r\nok\r\n0\r\n\r\n",
    ];
    for fast_path in ENGINES {
        for malicious in cases {
            let shown = String::from_utf8_lossy(malicious);
            let stage = stage(fast_path, malicious.to_vec());
            let mut conn = connect(stage.router.proxy);
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            get(&mut conn, "mal");
            let (status, headers, body) = lenient_response(&mut reader).expect("an answer");
            assert_eq!(
                (status, &body[..]),
                (200, &b"ok"[..]),
                "fast_path={fast_path}: {shown}"
            );
            for hop in ["x-hop", "keep-alive", "upgrade"] {
                assert!(
                    !headers.iter().any(|h| h.starts_with(&format!("{hop}:"))),
                    "fast_path={fast_path}: {hop} passed on: {headers:?}"
                );
            }
            get(&mut conn, "t2");
            let second = lenient_response(&mut reader).map(|(_, _, body)| body);
            assert_eq!(
                second.as_deref(),
                Some(&b"t2-real"[..]),
                "fast_path={fast_path}: {shown}"
            );
        }
    }
}

#[test]
fn unusable_container_heads_get_the_routers_502() {
    let cases: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
        b"HTTP/1.1 011 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\nraw",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ];
    for fast_path in ENGINES {
        for malicious in cases {
            let answer = answer_to(fast_path, malicious);
            assert!(
                answer.starts_with("HTTP/1.1 502"),
                "fast_path={fast_path} for {:?}: {answer}",
                String::from_utf8_lossy(malicious)
            );
        }
    }
}

/// Blanks before a colon and folded values (RFC 9112 sections 5.1 and 5.2) are repaired on both
/// engines alike, never passed on as they came.
#[test]
fn obsolete_header_syntax_is_repaired_alike() {
    let malicious = b"HTTP/1.1 200 OK\r\nX-Folded: a,\r\n  b\r\nContent-Length : 2\r\n\r\nok";
    for fast_path in ENGINES {
        let answer = answer_to(fast_path, malicious);
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "fast_path={fast_path}: {answer}"
        );
        let lower = answer.to_ascii_lowercase();
        assert!(
            lower.contains("\r\nx-folded: a, b\r\n"),
            "fast_path={fast_path}: {answer}"
        );
        assert!(
            lower.contains("\r\ncontent-length: 2\r\n"),
            "fast_path={fast_path}: {answer}"
        );
        assert!(
            answer.ends_with("\r\n\r\nok"),
            "fast_path={fast_path}: {answer}"
        );
    }
}

#[test]
fn interim_answers_are_bounded() {
    let mut malicious = b"HTTP/1.1 102 Processing\r\n\r\n".repeat(50);
    malicious.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    for fast_path in ENGINES {
        let answer = answer_to(fast_path, &malicious);
        let interims = answer.matches("HTTP/1.1 102").count();
        assert!(
            interims <= 8,
            "fast_path={fast_path}: {interims} interim answers passed"
        );
        assert!(
            answer.contains("HTTP/1.1 502"),
            "fast_path={fast_path}: {answer}"
        );
        assert!(
            !answer.contains("\r\n\r\nok"),
            "fast_path={fast_path}: {answer}"
        );
    }
}

/// A container that records each request head it gets and answers 200.
fn recording() -> (RawUpstream, Arc<Mutex<Vec<String>>>) {
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    let up = RawUpstream::start(Box::new(move |_, _, head| {
        seen.lock().unwrap().push(head.to_owned());
        Reply::Send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec())
    }));
    (up, heads)
}

fn recorded_router(fast_path: bool, up: &RawUpstream) -> Router {
    let sessions = sessions_toml(
        &[session("acme-t1", "c1")],
        &[("c1", Some(up.addr), "running")],
    );
    Router::start(&sessions, options(fast_path))
}

#[test]
fn both_content_length_and_chunked_close_the_connection() {
    for fast_path in ENGINES {
        let (up, _) = recording();
        let router = recorded_router(fast_path, &up);
        let mut conn = connect(router.proxy);
        conn.write_all(
            b"POST /session/t1/ HTTP/1.1\r\nHost: edit.acme.localhost\r\nContent-Length: 5\r\n\
              Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
        .unwrap();
        // RFC 9112 section 6.1: the server closes the connection after answering.
        let mut out = Vec::new();
        conn.read_to_end(&mut out)
            .expect("the router closes the connection");
        let answer = String::from_utf8_lossy(&out).to_ascii_lowercase();
        assert!(
            answer.starts_with("http/1.1 200"),
            "fast_path={fast_path}: {answer}"
        );
        assert!(
            answer.contains("connection: close"),
            "fast_path={fast_path}: {answer}"
        );
    }
}

#[test]
fn an_upgrade_that_connection_does_not_name_is_no_upgrade() {
    for fast_path in ENGINES {
        let (up, heads) = recording();
        let router = recorded_router(fast_path, &up);
        let answer = exchange(
            router.proxy,
            b"GET /session/t1/ HTTP/1.1\r\nHost: edit.acme.localhost\r\nUpgrade: websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Connection: close\r\n\r\n",
        );
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "fast_path={fast_path}: {answer}"
        );
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "fast_path={fast_path}");
        assert!(
            !heads[0].to_ascii_lowercase().contains("upgrade"),
            "fast_path={fast_path}: {}",
            heads[0]
        );
    }
}

#[test]
fn a_connection_header_naming_host_is_refused_and_host_never_dropped() {
    for fast_path in ENGINES {
        let (up, heads) = recording();
        let router = recorded_router(fast_path, &up);
        let answer = exchange(
            router.proxy,
            b"GET /session/t1/ HTTP/1.1\r\nHost: edit.acme.localhost\r\nConnection: host\r\n\r\n",
        );
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "fast_path={fast_path}: {answer}"
        );
        for head in heads.lock().unwrap().iter() {
            assert!(head.to_ascii_lowercase().contains("\r\nhost:"), "{head}");
        }
    }
}
