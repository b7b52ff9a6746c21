//! Facts about this process: when it started (the attach time `trace` and `doctor` report
//! counts from `main`'s first instruction).

/// When the process started, as near as the program can tell: set by `main` first thing.
static PROCESS_START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// Marks the start of the process (called by `main` before anything else). Later calls keep
/// the first mark.
pub fn mark_process_start() {
    PROCESS_START.get_or_init(std::time::Instant::now);
}

/// Milliseconds since [`mark_process_start`] (since the first call, when `main` did not mark).
pub fn ms_since_process_start() -> f64 {
    PROCESS_START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
        * 1e3
}
