//! One real router process for the fuzz target: its config files in a directory of its own, its
//! ports, and its lifetime. The binary is `$SESSION_ROUTER_BIN`, else the main crate's debug
//! build (`target/debug/session-router`, which `make fuzz-smoke` and `make fuzz` build first).
//!
//! libFuzzer never runs Rust destructors, so a router must not outlive the fuzz process by any
//! other means: each child asks the kernel for SIGKILL when its parent thread ends
//! (`PR_SET_PDEATHSIG`, set between fork and exec), which also covers a crash or a kill of the
//! fuzz process; an `atexit` hook (see `stage`) kills them and removes their directories on a
//! normal exit. The routers are started from the fuzz loop's own thread, which lives as long as
//! the process.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ports::{admin_status, free_port};

/// How long a router may take to start and load its sessions.
const START_LIMIT: Duration = Duration::from_secs(30);

/// The limits that keep one input short. Each wait a router makes ends by one of these, and it
/// then answers or closes the connection, so the client never waits on a quiet router:
/// an idle kept-alive connection is closed after `keepalive_timeout`, an incomplete head after
/// `head_timeout`, a container that stops sending after `[upstream] read_timeout`, a quiet
/// WebSocket after `websocket_idle_timeout`.
/// Pooled container connections are dropped after `[upstream] idle_timeout`, before the
/// containers close them (`container::IDLE`), so neither engine meets a closing one.
const TIMEOUTS: &str = r#"read_timeout = "200ms"
keepalive_timeout = "60ms"
head_timeout = "200ms"
websocket_idle_timeout = "200ms"
"#;
const UPSTREAM_TIMEOUTS: &str = r#"read_timeout = "200ms"
idle_timeout = "1s"
"#;
/// A container stating another's id (`c1` or `c2`) is refused.
const IDENTITY: &str = "identity_header = \"X-Container-Id\"\n";

pub struct Router {
    pub child: Child,
    pub dir: PathBuf,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

/// The router binary to run.
pub fn binary() -> PathBuf {
    match std::env::var_os("SESSION_ROUTER_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/session-router"),
    }
}

impl Router {
    /// Starts a router on `fast_path` or not, routing acme's threads t1 and t2 to `t1` and `t2`.
    pub fn start(name: &str, fast_path: bool, t1: SocketAddr, t2: SocketAddr) -> Router {
        let dir = std::env::temp_dir().join(format!(
            "session-router-engines-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("router directory");
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        write_config(&dir, fast_path, proxy, admin, [t1, t2]);
        let child = spawn(&dir);
        let router = Router {
            child,
            dir,
            proxy,
            admin,
        };
        router.wait_ready();
        router
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("router.log")).unwrap_or_default()
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + START_LIMIT;
        while Instant::now() < deadline {
            if admin_status(self.admin, "/readyz") == Some(200) {
                // Pingora retries a busy port while the admin listener answers.
                assert!(
                    !self.log().contains("is in use"),
                    "a port of the router in {} was taken",
                    self.dir.display()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "router in {} never got ready:\n{}",
            self.dir.display(),
            self.log()
        );
    }
}

/// The routers' one path-mode host and one host-mode pattern.
pub const PATH_HOST: &str = "edit.{client}.localhost";
pub const HOST_PATTERN: &str = "{thread}.edit.{client}.localhost";

fn write_config(
    dir: &Path,
    fast_path: bool,
    proxy: SocketAddr,
    admin: SocketAddr,
    [t1, t2]: [SocketAddr; 2],
) {
    let sessions = format!(
        "[sessions.\"acme-t1\"]\ncontainer_id = \"c1\"\n[sessions.\"acme-t2\"]\ncontainer_id = \"c2\"\n\
         [containers.\"c1\"]\nstatus = \"running\"\nip = \"{}\"\nport = {}\n\
         [containers.\"c2\"]\nstatus = \"running\"\nip = \"{}\"\nport = {}\n",
        t1.ip(),
        t1.port(),
        t2.ip(),
        t2.port()
    );
    std::fs::write(dir.join("sessions.toml"), sessions).expect("sessions.toml");
    let router = format!(
        r#"[listen]
proxy = "{proxy}"
admin = "{admin}"
fast_path = {fast_path}
{TIMEOUTS}
[routing]
path_hosts = ["{PATH_HOST}"]
host_patterns = ["{HOST_PATTERN}"]

[access]
default = "public"

[store]
kind = "file"
refresh_interval = "1h"
max_staleness = "2h"

[store.file]
path = "{sessions}"

[upstream]
connect_timeout = "1s"
{UPSTREAM_TIMEOUTS}{IDENTITY}allowed_cidrs = ["127.0.0.0/8"]
"#,
        sessions = dir.join("sessions.toml").display(),
    );
    std::fs::write(dir.join("router.toml"), router).expect("router.toml");
    let pingora = format!(
        "---\nversion: 1\nthreads: 1\npid_file: {0}/router.pid\nupgrade_sock: {0}/upgrade.sock\n\
         grace_period_seconds: 0\ngraceful_shutdown_timeout_seconds: 1\n",
        dir.display()
    );
    std::fs::write(dir.join("pingora.yaml"), pingora).expect("pingora.yaml");
}

fn spawn(dir: &Path) -> Child {
    let log = std::fs::File::create(dir.join("router.log")).expect("router log");
    let parent = std::process::id();
    let mut cmd = Command::new(binary());
    cmd.arg("--config")
        .arg(dir.join("router.toml"))
        .arg("-c")
        .arg(dir.join("pingora.yaml"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have ended before the request took effect.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    cmd.spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e} (build it with `cargo build --bin session-router`, or set SESSION_ROUTER_BIN)", binary().display()))
}
