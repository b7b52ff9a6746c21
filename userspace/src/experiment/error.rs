//! The experiments' error: one enum for every experiment, wrapping the lower layers' errors
//! unchanged (`transparent`), naming the file operations that failed, and carrying the
//! one-line refusals of their options and machines.
//!
//! A variant that adds a prefix to a cause (`Io`, `Context`) keeps the cause as its `source`
//! and prints only the prefix: `{:#}` at the binary's edge, and [`ExperimentError::chain`] in
//! a phase's record, print `prefix: cause`, as they did when the experiments added context
//! with the binary's error type.

use crate::{
    cgroup::CgroupError,
    charge::ChargeTracerError,
    explain::ExplainError,
    plot::PlotError,
    residue::{PossibleCpusError, ResidueError},
    safefs::SafeFsError,
    tracer::TracerError,
    workload::{WorkloadError, batch::BatchError},
};

/// `Result` with [`ExperimentError`] as its default error.
pub type Result<T, E = ExperimentError> = std::result::Result<T, E>;

/// Why an experiment was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ExperimentError {
    /// A cgroup operation failed.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// The workload failed or answered an error.
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    /// An `explain` report could not be taken.
    #[error(transparent)]
    Explain(#[from] ExplainError),
    /// The stat tracer could not start or be read.
    #[error(transparent)]
    Tracer(#[from] TracerError),
    /// The charge tracer could not be read.
    #[error(transparent)]
    Charge(#[from] ChargeTracerError),
    /// The charge batch could not be measured.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The residue programs could not be loaded or read.
    #[error(transparent)]
    Residue(#[from] ResidueError),
    /// The possible CPUs could not be read.
    #[error(transparent)]
    PossibleCpus(#[from] PossibleCpusError),
    /// A plot could not be drawn or written.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// A file the tool writes for the user was refused or could not be written.
    #[error(transparent)]
    SafeFs(#[from] SafeFsError),
    /// A system call failed.
    #[error(transparent)]
    Errno(#[from] nix::errno::Errno),
    /// A file operation or system call failed, its error the whole message.
    #[error(transparent)]
    Os(#[from] std::io::Error),
    /// A path holds a NUL byte (a system call cannot take it).
    #[error(transparent)]
    Nul(#[from] std::ffi::NulError),
    /// A report could not be turned into or read from JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// A file operation or system call failed; `what` names it (a path, or what was done),
    /// the error is its cause.
    #[error("{what}")]
    Io {
        /// What was being done, or the file.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A lower error, prefixed with what was being done.
    #[error("{what}")]
    Context {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: Box<ExperimentError>,
    },
    /// The options or the machine do not allow the experiment (one line for the user).
    #[error("{0}")]
    Refused(String),
    /// The experiment failed at run time (one line for the user).
    #[error("{0}")]
    Failed(String),
}

impl ExperimentError {
    /// A failed file operation or system call, named by `what`.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        ExperimentError::Io {
            what: what.into(),
            source,
        }
    }

    /// This error, prefixed with `what`.
    pub fn context(self, what: impl Into<String>) -> Self {
        ExperimentError::Context {
            what: what.into(),
            source: Box::new(self),
        }
    }

    /// The workload error inside (through any context), if any.
    pub fn workload(&self) -> Option<&WorkloadError> {
        match self {
            ExperimentError::Workload(w) => Some(w),
            ExperimentError::Context { source, .. } => source.workload(),
            _ => None,
        }
    }

    /// The message and its causes as one line, `a: b: c` (as `{:#}` prints a chain at the binary's edge).
    pub fn chain(&self) -> String {
        crate::attach::error_chain(self)
    }
}

/// Adds a prefix to an error: the prefix is the message, the error its cause.
pub trait Context<T> {
    /// Prefixes the error with `what`.
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// Prefixes the error with what `f` returns (built only on error).
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, std::io::Error> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| ExperimentError::io(what, e))
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| ExperimentError::io(f(), e))
    }
}

/// [`Context`] for the errors an experiment wraps unchanged.
macro_rules! context_for {
    ($($e:ty),*) => {$(
        impl<T> Context<T> for std::result::Result<T, $e> {
            fn context(self, what: impl Into<String>) -> Result<T> {
                self.map_err(|e| ExperimentError::from(e).context(what))
            }
            fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
                self.map_err(|e| ExperimentError::from(e).context(f()))
            }
        }
    )*};
}
context_for!(
    ExperimentError,
    CgroupError,
    WorkloadError,
    ExplainError,
    TracerError,
    ChargeTracerError,
    nix::errno::Errno,
    serde_json::Error
);

impl<T> Context<T> for Option<T> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| ExperimentError::Failed(what.into()))
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.ok_or_else(|| ExperimentError::Failed(f().into()))
    }
}

/// Returns [`ExperimentError::Refused`] with a `format!` message.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err($crate::experiment::ExperimentError::Refused(format!($($arg)*)))
    };
}
pub(crate) use refuse;

/// Returns [`ExperimentError::Failed`] with a `format!` message.
macro_rules! fail {
    ($($arg:tt)*) => {
        return Err($crate::experiment::ExperimentError::Failed(format!($($arg)*)))
    };
}
pub(crate) use fail;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_prints_once_with_its_cause() {
        let io = || std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = Err::<(), _>(io()).context("/proc/meminfo").unwrap_err();
        assert_eq!(e.to_string(), "/proc/meminfo");
        assert_eq!(e.chain(), format!("/proc/meminfo: {}", io()));
        let outer = e.context("starting");
        assert_eq!(outer.chain(), format!("starting: /proc/meminfo: {}", io()));
        let refused = ExperimentError::Refused("--pages must be 1..=262144".into());
        assert_eq!(refused.chain(), "--pages must be 1..=262144");
        assert!(refused.workload().is_none());
    }
}
