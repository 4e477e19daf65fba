//! Tenant isolation as a property: whatever host, path, Referer and cookie a request carries, the
//! session it is routed to belongs to the client its host names, and to no other.

use proptest::prelude::*;
use session_router::config::{Config, RouterFile};
use session_router::routing::{classify, RequestParts, Via};

fn routing() -> session_router::config::Routing {
    let mut file = RouterFile::default();
    file.routing.path_hosts = vec!["edit.{client}.example.com".into()];
    file.routing.host_patterns = vec!["{thread}.edit.{client}.example.com".into()];
    Config::validate(file).unwrap().routing
}

fn label() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("acme".to_owned()),
        Just("globex".to_owned()),
        Just("ACME".to_owned()),
        "[a-zA-Z0-9_.%-]{0,12}",
    ]
}

fn host() -> impl Strategy<Value = String> {
    (
        label(),
        label(),
        any::<bool>(),
        prop::option::of(1u16..65535),
    )
        .prop_map(|(client, thread, host_mode, port)| {
            let base = if host_mode {
                format!("{thread}.edit.{client}.example.com")
            } else {
                format!("edit.{client}.example.com")
            };
            port.map_or(base.clone(), |p| format!("{base}:{p}"))
        })
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        (label(), "[a-zA-Z0-9/._%-]{0,20}").prop_map(|(t, rest)| format!("/session/{t}/{rest}")),
        (label()).prop_map(|t| format!("/session/{t}")),
        "/[a-zA-Z0-9/._%@-]{0,20}",
        Just("/session/a/../b/".to_owned()),
    ]
}

fn referer() -> impl Strategy<Value = Option<String>> {
    prop::option::of((host(), path()).prop_map(|(h, p)| format!("https://{h}{p}")))
}

/// The client label of a preview host, lowercased, if it is one.
fn client_of(host: &str) -> Option<String> {
    let name = host.split(':').next()?;
    let labels: Vec<&str> = name.split('.').collect();
    match labels.as_slice() {
        [_, "edit", c, "example", "com"] | ["edit", c, "example", "com"] => {
            Some(c.to_ascii_lowercase())
        }
        _ => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn no_request_routes_across_clients(
        host in host(),
        path in path(),
        referer in referer(),
        cookie in prop::option::of(label()),
    ) {
        let routing = routing();
        let req = RequestParts {
            host: &host,
            path: &path,
            query: None,
            referer: referer.as_deref(),
            cookie_thread: cookie.as_deref(),
        };
        if let Ok(target) = classify(&routing.hosts, &req) {
            prop_assert_eq!(Some(target.client.clone()), client_of(&host));
            match target.via {
                Via::Referer => {
                    let referer = referer.as_deref().unwrap_or_default();
                    let referer_host = referer.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default();
                    prop_assert_eq!(client_of(referer_host), client_of(&host));
                }
                Via::Cookie => prop_assert_eq!(Some(target.thread.as_str()), cookie.as_deref()),
                Via::Path => {
                    let prefix = format!("/session/{}/", target.thread);
                    prop_assert!(path.starts_with(&prefix));
                }
                Via::Host => {}
            }
            prop_assert!(target.thread.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        }
    }
}
