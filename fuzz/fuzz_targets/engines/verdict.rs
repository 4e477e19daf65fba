//! The judgement of one input: on each engine, no response carries bytes of t1's reply except
//! the one answering the request t1's container got them for (isolation); and both engines gave
//! the client the same responses, or both refused (parity). Also the report of a failure.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::sync::OnceLock;

use session_router::outcome::Outcome;
use session_router::pages::{self, RequestKind};

use crate::client::End;
use crate::container::{honest_body, Entry};
use crate::input::Case;
use crate::reading::{self, Head, Piece, Response};
use crate::router;
use crate::stage::Ran;

/// Where the client's view of one piece came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// An honest container answer, by its place among the containers' answers.
    Honest(u32),
    /// The router's own answer (see `is_own`).
    Own(u16),
    /// Anything else: what t1's reply made of it, or a router fault.
    Foreign,
    /// The bytes after a 101, which belong to the response before them.
    Tunnel,
}

/// What the client got from one engine.
pub struct Seen {
    pieces: Vec<Piece>,
    sources: Vec<Source>,
    end: End,
    /// The client sent a request before the one before was answered.
    pipelined: bool,
}

impl Seen {
    pub fn read(ran: &Ran, methods: &[String]) -> Seen {
        let mut pieces = reading::responses(&ran.received.bytes, methods);
        // A reset may have cut what the router sent: the last piece may be a fragment of it.
        if ran.received.end == End::Reset && pieces.last().is_some_and(is_fragment) {
            pieces.pop();
        }
        let sources = pieces.iter().map(|p| source(p, ran)).collect();
        Seen {
            pieces,
            sources,
            end: ran.received.end,
            pipelined: ran.received.pipelined,
        }
    }

    /// Honest answers come in the order the containers gave them, at most one response carries
    /// bytes t1's reply chose (one that comes where t1's container gave that reply), and no
    /// honest answer is read as part of another response.
    pub fn check_isolation(&self, log: &[Entry], nonce: u64) -> Result<(), String> {
        self.check_order(log)?;
        self.check_swallowed(nonce)
    }

    /// An honest answer's marker holds the run's nonce, which t1's reply cannot know: outside
    /// the honest answers it is found only when one was read as part of another response. What
    /// a tunnel to t1 carries may hold t1's own answers, never t2's.
    fn check_swallowed(&self, nonce: u64) -> Result<(), String> {
        for (i, (piece, source)) in self.pieces.iter().zip(&self.sources).enumerate() {
            let (bytes, marker) = match (piece, source) {
                (_, Source::Honest(_) | Source::Own(_)) => continue,
                (Piece::Tunnel(bytes), _) => (bytes.clone(), format!("t2-{nonce:016x}-")),
                (Piece::Unread(bytes), _) => (bytes.clone(), format!("{nonce:016x}-")),
                (Piece::Response(r), _) => (searched(r), format!("{nonce:016x}-")),
            };
            if contains(&bytes, marker.as_bytes()) {
                return Err(format!(
                    "piece {i} holds an honest answer to another request"
                ));
            }
        }
        Ok(())
    }

    fn check_order(&self, log: &[Entry]) -> Result<(), String> {
        let hostile = log.iter().find(|e| e.hostile).map(|e| e.seq);
        let mut last_honest = None;
        let mut foreign_at = None;
        for (i, source) in self.sources.iter().enumerate() {
            match *source {
                Source::Honest(seq) => {
                    if last_honest.is_some_and(|last| last >= seq) {
                        return Err(format!(
                            "honest answer {seq} came after answer {last_honest:?}"
                        ));
                    }
                    if foreign_at.is_some() && hostile.is_some_and(|h| seq < h) {
                        return Err(format!(
                            "t1's reply (answer {hostile:?}) reached the client before answer {seq}"
                        ));
                    }
                    last_honest = Some(seq);
                }
                Source::Foreign => {
                    let Some(h) = hostile else {
                        return Err(format!(
                            "response {i} is no container's answer nor the router's"
                        ));
                    };
                    if let Some(first) = foreign_at {
                        return Err(format!(
                            "responses {first} and {i} both carry t1's reply: it answered another request"
                        ));
                    }
                    if last_honest.is_some_and(|last| last > h) {
                        return Err(format!(
                            "response {i} carries t1's reply (answer {h}) after answer {last_honest:?}"
                        ));
                    }
                    foreign_at = Some(i);
                }
                Source::Own(_) | Source::Tunnel => {}
            }
        }
        Ok(())
    }
}

fn contains(bytes: &[u8], what: &[u8]) -> bool {
    bytes.windows(what.len()).any(|w| w == what)
}

/// A response's header values and body, as one byte string to search.
fn searched(r: &Response) -> Vec<u8> {
    let heads = r.interims.iter().chain(std::iter::once(&r.head));
    let mut out: Vec<u8> = heads
        .flat_map(|h| h.headers.iter().flat_map(|(_, v)| v.iter().copied()))
        .collect();
    out.extend_from_slice(&r.body);
    out
}

/// A piece a reset may have cut short.
fn is_fragment(piece: &Piece) -> bool {
    match piece {
        Piece::Response(r) => !r.complete,
        Piece::Unread(_) => true,
        Piece::Tunnel(_) => false,
    }
}

fn source(piece: &Piece, ran: &Ran) -> Source {
    let response = match piece {
        Piece::Response(r) => r,
        Piece::Tunnel(_) => return Source::Tunnel,
        Piece::Unread(_) => return Source::Foreign,
    };
    if let Some(seq) = honest(response, ran) {
        return Source::Honest(seq);
    }
    if is_own(response) {
        return Source::Own(response.head.status);
    }
    Source::Foreign
}

/// The place of the honest answer this response is, if it is one: its `X-Answer` names an
/// honest answer of this run, and its body is that answer's (or none, for a HEAD).
fn honest(r: &Response, ran: &Ran) -> Option<u32> {
    if r.head.status != 200 || !r.interims.is_empty() || !r.complete {
        return None;
    }
    let named = r.head.values("x-answer").next()?;
    if !r.body.is_empty() && r.body != named {
        return None;
    }
    ran.log
        .iter()
        .filter(|e| !e.hostile)
        .find(|e| honest_body(e.thread, ran.nonce, e.seq).as_bytes() == named)
        .map(|e| e.seq)
}

/// Headers the router's own answers carry (Pingora's `respond_error` adds Server and Date).
const OWN_HEADERS: [&str; 8] = [
    "cache-control",
    "content-length",
    "content-type",
    "retry-after",
    "location",
    "connection",
    "date",
    "server",
];

/// The router's own answer: a status of its own with the canonical reason, only the headers
/// it writes, `no-store`, and one of its own bodies (or none). A container can send the same
/// bytes, but then it chose nothing but which of the router's answers it imitates.
fn is_own(r: &Response) -> bool {
    r.interims.is_empty() && is_own_final(r)
}

/// The final answer is the router's own, whatever interim answers came before it.
fn is_own_final(r: &Response) -> bool {
    let head = &r.head;
    let canonical = http::StatusCode::from_u16(head.status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .is_some_and(|reason| reason.as_bytes() == head.reason);
    r.complete
        && (300..600).contains(&head.status)
        && canonical
        && head
            .headers
            .iter()
            .all(|(n, _)| OWN_HEADERS.contains(&n.as_str()))
        && head
            .values("cache-control")
            .any(|v| v.ends_with(b"no-store"))
        && (own_bodies().contains(&r.body) || is_wrong_host_help(&r.body))
}

/// The 404 a client on the router's machine gets for a host no pattern serves: it names the
/// router's own port, which differs between the two routers, so it is rendered for the port it
/// names.
fn is_wrong_host_help(body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let port = text
        .split("http://127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .and_then(|p| p.parse::<u16>().ok());
    port.is_some_and(|port| {
        pages::wrong_host(&[router::PATH_HOST], &[router::HOST_PATTERN], port).body == body
    })
}

fn own_bodies() -> &'static BTreeSet<Vec<u8>> {
    static BODIES: OnceLock<BTreeSet<Vec<u8>>> = OnceLock::new();
    BODIES.get_or_init(|| {
        let kinds = [
            RequestKind::Navigation,
            RequestKind::Asset,
            RequestKind::Upgrade,
        ];
        let mut bodies: BTreeSet<Vec<u8>> = Outcome::ALL
            .iter()
            .flat_map(|o| kinds.map(|k| pages::answer(*o, k).body.to_vec()))
            .collect();
        bodies.insert(Vec::new());
        bodies
    })
}

/// Bytes shown escaped in reports.
#[derive(Clone, PartialEq, Eq)]
struct Text(Vec<u8>);

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

type Headers = Vec<(String, Text)>;

/// One piece as the two engines are compared on it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Compared {
    /// The router's own answer: its status only.
    Own(u16),
    Response {
        interims: Vec<(u16, Headers)>,
        status: u16,
        headers: Headers,
        body: Text,
        complete: bool,
        /// Not compared (see `compare`): the close of the connection ended it.
        until_close: bool,
    },
    Tunnel(Text),
    Unread(Text),
}

/// Headers left out of the comparison, none of which changes which body a request gets:
/// - `date`, `server`: Pingora's own error answers carry them; they say nothing of the request.
/// - `connection`, `keep-alive`: whether a connection is kept is seen in what follows on it
///   (another response, or the close), which is compared; the fast path leaves the HTTP/1.1
///   default unsaid where Pingora says `keep-alive`.
/// - `content-length`, and `transfer-encoding` when it is only `chunked`: framing. The decoded
///   body, and whether it was complete, are compared instead, so a body re-chunked by one engine
///   and length-delimited by the other (or given a Content-Length it lacked) is the same body.
fn compared_header(name: &str, value: &[u8]) -> bool {
    match name {
        "date" | "server" | "connection" | "keep-alive" | "content-length" => false,
        "transfer-encoding" => !value.eq_ignore_ascii_case(b"chunked"),
        _ => true,
    }
}

/// Header names lowercased (by `reading`) and sorted by name, keeping the order of a name's
/// values: header order and case mean nothing to a client, the order of one name's values may.
fn compared_headers(head: &Head) -> Headers {
    let mut kept: Headers = head
        .headers
        .iter()
        .filter(|(n, v)| compared_header(n, v))
        .map(|(n, v)| (n.clone(), Text(v.clone())))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    kept
}

/// One piece as compared. The interim answers before the router's own answer are left out:
/// they are the requested container's (`Seen::check_isolation` makes sure), sent before its
/// final answer turned out unusable. Pingora runs the response filters over every answer it has
/// read so far before writing any of them, so when the final one is refused, the interim ones
/// read with it never reach the client (`proxy_h1`'s `process_upstream_tasks`); the fast path
/// passes each as it reads it. The client gets the router's refusal either way.
fn compared(piece: &Piece) -> Compared {
    match piece {
        Piece::Response(r) if is_own_final(r) => Compared::Own(r.head.status),
        Piece::Response(r) => Compared::Response {
            interims: r
                .interims
                .iter()
                .map(|h| (h.status, compared_headers(h)))
                .collect(),
            status: r.head.status,
            headers: compared_headers(&r.head),
            body: Text(r.body.clone()),
            complete: r.complete,
            until_close: r.until_close,
        },
        Piece::Tunnel(bytes) => Compared::Tunnel(Text(bytes.clone())),
        Piece::Unread(bytes) => Compared::Unread(Text(bytes.clone())),
    }
}

/// A refusal: the router's own 4xx or 5xx, the end of the connection, or a response cut short.
/// A client reports a network error for a response whose body ends before its framing says, as
/// for a connection closed without an answer, and what came of it is the requested container's
/// own (`Seen::check_isolation` makes sure): two such are two refusals, whatever each held. A
/// cut response and a whole one differ (but see `stalled_alike`).
fn refused(piece: Option<&Compared>) -> bool {
    matches!(
        piece,
        None | Some(Compared::Own(400..=599))
            | Some(Compared::Response {
                complete: false,
                ..
            })
    )
}

/// The same pieces from both engines up to where both refuse; past a reset, only what both got.
///
/// A response without framing is passed on as it came by the fast path, so its end is the close
/// of the connection; Pingora re-chunks it and keeps the connection. Both gave the same body (it
/// is compared); past it only the fast path's connection is closed, and the client resends its
/// next request on a new one, as after any close: what follows is not compared.
///
/// A client that pipelines (by the input's choice, or after waiting `client::QUIET` for an
/// answer) gets its connection closed by Pingora after the answer to the request whose head it
/// read with the next one's bytes (`pingora_core`'s `reuse` keeps no bytes read past a
/// request), where the fast path answers each in turn: there only the answers both gave are
/// compared. The client resends what was not answered; no request gets another's answer.
pub fn compare(a: &Seen, b: &Seen) -> Result<(), String> {
    let pipelined = a.pipelined || b.pipelined;
    let a_pieces = a.compared();
    let b_pieces = b.compared();
    for i in 0..a_pieces.len().max(b_pieces.len()) {
        let (x, y) = (a_pieces.get(i), b_pieces.get(i));
        let cut = (x.is_none() && a.end == End::Reset) || (y.is_none() && b.end == End::Reset);
        let closed_early = (x.is_none() && (pipelined || a.ended_by_close(i)))
            || (y.is_none() && (pipelined || b.ended_by_close(i)));
        if cut || closed_early || (refused(x) && refused(y)) || stalled_alike(x, y) {
            return Ok(());
        }
        if !same(x, y) {
            return Err(format!(
                "piece {i}: fast path {x:?}, Pingora {y:?} (ends: {:?}, {:?})",
                a.end, b.end
            ));
        }
    }
    Ok(())
}

/// The same piece, but for how it was framed: `until_close` is seen in `complete`, and in what
/// follows on the connection.
fn same(x: Option<&Compared>, y: Option<&Compared>) -> bool {
    unframed(x, None) == unframed(y, None)
}

/// The same response, which one engine passed on without framing and the other cut short: the
/// fast path passes a body that has no framing as it came, ended by the close of the connection,
/// so when the container stops sending the client cannot tell; Pingora re-chunks it and leaves
/// out the last chunk. The same bytes of the same container reached the client either way.
fn stalled_alike(x: Option<&Compared>, y: Option<&Compared>) -> bool {
    let (Some((x_whole, x_unframed)), Some((y_whole, y_unframed))) = (framing(x), framing(y))
    else {
        return false;
    };
    let unframed_vs_cut = (x_unframed && !y_whole) || (y_unframed && !x_whole);
    unframed_vs_cut && unframed(x, Some(true)) == unframed(y, Some(true))
}

/// A response's `complete` and `until_close`.
fn framing(p: Option<&Compared>) -> Option<(bool, bool)> {
    match p {
        Some(Compared::Response {
            complete,
            until_close,
            ..
        }) => Some((*complete, *until_close)),
        _ => None,
    }
}

/// The piece without `until_close`, and with `complete` set when `whole` says.
fn unframed(p: Option<&Compared>, whole: Option<bool>) -> Option<Compared> {
    let mut p = p.cloned();
    if let Some(Compared::Response {
        complete,
        until_close,
        ..
    }) = &mut p
    {
        *until_close = false;
        *complete = whole.unwrap_or(*complete);
    }
    p
}

impl Seen {
    /// The piece before `i` was a response the close of the connection ended.
    fn ended_by_close(&self, i: usize) -> bool {
        let before = i.checked_sub(1).and_then(|i| self.pieces.get(i));
        matches!(before, Some(Piece::Response(r)) if r.until_close)
    }

    fn compared(&self) -> Vec<Compared> {
        self.pieces.iter().map(compared).collect()
    }
}

/// The input and what each engine did with it, for a failure report.
pub fn describe(case: &Case<'_>, fast: &Ran, pingora: &Ran, logs: String) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "client sent: {}", escaped(case.client));
    let _ = writeln!(
        out,
        "t1 replies (close after: {}): {}",
        case.close_after_reply,
        escaped(case.reply)
    );
    for (name, ran) in [("fast path", fast), ("Pingora", pingora)] {
        let _ = writeln!(
            out,
            "{name} client got ({:?}): {}",
            ran.received.end,
            escaped(&ran.received.bytes)
        );
        for e in &ran.log {
            let _ = writeln!(
                out,
                "  {name} container {} answer {}{}: {}",
                e.thread.name(),
                e.seq,
                if e.hostile { " (t1's reply)" } else { "" },
                escaped(e.head.as_bytes())
            );
        }
    }
    out + &logs
}

fn escaped(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(4096)];
    let mut s: String = shown.escape_ascii().to_string();
    if bytes.len() > shown.len() {
        let _ = write!(s, "... ({} bytes)", bytes.len());
    }
    s
}
