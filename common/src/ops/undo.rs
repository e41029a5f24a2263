//! Multi-step operations record what they did and undo only that.
//!
//! [`Undo::run`] gives the operation an [`Undo`] log. After each step that changed
//! something, the operation pushes the [`Step`] that reverses it. If the operation fails,
//! the pushed steps run in reverse order; every failure among them is collected (none is
//! swallowed) into [`OpError::Rollback`]. Nothing that was not recorded is ever undone, so a
//! failure can never remove something another caller created.
//!
//! A step that cannot be undone now (Ceph stalled, the call's time limit is spent) is not
//! forgotten: it is written to this host's journal of pending undo steps for the SR
//! (`<run dir>/pending/<sr>.json`), and the next call on that SR on this host carries it out
//! first ([`replay`]), so what a failed call leaves is repaired by the next calls, not only
//! by an operator's `--repair`.

use std::fs;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::ceph::{rbd, CephError, Conn, Kind};
use crate::error::{chain, OpError};
use crate::host::lock::lock_file;
use crate::host::Host;
use crate::layout::uri::SrUri;

/// One step that reverses what an operation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Remove an image this operation created (it never held data anyone recorded).
    RemoveImage {
        /// Its spec.
        spec: String,
    },
    /// Remove a snapshot this operation took.
    RemoveSnapshot {
        /// Its spec (`pool/ns/image@snap`).
        spec: String,
    },
    /// Unprotect a snapshot this operation protected.
    Unprotect {
        /// Its spec.
        spec: String,
    },
    /// Remove a namespace this operation created.
    RemoveNamespace {
        /// The pool.
        pool: String,
        /// The namespace.
        namespace: String,
    },
}

impl Step {
    /// Carries the step out; a step whose object is already gone is done.
    pub fn run(&self, conn: &Conn) -> Result<(), CephError> {
        match self {
            Step::RemoveImage { spec } => rbd::remove(conn, spec).map(drop),
            Step::RemoveSnapshot { spec } => rbd::snap_remove(conn, spec).map(drop),
            Step::Unprotect { spec } => match rbd::snap_unprotect(conn, spec) {
                // Clones of it exist now that are not ours to undo: it stays protected.
                Err(e) if e.kind() == Kind::Busy => Ok(()),
                other => other.map(drop),
            },
            Step::RemoveNamespace { pool, namespace } => rbd::namespace_remove(conn, pool, namespace).map(drop),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::RemoveImage { spec } => write!(f, "remove image {spec}"),
            Step::RemoveSnapshot { spec } => write!(f, "remove snapshot {spec}"),
            Step::Unprotect { spec } => write!(f, "unprotect {spec}"),
            Step::RemoveNamespace { pool, namespace } => write!(f, "remove namespace {pool}/{namespace}"),
        }
    }
}

/// The undo log of one operation.
#[derive(Debug, Default)]
pub struct Undo {
    steps: Vec<Step>,
}

impl Undo {
    /// Records how to reverse a step that just succeeded.
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    /// Runs `operation` on `sr`; if it fails, undoes its recorded steps in reverse order,
    /// and journals on `host` those that fail (see [`replay`]).
    pub fn run<T>(
        host: &Host,
        sr: &SrUri,
        operation: impl FnOnce(&mut Undo) -> Result<T, OpError>,
    ) -> Result<T, OpError> {
        let mut undo = Undo::default();
        let cause = match operation(&mut undo) {
            Ok(value) => return Ok(value),
            Err(cause) => cause,
        };
        let mut failures = Vec::new();
        let mut pending = Vec::new();
        for step in undo.steps.into_iter().rev() {
            match step.run(&sr.conn) {
                Ok(()) => info!(step = %step, "undone after failure"),
                Err(e) => {
                    warn!(step = %step, "undo failed, journaled for the next call: {}", chain(&e));
                    failures.push(format!("{step}: {}", chain(&e)));
                    pending.push(step);
                }
            }
        }
        if failures.is_empty() {
            return Err(cause);
        }
        if let Err(e) = Journal::of(host, sr).append(&pending) {
            failures.push(format!("cannot journal the steps left: {}", chain(&e)));
        }
        Err(OpError::Rollback { cause: Box::new(cause), failures })
    }
}

/// This host's pending undo steps for one SR.
struct Journal {
    path: PathBuf,
    lock: PathBuf,
}

impl Journal {
    fn of(host: &Host, sr: &SrUri) -> Journal {
        let dir = host.run_dir.join("pending");
        Journal { path: dir.join(format!("{}.json", sr.uuid)), lock: dir.join(format!("{}.lock", sr.uuid)) }
    }

    fn load(&self) -> Vec<Step> {
        fs::read(&self.path).ok().and_then(|bytes| serde_json::from_slice(&bytes).ok()).unwrap_or_default()
    }

    fn save(&self, steps: &[Step]) -> Result<(), OpError> {
        let local = |path: &PathBuf| {
            let path = path.display().to_string();
            move |source| OpError::LocalState { path, source }
        };
        if steps.is_empty() {
            return match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(local(&self.path)(e)),
                _ => Ok(()),
            };
        }
        let tmp = self.path.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec(steps).expect("steps serialize")).map_err(local(&tmp))?;
        fs::rename(&tmp, &self.path).map_err(local(&self.path))
    }

    fn append(&self, steps: &[Step]) -> Result<(), OpError> {
        let _lock = lock_file(&self.lock, std::time::Duration::from_secs(5), "the undo journal")?;
        let mut all = self.load();
        all.extend_from_slice(steps);
        self.save(&all)
    }
}

/// Carries out the undo steps earlier calls on `sr` could not (cheap when there are none: one
/// file lookup); the steps that fail again stay journaled. Returns how many were done.
pub fn replay(host: &Host, sr: &SrUri) -> Result<usize, OpError> {
    let journal = Journal::of(host, sr);
    if !journal.path.exists() {
        return Ok(0);
    }
    let _lock = lock_file(&journal.lock, std::time::Duration::from_secs(5), "the undo journal")?;
    let mut left = Vec::new();
    let mut done = 0;
    for step in journal.load() {
        match step.run(&sr.conn) {
            Ok(()) => {
                info!(step = %step, "pending undo step carried out");
                done += 1;
            }
            Err(e) => {
                warn!(step = %step, "pending undo step failed again: {}", chain(&e));
                left.push(step);
            }
        }
    }
    journal.save(&left)?;
    Ok(done)
}

/// The undo steps journaled on this host for `sr` (for the consistency check's report).
pub fn pending(host: &Host, sr: &SrUri) -> Vec<Step> {
    Journal::of(host, sr).load()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_survive_the_journal() {
        let steps = vec![
            Step::RemoveImage { spec: "p/n/v-1".to_owned() },
            Step::Unprotect { spec: "p/n/v-1@c-2".to_owned() },
            Step::RemoveNamespace { pool: "p".to_owned(), namespace: "n".to_owned() },
        ];
        let text = serde_json::to_string(&steps).expect("serializes");
        assert_eq!(serde_json::from_str::<Vec<Step>>(&text).expect("parses"), steps);
        assert!(text.contains(r#""step":"remove_image""#), "{text}");
    }
}
