//! The size limits of a request head, checked as its bytes arrive: each line (request line or
//! header) and the head as a whole. Checked bytes are not checked again, so a head sent a byte
//! at a time costs no more than one sent at once.

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
}

impl HeadScan {
    /// Checks `head`, the request head so far (from its first byte, and no further than its end
    /// once that is known), against the limits; bytes checked by an earlier call are skipped.
    pub fn check(
        &mut self,
        head: &[u8],
        max_line: usize,
        max_size: usize,
    ) -> Result<(), HeadLimit> {
        if head.len() > max_size {
            return Err(HeadLimit::Size);
        }
        let from = self.checked.min(head.len());
        for (at, _) in head[from..]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
        {
            let end = from + at;
            if end - self.line_start > max_line {
                return Err(HeadLimit::Line);
            }
            self.line_start = end + 1;
        }
        self.checked = head.len();
        if head.len() - self.line_start > max_line {
            return Err(HeadLimit::Line);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_heads_within_the_limits_pass_in_any_pieces() {
        let head = b"GET / HTTP/1.1\r\nHost: h\r\nX: 0123456789\r\n\r\n";
        for piece in 1..head.len() {
            let mut scan = HeadScan::default();
            for end in (piece..head.len()).step_by(piece).chain([head.len()]) {
                assert_eq!(
                    scan.check(&head[..end], 16, 64),
                    Ok(()),
                    "pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn a_long_line_is_caught_complete_or_not() {
        let mut scan = HeadScan::default();
        let head = b"GET / HTTP/1.1\r\nX: 0123456789abcdef\r\n\r\n";
        assert_eq!(scan.check(head, 16, 1024), Err(HeadLimit::Line));
        let mut scan = HeadScan::default();
        assert_eq!(scan.check(&head[..20], 16, 1024), Ok(()));
        assert_eq!(scan.check(&head[..34], 16, 1024), Err(HeadLimit::Line));
    }

    #[test]
    fn a_large_head_is_caught() {
        let head = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n";
        assert_eq!(
            HeadScan::default().check(head, 16, 24),
            Err(HeadLimit::Size)
        );
    }
}
