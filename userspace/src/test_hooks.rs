//! Test-only hooks, inert unless their environment variable is set.

/// Sleeps for `MEMCG_DRIFT_TEST_ATTACH_DELAY_MS` milliseconds before attaching, so a test can
/// deliver a signal while the tool is attaching.
pub fn attach_delay() {
    if let Some(ms) = std::env::var("MEMCG_DRIFT_TEST_ATTACH_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Panics once the `MEMCG_DRIFT_TEST_PANIC_AT_PHASE`-th phase of an experiment is recorded, so a
/// test can prove that a panic midway still removes the run's cgroups and files and leaves no
/// program attached.
pub fn panic_at_phase(done: usize) {
    if std::env::var("MEMCG_DRIFT_TEST_PANIC_AT_PHASE")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(done)
    {
        panic!("injected panic after phase {done} (MEMCG_DRIFT_TEST_PANIC_AT_PHASE)");
    }
}

/// Panics at the named point of an experiment when `MEMCG_DRIFT_TEST_PANIC_AT` names it, so a
/// test can prove that a change to the machine made there (a swap device turned off) is undone
/// by the panic path.
pub fn panic_at(point: &str) {
    if std::env::var("MEMCG_DRIFT_TEST_PANIC_AT").is_ok_and(|v| v == point) {
        panic!("injected panic at {point} (MEMCG_DRIFT_TEST_PANIC_AT)");
    }
}

/// Pages added to the remainder of the first `MEMCG_DRIFT_TEST_UNCLOSED_SNAPSHOTS` ledgers
/// `explain` computes in this process (one each), so a test can prove that a ledger that does
/// not close is taken again, and reported as it is when it stays open.
pub fn unclosed_pages() -> i64 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static TAKEN: AtomicUsize = AtomicUsize::new(0);
    let Some(n) = std::env::var("MEMCG_DRIFT_TEST_UNCLOSED_SNAPSHOTS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return 0;
    };
    i64::from(TAKEN.fetch_add(1, Ordering::Relaxed) < n)
}
