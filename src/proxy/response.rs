//! What a container's response head may not do on Pingora's path, the same rules the router's
//! own path applies: switch protocols unasked, send interim answers without end, frame its body
//! two ways at once, or set the router's own cookies.

use std::time::Duration;

use http::header::{CONTENT_LENGTH, SET_COOKIE, TRANSFER_ENCODING};
use http::StatusCode;
use pingora::http::ResponseHeader;
use pingora::{Error, ErrorType, Result};

use super::RequestCtx;
use crate::headers::sets_own_cookie;

pub struct ResponseRules {
    pub max_interim: u32,
    /// Interim answers arriving later than this after the request are refused.
    pub read_timeout: Duration,
    /// Names of the router's cookies.
    pub own_cookies: Vec<String>,
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
