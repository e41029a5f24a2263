//! The operations, one function per SMAPI method, shared by both front ends: [`sr`],
//! [`volume`], [`cbt`] (changed block tracking, with its [`bitmap`]) and [`datapath`],
//! with the garbage collector [`reclaim`] and the rollback of multi-step operations
//! [`undo`].
//!
//! Operations take what they need (the SR, a volume key, this [`crate::host::Host`]) and
//! return the records of [`crate::smapi::wire`]; they know nothing of either front end's
//! wire format.

pub mod bitmap;
pub mod cbt;
pub mod datapath;
pub mod reclaim;
pub mod sr;
pub mod undo;
pub mod volume;
