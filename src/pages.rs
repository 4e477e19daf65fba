//! The answers the router gives itself: an HTML page for a person navigating, a short plain body
//! for assets and fetches, and a bare status for WebSocket upgrades. No request data is echoed.

use bytes::Bytes;

use crate::outcome::Outcome;

/// Who is asking, which decides the shape of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// A browser navigation: gets a page, one that reloads itself while a container starts.
    Navigation,
    /// A script, style or fetch: gets a short plain-text body.
    Asset,
    /// A WebSocket upgrade: gets the status alone, fast, so the dev client keeps polling.
    Upgrade,
}

/// A complete answer, ready to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<&'static str>,
    pub retry_after: Option<u32>,
    pub location: Option<String>,
    /// A cookie the answer sets: the grant of a link-token exchange.
    pub set_cookie: Option<String>,
    pub body: Bytes,
}

struct Wording {
    title: &'static str,
    message: &'static str,
    retry_after: Option<u32>,
    reload: Reload,
}

/// How a page comes back by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reload {
    Never,
    /// A fixed refresh after `retry_after`.
    Refresh,
    /// Asks the router to hold a request until the session is routable ([`WAIT_HEADER`]), then
    /// reloads at once.
    Watch,
}

/// The header of the waking page's own request: held by the router until the session is
/// routable (204) or the wait times out (503), never forwarded to a container.
pub const WAIT_HEADER: &str = "x-session-router-wait";

fn wording(outcome: Outcome) -> Wording {
    use Reload::{Never, Refresh, Watch};
    let w = |title, message, retry_after, reload| Wording {
        title,
        message,
        retry_after,
        reload,
    };
    match outcome {
        Outcome::NoSession => w("No active session", "This address names no editing session. Open the preview link from your editor.", None, Never),
        Outcome::UnknownSession => w("Session not found", "This editing session does not exist or has ended. Start a new session from your editor.", None, Never),
        Outcome::ContainerStarting => w("Starting your preview", "Your preview is starting. This page reloads by itself when it is ready.", Some(2), Refresh),
        Outcome::ContainerUnhealthy => w("Preview restarting", "Your preview is not answering right now. This page reloads by itself when it is back.", Some(2), Refresh),
        Outcome::ContainerWaking => w("Waking your preview", "This editing session was paused and is starting again. The preview shows here by itself as soon as it is ready.", Some(2), Watch),
        Outcome::ContainerStopped => w("Session paused", "This editing session is paused. Resume it from your editor to see the preview again.", None, Never),
        Outcome::StoreUnavailable => w("Preview temporarily unavailable", "The router cannot look up this session right now. This page retries by itself.", Some(5), Refresh),
        Outcome::RateLimited => w("Too many requests", "Too many previews were looked up from this address at once. This page retries by itself in a moment.", Some(1), Refresh),
        Outcome::UpstreamUnreachable => w("Preview unreachable", "The preview server for this session is not answering. Try again in a moment.", None, Never),
        Outcome::ForbiddenUpstream | Outcome::ContainerMismatch => w("Preview unavailable", "This session's preview cannot be reached.", None, Never),
        Outcome::BadRequest => w("Bad request", "The request could not be understood.", None, Never),
        Outcome::AccessDenied => w("This preview is private", "Open the preview from your editor: its link lets this browser in. A link is good for a few minutes; if it has expired or access was revoked, open the preview again from the editor.", None, Never),
        _ => w("Not found", "Nothing is served at this address.", None, Never),
    }
}

const PAGE_STYLE: &str = "body{font-family:system-ui,sans-serif;max-width:36rem;margin:4rem auto;padding:0 1rem;color:#222}h1{font-size:1.5rem}p{line-height:1.5}";

/// The waking page's watch: one request held by the router until the session is routable, then
/// a reload; after a timeout or a network error it asks again.
const WATCH_SCRIPT: &str = "<script>(async()=>{for(;;){try{const r=await fetch(location.href,{headers:{'X-Session-Router-Wait':'1'},cache:'no-store'});if(r.status!==503){location.reload();return}}catch(e){}await new Promise(d=>setTimeout(d,1000))}})()</script><noscript><meta http-equiv=\"refresh\" content=\"5\"></noscript>";

fn html_page(w: &Wording) -> String {
    let refresh = match (w.reload, w.retry_after) {
        (Reload::Refresh, Some(secs)) => {
            format!("<meta http-equiv=\"refresh\" content=\"{secs}\">")
        }
        (Reload::Watch, _) => WATCH_SCRIPT.to_owned(),
        _ => String::new(),
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>{title}</title><style>{PAGE_STYLE}</style></head><body><h1>{title}</h1><p>{message}</p></body></html>\n",
        title = w.title,
        message = w.message,
    )
}

/// The router's own answer for an outcome that did not reach a container.
pub fn answer(outcome: Outcome, kind: RequestKind) -> Answer {
    let w = wording(outcome);
    let (content_type, body) = match (outcome, kind) {
        (_, RequestKind::Upgrade)
        | (Outcome::AccessDenied | Outcome::ContainerWaking, RequestKind::Asset) => {
            (None, Bytes::new())
        }
        // Not one of ours: no branded page for hosts the router does not serve.
        (Outcome::NotPreviewHost, _) | (_, RequestKind::Asset) => (
            Some("text/plain; charset=utf-8"),
            Bytes::from(format!("{}\n", w.title)),
        ),
        (_, RequestKind::Navigation) => {
            (Some("text/html; charset=utf-8"), Bytes::from(html_page(&w)))
        }
    };
    Answer {
        status: outcome.status(),
        content_type,
        retry_after: w.retry_after,
        location: None,
        set_cookie: None,
        body,
    }
}

impl Answer {
    /// The answer as an HTTP/1.1 response, for writers without Pingora's response type.
    pub fn write_http1(&self, out: &mut Vec<u8>, close: bool) {
        use std::io::Write;
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        // Writes into a Vec cannot fail.
        let _ = write!(
            out,
            "HTTP/1.1 {} {reason}\r\nCache-Control: no-store\r\nContent-Length: {}\r\n",
            self.status,
            self.body.len()
        );
        if let Some(ct) = self.content_type {
            let _ = write!(out, "Content-Type: {ct}\r\n");
        }
        if let Some(secs) = self.retry_after {
            let _ = write!(out, "Retry-After: {secs}\r\n");
        }
        if let Some(location) = &self.location {
            let _ = write!(out, "Location: {location}\r\n");
        }
        if let Some(cookie) = &self.set_cookie {
            let _ = write!(out, "Set-Cookie: {cookie}\r\n");
        }
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
    }
}

/// A permanent redirect that keeps the method, e.g. `/session/t` to `/session/t/`.
pub fn redirect(location: String) -> Answer {
    Answer {
        status: Outcome::Redirect.status(),
        content_type: None,
        retry_after: None,
        location: Some(location),
        set_cookie: None,
        body: Bytes::new(),
    }
}

/// The answer to the waking page's wait: 204 once the session is routable (the page reloads),
/// 503 when the wait ran out (it asks again).
pub fn wait_answer(routable: bool) -> Answer {
    Answer {
        status: if routable { 204 } else { 503 },
        content_type: None,
        retry_after: (!routable).then_some(1),
        location: None,
        set_cookie: None,
        body: Bytes::new(),
    }
}

/// The answer to a preview link: 303 to the same URL without its token, with the grant the
/// token was exchanged for, if it was valid.
pub fn token_exchange(location: String, grant_cookie: Option<String>) -> Answer {
    Answer {
        status: 303,
        content_type: None,
        retry_after: None,
        location: Some(location),
        set_cookie: grant_cookie,
        body: Bytes::new(),
    }
}

/// The session the wrong-host answer's examples name: the embedded default's demo session.
const EXAMPLE_CLIENT: &str = "demo";
const EXAMPLE_THREAD: &str = "hello";

/// The 404 for a Host that no pattern serves, as a client on the router's own machine gets it:
/// someone trying the router by address (curl, or a browser at the IP), so it names the hosts
/// served and shows how to send one. Built once at start-up from the configured patterns and the
/// proxy port; the request's own Host is not echoed. Other clients get the bare 404.
pub fn wrong_host(path_hosts: &[&str], host_patterns: &[&str], port: u16) -> Answer {
    use std::fmt::Write;
    let example = |pattern: &str| {
        pattern
            .replace("{client}", EXAMPLE_CLIENT)
            .replace("{thread}", EXAMPLE_THREAD)
    };
    let mut body = String::from("Not found: this router serves no preview at that host.\n");
    if !path_hosts.is_empty() || !host_patterns.is_empty() {
        body.push_str("It serves previews at:\n");
    }
    for pattern in path_hosts {
        let _ = writeln!(body, "  {pattern}/session/{{thread}}/...");
    }
    for pattern in host_patterns {
        let _ = writeln!(body, "  {pattern}/...");
    }
    let (host, path) = match (path_hosts.first(), host_patterns.first()) {
        (Some(p), _) => (example(p), format!("/session/{EXAMPLE_THREAD}/")),
        (None, Some(h)) => (example(h), "/".to_owned()),
        (None, None) => return answer(Outcome::NotPreviewHost, RequestKind::Asset),
    };
    let _ = writeln!(
        body,
        "Send the preview's host name, e.g. for client {EXAMPLE_CLIENT}, thread {EXAMPLE_THREAD}:\n  \
         curl -H 'Host: {host}' http://127.0.0.1:{port}{path}"
    );
    if host.ends_with(".localhost") {
        let _ = writeln!(
            body,
            "or open http://{host}:{port}{path} in a browser (*.localhost names this machine)."
        );
    }
    Answer {
        body: Bytes::from(body),
        ..answer(Outcome::NotPreviewHost, RequestKind::Asset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starting_page_reloads_itself_and_says_when() {
        let a = answer(Outcome::ContainerStarting, RequestKind::Navigation);
        assert_eq!(a.status, 503);
        assert_eq!(a.retry_after, Some(2));
        assert_eq!(a.content_type, Some("text/html; charset=utf-8"));
        let body = std::str::from_utf8(&a.body).unwrap();
        assert!(body.contains("http-equiv=\"refresh\""));
    }

    #[test]
    fn upgrades_get_a_bare_status() {
        let a = answer(Outcome::ContainerStarting, RequestKind::Upgrade);
        assert_eq!((a.status, a.body.len()), (503, 0));
        assert_eq!(a.retry_after, Some(2));
    }

    #[test]
    fn rate_limited_answers_say_when_to_come_back() {
        for kind in [
            RequestKind::Navigation,
            RequestKind::Asset,
            RequestKind::Upgrade,
        ] {
            let a = answer(Outcome::RateLimited, kind);
            assert_eq!((a.status, a.retry_after), (429, Some(1)), "{kind:?}");
        }
        let page = answer(Outcome::RateLimited, RequestKind::Navigation);
        assert_eq!(page.content_type, Some("text/html; charset=utf-8"));
        assert!(answer(Outcome::RateLimited, RequestKind::Upgrade)
            .body
            .is_empty());
    }

    #[test]
    fn access_denied_is_a_page_for_people_and_bare_for_the_rest() {
        let page = answer(Outcome::AccessDenied, RequestKind::Navigation);
        assert_eq!(page.status, 401);
        let body = std::str::from_utf8(&page.body).unwrap();
        assert!(body.contains("Open the preview from your editor"));
        for kind in [RequestKind::Asset, RequestKind::Upgrade] {
            let a = answer(Outcome::AccessDenied, kind);
            assert_eq!((a.status, a.body.len(), a.content_type), (401, 0, None));
        }
    }

    #[test]
    fn the_waking_page_watches_and_assets_get_a_bare_503() {
        let page = answer(Outcome::ContainerWaking, RequestKind::Navigation);
        assert_eq!((page.status, page.retry_after), (503, Some(2)));
        let body = std::str::from_utf8(&page.body).unwrap();
        assert!(body.contains("X-Session-Router-Wait") && body.contains("location.reload()"));
        assert!(
            !body.contains("http-equiv=\"refresh\" content=\"2\""),
            "no fixed loop"
        );
        let asset = answer(Outcome::ContainerWaking, RequestKind::Asset);
        assert_eq!((asset.status, asset.body.len()), (503, 0));
        assert_eq!(asset.retry_after, Some(2));
    }

    #[test]
    fn a_wrong_host_is_told_which_hosts_are_served_and_how_to_send_one() {
        let a = wrong_host(
            &["edit.{client}.localhost"],
            &["{thread}.edit.{client}.localhost"],
            8080,
        );
        let body = std::str::from_utf8(&a.body).unwrap();
        assert_eq!(a.status, 404);
        assert_eq!(a.content_type, Some("text/plain; charset=utf-8"));
        assert!(body.starts_with("Not found"), "{body}");
        assert!(
            body.contains("  edit.{client}.localhost/session/{thread}/..."),
            "{body}"
        );
        assert!(
            body.contains("  {thread}.edit.{client}.localhost/..."),
            "{body}"
        );
        assert!(
            body.contains(
                "curl -H 'Host: edit.demo.localhost' http://127.0.0.1:8080/session/hello/"
            ),
            "{body}"
        );
        assert!(
            body.contains("open http://edit.demo.localhost:8080/session/hello/"),
            "{body}"
        );

        let public = wrong_host(&[], &["{thread}.edit.{client}.example.com"], 80);
        let body = std::str::from_utf8(&public.body).unwrap();
        assert!(
            body.contains("curl -H 'Host: hello.edit.demo.example.com' http://127.0.0.1:80/"),
            "{body}"
        );
        assert!(
            !body.contains("open http"),
            "no browser hint off localhost: {body}"
        );
    }

    #[test]
    fn assets_get_plain_text() {
        let a = answer(Outcome::UnknownSession, RequestKind::Asset);
        assert_eq!(a.content_type, Some("text/plain; charset=utf-8"));
        assert_eq!(a.status, 404);
    }
}
