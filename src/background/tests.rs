//! Tests of background priorities, pauses and runtimes.

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

/// Voluntary context switches of the calling thread so far, and its CPU time.
fn switches_and_cpu() -> (i64, Duration) {
    // SAFETY: both calls only fill in the structs on this stack, for the calling thread.
    unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        let mut cpu: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut cpu);
        let cpu = Duration::new(cpu.tv_sec as u64, cpu.tv_nsec as u32);
        (usage.ru_nvcsw, cpu)
    }
}

fn pin_to(cpu: libc::c_int) {
    // SAFETY: the set lives on this stack, and with pid 0 only the calling thread moves.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu as usize, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[tokio::test]
async fn idle_class_work_leaves_a_wanted_core_every_few_microseconds() {
    const WORK: Duration = Duration::from_millis(2);
    // SAFETY: reads which CPU the calling thread is on.
    let cpu = unsafe { libc::sched_getcpu() }.max(0);
    let stop = Arc::new(AtomicBool::new(false));
    let busy = std::thread::spawn({
        let stop = stop.clone();
        move || {
            pin_to(cpu);
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        }
    });
    let seen = run_on_own_thread("test pauses", Priority::Idle, move |yielder| {
        pin_to(cpu);
        // SAFETY: reads the calling thread's timer slack.
        let slack = unsafe { libc::prctl(libc::PR_GET_TIMERSLACK) };
        let (switches, cpu) = switches_and_cpu();
        let mut now = (switches, cpu);
        while now.1 - cpu < WORK {
            yielder.pause();
            now = switches_and_cpu();
        }
        (slack, now.0 - switches)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    busy.join().unwrap();
    let (slack, switches) = seen.unwrap();
    assert_eq!(
        slack as libc::c_ulong, PAUSE_TIMER_SLACK_NS,
        "pauses are not stretched"
    );
    // A sleep per IDLE_WORK_BEFORE_PAUSE of work would be 100, though switching back in and the
    // measuring itself take some of the CPU time (a busy CI machine measured about half that);
    // a stretch of 200 µs between pauses, as before, would leave the core at most 10 times.
    assert!(
        switches >= 20,
        "left the core {switches} times in 2 ms of work"
    );
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

#[cfg(target_env = "gnu")]
#[test]
fn freed_small_blocks_are_coalesced_at_once_not_left_for_a_later_stretch() {
    tune_allocator();
    // SAFETY: mallinfo2 only reads the allocator's statistics.
    let waiting_in_fastbins = || unsafe { libc::mallinfo2() }.fsmblks;
    let before = waiting_in_fastbins();
    // Few enough that the list itself is freed without coalescing everything.
    let blocks: Vec<Box<[u8; 40]>> = (0..5_000).map(|_| Box::new([0; 40])).collect();
    drop(std::hint::black_box(blocks));
    let after = waiting_in_fastbins();
    assert!(
        after <= before,
        "{} bytes freed into fastbins, to be coalesced in one go later",
        after - before
    );
}
