//! Where a chunked body ends (RFC 9112 section 7.1). The body is passed through as it came; this
//! only follows it, so the router knows when the response is complete and the container's
//! connection can be reused.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
#[error("malformed chunked body")]
pub struct Malformed;

/// Longest chunk size accepted, in hex digits (a u64).
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk size; `digits` so far, then maybe an extension, up to the CRLF.
    Size {
        size: u64,
        digits: u8,
        in_ext: bool,
    },
    /// The LF after a size line's CR.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// Trailer lines after the last chunk; `line` bytes of the current one seen.
    Trailer {
        line: usize,
    },
    TrailerLf {
        line: usize,
    },
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedEnd {
    state: State,
}

impl Default for ChunkedEnd {
    fn default() -> Self {
        ChunkedEnd {
            state: State::Size {
                size: 0,
                digits: 0,
                in_ext: false,
            },
        }
    }
}

impl ChunkedEnd {
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Follows `data`; returns how many of its bytes belong to the body: all of them, or fewer
    /// when the body ends inside `data`.
    pub fn feed(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let mut at = 0;
        while at < data.len() && !self.is_done() {
            at += self.step(&data[at..])?;
        }
        Ok(at)
    }

    /// Consumes what it can of `data` in the current state; returns how many bytes.
    fn step(&mut self, data: &[u8]) -> Result<usize, Malformed> {
        let byte = data[0];
        self.state = match self.state {
            State::Data(left) => {
                let take = data.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                let left = left - take as u64;
                self.state = if left == 0 {
                    State::DataCr
                } else {
                    State::Data(left)
                };
                return Ok(take);
            }
            State::Size {
                size,
                digits,
                in_ext,
            } => match byte {
                b'\r' if digits > 0 => State::SizeLf { size },
                _ if in_ext => State::Size {
                    size,
                    digits,
                    in_ext,
                },
                b';' | b' ' | b'\t' if digits > 0 => State::Size {
                    size,
                    digits,
                    in_ext: true,
                },
                _ => {
                    let digit = (byte as char).to_digit(16).ok_or(Malformed)?;
                    if digits == MAX_SIZE_DIGITS {
                        return Err(Malformed);
                    }
                    State::Size {
                        size: size << 4 | u64::from(digit),
                        digits: digits + 1,
                        in_ext,
                    }
                }
            },
            State::SizeLf { size } if byte == b'\n' => match size {
                0 => State::Trailer { line: 0 },
                n => State::Data(n),
            },
            State::DataCr if byte == b'\r' => State::DataLf,
            State::DataLf if byte == b'\n' => State::Size {
                size: 0,
                digits: 0,
                in_ext: false,
            },
            State::Trailer { line } if byte == b'\r' => State::TrailerLf { line },
            State::Trailer { line } => State::Trailer { line: line + 1 },
            State::TrailerLf { line: 0 } if byte == b'\n' => State::Done,
            State::TrailerLf { .. } if byte == b'\n' => State::Trailer { line: 0 },
            _ => return Err(Malformed),
        };
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] =
        b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: t\r\n\r\n";

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        for piece in [1, 2, 3, 5, 8, 13, BODY.len()] {
            let mut end = ChunkedEnd::default();
            let mut used = 0;
            for chunk in BODY.chunks(piece) {
                assert!(!end.is_done(), "done early at {used} in pieces of {piece}");
                used += end.feed(chunk).unwrap();
            }
            assert!(end.is_done(), "pieces of {piece}");
            assert_eq!(used, BODY.len());
        }
    }

    #[test]
    fn stops_where_the_body_ends() {
        let mut data = b"3\r\nabc\r\n0\r\n\r\n".to_vec();
        let body_len = data.len();
        data.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        let mut end = ChunkedEnd::default();
        assert_eq!(end.feed(&data), Ok(body_len));
        assert!(end.is_done());
    }

    #[test]
    fn refuses_what_is_not_chunked() {
        for bad in [
            &b"x\r\n"[..],
            b"5\nhello",
            b"5\r\nhelloXX",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            assert_eq!(ChunkedEnd::default().feed(bad), Err(Malformed), "{bad:?}");
        }
    }
}
