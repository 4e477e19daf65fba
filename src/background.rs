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

/// How long a background thread works before it offers its core back. A proxy thread saturated
/// with requests never sleeps, so it never wakes up to preempt a background thread; the scheduler
/// then lets whichever thread it picked keep the core until its next tick (4 ms at 250 Hz), idle
/// class or not.
const WORK_BEFORE_YIELD: Duration = Duration::from_micros(200);

/// How long a pause leaves the run queue for, when it does. Under EEVDF a `sched_yield` only
/// pushes the thread's deadline back, and the scheduler picks it again at once while it is the
/// only thread still owed CPU time, which a saturated proxy thread never is. Timer slack makes
/// the real pause about 50 µs, which makes a load on an idle machine about a quarter slower.
const OFF_CORE: Duration = Duration::from_micros(10);

/// Offers the core back every [`WORK_BEFORE_YIELD`] of work: long background loops call
/// [`Yielder::pause`] often, and it pauses only once that much time has passed.
pub struct Yielder {
    since: Instant,
    abandoned: Arc<AtomicBool>,
    /// Whether a pause sleeps for [`OFF_CORE`] rather than only yielding.
    leave_run_queue: bool,
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
            leave_run_queue: !priority.may_be_awaited(),
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
        if self.since.elapsed() >= WORK_BEFORE_YIELD {
            if self.leave_run_queue {
                std::thread::sleep(OFF_CORE);
            } else {
                std::thread::yield_now();
            }
            self.since = Instant::now();
        }
    }
}

impl Default for Yielder {
    fn default() -> Self {
        Self::new()
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
mod tests {
    use super::*;

    /// The calling thread's scheduling policy and nice value.
    fn scheduling() -> (libc::c_int, libc::c_int) {
        // SAFETY: both calls only read the calling thread's scheduling.
        unsafe {
            let thread = libc::gettid() as libc::id_t;
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, thread),
            )
        }
    }

    #[tokio::test]
    async fn work_runs_in_the_class_asked_for_and_the_caller_keeps_its_own() {
        let before = scheduling();
        let idle = run_on_own_thread("test idle", Priority::Idle, |_| scheduling()).await;
        assert_eq!(idle.map(|s| s.0), Some(libc::SCHED_IDLE));
        let low = run_on_own_thread("test low", Priority::Low, |_| scheduling()).await;
        assert_eq!(low, Some((libc::SCHED_OTHER, before.1.max(LOW_NICE))));
        let least = run_on_own_thread("test least", Priority::Least, |_| scheduling()).await;
        assert_eq!(least, Some((libc::SCHED_OTHER, before.1.max(LEAST_NICE))));
        assert_eq!(scheduling(), before, "the caller is unchanged");
    }

    #[tokio::test]
    async fn a_priority_runtime_runs_its_work_in_its_class() {
        let before = scheduling();
        let runtime = PriorityRuntime::start("test lane", Priority::Idle)
            .await
            .unwrap();
        let seen = runtime.run(async { scheduling() }).await;
        assert_eq!(seen.map(|s| s.0), Some(libc::SCHED_IDLE));
        let later = runtime
            .run(async {
                tokio::time::sleep(Duration::from_millis(5)).await;
                scheduling().0
            })
            .await;
        assert_eq!(later, Some(libc::SCHED_IDLE), "timers run there too");
        assert_eq!(scheduling(), before, "the caller is unchanged");
    }

    #[tokio::test]
    async fn work_on_a_priority_runtime_is_cancelled_with_its_caller() {
        let runtime = PriorityRuntime::start("test lane", Priority::Low)
            .await
            .unwrap();
        let (held, released) = tokio::sync::oneshot::channel::<()>();
        let waiting = runtime.run(async move {
            let _held = held;
            std::future::pending::<()>().await
        });
        let gave_up = tokio::time::timeout(Duration::from_millis(20), waiting).await;
        assert!(gave_up.is_err());
        let ended = tokio::time::timeout(Duration::from_secs(5), released).await;
        assert!(
            matches!(ended, Ok(Err(_))),
            "the abandoned work was dropped on its thread"
        );
        assert_eq!(runtime.run(async { 7 }).await, Some(7), "still serving");
    }

    #[tokio::test]
    async fn work_is_told_when_its_caller_stops_waiting() {
        let (seen, told) = tokio::sync::oneshot::channel();
        let waiting = run_on_own_thread("test abandon", Priority::Low, move |yielder| {
            while !yielder.abandoned() {
                yielder.pause();
            }
            let _ = seen.send(());
        });
        assert!(tokio::time::timeout(Duration::from_millis(20), waiting)
            .await
            .is_err());
        let stopped = tokio::time::timeout(Duration::from_secs(5), told).await;
        assert!(matches!(stopped, Ok(Ok(()))), "the work saw it and stopped");
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_none_not_a_hang() {
        let result: Option<()> = run_on_own_thread("test panic", Priority::Low, |_| panic!()).await;
        assert_eq!(result, None);
    }
}
