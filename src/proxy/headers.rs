//! Request and response header work of the proxy: reading and stripping the affinity cookie,
//! telling navigations from assets, and the forwarding headers the dev server sees.

use std::net::IpAddr;

use http::header::{ACCEPT, COOKIE, HOST};
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use pingora::http::RequestHeader;
use pingora::Result;

use crate::pages::RequestKind;

// Header names read on every request, parsed once: a lookup by `&str` parses and hashes the
// name each time.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");

/// The value of cookie `name` in the request's Cookie headers, if present.
pub fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n == name).then_some(v.trim_matches('"'))
        })
}

/// Removes cookie `name` from the forwarded request, dropping the header if nothing is left.
/// The dev server never needs the router's cookie, and it must not leak into app code.
pub fn strip_cookie(req: &mut RequestHeader, name: &str) {
    let is_ours = |pair: &str| pair.trim().split_once('=').is_some_and(|(n, _)| n == name);
    let values: Vec<&str> = req
        .headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if !values.iter().any(|v| v.split(';').any(is_ours)) {
        return;
    }
    let kept: Vec<String> = values
        .iter()
        .map(|v| {
            let pairs: Vec<&str> = v
                .split(';')
                .filter(|p| !is_ours(p))
                .map(str::trim)
                .collect();
            pairs.join("; ")
        })
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
    if upgrade {
        return RequestKind::Upgrade;
    }
    let navigate = match req
        .headers
        .get(&SEC_FETCH_MODE)
        .and_then(|v| v.to_str().ok())
    {
        Some(mode) => mode == "navigate",
        None => {
            req.method == Method::GET
                && req
                    .headers
                    .get(ACCEPT)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|a| a.contains("text/html"))
        }
    };
    if navigate {
        RequestKind::Navigation
    } else {
        RequestKind::Asset
    }
}

/// The Set-Cookie that pins root-absolute dev-server requests to a thread. Host-only (no
/// Domain) so it never reaches another client's host.
pub fn affinity_cookie(name: &str, thread: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={thread}; Path=/; HttpOnly; SameSite=Lax{secure}")
}

/// Where a request came from, as far as the forwarding headers tell it.
pub struct Forwarded<'a> {
    /// The address that connected to the router.
    pub peer: Option<IpAddr>,
    /// Whether that peer is a configured balancer whose own X-Forwarded-* can be believed.
    pub trusted_peer: bool,
    pub tls: bool,
    /// The request as the client sent it.
    pub original: &'a RequestHeader,
}

/// Sets X-Forwarded-For/-Proto/-Host/-Prefix on the upstream request. From an untrusted peer
/// every client-sent value is replaced; from a trusted balancer its values are kept and the
/// balancer's own address is appended to X-Forwarded-For.
///
/// Runs on every proxied request, so values are reused rather than copied where the request
/// already holds them: the header names go in as static strings (Pingora keeps them as given
/// for the wire), and X-Forwarded-Host and a trusted X-Forwarded-Proto share the client's bytes.
pub fn set_forwarding_headers(
    req: &mut RequestHeader,
    from: &Forwarded<'_>,
    prefix: Option<String>,
) -> Result<()> {
    let sent = |name: &HeaderName| {
        from.original
            .headers
            .get(name)
            .filter(|v| from.trusted_peer && v.to_str().is_ok())
    };
    let sent_str = |name: &HeaderName| sent(name).and_then(|v| v.to_str().ok());
    let chain = match (sent_str(&X_FORWARDED_FOR), from.peer) {
        (Some(list), Some(peer)) => Some(format!("{list}, {peer}")),
        (None, Some(peer)) => Some(peer.to_string()),
        (list, None) => list.map(str::to_owned),
    };
    match chain {
        Some(chain) => req.insert_header("x-forwarded-for", chain)?,
        None => {
            req.remove_header(&X_FORWARDED_FOR);
        }
    }
    let proto = sent(&X_FORWARDED_PROTO)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static(if from.tls { "https" } else { "http" }));
    req.insert_header("x-forwarded-proto", proto)?;
    let host = sent(&X_FORWARDED_HOST).or_else(|| {
        from.original
            .headers
            .get(HOST)
            .filter(|h| h.to_str().is_ok())
    });
    match host {
        Some(host) => req.insert_header("x-forwarded-host", host.clone())?,
        None => {
            req.remove_header(&X_FORWARDED_HOST);
        }
    }
    match prefix {
        Some(prefix) => req.insert_header("x-forwarded-prefix", prefix)?,
        None => {
            req.remove_header("x-forwarded-prefix");
        }
    }
    Ok(())
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
    fn finds_cookie_among_others() {
        let r = req(&["a=1; sr_session=t1", "b=2"]);
        assert_eq!(cookie_value(&r.headers, "sr_session"), Some("t1"));
        assert_eq!(cookie_value(&r.headers, "sr"), None);
    }

    #[test]
    fn strips_only_our_cookie() {
        let mut r = req(&["a=1; sr_session=t1; sr_session_x=2", "b=2"]);
        strip_cookie(&mut r, "sr_session");
        assert_eq!(cookies(&r), vec!["a=1; sr_session_x=2", "b=2"]);
        let mut r = req(&["sr_session=t1"]);
        strip_cookie(&mut r, "sr_session");
        assert!(cookies(&r).is_empty());
        let mut r = req(&["x=1"]);
        strip_cookie(&mut r, "sr_session");
        assert_eq!(cookies(&r), vec!["x=1"]);
    }

    fn forwarded(original: &RequestHeader, trusted_peer: bool) -> RequestHeader {
        let mut out = original.clone();
        let from = Forwarded {
            peer: Some("10.0.0.9".parse().unwrap()),
            trusted_peer,
            tls: false,
            original,
        };
        set_forwarding_headers(&mut out, &from, Some("/session/t1".to_owned())).unwrap();
        out
    }

    fn header<'r>(r: &'r RequestHeader, name: &str) -> &'r str {
        r.headers.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn untrusted_forwarding_headers_are_replaced() {
        let mut r = req(&[]);
        r.insert_header("host", "edit.acme.example.com").unwrap();
        r.insert_header("x-forwarded-for", "6.6.6.6").unwrap();
        r.insert_header("x-forwarded-proto", "https").unwrap();
        r.insert_header("x-forwarded-host", "evil.example").unwrap();
        let out = forwarded(&r, false);
        assert_eq!(header(&out, "x-forwarded-for"), "10.0.0.9");
        assert_eq!(header(&out, "x-forwarded-proto"), "http");
        assert_eq!(header(&out, "x-forwarded-host"), "edit.acme.example.com");
        assert_eq!(header(&out, "x-forwarded-prefix"), "/session/t1");
    }

    #[test]
    fn trusted_balancer_headers_are_kept_and_extended() {
        let mut r = req(&[]);
        r.insert_header("host", "edit.acme.example.com").unwrap();
        r.insert_header("x-forwarded-for", "203.0.113.7").unwrap();
        r.insert_header("x-forwarded-proto", "https").unwrap();
        let out = forwarded(&r, true);
        assert_eq!(header(&out, "x-forwarded-for"), "203.0.113.7, 10.0.0.9");
        assert_eq!(header(&out, "x-forwarded-proto"), "https");
        assert_eq!(header(&out, "x-forwarded-host"), "edit.acme.example.com");
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
