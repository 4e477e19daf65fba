//! What a request presents for access, read the same way on both engines: the link token in its
//! query (`sr_token`), the URL to send the browser to without it, and the grant cookie set in
//! exchange.

use std::borrow::Cow;
use std::time::Duration;

use cookie::{Cookie, SameSite};

/// The query parameter of a preview link that carries its token.
pub const TOKEN_PARAM: &str = "sr_token";

/// Whether a query may carry the token under any spelling: a key can be percent-encoded
/// (`sr%5Ftoken`), and the container would decode it back, so any escape means a closer look.
/// Most dev-server queries (`?v=…`, `?astro&type=script`) are ruled out by one scan.
pub fn may_carry_token(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.contains(TOKEN_PARAM) || q.contains('%') || q.contains('+'))
}

/// The first `sr_token` of a query, decoded.
pub fn token_in(query: Option<&str>) -> Option<Cow<'_, str>> {
    if !may_carry_token(query) {
        return None;
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == TOKEN_PARAM)
        .map(|(_, value)| value)
}

fn is_token_pair(pair: &str) -> bool {
    form_urlencoded::parse(pair.as_bytes())
        .next()
        .is_some_and(|(key, _)| key == TOKEN_PARAM)
}

/// The request's own path and query without any `sr_token` pair, the other pairs left as sent:
/// where the exchange sends the browser, so that the token is neither kept in the address bar
/// and history nor forwarded to the container.
pub fn without_token(path: &str, query: Option<&str>) -> String {
    let kept: Vec<&str> = query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty() && !is_token_pair(pair))
        .collect();
    if kept.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// The Set-Cookie of a grant: host-only and HttpOnly, for every path of the host (root-absolute
/// dev assets and the HMR socket included). Behind TLS it is `Secure; SameSite=None;
/// Partitioned`, so that a preview framed by an editor on another site keeps it (in that
/// editor's partition only); without TLS, `SameSite=Lax`, since browsers drop `None` without
/// `Secure`.
pub fn grant_cookie(name: &str, value: &str, ttl: Duration, tls: bool) -> String {
    let max_age = cookie::time::Duration::seconds(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
    let cookie = Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .max_age(max_age)
        .secure(tls)
        .same_site(if tls { SameSite::None } else { SameSite::Lax })
        .partitioned(tls);
    cookie.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_is_found_however_its_key_is_spelled() {
        assert_eq!(token_in(Some("sr_token=abc")).as_deref(), Some("abc"));
        assert_eq!(
            token_in(Some("a=1&sr%5Ftoken=x%2Ey")).as_deref(),
            Some("x.y")
        );
        assert_eq!(token_in(Some("%73r_token=z")).as_deref(), Some("z"));
        assert_eq!(token_in(Some("v=123&astro&type=script")), None);
        assert_eq!(token_in(Some("sr_tokens=1")), None);
        assert_eq!(token_in(None), None);
        assert_eq!(token_in(Some("x=%20&y=sr_token")), None);
    }

    #[test]
    fn the_clean_url_keeps_every_other_pair_as_sent() {
        assert_eq!(
            without_token("/session/t1/", Some("sr_token=abc")),
            "/session/t1/"
        );
        assert_eq!(
            without_token("/p", Some("a=%20b&sr_token=abc&sr%5Ftoken=d&c")),
            "/p?a=%20b&c"
        );
        assert_eq!(without_token("/", Some("&&sr_token=1&")), "/");
    }

    #[test]
    fn the_grant_cookie_is_partitioned_only_behind_tls() {
        let ttl = Duration::from_secs(3600);
        let tls = grant_cookie("sr_grant_t1", "v", ttl, true);
        for part in [
            "sr_grant_t1=v",
            "HttpOnly",
            "Secure",
            "SameSite=None",
            "Partitioned",
        ] {
            assert!(tls.contains(part), "{tls} lacks {part}");
        }
        assert!(tls.contains("Path=/") && tls.contains("Max-Age=3600"));
        assert!(!tls.contains("Domain"), "host-only");
        let plain = grant_cookie("sr_grant_t1", "v", ttl, false);
        assert!(plain.contains("SameSite=Lax"));
        assert!(!plain.contains("Secure") && !plain.contains("Partitioned"));
    }
}
