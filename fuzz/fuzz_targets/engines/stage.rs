//! What every input of a fuzz process runs against: the router on the fast path and the router
//! on Pingora's proxy alone, each with its own pair of containers, started on first use. Holds
//! their process ids for the exit hook that stops them.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::client::{self, Received};
use crate::container::{self, Entry, Script, Thread};
use crate::input::Case;
use crate::router::Router;

pub struct Stage {
    engines: [Engine; 2],
}

struct Engine {
    name: &'static str,
    router: Router,
    script: Arc<Script>,
    /// How much of the router's log has been looked at for panics.
    log_seen: AtomicU64,
}

/// What one engine did with one input.
pub struct Ran {
    pub received: Received,
    /// The containers' answers, in the order they gave them.
    pub log: Vec<Entry>,
    pub nonce: u64,
}

/// Routers to kill and directories to remove when the process exits normally.
static STARTED: Mutex<Vec<(i32, PathBuf)>> = Mutex::new(Vec::new());

impl Stage {
    /// The process's stage, started by the first input.
    pub fn get() -> &'static Stage {
        static STAGE: OnceLock<Stage> = OnceLock::new();
        STAGE.get_or_init(|| {
            // SAFETY: registers a plain function with no captured state; ignoring SIGPIPE makes
            // a write to a closed socket an error. libFuzzer's main, not Rust's, runs here, so
            // nothing has ignored it yet.
            unsafe {
                libc::atexit(stop_all);
                libc::signal(libc::SIGPIPE, libc::SIG_IGN);
            }
            let stage = Stage {
                engines: [Engine::start("fast", true), Engine::start("pingora", false)],
            };
            eprintln!(
                "engines: routers on {} (fast path) and {} (Pingora), logs in {} and {}",
                stage.engines[0].router.proxy,
                stage.engines[1].router.proxy,
                stage.engines[0].router.dir.display(),
                stage.engines[1].router.dir.display(),
            );
            stage
        })
    }

    /// Sends the input to both routers at once: [fast path, Pingora].
    pub fn run(&self, case: &Case<'_>) -> [Ran; 2] {
        let nonce = RandomState::new().hash_one(0u8);
        for engine in &self.engines {
            engine.script.arm(nonce, case.reply, case.close_after_reply);
        }
        let received = std::thread::scope(|s| {
            let sent = self.engines.each_ref().map(|engine| {
                let proxy = engine.router.proxy;
                s.spawn(move || client::exchange(proxy, case.client, case.pipelined))
            });
            sent.map(|h| h.join().expect("client thread"))
        });
        let [fast, pingora] = received;
        let [fast_log, pingora_log] = self.engines.each_ref().map(|e| e.script.log());
        [
            Ran {
                received: fast,
                log: fast_log,
                nonce,
            },
            Ran {
                received: pingora,
                log: pingora_log,
                nonce,
            },
        ]
    }

    /// Both routers still run, and no task of theirs panicked since the last look: a panic in a
    /// connection's task only ends that connection, so it is found in the log.
    pub fn check_routers(&self) -> Result<(), String> {
        for engine in &self.engines {
            let pid = i32::try_from(engine.router.child.id()).unwrap_or(0);
            let mut status = 0;
            // SAFETY: waitpid(2) without blocking on a child this process started.
            if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
                return Err(format!("the {} router exited ({status:#x})", engine.name));
            }
            let new = engine.new_log();
            if let Some(at) = new.find("panicked") {
                let end = new.len().min(at + 2000);
                return Err(format!("the {} router {}", engine.name, &new[at..end]));
            }
        }
        Ok(())
    }

    /// The end of each router's log, for a report.
    pub fn logs(&self) -> String {
        let tail = |log: String| {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        };
        format!(
            "fast path router log ({}):\n{}\nPingora router log ({}):\n{}",
            self.engines[0].router.dir.display(),
            tail(self.engines[0].router.log()),
            self.engines[1].router.dir.display(),
            tail(self.engines[1].router.log()),
        )
    }
}

impl Engine {
    fn start(name: &'static str, fast_path: bool) -> Engine {
        let script = Arc::new(Script::default());
        let t1 = container::start(Thread::T1, script.clone());
        let t2 = container::start(Thread::T2, script.clone());
        let router = Router::start(name, fast_path, t1, t2);
        if let Ok(mut started) = STARTED.lock() {
            let pid = i32::try_from(router.child.id()).unwrap_or(0);
            started.push((pid, router.dir.clone()));
        }
        Engine {
            name,
            router,
            script,
            log_seen: AtomicU64::new(0),
        }
    }

    /// What the router logged since the last call.
    fn new_log(&self) -> String {
        let Ok(mut file) = std::fs::File::open(self.router.dir.join("router.log")) else {
            return String::new();
        };
        let from = self.log_seen.load(Ordering::Relaxed);
        let mut new = Vec::new();
        if file.seek(SeekFrom::Start(from)).is_ok() {
            let _ = file.read_to_end(&mut new);
        }
        self.log_seen
            .store(from + new.len() as u64, Ordering::Relaxed);
        String::from_utf8_lossy(&new).into_owned()
    }
}

/// The exit hook: kills the routers and removes their directories. A crash leaves the
/// directories (with the routers' logs) for the report; the kernel kills the routers then.
extern "C" fn stop_all() {
    let Ok(started) = STARTED.lock() else {
        return;
    };
    for (pid, dir) in started.iter() {
        if *pid > 0 {
            // SAFETY: kill(2) on a child this process started.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
