use std::sync::LazyLock;

use super::*;

static OWN: LazyLock<OwnCookies> = LazyLock::new(|| OwnCookies::new("sr_session", "sr_grant"));

fn parsed(head: &[u8]) -> Result<Option<(String, String, usize, bool)>, Decline> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    parse(head, &mut headers)
        .map(|r| r.map(|r| (r.method.to_owned(), r.host.to_owned(), r.head_len, r.close)))
}

#[test]
fn plain_requests_are_taken() {
    let head = b"GET /session/t1/x?y=1 HTTP/1.1\r\nHost: edit.acme.localhost\r\n\r\nGET /next";
    let (method, host, len, close) = parsed(head).unwrap().unwrap();
    assert_eq!(
        (method.as_str(), host.as_str(), close),
        ("GET", "edit.acme.localhost", false)
    );
    assert_eq!(
        &head[len..],
        b"GET /next",
        "the next pipelined request stays"
    );
    let close = b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n";
    assert!(parsed(close).unwrap().unwrap().3);
    assert_eq!(
        parsed(b"GET / HTTP/1.1\r\nHost: h\r\n"),
        Ok(None),
        "incomplete"
    );
}

#[test]
fn everything_else_goes_to_pingora() {
    let not_plain: [&[u8]; 15] = [
        b"GET / HTTP/1.0\r\nHost: h\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n",
        b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello",
        b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        // Pingora refuses a Connection that names Host; here it never drops Host.
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: host\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, X-Hop\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\nConnection: x-forwarded-for\r\n\r\n",
        // RFC 9110 section 7.8: an Upgrade that Connection does not name is no upgrade.
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket, h2c\r\nConnection: upgrade\r\n\r\n",
    ];
    for head in not_plain {
        assert_eq!(
            parsed(head),
            Err(Decline::NotPlain),
            "{}",
            String::from_utf8_lossy(head)
        );
    }
    assert_eq!(
        parsed(b"GET / HTTP/1.1\r\nHo st: h\r\n\r\n"),
        Err(Decline::Unparsed)
    );
}

fn rewritten(head: &[u8], rw: impl FnOnce(&Request<'_, '_>) -> Rewrite<'static>) -> String {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = parse(head, &mut headers).unwrap().unwrap();
    let mut out = Vec::new();
    write_upstream_head(&mut out, &req, &rw(&req));
    String::from_utf8(out).unwrap()
}

fn forwarded() -> Forwarded<'static> {
    Forwarded {
        peer: Some("10.0.0.9".parse().unwrap()),
        trusted_peer: false,
        tls: false,
        sent_for: Some("6.6.6.6"),
        sent_proto: Some(b"https"),
        sent_host: None,
        host: Some(b"edit.acme.localhost"),
    }
}

#[test]
fn the_container_gets_the_stripped_path_and_fresh_forwarding_headers() {
    let head = b"GET /session/t1/src/a.css?v=1 HTTP/1.1\r\nHost: edit.acme.localhost\r\n\
        Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\
        Cookie: a=1; sr_session=t1; b=2\r\nX-Forwarded-For: 6.6.6.6\r\n\
        X-Forwarded-Proto: https\r\nX-Forwarded-Prefix: /evil\r\nAccept: text/css\r\n\r\n";
    let out = rewritten(head, |_| Rewrite {
        target: Some("/src/a.css?v=1"),
        host: None,
        forwarded: forwarded(),
        prefix: None,
        cookies: &OWN,
    });
    assert_eq!(
        out,
        "GET /src/a.css?v=1 HTTP/1.1\r\nHost: edit.acme.localhost\r\nCookie: a=1; b=2\r\n\
         Accept: text/css\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: edit.acme.localhost\r\n\r\n"
    );
}

#[test]
fn a_cookie_header_of_only_ours_is_dropped_and_host_can_be_replaced() {
    let head = b"GET /x HTTP/1.1\r\nHost: edit.acme.localhost\r\nCookie: sr_session=t1\r\n\r\n";
    let out = rewritten(head, |_| Rewrite {
        target: None,
        host: Some("10.1.2.3:4321"),
        forwarded: Forwarded {
            peer: None,
            ..forwarded()
        },
        prefix: None,
        cookies: &OWN,
    });
    assert_eq!(
        out,
        "GET /x HTTP/1.1\r\nHost: 10.1.2.3:4321\r\nX-Forwarded-Proto: http\r\n\
         X-Forwarded-Host: edit.acme.localhost\r\n\r\n"
    );
}

#[test]
fn websocket_upgrades_are_taken_and_named_to_the_container() {
    let head = b"GET /session/t1/ HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Upgrade\r\n\
        Upgrade: WebSocket\r\nSec-WebSocket-Key: k==\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let req = parse(head, &mut headers).unwrap().unwrap();
    assert_eq!(req.upgrade, Some(&b"WebSocket"[..]));
    let mut out = Vec::new();
    let rewrite = Rewrite {
        target: None,
        host: None,
        forwarded: forwarded(),
        prefix: None,
        cookies: &OWN,
    };
    write_upstream_head(&mut out, &req, &rewrite);
    let sent = String::from_utf8(out).unwrap();
    assert!(sent.contains("Sec-WebSocket-Key: k==\r\n"), "{sent}");
    assert!(
        sent.ends_with("Connection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n"),
        "{sent}"
    );
    assert_eq!(
        sent.matches("Upgrade").count(),
        2,
        "the client's hop-by-hop lines are not copied: {sent}"
    );

    let not_get =
        b"HEAD / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let unnamed = b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
    for head in [&not_get[..], &unnamed[..]] {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert_eq!(parse(head, &mut headers).unwrap_err(), Decline::NotPlain);
    }
}
