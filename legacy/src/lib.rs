//! The SMAPIv1 front end of cephrbd: the exec driver installed as
//! `/opt/xensource/sm/CephRBDSR` (SR type `cephrbd`), see docs/smapiv1.md.
//!
//! - [`driver`]: one command per invocation, translated into `common::ops`;
//! - [`fault`]: errors as XML-RPC faults with XE_SR_ERRORCODES numbers;
//! - [`xmlrpc`]: the XML-RPC subset xapi writes and reads;
//! - [`xenapi`]: the callbacks into xapi under the request's session.

#![warn(missing_docs)]

pub mod driver;
pub mod fault;
pub mod xenapi;
pub mod xmlrpc;
