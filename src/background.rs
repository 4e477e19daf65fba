//! How background work stays out of the way of request serving: it runs at a lower CPU priority,
//! and memory it allocated in bulk goes back to the system when it is done. A full table load
//! parses and decodes far more than the table it leaves behind, on the same cores that serve
//! requests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::server::ShutdownWatch;

/// How much a background thread yields to request serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// The idle scheduling class: the thread runs only on CPU time no request wants, and a proxy
    /// thread that wakes up takes the core from it at once. A niced thread instead keeps the core
    /// until its slice ends, which held requests up by milliseconds while a large table loaded.
    /// Work in this class may wait indefinitely on a saturated machine.
    Idle,
    /// Nice 19: behind everything else, but sure to progress. On a saturated core it gets about
    /// 1.5% of the time, so work that must finish without anyone waiting on it costs requests
    /// little while it runs.
    Least,
    /// Nice 10: behind request serving, but sure to progress; for work a request waits on.
    Low,
}

impl Priority {
    /// Whether a request may be waiting on work at this priority; the other priorities are for
    /// work that is free to take its time.
    pub fn may_be_awaited(self) -> bool {
        self == Priority::Low
    }
}

/// Applies `priority` to the calling thread. Irreversible for an unprivileged process (it may
/// lower its priority, not raise it again), so threads that need both run work that may go idle
/// on threads of its own: [`run_on_own_thread`].
pub fn set_priority(priority: Priority) {
    #[cfg(target_os = "linux")]
    match priority {
        // SAFETY: with pid 0 the call changes only the calling thread's scheduling, and the
        // parameter struct is valid and initialised on this stack.
        Priority::Idle => unsafe {
            let param = libc::sched_param { sched_priority: 0 };
            libc::sched_setscheduler(0, libc::SCHED_IDLE, &param);
        },
        Priority::Least => set_nice(LEAST_NICE),
        Priority::Low => set_nice(LOW_NICE),
    }
    #[cfg(target_os = "linux")]
    if !priority.may_be_awaited() {
        // SAFETY: PR_SET_TIMERSLACK changes only the calling thread's timer slack.
        unsafe {
            libc::prctl(libc::PR_SET_TIMERSLACK, PAUSE_TIMER_SLACK_NS);
        }
    }
}

#[cfg(target_os = "linux")]
const LOW_NICE: libc::c_int = 10;
#[cfg(target_os = "linux")]
const LEAST_NICE: libc::c_int = 19;

/// Never above the priority the thread already has (a niced process stays so).
#[cfg(target_os = "linux")]
fn set_nice(nice: libc::c_int) {
    // SAFETY: with the caller's own tid, both calls read or change only its scheduling.
    unsafe {
        let thread = libc::gettid() as libc::id_t;
        let nice = libc::getpriority(libc::PRIO_PROCESS, thread).max(nice);
        libc::setpriority(libc::PRIO_PROCESS, thread, nice);
    }
}

/// Runs `work` on a new thread at `priority` and waits for its result without blocking the
/// caller's runtime. `None` if the thread could not start or `work` panicked. `work` pauses
/// through the [`Yielder`] it is given, which also tells it when the caller has stopped waiting
/// (a thread cannot be cancelled from outside).
pub async fn run_on_own_thread<T, F>(name: &str, priority: Priority, work: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce(&mut Yielder) -> T + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    let abandoned = Arc::new(AtomicBool::new(false));
    let watched = abandoned.clone();
    let spawned = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            set_priority(priority);
            let _ = done.send(work(&mut Yielder::at(priority).watching(watched)));
        });
    let _abandon_when_dropped = AbandonOnDrop(abandoned);
    match spawned {
        Ok(_) => result.await.ok(),
        Err(e) => {
            log::error!("could not start the {name} thread: {e}");
            None
        }
    }
}

/// A thread at one priority running a single-threaded tokio runtime, for background work that is
/// async all the way down (an SDK client that parses responses where it is polled), so that its
/// CPU yields to requests as [`run_on_own_thread`]'s work does. Anything that work sets up, such
/// as pooled connections, lives on this thread too, so the request path never waits on it. The
/// thread ends when this is dropped.
pub struct PriorityRuntime {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl PriorityRuntime {
    pub async fn start(name: &str, priority: Priority) -> std::io::Result<Self> {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready, started) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                set_priority(priority);
                let built = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let runtime = match built {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                if ready.send(Ok(runtime.handle().clone())).is_ok() {
                    runtime.block_on(async { stopped.await.ok() });
                }
            })?;
        let handle = started
            .await
            .map_err(|_| std::io::Error::other("the runtime thread ended at start"))??;
        Ok(PriorityRuntime {
            handle,
            _stop: stop,
        })
    }

    /// Runs `work` on this runtime and waits for it; the work is cancelled if the caller stops
    /// waiting. `None` if it panicked.
    pub async fn run<F>(&self, work: F) -> Option<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut task = AbortOnDrop(self.handle.spawn(work));
        (&mut task.0).await.ok()
    }
}

struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long idle-class work runs before it offers its core back. The kernel now and then gives
/// the core to an idle-class thread while a saturated proxy thread still wants it (at a
/// scheduler tick: `perf sched` shows it, see `bench/stalls.py`), and the proxy thread then waits
/// until the background thread pauses. Every request in flight waits with it, so the stretch
/// between pauses is what such a preemption adds to their latency: at 200 µs it showed in the p99
/// of a saturated router while a large table loaded.
const IDLE_WORK_BEFORE_PAUSE: Duration = Duration::from_micros(20);

/// The same for work at nice 10 or 19, which must finish however busy the machine. The kernel
/// hands it the core a few dozen times a second on a saturated core and it progresses only then,
/// so a stretch this long per turn is what lets a 100k-session load finish in seconds, not
/// minutes.
const WORK_BEFORE_PAUSE: Duration = Duration::from_micros(200);

/// How long a pause leaves the run queue for, when it does. Under EEVDF a `sched_yield` only
/// pushes the thread's deadline back, and the scheduler picks it again at once while it is the
/// only thread still owed CPU time, which a saturated proxy thread never is. A background thread
/// that wakes does not preempt a proxy thread, but a sleep of 2 µs ended before the proxy thread
/// had the core, and the background thread kept it until the next tick (`perf sched`); 20 µs
/// hands it over. Background threads sleep with a timer slack of [`PAUSE_TIMER_SLACK_NS`], or
/// the kernel would stretch each pause to 70 µs. Even so, sleeping every 20 µs makes an
/// idle-class load of 100k sessions take about 0.4 s instead of 0.2 on an idle machine.
const OFF_CORE: Duration = Duration::from_micros(20);

/// Timer slack of threads whose pauses sleep, in nanoseconds.
#[cfg(target_os = "linux")]
const PAUSE_TIMER_SLACK_NS: libc::c_ulong = 1_000;

/// Offers the core back every [`IDLE_WORK_BEFORE_PAUSE`] or [`WORK_BEFORE_PAUSE`] of work: long
/// background loops call [`Yielder::pause`] often, and it pauses only once that much time has
/// passed.
pub struct Yielder {
    since: Instant,
    abandoned: Arc<AtomicBool>,
    priority: Priority,
}

impl Yielder {
    pub fn new() -> Self {
        Self::at(Priority::Low)
    }

    /// For work at `priority`. Work nobody waits on gives the core back fully at each pause;
    /// work a request may wait on only offers it, and keeps its speed on an idle machine.
    pub fn at(priority: Priority) -> Self {
        Yielder {
            since: Instant::now(),
            abandoned: Arc::default(),
            priority,
        }
    }

    /// The same, told through `abandoned` when its caller stops waiting.
    pub(crate) fn watching(self, abandoned: Arc<AtomicBool>) -> Self {
        Yielder { abandoned, ..self }
    }

    /// Whether whoever waited for this work has stopped waiting: long work checks at its pauses
    /// and stops early, so that a load given up on does not go on competing with its successor.
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Relaxed)
    }

    pub fn pause(&mut self) {
        let work_before_pause = match self.priority {
            Priority::Idle => IDLE_WORK_BEFORE_PAUSE,
            Priority::Least | Priority::Low => WORK_BEFORE_PAUSE,
        };
        if self.since.elapsed() < work_before_pause {
            return;
        }
        if self.priority.may_be_awaited() {
            std::thread::yield_now();
        } else {
            std::thread::sleep(OFF_CORE);
        }
        self.since = Instant::now();
    }
}

impl Default for Yielder {
    fn default() -> Self {
        Self::new()
    }
}

/// Turns off glibc's fastbins, once at start-up. A freed small block otherwise waits in a
/// fastbin uncoalesced, and the next large allocation or free in its arena, or `malloc_trim`,
/// coalesces every waiting block in one stretch that cannot pause: after a replaced table of 100k
/// sessions was freed, 20–30 ms on a background thread that the proxy thread then waited behind.
/// Without fastbins each block is coalesced as it is freed, between the freeing thread's pauses.
/// Requests lose nothing measurable: the blocks they free go to the per-thread cache first.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's own settings; it takes the allocator's lock to do so.
    unsafe {
        libc::mallopt(libc::M_MXFAST, 0);
    }
}

/// Returns the allocator's free pages to the system. Costs a walk of its free lists, so it is
/// called once per table load, off the request path.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own free lists; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Waits `period`, or less if the server starts shutting down: true when the period passed,
/// false on shutdown. The one pause of every periodic background service.
pub async fn wait_or_shutdown(period: Duration, shutdown: &mut ShutdownWatch) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(period) => true,
        _ = shutdown.changed() => false,
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests;
