//! Chunked bodies (RFC 9112 section 7.1) re-framed on their way to the client, as Pingora's own
//! codec does: chunk sizes are read by `httparse`, and the client gets chunk lines the router
//! wrote, never the container's. Extensions and trailers are dropped, so no byte a container
//! puts in a size line or trailer can be read by the client as the start of another response.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed chunked body")]
pub struct Malformed;

/// Longest chunk-size line (size and extensions) buffered before it is refused; Pingora's limit.
const SIZE_LINE_LIMIT: usize = 8 * 1024;
/// Most trailer bytes read (and dropped) after the last chunk; Pingora's limit.
const TRAILER_LIMIT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    SizeLine,
    Data(u64),
    /// The CRLF that ends a chunk's data.
    DataEnd,
    /// Trailer lines after the last chunk; `line` bytes of the current one seen, `total` of all.
    Trailers {
        line: usize,
        total: usize,
    },
    Done,
}

/// Follows a chunked body and writes its re-framed form.
#[derive(Debug, Clone)]
pub struct Rechunker {
    state: State,
}

impl Default for Rechunker {
    fn default() -> Self {
        Rechunker {
            state: State::SizeLine,
        }
    }
}

impl Rechunker {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Reads what it can of `input` and appends the client's form of it to `out`. Returns how
    /// many bytes of `input` were used; the rest (an incomplete size line or CRLF, or whatever
    /// follows the body) is left for the next call with more input.
    pub fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Malformed> {
        let mut at = 0;
        while !self.is_done() {
            let used = self.step(&input[at..], out)?;
            if used == 0 {
                break;
            }
            at += used;
        }
        Ok(at)
    }

    /// One step in the current state; 0 when it needs more input.
    fn step(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Malformed> {
        match self.state {
            State::SizeLine => self.size_line(input, out),
            State::Data(left) => {
                let take = input.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                out.extend_from_slice(&input[..take]);
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataEnd
                } else {
                    State::Data(left)
                };
                Ok(take)
            }
            State::DataEnd => match crlf(input)? {
                0 => Ok(0),
                n => {
                    out.extend_from_slice(b"\r\n");
                    self.state = State::SizeLine;
                    Ok(n)
                }
            },
            State::Trailers { line, total } => self.trailers(input, line, total, out),
            State::Done => Ok(0),
        }
    }

    fn size_line(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, Malformed> {
        match httparse::parse_chunk_size(input) {
            Ok(httparse::Status::Complete((used, 0))) => {
                self.state = State::Trailers { line: 0, total: 0 };
                Ok(used)
            }
            Ok(httparse::Status::Complete((used, size))) => {
                // Writes into a Vec cannot fail.
                let _ = std::io::Write::write_fmt(out, format_args!("{size:x}\r\n"));
                self.state = State::Data(size);
                Ok(used)
            }
            Ok(httparse::Status::Partial) if input.len() <= SIZE_LINE_LIMIT => Ok(0),
            _ => Err(Malformed),
        }
    }

    /// Skips trailer lines up to the empty one that ends the body, then writes the last chunk.
    /// Every line must end in CRLF; a lone CR or LF is refused, as Pingora refuses it.
    fn trailers(
        &mut self,
        input: &[u8],
        line: usize,
        total: usize,
        out: &mut Vec<u8>,
    ) -> Result<usize, Malformed> {
        let text = input
            .iter()
            .position(|b| matches!(b, b'\r' | b'\n'))
            .unwrap_or(input.len());
        let total = total + text;
        if total > TRAILER_LIMIT {
            return Err(Malformed);
        }
        let line = line + text;
        if text > 0 {
            self.state = State::Trailers { line, total };
            return Ok(text);
        }
        match crlf(input)? {
            0 => Ok(0),
            n => {
                self.state = if line == 0 {
                    out.extend_from_slice(b"0\r\n\r\n");
                    State::Done
                } else {
                    State::Trailers { line: 0, total }
                };
                Ok(n)
            }
        }
    }
}

/// 2 when `input` starts with CRLF, 0 when it may once more arrives; anything else is refused.
fn crlf(input: &[u8]) -> Result<usize, Malformed> {
    match input {
        [] | [b'\r'] => Ok(0),
        [b'\r', b'\n', ..] => Ok(2),
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";
    const REFRAMED: &[u8] = b"5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";

    /// Feeds `body` in pieces of `piece` bytes the way the exchange does: unused bytes stay in
    /// the buffer and more are appended.
    fn run(body: &[u8], piece: usize) -> Result<(Vec<u8>, usize), Malformed> {
        let mut chunker = Rechunker::default();
        let (mut out, mut pending, mut used) = (Vec::new(), Vec::new(), 0);
        for chunk in body.chunks(piece) {
            if chunker.is_done() {
                break;
            }
            pending.extend_from_slice(chunk);
            let n = chunker.feed(&pending, &mut out)?;
            pending.drain(..n);
            used += n;
        }
        assert!(chunker.is_done(), "not done after {used} bytes");
        Ok((out, used))
    }

    #[test]
    fn re_frames_whatever_the_pieces() {
        for piece in [1, 2, 3, 5, 8, 13, BODY.len()] {
            let (out, used) = run(BODY, piece).unwrap();
            assert_eq!(out, REFRAMED, "pieces of {piece}");
            assert_eq!(used, BODY.len());
        }
    }

    #[test]
    fn stops_where_the_body_ends() {
        let mut data = b"3\r\nabc\r\n0\r\n\r\n".to_vec();
        let body_len = data.len();
        data.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut chunker = Rechunker::default();
        let mut out = Vec::new();
        assert_eq!(chunker.feed(&data, &mut out), Ok(body_len));
        assert!(chunker.is_done());
        assert_eq!(out, b"3\r\nabc\r\n0\r\n\r\n");
    }

    /// The injection a container once got through: a bare LF in an extension that a browser
    /// reads as the end of the size line. The client only ever sees the router's size line.
    #[test]
    fn an_extension_never_reaches_the_client() {
        let body = b"5;x\nHTTP/1.1 200 OK\r\nabcde\r\n0\r\n\r\n";
        let mut out = Vec::new();
        let mut chunker = Rechunker::default();
        // httparse reads everything up to the CRLF as the extension, as Pingora does.
        assert_eq!(chunker.feed(body, &mut out), Ok(body.len()));
        assert_eq!(out, b"5\r\nabcde\r\n0\r\n\r\n");
    }

    /// httparse reads an empty size line as 0, and so does Pingora: the client gets a proper
    /// last chunk either way.
    #[test]
    fn an_empty_size_line_is_the_last_chunk() {
        let mut out = Vec::new();
        assert_eq!(Rechunker::default().feed(b"\r\n\r\n", &mut out), Ok(4));
        assert_eq!(out, b"0\r\n\r\n");
    }

    #[test]
    fn refuses_what_is_not_chunked() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloXX",
            b"5\r\nhello\n",
            b"11111111111111111\r\n",
            b"0\r\nX: y\n\r\n",
            b"0\r\n\n",
            b"0\r\nX: y\r\r\n",
        ] {
            let mut out = Vec::new();
            assert_eq!(
                Rechunker::default().feed(bad, &mut out),
                Err(Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bounds_size_lines_and_trailers() {
        let mut long_ext = b"5;".to_vec();
        long_ext.resize(SIZE_LINE_LIMIT + 1, b'a');
        let mut out = Vec::new();
        assert_eq!(
            Rechunker::default().feed(&long_ext, &mut out),
            Err(Malformed)
        );

        let mut long_trailer = b"0\r\nX: ".to_vec();
        long_trailer.resize(TRAILER_LIMIT + 8, b'a');
        assert_eq!(
            Rechunker::default().feed(&long_trailer, &mut out),
            Err(Malformed)
        );
    }
}
