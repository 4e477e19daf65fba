//! What the router reads from a request's headers and what it adds, whichever HTTP engine holds
//! the request (Pingora's proxy, or the router's own keep-alive path): the affinity cookie,
//! navigation or asset, and the X-Forwarded-* values the dev server sees.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::pages::RequestKind;
use crate::routing::{Target, Via};

/// The value of cookie `name` among a request's Cookie header values, if present.
pub fn cookie_in<'h>(values: impl IntoIterator<Item = &'h [u8]>, name: &str) -> Option<&'h str> {
    cookie_where(values, |n| n == name)
}

/// The value of the first cookie whose name `matches`.
fn cookie_where<'h>(
    values: impl IntoIterator<Item = &'h [u8]>,
    matches: impl Fn(&str) -> bool,
) -> Option<&'h str> {
    values
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (n, v) = pair.trim().split_once('=')?;
            matches(n).then_some(v.trim_matches('"'))
        })
}

/// The names of the router's own cookies: the affinity cookie and every grant cookie
/// (`{grant_cookie}_{thread}`). They are never forwarded to a container and no container may set
/// them. Names are compared without regard to case, so no variant a browser might keep slips
/// through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCookies {
    affinity: String,
    /// The grant cookie prefix, `_` included.
    grant_prefix: String,
}

impl OwnCookies {
    pub fn new(affinity: &str, grant_cookie: &str) -> Self {
        OwnCookies {
            affinity: affinity.to_owned(),
            grant_prefix: format!("{grant_cookie}_"),
        }
    }

    pub fn owns(&self, name: &str) -> bool {
        let prefix = self.grant_prefix.len();
        name.eq_ignore_ascii_case(&self.affinity)
            || (name.len() > prefix
                && name.is_char_boundary(prefix)
                && name[..prefix].eq_ignore_ascii_case(&self.grant_prefix))
    }

    /// The value of the grant cookie of `thread` among a request's Cookie header values.
    pub fn grant_in<'h>(
        &self,
        values: impl IntoIterator<Item = &'h [u8]>,
        thread: &str,
    ) -> Option<&'h str> {
        cookie_where(values, |n| {
            n.strip_prefix(&self.grant_prefix) == Some(thread)
        })
    }

    /// The name of the grant cookie of `thread`: one per thread, so that tabs on two threads of
    /// one host (path mode) each keep their own.
    pub fn grant_name(&self, thread: &str) -> String {
        format!("{}{thread}", self.grant_prefix)
    }
}

/// Whether a Cookie header value carries one of the router's own cookies.
pub fn has_own_cookie(value: &str, own: &OwnCookies) -> bool {
    value.split(';').any(|pair| is_own(pair, own))
}

fn is_own(pair: &str, own: &OwnCookies) -> bool {
    pair.trim()
        .split_once('=')
        .is_some_and(|(n, _)| own.owns(n))
}

/// The pairs of a Cookie header value other than the router's own, trimmed, in order: what the
/// dev server gets, since the router's cookies (affinity, grants) must never leak into app code.
pub fn cookies_except<'v>(value: &'v str, own: &'v OwnCookies) -> impl Iterator<Item = &'v str> {
    value
        .split(';')
        .filter(move |pair| !is_own(pair, own))
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
}

/// Whether a container's Set-Cookie value sets one of the router's own cookies (`own`), which a
/// container may not: one thread's dev server must not steer the client's affinity or grants.
/// Names are compared without regard to case, so no variant a browser might keep slips through.
pub fn sets_own_cookie(value: &[u8], own: &OwnCookies) -> bool {
    // Lossy: a value that is not UTF-8 still names its cookie in ASCII.
    cookie::Cookie::parse(String::from_utf8_lossy(value)).is_ok_and(|c| own.owns(c.name()))
}

/// Navigations get pages and the affinity cookie; assets get short bodies.
pub fn request_kind(
    upgrade: bool,
    is_get: bool,
    sec_fetch_mode: Option<&[u8]>,
    accept: Option<&[u8]>,
) -> RequestKind {
    if upgrade {
        return RequestKind::Upgrade;
    }
    let navigate = match sec_fetch_mode {
        Some(mode) => mode == b"navigate",
        None => is_get && accept.is_some_and(|a| contains(a, b"text/html")),
    };
    if navigate {
        RequestKind::Navigation
    } else {
        RequestKind::Asset
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Whether the answer should (re)set the affinity cookie: path-mode navigations whose cookie does
/// not already name their thread.
pub fn wants_affinity(target: &Target, kind: RequestKind, cookie_thread: Option<&str>) -> bool {
    target.via == Via::Path
        && kind == RequestKind::Navigation
        && cookie_thread != Some(target.thread.as_str())
}

/// The Set-Cookie that pins root-absolute dev-server requests to a thread. Host-only (no
/// Domain) so it never reaches another client's host. Behind TLS it is `Secure; SameSite=None;
/// Partitioned`, as the grant cookie is: a preview framed by an editor on another site loads
/// `/@vite/client`'s own imports (Referer `/@vite/client`) by this cookie alone, and browsers drop
/// a `SameSite=Lax` cookie set in a cross-site frame. Without TLS, `SameSite=Lax`.
pub fn affinity_cookie(name: &str, thread: &str, secure: bool) -> String {
    let attributes = if secure {
        "SameSite=None; Secure; Partitioned"
    } else {
        "SameSite=Lax"
    };
    format!("{name}={thread}; Path=/; HttpOnly; {attributes}")
}

/// Where a request came from, as far as the forwarding headers tell it.
#[derive(Debug, Clone, Copy)]
pub struct Forwarded<'a> {
    /// The address that connected to the router.
    pub peer: Option<IpAddr>,
    /// Whether that peer is a configured balancer whose own X-Forwarded-* can be believed.
    pub trusted_peer: bool,
    pub tls: bool,
    /// The request's own X-Forwarded-For, -Proto and -Host, believed only from a trusted peer.
    pub sent_for: Option<&'a str>,
    pub sent_proto: Option<&'a [u8]>,
    pub sent_host: Option<&'a [u8]>,
    /// The request's Host.
    pub host: Option<&'a [u8]>,
}

impl<'a> Forwarded<'a> {
    fn believed<T>(&self, sent: Option<T>) -> Option<T> {
        sent.filter(|_| self.trusted_peer)
    }

    /// X-Forwarded-For: from a trusted balancer its chain with the balancer appended; from
    /// anyone else, the peer alone.
    pub fn chain(&self) -> Chain<'a> {
        Chain {
            sent: self.believed(self.sent_for),
            peer: self.peer,
        }
    }

    pub fn proto(&self) -> &'a [u8] {
        self.believed(self.sent_proto)
            .unwrap_or(if self.tls { b"https" } else { b"http" })
    }

    pub fn host(&self) -> Option<&'a [u8]> {
        self.believed(self.sent_host).or(self.host)
    }

    /// Whether the client reached the balancer, or the router, over TLS. Marking the cookie
    /// Secure is only ever stricter, so a client's own claim is enough here.
    pub fn client_tls(&self) -> bool {
        self.tls
            || self
                .sent_proto
                .is_some_and(|p| p.eq_ignore_ascii_case(b"https"))
    }
}

/// The client address a request is charged to: the peer, or, when the peer is a trusted
/// balancer, the address it appended to X-Forwarded-For: the last entry of the last header
/// (`forwarded_for` is every X-Forwarded-For value, in order). Everything left of that entry
/// the client could have written itself. Without a readable entry the balancer is the client.
pub fn requester<'h>(
    peer: Option<IpAddr>,
    trusted_peer: bool,
    forwarded_for: impl IntoIterator<Item = &'h [u8]>,
) -> Option<IpAddr> {
    if !trusted_peer {
        return peer;
    }
    let last = forwarded_for.into_iter().last();
    last.and_then(appended_address).or(peer)
}

fn appended_address(value: &[u8]) -> Option<IpAddr> {
    let entry = std::str::from_utf8(value).ok()?.rsplit(',').next()?.trim();
    entry
        .parse::<IpAddr>()
        .or_else(|_| entry.parse::<SocketAddr>().map(|a| a.ip()))
        .ok()
}

/// An X-Forwarded-For value, written without building a string first.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a> {
    sent: Option<&'a str>,
    peer: Option<IpAddr>,
}

impl Chain<'_> {
    pub fn is_empty(&self) -> bool {
        self.sent.is_none() && self.peer.is_none()
    }
}

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.sent, self.peer) {
            (Some(list), Some(peer)) => write!(f, "{list}, {peer}"),
            (None, Some(peer)) => write!(f, "{peer}"),
            (Some(list), None) => f.write_str(list),
            (None, None) => Ok(()),
        }
    }
}

/// The X-Forwarded-Prefix of a target: the path prefix the router stripped, if any.
pub fn forwarded_prefix(target: &Target) -> Option<SessionPrefix<'_>> {
    (target.via != Via::Host).then_some(SessionPrefix(&target.thread))
}

/// `/session/{thread}`, written without building a string first.
#[derive(Debug, Clone, Copy)]
pub struct SessionPrefix<'a>(&'a str);

impl fmt::Display for SessionPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/session/{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_affinity_cookie_is_partitioned_only_behind_tls() {
        assert_eq!(
            affinity_cookie("sr_session", "t1", false),
            "sr_session=t1; Path=/; HttpOnly; SameSite=Lax"
        );
        assert_eq!(
            affinity_cookie("sr_session", "t1", true),
            "sr_session=t1; Path=/; HttpOnly; SameSite=None; Secure; Partitioned"
        );
    }

    #[test]
    fn finds_cookie_among_others() {
        let values: [&[u8]; 2] = [b"a=1; sr_session=t1", b"b=2"];
        assert_eq!(cookie_in(values, "sr_session"), Some("t1"));
        assert_eq!(cookie_in(values, "sr"), None);
    }

    #[test]
    fn keeps_every_cookie_but_ours() {
        let own = OwnCookies::new("sr_session", "sr_grant");
        let sent = "a=1; sr_session=t1; sr_session_x=2; sr_grant_t1=g; SR_Grant_t2=g; sr_grant=3";
        let kept: Vec<&str> = cookies_except(sent, &own).collect();
        assert_eq!(kept, ["a=1", "sr_session_x=2", "sr_grant=3"]);
        assert_eq!(cookies_except("sr_session=t1", &own).count(), 0);
        assert!(has_own_cookie("x=1; sr_session=t", &own));
        assert!(has_own_cookie("x=1; sr_grant_t9=g", &own));
        assert!(!has_own_cookie("sr_session_x=1; sr_grant_=1", &own));
        assert_eq!(own.grant_name("t1"), "sr_grant_t1");
        let values: [&[u8]; 2] = [b"sr_grant_t10=x; a=1", b"sr_grant_t1=y"];
        assert_eq!(own.grant_in(values, "t1"), Some("y"));
        assert_eq!(own.grant_in(values, "t2"), None);
    }

    fn from(trusted_peer: bool) -> Forwarded<'static> {
        Forwarded {
            peer: Some("10.0.0.9".parse().unwrap()),
            trusted_peer,
            tls: false,
            sent_for: Some("203.0.113.7"),
            sent_proto: Some(b"https"),
            sent_host: Some(b"evil.example"),
            host: Some(b"edit.acme.example.com"),
        }
    }

    #[test]
    fn untrusted_forwarding_values_are_replaced() {
        let f = from(false);
        assert_eq!(f.chain().to_string(), "10.0.0.9");
        assert_eq!(f.proto(), b"http");
        assert_eq!(f.host(), Some(&b"edit.acme.example.com"[..]));
    }

    #[test]
    fn trusted_balancer_values_are_kept_and_extended() {
        let f = from(true);
        assert_eq!(f.chain().to_string(), "203.0.113.7, 10.0.0.9");
        assert_eq!(f.proto(), b"https");
        assert_eq!(f.host(), Some(&b"evil.example"[..]));
    }

    #[test]
    fn the_requester_is_the_peer_or_what_a_trusted_balancer_appended() {
        let peer = Some("10.0.0.9".parse().unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let sent: [&[u8]; 2] = [b"6.6.6.6", b"7.7.7.7, 203.0.113.7"];
        assert_eq!(requester(peer, false, sent), peer, "untrusted: the peer");
        assert_eq!(requester(peer, true, sent), ip("203.0.113.7"));
        let v6: [&[u8]; 1] = [b"1.2.3.4,2001:db8::1"];
        assert_eq!(requester(peer, true, v6), ip("2001:db8::1"));
        let port: [&[u8]; 1] = [b"[2001:db8::2]:443"];
        assert_eq!(requester(peer, true, port), ip("2001:db8::2"));
        let junk: [&[u8]; 1] = [b"203.0.113.7, unknown"];
        assert_eq!(
            requester(peer, true, junk),
            peer,
            "unreadable: the balancer"
        );
        assert_eq!(requester(peer, true, []), peer, "none: the balancer");
    }

    #[test]
    fn navigation_is_told_from_assets() {
        let html = Some(&b"text/html,*/*"[..]);
        assert_eq!(
            request_kind(false, true, None, html),
            RequestKind::Navigation
        );
        assert_eq!(request_kind(false, false, None, html), RequestKind::Asset);
        assert_eq!(
            request_kind(false, true, Some(b"cors"), html),
            RequestKind::Asset
        );
        assert_eq!(
            request_kind(false, true, Some(b"navigate"), None),
            RequestKind::Navigation
        );
        assert_eq!(request_kind(true, true, None, html), RequestKind::Upgrade);
    }
}
