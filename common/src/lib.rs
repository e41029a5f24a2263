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
//! - [`log`]: `tracing` to stderr and syslog, never stdout.

#![warn(missing_docs)]

pub mod ceph;
pub mod config;
pub mod error;
pub mod exec;
pub mod log;
pub mod plugin;
pub mod runner;
pub mod schema;

pub use error::OpError;
pub use exec::{Ctx, Operation};
