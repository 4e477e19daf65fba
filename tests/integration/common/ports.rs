//! Ports and the admin probe of the routers that tests start: shared by the integration tests
//! and the engines fuzz target (which includes this file by path), so both pick ports the same
//! safe way.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A port for a server a test starts, handed out once per test process and free when handed.
///
/// Not from `bind(127.0.0.1:0)`: a port found that way is free only until it is let go, and the
/// kernel may give it to another `bind(0)` or to an outgoing connection before the router binds
/// it. Pingora retries a busy port for 30 s while the admin listener already answers, so the test
/// would talk to whatever holds it (once, another test's router). Ports below the kernel's
/// ephemeral range are never handed out by it; each process starts at its own place among them.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let (low, high) = fixed_port_range();
    let span = u32::from(high - low);
    let start = (std::process::id().wrapping_mul(7_919)) % span;
    let _ = NEXT.compare_exchange(u32::MAX, start, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..span {
        let port = low + (NEXT.fetch_add(1, Ordering::Relaxed) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// The ports below the kernel's ephemeral range, down to half its start.
fn fixed_port_range() -> (u16, u16) {
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|start| *start >= 4_096)
        .unwrap_or(32_768);
    (ephemeral_start / 2, ephemeral_start)
}

/// The status of a GET on a router's admin listener, or `None` when it does not answer.
pub fn admin_status(admin: SocketAddr, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&admin, Duration::from_millis(200)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).ok()?;
    std::str::from_utf8(&buf[9..12]).ok()?.parse().ok()
}
