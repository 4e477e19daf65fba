use super::*;

static OWN: std::sync::LazyLock<OwnCookies> =
    std::sync::LazyLock::new(|| OwnCookies::new("sr_session", "sr_grant"));

fn own() -> &'static OwnCookies {
    &OWN
}

fn no_cookies() -> ClientCookies<'static> {
    ClientCookies {
        set: None,
        own: own(),
    }
}

fn framing(head: &[u8], head_request: bool) -> Result<(Framing, bool), BadResponse> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    parse(head, &mut headers, head_request, false).map(|r| {
        let r = r.expect("complete head");
        (r.framing, r.keep_alive)
    })
}

#[test]
fn body_length_follows_rfc_9112() {
    let cases: [(&[u8], bool, Framing, bool); 8] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            false,
            Framing::Length(12),
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
            true,
            Framing::Empty,
            true,
        ),
        (
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 12\r\n\r\n",
            false,
            Framing::Empty,
            true,
        ),
        (
            b"HTTP/1.1 204 No Content\r\n\r\n",
            false,
            Framing::Empty,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n",
            false,
            Framing::Chunked,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            false,
            Framing::UntilClose,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\n\r\n",
            false,
            Framing::UntilClose,
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n",
            false,
            Framing::Length(1),
            true,
        ),
    ];
    for (head, head_request, want, keep) in cases {
        assert_eq!(
            framing(head, head_request),
            Ok((want, keep)),
            "{}",
            String::from_utf8_lossy(head)
        );
    }
    let close = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n";
    assert_eq!(framing(close, false), Ok((Framing::Length(1), false)));
    let old = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n";
    assert_eq!(framing(old, false), Ok((Framing::Length(1), false)));
}

#[test]
fn unusable_responses_are_refused() {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let conflicting = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
    assert_eq!(
        parse(conflicting, &mut headers, false, false).unwrap_err(),
        BadResponse::Length
    );
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let switch = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
    assert_eq!(
        parse(switch, &mut headers, false, false).unwrap_err(),
        BadResponse::Switch
    );
    for status in ["000", "011", "099"] {
        let head = format!("HTTP/1.1 {status} Switching Protocols\r\nContent-Length: 0\r\n\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert_eq!(
            parse(head.as_bytes(), &mut headers, false, true).unwrap_err(),
            BadResponse::Unparsed,
            "{status}"
        );
    }
    for length in ["+5", "-1", "5 5", "0x5", "", "5, 6"] {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n\r\n");
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        assert_eq!(
            parse(head.as_bytes(), &mut headers, false, false).unwrap_err(),
            BadResponse::Length,
            "{length:?}"
        );
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert!(
        parse(b"HTTP/1.1 200 OK\r\nContent-", &mut headers, false, false)
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_client_head_drops_hop_by_hop_and_adds_the_routers() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: keep-alive, X-Hop\r\n\
        X-Hop: 1\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let resp = parse(head, &mut headers, false, false).unwrap().unwrap();
    let mut out = Vec::new();
    let cookies = ClientCookies {
        set: Some("sr_session=t1; Path=/"),
        own: own(),
    };
    write_client_head(&mut out, &resp, &cookies, true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\
         Set-Cookie: sr_session=t1; Path=/\r\nConnection: close\r\n\r\n"
    );
}

/// A Connection header naming the framing headers does not take them away: the client would
/// read the body to the close of a connection the router keeps for the next response.
#[test]
fn a_connection_header_never_drops_the_framing() {
    let cases: [(&[u8], &str); 2] = [
        (
            b"HTTP/1.1 200 OK\r\nConnection: content-length, x-hop\r\nX-Hop: 1\r\nContent-Length: 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
        ),
        (
            b"HTTP/1.1 200 OK\r\nConnection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
    ];
    for (head, client_head) in cases {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let resp = parse(head, &mut headers, false, false).unwrap().unwrap();
        assert!(resp.keep_alive);
        let mut out = Vec::new();
        write_client_head(&mut out, &resp, &no_cookies(), false);
        assert_eq!(String::from_utf8(out).unwrap(), client_head);
    }
}

/// Blanks before a colon and values folded over lines are read, and passed on repaired, as
/// Pingora's proxy reads and repairs them; the router's cookie stays the router's.
#[test]
fn obsolete_header_syntax_is_repaired_as_pingora_repairs_it() {
    let head =
        b"HTTP/1.1 200 OK\r\nX-Folded: a,\r\n  b\r\n\tc\r\nSet-Cookie:\r\n sr_session=t2\r\n\
        Transfer-Encoding : chunked\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let resp = parse(head, &mut headers, false, false).unwrap().unwrap();
    assert_eq!(resp.framing, Framing::Chunked);
    let cookies = no_cookies();
    let mut out = Vec::new();
    write_client_head(&mut out, &resp, &cookies, false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nX-Folded: a, b c\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for (value, repaired) in [
        (&b"plain"[..], &b"plain"[..]),
        (b"obs\r\n fold\r\n\t line", b"obs fold line"),
        (b"a \r\n \r\n b", b"a b"),
        (b"\r\n b", b"b"),
    ] {
        assert_eq!(&*unfolded(value), repaired, "{}", value.escape_ascii());
    }
}

#[test]
fn a_switch_is_passed_on_only_when_asked_for_and_keeps_its_protocol() {
    let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Accept: abc=\r\n\r\n\x81\x02hi";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    assert_eq!(
        parse(head, &mut headers, false, false).unwrap_err(),
        BadResponse::Switch
    );
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let resp = parse(head, &mut headers, false, true).unwrap().unwrap();
    assert!(resp.is_switch() && !resp.is_interim());
    assert_eq!(
        &head[resp.head_len..],
        b"\x81\x02hi",
        "the first frame stays"
    );
    let mut out = Vec::new();
    write_client_head(&mut out, &resp, &no_cookies(), true);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: abc=\r\n\r\n"
    );
    let bare = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let resp = parse(bare, &mut headers, false, true).unwrap().unwrap();
    let mut out = Vec::new();
    write_client_head(&mut out, &resp, &no_cookies(), false);
    assert!(out.ends_with(b"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"));
}

#[test]
fn identical_lengths_are_one_length() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n";
    assert_eq!(framing(head, false), Ok((Framing::Length(5), true)));
}

/// RFC 9112 section 6.3: with Transfer-Encoding, Content-Length is not what frames the body and
/// must not reach the client beside it.
#[test]
fn a_transfer_encoded_response_loses_its_content_length() {
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let resp = parse(head, &mut headers, false, false).unwrap().unwrap();
    assert_eq!(resp.framing, Framing::Chunked);
    let mut out = Vec::new();
    write_client_head(&mut out, &resp, &no_cookies(), false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
}

#[test]
fn a_container_cannot_set_the_routers_cookies() {
    let head = b"HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nSet-Cookie: sr_session=t2; Path=/\r\n\
        Set-Cookie:  SR_SESSION=t2; Domain=localhost\r\nContent-Length: 0\r\n\r\n";
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let resp = parse(head, &mut headers, false, false).unwrap().unwrap();
    let own = own();
    let cookies = ClientCookies {
        set: Some("sr_session=t1; Path=/"),
        own,
    };
    let mut out = Vec::new();
    write_client_head(&mut out, &resp, &cookies, false);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\nSet-Cookie: app=1\r\nContent-Length: 0\r\n\
         Set-Cookie: sr_session=t1; Path=/\r\n\r\n"
    );
}
