//! The bottom layer: starting external programs ([`runner`]), the time limit of a whole
//! call ([`deadline`]), and logging ([`log`]). It depends on nothing else in the crate;
//! every other layer runs programs through it.

pub mod deadline;
pub mod log;
pub mod runner;
