//! Multi-step operations record what they did and undo only that.
//!
//! [`Undo::run`] gives the operation an [`Undo`] log. After each step that changed
//! something, the operation pushes the step that reverses it. If the operation fails, the
//! pushed steps run in reverse order; every failure among them is collected (none is
//! swallowed) into [`OpError::Rollback`]. Nothing that was not recorded is ever undone, so a
//! failure can never remove something another caller created.

use tracing::{info, warn};

use crate::ceph::CephError;
use crate::error::{chain, OpError};

type Step<'a> = Box<dyn FnOnce() -> Result<(), CephError> + 'a>;

/// The undo log of one operation.
#[derive(Default)]
pub struct Undo<'a> {
    steps: Vec<(String, Step<'a>)>,
}

impl<'a> Undo<'a> {
    /// Records how to reverse a step that just succeeded.
    pub fn push(&mut self, what: impl Into<String>, step: impl FnOnce() -> Result<(), CephError> + 'a) {
        self.steps.push((what.into(), Box::new(step)));
    }

    /// Runs `operation`; if it fails, undoes its recorded steps in reverse order.
    pub fn run<T>(operation: impl FnOnce(&mut Undo<'a>) -> Result<T, OpError>) -> Result<T, OpError> {
        let mut undo = Undo { steps: Vec::new() };
        match operation(&mut undo) {
            Ok(value) => Ok(value),
            Err(cause) => {
                let mut failures = Vec::new();
                for (what, step) in undo.steps.into_iter().rev() {
                    match step() {
                        Ok(()) => info!(step = %what, "undone after failure"),
                        Err(e) => {
                            warn!(step = %what, "undo failed: {}", chain(&e));
                            failures.push(format!("{what}: {}", chain(&e)));
                        }
                    }
                }
                if failures.is_empty() {
                    Err(cause)
                } else {
                    Err(OpError::Rollback { cause: Box::new(cause), failures })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::RequestError;
    use std::cell::RefCell;

    fn fail() -> OpError {
        OpError::Request(RequestError::MissingConfigKey { key: "pool" })
    }

    #[test]
    fn undoes_recorded_steps_in_reverse_and_only_on_failure() {
        let log = RefCell::new(Vec::new());
        let result: Result<(), OpError> = Undo::run(|undo| {
            undo.push("first", || {
                log.borrow_mut().push(1);
                Ok(())
            });
            undo.push("second", || {
                log.borrow_mut().push(2);
                Ok(())
            });
            Err(fail())
        });
        assert!(matches!(result, Err(OpError::Request(_))));
        assert_eq!(*log.borrow(), [2, 1]);
        let ok: Result<u8, OpError> = Undo::run(|undo| {
            undo.push("never", || {
                log.borrow_mut().push(3);
                Ok(())
            });
            Ok(7)
        });
        assert_eq!(ok.ok(), Some(7));
        assert_eq!(*log.borrow(), [2, 1]);
    }

    #[test]
    fn failed_undo_steps_are_all_reported() {
        let result: Result<(), OpError> = Undo::run(|undo| {
            for name in ["a", "b"] {
                undo.push(name, || {
                    Err(CephError::BadOutput { command: "rbd x".to_owned(), detail: "boom".to_owned() })
                });
            }
            Err(fail())
        });
        match result {
            Err(OpError::Rollback { failures, .. }) => assert_eq!(failures.len(), 2),
            other => panic!("{other:?}"),
        }
    }
}
