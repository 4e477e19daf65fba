//! Capacity of one router process, measured on the real binary: resident memory per session with
//! a large route table, and per open idle WebSocket with thousands held at once, each of which
//! must still answer after sitting idle. `cargo bench --bench capacity` runs the full sizes
//! (1M sessions, 10,000 WebSockets or as many as the descriptor limit allows); under
//! `cargo test` it runs small sizes as a smoke test.

// Test code: a failed unwrap is a failed test, which is what it should be.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Router, RouterOptions, Upstream};
use futures_util::{stream, SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{client_async, WebSocketStream};

type Ws = WebSocketStream<TcpStream>;

/// Set in the child process that serves as the WebSockets' upstream, so its sockets do not
/// count against this process's descriptor limit.
const ROLE_ENV: &str = "CAPACITY_BENCH_ROLE";
/// Descriptors a router needs besides its proxied connections (listeners, epoll, logs, ...).
const ROUTER_BASE_FDS: u64 = 64;
/// WebSockets opened at once while filling up.
const OPEN_CONCURRENCY: usize = 64;

struct Sizes {
    sessions: usize,
    websockets: usize,
    idle: Duration,
}

fn sizes() -> Sizes {
    if std::env::args().any(|a| a == "--bench") {
        Sizes {
            sessions: 1_000_000,
            websockets: 10_000,
            idle: Duration::from_secs(10),
        }
    } else {
        Sizes {
            sessions: 10_000,
            websockets: 50,
            idle: Duration::from_millis(200),
        }
    }
}

/// One line of /proc/PID/status, in bytes (the file states kB).
/// Resident size once the process has stopped giving memory back: readiness comes as soon as the
/// table is installed, and the load's scratch memory is returned to the system just after.
fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = proc_status_bytes(pid, "VmRSS:");
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = proc_status_bytes(pid, "VmRSS:");
        if now + now / 100 >= last || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

fn proc_status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .map_or(0, |kb: u64| kb * 1024)
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn fd_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("proc limits");
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024)
}

/// A sessions.toml of `n` sessions, each on its own container, as the platform would have them.
fn big_table(n: usize) -> String {
    let mut out = String::with_capacity(n * 140);
    for i in 0..n {
        let client = i % 1000;
        out += &format!(
            "[sessions.\"client{client}-thread{i:07}\"]\ncontainer_id = \"container-{i:07}\"\nclient_id = \"client{client}\"\n\
             [containers.\"container-{i:07}\"]\nip = \"10.{}.{}.{}\"\nport = 4321\nstatus = \"running\"\n",
            (i >> 16) & 0xff,
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    out
}

/// Starts the router on `sessions` and waits, as long as a large load needs, for its table.
fn start_router(sessions: &str) -> (Router, Duration) {
    let opts = RouterOptions {
        wait_ready: false,
        refresh_interval: "1h",
        max_staleness: "2h",
        ..RouterOptions::default()
    };
    let started = Instant::now();
    let router = Router::start(sessions, opts);
    router.wait_for_within("/readyz", 200, Duration::from_secs(300));
    (router, started.elapsed())
}

fn measure_sessions(n: usize) {
    let one = big_table(1);
    let (small, _) = start_router(&one);
    let base = settled_rss(small.pid());
    drop(small);

    let table = big_table(n);
    let (router, load) = start_router(&table);
    let rss = settled_rss(router.pid());
    let peak = proc_status_bytes(router.pid(), "VmHWM:");
    println!(
        "sessions: {n} loaded from a {:.0} MB file in {load:.1?}; resident {:.1} MiB (one session: \
         {:.1} MiB, peak while loading {:.1} MiB) = {:.0} bytes per session",
        table.len() as f64 / 1e6,
        rss as f64 / 1048576.0,
        base as f64 / 1048576.0,
        peak as f64 / 1048576.0,
        rss.saturating_sub(base) as f64 / n as f64,
    );
}

/// The WebSockets' upstream, in a child process: the test upstream (an echo server) on a free
/// port, printed on stdout, until stdin closes.
fn serve_upstream() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let upstream = runtime.block_on(Upstream::start("ws"));
    println!("{}", upstream.addr);
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_line(&mut String::new());
}

struct UpstreamProcess {
    child: Child,
    addr: SocketAddr,
}

impl UpstreamProcess {
    fn start() -> UpstreamProcess {
        let mut child = Command::new(std::env::current_exe().expect("own path"))
            .env(ROLE_ENV, "upstream")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn upstream");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("upstream stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("upstream address");
        let addr = line.trim().parse().expect("upstream address");
        UpstreamProcess { child, addr }
    }
}

impl Drop for UpstreamProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn open(router: &Router) -> Result<Ws, String> {
    let host = format!("edit.acme.localhost:{}", router.proxy.port());
    let req = format!("ws://{host}/session/t1/")
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(router.proxy)
        .await
        .map_err(|e| e.to_string())?;
    let (mut ws, _) = client_async(req, tcp).await.map_err(|e| e.to_string())?;
    // The echo upstream first describes the handshake it saw.
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(_)))) => Ok(ws),
        other => Err(format!("no greeting: {other:?}")),
    }
}

async fn echo(ws: &mut Ws) -> Result<(), String> {
    ws.send(Message::Text("still there?".into()))
        .await
        .map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Text(t)))) if t.as_str() == "still there?" => Ok(()),
        other => Err(format!("no echo: {other:?}")),
    }
}

async fn measure_websockets(wanted: usize, idle: Duration) {
    let upstream = UpstreamProcess::start();
    let sessions = common::one_session(Some(upstream.addr), "running");
    let (router, _) = start_router(&sessions);
    // Each proxied WebSocket holds two descriptors in the router: the browser's and the
    // container's. The router inherits this process's limit.
    let limit = fd_limit();
    let fits = (limit.saturating_sub(ROUTER_BASE_FDS) / 2) as usize;
    let count = wanted.min(fits);
    if count < wanted {
        println!(
            "websockets: the descriptor limit here ({limit}) fits {fits} proxied WebSockets in one \
             process; holding {count} of the {wanted} asked for"
        );
    }
    let pid = router.pid();
    let (rss_before, fds_before) = (proc_status_bytes(pid, "VmRSS:"), open_fds(pid));

    let started = Instant::now();
    let opened: Vec<Result<Ws, String>> = stream::iter(0..count)
        .map(|_| open(&router))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await;
    let opening = started.elapsed();
    let (mut sockets, failed): (Vec<_>, Vec<_>) = opened.into_iter().partition(Result::is_ok);
    let mut sockets: Vec<Ws> = sockets.drain(..).filter_map(Result::ok).collect();
    tokio::time::sleep(idle).await;

    let (rss, fds) = (proc_status_bytes(pid, "VmRSS:"), open_fds(pid));
    let gauge = router.metric("session_router_websocket_connections").await;
    let answered = stream::iter(sockets.iter_mut())
        .map(echo)
        .buffer_unordered(OPEN_CONCURRENCY)
        .filter(|r| std::future::ready(r.is_ok()))
        .count()
        .await;
    let held = sockets.len();
    println!(
        "websockets: {held} of {count} opened in {opening:.1?} ({} failed), router gauge {gauge}; \
         after {idle:?} idle {answered} of {held} echoed; router resident {:.1} MiB -> {:.1} MiB = \
         {:.0} bytes per WebSocket; descriptors {fds_before} -> {fds} = {:.2} per WebSocket",
        failed.len(),
        rss_before as f64 / 1048576.0,
        rss as f64 / 1048576.0,
        rss.saturating_sub(rss_before) as f64 / held.max(1) as f64,
        (fds - fds_before) as f64 / held.max(1) as f64,
    );
    if let Some(Err(e)) = failed.first() {
        println!("websockets: first failure: {e}");
    }
    assert!(failed.is_empty(), "every WebSocket opened");
    assert_eq!(answered, held, "every idle WebSocket still answered");
    assert_eq!(gauge, held as f64, "the router counts each open WebSocket");
}

fn main() {
    if std::env::var_os(ROLE_ENV).is_some() {
        return serve_upstream();
    }
    let sizes = sizes();
    measure_sessions(sizes.sessions);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(measure_websockets(sizes.websockets, sizes.idle));
}
