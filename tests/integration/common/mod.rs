//! Test harness: real upstream servers (HTTP + WebSocket echo), the real router binary on free
//! 127.0.0.1 ports with its own config files, and an HTTP client that resolves preview hosts to it.
#![allow(dead_code, unused_imports)]

pub mod moto;
pub mod ports;
pub mod raw;
pub mod served;
pub mod upstream;
pub mod wire;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use ports::{admin_status, free_port};
pub use upstream::Upstream;

/// One session of the file store.
pub struct Session<'a> {
    pub key: &'a str,
    pub container: &'a str,
    pub client: Option<&'a str>,
    pub expires_at: Option<u64>,
}

pub fn session<'a>(key: &'a str, container: &'a str) -> Session<'a> {
    Session {
        key,
        container,
        client: None,
        expires_at: None,
    }
}

/// A sessions.toml of one session, acme's thread t1, on container c1 at `addr` in `status`.
pub fn one_session(addr: Option<SocketAddr>, status: &str) -> String {
    sessions_toml(&[session("acme-t1", "c1")], &[("c1", addr, status)])
}

/// Renders a sessions.toml.
pub fn sessions_toml(
    sessions: &[Session<'_>],
    containers: &[(&str, Option<SocketAddr>, &str)],
) -> String {
    let mut out = String::new();
    for s in sessions {
        out += &format!(
            "[sessions.\"{}\"]\ncontainer_id = \"{}\"\n",
            s.key, s.container
        );
        if let Some(c) = s.client {
            out += &format!("client_id = \"{c}\"\n");
        }
        if let Some(t) = s.expires_at {
            out += &format!("expires_at = {t}\n");
        }
    }
    for (id, addr, status) in containers {
        out += &format!("[containers.\"{id}\"]\nstatus = \"{status}\"\n");
        if let Some(a) = addr {
            out += &format!("ip = \"{}\"\nport = {}\n", a.ip(), a.port());
        }
    }
    out
}

/// The router binary running on its own ports and config directory; killed on drop.
pub struct Router {
    child: Child,
    pub dir: tempfile::TempDir,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
}

pub struct RouterOptions {
    /// Extra keys of the [listen] section.
    pub listen_extra: String,
    /// Extra keys of the [routing] section, e.g. `session_key`.
    pub routing_extra: String,
    /// Extra keys of the [store] section, e.g. the miss budgets.
    pub store_extra: String,
    /// Extra TOML appended to the generated router.toml (sections not already written).
    pub extra_toml: String,
    pub refresh_interval: &'static str,
    pub negative_ttl: &'static str,
    pub max_staleness: &'static str,
    pub read_timeout: &'static str,
    pub allowed_cidrs: &'static str,
    pub wait_ready: bool,
    /// Use the DynamoDB store at this endpoint instead of the file store.
    pub dynamodb_endpoint: Option<String>,
    pub scan_segments: u32,
    pub store_request_timeout: &'static str,
    /// The whole [health] section, when a test sets it.
    pub health_toml: String,
    /// The whole [access] section. Tests of routing run with public previews; the tests of
    /// access (access.rs) set the private default and a JWKS.
    pub access_toml: String,
    /// Pingora's SIGTERM settings (pingora.yaml).
    pub grace_period_seconds: u64,
    pub graceful_shutdown_timeout_seconds: u64,
    /// More environment of the router process, e.g. `AWS_ENDPOINT_URL_SQS` or a secret.
    pub env: Vec<(String, String)>,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            listen_extra: String::new(),
            routing_extra: String::new(),
            store_extra: String::new(),
            extra_toml: String::new(),
            refresh_interval: "200ms",
            negative_ttl: "200ms",
            max_staleness: "30s",
            read_timeout: "60s",
            allowed_cidrs: "[\"127.0.0.0/8\"]",
            wait_ready: true,
            dynamodb_endpoint: None,
            scan_segments: 4,
            store_request_timeout: "3s",
            health_toml: String::new(),
            access_toml: "default = \"public\"\n".to_owned(),
            grace_period_seconds: 0,
            graceful_shutdown_timeout_seconds: 1,
            env: Vec::new(),
        }
    }
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_session-router")
}

impl Router {
    pub fn start(sessions: &str, opts: RouterOptions) -> Router {
        Self::start_in(Some(sessions), opts)
    }

    /// A router whose sessions file does not exist yet.
    pub fn start_without_sessions(opts: RouterOptions) -> Router {
        Self::start_in(None, opts)
    }

    fn start_in(sessions: Option<&str>, opts: RouterOptions) -> Router {
        let dir = tempfile::tempdir().expect("tempdir");
        if let Some(text) = sessions {
            std::fs::write(dir.path().join("sessions.toml"), text).expect("write sessions");
        }
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let toml = format!(
            r#"[listen]
proxy = "{proxy}"
admin = "{admin}"
read_timeout = "{read}"
{listen_extra}

[routing]
path_hosts = ["edit.{{client}}.localhost"]
host_patterns = ["{{thread}}.edit.{{client}}.localhost"]
{routing_extra}

[store]
kind = "{kind}"
refresh_interval = "{refresh}"
negative_ttl = "{negative}"
max_staleness = "{staleness}"
{store_extra}

[store.file]
path = "{sessions}"

[store.dynamodb]
endpoint_url = "{endpoint}"
scan_segments = {segments}
request_timeout = "{store_timeout}"

[upstream]
connect_timeout = "1s"
allowed_cidrs = {cidrs}
{extra}

[health]
{health}

[access]
{access}
"#,
            read = opts.read_timeout,
            refresh = opts.refresh_interval,
            negative = opts.negative_ttl,
            staleness = opts.max_staleness,
            kind = if opts.dynamodb_endpoint.is_some() {
                "dynamodb"
            } else {
                "file"
            },
            endpoint = opts
                .dynamodb_endpoint
                .as_deref()
                .unwrap_or("http://127.0.0.1:1"),
            segments = opts.scan_segments,
            store_timeout = opts.store_request_timeout,
            sessions = dir.path().join("sessions.toml").display(),
            cidrs = opts.allowed_cidrs,
            extra = opts.extra_toml,
            listen_extra = opts.listen_extra,
            routing_extra = opts.routing_extra,
            store_extra = opts.store_extra,
            health = opts.health_toml,
            access = opts.access_toml,
        );
        std::fs::write(dir.path().join("router.toml"), toml).expect("write router.toml");
        std::fs::write(
            dir.path().join("pingora.yaml"),
            format!(
                "---\nversion: 1\nthreads: 1\npid_file: {0}/router.pid\nupgrade_sock: {0}/upgrade.sock\ngrace_period_seconds: {1}\ngraceful_shutdown_timeout_seconds: {2}\n",
                dir.path().display(),
                opts.grace_period_seconds,
                opts.graceful_shutdown_timeout_seconds,
            ),
        )
        .expect("write pingora.yaml");
        let child = router_command(dir.path(), "router.log")
            .envs(opts.env)
            .spawn()
            .expect("spawn router");
        let router = Router {
            child,
            dir,
            proxy,
            admin,
        };
        router.wait_for("/healthz", 200);
        if opts.wait_ready {
            router.wait_for("/readyz", 200);
            // The proxy listener is bound by a service of its own, which may come up after the
            // admin listener and the first table.
            router.wait_for_proxy();
        }
        // Pingora keeps retrying a busy port while the admin listener answers: say so here
        // rather than let the test talk to whatever holds the port.
        assert!(
            !router.log().contains("is in use"),
            "a port of this router was taken: {}",
            router.log()
        );
        router
    }

    /// Waits until the proxy listener accepts connections, for at most 10 s.
    pub fn wait_for_proxy(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&self.proxy, Duration::from_millis(200)).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the proxy listener never accepted; log:\n{}", self.log());
    }

    /// Polls an admin path until it answers `status`, for at most 10 s.
    pub fn wait_for(&self, path: &str, status: u16) {
        self.wait_for_within(path, status, Duration::from_secs(10));
    }

    /// Polls an admin path until it answers `status`, for at most `limit`.
    pub fn wait_for_within(&self, path: &str, status: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if admin_status(self.admin, path) == Some(status) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{path} never answered {status}; log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn sessions_path(&self) -> PathBuf {
        self.dir.path().join("sessions.toml")
    }

    /// Replaces sessions.toml atomically, so a refresh never reads half a file.
    pub fn write_sessions(&self, text: &str) {
        write_atomically(&self.sessions_path(), text);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("router.log")).unwrap_or_default()
    }

    /// A client that sends every preview host to this router and follows no redirects.
    pub fn client(&self) -> reqwest::Client {
        client_for(self.proxy)
    }

    pub fn url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.proxy.port())
    }

    /// Sends `count` GETs at once and returns their statuses.
    pub async fn concurrent_statuses(&self, host: &str, path: &str, count: usize) -> Vec<u16> {
        let client = self.client();
        let url = self.url(host, path);
        let requests = (0..count).map(|_| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status().as_u16()) })
        });
        futures_util::future::join_all(requests)
            .await
            .into_iter()
            .map(|r| r.expect("join").expect("request"))
            .collect()
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics body")
    }

    /// The value of one series in the scrape, 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// The value of a series once it reaches `want`, or its last value after 3 s. Requests are
    /// counted when they end, which can be a moment after the client has read the response.
    pub async fn metric_eventually(&self, series: &str, want: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let got = self.metric(series).await;
            if got == want || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The router binary on the config files of `dir`, logging to `dir/log_name`.
pub fn router_command(dir: &Path, log_name: &str) -> Command {
    let log = std::fs::File::create(dir.join(log_name)).expect("log file");
    let mut cmd = Command::new(bin());
    cmd.arg("--config")
        .arg(dir.join("router.toml"))
        .arg("-c")
        .arg(dir.join("pingora.yaml"))
        .env("RUST_LOG", "info")
        .envs(moto::TEST_ENV)
        .stdout(Stdio::null())
        .stderr(log);
    cmd
}

/// Sends a signal to a child process.
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on a child this test started and has not reaped yet.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Waits up to `limit` for a child to exit; its exit status, or None if it is still running.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Router {
    pub fn signal(&self, sig: libc::c_int) {
        signal(&self.child, sig);
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, limit)
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn metric_value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write tmp");
    std::fs::rename(&tmp, path).expect("rename");
}

pub fn client_for(proxy: SocketAddr) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10));
    for host in PREVIEW_HOSTS {
        b = b.resolve(host, proxy);
    }
    b.build().expect("client")
}

/// Every preview host the tests use, resolved to the router by the test client.
pub const PREVIEW_HOSTS: &[&str] = &[
    "edit.acme.localhost",
    "edit.globex.localhost",
    "edit.demo.localhost",
    "edit.acme-x.localhost",
    "x-1.edit.acme.localhost",
    "1.edit.acme-x.localhost",
    "t1.edit.acme.localhost",
    "t2.edit.acme.localhost",
    "t1.edit.globex.localhost",
    "example.localhost",
];
