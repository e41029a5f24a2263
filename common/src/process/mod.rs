//! The bottom layer: starting external programs ([`runner`]), the time limit of a whole
//! call ([`deadline`]), logging ([`log`]), the secrets both hide ([`secrets`]), and the
//! test-only fault injection ([`inject`]). It depends on nothing else in the crate; every
//! other layer runs programs through it.

pub mod deadline;
pub mod inject;
pub mod log;
pub mod runner;
pub mod secrets;
