//! What a client makes of the bytes a router sent: a sequence of HTTP/1.1 responses read the way
//! browsers and curl read them, leniently (a line may end in a bare LF; a chunk-size line ends at
//! its LF), and knowing which requests were HEADs. Also which requests the client sent, as far as
//! that can be told from its bytes.

/// One response head as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub reason: Vec<u8>,
    /// Names lowercased, values without surrounding blanks, in order.
    pub headers: Vec<(String, Vec<u8>)>,
}

impl Head {
    pub fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> + 's {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// 1xx answers that came before it.
    pub interims: Vec<Head>,
    pub head: Head,
    /// Decoded: without chunk framing.
    pub body: Vec<u8>,
    /// The body ended where its framing says, or at the close when it has none.
    pub complete: bool,
    /// It has no framing: the close of the connection ended it.
    pub until_close: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Response(Response),
    /// Everything after a 101: the switched protocol's bytes.
    Tunnel(Vec<u8>),
    /// Bytes that do not make a complete response head, from where the last response ended.
    Unread(Vec<u8>),
}

/// Most requests listed, and most responses read, for one input.
const MAX_MESSAGES: usize = 512;

/// Reads `bytes` as the responses to requests with `methods`, in order. Interim answers that no
/// final one follows are left out, as a client shows nothing of them.
pub fn responses(bytes: &[u8], methods: &[String]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut interims = Vec::new();
    for _ in 0..MAX_MESSAGES {
        if at == bytes.len() {
            break;
        }
        let Some((head, used)) = read_head(&bytes[at..]) else {
            pieces.push(Piece::Unread(bytes[at..].to_vec()));
            break;
        };
        at += used;
        if head.status / 100 == 1 && head.status != 101 {
            interims.push(head);
            continue;
        }
        let method = methods.get(pieces.len()).map_or("GET", String::as_str);
        let until_close = matches!(framing(&head, method), Framing::UntilClose);
        let (body, used, complete) = read_body(&head, method, &bytes[at..]);
        at += used;
        let switched = head.status == 101;
        pieces.push(Piece::Response(Response {
            interims: std::mem::take(&mut interims),
            head,
            body,
            complete,
            until_close,
        }));
        if switched && at < bytes.len() {
            pieces.push(Piece::Tunnel(bytes[at..].to_vec()));
            break;
        }
        if !complete {
            break;
        }
    }
    pieces
}

/// The next line of `bytes`, without its LF and a CR before it, and the bytes it used.
fn line(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let end = bytes.iter().position(|b| *b == b'\n')?;
    let text = &bytes[..end];
    Some((text.strip_suffix(b"\r").unwrap_or(text), end + 1))
}

fn read_head(bytes: &[u8]) -> Option<(Head, usize)> {
    let (status_line, mut at) = line(bytes)?;
    let rest = status_line.strip_prefix(b"HTTP/")?;
    let mut parts = rest.splitn(3, |b| *b == b' ');
    let _version = parts.next()?;
    let code = parts.next()?;
    if code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = std::str::from_utf8(code).ok()?.parse().ok()?;
    let reason = parts.next().unwrap_or_default().to_vec();
    let mut headers = Vec::new();
    for _ in 0..bytes.len() {
        let (text, used) = line(&bytes[at..])?;
        at += used;
        if text.is_empty() {
            return Some((
                Head {
                    status,
                    reason,
                    headers,
                },
                at,
            ));
        }
        // A line without a colon is skipped, as browsers skip it.
        if let Some(colon) = text.iter().position(|b| *b == b':') {
            let name = String::from_utf8_lossy(&text[..colon]).to_ascii_lowercase();
            let value = text[colon + 1..].trim_ascii().to_vec();
            headers.push((name, value));
        }
    }
    None
}

/// How a response's body is delimited, as RFC 9112 section 6.3 says and browsers do.
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
    /// Content-Length values that disagree or are not numbers: browsers refuse the response.
    Invalid,
}

fn framing(head: &Head, method: &str) -> Framing {
    // Methods are case-sensitive (RFC 9110 section 9.1): `hEAD` is not HEAD.
    if method == "HEAD" || matches!(head.status, 101 | 204 | 304) {
        return Framing::None;
    }
    if let Some(te) = head.values("transfer-encoding").last() {
        let last = te.rsplit(|b| *b == b',').next().unwrap_or_default();
        return if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
            Framing::Chunked
        } else {
            Framing::UntilClose
        };
    }
    let mut length = None;
    for value in head.values("content-length") {
        for part in value.split(|b| *b == b',') {
            let parsed = std::str::from_utf8(part.trim_ascii())
                .ok()
                .filter(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|d| d.parse::<usize>().ok());
            match (parsed, length) {
                (None, _) => return Framing::Invalid,
                (Some(n), Some(l)) if n != l => return Framing::Invalid,
                (Some(n), _) => length = Some(n),
            }
        }
    }
    length.map_or(Framing::UntilClose, Framing::Length)
}

/// The decoded body, the bytes it used, and whether it ended where its framing says.
fn read_body(head: &Head, method: &str, bytes: &[u8]) -> (Vec<u8>, usize, bool) {
    match framing(head, method) {
        Framing::None => (Vec::new(), 0, true),
        Framing::Length(n) if n <= bytes.len() => (bytes[..n].to_vec(), n, true),
        Framing::Length(_) => (bytes.to_vec(), bytes.len(), false),
        Framing::UntilClose => (bytes.to_vec(), bytes.len(), true),
        Framing::Invalid => (Vec::new(), 0, false),
        Framing::Chunked => read_chunked(bytes),
    }
}

/// A chunked body read leniently: a size line is the hex digits before any `;` and ends at its
/// LF; trailer lines end at theirs. Stops, incomplete, at anything else.
fn read_chunked(bytes: &[u8]) -> (Vec<u8>, usize, bool) {
    let mut body = Vec::new();
    let mut at = 0;
    for _ in 0..bytes.len() + 1 {
        let Some((size_line, used)) = line(&bytes[at..]) else {
            break;
        };
        let digits = size_line
            .split(|b| *b == b';')
            .next()
            .unwrap_or_default()
            .trim_ascii();
        let size = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.is_empty() && d.len() <= 15)
            .and_then(|d| usize::from_str_radix(d, 16).ok());
        let Some(size) = size else {
            break;
        };
        at += used;
        if size == 0 {
            return match trailers(&bytes[at..]) {
                Some(used) => (body, at + used, true),
                None => (body, bytes.len(), false),
            };
        }
        let Some(data) = bytes.get(at..at + size) else {
            body.extend_from_slice(&bytes[at..]);
            return (body, bytes.len(), false);
        };
        body.extend_from_slice(data);
        at += size;
        match line(&bytes[at..]) {
            Some((b"", used)) => at += used,
            _ => break,
        }
    }
    (body, bytes.len(), false)
}

/// The bytes of the trailer section up to and including its empty line.
fn trailers(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..bytes.len() + 1 {
        let (text, used) = line(&bytes[at..])?;
        at += used;
        if text.is_empty() {
            return Some(at);
        }
    }
    None
}

/// One request in the client's bytes, as far as they parse: its method and where it ends.
pub struct Request {
    pub method: String,
    pub end: usize,
}

/// The requests at the start of the client's bytes, up to the first that does not parse.
pub fn requests(bytes: &[u8]) -> Vec<Request> {
    let mut requests = Vec::new();
    let mut at = 0;
    for _ in 0..MAX_MESSAGES {
        let Some((method, used)) = request_head(&bytes[at..]) else {
            break;
        };
        // A body that does not end within the bytes runs to their end.
        at = used.map_or(bytes.len(), |used| (at + used).min(bytes.len()));
        requests.push(Request { method, end: at });
        if used.is_none() {
            break;
        }
    }
    requests
}

/// The method of the request at the start of `bytes`, and its length with its body when the body
/// ends within them. A request line httparse refuses is read as Pingora reads it: with its
/// target escaped.
fn request_head(bytes: &[u8]) -> Option<(String, Option<usize>)> {
    let mut headers = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(bytes) {
        Ok(httparse::Status::Complete(used)) => {
            let method = req.method?.to_owned();
            let body = request_body_len(req.headers, &bytes[used..]);
            Some((method, body.map(|body| used + body)))
        }
        Err(httparse::Error::Token | httparse::Error::Version) => {
            let (escaped, grown) = escape_request_line(bytes)?;
            let (method, used) = request_head(&escaped)?;
            Some((method, used.and_then(|used| used.checked_sub(grown))))
        }
        _ => None,
    }
}

/// The bytes with the target of their request line percent-escaped where httparse refuses it,
/// as `pingora_core` does (`escape_illegal_request_line`: a method, a space, the target up to
/// the line's last ` HTTP/d[.d]`), and how many bytes longer that made them.
fn escape_request_line(bytes: &[u8]) -> Option<(Vec<u8>, usize)> {
    let line_end = bytes
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(bytes.len());
    let line = &bytes[..line_end];
    let method = line
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .filter(|n| *n > 0 && line[*n] == b' ')?;
    let start = method + 1;
    let version = (start + 1..line.len())
        .rev()
        .find(|at| is_version(&line[*at..]))?;
    let mut out = bytes[..start].to_vec();
    for b in &line[start..version] {
        if b.is_ascii_control() || matches!(b, b' ' | b'<' | b'>' | b'"') {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(*b);
        }
    }
    let grown = out.len() - version;
    if grown == 0 {
        return None;
    }
    out.extend_from_slice(&bytes[version..]);
    Some((out, grown))
}

/// ` HTTP/` and a digit, optionally a dot and a digit.
fn is_version(at: &[u8]) -> bool {
    matches!(at, [b' ', b'H', b'T', b'T', b'P', b'/', d, ..] if d.is_ascii_digit())
}

/// The methods of the requests in the client's bytes, as far as they parse.
pub fn request_methods(bytes: &[u8]) -> Vec<String> {
    requests(bytes).into_iter().map(|r| r.method).collect()
}

/// Final responses read whole, and whether one of them switched protocols.
pub fn answered(pieces: &[Piece]) -> (usize, bool) {
    let whole = pieces
        .iter()
        .filter(|p| matches!(p, Piece::Response(r) if r.complete))
        .count();
    let switched = pieces
        .iter()
        .any(|p| matches!(p, Piece::Response(r) if r.head.status == 101));
    (whole, switched)
}

/// How long a request body is, by its Transfer-Encoding or Content-Length.
fn request_body_len(headers: &[httparse::Header<'_>], bytes: &[u8]) -> Option<usize> {
    let has = |name: &str| headers.iter().find(|h| h.name.eq_ignore_ascii_case(name));
    if has("transfer-encoding").is_some() {
        return chunked_len(bytes);
    }
    match has("content-length") {
        None => Some(0),
        Some(h) => std::str::from_utf8(h.value).ok()?.trim().parse().ok(),
    }
}

fn chunked_len(bytes: &[u8]) -> Option<usize> {
    let mut at = 0;
    for _ in 0..bytes.len() + 1 {
        let rest = bytes.get(at..)?;
        let httparse::Status::Complete((used, size)) = httparse::parse_chunk_size(rest).ok()?
        else {
            return None;
        };
        at += used;
        if size == 0 {
            return Some(at + trailers(&bytes[at..])?);
        }
        at = at
            .checked_add(usize::try_from(size).ok()?)?
            .checked_add(2)?;
    }
    None
}
