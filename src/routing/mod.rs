//! Request routing: which client and thread a request addresses, decided from host patterns,
//! the `/session/{thread}` prefix, the Referer and the affinity cookie.

mod host;
mod target;

pub use host::{host_without_port, HostMatch, HostPattern, PatternError, PreviewHosts};
pub use target::{classify, valid_thread, Reject, RequestParts, Target, Via};
