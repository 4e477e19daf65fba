//! Host patterns such as `edit.{client}.example.com`: parsing them from config and matching a
//! request's Host against them, one DNS label per placeholder.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PatternError {
    #[error("`{0}`: a placeholder must be a whole label, `{{client}}` or `{{thread}}`")]
    BadPlaceholder(String),
    #[error("`{0}`: must contain {{client}} exactly once")]
    NoClient(String),
    #[error("`{0}`: must contain {{thread}} exactly once (host mode)")]
    NoThread(String),
    #[error("`{0}`: {{thread}} belongs in host_patterns, not path_hosts")]
    UnexpectedThread(String),
    #[error("`{0}`: empty label")]
    EmptyLabel(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Label {
    Literal(String),
    Client,
    Thread,
}

/// The compiled host patterns requests are routed by: hosts whose path names the session, and
/// hosts that name it themselves.
#[derive(Debug, Clone)]
pub struct PreviewHosts {
    /// `edit.{client}.…`: the thread comes from the path, the Referer or the affinity cookie.
    pub path_hosts: Vec<HostPattern>,
    /// `{thread}.edit.{client}.…`: the host names both.
    pub host_patterns: Vec<HostPattern>,
}

/// A compiled host pattern. Literal labels compare case-insensitively, as DNS does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    source: String,
    labels: Vec<Label>,
}

/// The ids a host named: the client always, the thread in host mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostMatch<'h> {
    pub client: &'h str,
    pub thread: Option<&'h str>,
}

impl HostPattern {
    /// Compiles `pattern`; `host_mode` patterns must name the thread, path-mode ones must not.
    pub fn parse(pattern: &str, host_mode: bool) -> Result<Self, PatternError> {
        let err = |f: fn(String) -> PatternError| f(pattern.to_owned());
        let labels = pattern
            .split('.')
            .map(|label| match label {
                "" => Err(err(PatternError::EmptyLabel)),
                "{client}" => Ok(Label::Client),
                "{thread}" => Ok(Label::Thread),
                l if l.contains(['{', '}']) => Err(err(PatternError::BadPlaceholder)),
                l => Ok(Label::Literal(l.to_ascii_lowercase())),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let count = |want: &Label| labels.iter().filter(|l| *l == want).count();
        if count(&Label::Client) != 1 {
            return Err(err(PatternError::NoClient));
        }
        match (host_mode, count(&Label::Thread)) {
            (true, 1) | (false, 0) => {}
            (true, _) => return Err(err(PatternError::NoThread)),
            (false, _) => return Err(err(PatternError::UnexpectedThread)),
        }
        Ok(HostPattern {
            source: pattern.to_owned(),
            labels,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Matches a host name (no port) and returns the labels standing for the placeholders.
    pub fn matches<'h>(&self, host: &'h str) -> Option<HostMatch<'h>> {
        let mut client = None;
        let mut thread = None;
        let mut host_labels = host.split('.');
        for label in &self.labels {
            let got = host_labels.next()?;
            match label {
                Label::Literal(want) if want.eq_ignore_ascii_case(got) => {}
                Label::Literal(_) => return None,
                Label::Client => client = Some(got),
                Label::Thread => thread = Some(got),
            }
        }
        if host_labels.next().is_some() {
            return None;
        }
        Some(HostMatch {
            client: client?,
            thread,
        })
    }
}

/// Strips the port from a Host value; bracketed IPv6 literals keep their brackets. `None` when
/// what follows the colon is not a port number.
pub fn host_without_port(host: &str) -> Option<&str> {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') => {
            let port = &host[i + 1..];
            let numeric = (1..=5).contains(&port.len()) && port.bytes().all(|b| b.is_ascii_digit());
            numeric.then_some(&host[..i])
        }
        _ => Some(host),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_mode_pattern_captures_client() {
        let p = HostPattern::parse("edit.{client}.example.com", false).unwrap();
        let m = p.matches("edit.acme.example.com").unwrap();
        assert_eq!(m.client, "acme");
        assert_eq!(m.thread, None);
        assert!(p.matches("EDIT.acme.Example.COM").is_some());
        assert!(p.matches("edit.acme.example.org").is_none());
        assert!(p.matches("x.edit.acme.example.com").is_none());
        assert!(p.matches("edit.acme.example").is_none());
    }

    #[test]
    fn host_mode_pattern_captures_both() {
        let p = HostPattern::parse("{thread}.edit.{client}.example.com", true).unwrap();
        let m = p.matches("t1.edit.acme.example.com").unwrap();
        assert_eq!((m.client, m.thread), ("acme", Some("t1")));
    }

    #[test]
    fn bad_patterns_are_rejected_with_a_reason() {
        assert_eq!(
            HostPattern::parse("edit.x{client}.com", false),
            Err(PatternError::BadPlaceholder("edit.x{client}.com".into()))
        );
        assert!(matches!(
            HostPattern::parse("edit.example.com", false),
            Err(PatternError::NoClient(_))
        ));
        assert!(matches!(
            HostPattern::parse("{thread}.{client}.com", false),
            Err(PatternError::UnexpectedThread(_))
        ));
        assert!(matches!(
            HostPattern::parse("edit.{client}.com", true),
            Err(PatternError::NoThread(_))
        ));
        assert!(matches!(
            HostPattern::parse("edit..{client}", false),
            Err(PatternError::EmptyLabel(_))
        ));
    }

    #[test]
    fn port_is_stripped() {
        assert_eq!(host_without_port("a.b:8080"), Some("a.b"));
        assert_eq!(host_without_port("a.b"), Some("a.b"));
        assert_eq!(host_without_port("[::1]:80"), Some("[::1]"));
        assert_eq!(host_without_port("[::1]"), Some("[::1]"));
    }

    #[test]
    fn malformed_ports_are_refused() {
        for host in ["a.b:", "a.b:80x", "a.b:8080\u{8}/x", "a.b:123456"] {
            assert_eq!(host_without_port(host), None, "{host:?}");
        }
    }
}
