//! Thread priorities for a process that hashes passwords.
//!
//! A login costs ~11 ms of CPU in argon2id; every other request costs a fraction of a
//! millisecond. Time-sliced fairly with every request thread of a saturated machine, a hash takes
//! many times its CPU time (login p95 of 130–160 ms in `helpdesk bench mix` on two cores, every
//! other route under 45 ms). So such a process runs its other threads a few nice levels below its
//! hashing threads.
//!
//! An unprivileged thread can lower its priority but never raise it again, and a new thread
//! starts at its creator's. So [`init`], first in `main`, starts a launcher thread at the process's
//! own priority and then lowers the main thread, and with it every thread started from it later
//! (the async runtime's, the blocking pool's). [`spawn_at_base`] starts a thread through the
//! launcher, at the process's own priority. Without [`init`] (tests, tools) it is a plain spawn.

use std::io;
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

type Body = Box<dyn FnOnce() + Send>;
type Launch = (String, Body, mpsc::SyncSender<io::Result<()>>);

static LAUNCHER: OnceLock<Mutex<mpsc::Sender<Launch>>> = OnceLock::new();

/// The variable naming how many nice levels the other threads run below the hashing threads.
pub const PRIORITY_GAP_VAR: &str = "USER_HASHING_PRIORITY";

/// The default gap of every process that hashes passwords: the user-service binary and
/// `helpdesk up` (and of `helpdesk bench`, which lowers itself by the same gap). With it, login's
/// p95 in the mixed benchmark fell under 100 ms and the throughput rose; during a login flood,
/// `GET /auth/me` kept a p95 of ~20 ms.
///
/// The gap orders a process's threads among the threads they compete with. With the kernel's
/// autogroup (Linux's default on machines without a CPU cgroup per program) that is the threads
/// of the same session: another terminal, a service or a broker is scheduled as a group of its
/// own, whatever the nice levels inside either group, and a container's cgroup does the same. A
/// program started from the same session as `helpdesk up` (a test harness running other tests
/// beside it, say) does outrank its request threads; `USER_HASHING_PRIORITY=0` keeps every
/// thread at one priority there.
pub const DEFAULT_GAP: i32 = 5;

/// The gap from `USER_HASHING_PRIORITY`: 0 to 19 nice levels, `default` when unset.
pub fn gap_from_env(
    env: &crate::config::Env,
    default: i32,
) -> Result<i32, crate::config::ConfigError> {
    let gap: i32 = env.parse_or(PRIORITY_GAP_VAR, default)?;
    if !(0..=19).contains(&gap) {
        return Err(crate::config::ConfigError::new(
            PRIORITY_GAP_VAR,
            "must be 0 to 19 (nice levels; 0 runs every thread at the same priority)",
        ));
    }
    Ok(gap)
}

/// [`gap_from_env`], then `apply` ([`init`] or [`lower_current_thread`]); a one-line error.
pub fn apply_from_env(
    env: &crate::config::Env,
    default: i32,
    apply: fn(i32) -> io::Result<()>,
) -> Result<(), String> {
    let gap = gap_from_env(env, default).map_err(|e| e.to_string())?;
    apply(gap).map_err(|e| format!("thread priorities: {e}"))
}

/// Whether nice values are per thread here (Linux). Elsewhere a nice value is the whole
/// process's, so there is no gap to make: [`init`] and [`lower_current_thread`] do nothing.
const PER_THREAD: bool = cfg!(target_os = "linux");

/// Starts the launcher at the calling thread's priority, then lowers the calling thread by `gap`
/// nice levels (0 leaves every thread equal). Call it first in `main`, before any other thread
/// starts; a second call does nothing, and so does a call off Linux.
pub fn init(gap: i32) -> io::Result<()> {
    if gap == 0 || !PER_THREAD || LAUNCHER.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel::<Launch>();
    std::thread::Builder::new()
        .name("base-priority".into())
        .spawn(move || {
            for (name, body, done) in rx {
                let started = std::thread::Builder::new().name(name).spawn(body).map(drop);
                let _ = done.send(started);
            }
        })?;
    let _ = LAUNCHER.set(Mutex::new(tx));
    lower_current_thread(gap)
}

/// Lowers the calling thread's priority by `by` nice levels (at most to 19); nothing off Linux.
#[cfg(target_os = "linux")]
pub fn lower_current_thread(by: i32) -> io::Result<()> {
    let nice = current_thread_nice()?;
    // SAFETY: plain system calls on the calling thread (who = its thread id).
    let rc = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            libc::gettid() as libc::id_t,
            (nice + by).min(19),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Lowers the calling thread's priority by `by` nice levels (at most to 19); nothing off Linux.
#[cfg(not(target_os = "linux"))]
pub fn lower_current_thread(_by: i32) -> io::Result<()> {
    Ok(())
}

/// The calling thread's nice value.
#[cfg(target_os = "linux")]
pub fn current_thread_nice() -> io::Result<i32> {
    // getpriority may return -1 as a value: errno tells an error apart.
    // SAFETY: errno is thread-local; plain system call on the calling thread.
    unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t);
        if nice == -1 && *libc::__errno_location() != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(nice)
    }
}

/// Starts a named thread at the process's own priority (through the launcher after [`init`]).
pub fn spawn_at_base(name: String, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
    let Some(launcher) = LAUNCHER.get() else {
        return std::thread::Builder::new().name(name).spawn(body).map(drop);
    };
    let (done, started) = mpsc::sync_channel(1);
    launcher
        .lock()
        .map_err(|_| io::Error::other("the launcher's lock is poisoned"))?
        .send((name, Box::new(body), done))
        .map_err(|_| io::Error::other("the launcher thread stopped"))?;
    started
        .recv()
        .map_err(|_| io::Error::other("the launcher thread stopped"))?
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice_of(spawn: impl FnOnce(String, Box<dyn FnOnce() + Send>) -> io::Result<()>) -> i32 {
        let (tx, rx) = mpsc::channel();
        spawn(
            "probe".into(),
            Box::new(move || {
                let _ = tx.send(current_thread_nice().unwrap());
            }),
        )
        .unwrap();
        rx.recv().unwrap()
    }

    /// Each test runs in a process of its own (nextest), so `init` lowers only this test's threads.
    #[test]
    fn threads_started_after_init_run_lower_but_those_of_spawn_at_base() {
        let base = current_thread_nice().unwrap();
        assert!(base <= 14, "the test runs at nice {base}: no room below");
        init(3).unwrap();
        assert_eq!(current_thread_nice().unwrap(), base + 3, "main is lowered");
        let plain =
            nice_of(|name, body| std::thread::Builder::new().name(name).spawn(body).map(drop));
        assert_eq!(plain, base + 3, "a thread started later inherits it");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let worker = runtime.block_on(async {
            tokio::spawn(async { current_thread_nice().unwrap() })
                .await
                .unwrap()
        });
        assert_eq!(worker, base + 3, "so do the runtime's workers");
        assert_eq!(
            nice_of(spawn_at_base),
            base,
            "hashing threads keep the base"
        );
        // From a lowered thread too.
        let from_worker = runtime.block_on(async {
            tokio::task::spawn_blocking(|| nice_of(spawn_at_base))
                .await
                .unwrap()
        });
        assert_eq!(from_worker, base);
    }
}
