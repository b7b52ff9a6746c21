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
