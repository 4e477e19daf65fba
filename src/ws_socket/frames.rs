//! WebSocket framing as far as the router needs it: where, in the bytes a server sends after its
//! 101 answer, one frame ends and the next begins, and the close frame the router sends itself.

/// Where the server-to-client byte stream stands: still in the HTTP response head, in a frame
/// header, or in a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// How many bytes of the `\r\n\r\n` that ends the head have been seen in a row.
    Head(u8),
    /// A frame header, of which `have` bytes are in `bytes`.
    FrameHeader {
        bytes: [u8; 14],
        have: u8,
    },
    Payload(u64),
}

/// Follows WebSocket framing through the bytes a server sends, so a close frame can be put
/// where a frame begins and never inside one.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    phase: Phase,
}

impl Default for FrameTracker {
    fn default() -> Self {
        FrameTracker {
            phase: Phase::Head(0),
        }
    }
}

const FRAME_START: Phase = Phase::FrameHeader {
    bytes: [0; 14],
    have: 0,
};

/// The full length of a frame header, once its first two bytes are known.
fn header_len(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

fn payload_len(header: &[u8]) -> u64 {
    match header[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([header[2], header[3]])),
        127 => header[2..10]
            .iter()
            .fold(0, |len, b| (len << 8) | u64::from(*b)),
        short => u64::from(short),
    }
}

impl FrameTracker {
    /// A tracker for bytes that start after the response head.
    pub fn after_head() -> Self {
        FrameTracker { phase: FRAME_START }
    }

    /// Whether the next byte would begin a new frame.
    pub fn at_frame_start(&self) -> bool {
        self.phase == FRAME_START
    }

    /// At most how many bytes may be read without passing the end of the frame in flight.
    pub fn until_frame_end(&self) -> usize {
        match self.phase {
            Phase::Head(_) => 1,
            Phase::FrameHeader { bytes, have } if have >= 2 => header_len(bytes[1]) - have as usize,
            Phase::FrameHeader { .. } => 1,
            Phase::Payload(left) => usize::try_from(left).unwrap_or(usize::MAX),
        }
    }

    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let used = self.step(data);
            data = &data[used..];
        }
    }

    /// Consumes what it can of `data` in the current phase; returns how many bytes.
    fn step(&mut self, data: &[u8]) -> usize {
        match &mut self.phase {
            Phase::Head(matched) => {
                const END: &[u8; 4] = b"\r\n\r\n";
                *matched = match data[0] {
                    b if b == END[*matched as usize] => *matched + 1,
                    b'\r' => 1,
                    _ => 0,
                };
                if *matched == 4 {
                    self.phase = FRAME_START;
                }
                1
            }
            Phase::FrameHeader { bytes, have } => {
                bytes[*have as usize] = data[0];
                *have += 1;
                if *have >= 2 && *have as usize == header_len(bytes[1]) {
                    let len = payload_len(&bytes[..*have as usize]);
                    self.phase = if len == 0 {
                        FRAME_START
                    } else {
                        Phase::Payload(len)
                    };
                }
                1
            }
            Phase::Payload(left) => {
                let used = data.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                *left -= used as u64;
                if *left == 0 {
                    self.phase = FRAME_START;
                }
                used
            }
        }
    }
}

/// An unmasked (server-to-client) close frame carrying `code`.
pub fn close_frame(code: u16) -> [u8; 4] {
    let [hi, lo] = code.to_be_bytes();
    [0x88, 0x02, hi, lo]
}
