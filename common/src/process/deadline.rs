//! The time limit of a whole call.
//!
//! Each Ceph or kernel command has its SR's time limit, but a call runs several, and its
//! rollback runs more: without a bound on the whole, a call that meets a stalled cluster
//! waits one full limit per command, rollback included (5 s became 8–12 s). A front end
//! therefore marks the start of its call ([`start`]); from then on every command started
//! through [`crate::process::runner`] gets at most what is left of its own limit counted
//! from that start ([`remaining`]), and one that would get nothing fails at once as timed
//! out. Tools that are not calls (the consistency check, the doctor) never start a call
//! and keep the per-command limits.
//!
//! Waiting for a host lock held by another call is not Ceph work: a call that had to wait
//! for its lock starts its count again once it holds it ([`restart`]); the wait itself has
//! its own bound (the lock's).

use std::sync::Mutex;
use std::time::{Duration, Instant};

static STARTED: Mutex<Option<Instant>> = Mutex::new(None);

fn started() -> Option<Instant> {
    *STARTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Marks now as the start of this process's call.
pub fn start() {
    *STARTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
}

/// Starts the count again, if a call is under way (after waiting for a lock).
pub fn restart() {
    let mut started = STARTED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if started.is_some() {
        *started = Some(Instant::now());
    }
}

/// How much of `limit` is left since the call started (all of it outside a call).
pub fn remaining(limit: Duration) -> Duration {
    started().map_or(limit, |started| limit.saturating_sub(started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_left_shrinks_from_the_start_of_the_call() {
        start();
        let left = remaining(Duration::from_secs(3600));
        assert!(left <= Duration::from_secs(3600));
        assert!(left > Duration::from_secs(3500));
        assert_eq!(remaining(Duration::ZERO), Duration::ZERO);
    }
}
