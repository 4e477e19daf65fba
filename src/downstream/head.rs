//! A request head as its bytes arrive: where it can end (its first blank line after the request
//! line), and the size limits of each line and of the whole. Checked bytes are not checked again,
//! so a head sent a byte at a time costs no more than one sent at once. Whether the head is
//! well formed, and where exactly it ends, stays httparse's to say: this only tells when asking
//! it is worthwhile, and refuses heads over the limits before they are buffered whole.

/// Which size limit a head broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLimit {
    Line,
    Size,
}

impl HeadLimit {
    /// The `limit` label of `session_router_client_limit_total`.
    pub fn label(self) -> &'static str {
        match self {
            HeadLimit::Line => "head_line",
            HeadLimit::Size => "head_size",
        }
    }
}

/// Follows one request head from its first byte.
#[derive(Debug, Default, Clone)]
pub struct HeadScan {
    checked: usize,
    line_start: usize,
    /// A line with text came: a blank line after it ends the head (blank lines before the
    /// request line are skipped, as RFC 9112 section 2.2 allows and httparse does).
    text_seen: bool,
    end: Option<usize>,
}

impl HeadScan {
    /// Scans what `buf` (from the head's first byte) holds beyond the bytes scanned before.
    /// `Ok(Some(end))` once a blank line closes the head at `end`; `Ok(None)` while it is
    /// incomplete; an error once the head, or a line of it, is over its limit. Bytes after the
    /// blank line (a body, the next request) are not the head's and are not counted.
    pub fn scan(
        &mut self,
        buf: &[u8],
        max_line: usize,
        max_size: usize,
    ) -> Result<Option<usize>, HeadLimit> {
        if self.end.is_some() {
            return Ok(self.end);
        }
        let from = self.checked.min(buf.len());
        for lf in memchr::memchr_iter(b'\n', &buf[from..]).map(|at| from + at) {
            let line = &buf[self.line_start..lf];
            let text = line.strip_suffix(b"\r").unwrap_or(line);
            if lf - self.line_start > max_line {
                return Err(HeadLimit::Line);
            }
            self.line_start = lf + 1;
            if !text.is_empty() {
                self.text_seen = true;
            } else if self.text_seen {
                self.end = Some(lf + 1);
                return if lf < max_size {
                    Ok(self.end)
                } else {
                    Err(HeadLimit::Size)
                };
            }
        }
        self.checked = buf.len();
        if buf.len() - self.line_start > max_line {
            return Err(HeadLimit::Line);
        }
        if buf.len() >= max_size {
            // Reading on could only end in a head over the limit.
            return Err(HeadLimit::Size);
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789\r\n\r\nGET /next";

    #[test]
    fn finds_the_end_whatever_the_pieces() {
        let end = HEAD.len() - b"GET /next".len();
        for piece in 1..HEAD.len() {
            let mut scan = HeadScan::default();
            let mut found = None;
            for stop in (piece..HEAD.len()).step_by(piece).chain([HEAD.len()]) {
                found = scan.scan(&HEAD[..stop], 16, 64).unwrap();
                assert!(found.is_none() || stop >= end, "pieces of {piece}");
            }
            assert_eq!(found, Some(end), "pieces of {piece}");
        }
    }

    #[test]
    fn bare_lf_lines_and_leading_blank_lines_are_followed_as_httparse_reads_them() {
        let mut scan = HeadScan::default();
        assert_eq!(
            scan.scan(b"\r\n\nGET / HTTP/1.1\nHost: h\n\nrest", 64, 1024),
            Ok(Some(27))
        );
    }

    #[test]
    fn a_long_line_is_caught_complete_or_not() {
        let head = b"GET / HTTP/1.1\r\nX: 0123456789abcdef\r\n\r\n";
        assert_eq!(
            HeadScan::default().scan(head, 16, 1024),
            Err(HeadLimit::Line)
        );
        let mut scan = HeadScan::default();
        assert_eq!(scan.scan(&head[..20], 16, 1024), Ok(None));
        assert_eq!(scan.scan(&head[..34], 16, 1024), Err(HeadLimit::Line));
    }

    #[test]
    fn a_large_head_is_caught_but_what_follows_it_is_not_counted() {
        let head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n";
        assert_eq!(HeadScan::default().scan(head, 16, 24), Err(HeadLimit::Size));
        let mut body = b"POST / HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
        body.extend(std::iter::repeat_n(b'x', 4096));
        assert_eq!(HeadScan::default().scan(&body, 64, 64), Ok(Some(28)));
    }
}
