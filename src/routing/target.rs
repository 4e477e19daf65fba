//! Turns a request's host, path, Referer and cookie into the session it addresses: which client,
//! which thread, how it was found, and the path to forward.

use super::host::{host_without_port, PreviewHosts};

/// Longest thread id accepted from a path, Referer or cookie.
pub const MAX_THREAD_LEN: usize = 128;
/// Longest client id; a DNS label is at most 63 bytes.
pub const MAX_CLIENT_LEN: usize = 63;
const SESSION_PREFIX: &str = "/session/";

/// How the thread of a request was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `/session/{thread}/...`: the prefix is stripped before forwarding.
    Path,
    /// A root-absolute dev-server URL whose Referer is a session page.
    Referer,
    /// A root-absolute dev-server URL carrying the affinity cookie.
    Cookie,
    /// `{thread}.edit.{client}...`: host mode, forwarded as is.
    Host,
}

/// The parts of a request that routing reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    pub host: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub referer: Option<&'a str>,
    /// The affinity cookie's value, if the request carried one.
    pub cookie_thread: Option<&'a str>,
}

/// Where a request goes, before the table is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub client: String,
    pub thread: String,
    pub via: Via,
    /// Leading bytes of the request's path to leave out when forwarding (the `/session/{thread}`
    /// prefix), 0 for none. The query stays.
    pub strip: usize,
}

impl Target {
    /// The path and query to send to the container, given the request's own.
    pub fn upstream_target<'a>(&self, path_and_query: &'a str) -> &'a str {
        path_and_query.get(self.strip..).unwrap_or(path_and_query)
    }
}

/// Why a request could not be given a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reject {
    NotPreviewHost,
    NoSession,
    /// `/session/{thread}` without the trailing slash: redirect here so relative URLs resolve.
    AddSlash(String),
    BadRequest(&'static str),
}

/// Resolves the target of a request against the configured host patterns.
pub fn classify(hosts: &PreviewHosts, req: &RequestParts<'_>) -> Result<Target, Reject> {
    let host = host_without_port(req.host).ok_or(Reject::BadRequest("malformed Host port"))?;
    if host.is_empty() {
        return Err(Reject::BadRequest("missing Host"));
    }
    if let Some(m) = hosts.host_patterns.iter().find_map(|p| p.matches(host)) {
        let thread = m.thread.ok_or(Reject::NotPreviewHost)?;
        return Ok(Target {
            client: valid_client(m.client)?,
            thread: valid_thread(thread)?.to_owned(),
            via: Via::Host,
            strip: 0,
        });
    }
    let m = hosts
        .path_hosts
        .iter()
        .find_map(|p| p.matches(host))
        .ok_or(Reject::NotPreviewHost)?;
    let client = valid_client(m.client)?;
    if let Some(after) = req.path.strip_prefix(SESSION_PREFIX) {
        return prefixed_target(client, after, req.query);
    }
    let (thread, via) = if let Some(t) = req.referer.and_then(|r| referer_thread(r, host)) {
        (t, Via::Referer)
    } else if let Some(t) = req.cookie_thread {
        (t, Via::Cookie)
    } else {
        return Err(Reject::NoSession);
    };
    Ok(Target {
        client,
        thread: valid_thread(thread)?.to_owned(),
        via,
        strip: 0,
    })
}

fn prefixed_target(client: String, after: &str, query: Option<&str>) -> Result<Target, Reject> {
    let (thread, rest) = match after.find('/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, ""),
    };
    if thread.is_empty() {
        return Err(Reject::NoSession);
    }
    let thread = valid_thread(thread)?;
    if rest.is_empty() {
        let mut location = format!("{SESSION_PREFIX}{thread}/");
        if let Some(q) = query {
            location.push('?');
            location.push_str(q);
        }
        return Err(Reject::AddSlash(location));
    }
    Ok(Target {
        client,
        thread: thread.to_owned(),
        via: Via::Path,
        strip: SESSION_PREFIX.len() + thread.len(),
    })
}

/// The thread of a Referer that is a session page on the same host, if it is one.
fn referer_thread<'r>(referer: &'r str, host: &str) -> Option<&'r str> {
    let after_scheme = referer.split_once("://")?.1;
    let (authority, path) = after_scheme.split_at(after_scheme.find('/')?);
    if !host_without_port(authority)?.eq_ignore_ascii_case(host) {
        return None;
    }
    let after = path.strip_prefix(SESSION_PREFIX)?;
    let end = after.find(['/', '?', '#']).unwrap_or(after.len());
    Some(&after[..end]).filter(|t| !t.is_empty())
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Thread ids are opaque to the router but must be plain: no dots, slashes or escapes, so no
/// spelling of a path can name a different session than the one it appears to.
pub fn valid_thread(thread: &str) -> Result<&str, Reject> {
    if thread.is_empty() || thread.len() > MAX_THREAD_LEN || !thread.bytes().all(is_id_byte) {
        return Err(Reject::BadRequest("malformed session id"));
    }
    Ok(thread)
}

/// Client ids come from a DNS label and are compared lowercased.
fn valid_client(client: &str) -> Result<String, Reject> {
    if client.is_empty() || client.len() > MAX_CLIENT_LEN || !client.bytes().all(is_id_byte) {
        return Err(Reject::BadRequest("malformed client id"));
    }
    Ok(client.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
