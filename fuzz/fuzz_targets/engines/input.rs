//! The format of one fuzz input: what the client sends, then what thread t1's container answers
//! to the first request head it reads, split by a marker line so that seeds can be read and
//! written by hand:
//!
//! ```text
//! <client bytes>\n==t1==\n<t1 reply>
//! <client bytes>\n==t1:close,pipe==\n<t1 reply>
//! ```
//!
//! Flags after `t1:`, in any order: `close`, t1's container closes its connection once its reply
//! is written; `pipe`, the client sends all its bytes at once (pipelining), instead of one
//! request at a time, each once the previous one is answered, as a browser does. Without a marker
//! every byte is the client's and t1's container answers nothing.

const START: &[u8] = b"\n==t1";
const END: &[u8] = b"==\n";
/// Longest flags part looked at.
const MAX_FLAGS: usize = 16;

#[derive(Debug)]
pub struct Case<'a> {
    pub client: &'a [u8],
    pub reply: &'a [u8],
    /// t1's container closes its connection once the reply is written.
    pub close_after_reply: bool,
    /// The client writes every byte at once rather than a request at a time.
    pub pipelined: bool,
}

impl<'a> Case<'a> {
    pub fn parse(data: &'a [u8]) -> Case<'a> {
        let marker = find(data, START).and_then(|at| {
            let rest = &data[at + START.len()..];
            let end = find(&rest[..rest.len().min(MAX_FLAGS + END.len())], END)?;
            Some((at, at + START.len() + end + END.len(), &rest[..end]))
        });
        let Some((at, reply_at, flags)) = marker else {
            return Case {
                client: data,
                reply: b"",
                close_after_reply: false,
                pipelined: false,
            };
        };
        let flags = flags.strip_prefix(b":").unwrap_or(flags);
        let has = |flag: &[u8]| flags.split(|b| *b == b',').any(|f| f == flag);
        Case {
            client: &data[..at],
            reply: &data[reply_at..],
            close_after_reply: has(b"close"),
            pipelined: has(b"pipe"),
        }
    }
}

fn find(data: &[u8], what: &[u8]) -> Option<usize> {
    data.windows(what.len()).position(|w| w == what)
}
