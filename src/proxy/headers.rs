//! The router's header work (see [`crate::headers`]) applied to Pingora's request type: reading
//! and stripping the affinity cookie, telling navigations from assets, setting X-Forwarded-*.

use std::net::IpAddr;

use http::header::{ACCEPT, CONNECTION, COOKIE, HOST, REFERER, UPGRADE};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::Result;

use crate::config::Routing;
use crate::headers::{self, cookies_except, has_own_cookie, Forwarded, OwnCookies, SessionPrefix};
use crate::pages::RequestKind;
use crate::routing::{classify, Reject, RequestParts, Target};

// Header names read on every request, parsed once: a lookup by `&str` parses and hashes the
// name each time.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");
static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");

/// The session a request addresses, read from its host, path, Referer and affinity cookie.
pub fn classify_request(routing: &Routing, req: &RequestHeader) -> Result<Target, Reject> {
    let header = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
    let host = req.uri.host().or_else(|| header(HOST)).unwrap_or_default();
    let parts = RequestParts {
        host,
        path: req.uri.path(),
        query: req.uri.query(),
        referer: header(REFERER),
        cookie_thread: cookie_value(&req.headers, &routing.affinity_cookie),
    };
    classify(&routing.hosts, &parts)
}

/// Removes an Upgrade header that no Connection header names: RFC 9110 section 7.8 makes it no
/// upgrade, but Pingora would treat it as one and tunnel whatever the client sends after it.
pub fn drop_unnamed_upgrade(req: &mut RequestHeader) {
    if !req.headers.contains_key(UPGRADE) {
        return;
    }
    let named = req
        .headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"upgrade"));
    if !named {
        req.remove_header(&UPGRADE);
    }
}

/// The value of cookie `name` in the request's Cookie headers, if present.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers::cookie_in(headers.get_all(COOKIE).iter().map(|v| v.as_bytes()), name)
}

/// Removes the router's own cookies from the forwarded request, dropping the header if nothing
/// is left.
pub fn strip_own_cookies(req: &mut RequestHeader, own: &OwnCookies) {
    let values: Vec<&str> = req
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !values.iter().any(|v| has_own_cookie(v, own)) {
        return;
    }
    let kept: Vec<String> = values
        .iter()
        .map(|v| cookies_except(v, own).collect::<Vec<_>>().join("; "))
        .filter(|v| !v.is_empty())
        .collect();
    req.remove_header(&COOKIE);
    for value in kept {
        if let Ok(value) = HeaderValue::from_str(&value) {
            let _ = req.append_header(COOKIE, value);
        }
    }
}

/// Navigations get pages and the affinity cookie; assets get short bodies.
pub fn request_kind(req: &RequestHeader, upgrade: bool) -> RequestKind {
    let header = |name: &HeaderName| req.headers.get(name).map(HeaderValue::as_bytes);
    headers::request_kind(
        upgrade,
        req.method == Method::GET,
        header(&SEC_FETCH_MODE),
        header(&ACCEPT),
    )
}

/// What the forwarding headers are made of, read from a Pingora request.
pub fn forwarded_from(
    req: &RequestHeader,
    peer: Option<IpAddr>,
    trusted_peer: bool,
    tls: bool,
) -> Forwarded<'_> {
    let header = |name: &HeaderName| {
        req.headers
            .get(name)
            .filter(|v| v.to_str().is_ok())
            .map(HeaderValue::as_bytes)
    };
    Forwarded {
        peer,
        trusted_peer,
        tls,
        sent_for: header(&X_FORWARDED_FOR).and_then(|v| std::str::from_utf8(v).ok()),
        sent_proto: header(&X_FORWARDED_PROTO),
        sent_host: header(&X_FORWARDED_HOST),
        host: header(&HOST),
    }
}

/// The client address a request's store misses are charged to (see [`headers::requester`]).
pub fn requester_from(
    req: &RequestHeader,
    peer: Option<IpAddr>,
    trusted_peer: bool,
) -> Option<IpAddr> {
    let sent = req.headers.get_all(&X_FORWARDED_FOR).iter();
    headers::requester(peer, trusted_peer, sent.map(HeaderValue::as_bytes))
}

/// Sets X-Forwarded-For/-Proto/-Host/-Prefix on the upstream request, replacing whatever the
/// client sent (see [`Forwarded`] for what a trusted balancer keeps).
pub fn set_forwarding_headers(
    req: &mut RequestHeader,
    from: &Forwarded<'_>,
    prefix: Option<SessionPrefix<'_>>,
) -> Result<()> {
    let chain = from.chain();
    let proto = HeaderValue::from_bytes(from.proto()).ok();
    let host = from.host().and_then(|h| HeaderValue::from_bytes(h).ok());
    set_or_remove(
        req,
        &X_FORWARDED_FOR,
        (!chain.is_empty()).then(|| chain.to_string()),
    )?;
    set_or_remove(req, &X_FORWARDED_PROTO, proto)?;
    set_or_remove(req, &X_FORWARDED_HOST, host)?;
    set_or_remove(req, &X_FORWARDED_PREFIX, prefix.map(|p| p.to_string()))
}

fn set_or_remove<V: TryInto<HeaderValue>>(
    req: &mut RequestHeader,
    name: &'static HeaderName,
    value: Option<V>,
) -> Result<()>
where
    <V as TryInto<HeaderValue>>::Error: std::fmt::Debug,
{
    match value {
        Some(value) => req.insert_header(name.as_str(), value),
        None => {
            req.remove_header(name);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(cookies: &[&str]) -> RequestHeader {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        for c in cookies {
            r.append_header(COOKIE, *c).unwrap();
        }
        r
    }

    fn cookies(r: &RequestHeader) -> Vec<&str> {
        r.headers
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn strips_only_our_cookies() {
        let own = OwnCookies::new("sr_session", "sr_grant");
        let mut r = req(&["a=1; sr_session=t1; sr_session_x=2", "b=2; sr_grant_t1=g"]);
        strip_own_cookies(&mut r, &own);
        assert_eq!(cookies(&r), vec!["a=1; sr_session_x=2", "b=2"]);
        let mut r = req(&["sr_session=t1", "sr_grant_t1=g"]);
        strip_own_cookies(&mut r, &own);
        assert!(cookies(&r).is_empty());
        let mut r = req(&["x=1"]);
        strip_own_cookies(&mut r, &own);
        assert_eq!(cookies(&r), vec!["x=1"]);
    }

    fn header<'r>(r: &'r RequestHeader, name: &str) -> &'r str {
        r.headers.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn forwarding_headers_replace_the_clients() {
        let mut r = req(&[]);
        r.insert_header("host", "edit.acme.example.com").unwrap();
        r.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        r.insert_header("x-forwarded-proto", "https").unwrap();
        r.insert_header("x-forwarded-host", "evil.example").unwrap();
        let mut out = r.clone();
        let from = forwarded_from(&r, Some("10.0.0.9".parse().unwrap()), false, false);
        let target = crate::routing::Target {
            client: "acme".into(),
            thread: "t1".into(),
            via: crate::routing::Via::Path,
            strip: 0,
        };
        set_forwarding_headers(&mut out, &from, headers::forwarded_prefix(&target)).unwrap();
        assert_eq!(header(&out, "x-forwarded-for"), "10.0.0.9");
        assert_eq!(header(&out, "x-forwarded-proto"), "http");
        assert_eq!(header(&out, "x-forwarded-host"), "edit.acme.example.com");
        assert_eq!(header(&out, "x-forwarded-prefix"), "/session/t1");
    }

    #[test]
    fn navigation_is_told_from_assets() {
        let mut r = RequestHeader::build("GET", b"/", None).unwrap();
        r.insert_header("accept", "text/html,*/*").unwrap();
        assert_eq!(request_kind(&r, false), RequestKind::Navigation);
        r.insert_header("sec-fetch-mode", "cors").unwrap();
        assert_eq!(request_kind(&r, false), RequestKind::Asset);
        assert_eq!(request_kind(&r, true), RequestKind::Upgrade);
    }
}
