//! What a container's response head may not do on Pingora's path, the same rules the router's
//! own path applies: switch protocols unasked, send interim answers without end, frame its body
//! two ways at once, set the router's own cookies, or pass hop-by-hop headers on.

use std::time::Duration;

use http::header::{CONNECTION, CONTENT_LENGTH, SET_COOKIE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, StatusCode};
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::RequestCtx;
use crate::headers::{sets_own_cookie, OwnCookies};

/// Hop-by-hop headers of a response (RFC 9110 section 7.6.1) that Pingora would pass on; it
/// writes its own Connection. The router's own path drops the same.
const HOP_BY_HOP: [&str; 4] = ["keep-alive", "proxy-connection", "te", "upgrade"];

pub struct ResponseRules {
    pub max_interim: u32,
    /// Interim answers arriving later than this after the request are refused.
    pub read_timeout: Duration,
    /// Names of the router's cookies.
    pub own_cookies: OwnCookies,
}

impl ResponseRules {
    /// Refuses a head that breaks the rules (the client gets the router's 502) and removes what
    /// must not reach the client from one that passes.
    pub fn check(
        &self,
        resp: &mut ResponseHeader,
        upgrade_asked: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if resp.status == StatusCode::SWITCHING_PROTOCOLS && !upgrade_asked {
            return Error::e_explain(
                ErrorType::InvalidHTTPHeader,
                "101 to a request without Upgrade",
            );
        }
        if resp.status.is_informational() && resp.status != StatusCode::SWITCHING_PROTOCOLS {
            ctx.interims += 1;
            if ctx.interims > self.max_interim || ctx.started.elapsed() > self.read_timeout {
                return Error::e_explain(ErrorType::InvalidHTTPHeader, "too many 1xx answers");
            }
        }
        // RFC 9112 section 6.3: Transfer-Encoding frames the body; a Content-Length beside it
        // must not reach the client.
        if resp.headers.contains_key(TRANSFER_ENCODING) {
            resp.remove_header(&CONTENT_LENGTH);
        }
        drop_hop_by_hop(resp);
        self.drop_own_cookies(resp);
        Ok(())
    }

    fn drop_own_cookies(&self, resp: &mut ResponseHeader) {
        let all = resp.headers.get_all(SET_COOKIE);
        if !all
            .iter()
            .any(|v| sets_own_cookie(v.as_bytes(), &self.own_cookies))
        {
            return;
        }
        let kept: Vec<_> = all
            .iter()
            .filter(|v| !sets_own_cookie(v.as_bytes(), &self.own_cookies))
            .cloned()
            .collect();
        resp.remove_header(&SET_COOKIE);
        for value in kept {
            // Appending a value that came from this map cannot fail.
            let _ = resp.append_header(SET_COOKIE, value);
        }
    }
}

/// Removes the hop-by-hop headers and those the container's Connection header names, but never
/// the framing ones (the client needs them to find the end of the body), nor the Connection
/// and Upgrade of a 101, which name the protocol switched to.
fn drop_hop_by_hop(resp: &mut ResponseHeader) {
    let switching = resp.status == StatusCode::SWITCHING_PROTOCOLS;
    let named: Vec<HeaderName> = resp
        .headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter_map(|token| HeaderName::from_bytes(token.trim_ascii()).ok())
        .collect();
    let hop_by_hop = HOP_BY_HOP.iter().map(|n| HeaderName::from_static(n));
    for name in hop_by_hop.chain(named) {
        let framing = name == CONTENT_LENGTH || name == TRANSFER_ENCODING;
        let protocol = switching && (name == UPGRADE || name == CONNECTION);
        if !framing && !protocol {
            resp.remove_header(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(resp: &ResponseHeader) -> Vec<&str> {
        resp.headers.keys().map(HeaderName::as_str).collect()
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_but_framing_and_a_switch_kept() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in [
            ("connection", "x-hop, content-length, set-cookie"),
            ("x-hop", "1"),
            ("set-cookie", "a=1"),
            ("keep-alive", "timeout=5"),
            ("upgrade", "h2c"),
            ("te", "trailers"),
            ("content-length", "2"),
            ("x-kept", "1"),
        ] {
            resp.append_header(name, value).unwrap();
        }
        drop_hop_by_hop(&mut resp);
        assert_eq!(names(&resp), ["connection", "content-length", "x-kept"]);

        let mut switch = ResponseHeader::build(101, None).unwrap();
        switch.append_header("connection", "upgrade").unwrap();
        switch.append_header("upgrade", "websocket").unwrap();
        switch.append_header("keep-alive", "timeout=5").unwrap();
        drop_hop_by_hop(&mut switch);
        assert_eq!(names(&switch), ["connection", "upgrade"]);
    }
}
