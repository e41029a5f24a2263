//! The bottom layer: starting external programs ([`runner`]) and logging ([`log`]). It
//! depends on nothing else in the crate; every other layer runs programs through it.

pub mod log;
pub mod runner;
