//! The upstream allowlist against every address form that once got through, with the real router
//! running in a network namespace of its own that has loopback alone (`unshare -n`): should a
//! form still get through, the connect goes nowhere, and no packet leaves this machine.

use crate::common;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port, session, sessions_toml, wait_exit};

/// Addresses a hostile store could name, and that the default policy plus `::/0` refuse.
const FORBIDDEN: [&str; 9] = [
    "169.254.169.254",
    "::ffff:169.254.169.254",
    "::ffff:127.0.0.1",
    "::ffff:0.0.0.0",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b::7f00:1",
    "2002:a9fe:a9fe::1",
    "fd00:ec2::254",
    "0.0.0.0",
];

/// The router, started in a new network namespace with only loopback up.
struct IsolatedRouter {
    child: Child,
    dir: tempfile::TempDir,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Drop for IsolatedRouter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = wait_exit(&mut self.child, Duration::from_secs(5));
    }
}

fn start_isolated(sessions: &str) -> IsolatedRouter {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, admin) = (
        SocketAddr::from(([127, 0, 0, 1], free_port())),
        SocketAddr::from(([127, 0, 0, 1], free_port())),
    );
    std::fs::write(dir.path().join("sessions.toml"), sessions).unwrap();
    let toml = format!(
        "[listen]\nproxy = \"{proxy}\"\nadmin = \"{admin}\"\n\n\
         [routing]\npath_hosts = [\"edit.{{client}}.localhost\"]\n\n\
         [store]\nkind = \"file\"\n\n[store.file]\npath = \"{}\"\n\n\
         [access]\ndefault = \"public\"\n\n\
         [upstream]\nconnect_timeout = \"200ms\"\n\
         allowed_cidrs = [\"10.0.0.0/8\", \"::/0\"]\n",
        dir.path().join("sessions.toml").display()
    );
    std::fs::write(dir.path().join("router.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("pingora.yaml"),
        format!(
            "---\nversion: 1\nthreads: 1\npid_file: {0}/router.pid\nupgrade_sock: {0}/upgrade.sock\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("router.log")).unwrap();
    let child = Command::new("unshare")
        .args([
            "-n",
            "--",
            "sh",
            "-c",
            "ip link set lo up && exec \"$0\" \"$@\"",
        ])
        .arg(common::bin())
        .arg("--config")
        .arg(dir.path().join("router.toml"))
        .arg("-c")
        .arg(dir.path().join("pingora.yaml"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("unshare -n (root, util-linux and iproute2 are needed)");
    IsolatedRouter {
        child,
        dir,
        proxy,
        admin,
    }
}

/// Runs `f` on a thread that has joined the router's network namespace: the test's own sockets
/// there reach the router, and nothing else.
fn in_router_netns<T: Send + 'static>(pid: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        wait_for_own_netns(pid);
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("router's netns");
        // SAFETY: setns on a valid descriptor changes this thread's namespace only.
        #[allow(unsafe_code)]
        let joined = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(joined, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .expect("netns thread")
}

/// Waits (up to 5 s) until the child has left this process's network namespace: right after
/// the spawn, `unshare` may not have made its own yet.
fn wait_for_own_netns(pid: u32) {
    let ours = std::fs::read_link("/proc/self/ns/net").expect("own netns");
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&ours)
    {
        assert!(
            Instant::now() < deadline,
            "the router never left this network namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The status of a plain GET, or `None` when nothing answered.
fn status(addr: SocketAddr, host: &str, path: &str) -> Option<u16> {
    let mut conn = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    conn.read_to_string(&mut out).ok()?;
    out.get(9..12)?.parse().ok()
}

/// The body of a plain GET, empty when nothing answered.
fn body(addr: SocketAddr, path: &str) -> String {
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return String::new();
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        conn,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    );
    let mut out = String::new();
    let _ = conn.read_to_string(&mut out);
    out
}

#[test]
fn every_forbidden_address_form_is_refused_in_a_network_of_loopback_alone() {
    let keys: Vec<String> = (0..FORBIDDEN.len()).map(|i| format!("acme-t{i}")).collect();
    let ids: Vec<String> = (0..FORBIDDEN.len()).map(|i| format!("c{i}")).collect();
    let sessions: Vec<_> = keys.iter().zip(&ids).map(|(k, c)| session(k, c)).collect();
    let containers: Vec<_> = FORBIDDEN
        .iter()
        .zip(&ids)
        .map(|(ip, c)| {
            let ip: IpAddr = ip.parse().unwrap();
            (c.as_str(), Some(SocketAddr::new(ip, 4321)), "running")
        })
        .collect();
    let router = start_isolated(&sessions_toml(&sessions, &containers));
    let (proxy, admin) = (router.proxy, router.admin);
    let statuses = in_router_netns(router.child.id(), move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        while status(admin, "admin", "/readyz") != Some(200) {
            assert!(
                Instant::now() < deadline,
                "the isolated router never became ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let statuses: Vec<_> = (0..FORBIDDEN.len())
            .map(|i| status(proxy, "edit.acme.localhost", &format!("/session/t{i}/")))
            .collect();
        (statuses, body(admin, "/metrics"))
    });
    let (statuses, metrics) = statuses;
    let log = std::fs::read_to_string(router.dir.path().join("router.log")).unwrap();
    for (ip, status) in FORBIDDEN.iter().zip(statuses) {
        assert_eq!(status, Some(502), "{ip}: {log}");
    }
    // Refused by the policy, not merely unreachable: nothing was connected to.
    let refused = format!(
        "session_router_requests_total{{outcome=\"forbidden_upstream\"}} {}",
        FORBIDDEN.len()
    );
    assert!(metrics.contains(&refused), "{metrics}");
    let unreachable = "session_router_requests_total{outcome=\"upstream_unreachable\"} 0";
    assert!(metrics.contains(unreachable), "{metrics}");
}
