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
