//! The SR's layout in Ceph: every name cephrbd gives a thing ([`names`]), the records kept
//! in the SR's header image ([`records`]), how every stored byte is escaped ([`escape`]),
//! and the two strings handed to xapi and back ([`uri`]: the SR string and the volume
//! URIs). See docs/layout.md.

pub mod escape;
pub mod names;
pub mod records;
pub mod uri;
