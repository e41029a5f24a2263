//! `common`: everything the cephrbd executables share.
//!
//! The executables (`volume`, `datapath`, and later the SMAPIv2 wrapper) only parse their
//! wire protocol, call one operation from here and print its answer. This crate owns:
//!
//! - [`exec`]: the SMAPIv3 exec protocol (argv\[0\] dispatch, `--json` on stdin, positional
//!   arguments for an operator, exactly one JSON value on stdout, the error object);
//! - [`schema`]: validation of every request and result against `xapi-storage-schemas`;
//! - [`error`]: the error layers and the one mapping to the SMAPI error object;
//! - [`runner`]: the only place that starts external programs (time limits, redaction);
//! - [`config`]: device-config parsing (the keys an administrator writes);
//! - [`ceph`]: connection arguments and the typed `rbd`/`ceph` wrappers;
//! - [`plugin`]: `Plugin.Query` and `Plugin.diagnostics`;
//! - [`sr`], [`volume`]: the SR and Volume interfaces, one function per method;
//! - [`names`], [`meta`], [`uri`]: every Ceph name, the SR's records, the SR and volume URIs;
//! - [`rbd`]: typed wrappers, one per `rbd`/`ceph` subcommand; [`undo`], [`lock`]: rollback
//!   of multi-step operations and host-local locks;
//! - [`protocol`]: the records returned to xapi;
//! - [`datapath`], [`krbd`], [`qsd`]: the Datapath interface, kernel RBD, and the userspace
//!   qemu-storage-daemon export;
//! - [`legacy`], [`xmlrpc`], [`xenapi`]: the SMAPIv1 exec-driver front end
//!   (`/opt/xensource/sm/CephRBDSR`), its wire format and its XenAPI callbacks;
//! - [`check`]: the consistency check of an SR and its safe repairs;
//! - [`doctor`]: host checks for an operator (`volume --doctor`) and `Plugin.diagnostics`;
//! - [`log`]: `tracing` to stderr and syslog, never stdout.

#![warn(missing_docs)]

pub mod ceph;
pub mod check;
pub mod config;
pub mod datapath;
pub mod doctor;
pub mod error;
pub mod exec;
pub mod krbd;
pub mod legacy;
pub mod lock;
pub mod log;
pub mod meta;
pub mod names;
pub mod plugin;
pub mod protocol;
pub mod qsd;
pub mod rbd;
pub mod runner;
pub mod schema;
pub mod sr;
pub mod undo;
pub mod uri;
pub mod volume;
pub mod xenapi;
pub mod xmlrpc;

pub use error::OpError;
pub use exec::{Ctx, Operation};
