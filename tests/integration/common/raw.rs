//! A container that answers with exact bytes, for tests of framing and connection reuse: each
//! request head it reads is handed to a script that says what to send back, and it counts the
//! connections it accepted. Runs on a thread of its own; stopped when dropped.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// What to do after reading one request head.
pub enum Reply {
    /// Send these bytes and wait for the next request on the connection.
    Send(Vec<u8>),
    /// Send these bytes in pieces, pausing between them, then wait for the next request.
    Pieces(Vec<Vec<u8>>),
    /// Send these bytes and close the connection.
    SendAndClose(Vec<u8>),
    /// Close the connection without answering.
    Close,
}

/// Decides the reply from (connection number, request number on it, request head).
pub type Script = dyn Fn(usize, usize, &str) -> Reply + Send + Sync;

pub struct RawUpstream {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawUpstream {
    pub fn start(script: Box<Script>) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind raw upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let script: Arc<Script> = Arc::from(script);
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((conn, _)) => {
                            let n = accepted.fetch_add(1, Ordering::SeqCst);
                            let script = script.clone();
                            std::thread::spawn(move || serve(conn, n, &*script));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        RawUpstream {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut conn: TcpStream, index: usize, script: &Script) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut buf = Vec::new();
    for request in 0.. {
        let Some(head) = read_head(&mut conn, &mut buf) else {
            return;
        };
        let sent = match script(index, request, &head) {
            Reply::Send(bytes) => conn.write_all(&bytes),
            Reply::Pieces(pieces) => pieces.iter().try_for_each(|p| {
                std::thread::sleep(Duration::from_millis(30));
                conn.write_all(p).and_then(|()| conn.flush())
            }),
            Reply::SendAndClose(bytes) => {
                let _ = conn.write_all(&bytes);
                return;
            }
            Reply::Close => return,
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Reads one request head (requests here have no bodies); `None` at the end of the connection.
fn read_head(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..end + 4).collect();
            return Some(String::from_utf8_lossy(&head).into_owned());
        }
        let mut chunk = [0u8; 4096];
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
