//! `common`: the operations and the Ceph driver both cephrbd front ends share.
//!
//! The executables only parse their wire protocol, call one operation from here and print
//! its answer: `volume` and `datapath` speak SMAPIv3 through [`smapi`]; the `legacy` crate
//! (`/opt/xensource/sm/CephRBDSR`) speaks SMAPIv1 with its own XML-RPC code and calls the
//! same [`ops`].
//!
//! # Module map
//!
//! Layers, lowest first. A module uses only modules listed before it, never one after:
//!
//! | module | owns |
//! |---|---|
//! | [`process`] | the only way to start a program (time limits, redaction), and logging |
//! | [`ceph`] | the Ceph driver: [`Conn`](ceph::Conn), typed `rbd`/`ceph` wrappers, kernel RBD, the qemu-storage-daemon export |
//! | [`error`] | [`OpError`] and [`RequestError`](error::RequestError): what operations report |
//! | [`config`] | device-config, the keys an administrator writes |
//! | [`layout`] | the SR in Ceph: names, the header records, the SR string and volume URIs |
//! | [`host`] | this host's state: locks and what it holds of each volume |
//! | [`smapi`] | the SMAPIv3 protocol: exec, schema validation, wire records, the error object |
//! | [`ops`] | the operations: SR, Volume, Datapath, reclaiming storage, rollback |
//! | [`admin`] | the consistency check, the host doctor, `Plugin.Query`/`diagnostics` |
//!
//! # One call, from argv to Ceph and back
//!
//! xapi-storage-script runs `…/Volume.snapshot --json` (a symlink to `volume`) with the
//! arguments on stdin. [`smapi::exec::run`] picks the table entry by the name it was called
//! by, validates the arguments against the method's schema, and calls the executable's
//! handler, which parses the SR string ([`layout::uri::SrUri`]) and calls
//! [`ops::volume::snapshot`]. The operation reads the SR's records
//! ([`layout::records::Header`]), runs `rbd snap create` through [`ceph::rbd`] and
//! [`process::runner`], records the new volume, and returns a
//! [`smapi::wire::Volume`]; exec validates it against the result schema and prints one
//! JSON value. A failure anywhere becomes one error object ([`smapi::error`]).

#![warn(missing_docs)]

pub mod admin;
pub mod ceph;
pub mod config;
pub mod error;
pub mod host;
pub mod layout;
pub mod ops;
pub mod process;
pub mod smapi;

pub use error::OpError;
