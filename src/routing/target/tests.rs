use super::*;
use crate::routing::HostPattern;

fn hosts() -> PreviewHosts {
    PreviewHosts {
        path_hosts: vec![HostPattern::parse("edit.{client}.example.com", false).unwrap()],
        host_patterns: vec![
            HostPattern::parse("{thread}.edit.{client}.example.com", true).unwrap(),
        ],
    }
}

fn parts<'a>(host: &'a str, path: &'a str) -> RequestParts<'a> {
    RequestParts {
        host,
        path,
        query: None,
        referer: None,
        cookie_thread: None,
    }
}

#[test]
fn path_prefix_is_stripped_and_query_kept() {
    let mut req = parts("edit.acme.example.com:443", "/session/t1/src/a.css");
    req.query = Some("v=1&x=2");
    let t = classify(&hosts(), &req).unwrap();
    assert_eq!((t.client.as_str(), t.thread.as_str()), ("acme", "t1"));
    assert_eq!(t.via, Via::Path);
    assert_eq!(
        t.upstream_target("/session/t1/src/a.css?v=1&x=2"),
        "/src/a.css?v=1&x=2"
    );
}

#[test]
fn bare_session_path_redirects_with_slash() {
    let mut req = parts("edit.acme.example.com", "/session/t1");
    req.query = Some("a=b");
    assert_eq!(
        classify(&hosts(), &req),
        Err(Reject::AddSlash("/session/t1/?a=b".into()))
    );
}

#[test]
fn referer_wins_over_cookie() {
    let mut req = parts("edit.acme.example.com", "/@vite/client");
    req.referer = Some("https://edit.acme.example.com/session/t2/page?x#y");
    req.cookie_thread = Some("t3");
    let t = classify(&hosts(), &req).unwrap();
    assert_eq!((t.thread.as_str(), t.via), ("t2", Via::Referer));
    assert_eq!(t.strip, 0);
}

#[test]
fn referer_from_another_host_is_ignored() {
    let mut req = parts("edit.acme.example.com", "/@vite/client");
    req.referer = Some("https://edit.other.example.com/session/t2/");
    req.cookie_thread = Some("t3");
    let t = classify(&hosts(), &req).unwrap();
    assert_eq!((t.thread.as_str(), t.via), ("t3", Via::Cookie));
}

#[test]
fn unprefixed_without_hints_has_no_session() {
    let req = parts("edit.acme.example.com", "/src/x.js");
    assert_eq!(classify(&hosts(), &req), Err(Reject::NoSession));
    let req = parts("edit.acme.example.com", "/session/");
    assert_eq!(classify(&hosts(), &req), Err(Reject::NoSession));
}

#[test]
fn host_mode_takes_thread_from_host() {
    let req = parts("t9.edit.acme.example.com", "/@vite/client");
    let t = classify(&hosts(), &req).unwrap();
    assert_eq!((t.client.as_str(), t.thread.as_str()), ("acme", "t9"));
    assert_eq!(t.via, Via::Host);
}

#[test]
fn foreign_hosts_are_not_preview_hosts() {
    let req = parts("example.com", "/session/t1/");
    assert_eq!(classify(&hosts(), &req), Err(Reject::NotPreviewHost));
}

#[test]
fn malformed_ids_are_bad_requests() {
    for path in ["/session/a%2Fb/", "/session/../x/", "/session/a.b/"] {
        let req = parts("edit.acme.example.com", path);
        assert!(
            matches!(classify(&hosts(), &req), Err(Reject::BadRequest(_))),
            "{path}"
        );
    }
    let mut req = parts("edit.acme.example.com", "/x");
    req.cookie_thread = Some("bad value");
    assert!(matches!(
        classify(&hosts(), &req),
        Err(Reject::BadRequest(_))
    ));
    let long = format!("/session/{}/", "a".repeat(MAX_THREAD_LEN + 1));
    let req = parts("edit.acme.example.com", &long);
    assert!(matches!(
        classify(&hosts(), &req),
        Err(Reject::BadRequest(_))
    ));
    let req = parts("", "/");
    assert!(matches!(
        classify(&hosts(), &req),
        Err(Reject::BadRequest(_))
    ));
}

#[test]
fn dot_segments_after_the_thread_stay_in_that_session() {
    let req = parts("edit.acme.example.com", "/session/a/../b/");
    let t = classify(&hosts(), &req).unwrap();
    assert_eq!(t.thread, "a");
}

#[test]
fn client_is_lowercased() {
    let req = parts("edit.ACME.example.com", "/session/t1/");
    assert_eq!(classify(&hosts(), &req).unwrap().client, "acme");
}
