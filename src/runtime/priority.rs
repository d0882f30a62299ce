//! The CPU priority of one thread: the sweeper's backlog runs below the request threads.

/// How much lower than the process the thread that deletes a backlog of expired machines runs
/// (its nice value goes up by this much, to 19 at most: a CPU weight about a third of a
/// request thread's). Sweeping 1,000,000 expired machines while 32 connections verify a key
/// and one logs in every 50 ms, on 2 cores (`authkeys-bench sweep`): at the process's
/// priority, verify's p99 14.8 ms and the sweep 44.7 s; alternated in one half hour, +10 gave
/// p99 5.5 and 7.3 ms with sweeps of 61.8 and 60.2 s, +5 gave 6.0 and 7.7 ms with 58.7 and
/// 53.1 s (logins alike: p99 0.9–1.3 s either way). +5, then: the backlog still moves
/// under a load that keeps every core busy.
pub(crate) const BACKLOG_NICENESS: i32 = 5;

/// Lowers the calling thread's CPU priority by `by` (raises its nice value, to 19 at most).
/// One way only: without `CAP_SYS_NICE` a thread cannot raise its priority again, so only a
/// thread that ends with its work should call this. A failure is logged and the work goes
/// on at the usual priority.
pub(crate) fn lower_this_thread(by: i32) {
    if let Err(err) = lower(by) {
        log::info!("could not lower this thread's priority, it runs at the server's: {err}");
    }
}

/// The calling thread's nice value (Linux; elsewhere always 0).
pub(crate) fn this_thread_niceness() -> i32 {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::getpriority_process;
        getpriority_process(Some(rustix::thread::gettid())).unwrap_or(0)
    }
    #[cfg(not(target_os = "linux"))]
    0
}

#[cfg(target_os = "linux")]
fn lower(by: i32) -> std::io::Result<()> {
    use rustix::process::setpriority_process;
    // On Linux the nice value is per thread, and `setpriority` with a thread id sets just it.
    let thread = rustix::thread::gettid();
    let niceness = (this_thread_niceness() + by).min(19);
    setpriority_process(Some(thread), niceness)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn lower(_by: i32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn lowers_only_the_calling_thread() {
        let before = this_thread_niceness();
        let lowered = std::thread::spawn(|| {
            let own = this_thread_niceness();
            lower_this_thread(BACKLOG_NICENESS);
            (own, this_thread_niceness())
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (before, (before + BACKLOG_NICENESS).min(19)));
        assert_eq!(
            this_thread_niceness(),
            before,
            "the caller's own priority stays"
        );
    }
}
