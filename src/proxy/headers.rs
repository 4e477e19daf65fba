//! Request and response header work of the proxy: reading and stripping the affinity cookie,
//! telling navigations from assets, and the forwarding headers the dev server sees.

use http::header::{ACCEPT, COOKIE};
use http::{HeaderMap, HeaderValue, Method};
use pingora::http::RequestHeader;

use crate::pages::RequestKind;

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
    let header = |name: &str| req.headers.get(name).and_then(|v| v.to_str().ok());
    let navigate = match header("sec-fetch-mode") {
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
