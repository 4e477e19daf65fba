use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const HEAD: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";

/// An unmasked frame with `len` payload bytes, using the header form that length needs.
fn frame(len: usize) -> Vec<u8> {
    let mut out = vec![0x82];
    match len {
        0..=125 => out.push(len as u8),
        126..=0xffff => {
            out.push(126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    out.extend(std::iter::repeat_n(b'x', len));
    out
}

fn masked_frame(len: u8) -> Vec<u8> {
    let mut out = vec![0x81, 0x80 | len, 1, 2, 3, 4];
    out.extend(std::iter::repeat_n(b'y', len as usize));
    out
}

#[test]
fn frame_starts_are_found_whatever_the_read_sizes() {
    let mut stream = HEAD.to_vec();
    let mut starts = vec![stream.len()];
    for f in [
        frame(0),
        frame(5),
        frame(300),
        frame(70_000),
        masked_frame(9),
        frame(1),
    ] {
        stream.extend(f);
        starts.push(stream.len());
    }
    for chunk in [1, 2, 3, 7, 64, 4096] {
        let mut tracker = FrameTracker::default();
        let mut at_start = Vec::new();
        for (i, byte) in stream.chunks(1).enumerate() {
            tracker.feed(byte);
            if tracker.at_frame_start() {
                at_start.push(i + 1);
            }
        }
        assert_eq!(at_start, starts, "byte by byte");
        let mut tracker = FrameTracker::default();
        let mut fed = 0;
        for piece in stream.chunks(chunk) {
            tracker.feed(piece);
            fed += piece.len();
            assert_eq!(
                tracker.at_frame_start(),
                starts.contains(&fed),
                "chunks of {chunk}"
            );
        }
    }
}

#[test]
fn a_carriage_return_inside_the_head_does_not_end_it() {
    let mut tracker = FrameTracker::default();
    tracker.feed(b"HTTP/1.1 101 OK\r\nX: a\r\r\n");
    assert!(!tracker.at_frame_start());
    tracker.feed(b"\r\n");
    assert!(tracker.at_frame_start());
}

#[test]
fn close_frame_carries_its_code() {
    assert_eq!(close_frame(SERVICE_RESTART), [0x88, 0x02, 0x03, 0xf4]);
    assert_eq!(close_frame(GOING_AWAY), [0x88, 0x02, 0x03, 0xe9]);
}

/// A connected pair: the server's end, and the router's closable end with its handle.
async fn pair() -> (TcpStream, ClosableSocket, CloseHandle) {
    let (client, server) = crate::test_sockets::connected_pair().await;
    let handle = CloseHandle::default();
    let socket = ClosableSocket::new(client, handle.clone());
    (server, socket, handle)
}

async fn read_to_end(socket: &mut ClosableSocket) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut out))
        .await
        .expect("the stream ends")
        .expect("read");
    out
}

#[tokio::test]
async fn an_idle_connection_ends_with_a_close_frame_at_once() {
    let (mut server, mut socket, handle) = pair().await;
    let mut sent = HEAD.to_vec();
    sent.extend(frame(3));
    server.write_all(&sent).await.unwrap();
    let mut got = vec![0; sent.len()];
    socket.read_exact(&mut got).await.unwrap();

    let asked = Instant::now();
    handle.close(SERVICE_RESTART);
    assert_eq!(read_to_end(&mut socket).await, close_frame(SERVICE_RESTART));
    assert!(asked.elapsed() < Duration::from_millis(500));
    // The container's end sees the connection closed.
    let mut rest = Vec::new();
    server.read_to_end(&mut rest).await.unwrap();
}

#[tokio::test]
async fn a_close_waits_for_the_frame_in_flight() {
    let (mut server, mut socket, handle) = pair().await;
    let whole = frame(10);
    let mut sent = HEAD.to_vec();
    sent.extend(&whole[..6]);
    server.write_all(&sent).await.unwrap();
    let mut got = vec![0; sent.len()];
    socket.read_exact(&mut got).await.unwrap();

    handle.close(GOING_AWAY);
    let reader = tokio::spawn(async move { read_to_end(&mut socket).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The rest of the frame, and more the close must not pass on.
    let mut more = whole[6..].to_vec();
    more.extend(frame(4));
    server.write_all(&more).await.unwrap();
    let mut want = whole[6..].to_vec();
    want.extend(close_frame(GOING_AWAY));
    assert_eq!(reader.await.unwrap(), want);
}

#[tokio::test]
async fn a_frame_that_never_ends_is_cut_without_a_close_frame() {
    let (mut server, mut socket, handle) = pair().await;
    let mut sent = HEAD.to_vec();
    sent.extend(&frame(10)[..4]);
    server.write_all(&sent).await.unwrap();
    let mut got = vec![0; sent.len()];
    socket.read_exact(&mut got).await.unwrap();

    let asked = Instant::now();
    handle.close(GOING_AWAY);
    assert_eq!(read_to_end(&mut socket).await, Vec::<u8>::new());
    let waited = asked.elapsed();
    assert!(
        waited >= FRAME_END_WAIT && waited < FRAME_END_WAIT * 3,
        "{waited:?}"
    );
}

#[tokio::test]
async fn the_first_close_code_wins() {
    let (mut server, mut socket, handle) = pair().await;
    server.write_all(HEAD).await.unwrap();
    let mut got = vec![0; HEAD.len()];
    socket.read_exact(&mut got).await.unwrap();
    handle.close(SERVICE_RESTART);
    handle.close(GOING_AWAY);
    assert_eq!(read_to_end(&mut socket).await, close_frame(SERVICE_RESTART));
}
