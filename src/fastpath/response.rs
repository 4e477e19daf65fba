//! Container responses on the router's own HTTP/1.1 path: how long the body is (RFC 9112
//! section 6.3), whether the connection can be reused, and the head the client gets.

use std::borrow::Cow;
use std::io::Write;

use crate::headers::{sets_own_cookie, OwnCookies};

/// Headers read per response; a response with more is answered 502.
pub const MAX_HEADERS: usize = 96;
/// Longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// Hop-by-hop headers of a response: never passed to the client. Transfer-Encoding is kept, as
/// a chunked body is passed on chunked (re-framed, not decoded).
const NOT_FORWARDED: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
];
/// Headers that say where the body the client gets ends: kept even when the container's
/// Connection header names them, or the client would read the body to the close of a
/// connection the router keeps, and the next response with it.
const FRAMING: [&str; 2] = ["content-length", "transfer-encoding"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a HEAD request, 204 or 304.
    Empty,
    Length(u64),
    Chunked,
    /// Ends when the container closes the connection.
    UntilClose,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadResponse {
    #[error("unparseable response head")]
    Unparsed,
    #[error("conflicting or invalid Content-Length")]
    Length,
    #[error("switching protocols without being asked to")]
    Switch,
}

#[derive(Debug)]
pub struct Response<'h, 'b> {
    pub status: u16,
    reason: &'b str,
    pub headers: &'h [httparse::Header<'b>],
    pub head_len: usize,
    pub framing: Framing,
    /// The container keeps the connection open after this response.
    pub keep_alive: bool,
    connection: &'b [u8],
    /// Transfer-Encoding frames the body, so any Content-Length is not passed on.
    transfer_encoded: bool,
    /// Some value is folded over lines (httparse lets no other CR or LF into a value), so
    /// values are repaired as they are passed on; most heads have none to repair.
    folded: bool,
}

/// Parses a response head from `buf`: `Ok(None)` until the head is complete. A 101 is accepted
/// only as the answer to an upgrade the client asked for.
pub fn parse<'h, 'b>(
    buf: &'b [u8],
    headers: &'h mut [httparse::Header<'b>; MAX_HEADERS],
    head_request: bool,
    upgrade_asked: bool,
) -> Result<Option<Response<'h, 'b>>, BadResponse> {
    let mut resp = httparse::Response::new(headers);
    // What Pingora's proxy accepts of a container (RFC 9112 sections 5.1 and 5.2): blanks
    // before a header's colon, and values folded over lines, which `unfolded` repairs.
    let mut config = httparse::ParserConfig::default();
    config
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true);
    let head_len = match config.parse_response(&mut resp, buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BadResponse::Unparsed),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Err(BadResponse::Unparsed);
    };
    // httparse reads any three digits; `011` is no status (RFC 9110 section 15), as Pingora
    // finds.
    if status < 100 {
        return Err(BadResponse::Unparsed);
    }
    if status == 101 && !upgrade_asked {
        return Err(BadResponse::Switch);
    }
    let headers: &'h [httparse::Header<'b>] = resp.headers;
    // Read as they come; whether they count is known once Transfer-Encoding has been seen.
    let mut length: Result<Option<u64>, BadResponse> = Ok(None);
    let mut chunked = None;
    let mut connection: &[u8] = b"";
    for h in headers {
        if h.name.eq_ignore_ascii_case("content-length") {
            length = length.and_then(|seen| content_length(seen, h.value));
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only the last coding says whether the body is chunked.
            let last = h.value.rsplit(|b| *b == b',').next().unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if h.name.eq_ignore_ascii_case("connection") {
            connection = h.value;
        }
    }
    // Transfer-Encoding overrides Content-Length (RFC 9112 section 6.3), which is then dropped.
    let length = match chunked {
        Some(_) => None,
        None => length?,
    };
    let framing = if head_request || status / 100 == 1 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
            (None, None) => Framing::UntilClose,
        }
    };
    let tokens = || connection.split(|b| *b == b',').map(<[u8]>::trim_ascii);
    let keep_alive = if version == 1 {
        !tokens().any(|t| t.eq_ignore_ascii_case(b"close"))
    } else {
        tokens().any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
    };
    Ok(Some(Response {
        status,
        reason: resp.reason.unwrap_or_default(),
        headers,
        head_len,
        framing,
        keep_alive: keep_alive && framing != Framing::UntilClose,
        connection,
        transfer_encoded: chunked.is_some(),
        // One LF ends the status line, each header and the head; any other is a fold.
        folded: memchr::memchr_iter(b'\n', &buf[..head_len]).count() > headers.len() + 2,
    }))
}

/// The length a Content-Length value (which may be a list) states, as Pingora reads it: digits
/// only, no sign, and equal to `seen`, the length earlier values stated (RFC 9110 section 8.6).
fn content_length(mut seen: Option<u64>, value: &[u8]) -> Result<Option<u64>, BadResponse> {
    for item in value.split(|b| *b == b',') {
        let digits = item.trim_ascii();
        if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
            return Err(BadResponse::Length);
        }
        let n = std::str::from_utf8(digits)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
            .ok_or(BadResponse::Length)?;
        if seen.is_some_and(|l| l != n) {
            return Err(BadResponse::Length);
        }
        seen = Some(n);
    }
    Ok(seen)
}

impl<'b> Response<'_, 'b> {
    /// A 1xx answer that another answer follows; not 101, after which the connection is the
    /// upgraded protocol's.
    pub fn is_interim(&self) -> bool {
        self.status / 100 == 1 && !self.is_switch()
    }

    pub fn is_switch(&self) -> bool {
        self.status == 101
    }

    /// A header value as it is passed on: repaired when the head has folded values.
    pub fn value<'v>(&self, raw: &'v [u8]) -> Cow<'v, [u8]> {
        if self.folded {
            unfolded(raw)
        } else {
            Cow::Borrowed(raw)
        }
    }

    pub fn header(&self, name: &str) -> Option<&'b [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    fn listed_in_connection(&self, name: &str) -> bool {
        self.connection
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    }
}

/// A header value as Pingora passes it on (`pingora_http`'s `normalize_field_value`, RFC 9112
/// section 5.2): each line folding, with the blanks around it, becomes one space, and a stray CR
/// or NUL a space. Borrowed when there is none of them, as in every response but a folded one.
pub fn unfolded(value: &[u8]) -> Cow<'_, [u8]> {
    let stray = |b: &u8| matches!(b, b'\r' | b'\0');
    if !value.iter().any(|b| *b == b'\n' || stray(b)) {
        return Cow::Borrowed(value);
    }
    let spaced = |line: &[u8]| {
        line.iter()
            .map(|b| if stray(b) { b' ' } else { *b })
            .collect()
    };
    let mut lines = value.split(|b| *b == b'\n');
    let first = lines.next().unwrap_or_default();
    if first.len() == value.len() {
        return Cow::Owned(spaced(value));
    }
    let mut out: Vec<u8> = spaced(first.trim_ascii_end());
    for line in lines.map(<[u8]>::trim_ascii).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push(b' ');
        }
        out.extend_from_slice(&spaced(line));
    }
    Cow::Owned(out)
}

/// The router's cookies in a response head: the one it sets, and the names a container may not.
pub struct ClientCookies<'a> {
    pub set: Option<&'a str>,
    pub own: &'a OwnCookies,
}

/// Writes the head the client gets: the container's status and headers in their order and
/// case, less hop-by-hop ones (but those of a 101, which name the protocol it switches to),
/// plus the router's own.
pub fn write_client_head(
    out: &mut Vec<u8>,
    resp: &Response<'_, '_>,
    cookies: &ClientCookies<'_>,
    close: bool,
) {
    // Writes into a Vec cannot fail.
    let _ = write!(out, "HTTP/1.1 {} {}\r\n", resp.status, resp.reason);
    for h in resp.headers {
        let name = h.name;
        // A 101's Connection and Upgrade say what the connection becomes: passed as they came.
        let switching = resp.is_switch()
            && (name.eq_ignore_ascii_case("upgrade") || name.eq_ignore_ascii_case("connection"));
        let framing = || FRAMING.iter().any(|n| name.eq_ignore_ascii_case(n));
        if !switching
            && (NOT_FORWARDED.iter().any(|n| name.eq_ignore_ascii_case(n))
                || (resp.listed_in_connection(name) && !framing()))
        {
            continue;
        }
        if resp.transfer_encoded && name.eq_ignore_ascii_case("content-length") {
            continue;
        }
        let value = resp.value(h.value);
        if name.eq_ignore_ascii_case("set-cookie") && sets_own_cookie(&value, cookies.own) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(&value);
        out.extend_from_slice(b"\r\n");
    }
    if let Some(cookie) = cookies.set {
        let _ = write!(out, "Set-Cookie: {cookie}\r\n");
    }
    if resp.is_switch() {
        if resp.connection.is_empty() {
            out.extend_from_slice(b"Connection: Upgrade\r\n");
        }
    } else if close && !resp.is_interim() {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
