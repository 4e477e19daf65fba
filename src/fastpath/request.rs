//! Requests on the router's own HTTP/1.1 path: which ones it takes (plain, bodiless, safe
//! requests and WebSocket upgrades; anything else goes to Pingora), and the request head it sends
//! to the container.

use std::io::Write;

use crate::headers::{cookies_except, has_own_cookie, Forwarded, OwnCookies, SessionPrefix};

/// Headers read per request; a request with more goes to Pingora.
pub const MAX_HEADERS: usize = 64;
/// Headers a request may have at all: Pingora's limit.
const MAX_HEADERS_ANY: usize = 256;

/// Hop-by-hop headers (RFC 9110 section 7.6.1) and the forwarding headers the router sets
/// itself: never copied from the client's request.
const NOT_FORWARDED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
];
const X_FORWARDED_PREFIX: &str = "x-forwarded-prefix";
/// What a Connection header may say on a request taken here.
const CONNECTION_OPTIONS: [&[u8]; 3] = [b"close", b"keep-alive", b"upgrade"];

/// Why a request is left to Pingora.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// Not parseable here (malformed, too many headers): Pingora gives the right error.
    Unparsed,
    /// HTTP/1.0, an absolute or `*` target, a method that is not safe to resend, a body, an
    /// upgrade to anything but a WebSocket, `Expect`, or no single Host.
    NotPlain,
}

/// A request the fast path serves, as read from the client's buffer.
#[derive(Debug)]
pub struct Request<'h, 'b> {
    pub method: &'b str,
    /// Path and query, as sent.
    pub target: &'b str,
    pub host: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    /// Bytes of the head, blank line included.
    pub head_len: usize,
    /// The client asked to close the connection after this request.
    pub close: bool,
    /// The Upgrade header of a WebSocket upgrade (a GET whose Connection lists `upgrade`).
    pub upgrade: Option<&'b [u8]>,
}

/// Where the request head at the start of `buf` ends, whatever the request: `Ok(None)` until it
/// is complete, an error when it is malformed or has more headers than Pingora reads.
pub fn head_len(buf: &[u8]) -> Result<Option<usize>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS_ANY];
    match httparse::Request::new(&mut headers).parse(buf)? {
        httparse::Status::Complete(n) => Ok(Some(n)),
        httparse::Status::Partial => Ok(None),
    }
}

/// Parses a request head from `buf`: `Ok(None)` until the head is complete.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
) -> Result<Option<Request<'h, 'b>>, Decline> {
    let mut req = httparse::Request::new(headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Decline::Unparsed),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(Decline::NotPlain);
    };
    if !matches!(method, "GET" | "HEAD" | "OPTIONS") || !target.starts_with('/') {
        return Err(Decline::NotPlain);
    }
    let headers: &'h [httparse::Header<'b>] = req.headers;
    let mut host = None;
    let mut connection: &[u8] = b"";
    let mut upgrade = None;
    for h in headers {
        let name = h.name;
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(Decline::NotPlain);
            }
            host = Some(std::str::from_utf8(h.value).map_err(|_| Decline::NotPlain)?);
        } else if name.eq_ignore_ascii_case("connection") {
            // Several are one list to Pingora; here one is enough and simpler to follow.
            if !connection.is_empty() {
                return Err(Decline::NotPlain);
            }
            connection = h.value;
        } else if name.eq_ignore_ascii_case("content-length") {
            if h.value != b"0" {
                return Err(Decline::NotPlain);
            }
        } else if name.eq_ignore_ascii_case("upgrade") {
            if upgrade.is_some() || method != "GET" {
                return Err(Decline::NotPlain);
            }
            upgrade = Some(h.value);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
        {
            return Err(Decline::NotPlain);
        }
    }
    let Some(host) = host else {
        return Err(Decline::NotPlain);
    };
    let tokens = || connection.split(|b| *b == b',').map(<[u8]>::trim_ascii);
    // A Connection header that names other headers hop-by-hop is Pingora's to judge (it refuses
    // one that names Host or a forwarding header): here it may only say how the connection goes.
    let option =
        |t: &[u8]| t.is_empty() || CONNECTION_OPTIONS.iter().any(|o| t.eq_ignore_ascii_case(o));
    if !tokens().all(option) {
        return Err(Decline::NotPlain);
    }
    let upgrading = tokens().any(|t| t.eq_ignore_ascii_case(b"upgrade"));
    // An Upgrade the Connection header does not name is not an upgrade (RFC 9110 section 7.8);
    // one to anything but a WebSocket (h2c, TLS) is Pingora's to refuse.
    match (upgrading, upgrade) {
        (false, None) => {}
        (true, Some(protocol)) if protocol.eq_ignore_ascii_case(b"websocket") => {}
        _ => return Err(Decline::NotPlain),
    }
    let close = tokens().any(|t| t.eq_ignore_ascii_case(b"close"));
    Ok(Some(Request {
        method,
        target,
        host,
        headers,
        head_len,
        close,
        upgrade,
    }))
}

impl<'b> Request<'_, 'b> {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// Every value of header `name`, in order.
    pub fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'b [u8]> + 's {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    pub fn path(&self) -> &'b str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    pub fn query(&self) -> Option<&'b str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// How the request head sent to the container differs from the client's.
pub struct Rewrite<'a> {
    /// Path and query to send; the client's when `None`.
    pub target: Option<&'a str>,
    /// Host to send instead of the client's (`routing.preserve_host = false`).
    pub host: Option<&'a str>,
    pub forwarded: Forwarded<'a>,
    pub prefix: Option<SessionPrefix<'a>>,
    /// The router's cookies, never sent on.
    pub cookies: &'a OwnCookies,
}

/// Writes the head to send to the container: the client's headers in their order and case, less
/// hop-by-hop ones and the router's cookie, plus the forwarding headers.
pub fn write_upstream_head(out: &mut Vec<u8>, req: &Request<'_, '_>, rw: &Rewrite<'_>) {
    out.clear();
    // Writes into a Vec cannot fail.
    let _ = write!(
        out,
        "{} {} HTTP/1.1\r\n",
        req.method,
        rw.target.unwrap_or(req.target)
    );
    for h in req.headers {
        let name = h.name;
        let dropped = NOT_FORWARDED.iter().any(|n| name.eq_ignore_ascii_case(n))
            || name.eq_ignore_ascii_case(X_FORWARDED_PREFIX);
        if dropped {
            continue;
        }
        if name.eq_ignore_ascii_case("host") {
            if let Some(host) = rw.host {
                header_line(out, name, host.as_bytes());
                continue;
            }
        } else if name.eq_ignore_ascii_case("cookie") {
            write_cookie(out, name, h.value, rw.cookies);
            continue;
        }
        header_line(out, name, h.value);
    }
    let chain = rw.forwarded.chain();
    if !chain.is_empty() {
        let _ = write!(out, "X-Forwarded-For: {chain}\r\n");
    }
    header_line(out, "X-Forwarded-Proto", rw.forwarded.proto());
    if let Some(host) = rw.forwarded.host() {
        header_line(out, "X-Forwarded-Host", host);
    }
    if let Some(prefix) = rw.prefix {
        let _ = write!(out, "X-Forwarded-Prefix: {prefix}\r\n");
    }
    if let Some(protocol) = req.upgrade {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
        header_line(out, "Upgrade", protocol);
    }
    out.extend_from_slice(b"\r\n");
}

fn header_line(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A Cookie header without the router's cookies, or nothing when that was all it held.
fn write_cookie(out: &mut Vec<u8>, name: &str, value: &[u8], ours: &OwnCookies) {
    let Ok(text) = std::str::from_utf8(value) else {
        return header_line(out, name, value);
    };
    if !has_own_cookie(text, ours) {
        return header_line(out, name, value);
    }
    let mut kept = cookies_except(text, ours).peekable();
    if kept.peek().is_none() {
        return;
    }
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for (i, pair) in kept.enumerate() {
        if i > 0 {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
