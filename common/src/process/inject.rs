//! Fault injection for the crash and panic tests, compiled only with the `fault-injection`
//! feature of `common`.
//!
//! Only the `tests` crate enables that feature (its dependency on `common`), so the binaries
//! a workspace build makes for the test suite (`cargo build --workspace --bins`) carry the
//! hooks, and the shipped ones do not: `scripts/build-rpm` builds `-p volume -p datapath
//! -p legacy`, where nothing enables the feature, and the RPM test checks that the
//! variable names below are absent from the packaged binaries. Without the feature every
//! hook is an empty inline function.
//!
//! - `CEPHRBD_CRASH_AFTER=N`: the process kills itself (SIGKILL) right after its Nth
//!   external command completes ([`after_command`], called by the runner);
//! - `CEPHRBD_PANIC=1`: the process panics at [`panic_point`] (the legacy driver calls it
//!   before it dispatches a command), to prove a panic still yields one answer.

#[cfg(feature = "fault-injection")]
mod hooks {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::OnceLock;

    /// The environment variable that makes the process kill itself (SIGKILL) right after
    /// its Nth external command completes.
    pub const CRASH_AFTER_VAR: &str = "CEPHRBD_CRASH_AFTER";

    /// The environment variable that makes the process panic at [`panic_point`].
    pub const PANIC_VAR: &str = "CEPHRBD_PANIC";

    /// Called by the runner after each external command.
    pub fn after_command() {
        static LIMIT: OnceLock<Option<usize>> = OnceLock::new();
        static DONE: AtomicUsize = AtomicUsize::new(0);
        let Some(limit) = *LIMIT.get_or_init(|| std::env::var(CRASH_AFTER_VAR).ok().and_then(|v| v.parse().ok()))
        else {
            return;
        };
        if DONE.fetch_add(1, Ordering::SeqCst) + 1 == limit {
            tracing::warn!(limit, "{CRASH_AFTER_VAR}: killing this process after command {limit}");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        }
    }

    /// Panics when [`PANIC_VAR`] is `1`; `place` names where, in the panic message.
    pub fn panic_point(place: &str) {
        if std::env::var(PANIC_VAR).as_deref() == Ok("1") {
            panic!("{PANIC_VAR}: injected panic in {place}");
        }
    }
}

#[cfg(feature = "fault-injection")]
pub use hooks::*;

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn after_command() {}

/// Without the `fault-injection` feature: nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn panic_point(_place: &str) {}
