//! The bottom layer: starting external programs ([`runner`]), logging ([`log`]), the
//! secrets both hide ([`secrets`]), and the test-only fault injection ([`inject`]). It
//! depends on nothing else in the crate; every other layer runs programs through it.

pub mod inject;
pub mod secrets;

pub mod log;
pub mod runner;
