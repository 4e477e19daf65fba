//! Fuzzes request routing: any host, path, query, Referer and cookie must either be refused or
//! name a session of the client its host names, and never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use session_router::config::{Config, RouterFile, Routing};
use session_router::routing::{classify, RequestParts, Via};

fn routing() -> Routing {
    let mut file = RouterFile::default();
    file.routing.path_hosts = vec!["edit.{client}.example.com".into()];
    file.routing.host_patterns = vec!["{thread}.edit.{client}.example.com".into()];
    match Config::validate(file) {
        Ok(config) => config.routing,
        Err(e) => panic!("fuzz config: {e}"),
    }
}

/// The client label of `host` under either pattern, lowercased. Written independently of the
/// router's matcher: everything before an all-digit port, labels compared case-insensitively.
fn client_label(host: &str) -> Option<String> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        Some(_) => return None,
        None => host,
    };
    let labels: Vec<String> = name.split('.').map(str::to_ascii_lowercase).collect();
    let n = labels.len();
    let shape = (n == 4 || n == 5) && labels[n - 2] == "example" && labels[n - 1] == "com";
    (shape && labels[n - 4] == "edit").then(|| labels[n - 3].clone())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\n');
    let host = fields.next().unwrap_or_default();
    let path = fields.next().unwrap_or_default();
    let query = fields.next().filter(|q| !q.is_empty());
    let referer = fields.next().filter(|r| !r.is_empty());
    let cookie = fields.next().filter(|c| !c.is_empty());
    let req = RequestParts {
        host,
        path,
        query,
        referer,
        cookie_thread: cookie,
    };
    if let Ok(target) = classify(&routing().hosts, &req) {
        assert_eq!(Some(target.client.clone()), client_label(host), "{req:?}");
        assert!(target
            .thread
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        if target.via == Via::Path {
            assert!(path.starts_with(&format!("/session/{}/", target.thread)));
        }
    }
});
